"""The support bundle of `fleet logs`: one zip a vendor's support engineer can open.

What is in it, and why:
- `MANIFEST.txt`: when, for which inventory, since when, and per host what was collected, what
  was cut to stay within its bound, and what could not be read;
- `hosts/NAME/facts.json`: the facts op's answer (the state a support engineer asks for first);
- `hosts/NAME/data_service.log`: the Data Service log lines written since the time, and every
  startup blocks (they say which mode the service started in) in their own quarter of the
  bound, newest file first, at most `max_bytes` per host, trimmed on the host while it reads
  (older lines go first; support_logs.ps1);
- `hosts/NAME/application_events.json`: the Application event log entries naming TeaLeaf;
- `controller/run-N.log`, `controller/runs.json`: this tool's own run logs and runs since then.
Every text goes through `mask()`: the known secrets (`redact`) and anything written as
`password=...`, `pwd: ...` or openssl's `pass:...` are replaced by the mask.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import FleetError, InputError
from tealeaf_fleet.secrets import mask

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet, Host

DEFAULT_SINCE_MINUTES = 24 * 60
MAX_SINCE_DAYS = 3650  # ten years: older than any log a host keeps; AddMinutes stays in range
RUN_LOG_LIMIT = 1024 * 1024  # bytes of one run log kept (its end)
_RELATIVE = re.compile(r"(\d{1,6})([mhd])")
_ABSOLUTE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 24 * 60}


@dataclass(frozen=True)
class Since:
    """`--since`: host-local text (absolute) or minutes back (relative); `controller` is the
    same moment as epoch seconds on this machine (for its own run logs)."""

    text: str | None
    minutes: int | None
    controller: float

    @property
    def label(self) -> str:
        return self.text or f"the last {self.minutes} minute(s)"


def parse_since(text: str | None, *, now: float | None = None) -> Since:
    """`30m`, `12h`, `7d`, or `yyyy-MM-ddTHH:mm[:ss]` (the hosts' local time, like their
    logs; this machine's local time for its own run logs). InputError otherwise."""
    now = time.time() if now is None else now
    if not text:
        return Since(None, DEFAULT_SINCE_MINUTES, now - DEFAULT_SINCE_MINUTES * 60)
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        minutes = int(relative.group(1)) * _UNIT_MINUTES[relative.group(2)]
        if minutes > MAX_SINCE_DAYS * 24 * 60:
            raise InputError(
                f"{text!r} is more than {MAX_SINCE_DAYS}d back; give a time instead",
                field="--since",
            )
        return Since(None, minutes, now - minutes * 60)
    if _ABSOLUTE.fullmatch(text.strip()):
        value = text.strip() if text.strip().count(":") == 2 else text.strip() + ":00"
        try:
            moment = time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
        except (ValueError, OverflowError):
            raise InputError(f"{text!r} is not a valid time", field="--since") from None
        return Since(value, None, moment)
    raise InputError(
        f"{text!r} is neither a time (2026-12-01T08:00) nor an age (30m, 12h, 7d)",
        field="--since",
    )


@dataclass
class HostPart:
    name: str
    files: dict[str, str] = field(default_factory=dict)  # path in the zip -> text
    cut: list[str] = field(default_factory=list)
    error: str | None = None


Collector = Callable[["Host"], tuple[Mapping[str, Any], Mapping[str, Any]]]


def host_part(
    host: Host, facts: Mapping[str, Any], logs: Mapping[str, Any], max_bytes: int
) -> HostPart:
    """One host's files from its facts and the support_logs op's answer."""
    part = HostPart(host.name)
    base = f"hosts/{host.name}/"
    part.files[base + "facts.json"] = json.dumps(facts, indent=2, sort_keys=True)
    ds = logs.get("data_service") or {}
    chunks = [f"# Data Service log lines since {logs.get('since')} (host time {logs.get('now')})"]
    for entry in ds.get("files") or []:
        chunks.append(f"### {entry.get('path')}")
        chunks.extend(str(line) for line in entry.get("lines") or [])
    if ds.get("cut"):
        part.cut.append(f"Data Service log cut at {max_bytes // 1024} KiB (older lines left out)")
        chunks.insert(1, f"# CUT: only the newest {max_bytes // 1024} KiB are here")
    part.files[base + "data_service.log"] = "\n".join(chunks) + "\n"
    events = logs.get("events") or {}
    part.files[base + "application_events.json"] = json.dumps(
        {
            "since": logs.get("since"),
            "error": events.get("error"),
            "entries": events.get("entries") or [],
        },
        indent=2,
    )
    if events.get("cut"):
        part.cut.append(f"Application events cut at {len(events.get('entries') or [])} entries")
    return part


def default_collector(fleet: Fleet, since: Since, max_bytes: int) -> Collector:
    """Facts and the support op over one WinRM connection per host."""

    def collect(host: Host) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        from tealeaf_fleet.ops import facts as facts_op
        from tealeaf_fleet.ops import support
        from tealeaf_fleet.transport import Connection

        password = None if host.winrm.transport == "certificate" else fleet.winrm_password(host)
        with Connection(host, password) as conn:
            facts = facts_op.gather(
                conn, host, install_dir=host.install_dir or fleet.install_dir
            ).raw
            install = host.install_dir or fleet.install_dir or facts.get("install_dir")
            logs = support.collect(
                conn, install, since=since.text, since_minutes=since.minutes, max_bytes=max_bytes
            )
        return facts, logs

    return collect


def gather(
    fleet: Fleet,
    since: Since,
    *,
    max_bytes: int,
    forks: int = 8,
    collector: Collector | None = None,
    on_progress: Callable[[HostPart], None] | None = None,
) -> list[HostPart]:
    """Every Windows host's part, in inventory order; a host that cannot be read carries its
    error (the bundle is still written)."""
    from tealeaf_fleet.status import error_text

    collect = collector or default_collector(fleet, since, max_bytes)
    hosts = fleet.windows_hosts()

    def one(host: Host) -> HostPart:
        try:
            facts, logs = collect(host)
            part = host_part(host, facts, logs, max_bytes)
        except FleetError as exc:
            part = HostPart(host.name, error=error_text(exc))
        if on_progress is not None:
            on_progress(part)
        return part

    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def controller_files(state_dir: Path, since: Since) -> dict[str, str]:
    """This tool's run logs written since then (each at most RUN_LOG_LIMIT, its end), and the
    journal's runs started since then."""
    from tealeaf_fleet.journal import Journal
    from tealeaf_fleet.safeio import read_regular_file

    files: dict[str, str] = {}
    if not (state_dir / "journal.sqlite").is_file():
        return files
    with Journal(state_dir) as journal:
        runs = [r for r in journal.runs(1000) if (r.finished or time.time()) >= since.controller]
    files["controller/runs.json"] = json.dumps([r.to_json() for r in runs], indent=2)
    for run in runs:
        path = state_dir / f"run-{run.id}.log"
        if not path.is_file():
            continue
        size = path.stat().st_size
        data = read_regular_file(path, RUN_LOG_LIMIT, "run log", tail=True)  # its end only
        text = data.decode("utf-8", "replace")
        if size > RUN_LOG_LIMIT:
            text = f"# CUT: only the last {RUN_LOG_LIMIT // 1024} KiB of this run log\n" + text
        files[f"controller/run-{run.id}.log"] = text
    return files


def manifest(
    fleet: Fleet,
    since: Since,
    parts: list[HostPart],
    controller: dict[str, str],
    *,
    pfx_note: str | None = None,
) -> str:
    lines = [
        "tealeaf-fleet support bundle",
        f"written: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"inventory: {fleet.path}",
        f"since: {since.label} (host-local times; run logs by this machine's clock)",
        "secrets: known passwords and anything written as password=/pwd:/pass: are masked",
    ]
    if pfx_note:
        lines.append(f"secrets: {pfx_note}")
    lines.append("")
    for part in parts:
        if part.error:
            lines.append(f"{part.name}: NOT READ: {part.error}")
            continue
        lines.append(f"{part.name}: {', '.join(sorted(part.files))}")
        lines.extend(f"  cut: {why}" for why in part.cut)
    lines.append(f"controller: {', '.join(sorted(controller)) or 'no run logs since then'}")
    return "\n".join(lines) + "\n"


def zip_bytes(files: Mapping[str, str]) -> bytes:
    """The zip of `files` (path -> text), every text masked on its way in."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, mask(text))
    return buffer.getvalue()
