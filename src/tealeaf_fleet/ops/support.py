"""A host's part of a support bundle (`fleet logs`): the Data Service log lines since a time
(every startup block whatever its time) and the Application event log entries that name
TeaLeaf, both bounded on the host (`support_logs.ps1`), so a huge log never crosses the wire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

TIMEOUT_S = 180.0
MAX_EVENTS = 200


def collect(
    conn: Connection,
    install_dir: str | None,
    *,
    since: str | None = None,
    since_minutes: int | None = None,
    max_bytes: int,
    max_events: int = MAX_EVENTS,
    timeout_s: float = TIMEOUT_S,
) -> dict[str, Any]:
    """The op's result: `{since, now, data_service {files [{path, lines}], cut, bytes},
    events {entries [{time, source, entry_type, event_id, message}], cut, error}}`. `since` is
    host-local `yyyy-MM-ddTHH:mm:ss`; else `since_minutes` back from the host's clock."""
    return conn.run_op(
        "support_logs",
        {
            "InstallDir": install_dir or "",
            "Since": since or "",
            "SinceMinutes": "" if since_minutes is None else int(since_minutes),
            "MaxBytes": int(max_bytes),
            "MaxEvents": int(max_events),
        },
        timeout_s=timeout_s,
        read_only=True,
    )
