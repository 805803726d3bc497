"""`fleet rollout` and `fleet rollback`: run a playbook against the fleet, with a live view.

Why both here: they are the same command with a different default playbook (rollout enables,
rollback disables) and the same safety rails: a dry run that prints exactly what `fleet plan`
prints, a confirmation (or `--yes`; refused when nobody can answer), approved plans that must
still be the plan the inventory and playbook give (`StalePlanError`, exit 4; the rebuilt plan is
what runs), one run per state folder and per host (the journal's locks), Ctrl-C or SIGTERM
between steps (exit 130 / 143, resumable; a second one stops at once). The engine emits events;
this module only renders them:
a rich live view on stderr, or JSON Lines on stdout with `--json` (and nothing else there).
Heavy imports live inside functions so that `fleet --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tealeaf_fleet import limit
from tealeaf_fleet.cli import archiveflags
from tealeaf_fleet.cli.common import add_forks_argument, add_inventory_argument
from tealeaf_fleet.errors import InputError, StalePlanError

if TYPE_CHECKING:
    from tealeaf_fleet.engine.events import Event
    from tealeaf_fleet.engine.runner import RunResult
    from tealeaf_fleet.inventory import Fleet
    from tealeaf_fleet.plan import Plan

COMMANDS = {
    "rollout": "enable inter-process TLS across the fleet (certificate, push, import, enable, "
    "rolling restart with health gates, verify)",
    "rollback": "disable inter-process TLS everywhere (disable, rolling restart with health "
    "gates, verify); certificates stay in place",
}


def register(sub: argparse._SubParsersAction) -> None:
    for command, help_text in COMMANDS.items():
        p = sub.add_parser(
            command,
            help=help_text,
            description=help_text[0].upper()
            + help_text[1:]
            + ". Rerun after a halt, Ctrl-C or crash to resume.",
        )
        add_inventory_argument(p)
        add_run_arguments(p, default_playbook=command)
        p.set_defaults(handler=lambda args, _c=command: run(args, _c))


def add_run_arguments(p: argparse.ArgumentParser, *, default_playbook: str) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read the hosts' facts (read-only), judge the preflight as the run would and print "
        "the plan as `fleet plan --facts` does; change nothing (exit 3 on a blocker)",
    )
    p.add_argument(
        "--no-facts",
        action="store_true",
        help="with --dry-run: connect to nothing (no facts, no preflight judgement)",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (required when not interactive)",
    )
    p.add_argument(
        "--approved-plan",
        metavar="FILE",
        help="run only if this plan (from `fleet plan --format json`) still matches "
        "the inventory, playbook, tool version (and facts, if it has them)",
    )
    add_forks_argument(p, default=10, what="worked on in parallel phases")
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON Lines events on stdout (and nothing else there)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="journal and lock folder (default: .tealeaf-fleet/ next to the inventory)",
    )
    p.add_argument(
        "--playbook",
        default=default_playbook,
        metavar="NAME|FILE",
        help=f"playbook name or file (default: {default_playbook})",
    )
    limit.add_argument(p)
    archiveflags.add_arguments(p)


# --- the command -----------------------------------------------------------------------------


def run(args: argparse.Namespace, command: str) -> int:
    from tealeaf_fleet.cli.common import load_fleet_or_exit
    from tealeaf_fleet.plan import build_plan
    from tealeaf_fleet.playbooks import load_playbook

    if args.no_facts and not args.dry_run:
        raise InputError("--no-facts only applies with --dry-run", field="--no-facts")
    offline = args.dry_run and args.no_facts
    whole = load_fleet_or_exit(args.inventory, connects=not offline)
    whole = archiveflags.apply(args, whole)
    fleet = limit.select(whole, args.limit)
    playbook = load_playbook(args.playbook)
    new = None
    if playbook.rotation:  # old and new validity side by side in the dry run and the prompt
        from tealeaf_fleet.cli.plan import new_certificate

        new = new_certificate(fleet)
    plan = build_plan(playbook, fleet, new_certificate=new)
    if args.approved_plan:
        plan = check_approved_plan(
            Path(args.approved_plan), plan, fleet, playbook, state_dir=args.state_dir
        )
    if args.limit is not None and not offline:
        # before asking, and in a dry run too: a half-TLS fleet is refused, whoever confirms
        from tealeaf_fleet.cli.plan import _pfx_fingerprint, facts_or_errors

        limit.check_partial_tls(
            whole,
            fleet,
            playbook,
            read_facts=facts_or_errors,
            pfx_sha256=_pfx_fingerprint(whole),
        )
    if args.dry_run:
        from tealeaf_fleet.cli.plan import blocked_exit, plan_with_facts

        if not offline and not plan.preflight.get("checked"):
            # the judgement over fresh facts; an approved plan without facts stays the one
            # printed, with this verdict shown next to it
            judged = plan_with_facts(playbook, fleet, args.state_dir)
            plan = judged if not args.approved_plan else _with_verdict(plan, judged)
        _print_plan(plan, whole, as_json=args.json, state_dir=args.state_dir)
        return blocked_exit(plan)
    if not args.yes:
        _confirm(plan, command)
    label = args.inventory
    if args.limit is not None:
        label += f" --limit {shlex.quote(args.limit)}"
    return run_plan(
        whole,
        plan,
        command=command,
        inventory_label=label,
        state_dir=args.state_dir,
        forks=args.forks,
        as_json=args.json,
        approved_plan=args.approved_plan,
        playbook_ref=str(args.playbook),
    )


def run_plan(
    fleet: Fleet,
    plan: Plan,
    *,
    command: str,
    inventory_label: str,
    state_dir: str | Path | None,
    forks: int,
    as_json: bool,
    view: Any | None = None,
    approved_plan: str | None = None,
    playbook_ref: str | None = None,
) -> int:
    """Take the lock, run, render; returns the exit code. Shared with `fleet demo`."""
    from tealeaf_fleet.engine.events import EventBus
    from tealeaf_fleet.engine.execute import execute
    from tealeaf_fleet.journal import Journal, default_state_dir

    folder = Path(state_dir) if state_dir else default_state_dir(fleet.path)
    listed = plan.to_dict().get("hosts")  # a --limit plan: lock only the hosts it covers
    covered = {h["name"] for h in listed} if listed else None
    journal = Journal(folder)
    bus = EventBus()
    stop = threading.Event()
    signals: list[int] = []
    try:
        with _interrupt_sets(stop, bus, signals):
            takeover = journal.acquire(
                command=command,
                hosts=[
                    (h.name, h.address, h.winrm.port)
                    for h in fleet.windows_hosts()
                    if covered is None or h.name in covered  # only what the plan covers
                ],
            )
            view = view or (JsonView() if as_json else make_view())
            bus.subscribe(view)
            if takeover:
                bus.emit("message", message=takeover)
            with view.running():
                result = execute(
                    fleet,
                    plan.to_dict(),
                    command=command,
                    bus=bus,
                    journal=journal,
                    inventory_label=inventory_label,
                    forks=forks,
                    stop=stop,
                    approved_plan=str(Path(approved_plan).resolve()) if approved_plan else None,
                    playbook_ref=playbook_ref,
                )
        if not as_json:
            print_recap(result, fleet, journal.log_path(result.run_id) if result.run_id else None)
        if result.outcome == "interrupted" and signal.SIGTERM in signals:
            return Terminated.exit_code
        return result.exit_code
    except KeyboardInterrupt as exc:  # a second signal: the journal said so; locks go now
        journal.close()
        _abandon_steps_in_flight(exc)
        raise
    finally:
        journal.close()


class Terminated(KeyboardInterrupt):
    """A second SIGTERM (or a SIGTERM after Ctrl-C): stop at once, like a second Ctrl-C, but
    exit 143 as a process ended by SIGTERM does."""

    exit_code = 128 + signal.SIGTERM


_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
if hasattr(signal, "SIGBREAK"):  # a Windows console's Ctrl-Break: stop like Ctrl-C
    _SIGNAL_NAMES[signal.SIGBREAK] = "Ctrl-Break"


@contextlib.contextmanager
def _interrupt_sets(stop: threading.Event, bus: Any, seen: list[int]) -> Iterator[None]:
    """First Ctrl-C or SIGTERM: stop between steps (running steps finish). A second one of
    either: abort at once. `seen` collects the signals received, in order.

    Why the announcement is made by a thread: a signal handler runs between two bytecodes of
    the main thread, possibly while that thread holds the event bus's lock (or the journal's
    SQLite connection) in the middle of an emit; emitting from the handler would wait for a
    lock its own thread holds, for ever. The handler only records and sets events.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    wake = threading.Event()
    finished = False

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        if stop.is_set():
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        stop.set()
        wake.set()

    def announce() -> None:
        wake.wait()
        if finished:
            return
        bus.emit(
            "message",
            message=f"{_SIGNAL_NAMES.get(seen[0], 'signal')}: finishing the running steps, "
            "starting no new one (press Ctrl-C or send SIGTERM again to stop at once)",
        )

    announcer = threading.Thread(target=announce, name="fleet-signal-announcer", daemon=True)
    announcer.start()
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNAL_NAMES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        finished = True  # a signal not yet announced needs no announcement after the run
        wake.set()
        announcer.join(timeout=5)


def _abandon_steps_in_flight(exc: KeyboardInterrupt) -> None:
    """After a second signal the runner has journaled the run as interrupted and the locks are
    released; steps still running on worker threads are abandoned, as if the controller had
    been killed (the rerun judges them again from the hosts' facts). Python would wait for
    those threads before exiting, so end the process now."""
    from tealeaf_fleet.engine.strategies import WORKER_PREFIX

    if not any(t.name.startswith(WORKER_PREFIX) and t.is_alive() for t in threading.enumerate()):
        return
    code = getattr(exc, "exit_code", 130)
    print(
        "fleet: stopped at once; steps in flight were abandoned (rerun to resume)",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- approved plans, dry run, confirmation ----------------------------------------------------


def _with_verdict(plan: Plan, judged: Plan) -> Plan:
    """`plan` (an approved plan without facts, as rebuilt) showing `judged`'s preflight
    verdict and pre-checks: for printing only, never run or compared."""
    import dataclasses

    return dataclasses.replace(plan, preflight=judged.preflight, prechecks=judged.prechecks)


def check_approved_plan(
    path: Path, current: Plan, fleet: Fleet, playbook: Any, *, state_dir: str | None = None
) -> Plan:
    """The plan to run, rebuilt from the inventory, playbook (and facts, if the approved plan
    has them), once the approved file proves it is that same plan: every digest matches and its
    body equals the rebuilt one but for presentation (`plan.digest_body`). The file's own
    phases are never run. StalePlanError (exit 4) names what changed or the first difference;
    a file that is no plan is an InputError (exit 2)."""
    from tealeaf_fleet.plan import Plan, digest_body, first_difference

    approved = Plan.load(path)
    if approved.facts_digest is not None:
        from tealeaf_fleet.cli.plan import plan_with_facts

        current = plan_with_facts(playbook, fleet, state_dir)
    changed = []
    if approved.inventory.get("digest") != current.inventory.get("digest"):
        changed.append("inventory (hosts, roles, WinRM, certificate or rollout settings)")
    if approved.playbook.get("name") != current.playbook.get("name"):
        changed.append(
            f"playbook: approved {approved.playbook.get('name')!r}, running "
            f"{current.playbook.get('name')!r}"
        )
    elif approved.playbook.get("digest") != current.playbook.get("digest"):
        changed.append(f"playbook {current.playbook.get('name')!r} content")
    if approved.tool_version != current.tool_version:
        changed.append(
            f"tool version: approved {approved.tool_version}, installed {current.tool_version}"
        )
    if approved.facts_digest is not None and approved.facts_digest != current.facts_digest:
        changed.append("facts: the hosts' state differs from when the plan was made")
    if changed:
        raise StalePlanError(
            f"the approved plan {path} is stale: "
            + "; ".join(changed)
            + f" (approved {approved.digest[:12]}, now {current.digest[:12]})",
            changed,
        )
    difference = first_difference(digest_body(approved.to_dict()), digest_body(current.to_dict()))
    if difference:
        raise StalePlanError(
            f"the approved plan {path} is not the plan its inventory, playbook and facts "
            f"give (edited after `fleet plan`?): first difference at {difference}; "
            "nothing was run",
            [difference],
        )
    if approved.digest != current.digest:
        raise StalePlanError(
            f"the approved plan {path} has digest {approved.digest[:12]}, but its content "
            f"digests to {current.digest[:12]} (edited after `fleet plan`?); nothing was run",
            ["plan digest"],
        )
    return current


def _print_plan(plan: Plan, fleet: Fleet, *, as_json: bool, state_dir: str | None) -> None:
    from tealeaf_fleet.cli.common import console, write_output
    from tealeaf_fleet.cli.plan import plan_window
    from tealeaf_fleet.cli.render import print_table, render

    window = plan_window(plan, fleet, state_dir)
    if as_json:
        write_output(render(plan, "json"), None)
    elif sys.stdout.isatty():
        print_table(plan, console(), window)
    else:
        write_output(render(plan, "table", window=window), None)


def _confirm(plan: Plan, command: str) -> None:
    if not sys.stdin.isatty():
        raise InputError(
            f"refusing to {command} without confirmation: stdin is not a terminal",
            field="--yes",
            hint="review with --dry-run, then rerun with --yes",
        )
    from tealeaf_fleet.cli.common import console
    from tealeaf_fleet.cli.render import print_summary

    err = console(stderr=True)
    print_summary(plan, err)  # the shape of the change; --dry-run prints the full table
    err.print(f"[bold]{command}[/bold] changes the servers above. Type 'yes' to go on: ", end="")
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise InputError(f"{command} not confirmed; nothing was changed")


# --- rendering ----------------------------------------------------------------------------------


class JsonView:
    """`--json`: one JSON document per event on stdout, flushed, nothing else."""

    def __call__(self, event: Event) -> None:
        sys.stdout.write(event.to_json() + "\n")
        sys.stdout.flush()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        yield


class LineView:
    """Plain lines on stderr (pipes, CI logs): one per meaningful event."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        line = describe(event)
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        yield


def describe(event: Event) -> str | None:
    """One human line for an event (None for the ones not worth a line)."""
    from tealeaf_fleet.secrets import redact

    e = event
    msg = redact(e.message) if e.message else ""
    if e.type == "run_started":
        resumes = e.data.get("resumes") or []
        extra = f" (resuming run {', '.join(map(str, resumes))})" if resumes else ""
        return f"run {e.run}: {msg}{extra}"
    if e.type == "phase_started":
        hosts = e.data.get("hosts") or []
        return (
            f"== [{e.data.get('index')}/{e.data.get('of')}] {e.phase} ({e.action}, "
            f"{e.data.get('strategy')}): {len(hosts) or 1} target(s)"
        )
    if e.type == "step_finished":
        msg = short_step_message(msg)
        if len(msg) > 240:  # the journal and --json keep the whole text
            msg = msg[:237] + "..."
        return f"   {e.host}: {e.action} {e.outcome}" + (f": {msg}" if msg else "")
    if e.type == "gate":
        return f"   {e.host}: gate {e.data.get('gate')} {e.outcome}: {msg}"
    if e.type == "phase_finished" and e.outcome == "failed":
        return f"== {e.phase}: FAILED on {', '.join(e.data.get('failed') or [])}"
    if e.type == "message":
        return f"fleet: {msg}"
    if e.type == "run_finished":
        return f"run {e.run}: {e.data.get('result')} in {e.data.get('duration_s')}s"
    return None


_GATES_PASSED = "; gates passed: "


def short_step_message(msg: str) -> str:
    """A restart's 'did X; gates passed: g1: text; g2: text...' as 'did X; N gates passed':
    each gate already had its own line (or live row) just before; the journal keeps it all."""
    did, sep, passed = msg.partition(_GATES_PASSED)
    if not sep:
        return msg
    count = len(re.findall(r"(?:^|; )[a-z][a-z_]*: ", passed))
    return f"{did}; {count} gate{'' if count == 1 else 's'} passed"


class LiveView:
    """A rich live view on stderr: phase progress, per-host state, the host being restarted,
    the latest gate results."""

    STYLE = {
        "ok": "green",
        "changed": "cyan",
        "skipped": "yellow",
        "failed": "bold red",
        "running": "bold magenta",
    }

    def __init__(self) -> None:
        from tealeaf_fleet.cli.common import console

        self.console = console(stderr=True)
        self.lock = threading.Lock()
        self.phases: list[str] = []
        self.phase: str | None = None
        self.phase_index = 0
        self.phase_count = 0
        self.hosts: dict[str, dict[str, str]] = {}
        self.gates: list[str] = []
        self.messages: list[str] = []
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        from tealeaf_fleet.secrets import redact

        e = event
        with self.lock:
            if e.type == "phase_started":
                self.phase_index = e.data.get("index") or self.phase_index + 1
                self.phase_count = e.data.get("of") or self.phase_count
                self.phase = f"{e.phase} ({e.data.get('strategy')})"
            elif e.type == "step_started":
                self.hosts[e.host or "-"] = {
                    "phase": e.phase or "",
                    "state": "running",
                    "detail": "restarting..." if e.action == "restart" else f"{e.action}...",
                }
            elif e.type == "step_finished":
                self.hosts[e.host or "-"] = {
                    "phase": e.phase or "",
                    "state": e.outcome or "",
                    "detail": short_step_message(redact(e.message or ""))[:100],
                }
            elif e.type == "gate":
                self.gates.append(
                    f"{e.host} {e.data.get('gate')}: {e.outcome} {redact(e.message or '')[:90]}"
                )
                self.gates = self.gates[-5:]
            elif e.type == "message":
                self.messages.append(redact(e.message or ""))

    def renderable(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            table = Table(expand=False, show_edge=False, pad_edge=False)
            table.add_column("Host", style="bold", no_wrap=True)
            table.add_column("Phase", no_wrap=True)
            table.add_column("State", no_wrap=True)
            table.add_column("Detail", overflow="ellipsis", no_wrap=True, max_width=100)
            for name, row in self.hosts.items():
                state = row["state"]
                table.add_row(  # names and messages are data: Text, never rich markup
                    Text(name),
                    Text(row["phase"]),
                    Text(state, style=self.STYLE.get(state, "")),
                    Text(row["detail"]),
                )
            elapsed = time.monotonic() - self.started
            parts: list[Any] = [
                Text(
                    f"phase {self.phase_index}/{self.phase_count}: "
                    f"{self.phase or '-'}   {elapsed:.0f}s",
                    style="bold",
                ),
                table,
            ]
            parts += [Text(g, style="dim") for g in self.gates]
            parts += [Text(m, style="yellow") for m in self.messages[-3:]]
            return Group(*parts)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        from rich.live import Live

        with Live(
            console=self.console,
            get_renderable=self.renderable,
            refresh_per_second=4,
            transient=False,
        ):
            yield


def make_view() -> Any:
    """The live view on a terminal, plain lines otherwise."""
    return LiveView() if sys.stderr.isatty() else LineView()


def print_recap(result: RunResult, fleet: Fleet, log_path: Path | None) -> None:
    """ok / changed / skipped / failed per host, total time, and what to do next (stderr)."""
    from rich.table import Table

    from tealeaf_fleet.cli.common import console
    from tealeaf_fleet.secrets import redact

    err = console(stderr=True)
    table = Table(
        title=f"{result.command}: {result.outcome} in {result.duration_s:.1f}s"
        + (f" (run {result.run_id})" if result.run_id else ""),
        title_justify="left",
    )
    for column in ("Host", "Role", "ok", "changed", "skipped", "failed"):
        table.add_column(
            column, justify="right" if column in ("ok", "changed", "skipped", "failed") else "left"
        )
    order = ["controller", *fleet.hosts]
    for name, counts in sorted(
        result.recap.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 0
    ):
        role = fleet.hosts[name].role if name in fleet.hosts else "-"
        table.add_row(
            name, role, *(str(counts.get(k, 0)) for k in ("ok", "changed", "skipped", "failed"))
        )
    err.print(table)
    if result.blockers:
        err.print("[bold red]Preflight blockers (nothing was changed):[/bold red]")
        for host, items in result.blockers.items():
            for item in items:
                err.print(f"  {host}: {redact(item)}", markup=False)
    if result.workstations:
        err.print("[bold red]RTV workstations not finished (the servers are done):[/bold red]")
        for host, why in result.workstations.items():
            err.print(f"  {host}: {redact(why)}", markup=False)
    if result.message:
        err.print(
            redact(result.message),
            markup=False,
            style="bold red" if result.outcome != "ok" else None,
        )
    if result.hint:
        err.print("next: " + redact(result.hint), markup=False)
    if log_path:
        err.print(
            f"journal: {log_path.parent / 'journal.sqlite'}; run log: {log_path}", markup=False
        )
