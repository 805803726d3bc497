"""Files on a host: inspect (`file_info`), upload in parts (`put_file`), download (`get_file`).

Uploads are chunked (each part is one op, its stdin well under WinRM's envelope limits),
written to `PATH.fleet-part` and swapped in for PATH only after the host checked the whole file's
SHA-256 (an existing PATH is replaced in one step, never deleted first), so PATH is never
half-written nor missing. An upload whose bytes are already there is skipped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tealeaf_fleet.errors import InputError, ProtocolFault

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

CHUNK = 256 * 1024
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FileInfo:
    path: str
    exists: bool
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class PutResult:
    skipped: bool  # the host already had these exact bytes
    sha256: str  # of the file now on the host (lowercase hex)
    size: int
    parts: int  # parts sent (0 when skipped)


def _check_path(path: str) -> None:
    if not path or "\n" in path or "\r" in path:
        raise InputError(f"not a usable Windows file path: {path!r}")


def file_info(
    conn: Connection, paths: Sequence[str] | str, *, timeout_s: float = TIMEOUT_S
) -> dict[str, FileInfo]:
    """Existence, size and SHA-256 of each path (read-only)."""
    items = [paths] if isinstance(paths, str) else list(paths)
    for path in items:
        _check_path(path)
    raw = conn.run_op("file_info", {"Paths": items}, timeout_s=timeout_s, read_only=True)
    files = raw.get("files") or {}
    out: dict[str, FileInfo] = {}
    for path in items:
        entry = files.get(path) or {}
        out[path] = FileInfo(
            path=path,
            exists=bool(entry.get("exists")),
            size=entry.get("size"),
            sha256=entry.get("sha256"),
        )
    return out


def put_file(
    conn: Connection,
    data: bytes,
    path: str,
    *,
    chunk_size: int = CHUNK,
    timeout_s: float = TIMEOUT_S,
) -> PutResult:
    """Make `path` on the host hold exactly `data`; skip when it already does."""
    _check_path(path)
    want = hashlib.sha256(data).hexdigest()
    current = file_info(conn, [path], timeout_s=timeout_s)[path]
    if current.exists and (current.sha256 or "").lower() == want:
        return PutResult(skipped=True, sha256=want, size=len(data), parts=0)
    parts = max(1, -(-len(data) // chunk_size))
    result: dict = {}
    for index in range(parts):
        piece = data[index * chunk_size : (index + 1) * chunk_size]
        result = conn.run_op(
            "put_file",
            {
                "Path": path,
                "Data": base64.b64encode(piece).decode("ascii"),
                "Part": index,
                "Parts": parts,
                "Sha256": want,
            },
            timeout_s=timeout_s,
            read_only=False,
        )
    if not result.get("complete") or str(result.get("sha256", "")).lower() != want:
        raise ProtocolFault(
            f"upload of {path} did not complete with SHA-256 {want[:12]}...",
            code="put-file",
            host=conn.name,
        )
    return PutResult(
        skipped=False, sha256=want, size=int(result.get("size") or len(data)), parts=parts
    )


def get_file(
    conn: Connection, path: str, *, chunk_size: int = CHUNK, timeout_s: float = TIMEOUT_S
) -> bytes:
    """The whole file, fetched in slices and checked against the host's SHA-256."""
    _check_path(path)
    data = bytearray()
    expected = None
    while True:
        raw = conn.run_op(
            "get_file",
            {"Path": path, "Offset": len(data), "Length": chunk_size},
            timeout_s=timeout_s,
            read_only=True,
        )
        piece = base64.b64decode(raw.get("data") or "")
        data += piece
        expected = str(raw.get("sha256") or "").lower()
        if not piece or len(data) >= int(raw.get("size") or 0):
            break
    if hashlib.sha256(data).hexdigest() != expected:
        raise ProtocolFault(
            f"{path} changed while it was being read (SHA-256 mismatch)",
            code="get-file",
            host=conn.name,
            hint="read it again",
        )
    return bytes(data)
