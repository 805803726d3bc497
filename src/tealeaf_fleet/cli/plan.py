"""`fleet plan`: the dry run a change board approves. Opens no network connection (unless
`--facts`, which only reads), changes nothing, prints the plan as a table, Markdown or JSON.

`--scripts DIR` writes out every packaged PowerShell script, so a reviewer reads exactly what
will run on the servers. Heavy modules (rich, the planner's dependencies, facts gathering) are
imported inside the handler, so that `fleet --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tealeaf_fleet import limit
from tealeaf_fleet.cli import archiveflags
from tealeaf_fleet.cli.common import add_inventory_argument
from tealeaf_fleet.errors import InputError

if TYPE_CHECKING:
    from tealeaf_fleet.estimate import Window
    from tealeaf_fleet.inventory import Fleet
    from tealeaf_fleet.plan import Plan
    from tealeaf_fleet.playbooks import Playbook

FORMATS = ("table", "markdown", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="show what a playbook would do, host by host (changes nothing)",
        description="Compile a playbook and an inventory into a plan: phases in order, per host "
        "the actions, their impact and why a host is left out; plus a digest that "
        "`fleet rollout --approved-plan` checks. Connects to nothing unless --facts.",
    )
    add_inventory_argument(p)
    p.add_argument(
        "--playbook",
        default="rollout",
        metavar="NAME|FILE",
        help="packaged playbook name (rollout, rollback, prepare, status) or a "
        "playbook file (default: rollout)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="table (default on a terminal), markdown (change tickets) or json "
        "(default with --out FILE.json)",
    )
    p.add_argument("--out", metavar="FILE", help="write the plan to FILE instead of stdout")
    p.add_argument(
        "--scripts",
        metavar="DIR",
        help="also write every PowerShell script the tool can run into DIR",
    )
    p.add_argument(
        "--facts",
        action="store_true",
        help="connect read-only to every Windows host first, mark steps that are already done "
        "and judge the preflight as the run would (exit 3 on a blocker; the plan is still "
        "written, marked blocked)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state folder whose certificate archive --certificate-from-archive reads and whose "
        "journal's pending reboots --facts reports (default: .tealeaf-fleet/ next to the "
        "inventory)",
    )
    archiveflags.add_arguments(p)
    limit.add_argument(p)
    p.set_defaults(handler=run)


def choose_format(fmt: str | None, out: str | None) -> str:
    """Explicit --format wins; else by --out's suffix; else table."""
    if fmt:
        return fmt
    if out and out.endswith(".json"):
        return "json"
    if out and out.endswith((".md", ".markdown")):
        return "markdown"
    return "table"


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet.cli.common import console, load_fleet_or_exit, write_output
    from tealeaf_fleet.cli.render import print_table, render
    from tealeaf_fleet.plan import build_plan
    from tealeaf_fleet.playbooks import load_playbook

    whole = archiveflags.apply(args, load_fleet_or_exit(args.inventory, connects=args.facts))
    fleet = limit.select(whole, args.limit)
    playbook = load_playbook(args.playbook)
    if args.facts:
        limit.check_partial_tls(
            whole, fleet, playbook, read_facts=facts_or_errors, pfx_sha256=_pfx_fingerprint(fleet)
        )
        plan = plan_with_facts(playbook, fleet, args.state_dir)
    else:
        if limit.left_out_servers(whole, fleet, playbook):
            print(
                "fleet: warning: --limit leaves Tealeaf servers out of a playbook that switches "
                "TLS: the run refuses unless every one left out is already in its end state "
                "(TLS cannot be switched on part of a fleet); --facts checks it now",
                file=sys.stderr,
            )
        new = new_certificate(fleet) if playbook.rotation else None
        plan = build_plan(playbook, fleet, new_certificate=new)
    window = plan_window(plan, whole, args.state_dir)
    fmt = choose_format(args.format, args.out)
    if fmt == "table" and args.out is None and sys.stdout.isatty():
        print_table(plan, console(), window)
    else:
        write_output(
            render(plan, fmt, window=window, inventory=args.inventory, limit=args.limit),
            args.out,
        )
    if args.scripts:
        written = write_scripts(Path(args.scripts))
        print(f"fleet: wrote {len(written)} scripts to {args.scripts}", file=sys.stderr)
    if args.out:
        print(f"fleet: plan {plan.digest[:12]} written to {args.out}", file=sys.stderr)
    return blocked_exit(plan)


def blocked_exit(plan: Plan) -> int:
    """3 (PreflightError's code) when the plan's preflight judgement found a blocker, saying
    so on stderr with the hosts; else 0."""
    from tealeaf_fleet.errors import PreflightError

    if not plan.preflight.get("blocked"):
        return 0
    hosts = sorted(
        {h for f in plan.preflight["findings"] if f["severity"] == "blocker" for h in f["hosts"]}
    )
    print(
        f"fleet: error: preflight would block on {len(hosts)} host(s): {', '.join(hosts)} "
        "(the plan lists every finding; the plan is marked blocked)",
        file=sys.stderr,
    )
    return PreflightError.exit_code


def plan_with_facts(playbook: Playbook, fleet: Fleet, state_dir: str | None) -> Plan:
    """The plan built over fresh facts (read-only), the existing PFX's fingerprint and the
    journal's pending reboots: the same inputs the run's preflight judges by. One recipe for
    `plan --facts`, `rollout --dry-run` and an approved plan's check."""
    from tealeaf_fleet.journal import default_state_dir, reboot_records_at
    from tealeaf_fleet.plan import build_plan
    from tealeaf_fleet.status import probe_tls12

    unread: dict[str, str] = {}
    facts = gather_facts(fleet, unread)
    folder = Path(state_dir) if state_dir else default_state_dir(fleet.path)
    return build_plan(
        playbook,
        fleet,
        facts,
        _pfx_fingerprint(fleet),
        new_certificate=new_certificate(fleet),
        reboot_records=reboot_records_at(folder),
        unread=unread,
        tls12_probes=probe_tls12(fleet, facts),
    )


def gather_facts(fleet: Fleet, unread: dict[str, str] | None = None) -> dict[str, dict]:
    """Raw facts per Windows host, read-only, from `tealeaf_fleet.ops.facts.collect`.

    A host that cannot be read (its value is a RemoteError: unreachable, login refused, a
    failing facts script) is left out with a warning on stderr naming the host, the error class
    and its hint: its steps are planned as if nothing were done there (a plan never skips a step
    on a guess), and the facts digest records that it was not read (so an approved plan turns
    stale once the host answers). One bad host does not stop the plan of the others.
    """
    from tealeaf_fleet.ops import facts as facts_module
    from tealeaf_fleet.secrets import redact

    raw: dict[str, dict] = {}
    for name, result in facts_module.collect(fleet).items():
        if isinstance(result, BaseException):
            if unread is not None:
                unread[name] = redact(describe_error(result))
            print(
                f"fleet: warning: {name}: facts not read: {redact(describe_error(result))}; "
                "its steps are planned as if nothing were done there",
                file=sys.stderr,
            )
            continue
        raw[name] = dict(result)
    return raw


def plan_window(plan: Plan, fleet: Fleet, state_dir: str | Path | None = None) -> Window:
    """The change window of `plan`: the inventory's timings, and the durations measured in
    earlier runs where the journal (read-only, if there is one) has them."""
    from tealeaf_fleet.estimate import estimate, measured_durations
    from tealeaf_fleet.journal import default_state_dir

    folder = Path(state_dir) if state_dir else default_state_dir(fleet.path)
    measured = measured_durations(folder / "journal.sqlite", [h.name for h in plan.hosts])
    return estimate(plan, fleet, measured=measured)


def facts_or_errors(fleet: Fleet) -> dict[str, Any]:
    """Raw facts per Windows host, or the text of why a host could not be read (for rules
    that must count an unread host as a problem, as `limit.check_partial_tls` does)."""
    from tealeaf_fleet.ops import facts as facts_module

    return {
        name: describe_error(result) if isinstance(result, BaseException) else dict(result)
        for name, result in facts_module.collect(fleet).items()
    }


def describe_error(exc: BaseException) -> str:
    """`Class: message (hint: ...)`: the class tells unreachable from refused login at a glance
    (FleetError's own str() repeats the host, which the caller already names)."""
    message = getattr(exc, "message", None) or str(exc)
    hint = getattr(exc, "hint", None)
    return f"{type(exc).__name__}: {message}" + (f" (hint: {hint})" if hint else "")


def _pfx_fingerprint(fleet: Fleet) -> str | None:
    """The fleet certificate's SHA-256 when the PFX already exists (else None: generated later).
    Steps whose facts show that certificate imported then become skips."""
    if not fleet.certificate.path.is_file() or fleet.certificate.source == "tlstool":
        return None
    from tealeaf_fleet.certs import certificate_for

    pfx, _data = certificate_for(fleet, create=False)
    return pfx.sha256


def new_certificate(fleet: Fleet) -> dict[str, str] | None:
    """{sha256, not_before, not_after} of the inventory's PFX for the plan's validity table;
    None when it does not exist yet or cannot be opened here (the plan then shows only what
    is installed; the run itself refuses an unusable PFX)."""
    from tealeaf_fleet.certs import load_pfx
    from tealeaf_fleet.errors import CertificateError
    from tealeaf_fleet.safeio import MAX_INPUT_BYTES, read_regular_file

    path = fleet.certificate.path
    if not path.is_file():
        return None
    try:
        data = read_regular_file(path, MAX_INPUT_BYTES, "PFX")
        pfx = load_pfx(data, fleet.pfx_password(), name=str(path))
    except (CertificateError, InputError):
        return None
    fmt = "%Y-%m-%dT%H:%M:%S"
    return {
        "sha256": pfx.sha256,
        "not_before": pfx.certificate.not_valid_before_utc.strftime(fmt),
        "not_after": pfx.certificate.not_valid_after_utc.strftime(fmt),
    }


def script_files() -> list[tuple[str, bytes]]:
    """Every packaged `.ps1` (name, bytes), listed from the package resource folder."""
    from importlib import resources

    folder = resources.files("tealeaf_fleet.ops") / "scripts"
    if not folder.is_dir():
        return []
    return sorted(
        (entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.name.endswith(".ps1") and entry.is_file()
    )


def write_scripts(target: Path) -> list[Path]:
    """Copy the packaged scripts byte for byte into `target` (created when missing). Each file
    is written like `--out` (`safeio.write_file`): a regular file is replaced atomically, a
    device or FIFO in its place is written through or refused, never replaced."""
    from tealeaf_fleet.safeio import write_file

    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder", field="--scripts")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot write scripts to {target}: {exc.strerror}", field="--scripts"
        ) from None
    written = []
    for name, data in script_files():
        path = target / name
        write_file(path, data, field="--scripts")
        written.append(path)
    return written
