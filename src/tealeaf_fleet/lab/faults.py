"""Per-host fault switches, `hosts/NAME/faults.json`, re-read whenever asked (cached by mtime).

A test or an operator edits the file while the lab runs; the next request sees the change.
`{}` means healthy. Keys (DESIGN.md): unreachable, auth_fails, flaky {"count": N}, slow
{"ms": N}, service_start_fails (true or {"services": [...]}), import_fails, enable_fails,
disk_full, enable_tls_preset, data_service_23443, schannel_tls12_missing, log_rolled (the Data
Service has run for days: its newest log holds only request lines, the startup block sits in
an older file by name and by LastWriteTime; applied once, by the host).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tealeaf_fleet.lab.events import write_json_atomic


class FaultFile:
    """Reads faults.json on demand; a value that is false/null/absent means the fault is off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        """The active faults. A file that is missing or not a JSON object counts as healthy,
        since a half-edited file must not crash the simulated host."""
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._data = None, {}
                return {}
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
                except (OSError, ValueError):
                    data = {}
                if not isinstance(data, dict):
                    data = {}
                self._data = {k: v for k, v in data.items() if v not in (None, False)}
                self._stamp = stamp
            return dict(self._data)

    def consume_flaky(self) -> bool:
        """True when this request must fail because of `flaky`; decrements and writes back
        the count, so `{"count": 2}` fails exactly the next two requests."""
        with self._lock:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                return False
            if not isinstance(data, dict):
                return False
            flaky = data.get("flaky")
            if not flaky:
                return False
            count = flaky.get("count", 1) if isinstance(flaky, dict) else 1
            if not isinstance(count, int) or count <= 0:
                return False
            count -= 1
            if count:
                data["flaky"] = {**(flaky if isinstance(flaky, dict) else {}), "count": count}
            else:
                data.pop("flaky")
            write_json_atomic(self.path, data)
            self._stamp = None
            return True

    def write(self, data: dict[str, Any]) -> None:
        """Replace the faults (used by the lab at creation and by tests)."""
        with self._lock:
            write_json_atomic(self.path, data)
            self._stamp = None


def service_start_fails(faults: dict[str, Any], service: str) -> bool:
    """Whether the fault `service_start_fails` applies to `service` (case-insensitive)."""
    value = faults.get("service_start_fails")
    if not value:
        return False
    if isinstance(value, dict) and value.get("services"):
        return service.lower() in {str(s).lower() for s in value["services"]}
    return True
