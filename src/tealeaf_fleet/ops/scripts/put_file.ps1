# tealeaf-fleet-op: put_file
param([string]$Path, [string]$Data, [string]$Part, [string]$Parts, [string]$Sha256)
# One part of a chunked upload. Parts go to PATH.fleet-part; the last part checks the whole
# file's SHA-256 and only then swaps it in for PATH, so PATH never holds a half-written file
# and an existing PATH is never missing.

$index = [int]$Part
$count = [int]$Parts
$partPath = $Path + '.fleet-part'
$bytes = [Convert]::FromBase64String($Data)

if ($index -eq 0) {
    if ([IO.Directory]::Exists($Path)) { Stop-FleetOp "cannot upload to $Path because it is a folder" }
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
if ([IO.File]::Exists($Path)) {
    # Swap, never delete then move: a failure or a killed op between the two would leave no
    # PFX or TLSTool.exe at all. File.Replace (Win32 ReplaceFile) renames in one step on one
    # volume (the part file sits beside PATH) and keeps PATH's ACL and attributes, but refuses
    # a read-only PATH (UnauthorizedAccessException), e.g. a PFX copied from a CD: clear that
    # attribute first. learn.microsoft.com/dotnet/api/system.io.file.replace
    # No backup, yet not [IO.File]::Replace($partPath, $Path, $null): PowerShell passes '' for
    # $null to a .NET string parameter ([NullString] needs 3.0;
    # github.com/PowerShell/PowerShell/issues/4616) and File.Replace rejects '' as a path.
    # MethodInfo.Invoke takes the arguments as an object array, passed as it is: null stays
    # null (and the paths must be plain strings).
    $replace = [IO.File].GetMethod('Replace', [Type[]]@([string], [string], [string]))
    $cause = $null
    try {
        $attributes = [int][IO.File]::GetAttributes($Path)
        $readOnly = [int][IO.FileAttributes]::ReadOnly
        if (($attributes -band $readOnly) -ne 0) {
            $attributes = $attributes -bxor $readOnly
            if ($attributes -eq 0) { $attributes = [int][IO.FileAttributes]::Normal }
            [IO.File]::SetAttributes($Path, [IO.FileAttributes]$attributes)
        }
        [void]$replace.Invoke($null, [object[]]@([string]$partPath, [string]$Path, $null))
    } catch {
        $cause = Get-FleetCause $_
    }
    if ($null -ne $cause) {
        if ([IO.File]::Exists($Path)) {
            [IO.File]::Delete($partPath)
            Stop-FleetOp "cannot replace $Path with the uploaded file: $($cause.Message)"
        }
        # ReplaceFile's ERROR_UNABLE_TO_MOVE_REPLACEMENT without a backup: PATH is gone and the
        # checked file kept its name; finish the move.
        # learn.microsoft.com/windows/win32/api/winbase/nf-winbase-replacefilew
        [IO.File]::Move($partPath, $Path)
    }
} else {
    [IO.File]::Move($partPath, $Path)
}
$info = New-Object System.IO.FileInfo -ArgumentList $Path
Write-FleetResult @{ path = $Path; part = $index; complete = $true; size = $info.Length; sha256 = $actual }
