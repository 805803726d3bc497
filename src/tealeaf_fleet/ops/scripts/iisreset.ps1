# tealeaf-fleet-op: iisreset
param()
# The vendor's procedure restarts IIS after enabling TLS; iisreset.exe does stop and start.

$exe = [IO.Path]::Combine([Environment]::SystemDirectory, 'iisreset.exe')
if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "iisreset.exe not found at $($exe) - is IIS installed?" }
# An exe that cannot start is a statement-terminating error that 'Continue' would step over,
# leaving $LASTEXITCODE $null (and [int]$null is 0): catch it and refuse a $null exit code.
$ErrorActionPreference = 'Continue'
$exitCode = $null
try {
    $lines = & $exe 2>&1
    $exitCode = $LASTEXITCODE
} catch {
    $lines = @($_.Exception.Message)
}
$ErrorActionPreference = 'Stop'
$text = ''
foreach ($line in @($lines)) { $text += [string]$line + "`r`n" }
if ($null -eq $exitCode) { Stop-FleetOp ("iisreset.exe did not run: " + $text) }
Write-FleetResult @{ exit_code = [int]$exitCode; output = $text }
