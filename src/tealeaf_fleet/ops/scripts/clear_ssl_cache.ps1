# tealeaf-fleet-op: clear_ssl_cache
param([string]$Target)
# Empties the SChannel session cache, which is what the Internet Options "Clear SSL State"
# button does, without a desktop session: SslEmptyCacheW (schannel.dll) with a null target
# removes every entry. Target is unused and must be empty: a null pointer goes as IntPtr.Zero,
# since PowerShell hands an empty string, never $null, to a string parameter of a .NET method.
# https://learn.microsoft.com/windows/win32/api/schannel/nf-schannel-sslemptycachew

if ($Target) { Stop-FleetOp 'only the whole cache can be emptied (Target must be empty)' 2 }
$signature = '[DllImport("schannel.dll", SetLastError = true)] ' +
    'public static extern bool SslEmptyCacheW(IntPtr pszTargetName, uint dwFlags);'
try {
    $schannel = Add-Type -MemberDefinition $signature -Name 'FleetSchannel' -Namespace 'TealeafFleet' -PassThru
} catch {
    Stop-FleetOp ('cannot load SslEmptyCacheW from schannel.dll: ' + (Get-FleetErrorText $_))
}
$cleared = $schannel::SslEmptyCacheW([IntPtr]::Zero, 0)
if (-not $cleared) {
    $code = [Runtime.InteropServices.Marshal]::GetLastWin32Error()
    Stop-FleetOp "SslEmptyCacheW failed (Win32 error $code)"
}
Write-FleetResult @{ cleared = $true; at = (Get-FleetNow) }
