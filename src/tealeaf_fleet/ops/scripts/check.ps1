# tealeaf-fleet-op: check
param([string]$Sentinel, [string]$InstallDir, [string]$MutexName)
# Read-only proof of the remote mechanisms a rollout relies on (`fleet check`), next to facts.
# Nothing is changed: the one write is a temporary file in Tools (in the install folder while
# Tools does not exist yet), hashed and deleted before this op answers; the restart mutex is
# created or opened and closed at once, never waited on or held. Under
# ...\TeaLeaf Technology only value NAMES are listed, and nothing under its security subkey.
# Each probe catches its own failure, so one refusal is reported and the others still run.

# First statement: $MyInvocation is this script block's own (its text is the tail of stdin).
$ownText = [string]$MyInvocation.MyCommand.ScriptBlock
$tealeafKey = 'HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology'
$ndpKey = 'HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP'
$utcFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'"
$newestLogs = 20

function Get-CheckError($Record) {
    # The .NET exception's own message, not PowerShell's 'Exception calling "X"' wrapper.
    $e = $Record.Exception
    if ($null -ne $e.InnerException) { $e = $e.InnerException }
    return [string]$e.Message
}

function Get-ShellFacts {
    # The WinRS shell as the op sees it: console code pages (WINRS_CODEPAGE), process bitness
    # (the 64-bit registry view), the account and whether it holds the Administrators role.
    $shell = @{
        host_name = [string]$Host.Name; output_codepage = $null; input_codepage = $null
        process_bits = [IntPtr]::Size * 8; os_64bit = $false; account = $null; admin = $null; error = $null
    }
    $shell.os_64bit = ($env:PROCESSOR_ARCHITECTURE -eq 'AMD64') -or ([bool]$env:PROCESSOR_ARCHITEW6432)
    try {
        $shell.output_codepage = [Console]::OutputEncoding.CodePage
        $shell.input_codepage = [Console]::InputEncoding.CodePage
    } catch {
        $shell.error = Get-CheckError $_
    }
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal -ArgumentList $identity
    $shell.account = [string]$identity.Name
    $shell.admin = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
    return $shell
}

function Get-DotNetSetup {
    # The .NET Framework setup keys (learn.microsoft.com/dotnet/framework/install/
    # how-to-determine-which-versions-are-installed): 2.0-3.5 by Version/SP, 4.x by Release.
    $found = New-Object System.Collections.ArrayList
    foreach ($sub in @('v2.0.50727', 'v3.0', 'v3.5', 'v4\Client', 'v4\Full')) {
        $key = $ndpKey + '\' + $sub
        if (Test-Path -LiteralPath $key) {
            [void]$found.Add(@{
                key = $sub
                install = Get-FleetRegistryValue $key 'Install'
                version = Get-FleetRegistryValue $key 'Version'
                sp = Get-FleetRegistryValue $key 'SP'
                release = Get-FleetRegistryValue $key 'Release'
            })
        }
    }
    return ,($found.ToArray())
}

function Get-BootFacts {
    $os = Get-WmiObject Win32_OperatingSystem
    $boot = [Management.ManagementDateTimeConverter]::ToDateTime([string]$os.LastBootUpTime)
    return @{
        caption = [string]$os.Caption
        version = [string]$os.Version
        last_boot = $boot.ToString($FleetTimeFormat, $FleetInvariant)
        last_boot_utc = $boot.ToUniversalTime().ToString($utcFormat, $FleetInvariant)
    }
}

function Get-TealeafRegistryNames {
    # Names only: which values the vendor key really holds is the evidence (the build's value
    # name is unconfirmed); no value is read here, and the security subkey is never opened.
    $names = @{ key = $tealeafKey; exists = $false; value_names = @(); subkeys = @() }
    if (Test-Path -LiteralPath $tealeafKey) {
        $item = Get-Item -LiteralPath $tealeafKey
        $values = [string[]]$item.GetValueNames()
        $subkeys = [string[]]$item.GetSubKeyNames()
        [Array]::Sort($values, [StringComparer]::OrdinalIgnoreCase)
        [Array]::Sort($subkeys, [StringComparer]::OrdinalIgnoreCase)
        $names.exists = $true
        $names.value_names = $values
        $names.subkeys = $subkeys
    }
    return $names
}

function Get-ToolFacts([string]$Dir) {
    $tools = @{}
    foreach ($exe in @('TLSTool.exe', 'openssl.exe')) {
        $entry = @{ path = $null; exists = $false; size = $null; file_version = $null; product_version = $null }
        if ($Dir) {
            $path = [IO.Path]::Combine($Dir, $exe)
            $entry.path = $path
            if ([IO.File]::Exists($path)) {
                $info = [Diagnostics.FileVersionInfo]::GetVersionInfo($path)
                $entry.exists = $true
                $entry.size = (New-Object System.IO.FileInfo -ArgumentList $path).Length
                $entry.file_version = $info.FileVersion
                $entry.product_version = $info.ProductVersion
            }
        }
        $tools[$exe] = $entry
    }
    return $tools
}

function Get-DataServiceLogs([string]$Dir) {
    # Every TLDataService*.log, newest first by LastWriteTime (names differ between versions:
    # TLDataService_<yyyymmdd>.log, or a live TLDataService.log with dated older files).
    $logs = @{ dir = $Dir; exists = $false; count = 0; newest = @() }
    if ((-not $Dir) -or (-not [IO.Directory]::Exists($Dir))) { return $logs }
    $logs.exists = $true
    $files = New-Object System.Collections.ArrayList
    foreach ($path in [IO.Directory]::GetFiles($Dir, 'TLDataService*.log')) {
        [void]$files.Add((New-Object System.IO.FileInfo -ArgumentList $path))
    }
    $logs.count = $files.Count
    $newest = New-Object System.Collections.ArrayList
    foreach ($file in @($files | Sort-Object LastWriteTimeUtc -Descending | Select-Object -First $newestLogs)) {
        [void]$newest.Add(@{
            name = [string]$file.Name; size = $file.Length
            last_write = $file.LastWriteTime.ToString($FleetTimeFormat, $FleetInvariant)
        })
    }
    $logs.newest = $newest.ToArray()
    return $logs
}

function Test-Writable([string]$Dir, [string]$Text) {
    # Write the text's UTF-8 bytes to a new file, hash it as put_file does, delete it. The
    # controller compares the hash with its own: the bytes and the hash provider both work.
    $probe = @{ dir = $Dir; path = $null; size = $null; written = $false; sha256 = $null
                hash_error = $null; error = $null; left_behind = $false }
    if (-not $Dir) {
        $probe.error = 'no install folder'
        return $probe
    }
    $path = [IO.Path]::Combine($Dir, 'tealeaf-fleet-check-' + [IO.Path]::GetRandomFileName() + '.tmp')
    $bytes = [Text.Encoding]::UTF8.GetBytes($Text)
    $probe.path = $path
    $probe.size = $bytes.Length
    try {
        [IO.File]::WriteAllBytes($path, $bytes)
        $probe.written = $true
    } catch {
        $probe.error = Get-CheckError $_
    }
    if ($probe.written) {
        try {
            $probe.sha256 = Get-FleetSha256 $path
        } catch {
            $probe.hash_error = Get-CheckError $_
        }
    }
    try {
        if ([IO.File]::Exists($path)) { [IO.File]::Delete($path) }
    } catch {
        if (-not $probe.error) { $probe.error = Get-CheckError $_ }
    }
    $probe.left_behind = [IO.File]::Exists($path)
    return $probe
}

function Test-RestartMutex([string]$Name) {
    # Open restart_services' mutex, or create it when it does not exist, without waiting on
    # it, and close it again. created = $false: it exists, so a restart holds it right now.
    # Access denied (another account's restart holds it) is reported as the error.
    $probe = @{ name = $Name; created = $null; error = $null }
    try {
        try {
            $mutex = [System.Threading.Mutex]::OpenExisting($Name)
            $probe.created = $false
        } catch [System.Threading.WaitHandleCannotBeOpenedException] {
            $mutex = New-Object System.Threading.Mutex -ArgumentList $false, $Name
            $probe.created = $true
        }
        $mutex.Close()
    } catch {
        $probe.error = Get-CheckError $_
    }
    return $probe
}

function Get-SystemDisk {
    $drive = [string]$env:SystemDrive
    $disk = @{ drive = $drive; free_bytes = $null; total_bytes = $null; error = $null }
    try {
        $info = New-Object System.IO.DriveInfo -ArgumentList $drive
        $disk.free_bytes = $info.AvailableFreeSpace
        $disk.total_bytes = $info.TotalSize
    } catch {
        $disk.error = Get-CheckError $_
    }
    return $disk
}

$toolsDir = $null
$logDir = $null
$probeDir = $null
if ($InstallDir) {
    $toolsDir = [IO.Path]::Combine($InstallDir, 'Tools')
    $logDir = [IO.Path]::Combine($InstallDir, 'Logs')
    $probeDir = $toolsDir
    if (-not [IO.Directory]::Exists($toolsDir)) { $probeDir = $InstallDir }
}

$result = @{
    sentinel = $Sentinel
    script_chars = $ownText.Length
    shell = Get-ShellFacts
    powershell = @{
        version = $PSVersionTable.PSVersion.ToString()
        clr = [string]$PSVersionTable.CLRVersion
        language_mode = [string]$ExecutionContext.SessionState.LanguageMode
    }
    dotnet = Get-DotNetSetup
    fips_policy = Get-FleetRegistryValue 'HKLM:\SYSTEM\CurrentControlSet\Control\Lsa\FipsAlgorithmPolicy' 'Enabled'
    os = Get-BootFacts
    pending_reboot = Get-FleetPendingReboot
    registry = Get-TealeafRegistryNames
    tools = Get-ToolFacts $toolsDir
    logs = Get-DataServiceLogs $logDir
    write_probe = Test-Writable $probeDir $Sentinel
    mutex = Test-RestartMutex $MutexName
    disk = Get-SystemDisk
}
# Last, just before the answer leaves: the controller compares it with its own clock.
$result.utc_now = [DateTime]::UtcNow.ToString($utcFormat, $FleetInvariant)
Write-FleetResult $result
