"""`fleet troubleshoot INVENTORY [--fix ssl-cache|cryptsvc|reboot] [--limit NAMES] [--yes]`:
the vendor's troubleshooting checklist, one verdict line per item (read-only), then, when
asked, one fix run through the engine like a rollout (journaled, locked, resumable, and
reported by `fleet report`), and the checklist again.

Exit: 0 every item ok, 1 an item failed or could not be checked (or the fix failed), 2 bad
input; an interrupted fix exits as a rollout does (130 / 143).
"""

from __future__ import annotations

import argparse
import json
import sys

from tealeaf_fleet.cli.common import add_forks_argument, add_inventory_argument
from tealeaf_fleet.errors import InputError

FIX_HELP = {
    "ssl-cache": "empty the SChannel session cache (Internet Options' Clear SSL State), "
    "no desktop session needed",
    "cryptsvc": "restart Cryptographic Services (CryptSvc)",
    "reboot": "reboot the Tealeaf servers: HBRs one at a time, then Canisters one at a time, "
    "each healthy before the next, then the rest",
}


def register(sub: argparse._SubParsersAction) -> None:
    from tealeaf_fleet.troubleshoot import FIXES

    p = sub.add_parser(
        "troubleshoot",
        help="the vendor's troubleshooting checklist (read-only), then optionally one fix",
        description="Check, read-only: EnableTLS on every server, the certificate pair present "
        "and identical everywhere, the Data Service mode, the handshakes, the SSL session "
        "cache. With --fix, apply one remedy and check again: "
        + "; ".join(f"{k}: {v}" for k, v in FIX_HELP.items())
        + ".",
    )
    add_inventory_argument(p)
    p.add_argument("--fix", choices=FIXES, help="apply this remedy after the checklist")
    p.add_argument(
        "--limit",
        metavar="NAMES",
        help="only these hosts or roles (comma-separated, e.g. can01,can02 or hbr)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before a fix")
    add_forks_argument(p, default=10, what="worked on")
    p.add_argument("--json", action="store_true", help="the verdicts as one JSON document")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="journal and lock folder (default: .tealeaf-fleet/ next to the inventory)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet import status as fleet_status
    from tealeaf_fleet import troubleshoot as core
    from tealeaf_fleet.cli.common import load_fleet_or_exit

    fleet = core.limit_fleet(load_fleet_or_exit(args.inventory, connects=True), args.limit)
    current = fleet_status.gather(fleet, forks=args.forks, status_tool=False)
    verdicts = core.checklist(current)
    document: dict = {"checklist": [v.to_dict() for v in verdicts]}
    _show("checklist", verdicts, as_json=args.json)
    if not args.fix:
        if args.json:
            print(json.dumps(document, indent=2))
        return core.exit_code(verdicts)
    code = _fix(args, fleet, core.expects_tls(current))
    after = core.checklist(fleet_status.gather(fleet, forks=args.forks, status_tool=False))
    _show(f"checklist after --fix {args.fix}", after, as_json=args.json)
    if args.json:
        document.update(
            fix={"name": args.fix, "exit_code": code}, after=[v.to_dict() for v in after]
        )
        print(json.dumps(document, indent=2))
    return code or core.exit_code(after)


def _show(title: str, verdicts: list, *, as_json: bool) -> None:
    """The verdict lines (stderr under --json, which keeps stdout for the document)."""
    out = sys.stderr if as_json else sys.stdout
    print(f"{title}:", file=out)
    for verdict in verdicts:
        print(f"  {verdict.line()}", file=out)
    out.flush()


def _fix(args: argparse.Namespace, fleet, expect_tls: bool) -> int:
    from tealeaf_fleet import troubleshoot as core
    from tealeaf_fleet.cli.rollout import run_plan

    plan = core.fix_plan(fleet, args.fix, expect_tls=expect_tls)
    servers = [s["host"] for s in plan["phases"][0]["steps"]]
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError(
                "refusing to apply a fix without confirmation: stdin is not a terminal",
                field="--yes",
            )
        print(f"--fix {args.fix} ({FIX_HELP[args.fix]}) on {', '.join(servers)}.")
        print("Type 'yes' to go on: ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise InputError("fix not confirmed; nothing was changed")
    # the label is what "rerun `fleet troubleshoot LABEL` to resume" hints print
    label = f"{args.inventory} --fix {args.fix}" + (f" --limit {args.limit}" if args.limit else "")
    return run_plan(
        core.fix_fleet(fleet, args.fix),
        core.FixPlan(plan),
        command="troubleshoot",
        inventory_label=label,
        state_dir=args.state_dir,
        forks=args.forks,
        as_json=False,
    )
