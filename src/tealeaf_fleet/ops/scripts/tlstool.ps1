# tealeaf-fleet-op: tlstool
param([string]$InstallDir, [string]$Verb, [string]$PfxPath, [string]$Password)
# Runs the vendor's TLSTool.exe in InstallDir\Tools. The password goes as an argument because
# that is TLSTool's only interface; it is masked in the output this op returns.

$toolsDir = [IO.Path]::Combine($InstallDir, 'Tools')
$exe = [IO.Path]::Combine($toolsDir, 'TLSTool.exe')
if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "TLSTool.exe not found at $exe" }
if ($Password.Contains([string][char]34)) { Stop-FleetOp 'the password contains a double quote, which TLSTool.exe cannot receive' 2 }

if ((($Verb -eq 'create') -or ($Verb -eq 'import')) -and ((-not $PfxPath) -or (-not $Password))) {
    # PowerShell 2.0 drops empty arguments to native commands: the rest would shift left.
    Stop-FleetOp "TLSTool $Verb needs a PFX path and a password" 2
}
if ($Verb -eq 'create') { $toolArgs = @('create', '-site', $PfxPath, $Password) }
elseif ($Verb -eq 'import') { $toolArgs = @('import', $PfxPath, $Password) }
elseif (($Verb -eq 'enable') -or ($Verb -eq 'disable')) { $toolArgs = @($Verb) }
else { Stop-FleetOp "unknown TLSTool verb '$Verb'" 2 }

Set-Location -LiteralPath $toolsDir
$run = Invoke-FleetNative $exe $toolArgs
$text = $run.output
if ($Password) { $text = $text.Replace($Password, '******') }
if ($null -eq $run.exit_code) { Stop-FleetOp ("TLSTool.exe did not run: " + $text) }
Write-FleetResult @{ verb = $Verb; exit_code = [int]$run.exit_code; output = $text }
