"""`set_registry`: one HKLM value (DWord or String), returning what it was before."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import InputError

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RegistryResult:
    key: str
    name: str
    previous: Any  # None when the value did not exist
    value: Any  # read back after writing
    kind: str | None = None  # RegistryValueKind read back ("DWord", "String")


def set_value(
    conn: Connection,
    key: str,
    name: str,
    value: int | str,
    *,
    kind: str | None = None,
    create_only: bool = False,
    timeout_s: float = TIMEOUT_S,
) -> RegistryResult:
    """Set `key`\\`name` (key as `HKLM:\\...`); `kind` DWord for ints, String for text.
    `create_only`: only where the value is absent, and the existing value is never read (the
    op fails instead): for a value that may be a secret (TLSCertPassword)."""
    if not key.startswith("HKLM:\\"):
        raise InputError(f"registry key must start with HKLM:\\, not {key!r}")
    kind = kind or ("DWord" if isinstance(value, int) else "String")
    if kind not in ("DWord", "String"):
        raise InputError(f"registry kind must be DWord or String, not {kind!r}")
    if kind == "DWord" and not (isinstance(value, int) and 0 <= value <= 0xFFFFFFFF):
        raise InputError(f"{value!r} is not a DWORD")
    raw = conn.run_op(
        "set_registry",
        {
            "Key": key,
            "Name": name,
            "Type": kind,
            "Value": str(value),
            "CreateOnly": "1" if create_only else "",
        },
        timeout_s=timeout_s,
        read_only=False,
    )
    return RegistryResult(
        key=raw.get("key", key),
        name=raw.get("name", name),
        previous=raw.get("previous"),
        value=raw.get("value"),
        kind=raw.get("kind"),
    )
