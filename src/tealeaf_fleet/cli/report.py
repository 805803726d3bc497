"""`fleet report INVENTORY [RUN_ID] [--format markdown|html] [--out FILE]`: one run's evidence
for the change board, from the journal (default: the latest run). No host is contacted.

Markdown goes to stdout unless `--out`; HTML is one self-contained file (report/htmlpage.py).
The format defaults to html when `--out` ends in .html or .htm, else markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tealeaf_fleet.cli.common import add_inventory_argument, bounded_int
from tealeaf_fleet.errors import InputError

FORMATS = ("markdown", "html")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="a run's evidence (before/after per host, gates, findings, restart timeline) "
        "as Markdown or one HTML file",
        description="Write the evidence of one run (default: the latest) from the journal: "
        "who ran what and when, the approved plan digest, each host before and after, every "
        "gate, warnings and findings, and a timeline of the restart windows.",
    )
    add_inventory_argument(p)
    p.add_argument(
        "run_id",
        nargs="?",
        type=bounded_int(1, 2**63 - 1),
        metavar="RUN_ID",
        help="the run to report (default: the latest)",
    )
    p.add_argument("--format", choices=FORMATS, help="markdown or html (default: from --out)")
    p.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="journal folder (default: .tealeaf-fleet/ next to the inventory)",
    )
    p.set_defaults(handler=run)


def chosen_format(fmt: str | None, out: str | None) -> str:
    if fmt:
        return fmt
    if out and Path(out).suffix.lower() in (".html", ".htm"):
        return "html"
    return "markdown"


def write_report(fleet, state_dir: Path, *, run_id: int | None, fmt: str, out: str | None) -> int:
    """Build and write the report; returns the run id it describes. Shared with `fleet demo`."""
    from tealeaf_fleet.cli.common import write_output
    from tealeaf_fleet.journal import Journal
    from tealeaf_fleet.report import htmlpage, markdown, model

    if not (state_dir / "journal.sqlite").exists():
        raise InputError(f"no journal in {state_dir}: nothing has run yet", field="--state-dir")
    with Journal(state_dir) as journal:
        report = model.build(journal, fleet.hosts.values(), run_id)
    text = htmlpage.render(report) if fmt == "html" else markdown.render(report)
    write_output(text, out)
    return report.run.id


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet.cli.common import check_output_path, load_fleet_or_exit
    from tealeaf_fleet.journal import default_state_dir

    fleet = load_fleet_or_exit(args.inventory)
    if args.out and args.out != "-":
        check_output_path(Path(args.out))
    folder = Path(args.state_dir) if args.state_dir else default_state_dir(args.inventory)
    fmt = chosen_format(args.format, args.out)
    run_id = write_report(fleet, folder, run_id=args.run_id, fmt=fmt, out=args.out)
    if args.out and args.out != "-":
        print(f"report of run {run_id} ({fmt}) written to {args.out}", file=sys.stderr)
    return 0
