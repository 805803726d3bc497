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

function Invoke-FleetNative([string]$Exe, [string[]]$Arguments) {
    # Runs a native command: @{ exit_code; output (its stdout and stderr lines, CRLF) }.
    # Its stderr lines turn into error records, and with 'Stop' the first one would end the op,
    # hence 'Continue' (this function's scope only). An exe that cannot start is a
    # statement-terminating error that 'Continue' would step over, leaving $LASTEXITCODE $null
    # (and [int]$null is 0): it is caught and exit_code stays $null, which callers must refuse.
    $ErrorActionPreference = 'Continue'
    $exitCode = $null
    try {
        $lines = & $Exe $Arguments 2>&1
        $exitCode = $LASTEXITCODE
    } catch {
        $lines = @($_.Exception.Message)
    }
    $text = ''
    foreach ($line in @($lines)) { $text += [string]$line + "`r`n" }
    return @{ exit_code = $exitCode; output = $text }
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
    return $item.$Name
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

function Get-FleetDataServiceMode([string]$InstallDir, [string]$Since) {
    # Which port line the Data Service wrote after its startup: the newest startup block, or the
    # first block at or after $Since (log times compare as yyyy-MM-ddTHH:mm:ss strings).
    $none = @{ mode = $null; port = $null; started_at = $null; log = $null }
    if (-not $InstallDir) { return $none }
    $logDir = [IO.Path]::Combine($InstallDir, 'Logs')
    if (-not [IO.Directory]::Exists($logDir)) { return $none }
    # A three-letter extension in a GetFiles pattern also matches longer ones ('*.log' finds
    # 'x.log_old'), which would sort after the live log: keep the names that end in .log.
    $found = New-Object System.Collections.ArrayList
    foreach ($file in [IO.Directory]::GetFiles($logDir, 'TLDataService_*.log')) {
        if ($file.EndsWith('.log', [StringComparison]::OrdinalIgnoreCase)) { [void]$found.Add($file) }
    }
    $logs = [string[]]$found.ToArray()
    [Array]::Sort($logs, [StringComparer]::OrdinalIgnoreCase)
    if ($logs.Length -eq 0) { return $none }
    if ($Since) {
        if ($Since -notmatch '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$') { Stop-FleetOp "Since must look like yyyy-MM-ddTHH:mm:ss" 2 }
        $sinceDay = $Since.Substring(0, 10).Replace('-', '')
        $candidates = @()
        foreach ($log in $logs) {
            $day = [IO.Path]::GetFileNameWithoutExtension($log).Substring(14)
            if ([string]::CompareOrdinal($day, $sinceDay) -ge 0) { $candidates += $log }
        }
    } else {
        $candidates = @($logs[$logs.Length - 1])
    }
    foreach ($log in $candidates) {
        $blocks = Read-FleetStartupBlocks $log
        if ($Since) {
            foreach ($block in $blocks) {
                if ([string]::CompareOrdinal([string]$block.started_at, $Since) -ge 0) { return $block }
            }
        } elseif ($blocks.Length -gt 0) {
            return $blocks[$blocks.Length - 1]
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
            if ($line -match '^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\s+Service\.Start\s+INFO\s+Starting HTTP Server') {
                $current = @{ mode = $null; port = $null; started_at = $matches[1]; log = $Log }
                [void]$blocks.Add($current)
            } elseif (($null -ne $current) -and ($null -eq $current.mode) -and
                      ($line -match 'Service\.Start\s+INFO\s+(TLS )?Port:\s*(\d+)')) {
                if ($matches[1]) { $current.mode = 'tls' } else { $current.mode = 'plain' }
                $current.port = [int]$matches[2]
            }
        }
    } finally {
        $stream.Close()
    }
    return ,($blocks.ToArray())
}
