# tealeaf-fleet-op: iisreset
param()
# The vendor's procedure restarts IIS after enabling TLS; iisreset.exe does stop and start.

$exe = [IO.Path]::Combine([Environment]::SystemDirectory, 'iisreset.exe')
if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "iisreset.exe not found at $($exe) - is IIS installed?" }
$ErrorActionPreference = 'Continue'
$lines = & $exe 2>&1
$exitCode = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
$text = ''
foreach ($line in @($lines)) { $text += [string]$line + "`r`n" }
Write-FleetResult @{ exit_code = [int]$exitCode; output = $text }
