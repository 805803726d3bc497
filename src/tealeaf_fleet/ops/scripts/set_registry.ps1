# tealeaf-fleet-op: set_registry
param([string]$Key, [string]$Name, [string]$Type, [string]$Value)
# Sets one HKLM value (DWord or String) and reads it back, returning what it was before.

if (-not $Key.StartsWith('HKLM:\', [StringComparison]::Ordinal)) { Stop-FleetOp "only HKLM:\ keys are supported, not '$Key'" 2 }
$subKey = $Key.Substring(6)
$previous = Get-FleetRegistryValue $Key $Name

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
Write-FleetResult @{ key = $Key; name = $Name; previous = $previous; value = (Get-FleetRegistryValue $Key $Name) }
