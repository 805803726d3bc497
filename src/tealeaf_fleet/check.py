"""`fleet check`: read-only proof, per Windows host, of every remote mechanism a rollout uses.

Why: some facts can only be settled on a real server: how its PowerShell treats stdin, the
exact Tealeaf registry value names, the Data Service log names, the FIPS policy, Constrained
Language Mode, clock skew. An operator runs this before the change board's window and
attaches the Markdown to the ticket; the project turns its remaining assumptions into
evidence the same way.

Per host, on one connection: the read-only `facts` op, then the read-only `check` op
(`ops/scripts/check.ps1`). `check_rules.evaluate_host` turns both answers and what the
controller knows (transport, scheme, encryption, when it sent and received) into one line per
mechanism. `gather` does the I/O, in parallel over the Windows hosts; PCA hosts are listed,
never contacted. The CLI (`cli/check.py`) only renders a `FleetCheck`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tealeaf_fleet import __version__
from tealeaf_fleet.check_rules import (
    FAIL,
    MECHANISMS,
    OK,
    RESTART_MUTEX,
    SENTINEL,
    UNKNOWN,
    VERDICTS,
    WARN,
    HostAnswers,
    Line,
    evaluate_host,
)
from tealeaf_fleet.errors import RemoteError
from tealeaf_fleet.ops import facts as facts_op
from tealeaf_fleet.ops import protocol
from tealeaf_fleet.status import PCA_NOTE

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet, Host
    from tealeaf_fleet.transport import Connection

log = logging.getLogger(__name__)

# Both ops read a few registry keys, WMI and a folder listing: seconds on a slow 2008 R2. A
# hung op (stdin that never ends) must not hold the command for facts' usual two minutes.
OP_TIMEOUT_S = 60.0
Progress = Callable[[str, str], None]  # (host name, its worst verdict)
Clock = Callable[[], float]
Connect = Callable[["Host"], "Connection"]


@dataclass
class HostCheck:
    """One host's lines (none for a PCA, which is never contacted) and the raw answers."""

    name: str
    role: str
    address: str
    contacted: bool
    lines: list[Line] = field(default_factory=list)
    note: str = ""
    facts: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    elapsed_s: float | None = None

    def count(self, verdict: str) -> int:
        return sum(1 for line in self.lines if line.verdict == verdict)

    @property
    def worst(self) -> str:
        """fail > unknown > warn > ok: what the host's row shows first."""
        for verdict in (FAIL, UNKNOWN, WARN):
            if self.count(verdict):
                return verdict
        return OK

    @property
    def not_ok(self) -> list[Line]:
        return [line for line in self.lines if line.verdict != OK]

    def not_ok_names(self) -> str:
        """The mechanisms that are not ok, for a summary cell; a failed login says so once
        instead of naming every mechanism it left unmeasured."""
        lines = self.not_ok
        if lines and lines[0].mechanism == "login" and lines[0].verdict == FAIL:
            return f"login ({len(lines) - 1} more not measured)" if len(lines) > 1 else "login"
        return ", ".join(line.mechanism for line in lines) or "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "address": self.address,
            "contacted": self.contacted,
            "note": self.note,
            "worst": self.worst if self.contacted else None,
            "elapsed_s": None if self.elapsed_s is None else round(self.elapsed_s, 2),
            "lines": [line.to_dict() for line in self.lines],
            "facts": self.facts,
            "check": self.check,
        }


@dataclass
class FleetCheck:
    """Every host's lines. `works`: no line failed and none is unknown (warnings allowed)."""

    hosts: list[HostCheck]
    inventory: str
    started_at: str  # controller UTC, ISO 8601
    elapsed_s: float

    @property
    def checked(self) -> list[HostCheck]:
        return [h for h in self.hosts if h.contacted]

    def count(self, verdict: str) -> int:
        return sum(h.count(verdict) for h in self.checked)

    @property
    def works(self) -> bool:
        return all(h.worst in (OK, WARN) for h in self.checked)

    @property
    def exit_code(self) -> int:
        return 0 if self.works else 1

    def summary(self) -> str:
        """One line: how many hosts and lines, and which hosts need attention."""
        counts = ", ".join(f"{self.count(v)} {v}" for v in VERDICTS if self.count(v))
        head = (
            f"{len(self.checked)} Windows host(s) x {len(MECHANISMS)} mechanisms: "
            f"{counts or 'nothing checked'}"
        )
        attention = [h.name for h in self.checked if h.worst in (FAIL, UNKNOWN)]
        if attention:
            return f"{head}; NOT proven on {', '.join(attention)}"
        warned = [h.name for h in self.checked if h.worst == WARN]
        tail = f" (warnings on {', '.join(warned)})" if warned else ""
        return f"{head}; every mechanism works{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "works": self.works,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "inventory": self.inventory,
            "started_at": self.started_at,
            "elapsed_s": round(self.elapsed_s, 2),
            "tool_version": __version__,
            "mechanisms": [{"name": n, "title": t} for n, t in MECHANISMS],
            "counts": {v: self.count(v) for v in VERDICTS},
            "hosts": [h.to_dict() for h in self.hosts],
        }


def run_check_op(conn: Connection, install_dir: str, *, timeout_s: float = OP_TIMEOUT_S) -> dict:
    """The `check` op with the sentinel; raises RemoteError subclasses like any op."""
    return conn.run_op("check", _check_params(install_dir), timeout_s=timeout_s, read_only=True)


def probe_host(
    conn: Connection, host: Host, *, install_dir: str | None, clock: Clock = time.time
) -> HostAnswers:
    """Both ops on one connection. The check op runs only once a shell opened (a host that
    refused the login or cannot be reached would only fail the same way again)."""
    answers = HostAnswers()
    try:
        answers.facts = facts_op.gather(conn, host, install_dir=install_dir, timeout_s=OP_TIMEOUT_S)
    except RemoteError as exc:
        log.info("%s: facts failed: %s", host.name, exc)
        answers.facts = exc
    answers.logged_in = conn.shells_opened > 0
    if not answers.logged_in:
        return answers
    found = answers.facts.get("install_dir") if isinstance(answers.facts, Mapping) else None
    folder = str(found or install_dir or "")
    answers.stdin_bytes = len(protocol.build_stdin("check", _check_params(folder)))
    answers.sent_at = clock()
    try:
        answers.check = run_check_op(conn, folder)
    except RemoteError as exc:
        log.info("%s: check failed: %s", host.name, exc)
        answers.check = exc
    answers.received_at = clock()
    return answers


def _check_params(install_dir: str) -> dict[str, str]:
    return {"Sentinel": SENTINEL, "InstallDir": install_dir, "MutexName": RESTART_MUTEX}


def _connector(fleet: Fleet, hosts: list[Host]) -> Connect:
    """Connections with the inventory's passwords, each resolved once (InputError if unset)."""
    from tealeaf_fleet.transport import Connection

    passwords = {
        h.name: (None if h.winrm.transport == "certificate" else fleet.winrm_password(h))
        for h in hosts
    }
    return lambda h: Connection(h, passwords[h.name])


def check_host(
    fleet: Fleet, host: Host, connect: Connect, *, clock: Clock = time.time
) -> HostCheck:
    """One Windows host, start to end."""
    started = time.monotonic()
    with connect(host) as conn:
        answers = probe_host(
            conn, host, install_dir=host.install_dir or fleet.install_dir, clock=clock
        )
    return HostCheck(
        host.name,
        host.role,
        host.address,
        True,
        evaluate_host(host, answers),
        facts=dict(answers.facts) if isinstance(answers.facts, Mapping) else None,
        check=dict(answers.check) if isinstance(answers.check, Mapping) else None,
        elapsed_s=time.monotonic() - started,
    )


def gather(
    fleet: Fleet,
    *,
    forks: int = 8,
    on_progress: Progress | None = None,
    connect: Connect | None = None,
    clock: Clock = time.time,
) -> FleetCheck:
    """Check every Windows host in parallel (at most `forks` at once), in inventory order."""
    started, began = clock(), time.monotonic()
    windows = fleet.windows_hosts()
    connect = connect or _connector(fleet, windows)

    def one(host: Host) -> HostCheck:
        result = check_host(fleet, host, connect, clock=clock)
        if on_progress:
            on_progress(host.name, result.worst)
        return result

    done: dict[str, HostCheck] = {}
    if windows:
        with ThreadPoolExecutor(
            max_workers=max(1, min(forks, len(windows))), thread_name_prefix="check"
        ) as pool:
            done = {h.name: r for h, r in zip(windows, pool.map(one, windows), strict=True)}
    rows = [
        done.get(h.name) or HostCheck(h.name, h.role, h.address, False, note=PCA_NOTE)
        for h in fleet.hosts.values()
    ]
    return FleetCheck(
        rows,
        inventory=str(fleet.path),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        elapsed_s=time.monotonic() - began,
    )


__all__ = ["FleetCheck", "HostCheck", "Line", "gather", "probe_host", "run_check_op"]
