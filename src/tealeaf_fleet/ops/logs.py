"""`data_service_log`: did the Data Service come up with `TLS Port:` or `Port:`?

The vendor's own verification of an enable (or a rollback): the first startup block at or
after `since` (host-local time) in the `InstallDir\\Logs\\TLDataService*.log` files written at
or after it (and in the newest file, which the service holds open), else the newest block,
walking the files newest first by their time (the log rolls daily and the newest file often
holds no block). Both the dated and the live file name count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tealeaf_fleet.ops.facts import DataServiceMode

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

TIMEOUT_S = 60.0


def data_service_mode(
    conn: Connection, install_dir: str, since: str | None = None, *, timeout_s: float = TIMEOUT_S
) -> DataServiceMode:
    """mode "tls" / "plain", or None when no startup block (at/after `since`) exists yet."""
    raw = conn.run_op(
        "data_service_log",
        {"InstallDir": install_dir or "", "Since": since or ""},
        timeout_s=timeout_s,
        read_only=True,
    )
    return DataServiceMode.from_dict(raw)


__all__ = ["DataServiceMode", "data_service_mode"]
