# tealeaf-fleet-op: facts
param([string]$InstallDir, [string]$Since)
# Read-only: everything preflight, status and drift need from one host, in one round trip.

$tealeafKey = 'HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology'

function Get-ExecutablePath([string]$CommandLine) {
    # Win32_Service.PathName is a command line: a quoted or unquoted exe path plus arguments.
    if (-not $CommandLine) { return $null }
    $text = $CommandLine.Trim()
    if ($text.StartsWith([string][char]34)) {
        $end = $text.IndexOf([char]34, 1)
        if ($end -lt 0) { return $text.Substring(1) }
        return $text.Substring(1, $end - 1)
    }
    $exe = $text.ToLowerInvariant().IndexOf('.exe')
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

$os = Get-WmiObject Win32_OperatingSystem
$services = New-Object System.Collections.ArrayList
$discovered = $null
$iis = @{ present = $false; state = $null }
# WMI does the filtering (WQL LIKE ignores case, as -like does): it builds objects for the few
# matching services only, not for every service on the host.
$serviceFilter = "Name LIKE 'TeaLeaf%' OR DisplayName LIKE 'TeaLeaf%' OR Name = 'W3SVC'"
foreach ($svc in @(Get-WmiObject Win32_Service -Filter $serviceFilter | Sort-Object Name)) {
    if ($svc.Name -eq 'W3SVC') { $iis = @{ present = $true; state = [string]$svc.State } }
    if (($svc.Name -like 'TeaLeaf*') -or ($svc.DisplayName -like 'TeaLeaf*')) {
        [void]$services.Add(@{
            name = [string]$svc.Name; display_name = [string]$svc.DisplayName
            state = [string]$svc.State; start_mode = [string]$svc.StartMode; path = [string]$svc.PathName
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

$enableTls = Get-FleetRegistryValue $tealeafKey 'EnableTLS'
if ($null -ne $enableTls) { $enableTls = [int]$enableTls }
$build = Get-FleetRegistryValue $tealeafKey 'Version'
if ($null -ne $build) { $build = [string]$build }
$certPassword = Get-FleetRegistryValue ($tealeafKey + '\security') 'TLSCertPassword'

$securityDir = [IO.Path]::Combine([Environment]::GetFolderPath('CommonApplicationData'), 'IBM\Tealeaf\security')
$files = @{}
foreach ($name in @('tealeaf.crt', 'tealeaf.p12', 'server.tls.xml')) {
    $files[$name] = Get-FleetFileSummary ([IO.Path]::Combine($securityDir, $name))
}
$security = @{ dir = $securityDir; files = $files; cert_sha256 = $null; cert_subject = $null; cert_not_after = $null }
$crtPath = [IO.Path]::Combine($securityDir, 'tealeaf.crt')
if ([IO.File]::Exists($crtPath)) {
    $raw = [IO.File]::ReadAllBytes($crtPath)
    $text = [Text.Encoding]::ASCII.GetString($raw)
    $der = $raw
    if ($text -match '-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----') {
        $der = [Convert]::FromBase64String(($matches[1] -replace '\s', ''))
    }
    $sha = [Security.Cryptography.SHA256]::Create()
    $security.cert_sha256 = ConvertTo-FleetHex ($sha.ComputeHash($der))
    $cert = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2
    try {
        $cert.Import([byte[]]$der)
        $security.cert_subject = $cert.Subject
        $security.cert_not_after = $cert.NotAfter.ToString($FleetTimeFormat, $FleetInvariant)
    } catch [System.Security.Cryptography.CryptographicException] {
        $security.cert_subject = $null
    }
}

$schannel = 'HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL'
$tls12 = $schannel + '\Protocols\TLS 1.2'
$dotnet = 'HKLM:\SOFTWARE\Microsoft\.NETFramework'
$winhttp = 'Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp'

Write-FleetResult @{
    hostname = [string]$env:COMPUTERNAME
    now = Get-FleetNow
    os = @{ version = [string]$os.Version; caption = [string]$os.Caption }
    ps_version = $PSVersionTable.PSVersion.ToString(2)
    install_dir = $installDirFound
    install_dir_source = $installSource
    tools = $tools
    tealeaf_build = $build
    enable_tls = $enableTls
    tls_cert_password_present = ($null -ne $certPassword)
    security = $security
    services = $services.ToArray()
    iis = $iis
    data_service = Get-FleetDataServiceMode ([string]$installDirFound) $Since
    schannel = @{
        tls12_server_enabled = Get-FleetRegistryValue ($tls12 + '\Server') 'Enabled'
        tls12_server_disabled_by_default = Get-FleetRegistryValue ($tls12 + '\Server') 'DisabledByDefault'
        tls12_client_enabled = Get-FleetRegistryValue ($tls12 + '\Client') 'Enabled'
        tls12_client_disabled_by_default = Get-FleetRegistryValue ($tls12 + '\Client') 'DisabledByDefault'
        send_trusted_issuer_list = Get-FleetRegistryValue $schannel 'SendTrustedIssuerList'
    }
    dotnet = @{
        v2_strong_crypto = Get-FleetRegistryValue ($dotnet + '\v2.0.50727') 'SchUseStrongCrypto'
        v4_strong_crypto = Get-FleetRegistryValue ($dotnet + '\v4.0.30319') 'SchUseStrongCrypto'
        v2_system_default_tls = Get-FleetRegistryValue ($dotnet + '\v2.0.50727') 'SystemDefaultTlsVersions'
        v4_system_default_tls = Get-FleetRegistryValue ($dotnet + '\v4.0.30319') 'SystemDefaultTlsVersions'
    }
    winhttp = @{
        native = Get-FleetRegistryValue ('HKLM:\SOFTWARE\' + $winhttp) 'DefaultSecureProtocols'
        wow6432 = Get-FleetRegistryValue ('HKLM:\SOFTWARE\Wow6432Node\' + $winhttp) 'DefaultSecureProtocols'
    }
}
