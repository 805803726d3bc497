# tealeaf-fleet-op: tlstool
param([string]$InstallDir, [string]$Verb, [string]$PfxPath, [string]$Password, [string]$TimeoutS)
# Runs the vendor's TLSTool.exe the way the vendor's procedure does: in InstallDir\Tools, with
# the PFX by its bare file name (`TLSTool.exe import TCXcert.pfx <password>`). TLSTool hands the
# file and the password to its bundled openssl.exe, very likely on a command line it does not
# quote, and install folders such as C:\Program Files (x86)\IBM\Tealeaf hold spaces and
# parentheses: so the PFX must sit in Tools under a plain name, and the password must hold no
# character cmd.exe interprets. The password goes as an argument because that is TLSTool's only
# interface; it is masked in the output this op returns.

$toolsDir = [IO.Path]::Combine($InstallDir, 'Tools')
$exe = [IO.Path]::Combine($toolsDir, 'TLSTool.exe')
if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "TLSTool.exe not found at $exe" }
if ($Password -match '[\s"&|<>^%!]') {
    Stop-FleetOp ('the password has a space, a double quote or a character cmd.exe interprets ' +
        '(& | < > ^ % !), which TLSTool.exe cannot pass on: re-export the PFX with another ' +
        'password (letters and digits are always safe)') 2
}
$timeout = 240
if ($TimeoutS) { $timeout = [int]$TimeoutS }

if ((($Verb -eq 'create') -or ($Verb -eq 'import')) -and ((-not $PfxPath) -or (-not $Password))) {
    # Every argument must be there: TLSTool reads them by position.
    Stop-FleetOp "TLSTool $Verb needs a PFX path and a password" 2
}
$pfxName = ''
if ($PfxPath) {
    $prefix = $toolsDir.Replace('/', '\').TrimEnd('\') + '\'
    $given = $PfxPath.Replace('/', '\')
    if ($given.StartsWith($prefix, [StringComparison]::OrdinalIgnoreCase)) { $pfxName = $given.Substring($prefix.Length) }
    if (($pfxName -eq '') -or $pfxName.Contains('\')) {
        Stop-FleetOp "the PFX must be in $toolsDir (TLSTool.exe gets it by file name), not at $PfxPath" 2
    }
    if ($pfxName -cnotmatch '^[A-Za-z0-9._-]+\z') {
        Stop-FleetOp ("the PFX file name '$pfxName' may hold only letters, digits, '.', '-' and " +
            "'_': TLSTool.exe hands it to openssl.exe unquoted") 2
    }
}
if ($Verb -eq 'create') { $toolArgs = @('create', '-site', $pfxName, $Password) }
elseif ($Verb -eq 'import') { $toolArgs = @('import', $pfxName, $Password) }
elseif (($Verb -eq 'enable') -or ($Verb -eq 'disable')) { $toolArgs = @($Verb) }
else { Stop-FleetOp "unknown TLSTool verb '$Verb'" 2 }

$run = Invoke-FleetNative $exe $toolArgs $toolsDir $timeout
$text = $run.output
if ($Password) { $text = $text.Replace($Password, '******') }
if ($null -eq $run.exit_code) { Stop-FleetOp ("TLSTool.exe did not run: " + $text) }
Write-FleetResult @{ verb = $Verb; exit_code = [int]$run.exit_code; output = $text }
