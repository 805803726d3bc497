# tealeaf-fleet-op: set_registry
param([string]$Key, [string]$Name, [string]$Type, [string]$Value, [string]$CreateOnly)
# Sets one HKLM value (DWord or String) and reads it back (value and RegistryValueKind),
# returning what it was before. Key paths name the view explicitly (Wow6432Node for WOW64).
# CreateOnly '1': only where the value is absent (by name, GetValueNames), and what is there
# is never read: a value such as TLSCertPassword, TLSTool's key to tealeaf.p12, is a secret.

if (-not $Key.StartsWith('HKLM:\', [StringComparison]::Ordinal)) { Stop-FleetOp "only HKLM:\ keys are supported, not '$Key'" 2 }
$subKey = $Key.Substring(6)
# A 32-bit PowerShell on 64-bit Windows sees HKLM\SOFTWARE through WOW64 redirection: a write
# meant for the 64-bit view would land in Wow6432Node and read back as if it had worked.
$wow64Process = ([IntPtr]::Size -eq 4) -and ($null -ne $env:PROCESSOR_ARCHITEW6432)
if ($wow64Process -and ($subKey -match '^SOFTWARE\\') -and ($subKey -notmatch '^SOFTWARE\\Wow6432Node(\\|$)')) {
    Stop-FleetOp "32-bit PowerShell on 64-bit Windows: '$Key' would be redirected to the WOW64 view; run the op from the 64-bit powershell.exe" 1
}
$previous = $null
if ($CreateOnly -eq '1') {
    $existing = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($subKey)
    if ($null -ne $existing) {
        try {
            foreach ($valueName in $existing.GetValueNames()) {
                if ($valueName -eq $Name) { Stop-FleetOp "'$Key\$Name' exists already: left as it is (create only)" 1 }
            }
        } finally {
            $existing.Close()
        }
    }
} else {
    $previous = Get-FleetRegistryValue $Key $Name
}

if ($Type -eq 'DWord') {
    if ($Value -match '^0[xX]([0-9A-Fa-f]{1,8})$') { $number = [Convert]::ToInt64($matches[1], 16) }
    elseif ($Value -match '^\d{1,10}$') { $number = [long]$Value }
    else { Stop-FleetOp "'$Value' is not a DWORD (decimal or 0x hex)" 2 }
    if ($number -gt 4294967295) { Stop-FleetOp "'$Value' does not fit in a DWORD" 2 }
    if ($number -gt 2147483647) { $number = $number - 4294967296 }
    $data = [int]$number
    $kind = [Microsoft.Win32.RegistryValueKind]::DWord
} elseif ($Type -eq 'String') {
    $data = $Value
    $kind = [Microsoft.Win32.RegistryValueKind]::String
} else {
    Stop-FleetOp "unsupported registry type '$Type' (DWord or String)" 2
}

$handle = [Microsoft.Win32.Registry]::LocalMachine.CreateSubKey($subKey)
try {
    $handle.SetValue($Name, $data, $kind)
} finally {
    $handle.Close()
}
$readKind = $null
try { $readKind = [string]((Get-Item -LiteralPath $Key).GetValueKind($Name)) } catch { $readKind = $null }
Write-FleetResult @{ key = $Key; name = $Name; previous = $previous; value = (Get-FleetRegistryValue $Key $Name); kind = $readKind }
