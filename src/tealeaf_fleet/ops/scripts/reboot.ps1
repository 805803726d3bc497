# tealeaf-fleet-op: reboot
param([string]$DelayS, [string]$TimeoutS)
# Schedules a forced restart a few seconds ahead, so this op can answer before the host goes.
# shutdown.exe /r /t N returns at once on every Windows version (Restart-Computer cannot delay).
# A shutdown someone else scheduled (Windows Update, another administrator, an earlier reboot op
# whose answer was lost) makes shutdown.exe exit 1190, ERROR_SHUTDOWN_IS_SCHEDULED ("A system
# shutdown has already been scheduled."): then, as Ansible's win_reboot does (ansible/ansible
# commit 239e2ae7e9d, lib/ansible/plugins/action/win_reboot.py, `if rc == 1190`; now in
# ansible.windows), abort it with shutdown.exe /a and schedule ours again. If it cannot be
# aborted, the host restarts at that shutdown's time anyway: the op says so and succeeds, so the
# caller waits for that restart instead of recording a failure while the host goes down.

$delay = 5
if ($DelayS) { $delay = [int]$DelayS }
$timeout = 60
if ($TimeoutS) { $timeout = [int]$TimeoutS }
# up to three shutdown.exe runs share the op's time
$limit = [Math]::Max(1, [int][Math]::Floor($timeout / 3))
$now = Get-FleetNow
$system = [Environment]::SystemDirectory
$exe = [IO.Path]::Combine($system, 'shutdown.exe')
$shutdownArgs = @('/r', '/f', '/t', ([string]$delay), '/d', 'p:4:1', '/c', 'tealeaf-fleet: restart after a TLS change')

function Invoke-Shutdown([string[]]$Switches) {
    $run = Invoke-FleetNative $exe $Switches $system $limit
    if ($null -eq $run.exit_code) { Stop-FleetOp ("shutdown.exe did not run: " + $run.output) }
    $run.scheduled_already = ($run.exit_code -eq 1190) -or $run.output.Contains('(1190)')
    return $run
}

$replaced = $false
$note = $null
$run = Invoke-Shutdown $shutdownArgs
if ($run.scheduled_already) {
    $abort = Invoke-Shutdown @('/a')
    $run = Invoke-Shutdown $shutdownArgs
    if ($run.scheduled_already) {
        $note = ('a shutdown scheduled by someone else could not be aborted (shutdown.exe /a: ' +
            $abort.output.Trim() + '); the host restarts when that one is due')
    } elseif ($abort.exit_code -eq 0) {
        $replaced = $true
    }
}
if (($null -eq $note) -and ($run.exit_code -ne 0)) {
    Stop-FleetOp ("shutdown.exe failed with exit code $($run.exit_code): " + $run.output)
}
Write-FleetResult @{ scheduled = $true; now = $now; replaced_scheduled = $replaced; note = $note }
