# tealeaf-fleet-op: restart_services
param([string]$Names, [string]$TimeoutS, [string]$InstallDir, [string]$IisResetS)
# Restarts exactly the named services (the ones that were Running): stops in waves, dependents
# first; starts in waves, dependencies first; never starts a service that is not named, not even
# through the service manager (a service whose start would start an unnamed one stays stopped).
# With $InstallDir, it then reads what the health gates look at first (every TeaLeaf service's
# state, IIS, the Data Service's startup block since the restart began), in this same
# powershell.exe: a restart costs one PowerShell start, not two. With $IisResetS (seconds),
# iisreset.exe runs after the services (as the vendor's procedure does), before that read.

Add-Type -AssemblyName System.ServiceProcess
$deadline = (Get-Date).AddSeconds([double]$TimeoutS)
$clock = [Diagnostics.Stopwatch]::StartNew()

# One restart at a time per host: a controller killed mid-restart leaves its op running here,
# and a resumed run must not stop services that op is about to start. The mutex is released
# when this process exits, however it exits (an abandoned mutex counts as acquired).
# A mutex another account created cannot even be opened (UnauthorizedAccessException): its
# default DACL comes from its creator's token
# (learn.microsoft.com/windows/win32/sync/synchronization-object-security-and-access-rights).
# It exists only while a process holds it open, so that restart is still running: contention.
$contention = 'another restart of TeaLeaf services is still running on this host'
$mutexName = 'Global\tealeaf-fleet-restart-services'
try {
    $mutex = New-Object System.Threading.Mutex -ArgumentList $false, $mutexName
} catch {
    if ((Get-FleetCause $_) -is [System.UnauthorizedAccessException]) {
        Stop-FleetOp "$contention (another account holds its lock, $mutexName)"
    }
    throw $_
}
try {
    $owned = $mutex.WaitOne([int][Math]::Max(0, ($deadline - (Get-Date)).TotalMilliseconds), $false)
} catch [System.Threading.AbandonedMutexException] {
    $owned = $true
}
if (-not $owned) { Stop-FleetOp $contention }
$startedAt = Get-FleetNow
# Not $names: variable names ignore case, and the [string] constraint of $Names would join
# the list back into one string ('A B'), so every name after the first would be lost.
$serviceNames = Split-FleetList $Names
$controllers = @{}
$before = @{}
foreach ($name in $serviceNames) {
    $sc = New-Object System.ServiceProcess.ServiceController -ArgumentList $name
    try {
        $before[$name] = [string]$sc.Status
    } catch {
        Stop-FleetOp "service '$name' does not exist or cannot be opened: $($_.Exception.Message)"
    }
    $controllers[$name] = $sc
}

function Test-Named([string]$Candidate, $Pending, [string]$Self) {
    foreach ($other in $Pending) {
        if (($other -ne $Self) -and ($other -eq $Candidate)) { return $true }
    }
    return $false
}

function Get-Wave($Pending, [string]$Relation) {
    # The pending services none of whose related services (per $Relation) is still pending.
    $wave = New-Object System.Collections.ArrayList
    foreach ($name in $Pending) {
        $blocked = $false
        foreach ($related in $controllers[$name].$Relation) {
            if (Test-Named $related.ServiceName $Pending $name) { $blocked = $true }
        }
        if (-not $blocked) { [void]$wave.Add($name) }
    }
    if ($wave.Count -eq 0) { foreach ($name in $Pending) { [void]$wave.Add($name) } }
    return ,($wave.ToArray())
}

function Wait-Status($Wave, [string]$Status, [string]$Failed) {
    # Names in $Wave that have not reached $Status by the deadline. A name found in $Failed
    # stops the wait for it at once: StartService returns only once the service is Start
    # Pending, so a started service seen Stopped again has failed to start, and waiting for it
    # until the deadline would only hold the host's other services back.
    # learn.microsoft.com/windows/win32/api/winsvc/nf-winsvc-startservicea
    while ($true) {
        $late = New-Object System.Collections.ArrayList
        $waiting = $false
        foreach ($name in $Wave) {
            $controllers[$name].Refresh()
            $now = [string]$controllers[$name].Status
            if ($now -ne $Status) {
                [void]$late.Add($name)
                if ($now -ne $Failed) { $waiting = $true }
            }
        }
        if ((-not $waiting) -or ((Get-Date) -gt $deadline)) { return ,($late.ToArray()) }
        Start-Sleep -Milliseconds 250
    }
}

function Get-StoppedDependencies($Controller) {
    # StartService makes the service manager start the stopped services this one depends on,
    # and theirs, named or not (learn.microsoft.com/windows/win32/services/service-startup):
    # the stopped ones not in the list, found by walking down through stopped dependencies.
    $found = New-Object System.Collections.ArrayList
    $seen = @{}
    $queue = New-Object System.Collections.ArrayList
    foreach ($dependency in $Controller.ServicesDependedOn) { [void]$queue.Add($dependency) }
    while ($queue.Count -gt 0) {
        $dependency = $queue[0]
        $queue.RemoveAt(0)
        if ($seen.ContainsKey($dependency.ServiceName)) { continue }
        $seen[$dependency.ServiceName] = $true
        if ([string]$dependency.Status -ne 'Stopped') { continue }
        if (-not (Test-Named $dependency.ServiceName $serviceNames '')) { [void]$found.Add($dependency.ServiceName) }
        foreach ($next in $dependency.ServicesDependedOn) { [void]$queue.Add($next) }
    }
    return ,($found.ToArray())
}

$problems = New-Object System.Collections.ArrayList
$pending = New-Object System.Collections.ArrayList
foreach ($name in $serviceNames) { [void]$pending.Add($name) }
while ($pending.Count -gt 0) {
    $wave = Get-Wave $pending.ToArray() 'DependentServices'
    $stopping = New-Object System.Collections.ArrayList
    foreach ($name in $wave) {
        $sc = $controllers[$name]
        $sc.Refresh()
        if ([string]$sc.Status -eq 'StartPending') { [void](Wait-Status @($name) 'Running' 'Stopped') }
        $sc.Refresh()
        $state = [string]$sc.Status
        $blockers = New-Object System.Collections.ArrayList
        foreach ($dependent in $sc.DependentServices) {
            if (([string]$dependent.Status -ne 'Stopped') -and (-not (Test-Named $dependent.ServiceName $serviceNames ''))) {
                [void]$blockers.Add($dependent.ServiceName)
            }
        }
        if ($blockers.Count -gt 0) {
            # ServiceController.Stop() would stop them too, and nobody would start them again.
            [void]$problems.Add("$name not stopped: running dependent(s) not in the list: " + ($blockers.ToArray() -join ', '))
        } else {
            [void]$stopping.Add($name)
            if (($state -ne 'Stopped') -and ($state -ne 'StopPending')) {
                try { $sc.Stop() } catch [System.InvalidOperationException] { [void]$problems.Add("$name would not stop: " + $_.Exception.Message) }
            }
        }
    }
    foreach ($name in (Wait-Status $stopping.ToArray() 'Stopped' '')) { [void]$problems.Add("$name did not stop in time") }
    foreach ($name in $wave) { $pending.Remove($name) }
}

foreach ($name in $serviceNames) { [void]$pending.Add($name) }
while ($pending.Count -gt 0) {
    $wave = Get-Wave $pending.ToArray() 'ServicesDependedOn'
    $starting = New-Object System.Collections.ArrayList
    foreach ($name in $wave) {
        $sc = $controllers[$name]
        $sc.Refresh()
        if ([string]$sc.Status -eq 'Stopped') {
            $unnamed = Get-StoppedDependencies $sc
            if ($unnamed.Count -gt 0) {
                # Start() would start them too, though they were left stopped on purpose.
                [void]$problems.Add("$name not started: it needs stopped service(s) not in the list: " + ($unnamed -join ', '))
                continue
            }
            try { $sc.Start() } catch [System.InvalidOperationException] { [void]$problems.Add("$name would not start: " + $_.Exception.Message) }
        }
        [void]$starting.Add($name)
    }
    [void](Wait-Status $starting.ToArray() 'Running' 'Stopped')
    foreach ($name in $wave) { $pending.Remove($name) }
}

$services = New-Object System.Collections.ArrayList
$notRunning = New-Object System.Collections.ArrayList
foreach ($name in $serviceNames) {
    $controllers[$name].Refresh()
    $after = [string]$controllers[$name].Status
    if ($after -ne 'Running') { [void]$notRunning.Add("$name ($after)") }
    [void]$services.Add(@{ name = $name; before = $before[$name]; after = $after })
}
if (($notRunning.Count -gt 0) -or ($problems.Count -gt 0)) {
    $parts = New-Object System.Collections.ArrayList
    if ($notRunning.Count -gt 0) { [void]$parts.Add('not Running by the deadline: ' + ($notRunning.ToArray() -join ', ')) }
    foreach ($problem in $problems) { [void]$parts.Add($problem) }
    Stop-FleetOp ($parts.ToArray() -join '; ')
}
$mutex.ReleaseMutex()
$result = @{ started_at = $startedAt; elapsed_s = $clock.Elapsed.TotalSeconds; services = $services.ToArray() }
if ($IisResetS) {
    $system = [Environment]::SystemDirectory
    $exe = [IO.Path]::Combine($system, 'iisreset.exe')
    if (-not [IO.File]::Exists($exe)) { Stop-FleetOp "iisreset.exe not found at $($exe) - is IIS installed?" }
    $run = Invoke-FleetNative $exe @() $system ([int]$IisResetS)
    if ($null -eq $run.exit_code) { Stop-FleetOp ("iisreset.exe did not run: " + $run.output) }
    if ([int]$run.exit_code -ne 0) { Stop-FleetOp ("iisreset exited $($run.exit_code): " + $run.output) }
    $result.iisreset = @{ exit_code = [int]$run.exit_code; output = $run.output }
}
if ($InstallDir) {
    # ServiceController spellings ("StartPending"), as the gates compare them.
    $states = New-Object System.Collections.ArrayList
    $iis = @{ present = $false; state = $null }
    foreach ($sc in [System.ServiceProcess.ServiceController]::GetServices()) {
        if ($sc.ServiceName.StartsWith('TeaLeaf', [StringComparison]::OrdinalIgnoreCase) -or $sc.DisplayName.StartsWith('TeaLeaf', [StringComparison]::OrdinalIgnoreCase)) {
            [void]$states.Add(@{ name = $sc.ServiceName; display_name = $sc.DisplayName; state = [string]$sc.Status })
        }
        if ($sc.ServiceName -eq 'W3SVC') { $iis = @{ present = $true; state = [string]$sc.Status } }
    }
    $result.after = @{ services = $states.ToArray(); iis = $iis; data_service = (Get-FleetDataServiceMode $InstallDir $startedAt) }
}
Write-FleetResult $result
