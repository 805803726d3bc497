"""How long the change window is: an estimate per phase and in total, for the change board.

Why a model and not a promise: a restart's length depends on the site (a Canister with a big
session store takes minutes to come back). So the estimate says where each figure comes from:
- the inventory's timings: `rollout.restart_s` per role (how long one restart, or with
  `rollout.restart: reboot` one reboot, of a host of that role takes; `DEFAULT_RESTART_S` and
  `DEFAULT_REBOOT_S` otherwise; the prerequisites playbook's `reboot` op is timed as a reboot
  whatever `rollout.restart` says), `rollout.soak_s`, and `rollout.health_timeout_s` for the
  worst case (every gate waiting its full time);
- measured durations, when the journal holds earlier finished steps of the same op on the same
  host (the newest one each): they replace the model for that step.
The plan's shape decides how they add up: rolling phases one host (batch) after the other,
parallel phases in waves of `forks` hosts, each wave as long as its slowest host. Steps found
already done cost nothing. Nothing here reads the network; the journal is opened read-only
and only if it exists (`fleet plan` writes nothing).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet
    from tealeaf_fleet.plan import Plan, PlanPhase

# One restart of the TeaLeaf services of a host of the role (stop, start, Data Service up).
DEFAULT_RESTART_S = {"portal": 90, "hbr": 60, "canister": 180, "report": 60, "other": 60}
DEFAULT_REBOOT_S = 300
# One remote op (a PowerShell start and its work) by op, for the ops that are not restarts.
OP_S = {
    "preflight": 10,
    "facts": 5,
    "certificate": 5,
    "push_pfx": 5,
    "push_tools": 10,
    "import": 10,
    "enable": 10,
    "disable": 10,
    "verify": 10,
}
GATE_S = 10  # reading the host once more to see every gate pass


@dataclass(frozen=True)
class PhaseWindow:
    name: str
    expected_s: float
    worst_s: float
    measured: int  # steps whose figure came from the journal
    steps: int  # steps that will run (not already done)


@dataclass(frozen=True)
class Window:
    phases: list[PhaseWindow]
    forks: int

    @property
    def expected_s(self) -> float:
        return sum(p.expected_s for p in self.phases)

    @property
    def worst_s(self) -> float:
        return sum(p.worst_s for p in self.phases)

    @property
    def measured(self) -> int:
        return sum(p.measured for p in self.phases)

    def source(self) -> str:
        """Where the figures come from, in one phrase for the ticket."""
        if self.measured:
            return (
                f"{self.measured} step(s) from durations measured in earlier runs (journal), "
                "the rest from the inventory's timings"
            )
        return "the inventory's timings; the journal has no earlier run of these hosts"


def restart_s(fleet: Fleet, role: str) -> int:
    """One restart (or reboot) of a host of `role`, from the inventory or the defaults."""
    if fleet.rollout.restart == "reboot":
        return fleet.rollout.restart_s.get(role, DEFAULT_REBOOT_S)
    return fleet.rollout.restart_s.get(role, DEFAULT_RESTART_S.get(role, 60))


def reboot_s(fleet: Fleet, role: str) -> int:
    """One reboot of a host of `role` (the prerequisites playbook's `reboot` op): the
    inventory's `restart_s` when it times reboots (`rollout.restart: reboot`), else
    DEFAULT_REBOOT_S (a services restart's time says nothing about a reboot's)."""
    if fleet.rollout.restart == "reboot":
        return restart_s(fleet, role)
    return DEFAULT_REBOOT_S


def _step_s(fleet: Fleet, phase: PlanPhase, role: str) -> tuple[float, float]:
    """(expected, worst) of one step of `phase` on a host of `role`, from the model: a
    restart or a reboot, then its gates (and the soak); any other op, one remote op."""
    if phase.op not in ("restart", "reboot"):
        op = OP_S.get(phase.op, 10)
        return op, op
    soak = fleet.rollout.soak_s if "soak" in phase.gates else 0
    bounce = reboot_s(fleet, role) if phase.op == "reboot" else restart_s(fleet, role)
    expected = bounce + GATE_S + soak
    worst = 2 * fleet.rollout.health_timeout_s + soak  # the restart, then the gates, time out
    return expected, max(expected, worst)


def estimate(
    plan: Plan,
    fleet: Fleet,
    *,
    measured: Mapping[tuple[str, str], float] | None = None,
    forks: int = 10,
) -> Window:
    """The window of `plan` (see the module docstring). `measured`: (op, host) -> seconds."""
    measured = measured or {}
    roles = {h.name: h.role for h in plan.hosts}
    out = []
    for phase in plan.phases:
        figures: list[tuple[float, float]] = []
        from_journal = 0
        for step in phase.active_steps:
            expected, worst = _step_s(fleet, phase, roles.get(step.host, "other"))
            seen = measured.get((phase.op, step.host))
            if seen is not None:
                from_journal += 1
                expected, worst = seen, max(worst, seen)
            figures.append((expected, worst))
        out.append(
            PhaseWindow(
                phase.name,
                *_combine(phase, figures, forks),
                measured=from_journal,
                steps=len(figures),
            )
        )
    return Window(out, forks)


def _combine(
    phase: PlanPhase, figures: list[tuple[float, float]], forks: int
) -> tuple[float, float]:
    if not figures:
        return 0.0, 0.0
    if phase.strategy in ("rolling", "controller"):
        size = max(1, phase.batch) if phase.strategy == "rolling" else 1
    else:
        size = max(1, forks)
    expected = worst = 0.0
    for start in range(0, len(figures), size):
        wave = figures[start : start + size]
        expected += max(e for e, _ in wave)
        worst += max(w for _, w in wave)
    return expected, worst


def measured_durations(journal_file: Path, hosts: Iterable[str]) -> dict[tuple[str, str], float]:
    """(op, host) -> seconds of the newest finished, successful step of that op on that host,
    from the journal at `journal_file` (read-only; {} when there is none or it cannot be read).
    Steps that did nothing (skipped) say nothing about how long the work takes."""
    if not journal_file.is_file():
        return {}
    wanted = set(hosts)
    out: dict[tuple[str, str], float] = {}
    try:
        conn = sqlite3.connect(f"{journal_file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute(
            "SELECT action, host, finished - started FROM steps "
            "WHERE finished IS NOT NULL AND outcome IN ('ok', 'changed') ORDER BY id"
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    for action, host, seconds in rows:
        if host in wanted and isinstance(seconds, (int, float)) and seconds >= 0:
            out[(str(action), str(host))] = float(seconds)  # the newest wins (ORDER BY id)
    return out


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `1 h 05 min`: what a change board reads."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
