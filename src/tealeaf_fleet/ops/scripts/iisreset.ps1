# tealeaf-fleet-op: iisreset
param()
# The vendor's procedure restarts IIS after enabling TLS; iisreset.exe does stop and start.

$exe = [IO.Path]::Combine([Environment]::SystemDirectory, 'iisreset.exe')
if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "iisreset.exe not found at $($exe) - is IIS installed?" }
$run = Invoke-FleetNative $exe @()
if ($null -eq $run.exit_code) { Stop-FleetOp ("iisreset.exe did not run: " + $run.output) }
Write-FleetResult @{ exit_code = [int]$run.exit_code; output = $run.output }
