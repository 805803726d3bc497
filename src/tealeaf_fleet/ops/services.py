"""Restarting things on a host: TeaLeaf services, IIS, or the whole machine.

`restart` restarts exactly the services named (the ones that were Running: an operator's
stopped service stays stopped), dependents stopped first and dependencies started first, on the
host in one op. `reboot_and_wait` schedules a restart, then waits until the host has gone away
and answers again, within a deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tealeaf_fleet.errors import RemoteScriptError, RemoteTimeout

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

log = logging.getLogger(__name__)

IIS_TIMEOUT_S = 300.0
MARGIN_S = 60.0  # transport deadline beyond the script's own deadline
MIN_MARGIN_S = 10.0
# How long killing a hung native tool can take in the script ($FleetKillBudgetS in common.ps1:
# taskkill's own deadline plus the wait for the process to exit).
KILL_BUDGET_S = 15.0


@dataclass(frozen=True)
class ServiceRestart:
    name: str
    before: str
    after: str


@dataclass(frozen=True)
class RestartResult:
    started_at: str  # host-local time before the first stop (compare with Data Service logs)
    elapsed_s: float
    services: list[ServiceRestart]
    # with `install_dir`: what the gates read first, from the same op (a facts-shaped dict:
    # services (every TeaLeaf one), iis, data_service since the restart began)
    after: dict | None = None


@dataclass(frozen=True)
class IisResetResult:
    exit_code: int
    output: str


@dataclass(frozen=True)
class RebootResult:
    scheduled_at: str  # host-local time when the reboot was scheduled
    elapsed_s: float  # until the host answered again
    replaced_scheduled: bool = False  # a shutdown someone else had scheduled was aborted for ours
    note: str | None = None  # set when another scheduled shutdown restarts the host instead


def native_deadline_s(transport_timeout_s: float) -> int:
    """The deadline for a native tool inside an op (the script's `TimeoutS`): a margin below
    the op's transport deadline (PowerShell's start, the script's own work, the answer's way
    back), so the script kills a hung tool and reports it before the transport gives up and
    leaves the tool running on the host. The kill itself takes time too (KILL_BUDGET_S)."""
    margin = min(MARGIN_S, max(MIN_MARGIN_S, transport_timeout_s / 4)) + KILL_BUDGET_S
    return max(1, int(transport_timeout_s - margin))


def restart(
    conn: Connection,
    names: Sequence[str],
    timeout_s: float,
    *,
    install_dir: str | None = None,
    iisreset: bool = False,
) -> RestartResult:
    """Restart `names` on the host; RemoteScriptError naming any not Running by the deadline.
    `iisreset`: then iisreset.exe in the same op (a non-zero exit fails it). With
    `install_dir`, the op ends by reading what the health gates look at first (`after`): one
    PowerShell start per restart, not one each for the restart, iisreset and the first read."""
    if not names:
        raise ValueError("restart needs at least one service name")
    params: dict = {"Names": list(names), "TimeoutS": int(timeout_s)}
    budget = timeout_s + MARGIN_S
    if iisreset:
        params["IisResetS"] = native_deadline_s(IIS_TIMEOUT_S)
        budget += IIS_TIMEOUT_S
    if install_dir:
        params["InstallDir"] = install_dir
    raw = conn.run_op("restart_services", params, timeout_s=budget, read_only=False)
    return RestartResult(
        started_at=str(raw.get("started_at")),
        elapsed_s=float(raw.get("elapsed_s") or 0.0),
        services=[
            ServiceRestart(s.get("name", ""), s.get("before", ""), s.get("after", ""))
            for s in raw.get("services") or []
        ],
        after=raw.get("after") if isinstance(raw.get("after"), dict) else None,
    )


def iisreset(conn: Connection, *, timeout_s: float = IIS_TIMEOUT_S) -> IisResetResult:
    """iisreset.exe; RemoteScriptError when it exits non-zero (IIS did not come back) or
    does not finish within the script's deadline (it is killed then)."""
    raw = conn.run_op(
        "iisreset",
        {"TimeoutS": native_deadline_s(timeout_s)},
        timeout_s=timeout_s,
        read_only=False,
    )
    result = IisResetResult(
        exit_code=int(raw.get("exit_code", -1)), output=str(raw.get("output") or "")
    )
    if result.exit_code != 0:
        raise RemoteScriptError(
            f"iisreset exited {result.exit_code}: {result.output.strip()}",
            op="iisreset",
            exit_code_remote=result.exit_code,
            host=conn.name,
            hint="check IIS (W3SVC) on the host",
        )
    return result


def reboot_and_wait(
    conn: Connection,
    wait_s: float,
    *,
    delay_s: int = 5,
    poll_s: float = 1.0,
    probe_timeout_s: float = 10.0,
) -> RebootResult:
    """Schedule a reboot `delay_s` ahead; wait until the host stops answering and then
    answers again; RemoteTimeout when either does not happen within `wait_s`.

    A shutdown already scheduled by someone else is replaced by ours; one that cannot be
    aborted restarts the host at its own time, and this waits for that restart (`note`).
    """
    start = time.monotonic()
    deadline = start + wait_s
    op_timeout = min(wait_s, 120.0)
    raw = conn.run_op(
        "reboot",
        {"DelayS": int(delay_s), "TimeoutS": native_deadline_s(op_timeout)},
        timeout_s=op_timeout,
        read_only=False,
    )
    note = raw.get("note")
    if raw.get("replaced_scheduled"):
        log.warning("%s: a shutdown scheduled by someone else was replaced by ours", conn.name)
    if note:
        log.warning("%s: %s", conn.name, note)
    conn.close()
    went_down = False
    while time.monotonic() < deadline:
        budget = max(1.0, min(probe_timeout_s, deadline - time.monotonic()))
        answering = conn.probe(timeout_s=budget)
        if not went_down and not answering:
            went_down = True
            log.info("%s: down for the reboot", conn.name)
        elif went_down and answering:
            return RebootResult(
                scheduled_at=str(raw.get("now")),
                elapsed_s=time.monotonic() - start,
                replaced_scheduled=bool(raw.get("replaced_scheduled")),
                note=str(note) if note else None,
            )
        time.sleep(poll_s)
    what = "came back" if went_down else "went down for the reboot"
    if note and not went_down:  # a shutdown scheduled by someone else, later than our wait
        raise RemoteTimeout(
            f"the host never went down for the reboot within {wait_s:.0f}s: {note}",
            host=conn.name,
            hint="the host restarts at the time that shutdown was scheduled for; rerun "
            "after it, or ask whoever scheduled it to abort it (shutdown /a)",
        )
    raise RemoteTimeout(
        f"the host never {what} within {wait_s:.0f}s",
        host=conn.name,
        hint="check the host's console; it may be stuck in shutdown or updates",
    )
