# tealeaf-fleet-op: status_tool
param([string]$InstallDir, [string]$TimeoutS, [string]$OutputLimit)
# Runs the vendor's status tool the way its TLS procedure says to test it, `TealeafStatus
# -verbose`, in its own folder, with a deadline (past it, the tool is killed with the processes
# it started and the op stops naming it). Read-only: the tool reports, it changes nothing. The
# tool is looked for in InstallDir\bin, InstallDir and InstallDir\Tools; absent is an answer
# (present = false), not a failure. Only the last OutputLimit characters of its output return.

$timeout = 120
if ($TimeoutS) { $timeout = [int]$TimeoutS }
$limit = 16000
if ($OutputLimit) { $limit = [int]$OutputLimit }
$found = $null
if ($InstallDir) {
    foreach ($sub in @('bin', '', 'Tools')) {
        $candidate = [IO.Path]::Combine([IO.Path]::Combine($InstallDir, $sub), 'TealeafStatus.exe')
        if ([IO.File]::Exists($candidate)) { $found = $candidate; break }
    }
}
if ($null -eq $found) {
    Write-FleetResult @{ present = $false; path = $null; exit_code = $null; output = ''; cut = $false }
} else {
    $run = Invoke-FleetNative $found @('-verbose') ([IO.Path]::GetDirectoryName($found)) $timeout
    if ($null -eq $run.exit_code) { Stop-FleetOp ("TealeafStatus.exe did not run: " + $run.output) }
    $text = [string]$run.output
    $cut = $false
    if ($text.Length -gt $limit) { $text = $text.Substring($text.Length - $limit); $cut = $true }
    Write-FleetResult @{ present = $true; path = $found; exit_code = [int]$run.exit_code; output = $text; cut = $cut }
}
