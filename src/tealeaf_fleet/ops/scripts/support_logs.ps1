# tealeaf-fleet-op: support_logs
param([string]$InstallDir, [string]$Since, [string]$SinceMinutes, [string]$MaxBytes, [string]$MaxEvents)
# Read-only evidence for a support case: the Data Service log lines written since a time (every
# startup block whatever its time, since it says which mode the service started in), and the
# Application event log entries that name TeaLeaf, newest first. Bounded: at most MaxBytes of
# log text (older lines are left out first: cut = true) and MaxEvents entries, each message at
# most 4000 characters. Since is host-local yyyy-MM-ddTHH:mm:ss; without it, SinceMinutes back
# from now (default 1440). Entries are read through System.Diagnostics.EventLog, newest first,
# until one is older than the cut-off (Get-EventLog throws when nothing matches).

$limit = 1048576
if ($MaxBytes) { $limit = [int]$MaxBytes }
$eventLimit = 200
if ($MaxEvents) { $eventLimit = [int]$MaxEvents }
if ($Since) {
    if ($Since -notmatch '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$') { Stop-FleetOp "Since must look like yyyy-MM-ddTHH:mm:ss" 2 }
    $cutoff = [DateTime]::ParseExact($Since, $FleetTimeFormat, $FleetInvariant)
} else {
    $minutes = 1440
    if ($SinceMinutes) { $minutes = [int]$SinceMinutes }
    $cutoff = (Get-Date).AddMinutes(-$minutes)
}
$cutText = $cutoff.ToString($FleetTimeFormat, $FleetInvariant)

$files = New-Object System.Collections.ArrayList
$used = 0
$cut = $false
$logDir = $null
if ($InstallDir) { $logDir = [IO.Path]::Combine($InstallDir, 'Logs') }
if ($logDir -and [IO.Directory]::Exists($logDir)) {
    $logs = Get-FleetDataServiceLogs $logDir
    $count = [Math]::Min($logs.Length, $FleetDataServiceLogLimit)
    for ($i = 0; ($i -lt $count) -and (-not $cut); $i++) {
        $kept = New-Object System.Collections.ArrayList
        $inBlock = $false
        $stream = Open-FleetRead $logs[$i].FullName
        try {
            $reader = New-Object System.IO.StreamReader -ArgumentList $stream
            while ($null -ne ($line = $reader.ReadLine())) {
                if ($line -match 'Service\.Start\s+INFO\s+Starting HTTP Server') { $inBlock = $true }
                $recent = ($line -match '^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)') -and
                    ([string]::CompareOrdinal($matches[1], $cutText) -ge 0)
                if ($inBlock -or $recent) { [void]$kept.Add($line) }
                if ($line -match 'Service\.Start\s+INFO\s+HTTP Server Started') { $inBlock = $false }
            }
        } finally {
            $stream.Close()
        }
        $size = 0
        foreach ($line in $kept) { $size += $line.Length + 1 }
        $drop = 0
        while (($drop -lt $kept.Count) -and ($used + $size -gt $limit)) {
            $size -= ([string]$kept[$drop]).Length + 1
            $drop++
        }
        if ($drop -gt 0) { $kept.RemoveRange(0, $drop); $cut = $true }
        $used += $size
        if ($kept.Count -gt 0) {
            [void]$files.Add(@{ path = $logs[$i].FullName; lines = [string[]]$kept.ToArray() })
        }
    }
}

$entries = New-Object System.Collections.ArrayList
$eventsCut = $false
$eventsError = $null
try {
    $log = New-Object System.Diagnostics.EventLog -ArgumentList 'Application'
    $all = $log.Entries
    for ($j = $all.Count - 1; $j -ge 0; $j--) {
        $entry = $all[$j]
        if ($entry.TimeGenerated -lt $cutoff) { break }
        $text = [string]$entry.Message
        if (($entry.Source -notlike '*TeaLeaf*') -and ($text -notlike '*TeaLeaf*')) { continue }
        if ($entries.Count -ge $eventLimit) { $eventsCut = $true; break }
        if ($text.Length -gt 4000) { $text = $text.Substring(0, 4000) }
        [void]$entries.Add(@{
            time = $entry.TimeGenerated.ToString($FleetTimeFormat, $FleetInvariant)
            source = [string]$entry.Source
            entry_type = [string]$entry.EntryType
            event_id = [int]($entry.InstanceId -band 0xFFFF)
            message = $text
        })
    }
} catch {
    $eventsError = Get-FleetErrorText $_
}

Write-FleetResult @{
    since = $cutText
    now = (Get-FleetNow)
    data_service = @{ files = $files.ToArray(); cut = $cut; bytes = $used }
    events = @{ entries = $entries.ToArray(); cut = $eventsCut; error = $eventsError }
}
