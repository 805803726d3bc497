# tealeaf-fleet common library: dot-sourced by the bootstrap before every op script.
# Windows PowerShell 2.0 compatible, ASCII only. Nothing here runs on its own: functions only.
# Why a hand-written JSON writer: ConvertTo-Json does not exist before PowerShell 3.0, and
# stdout must stay ASCII whatever the code page, so non-ASCII is written as \uXXXX.

$FleetResultMarker = '<<<TEALEAF-FLEET-RESULT>>>'
$FleetTimeFormat = 'yyyy-MM-ddTHH:mm:ss'
$FleetInvariant = [Globalization.CultureInfo]::InvariantCulture

function ConvertTo-FleetJsonString([string]$Text) {
    # Printable ASCII without " and \ (base64 file data, most names) goes out as it is: the
    # loop below costs PowerShell 2.0 tens of microseconds a character, seconds per get_file
    # slice. -cmatch: case-insensitive ranges would admit the Kelvin sign; \z, not $ (which
    # also matches before a final newline).
    if ($Text -cmatch '^[\x20\x21\x23-\x5B\x5D-\x7E]*\z') { return '"' + $Text + '"' }
    $sb = New-Object System.Text.StringBuilder
    [void]$sb.Append([char]34)
    foreach ($ch in $Text.ToCharArray()) {
        $code = [int]$ch
        if ($code -eq 34) { [void]$sb.Append('\"') }
        elseif ($code -eq 92) { [void]$sb.Append('\\') }
        elseif ($code -eq 10) { [void]$sb.Append('\n') }
        elseif ($code -eq 13) { [void]$sb.Append('\r') }
        elseif ($code -eq 9) { [void]$sb.Append('\t') }
        elseif (($code -lt 32) -or ($code -gt 126)) { [void]$sb.Append('\u' + $code.ToString('x4')) }
        else { [void]$sb.Append($ch) }
    }
    [void]$sb.Append([char]34)
    return $sb.ToString()
}

function ConvertTo-FleetJson($Value) {
    if ($null -eq $Value) { return 'null' }
    if ($Value -is [bool]) {
        if ($Value) { return 'true' }
        return 'false'
    }
    if (($Value -is [string]) -or ($Value -is [char])) { return (ConvertTo-FleetJsonString ([string]$Value)) }
    if (($Value -is [int]) -or ($Value -is [long]) -or ($Value -is [int16]) -or ($Value -is [byte]) -or
        ($Value -is [uint16]) -or ($Value -is [uint32]) -or ($Value -is [uint64]) -or ($Value -is [sbyte])) {
        return $Value.ToString($FleetInvariant)
    }
    if (($Value -is [double]) -or ($Value -is [single]) -or ($Value -is [decimal])) {
        $d = [double]$Value
        if ([double]::IsNaN($d) -or [double]::IsInfinity($d)) { return 'null' }
        return $d.ToString('R', $FleetInvariant)
    }
    if ($Value -is [datetime]) { return (ConvertTo-FleetJsonString ($Value.ToString($FleetTimeFormat, $FleetInvariant))) }
    if ($Value -is [System.Collections.IDictionary]) {
        $parts = New-Object System.Collections.ArrayList
        foreach ($key in $Value.Keys) {
            [void]$parts.Add((ConvertTo-FleetJsonString ([string]$key)) + ':' + (ConvertTo-FleetJson $Value[$key]))
        }
        return '{' + ($parts.ToArray() -join ',') + '}'
    }
    if ($Value -is [System.Collections.IEnumerable]) {
        $parts = New-Object System.Collections.ArrayList
        foreach ($item in $Value) { [void]$parts.Add((ConvertTo-FleetJson $item)) }
        return '[' + ($parts.ToArray() -join ',') + ']'
    }
    return (ConvertTo-FleetJsonString ([string]$Value))
}

function Write-FleetResult($Result) {
    # The marker on a line of its own, then exactly one JSON document (protocol.parse_result).
    $json = ConvertTo-FleetJson $Result
    [Console]::Out.Write($FleetResultMarker + "`n" + $json + "`n")
    [Console]::Out.Flush()
}

function Stop-FleetOp([string]$Message, [int]$Code = 1) {
    # [Environment]::Exit, not exit: the bootstrap ends with exit 0, and a native command's
    # $LASTEXITCODE must never become the op's exit code.
    [Console]::Out.Flush()
    [Console]::Error.WriteLine($Message)
    [Console]::Error.Flush()
    [Environment]::Exit($Code)
}

function Get-FleetCause($ErrorRecord) {
    # The exception behind an error record: a .NET call's exception arrives wrapped in
    # MethodInvocationException (and TargetInvocationException through MethodInfo.Invoke),
    # whose own message says nothing; its type tells what went wrong.
    $cause = $ErrorRecord.Exception
    while ($null -ne $cause.InnerException) { $cause = $cause.InnerException }
    return $cause
}

function ConvertTo-FleetArgument([string]$Text) {
    # One argument of a Windows command line, written so that CommandLineToArgvW and the C
    # runtime's startup code split it back into the same string ("Parsing C command-line
    # arguments", https://learn.microsoft.com/en-us/cpp/c-language/parsing-c-command-line-arguments;
    # Ansible's Escape-Argument / Argv-ToString in
    # lib/ansible/module_utils/powershell/Ansible.ModuleUtils.ArgvParser.psm1). Quoted when
    # empty or holding a space, tab, newline or double quote. Backslashes are literal except
    # in front of a double quote, so a run of them before an embedded quote is doubled plus one
    # (the escaped quote), and a run at the end is doubled (before the closing quote).
    if (($Text.Length -gt 0) -and ($Text -notmatch '[ \t\n\v"]')) { return $Text }
    $sb = New-Object System.Text.StringBuilder
    [void]$sb.Append([char]34)
    $slashes = 0
    foreach ($ch in $Text.ToCharArray()) {
        if ($ch -eq [char]92) {
            $slashes++
            continue
        }
        if ($ch -eq [char]34) {
            [void]$sb.Append([char]92, 2 * $slashes + 1)
        } elseif ($slashes -gt 0) {
            [void]$sb.Append([char]92, $slashes)
        }
        $slashes = 0
        [void]$sb.Append($ch)
    }
    [void]$sb.Append([char]92, 2 * $slashes)
    [void]$sb.Append([char]34)
    return $sb.ToString()
}

function Start-FleetNative([string]$Exe, [string[]]$Arguments, [string]$WorkingDirectory) {
    # Process.Start with every stream redirected; stdin is closed at once, so a tool that asks
    # a question reads end-of-file instead of waiting on a console nobody watches.
    $line = New-Object System.Text.StringBuilder
    foreach ($item in $Arguments) {
        if ($line.Length -gt 0) { [void]$line.Append(' ') }
        [void]$line.Append((ConvertTo-FleetArgument $item))
    }
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = $Exe
    $info.Arguments = $line.ToString()
    $info.WorkingDirectory = $WorkingDirectory
    $info.UseShellExecute = $false
    $info.CreateNoWindow = $true
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $process = New-Object System.Diagnostics.Process
    $process.StartInfo = $info
    [void]$process.Start()
    $process.StandardInput.Close()
    return $process
}

function Read-FleetNative($Process, [datetime]$Deadline) {
    # Reads stdout and stderr together until both end (every writer closed them) or the
    # deadline: @{ finished; output }. Reading one pipe to its end first deadlocks on a tool
    # that fills the other pipe's buffer; Process's own async readers and script-block event
    # handlers need a runspace on the thread that raises them, which CLR 2 thread-pool threads
    # lack. So: BeginRead without a callback on each pipe, polling IsCompleted.
    $pipes = @()
    foreach ($reader in @($Process.StandardOutput, $Process.StandardError)) {
        $pipes += @{ reader = $reader; data = (New-Object System.IO.MemoryStream);
                     buffer = (New-Object byte[] 4096); pending = $null; open = $true }
    }
    $finished = $true
    while ($true) {
        $open = 0
        $moved = $false
        foreach ($pipe in $pipes) {
            if (-not $pipe.open) { continue }
            $open++
            $stream = $pipe.reader.BaseStream
            if ($null -eq $pipe.pending) {
                $pipe.pending = $stream.BeginRead($pipe.buffer, 0, $pipe.buffer.Length, $null, $null)
            }
            if ($pipe.pending.IsCompleted) {
                $count = $stream.EndRead($pipe.pending)
                $pipe.pending = $null
                $moved = $true
                if ($count -gt 0) { $pipe.data.Write($pipe.buffer, 0, $count) } else { $pipe.open = $false }
            }
        }
        if ($open -eq 0) { break }
        if ([DateTime]::UtcNow -ge $Deadline) {
            $finished = $false
            break
        }
        if (-not $moved) { [Threading.Thread]::Sleep(20) }
    }
    if ($finished) {
        $left = [Math]::Max(0, [int]($Deadline - [DateTime]::UtcNow).TotalMilliseconds)
        $finished = $Process.WaitForExit($left)
    }
    # The text in the encoding the process's readers were set up with (the console's code page).
    $text = ''
    foreach ($pipe in $pipes) { $text += $pipe.reader.CurrentEncoding.GetString($pipe.data.ToArray()) }
    return @{ finished = $finished; output = $text }
}

# The longest Stop-FleetNativeTree waits (taskkill 10 s, then the process's exit 5 s); the
# controller keeps this much (ops.services.KILL_BUDGET_S) between a tool's deadline and its
# own, so a hung tool is killed and reported before the controller gives up on the op.
$FleetKillBudgetS = 15

function Stop-FleetNativeTree($Process) {
    # taskkill /T /F ends the process and every process it started (TLSTool.exe runs
    # openssl.exe): .NET 2.0 has no Kill(entireProcessTree). Kill() is the fallback when
    # taskkill cannot run or does not end it.
    $system = [Environment]::SystemDirectory
    try {
        $killer = Start-FleetNative ([IO.Path]::Combine($system, 'taskkill.exe')) @('/PID', [string]$Process.Id, '/T', '/F') $system
        $done = Read-FleetNative $killer ([DateTime]::UtcNow.AddSeconds(10))
        if (-not $done.finished) { $killer.Kill() }
    } catch {
        # taskkill missing or refused: Kill() below still ends the process itself
    }
    try {
        if (-not $Process.HasExited) { $Process.Kill() }
        [void]$Process.WaitForExit(5000)
    } catch {
        # it exited between HasExited and Kill()
    }
}

function Invoke-FleetNative([string]$Exe, [string[]]$Arguments, [string]$WorkingDirectory, [int]$TimeoutS) {
    # Runs a native exe in $WorkingDirectory: @{ exit_code; output (its stdout, then its
    # stderr) }. An exe that cannot start (missing, not a valid Win32 application, access
    # denied) gives exit_code $null, which callers must refuse. One still running after
    # $TimeoutS seconds is killed with its children and the op stops (exit 1) naming it; the
    # message carries none of its output or arguments (a password may be among them).
    try {
        $process = Start-FleetNative $Exe $Arguments $WorkingDirectory
    } catch {
        $reason = $_.Exception
        if ($null -ne $reason.InnerException) { $reason = $reason.InnerException }
        return @{ exit_code = $null; output = $reason.Message }
    }
    $run = Read-FleetNative $process ([DateTime]::UtcNow.AddSeconds($TimeoutS))
    if (-not $run.finished) {
        Stop-FleetNativeTree $process
        $name = [IO.Path]::GetFileName($Exe)
        Stop-FleetOp ("$name did not finish within $TimeoutS s (waiting for input?): it was " +
            'killed with the processes it started')
    }
    return @{ exit_code = $process.ExitCode; output = $run.output }
}

function ConvertTo-FleetHex([byte[]]$Bytes) {
    $sb = New-Object System.Text.StringBuilder
    foreach ($b in $Bytes) { [void]$sb.Append($b.ToString('x2')) }
    return $sb.ToString()
}

function Open-FleetRead([string]$Path) {
    # Share ReadWrite: the Data Service keeps its log open for writing while we read it.
    return [IO.File]::Open($Path, [IO.FileMode]::Open, [IO.FileAccess]::Read, [IO.FileShare]::ReadWrite)
}

function Read-FleetSmallFile([string]$Path, [int]$MaxBytes) {
    # A whole small file's bytes, opened as Open-FleetRead does ([IO.File]::ReadAllBytes shares
    # only Read, so it fails while another process has the file open for writing); a file
    # larger than $MaxBytes is refused rather than read.
    $stream = Open-FleetRead $Path
    try {
        if ($stream.Length -gt $MaxBytes) { throw "$Path is larger than $MaxBytes bytes" }
        $buffer = New-Object byte[] ([int]$stream.Length)
        $read = 0
        while ($read -lt $buffer.Length) {
            $n = $stream.Read($buffer, $read, $buffer.Length - $read)
            if ($n -le 0) { break }
            $read += $n
        }
    } finally {
        $stream.Close()
    }
    return ,$buffer
}

function New-FleetSha256 {
    # A SHA-256 object that works under the "System cryptography: use FIPS compliant algorithms"
    # policy. SHA256.Create() gives SHA256Managed on CLR 2 (and on older CLR 4 builds), whose
    # constructor then throws InvalidOperationException ("not part of the Windows Platform FIPS
    # validated cryptographic algorithms"). SHA256CryptoServiceProvider (System.Core, .NET 3.5)
    # wraps the FIPS-validated CAPI module, so it comes first; SHA256.Create() only when
    # System.Core cannot be loaded. The caller reads the class name with .GetType().Name.
    # https://learn.microsoft.com/dotnet/api/system.security.cryptography.sha256cryptoserviceprovider
    # https://learn.microsoft.com/dotnet/api/system.security.cryptography.sha256.create
    $systemCore = $true
    try { Add-Type -AssemblyName System.Core } catch { $systemCore = $false }
    if ($systemCore) { return (New-Object System.Security.Cryptography.SHA256CryptoServiceProvider) }
    return [Security.Cryptography.SHA256]::Create()
}

function Get-FleetHash($Data) {
    # Lowercase hex SHA-256 of a Stream (read to its end) or a byte[].
    $sha = New-FleetSha256
    try {
        $hash = $sha.ComputeHash($Data)
    } finally {
        $sha.Clear()
    }
    return (ConvertTo-FleetHex $hash)
}

function Get-FleetSha256([string]$Path) {
    # Get-FileHash needs PowerShell 4.0.
    $stream = Open-FleetRead $Path
    try {
        return (Get-FleetHash $stream)
    } finally {
        $stream.Close()
    }
}

function Get-FleetErrorText($ErrorRecord) {
    # The innermost exception's message: Windows' own text ("The process cannot access the
    # file ... because it is being used by another process."), not PowerShell's wrapper
    # ('Exception calling "Open" with "4" argument(s): ...').
    $exception = $ErrorRecord.Exception
    while ($null -ne $exception.InnerException) { $exception = $exception.InnerException }
    return $exception.Message
}

function Get-FleetFileSummary([string]$Path) {
    # {size, sha256} of a file, or $null when it does not exist.
    if (-not [IO.File]::Exists($Path)) { return $null }
    $info = New-Object System.IO.FileInfo -ArgumentList $Path
    return @{ size = $info.Length; sha256 = (Get-FleetSha256 $Path) }
}

function Get-FleetRegistryValue([string]$Key, [string]$Name) {
    # A registry value, or $null when the key or the value is absent.
    if (-not (Test-Path -LiteralPath $Key)) { return $null }
    $item = Get-ItemProperty -LiteralPath $Key -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    $value = $item.$Name
    # A REG_MULTI_SZ arrives as string[]: returned bare, PowerShell would unroll it into the
    # pipeline (one entry becomes a plain string, none becomes $null); the comma keeps it whole.
    if ($value -is [array]) { return ,$value }
    return $value
}

function Test-FleetRegistryValueName([string]$Key, [string]$Name) {
    # Whether the value `Name` exists under `Key`, from the key's value names alone: the value
    # itself is never read (used for values under the Tealeaf `security` key, which the tool
    # must not read). Registry names compare case-insensitively, as -contains does.
    if (-not (Test-Path -LiteralPath $Key)) { return $false }
    $names = [string[]](Get-Item -LiteralPath $Key).GetValueNames()
    return ($names -contains $Name)
}

function Get-FleetRegistryNumber([string]$Key, [string]$Name) {
    # A registry value the tool compares as a number, read so that no value can fail the op:
    # the number (a DWORD arrives as Int32, a QWORD as Int64; a REG_SZ holding a whole number
    # converts), $null when the key or the value is absent, or @{ text; kind } when it is not a
    # number (EnableTLS as a REG_SZ 'true', an empty string, binary data): [int]'true' throws
    # under ErrorActionPreference Stop, and [int]'' reads as 0.
    $value = Get-FleetRegistryValue $Key $Name
    if ($null -eq $value) { return $null }
    if (($value -is [int]) -or ($value -is [long])) { return $value }
    $number = 0
    if (($value -is [string]) -and
        [int]::TryParse($value, [Globalization.NumberStyles]::Integer, $FleetInvariant, [ref]$number)) {
        return $number
    }
    $kind = $null
    try { $kind = [string]((Get-Item -LiteralPath $Key).GetValueKind($Name)) } catch { $kind = $null }
    return @{ text = [string]$value; kind = $kind }
}

function Get-FleetPendingReboot {
    # The three places Windows records a reboot it still owes (servicing, Windows Update,
    # files to replace at boot; devblogs.microsoft.com/scripting/determine-pending-reboot-
    # statuspowershell-style-part-1); only presence and a count are reported, never paths.
    $renames = Get-FleetRegistryValue 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' 'PendingFileRenameOperations'
    $renameCount = 0
    if ($null -ne $renames) { $renameCount = @($renames).Length }
    return @{
        cbs_reboot_pending = Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending'
        wu_reboot_required = Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired'
        file_rename_entries = $renameCount
    }
}

function Split-FleetList([string]$Text) {
    # List parameters travel as lines joined with LF; empty lines are dropped.
    $items = New-Object System.Collections.ArrayList
    if ($Text) {
        foreach ($line in $Text.Split([char]10)) {
            $item = $line.TrimEnd([char]13)
            if ($item -ne '') { [void]$items.Add($item) }
        }
    }
    return ,($items.ToArray())
}

function Get-FleetNow {
    return (Get-Date).ToString($FleetTimeFormat, $FleetInvariant)
}

# How many Data Service log files a read walks at most, newest first: a month of daily files
# (a service that has run longer without a restart shows "port unknown"), so a folder holding
# years of logs costs a directory listing, not years of reading.
$FleetDataServiceLogLimit = 31
# ... and how many bytes of older files the walk without Since reads beyond the newest file:
# PowerShell 2.0 reads a few hundred thousand lines a second at best, so a month of large logs
# would outlast the op's deadline. Past the budget the walk stops ("port unknown").
$FleetDataServiceLogBudget = 67108864

function Get-FleetDataServiceLogs([string]$LogDir) {
    # The Data Service's log files, newest first by LastWriteTimeUtc (UTC: local times repeat an
    # hour when daylight saving ends), ties by name. Two naming schemes are documented: the
    # Tealeaf 9.0.2 procedure names TLDataService_<date>.log; HCL Discover 12.1.6 ("Log file
    # location", help.hcl-software.com/HCLDiscover/12.1.6/en/DC/CfgDCCmpt/LogFileLocation_40.html)
    # writes a live TLDataService.log, rolled daily, older days carrying a YYYYMMDD indicator.
    # TLDataService*.log matches both, and no date is ever read out of a name. A three-letter
    # extension in a GetFiles pattern also matches longer ones ('*.log' finds 'x.log_old'): keep
    # the names that end in .log.
    $files = New-Object System.Collections.ArrayList
    $keys = New-Object System.Collections.ArrayList
    foreach ($file in (New-Object System.IO.DirectoryInfo -ArgumentList $LogDir).GetFiles('TLDataService*.log')) {
        if ($file.Name.EndsWith('.log', [StringComparison]::OrdinalIgnoreCase)) {
            [void]$files.Add($file)
            [void]$keys.Add($file.LastWriteTimeUtc.Ticks.ToString('D19', $FleetInvariant) + '|' + $file.Name.ToUpperInvariant())
        }
    }
    $sorted = $files.ToArray()
    [Array]::Sort([string[]]$keys.ToArray(), $sorted, [StringComparer]::Ordinal)
    [Array]::Reverse($sorted)
    return ,$sorted
}

function Get-FleetDataServiceMode([string]$InstallDir, [string]$Since) {
    # Which port line the Data Service wrote when it started. Without $Since: the newest startup
    # block, walking the logs newest first (the log rolls daily and the service runs for days,
    # so the newest file usually holds none). With $Since: the first block at or after it, in
    # the files written at or after it (their LastWriteTime, host-local, compares with log
    # times as yyyy-MM-ddTHH:mm:ss strings) and in the newest file whatever its time: a
    # directory listing shows the time a file had when its writer opened it, until the writer
    # closes it (devblogs.microsoft.com/oldnewthing/20111226-00/?p=8813), and the Data
    # Service holds its current log open. newest_log: the newest file, block or not.
    $none = @{ mode = $null; port = $null; started_at = $null; log = $null; newest_log = $null }
    if ($Since -and ($Since -notmatch '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$')) { Stop-FleetOp "Since must look like yyyy-MM-ddTHH:mm:ss" 2 }
    if (-not $InstallDir) { return $none }
    $logDir = [IO.Path]::Combine($InstallDir, 'Logs')
    if (-not [IO.Directory]::Exists($logDir)) { return $none }
    $logs = Get-FleetDataServiceLogs $logDir
    if ($logs.Length -eq 0) { return $none }
    $none.newest_log = $logs[0].FullName
    $count = [Math]::Min($logs.Length, $FleetDataServiceLogLimit)
    if ($Since) {
        for ($i = $count - 1; $i -ge 0; $i--) {
            $written = $logs[$i].LastWriteTime.ToString($FleetTimeFormat, $FleetInvariant)
            if (($i -gt 0) -and ([string]::CompareOrdinal($written, $Since) -lt 0)) { continue }
            foreach ($block in (Read-FleetStartupBlocks $logs[$i].FullName)) {
                if ([string]::CompareOrdinal([string]$block.started_at, $Since) -ge 0) {
                    $block.newest_log = $none.newest_log
                    return $block
                }
            }
        }
    } else {
        $spent = 0
        for ($i = 0; $i -lt $count; $i++) {
            $spent += $logs[$i].Length
            if (($i -gt 0) -and ($spent -gt ($logs[0].Length + $FleetDataServiceLogBudget))) { break }
            $blocks = Read-FleetStartupBlocks $logs[$i].FullName
            if ($blocks.Length -gt 0) {
                $block = $blocks[$blocks.Length - 1]
                $block.newest_log = $none.newest_log
                return $block
            }
        }
    }
    return $none
}

function Read-FleetStartupBlocks([string]$Log) {
    $blocks = New-Object System.Collections.ArrayList
    $current = $null
    $stream = Open-FleetRead $Log
    try {
        $reader = New-Object System.IO.StreamReader -ArgumentList $stream
        while ($null -ne ($line = $reader.ReadLine())) {
            # Both lines of interest name Service.Start: an ordinal IndexOf skips the request
            # lines at a fraction of the cost of -match, which matters on PowerShell 2.0.
            if ($line.IndexOf('Service.Start', [StringComparison]::Ordinal) -lt 0) { continue }
            if ($line -match '^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\s+Service\.Start\s+INFO\s+Starting HTTP Server') {
                $current = @{ mode = $null; port = $null; started_at = $matches[1]; log = $Log; line = $null }
                [void]$blocks.Add($current)
            } elseif (($null -ne $current) -and ($null -eq $current.mode) -and
                      ($line -match 'Service\.Start\s+INFO\s+(TLS )?Port:\s*(\d+)')) {
                if ($matches[1]) { $current.mode = 'tls' } else { $current.mode = 'plain' }
                $current.port = [int]$matches[2]
                $current.line = $line  # verbatim: the report shows the line itself as evidence
            }
        }
    } finally {
        $stream.Close()
    }
    return ,($blocks.ToArray())
}
