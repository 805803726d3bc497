# tealeaf-fleet-op: facts
param([string]$InstallDir, [string]$Since, [string]$PortSearch)
# Read-only: everything preflight, status and drift need from one host, in one round trip.

$tealeafKey = 'HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology'

$FleetConfigExtensions = @('.config', '.xml', '.ini', '.cfg', '.properties', '.json', '.tlcfg')

function Find-FleetPortMentions([string]$Root, [string]$Port) {
    # Read-only: the small configuration files under the install folder (Logs left out: log
    # lines name ports too) whose text holds the port as a whole number, so the operator knows
    # what to change; nothing is rewritten. Bounded: 4000 files looked at, 1 MiB each, 20 named,
    # 500 folders and 20000 folder entries listed; junctions and symbolic links (reparse points)
    # are not followed, so a link to a big share or a loop cannot stretch the op.
    $found = New-Object System.Collections.ArrayList
    if ((-not $Root) -or (-not [IO.Directory]::Exists($Root))) { return ,($found.ToArray()) }
    $pattern = '(?<![0-9])' + $Port + '(?![0-9])'
    $folders = New-Object System.Collections.Queue
    $folders.Enqueue($Root)
    $looked = 0
    $listed = 0
    $entries = 0
    while (($folders.Count -gt 0) -and ($looked -lt 4000) -and ($found.Count -lt 20) -and ($listed -lt 500) -and ($entries -lt 20000)) {
        $dir = [string]$folders.Dequeue()
        $listed++
        $subs = @()
        $files = @()
        try {
            $subs = [IO.Directory]::GetDirectories($dir)
            $files = [IO.Directory]::GetFiles($dir)
        } catch {
            continue
        }
        $entries += $subs.Length + $files.Length
        foreach ($sub in $subs) {
            if ([IO.Path]::GetFileName($sub) -eq 'Logs') { continue }
            try {
                $attributes = [IO.File]::GetAttributes($sub)
            } catch {
                continue
            }
            if (($attributes -band [IO.FileAttributes]::ReparsePoint) -ne 0) { continue }
            $folders.Enqueue($sub)
        }
        foreach ($file in $files) {
            if ($FleetConfigExtensions -notcontains [IO.Path]::GetExtension($file).ToLowerInvariant()) { continue }
            $looked++
            try {
                if ((New-Object IO.FileInfo $file).Length -gt 1048576) { continue }
                if ([regex]::IsMatch([IO.File]::ReadAllText($file), $pattern)) { [void]$found.Add($file) }
            } catch {
                continue
            }
            if ($found.Count -ge 20) { break }
        }
    }
    return ,($found.ToArray())
}

function Get-ExecutablePath([string]$CommandLine) {
    # Win32_Service.PathName is a command line: a quoted or unquoted exe path plus arguments.
    if (-not $CommandLine) { return $null }
    $text = $CommandLine.Trim()
    if ($text.StartsWith([string][char]34, [StringComparison]::Ordinal)) {
        $end = $text.IndexOf([char]34, 1)
        if ($end -lt 0) { return $text.Substring(1) }
        return $text.Substring(1, $end - 1)
    }
    $exe = $text.ToLowerInvariant().IndexOf('.exe', [StringComparison]::Ordinal)
    if ($exe -ge 0) { return $text.Substring(0, $exe + 4) }
    return $text.Split([char]32)[0]
}

function Find-InstallDir([string]$ExePath) {
    # Walk up from the executable's folder to the first folder holding Tools\TLSTool.exe.
    if (-not $ExePath) { return $null }
    $dir = [IO.Path]::GetDirectoryName($ExePath)
    while ($dir) {
        if ([IO.File]::Exists([IO.Path]::Combine($dir, 'Tools\TLSTool.exe'))) { return $dir }
        $parent = [IO.Path]::GetDirectoryName($dir)
        if ($parent -eq $dir) { break }
        $dir = $parent
    }
    return $null
}

function Get-ServiceState($Service) {
    # Win32_Service.State is spaced ("Start Pending", "Stop Pending", "Continue Pending",
    # "Pause Pending"); ServiceControllerStatus, which restart_services and the engine use, is
    # not ("StartPending"). Report the ServiceController form.
    # https://learn.microsoft.com/windows/win32/cimwin32prov/win32-service
    # https://learn.microsoft.com/dotnet/api/system.serviceprocess.servicecontrollerstatus
    return (([string]$Service.State) -replace ' ', '')
}

function Get-FileBuild($Services) {
    # The file version of the first TeaLeaf service executable that has one: the build when
    # the registry has no Version value. Old resource scripts write "9, 0, 2, 1351".
    # https://learn.microsoft.com/dotnet/api/system.diagnostics.fileversioninfo.fileversion
    foreach ($service in $Services) {
        $exe = Get-ExecutablePath $service.path
        if ((-not $exe) -or (-not [IO.File]::Exists($exe))) { continue }
        $version = [Diagnostics.FileVersionInfo]::GetVersionInfo($exe).FileVersion
        if ($version) { return (($version -replace '\s*,\s*', '.').Trim()) }
    }
    return $null
}

$os = Get-WmiObject Win32_OperatingSystem
$services = New-Object System.Collections.ArrayList
$discovered = $null
$iis = @{ present = $false; state = $null }
# WMI does the filtering (WQL LIKE ignores case, as -like does): it builds objects for the few
# matching services only, not for every service on the host.
$serviceFilter = "Name LIKE 'TeaLeaf%' OR DisplayName LIKE 'TeaLeaf%' OR Name = 'W3SVC'"
foreach ($svc in @(Get-WmiObject Win32_Service -Filter $serviceFilter | Sort-Object Name)) {
    if ($svc.Name -eq 'W3SVC') { $iis = @{ present = $true; state = (Get-ServiceState $svc) } }
    if (($svc.Name -like 'TeaLeaf*') -or ($svc.DisplayName -like 'TeaLeaf*')) {
        [void]$services.Add(@{
            name = [string]$svc.Name; display_name = [string]$svc.DisplayName
            state = (Get-ServiceState $svc); start_mode = [string]$svc.StartMode; path = [string]$svc.PathName
        })
        if ($null -eq $discovered) { $discovered = Find-InstallDir (Get-ExecutablePath ([string]$svc.PathName)) }
    }
}

# $InstallDir is [string]-typed (it can never hold $null), so the result lives in $installDirFound.
$installSource = $null
$installDirFound = $null
if ($InstallDir) {
    $installDirFound = $InstallDir
    $installSource = 'inventory'
} elseif ($discovered) {
    $installDirFound = $discovered
    $installSource = 'service'
} else {
    $fromRegistry = Get-FleetRegistryValue $tealeafKey 'InstallDir'
    if ($fromRegistry) {
        $installDirFound = [string]$fromRegistry
        $installSource = 'registry'
    }
}

$tools = @{ tlstool = $false; openssl = $false }
if ($installDirFound) {
    $tools.tlstool = [IO.File]::Exists([IO.Path]::Combine($installDirFound, 'Tools\TLSTool.exe'))
    $tools.openssl = [IO.File]::Exists([IO.Path]::Combine($installDirFound, 'Tools\openssl.exe'))
}

$enableTls = Get-FleetRegistryNumber $tealeafKey 'EnableTLS'
$build = [string](Get-FleetRegistryValue $tealeafKey 'Version')
$buildSource = 'registry'
if (-not $build) {
    $build = Get-FileBuild $services
    $buildSource = 'file_version'
    if (-not $build) { $buildSource = $null }
}
# Presence only: the value under `security` is never read (see Test-FleetRegistryValueName).
$certPasswordPresent = Test-FleetRegistryValueName ($tealeafKey + '\security') 'TLSCertPassword'

$securityDir = [IO.Path]::Combine([Environment]::GetFolderPath('CommonApplicationData'), 'IBM\Tealeaf\security')
$files = @{}
foreach ($name in @('tealeaf.crt', 'tealeaf.p12', 'server.tls.xml')) {
    # One locked or unreadable file is reported for that file; the facts still answer.
    try {
        $files[$name] = Get-FleetFileSummary ([IO.Path]::Combine($securityDir, $name))
    } catch {
        $files[$name] = @{ error = (Get-FleetErrorText $_) }
    }
}
$security = @{ dir = $securityDir; files = $files; cert_sha256 = $null; cert_subject = $null; cert_not_after = $null; cert_not_after_utc = $null }
$crtPath = [IO.Path]::Combine($securityDir, 'tealeaf.crt')
$crtReadable = $false
if ([IO.File]::Exists($crtPath)) {
    # files['tealeaf.crt'] already carries the error of a file that cannot be read.
    try {
        $raw = Read-FleetSmallFile $crtPath 1048576  # a certificate is a few KB
        $crtReadable = $true
    } catch {
        $crtReadable = $false
    }
}
if ($crtReadable) {
    $text = [Text.Encoding]::ASCII.GetString($raw)
    $der = $raw
    if ($text -match '-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----') {
        $der = [Convert]::FromBase64String(($matches[1] -replace '\s', ''))
    }
    try {
        $security.cert_sha256 = Get-FleetHash $der
    } catch {
        $security.cert_sha256 = $null
    }
    $cert = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2
    try {
        $cert.Import([byte[]]$der)
        $security.cert_subject = $cert.Subject
        $security.cert_not_after = $cert.NotAfter.ToString($FleetTimeFormat, $FleetInvariant)
        # NotAfter is local time; UTC too, so days left do not move with a zone or DST change
        $security.cert_not_after_utc = $cert.NotAfter.ToUniversalTime().ToString($FleetTimeFormat, $FleetInvariant)
    } catch [System.Security.Cryptography.CryptographicException] {
        $security.cert_subject = $null
    }
}

$schannel = 'HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL'
$tls12 = $schannel + '\Protocols\TLS 1.2'
$dotnet = 'HKLM:\SOFTWARE\Microsoft\.NETFramework'
$dotnetWow = 'HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework'
$winhttp = 'Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp'

# A 32-bit PowerShell on 64-bit Windows (a WinRM endpoint such as Microsoft.PowerShell32) sees
# HKLM:\SOFTWARE through WOW64 redirection: a 64-bit value read there would be the Wow6432Node
# one. Those values are reported unreadable ($null) and the flag says why.
# https://learn.microsoft.com/windows/win32/winprog64/registry-redirector
$wow64Process = ([IntPtr]::Size -eq 4) -and ($null -ne $env:PROCESSOR_ARCHITEW6432)
function Get-FleetNativeNumber([string]$Key, [string]$Name) {
    if ($wow64Process) { return $null }
    return Get-FleetRegistryNumber $Key $Name
}

# The FIPS policy (Vista / 2008 and later) and the SHA-256 class this host hashes with.
# https://learn.microsoft.com/windows/security/threat-protection/security-policy-settings/system-cryptography-use-fips-compliant-algorithms-for-encryption-hashing-and-signing
$fipsValue = Get-FleetRegistryNumber 'HKLM:\SYSTEM\CurrentControlSet\Control\Lsa\FipsAlgorithmPolicy' 'Enabled'
$fips = @{ policy_enabled = $null; hash_provider = $null; hash_error = $null }
if (($fipsValue -is [int]) -or ($fipsValue -is [long])) { $fips.policy_enabled = ($fipsValue -ne 0) }
try {
    $fips.hash_provider = (New-FleetSha256).GetType().Name
} catch {
    $fips.hash_error = Get-FleetErrorText $_
}

# LastBootUpTime, host-local (the format of `now`, for people) and UTC (what the journal
# compares: a change that needs a reboot is pending while the host still runs the boot it was
# made in; UTC does not move with a DST change). Plus the markers Windows itself leaves for a
# reboot it owes.
$lastBoot = $null
$lastBootUtc = $null
try {
    $bootTime = [Management.ManagementDateTimeConverter]::ToDateTime([string]$os.LastBootUpTime)
    $lastBoot = $bootTime.ToString($FleetTimeFormat, $FleetInvariant)
    $lastBootUtc = $bootTime.ToUniversalTime().ToString($FleetTimeFormat, $FleetInvariant)
} catch {
    $lastBoot = $null
}

# The configuration-file search is for people (preflight, status); gate polls skip it ('0').
$portFiles = $null
if ($PortSearch -ne '0') { $portFiles = Find-FleetPortMentions ([string]$installDirFound) '23443' }

Write-FleetResult @{
    hostname = [string]$env:COMPUTERNAME
    now = Get-FleetNow
    utc_now = [DateTime]::UtcNow.ToString($FleetTimeFormat, $FleetInvariant)
    os = @{ version = [string]$os.Version; caption = [string]$os.Caption }
    ps_version = $PSVersionTable.PSVersion.ToString(2)
    install_dir = $installDirFound
    install_dir_source = $installSource
    tools = $tools
    tealeaf_build = $build
    tealeaf_build_source = $buildSource
    enable_tls = $enableTls
    tls_cert_password_present = $certPasswordPresent
    security = $security
    services = $services.ToArray()
    iis = $iis
    data_service = Get-FleetDataServiceMode ([string]$installDirFound) $Since
    schannel = @{
        tls12_server_enabled = Get-FleetRegistryNumber ($tls12 + '\Server') 'Enabled'
        tls12_server_disabled_by_default = Get-FleetRegistryNumber ($tls12 + '\Server') 'DisabledByDefault'
        tls12_client_enabled = Get-FleetRegistryNumber ($tls12 + '\Client') 'Enabled'
        tls12_client_disabled_by_default = Get-FleetRegistryNumber ($tls12 + '\Client') 'DisabledByDefault'
        send_trusted_issuer_list = Get-FleetRegistryNumber $schannel 'SendTrustedIssuerList'
    }
    dotnet = @{
        v2_strong_crypto = Get-FleetNativeNumber ($dotnet + '\v2.0.50727') 'SchUseStrongCrypto'
        v4_strong_crypto = Get-FleetNativeNumber ($dotnet + '\v4.0.30319') 'SchUseStrongCrypto'
        v2_system_default_tls = Get-FleetNativeNumber ($dotnet + '\v2.0.50727') 'SystemDefaultTlsVersions'
        v4_system_default_tls = Get-FleetNativeNumber ($dotnet + '\v4.0.30319') 'SystemDefaultTlsVersions'
        wow6432_v2_strong_crypto = Get-FleetRegistryNumber ($dotnetWow + '\v2.0.50727') 'SchUseStrongCrypto'
        wow6432_v4_strong_crypto = Get-FleetRegistryNumber ($dotnetWow + '\v4.0.30319') 'SchUseStrongCrypto'
        wow6432_v2_system_default_tls = Get-FleetRegistryNumber ($dotnetWow + '\v2.0.50727') 'SystemDefaultTlsVersions'
        wow6432_v4_system_default_tls = Get-FleetRegistryNumber ($dotnetWow + '\v4.0.30319') 'SystemDefaultTlsVersions'
    }
    winhttp = @{
        native = Get-FleetNativeNumber ('HKLM:\SOFTWARE\' + $winhttp) 'DefaultSecureProtocols'
        wow6432 = Get-FleetRegistryNumber ('HKLM:\SOFTWARE\Wow6432Node\' + $winhttp) 'DefaultSecureProtocols'
    }
    fips = $fips
    wow64_process = $wow64Process
    boot = @{ last_boot = $lastBoot; last_boot_utc = $lastBootUtc }
    pending_reboot = Get-FleetPendingReboot
    port_23443_files = $portFiles
}
