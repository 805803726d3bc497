# tealeaf-fleet-op: support_logs
param([string]$InstallDir, [string]$Since, [string]$SinceMinutes, [string]$MaxBytes, [string]$MaxEvents)
# Read-only evidence for a support case: the Data Service log lines written since a time (every
# startup block whatever its time, since it says which mode the service started in), and the
# Application event log entries that name TeaLeaf, newest first. Since is host-local
# yyyy-MM-ddTHH:mm:ss; without it, SinceMinutes back from now (default 1440).
# Bounded while reading, never after: lines since the time (and the unstamped lines that follow
# a kept one: stack traces) are kept in a queue trimmed from its oldest end as the file is read,
# within three quarters of MaxBytes over all files (cut = true when one was left out); startup
# blocks (at most 64 lines each) go to their own list, within the last quarter, so no number of
# new lines can push them out; when they outgrow it the oldest whole blocks go first, but a
# file's newest block is kept while no newer file had one. The walk goes newest file first and
# stops at an older file written before the cut-off (or after a cut) once a startup block was
# found, and like Get-FleetDataServiceMode after $FleetDataServiceLogBudget bytes beyond the
# newest file. Events: at most MaxEvents entries, each message at most 4000 characters, read
# through System.Diagnostics.EventLog newest first until one is older than the cut-off
# (Get-EventLog throws when nothing matches).

$limit = 1048576
if ($MaxBytes) { $limit = [int]$MaxBytes }
$reserve = [int][Math]::Floor($limit / 4)
$recentLimit = $limit - $reserve
$blockLineCap = 64
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
$blockUsed = 0
$read = 0
$cut = $false
$haveBlock = $false
$logDir = $null
if ($InstallDir) { $logDir = [IO.Path]::Combine($InstallDir, 'Logs') }
if ($logDir -and [IO.Directory]::Exists($logDir)) {
    $logs = Get-FleetDataServiceLogs $logDir
    $count = [Math]::Min($logs.Length, $FleetDataServiceLogLimit)
    for ($i = 0; $i -lt $count; $i++) {
        $written = $logs[$i].LastWriteTime.ToString($FleetTimeFormat, $FleetInvariant)
        $older = [string]::CompareOrdinal($written, $cutText) -lt 0
        if ($i -gt 0) {
            if ($haveBlock -and ($cut -or $older)) { break }
            if ($read + $logs[$i].Length -gt $logs[0].Length + $FleetDataServiceLogBudget) {
                if (-not $older) { $cut = $true }
                break
            }
        }
        $read += $logs[$i].Length
        $recentNo = New-Object System.Collections.Queue
        $recentText = New-Object System.Collections.Queue
        $fileUsed = 0
        $blockNo = New-Object System.Collections.ArrayList
        $blockText = New-Object System.Collections.ArrayList
        $blockStarts = New-Object System.Collections.ArrayList
        $fileBlock = 0
        $inBlock = $false
        $follow = $false
        $n = 0
        $stream = Open-FleetRead $logs[$i].FullName
        try {
            $reader = New-Object System.IO.StreamReader -ArgumentList $stream
            while ($null -ne ($line = $reader.ReadLine())) {
                $n++
                if ($line -match 'Service\.Start\s+INFO\s+Starting HTTP Server') {
                    $inBlock = $true
                    [void]$blockStarts.Add($blockNo.Count)
                }
                if ($inBlock) {
                    [void]$blockNo.Add($n)
                    [void]$blockText.Add($line)
                    $fileBlock += $line.Length + 1
                    $first = [int]$blockStarts[$blockStarts.Count - 1]
                    if (($line -match 'Service\.Start\s+INFO\s+HTTP Server Started') -or
                        (($blockNo.Count - $first) -ge $blockLineCap)) { $inBlock = $false }
                    while (($blockUsed + $fileBlock -gt $reserve) -and
                           (($blockStarts.Count -gt 1) -or ($haveBlock -and ($blockStarts.Count -gt 0)))) {
                        $end = $blockNo.Count
                        if ($blockStarts.Count -gt 1) { $end = [int]$blockStarts[1] }
                        for ($k = 0; $k -lt $end; $k++) { $fileBlock -= ([string]$blockText[$k]).Length + 1 }
                        $blockNo.RemoveRange(0, $end)
                        $blockText.RemoveRange(0, $end)
                        $blockStarts.RemoveAt(0)
                        for ($k = 0; $k -lt $blockStarts.Count; $k++) { $blockStarts[$k] = [int]$blockStarts[$k] - $end }
                        if ($blockStarts.Count -eq 0) { $inBlock = $false }
                        $cut = $true
                    }
                    $follow = $false
                    continue
                }
                if ($line -match '^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)') {
                    $follow = [string]::CompareOrdinal($matches[1], $cutText) -ge 0
                }
                if (-not $follow) { continue }
                $recentNo.Enqueue($n)
                $recentText.Enqueue($line)
                $fileUsed += $line.Length + 1
                while (($recentNo.Count -gt 0) -and ($used + $fileUsed -gt $recentLimit)) {
                    [void]$recentNo.Dequeue()
                    $fileUsed -= ([string]$recentText.Dequeue()).Length + 1
                    $cut = $true
                }
            }
        } finally {
            $stream.Close()
        }
        $used += $fileUsed
        $blockUsed += $fileBlock
        if ($blockStarts.Count -gt 0) { $haveBlock = $true }
        # the file's kept lines in the file's order: both lists are sorted by line number
        $rNo = $recentNo.ToArray()
        $rText = $recentText.ToArray()
        $merged = New-Object System.Collections.ArrayList
        $b = 0
        $r = 0
        while (($b -lt $blockNo.Count) -or ($r -lt $rNo.Length)) {
            if (($r -ge $rNo.Length) -or (($b -lt $blockNo.Count) -and ([int]$blockNo[$b] -lt [int]$rNo[$r]))) {
                [void]$merged.Add($blockText[$b])
                $b++
            } else {
                [void]$merged.Add($rText[$r])
                $r++
            }
        }
        if ($merged.Count -gt 0) {
            [void]$files.Add(@{ path = $logs[$i].FullName; lines = [string[]]$merged.ToArray() })
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
    data_service = @{ files = $files.ToArray(); cut = $cut; bytes = ($used + $blockUsed) }
    events = @{ entries = $entries.ToArray(); cut = $eventsCut; error = $eventsError }
}
