# tealeaf-fleet-op: get_file
param([string]$Path, [string]$Offset, [string]$Length)
# One slice of a file, base64, with the whole file's SHA-256 so the caller can verify the sum.

if (-not [IO.File]::Exists($Path)) { Stop-FleetOp "file not found: $Path" }
$start = [long]$Offset
$want = [int]$Length
$stream = Open-FleetRead $Path
try {
    $size = $stream.Length
    if ($start -gt $size) { $start = $size }
    [void]$stream.Seek($start, [IO.SeekOrigin]::Begin)
    $remaining = [Math]::Min([long]$want, $size - $start)
    $buffer = New-Object byte[] ([int]$remaining)
    $read = 0
    while ($read -lt $remaining) {
        $n = $stream.Read($buffer, $read, [int]$remaining - $read)
        if ($n -le 0) { break }
        $read += $n
    }
} finally {
    $stream.Close()
}
if ($read -lt $buffer.Length) {
    $trimmed = New-Object byte[] $read
    [Array]::Copy($buffer, $trimmed, $read)
    $buffer = $trimmed
}
Write-FleetResult @{
    path = $Path; size = $size; offset = $start
    data = [Convert]::ToBase64String($buffer); sha256 = (Get-FleetSha256 $Path)
}
