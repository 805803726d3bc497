"""The SChannel session cache of a host: emptied as the vendor's troubleshooting list asks
("Clear SSL State" in Internet Options), without a desktop session (`clear_ssl_cache.ps1`
calls SslEmptyCacheW with a null target, which removes every entry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

TIMEOUT_S = 90.0  # Add-Type compiles a small class first (csc.exe): seconds on a slow host
CRYPTO_SERVICE = "CryptSvc"  # Cryptographic Services, the vendor's other remedy


def clear_ssl_cache(conn: Connection, *, timeout_s: float = TIMEOUT_S) -> str:
    """Empty the cache; returns the host time it was done (RemoteScriptError when not)."""
    raw = conn.run_op("clear_ssl_cache", {"Target": ""}, timeout_s=timeout_s, read_only=False)
    return str(raw.get("at") or "")
