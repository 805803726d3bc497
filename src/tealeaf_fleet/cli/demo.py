"""`fleet demo`: the newcomer's first run, in about a minute, with nothing to set up.

It starts a simulated fleet on 127.0.0.1 (the lab: real WinRM, real TLS, real files), runs
`fleet check` (every remote mechanism, read-only) and shows its summary, shows the
plan, runs the rollout through the very same engine as production, shows `fleet status`, rolls
back, shows the status again, writes the rollout's HTML report (`fleet report`) and says where,
stops the lab and removes its folder (unless `--keep`; the report is written outside it then),
then says what to try next. Why a command and not a script: it is the shortest proof that the
tool works on this machine, and it exercises every layer a real change would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tealeaf_fleet.cli.common import bounded_float, bounded_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="check + rollout + status + rollback on a simulated fleet (about a minute, "
        "nothing to set up)",
        description="Start a lab on 127.0.0.1, check every remote mechanism (read-only), "
        "show the plan, roll TLS out, show status, roll back, show status, clean up.",
    )
    p.add_argument("--dir", metavar="DIR", help="lab folder (default: a temporary folder)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the lab folder (inventory, journal, events) afterwards",
    )
    p.add_argument(
        "--topology",
        default="portal=1,hbr=2,canister=3,pca=1,rtv=1",
        help="hosts per role (default portal=1,hbr=2,canister=3,pca=1,rtv=1)",
    )
    p.add_argument(
        "--restart-s",
        type=bounded_float(0, 3600),
        default=0.5,
        metavar="S",
        help="simulated service restart time (default 0.5)",
    )
    p.add_argument(
        "--soak-s",
        type=bounded_int(0, 86_400),
        default=1,
        metavar="S",
        help="soak after each restart (default 1)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON Lines events of both runs on stdout instead of the tables",
    )
    p.add_argument(
        "--report",
        metavar="FILE.html",
        help="where to write the rollout's HTML report (default: report.html in a kept lab "
        "folder, else a new file in the temporary folder)",
    )
    p.set_defaults(handler=run)


def set_soak(inventory: Path, soak_s: int) -> None:
    """The lab writes `soak_s: 1`; the demo may choose another (kept a plain line edit so the
    inventory stays exactly what `fleet lab up` writes otherwise)."""
    text = inventory.read_text(encoding="utf-8")
    lines = [
        f"  soak_s: {soak_s}" if line.strip().startswith("soak_s:") else line
        for line in text.splitlines()
    ]
    inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet.check import gather as check_fleet
    from tealeaf_fleet.cli.common import check_output_path, console
    from tealeaf_fleet.cli.render import print_summary
    from tealeaf_fleet.cli.rollout import run_plan
    from tealeaf_fleet.cli.status import render as render_status
    from tealeaf_fleet.inventory import load_fleet
    from tealeaf_fleet.lab.fleet import Lab, parse_topology
    from tealeaf_fleet.plan import build_plan
    from tealeaf_fleet.playbooks import load_playbook
    from tealeaf_fleet.status import gather

    if args.report:  # a minute of work must not end on a folder that does not exist
        check_output_path(Path(args.report), field="--report")
    out = console(stderr=args.json)
    started = time.monotonic()
    temp = args.dir is None
    folder = Path(args.dir or tempfile.mkdtemp(prefix="fleet-demo-")).resolve()
    topology = parse_topology(args.topology)
    codes: dict[str, int] = {}
    consistent: dict[str, bool] = {}
    out.rule("1. a simulated Tealeaf fleet on 127.0.0.1")
    lab = Lab.start(folder, topology=topology, restart_s=args.restart_s)
    try:
        set_soak(lab.inventory, args.soak_s)
        out.print(
            f"lab with {len(lab.roles)} hosts in {folder} (inventory: {lab.inventory})",
            markup=False,
            soft_wrap=True,
        )
        fleet = load_fleet(lab.inventory)
        out.rule("2. fleet check: every remote mechanism a rollout uses, read-only")
        checked = check_fleet(fleet, forks=10)
        codes["check"] = checked.exit_code
        out.print(f"fleet check: {checked.summary()}", markup=False, soft_wrap=True)
        state_dir = folder / ".tealeaf-fleet"
        for step, command in ((3, "rollout"), (5, "rollback")):
            plan = build_plan(load_playbook(command), fleet)
            out.rule(f"{step}. fleet {command}: the plan, then the run")
            if not args.json:
                print_summary(plan, out, inventory=str(lab.inventory))
            codes[command] = run_plan(
                fleet,
                plan,
                command=command,
                inventory_label=str(lab.inventory),
                state_dir=state_dir,
                forks=10,
                as_json=args.json,
            )
            out.rule(f"{step + 1}. fleet status after the {command}")
            status = gather(fleet, forks=10)
            consistent[command] = status.consistent
            if not args.json:
                render_status(out, status)
            if codes[command] != 0:
                break
        if "rollout" in codes:
            report_path = _write_report(args, fleet, state_dir, folder, kept=not temp or args.keep)
            out.rule("7. the rollout's evidence for the change ticket")
            out.print(
                f"HTML report of the rollout written to {report_path} (open it in a browser; "
                f"`fleet report {lab.inventory}` prints it as Markdown)",
                markup=False,
                soft_wrap=True,
            )
    finally:
        lab.stop()
        if temp and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.monotonic() - started
    ok = all(code == 0 for code in codes.values()) and len(codes) == 3 and all(consistent.values())
    out.rule("done" if ok else "the demo did not finish cleanly")
    summary = ", ".join(f"{c}: exit {code}" for c, code in codes.items())
    out.print(
        f"{summary}; status consistent after each: "
        f"{', '.join(f'{k}={v}' for k, v in consistent.items())}; {elapsed:.0f}s in all",
        markup=False,
        soft_wrap=True,
    )
    kept = folder if (args.keep or not temp) else None
    _next_steps(out, kept)
    return 0 if ok else 1


def _write_report(args, fleet, state_dir: Path, folder: Path, *, kept: bool) -> Path:
    """The rollout run's HTML report: in the lab folder when it stays, else next to it (the
    folder is removed at the end)."""
    from tealeaf_fleet.cli.report import write_report
    from tealeaf_fleet.journal import Journal

    if args.report:
        path = Path(args.report)
    elif kept:
        path = folder / "report.html"
    else:
        fd, name = tempfile.mkstemp(prefix="fleet-demo-report-", suffix=".html")
        os.close(fd)
        path = Path(name)
    with Journal(state_dir) as journal:
        run_id = next((r.id for r in journal.runs() if r.command == "rollout"), None)
    write_report(fleet, state_dir, run_id=run_id, fmt="html", out=str(path))
    return path


def _next_steps(out, kept: Path | None) -> None:
    lab = "/tmp/fleet-lab"
    lines = [
        "What to try next:",
        f"  fleet lab up --dir {lab}                      # a lab that stays up (Ctrl-C stops)",
        f"  fleet check {lab}/inventory.yaml --out check.md   # proof per host, for the ticket",
        f"  fleet plan {lab}/inventory.yaml --format markdown   # the change-ticket view",
        f"  fleet rollout {lab}/inventory.yaml --dry-run",
        f"  echo '{{\"service_start_fails\": true}}' > {lab}/hosts/can02/faults.json",
        f"  fleet rollout {lab}/inventory.yaml --yes      # halts safely at can02",
        f"  echo '{{}}' > {lab}/hosts/can02/faults.json; fleet rollout {lab}/inventory.yaml "
        "--yes   # resumes",
        f"  fleet status {lab}/inventory.yaml; fleet history {lab}/inventory.yaml",
        f"  fleet report {lab}/inventory.yaml --out report.html   # the change's evidence",
        f"  echo '{{\"ssl_cache_stale\": true}}' > {lab}/hosts/can01/faults.json",
        f"  fleet troubleshoot {lab}/inventory.yaml               # finds it; --fix ssl-cache "
        "--yes cures it",
        f"  fleet logs {lab}/inventory.yaml --out support.zip     # a support bundle",
    ]
    if kept:
        lines.insert(1, f"  (this demo's lab folder was kept: {kept})")
    for line in lines:
        out.print(line, markup=False, soft_wrap=True)
    sys.stderr.flush()
