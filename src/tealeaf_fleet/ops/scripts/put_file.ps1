# tealeaf-fleet-op: put_file
param([string]$Path, [string]$Data, [string]$Part, [string]$Parts, [string]$Sha256)
# One part of a chunked upload. Parts go to PATH.fleet-part; the last part checks the whole
# file's SHA-256 and only then moves it over PATH, so PATH never holds a half-written file.

$index = [int]$Part
$count = [int]$Parts
$partPath = $Path + '.fleet-part'
$bytes = [Convert]::FromBase64String($Data)

if ($index -eq 0) {
    $dir = [IO.Path]::GetDirectoryName($Path)
    if ($dir -and (-not [IO.Directory]::Exists($dir))) { [void][IO.Directory]::CreateDirectory($dir) }
    $mode = [IO.FileMode]::Create
} else {
    if (-not [IO.File]::Exists($partPath)) { Stop-FleetOp "part file $partPath is missing: upload part 0 first" }
    $mode = [IO.FileMode]::Append
}

$failure = $null
$stream = [IO.File]::Open($partPath, $mode, [IO.FileAccess]::Write, [IO.FileShare]::None)
try {
    $stream.Write($bytes, 0, $bytes.Length)
    $stream.Flush()
} catch [System.IO.IOException] {
    $failure = $_.Exception.Message
} finally {
    $stream.Close()
}
if ($null -ne $failure) {
    [IO.File]::Delete($partPath)
    Stop-FleetOp "cannot write $partPath (disk full?): $failure"
}

if ($index -lt ($count - 1)) {
    Write-FleetResult @{ path = $Path; part = $index; complete = $false }
    return
}

$actual = Get-FleetSha256 $partPath
if ($actual -ne $Sha256.ToLowerInvariant()) {
    [IO.File]::Delete($partPath)
    Stop-FleetOp "SHA-256 mismatch for $Path after upload: expected $Sha256, got $actual"
}
if ([IO.File]::Exists($Path)) { [IO.File]::Delete($Path) }
[IO.File]::Move($partPath, $Path)
$info = New-Object System.IO.FileInfo -ArgumentList $Path
Write-FleetResult @{ path = $Path; part = $index; complete = $true; size = $info.Length; sha256 = $actual }
