"""The lab's one event stream, `DIR/events.jsonl`, and atomic JSON state files.

Every simulated host appends here, so a test (or an operator rehearsing a change) can prove
ordering across hosts, e.g. that no two HBR restarts overlapped. Appends are serialised by one
lock and flushed at once, so a reader never sees half a line; values are plain JSON and never
carry a password (callers pass only the fields docs/architecture.md "Lab files (fixed shapes)"
lists for each kind).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Thread-safe appender for `events.jsonl`: `{"ts", "host", "kind", ...}` per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the lab's life

    def record(self, host: str, kind: str, **fields: Any) -> None:
        """Append one event; `ts` is epoch seconds with sub-second precision."""
        event = {"ts": round(time.time(), 6), "host": host, "kind": kind, **fields}
        line = json.dumps(event, ensure_ascii=True, default=str) + "\n"
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and rename, so readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events of a lab (for tests and `fleet lab state`)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
