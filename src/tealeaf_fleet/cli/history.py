"""`fleet history INVENTORY [RUN_ID]`: past runs from the journal, or one run's steps.

Why: after a change window the operator (and the auditor) asks what ran, when, by whom, against
which plan digest, how it ended and where it halted. The journal has all of it; this only reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tealeaf_fleet.cli.common import add_inventory_argument, bounded_int
from tealeaf_fleet.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history",
        help="past rollout/rollback runs from the journal",
        description="List past runs (newest first), or the steps of one run.",
    )
    add_inventory_argument(p)
    p.add_argument(
        "run_id",
        nargs="?",
        type=bounded_int(1, 2**63 - 1),  # SQLite's INTEGER: a larger id would crash the query
        metavar="RUN_ID",
        help="show this run's steps",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="journal folder (default: .tealeaf-fleet/ next to the inventory)",
    )
    p.add_argument(
        "--limit", type=bounded_int(1, 100_000), default=20, help="runs to list (default 20)"
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.set_defaults(handler=run)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet.journal import Journal, default_state_dir

    folder = Path(args.state_dir) if args.state_dir else default_state_dir(args.inventory)
    if not (folder / "journal.sqlite").exists():
        if args.json:
            print(json.dumps({"runs": []}))
        else:
            print(f"no runs recorded yet in {folder}", file=sys.stderr)
        return 0
    with Journal(folder) as journal:
        if args.run_id is None:
            runs = journal.runs(args.limit)
            if args.json:
                print(json.dumps({"runs": [r.to_json() for r in runs]}, indent=2))
                return 0
            _print_runs(runs)
            return 0
        record = journal.run(args.run_id)
        if record is None:
            raise InputError(f"no run {args.run_id} in {folder / 'journal.sqlite'}", field="RUN_ID")
        steps = journal.steps(args.run_id)
        if args.json:
            print(
                json.dumps(
                    {"run": record.to_json(), "steps": [s.to_json() for s in steps]}, indent=2
                )
            )
            return 0
        _print_run(record, steps, journal.log_path(args.run_id))
    return 0


def _print_runs(runs: list) -> None:
    from rich.table import Table
    from rich.text import Text

    from tealeaf_fleet.cli.common import console

    table = Table(title="runs (newest first)", title_justify="left")
    for col in ("Run", "Command", "Started", "Duration", "State", "User", "Plan", "Message"):
        table.add_column(col, overflow="fold")
    for r in runs:
        duration = f"{r.finished - r.started:.0f}s" if r.finished else "-"
        cells = (
            str(r.id),
            r.command,
            _when(r.started),
            duration,
            r.state,
            r.user or "-",
            (r.plan_digest or "-")[:12],
            r.message or "",
        )
        table.add_row(*(Text(c) for c in cells))  # journal text is data, never rich markup
    console().print(table)


def _print_run(record, steps: list, log_path: Path) -> None:
    from rich.table import Table
    from rich.text import Text

    from tealeaf_fleet.cli.common import console

    out = console()
    out.print(
        f"run {record.id}: {record.command} {record.inventory_path or ''} - "
        f"{record.state}, started {_when(record.started)} by {record.user or '?'} on "
        f"{record.controller or '?'}; plan {record.plan_digest or '-'}",
        markup=False,
    )
    if record.message:
        out.print(record.message, markup=False)
    table = Table(title_justify="left")
    for col in ("Phase", "Host", "Action", "Outcome", "Seconds", "Message"):
        table.add_column(col, overflow="fold")
    for s in steps:
        secs = f"{s.finished - s.started:.1f}" if s.finished else "-"
        cells = (s.phase, s.host, s.action, s.outcome or "unfinished", secs, s.message or "")
        table.add_row(*(Text(c) for c in cells))
    out.print(table)
    out.print(f"run log: {log_path}", markup=False)
