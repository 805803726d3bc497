# tealeaf-fleet-op: file_info
param([string]$Paths)
# Size and SHA-256 of each file, so a push can be skipped when the host already has the bytes.

$files = @{}
foreach ($path in (Split-FleetList $Paths)) {
    $summary = Get-FleetFileSummary $path
    if ($null -eq $summary) {
        $files[$path] = @{ exists = $false; size = $null; sha256 = $null }
    } else {
        $files[$path] = @{ exists = $true; size = $summary.size; sha256 = $summary.sha256 }
    }
}
Write-FleetResult @{ files = $files }
