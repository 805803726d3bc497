# tealeaf-fleet-op: iisreset
param([string]$TimeoutS)
# The vendor's procedure restarts IIS after enabling TLS; iisreset.exe does stop and start.
# TimeoutS bounds iisreset.exe itself (it is killed past it), below the caller's own deadline.

$timeout = 240
if ($TimeoutS) { $timeout = [int]$TimeoutS }
$system = [Environment]::SystemDirectory
$exe = [IO.Path]::Combine($system, 'iisreset.exe')
if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "iisreset.exe not found at $($exe) - is IIS installed?" }
$run = Invoke-FleetNative $exe @() $system $timeout
if ($null -eq $run.exit_code) { Stop-FleetOp ("iisreset.exe did not run: " + $run.output) }
Write-FleetResult @{ exit_code = [int]$run.exit_code; output = $run.output }
