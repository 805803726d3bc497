"""`fleet logs INVENTORY [--since TIME] --out FILE.zip`: a support bundle (bundle.py says what
is in it). Read-only on every host. Progress per host on stderr, then where the zip is and
what was cut to stay within the per-host bound. Exit 0 when every host was read, 1 when one
could not be (the zip is written either way), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tealeaf_fleet.cli.common import add_forks_argument, add_inventory_argument, bounded_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        help="a support bundle (zip): Data Service log lines, TeaLeaf Application events, "
        "facts and this tool's run logs, secrets masked",
        description="Collect, read-only, per Windows host: the Data Service log lines since "
        "--since (startup blocks always), the Application event log entries naming TeaLeaf, "
        "the facts; and this tool's run logs. Secrets are masked; each host's log text is "
        "bounded (--max-kb) and the output says where it was cut.",
    )
    add_inventory_argument(p)
    p.add_argument(
        "--since",
        metavar="TIME",
        help="an age (30m, 12h, 7d) or a host-local time (2026-12-01T08:00); default 24h",
    )
    p.add_argument("--out", metavar="FILE.zip", required=True, help="the zip to write")
    p.add_argument(
        "--max-kb",
        type=bounded_int(16, 1024 * 1024),
        default=1024,
        metavar="N",
        help="Data Service log text kept per host, in KiB (default 1024)",
    )
    add_forks_argument(p, default=8, what="read")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="journal folder whose run logs go in (default: .tealeaf-fleet/ next to the inventory)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet import bundle
    from tealeaf_fleet.cli.common import check_output_path, load_fleet_or_exit
    from tealeaf_fleet.journal import default_state_dir
    from tealeaf_fleet.safeio import write_file
    from tealeaf_fleet.secrets import redact

    since = bundle.parse_since(args.since)
    check_output_path(Path(args.out))
    fleet = load_fleet_or_exit(args.inventory, connects=True)
    pfx_note = _known_pfx_password(fleet)
    if pfx_note:
        print(f"note: {pfx_note}", file=sys.stderr, flush=True)

    def progress(part: bundle.HostPart) -> None:
        state = f"not read: {part.error}" if part.error else "collected"
        if part.cut:
            state += "; " + "; ".join(part.cut)
        print(redact(f"{part.name}: {state}"), file=sys.stderr, flush=True)

    parts = bundle.gather(
        fleet, since, max_bytes=args.max_kb * 1024, forks=args.forks, on_progress=progress
    )
    folder = Path(args.state_dir) if args.state_dir else default_state_dir(args.inventory)
    controller = bundle.controller_files(folder, since)
    files = {"MANIFEST.txt": bundle.manifest(fleet, since, parts, controller, pfx_note=pfx_note)}
    for part in parts:
        files.update(part.files)
    files.update(controller)
    data = bundle.zip_bytes(files)
    write_file(args.out, data, field="--out", mode=0o600)
    cut = [p.name for p in parts if p.cut]
    failed = [p.name for p in parts if p.error]
    print(
        f"support bundle written to {args.out} ({len(data) // 1024} KiB, {len(parts)} host(s), "
        f"since {since.label})"
        + (f"; cut to stay within the bound: {', '.join(cut)}" if cut else "")
        + (f"; NOT READ: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


def _known_pfx_password(fleet) -> str | None:
    """Load the PFX password when its source is set, so `redact` knows it too (a TLSTool line
    in a log may hold it). When it cannot be loaded here, the note that says so (the bundle
    then masks it only where it is written like a password, `password=...`)."""
    from tealeaf_fleet.errors import InputError

    try:
        fleet.pfx_password()
    except InputError as exc:
        return (
            f"the PFX password was not loaded for masking ({exc.message}); it is masked only "
            "where written as password=/pwd:/pass:"
        )
    return None
