"""Walks a plan's phases in order and dispatches each step to its action.

Why it is shaped this way:
- the plan (its JSON form, docs/architecture.md "Playbooks and plans") is the single source of
  what runs where: the runner adds no host and no phase of its own, so what the change board
  approved is what runs;
- every transition is journaled before and after it happens, so a controller killed at any point
  leaves a journal that the rerun can resume from (`Journal.done_steps`): a host whose restart
  and gates passed is recognised and not restarted again;
- the first failed phase halts the run, and the message says what to do next;
- Ctrl-C or SIGTERM (the CLI sets `stop`) is honoured between steps: running steps finish, no
  new one starts, the run ends `Interrupted` (exit 130) and says how to resume; a second one
  (KeyboardInterrupt) abandons the steps in flight, and the journal still says `interrupted`;
- an unexpected exception (a bug) is journaled as `crashed`, never `ok`, and re-raised for the
  CLI's crash log;
- the engine never prints: it emits events (engine/events.py).
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tealeaf_fleet.engine.events import EventBus
from tealeaf_fleet.engine.strategies import CONTROLLER, PhaseResult, StepResult, run_strategy
from tealeaf_fleet.errors import FleetError, Interrupted, PreflightError
from tealeaf_fleet.playbooks import COMPENSATE as COMPENSATIONS

# Steps recognised as done from the journal alone. The others are judged again from live facts
# on every run (cheap, and right even when someone changed a host by hand in between).
JOURNAL_RESUMED_OPS = ("restart",)


@dataclass(frozen=True)
class PhaseSpec:
    """One phase as the runner needs it (from the plan's JSON)."""

    name: str
    op: str
    strategy: str
    batch: int = 1
    gates: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    compensate: str | None = None

    @classmethod
    def from_plan(cls, phase: Mapping[str, Any]) -> PhaseSpec:
        hosts: list[str] = []
        for step in phase.get("steps") or []:
            name = step.get("host")
            if name and name not in hosts and name != CONTROLLER:
                hosts.append(name)
        op = phase["op"]
        return cls(
            name=phase.get("name") or op,
            op=op,
            strategy=phase.get("strategy") or "parallel",
            batch=int(phase.get("batch") or 1),
            gates=tuple(phase.get("gates") or ()),
            hosts=tuple(hosts),
            compensate=phase.get("compensate")
            or (COMPENSATIONS.get(op) if phase.get("strategy") == "all_or_nothing" else None),
        )


Action = Callable[[Any, PhaseSpec, str], StepResult]  # (context, phase, host) -> result


@dataclass
class RunResult:
    run_id: int | None
    command: str
    outcome: str  # ok | failed | blocked | interrupted | crashed
    started: float
    finished: float
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    halted_phase: str | None = None
    halted_hosts: list[str] = field(default_factory=list)
    message: str = ""
    hint: str | None = None
    blockers: dict[str, list[str]] = field(default_factory=dict)
    # RTV workstations whose phases did not finish: host -> "phase: why" (the servers are done)
    workstations: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.finished - self.started

    @property
    def exit_code(self) -> int:
        return {
            "ok": 0,
            "failed": 1,
            "blocked": PreflightError.exit_code,
            "interrupted": Interrupted.exit_code,
            "crashed": 1,
        }[self.outcome]

    def raise_for_outcome(self) -> None:
        """For callers that prefer exceptions to exit codes."""
        if self.outcome == "blocked":
            raise PreflightError(self.message, self.blockers)
        if self.outcome == "interrupted":
            raise Interrupted(self.message, hint=self.hint)
        if self.outcome == "failed":
            raise FleetError(self.message, phase=self.halted_phase, hint=self.hint)


class Runner:
    """One run of one plan. `actions` maps op name -> Action; `context` is handed to them
    untouched (engine/actions.py's RunContext in real runs; anything in unit tests)."""

    def __init__(
        self,
        *,
        plan: Mapping[str, Any],
        actions: Mapping[str, Action],
        context: Any,
        bus: EventBus,
        journal: Any | None,
        command: str,
        inventory_label: str,
        forks: int = 10,
        stop: threading.Event | None = None,
        after_phase: Callable[[PhaseSpec], None] | None = None,
        playbook_ref: str | None = None,
    ) -> None:
        self.plan = plan
        self.after_phase = after_phase  # e.g. fleet-wide judgements once preflight has read all
        self.playbook_ref = playbook_ref  # --playbook as given: resume hints repeat it
        self.phases = [PhaseSpec.from_plan(p) for p in plan.get("phases") or []]
        self.actions = actions
        self.context = context
        self.bus = bus
        self.journal = journal
        self.command = command
        self.inventory_label = inventory_label
        self.forks = forks
        self.stop = stop or threading.Event()
        self.run_id: int | None = None
        self.roles = {h.get("name"): h.get("role") for h in plan.get("hosts") or []}
        self.workstations: dict[str, str] = {}  # RTV host -> why its phases did not finish
        self.done: dict[tuple[str, str, str], int] = {}
        self._recap: dict[str, dict[str, int]] = {}
        self._recap_lock = threading.Lock()

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.time()
        digest = self.plan.get("digest")
        if self.journal is not None:
            inventory = self.plan.get("inventory") or {}
            self.run_id = self.journal.start_run(
                command=self.command,
                inventory_path=inventory.get("path"),
                inventory_digest=inventory.get("digest"),
                playbook=(self.plan.get("playbook") or {}).get("name"),
                plan_digest=digest,
                tool_version=self.plan.get("tool_version"),
            )
            self.done = self.journal.done_steps(digest, before_run=self.run_id)
        self.bus.run = self.run_id
        if hasattr(self.context, "attach"):
            self.context.attach(self)
        resumed = sorted({run for run in self.done.values()})
        self.bus.emit(
            "run_started",
            message=f"{self.command} {self.inventory_label}",
            command=self.command,
            plan_digest=digest,
            resumes=resumed,
        )
        result = RunResult(self.run_id, self.command, "ok", started, started)
        aborted = False
        try:
            for phase in self.phases:
                outcome = self._phase(phase, result)
                if outcome is not None:
                    result.outcome = outcome
                    break
            else:
                self._workstations_outcome(result)
        except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: abort at once, but journal it
            aborted = True
            result.outcome = "interrupted"
            result.message = (
                "stopped at once by a second Ctrl-C or SIGTERM; steps in flight were abandoned"
            )
            result.hint = f"rerun `{self._rerun()}` to resume"
            raise
        except FleetError as exc:
            result.outcome = "failed"
            result.message = f"stopped by an error outside any step: {exc}"
            raise
        except Exception as exc:  # a bug: journal `crashed` (never `ok`), the CLI logs it
            result.outcome = "crashed"
            result.message = (
                f"crashed: unexpected {type(exc).__name__} (the traceback is in the crash "
                "log named on stderr)"
            )
            result.hint = f"rerun `{self._rerun()}` to resume"
            raise
        finally:
            result.finished = time.time()
            result.recap = self._recap
            # The outcome is journaled before the connections close: a second Ctrl-C or
            # SIGTERM while shells are being closed must not leave the run without one.
            if self.journal is not None and self.run_id is not None:
                self.journal.finish_run(self.run_id, result.outcome, result.message or None)
            if hasattr(self.context, "close") and not aborted:  # abandoned steps use them
                self.context.close()
            self.bus.emit(
                "run_finished",
                outcome=_event_outcome(result.outcome),
                message=result.message or f"{self.command} finished",
                result=result.outcome,
                duration_s=round(result.duration_s, 1),
                recap=self._recap,
                hint=result.hint,
                halted_phase=result.halted_phase,
                blockers=result.blockers,
                workstations=result.workstations,
            )
        return result

    # --- RTV workstations: never on the servers' critical path --------------------------------

    def is_workstation_phase(self, phase: PhaseSpec) -> bool:
        """A phase whose hosts are all RTV workstations: its failures do not halt the run
        (the servers' phases come first in the playbook), they are reported at the end."""
        return bool(phase.hosts) and all(self.roles.get(h) == "rtv" for h in phase.hosts)

    def _workstation_targets(self, phase: PhaseSpec, targets: list[str]) -> list[str]:
        """Leave out workstations that already failed (or that preflight could not read),
        with a skipped step each saying why."""
        known = dict(getattr(self.context, "workstation_problems", {}) or {})
        for host, why in known.items():
            self.workstations.setdefault(host, f"preflight: {why}")
        out = []
        for host in targets:
            if host in self.workstations:
                why = self.workstations[host]
                self._step(phase, host, lambda w=why: StepResult("skipped", f"not attempted: {w}"))
            else:
                out.append(host)
        return out

    def _workstations_outcome(self, result: RunResult) -> None:
        """After every phase ran: the servers are done; unfinished workstations make the run
        `failed` (exit 1) with one line each and the command that finishes them later."""
        for host, why in (getattr(self.context, "workstation_problems", {}) or {}).items():
            self.workstations.setdefault(host, f"preflight: {why}")
        if not self.workstations:
            return
        names = list(self.workstations)
        result.outcome = "failed"
        result.workstations = dict(self.workstations)
        result.halted_phase = None
        result.halted_hosts = names
        result.message = (
            f"the servers are done; {len(names)} RTV workstation(s) not finished: "
            f"{', '.join(names)}"
        )
        result.hint = (
            "fix what is listed per workstation, then finish them with "
            f"`{self._rerun(limit=','.join(names))}`"
        )

    def _phase(self, phase: PhaseSpec, result: RunResult) -> str | None:
        """Run one phase; return the run's final outcome if the run must stop here."""
        if self.stop.is_set():
            return self._interrupted(phase, result)
        order = getattr(self.context, "rolling_order", None)
        if phase.strategy == "rolling" and callable(order):
            hosts = list(order(list(phase.hosts)))
            if hosts != list(phase.hosts):
                moved = replace(phase, hosts=tuple(hosts))
                self.phases[self.phases.index(phase)] = moved
                phase = moved
        self.bus.emit(
            "phase_started",
            phase=phase.name,
            action=phase.op,
            strategy=phase.strategy,
            hosts=list(phase.hosts),
            gates=list(phase.gates),
            index=self.phases.index(phase) + 1,
            of=len(self.phases),
        )
        targets = list(phase.hosts)
        if phase.strategy == "controller":
            targets = [CONTROLLER]
        if not targets:
            self.bus.emit(
                "phase_finished",
                phase=phase.name,
                action=phase.op,
                outcome="skipped",
                message="no host in this phase",
            )
            return None
        action = self.actions.get(phase.op)
        if action is None:
            raise FleetError(f"no action for op {phase.op!r}", phase=phase.name)
        if self.is_workstation_phase(phase):
            targets = self._workstation_targets(phase, targets)
        compensate = None
        if phase.compensate:
            undo = self.actions.get(phase.compensate)
            if undo is not None:
                undo_phase = PhaseSpec(
                    name=phase.name, op=phase.compensate, strategy="parallel", hosts=phase.hosts
                )
                compensate = self._work(undo_phase, undo, compensation=True)
        outcome = run_strategy(
            phase.strategy,
            targets,
            self._work(phase, action),
            forks=self.forks,
            batch=phase.batch,
            compensate=compensate,
            stop=self.stop,
        )
        return self._after_phase(phase, outcome, result)

    def _after_phase(self, phase: PhaseSpec, outcome: PhaseResult, result: RunResult) -> str | None:
        failed = outcome.failed
        if phase.op == "preflight" and not failed and not outcome.interrupted:
            fleet_wide = getattr(self.context, "after_preflight", None)
            blockers = fleet_wide() if callable(fleet_wide) else {}
            if blockers:
                return self._blocked_fleet_wide(phase, blockers, result)
        if not failed and not outcome.interrupted:
            if self.after_phase is not None:
                self.after_phase(phase)
            self.bus.emit("phase_finished", phase=phase.name, action=phase.op, outcome="ok")
            return None
        if failed and not outcome.interrupted and self.is_workstation_phase(phase):
            for host in failed:
                self.workstations[host] = f"{phase.name}: {outcome.results[host].message}"
            self.bus.emit(
                "phase_finished",
                phase=phase.name,
                action=phase.op,
                outcome="failed",
                failed=failed,
                message=f"RTV workstation(s) {', '.join(failed)} not finished; the run goes on "
                "(servers are not affected)",
            )
            return None
        self.bus.emit(
            "phase_finished",
            phase=phase.name,
            action=phase.op,
            outcome="failed" if failed else "skipped",
            failed=failed,
            not_started=outcome.not_started,
            compensated=list(outcome.compensated),
        )
        if not failed:
            return self._interrupted(phase, result)
        result.halted_phase = phase.name
        result.halted_hosts = failed
        label = self.inventory_label
        if phase.op == "preflight":
            blockers = getattr(self.context, "blockers", {}) or {
                h: [outcome.results[h].message] for h in failed
            }
            result.blockers = {h: list(v) for h, v in blockers.items()}
            result.message = (
                f"preflight found blockers on {len(failed)} host(s): "
                f"{', '.join(failed)}; nothing was changed anywhere"
            )
            result.hint = f"fix what is listed per host, then rerun `{self._rerun()}`"
            return "blocked"
        first = outcome.results[failed[0]]
        where = failed[0] if failed[0] != CONTROLLER else "the controller"
        text = f"halted in phase '{phase.name}' on {where}: {first.message}"
        if len(failed) > 1:
            text += f" (and {len(failed) - 1} more host(s): {', '.join(failed[1:])})"
        if outcome.compensated:
            undone = [h for h, r in outcome.compensated.items() if not r.failed]
            text += (
                f"; {phase.compensate} was run again on {len(undone)} host(s) so that "
                "none is left half-changed"
            )
            still = [h for h, r in outcome.compensated.items() if r.failed]
            if still:
                text += f"; COMPENSATION FAILED on {', '.join(still)}: check them by hand"
        if outcome.not_started:
            text += f"; not started: {', '.join(outcome.not_started)}"
        result.message = text
        other = "rollback" if self.command == "rollout" else "rollout"
        back = f"`fleet {other} {label}` to go back"
        if self.plan.get("rotation"):
            back = (
                f"rotate back to the previous pair (`fleet cert history {label}`, then "
                f"`fleet rollout {label} --playbook rotate --certificate-from-archive "
                "FINGERPRINT`)"
            )
        result.hint = (
            f"run `fleet status {label}` to see the fleet, fix the cause, then rerun "
            f"`{self._rerun()}` (with the same flags) to resume (finished steps are not "
            f"repeated), or {back}"
        )
        return "failed"

    def _blocked_fleet_wide(
        self, phase: PhaseSpec, blockers: Mapping[str, list[str]], result: RunResult
    ) -> str:
        """Every host passed its own preflight, but a rule over the whole fleet refuses (a
        rotation's: the new pair missing, expiring, or already what every host runs)."""
        names = list(blockers)
        self.bus.emit(
            "phase_finished",
            phase=phase.name,
            action=phase.op,
            outcome="failed",
            failed=names,
            not_started=[],
            compensated=[],
        )
        result.halted_phase = phase.name
        result.halted_hosts = names
        result.blockers = {h: list(v) for h, v in blockers.items()}
        result.message = (
            "preflight refused the change as a whole: "
            + "; ".join(m for v in blockers.values() for m in v)
            + "; nothing was changed anywhere"
        )
        result.hint = f"fix what is listed, then rerun `{self._rerun()}`"
        return "blocked"

    def _rerun(self, *, limit: str | None = None) -> str:
        """The command that resumes this run. For rollout and rollback: the playbook as given
        (`playbook_ref`: a packaged name, or a file's path), named when it is not the command's
        own, and the flags that point at the same archived pair (a rotate-back). Other commands
        (troubleshoot) carry their own flags in the label. `limit`: in place of this run's own
        `--limit` (the workstations left to finish)."""
        from tealeaf_fleet.certarchive import rerun_flags
        from tealeaf_fleet.playbooks import builtin_names

        label = self.inventory_label
        if limit is not None:
            label = f"{label.split(' --limit ')[0]} --limit {shlex.quote(limit)}"
        text = f"fleet {self.command} {label}"
        if self.command not in ("rollout", "rollback"):
            return text
        name = (self.plan.get("playbook") or {}).get("name")
        ref = self.playbook_ref
        if ref is not None and ref not in builtin_names():
            text += f" --playbook {shlex.quote(ref)}"
        elif name and name != self.command:
            text += f" --playbook {name}"
        fleet = getattr(self.context, "fleet", None)
        normalized = getattr(fleet, "normalized", None) or {}
        return text + rerun_flags(normalized.get("certificate") or {})

    def _interrupted(self, phase: PhaseSpec, result: RunResult) -> str:
        result.halted_phase = phase.name
        result.message = f"interrupted before phase '{phase.name}' finished; running steps ended"
        result.hint = f"rerun `{self._rerun()}` to resume: finished steps are not repeated"
        return "interrupted"

    # --- one step -----------------------------------------------------------------------------

    def _work(
        self, phase: PhaseSpec, action: Action, *, compensation: bool = False
    ) -> Callable[[str], StepResult]:
        def work(host: str) -> StepResult:
            key = (phase.name, host, phase.op)
            if not compensation and phase.op in JOURNAL_RESUMED_OPS and key in self.done:
                result = StepResult("skipped", f"done in run {self.done[key]} (journal)")
                self._step(phase, host, lambda: result)
                return result
            return self._step(phase, host, lambda: action(self.context, phase, host))

        return work

    def _step(self, phase: PhaseSpec, host: str, call: Callable[[], StepResult]) -> StepResult:
        self.bus.emit("step_started", phase=phase.name, host=host, action=phase.op)
        step_id = None
        if self.journal is not None and self.run_id is not None:
            step_id = self.journal.step_started(self.run_id, phase.name, host, phase.op)
            if hasattr(self.context, "step_ids"):
                self.context.step_ids[(phase.name, host)] = step_id
        started = time.monotonic()
        try:
            result = call()
        except FleetError as exc:
            result = StepResult("failed", str(exc), exc)
        if step_id is not None:
            self.journal.step_finished(step_id, result.outcome, result.message or None)
        self.bus.emit(
            "step_finished",
            phase=phase.name,
            host=host,
            action=phase.op,
            outcome=result.outcome,
            message=result.message or None,
            elapsed_s=round(time.monotonic() - started, 2),
        )
        with self._recap_lock:
            counts = self._recap.setdefault(
                host, {"ok": 0, "changed": 0, "skipped": 0, "failed": 0}
            )
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return result


def _event_outcome(run_outcome: str) -> str:
    return "ok" if run_outcome == "ok" else "failed"
