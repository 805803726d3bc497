# tealeaf-fleet-op: reboot
param([string]$DelayS)
# Schedules a forced restart a few seconds ahead, so this op can answer before the host goes.
# shutdown.exe /r /t N returns at once on every Windows version (Restart-Computer cannot delay).

$delay = 5
if ($DelayS) { $delay = [int]$DelayS }
$now = Get-FleetNow
$exe = [IO.Path]::Combine([Environment]::SystemDirectory, 'shutdown.exe')
$shutdownArgs = @('/r', '/f', '/t', ([string]$delay), '/d', 'p:4:1', '/c', 'tealeaf-fleet: restart after a TLS change')
$run = Invoke-FleetNative $exe $shutdownArgs
if ($run.exit_code -ne 0) { Stop-FleetOp ("shutdown.exe failed with exit code $($run.exit_code): " + $run.output) }
Write-FleetResult @{ scheduled = $true; now = $now }
