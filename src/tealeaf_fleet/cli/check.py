"""`fleet check INVENTORY [--json] [--out FILE.md] [--forks N]`: prove, read-only, on every
Windows host each remote mechanism a rollout uses, before the change window.

Renders a `tealeaf_fleet.check.FleetCheck` (the judgement lives in `check_rules`): a table with
one row per host, then every line that is not ok with what to do; `--json` prints one JSON
document instead; `--out FILE.md` also writes the Markdown change-ticket attachment (a summary
at the top, then every host's lines with their evidence). Progress goes to stderr. Exit 0 when
every mechanism works on every host (warnings allowed), 1 when one fails or cannot be proven
anywhere, 2 for bad input. rich and the core are imported inside the handler, as elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tealeaf_fleet import limit
from tealeaf_fleet.cli.common import add_forks_argument, add_inventory_argument

if TYPE_CHECKING:
    from rich.console import Console

    from tealeaf_fleet.check import FleetCheck, HostCheck

VERDICT_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "unknown": "red"}
_CELL: dict[str, object] = {"no_wrap": True, "overflow": "ellipsis"}


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser(
        "check",
        help="prove read-only, per Windows host, every remote mechanism a rollout uses",
        description="Read-only: per Windows host, the login and its encryption, the shell, "
        "the stdin framing and end of file, PowerShell and its language mode, .NET, FIPS, "
        "the OS and pending reboots, the install folder, the Tealeaf build, TLSTool.exe and "
        "openssl.exe, the TeaLeaf services, the Data Service log, a write to Tools, the "
        "restart mutex, clock skew and free disk, each with its evidence. The only write: "
        "a temporary file in Tools (or the install folder while Tools does not exist yet), "
        "deleted at once. Exit 0 every mechanism works (warnings "
        "allowed), 1 one fails or cannot be proven, 2 bad input.",
    )
    add_inventory_argument(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (every line)"
    )
    p.add_argument(
        "--out",
        metavar="FILE.md",
        help="also write the result as Markdown, for the change ticket",
    )
    add_forks_argument(p, default=8, what="checked")
    limit.add_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet import check as core
    from tealeaf_fleet.cli.common import (
        check_output_path,
        console,
        load_fleet_or_exit,
        write_output,
    )
    from tealeaf_fleet.cli.status import _Progress
    from tealeaf_fleet.secrets import redact

    fleet = limit.select(load_fleet_or_exit(args.inventory), args.limit)
    if args.out:
        check_output_path(Path(args.out))  # before minutes of work, not after
    err = console(stderr=True)
    with _Progress(err, len(fleet.windows_hosts()), label="checking") as advance:
        result = core.gather(fleet, forks=args.forks, on_progress=advance)
    if args.out:
        write_output(render_markdown(result), args.out)
        err.print(f"Markdown written to {args.out}", markup=False, soft_wrap=True)
    if args.json:
        sys.stdout.write(redact(json.dumps(result.to_dict(), indent=2)) + "\n")
        sys.stdout.flush()
    else:
        render(console(), result)
    return result.exit_code


# --- terminal -----------------------------------------------------------------------------------


def _os_and_ps(host: HostCheck) -> tuple[str, str]:
    from tealeaf_fleet.cli.status import _os

    facts = host.facts or {}
    ps = (host.check or {}).get("powershell") or {}
    version = ps.get("version") if isinstance(ps, dict) else None
    return (_os(facts) if facts else "?"), str(version or facts.get("ps_version") or "?")


def render(console: Console, result: FleetCheck) -> None:
    """One row per host, every line that is not ok with what to do, then the verdict."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="fleet check: the remote mechanisms of a rollout, read-only",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for header in ("host", "role", "OS", "PS", "ok", "warn", "fail", "unknown"):
        table.add_column(header, **_CELL)
    table.add_column("not ok", overflow="fold")
    for host in result.hosts:
        if not host.contacted:
            table.add_row(host.name, host.role, "-", "-", "", "", "", "", "not contacted")
            continue
        os_name, ps = _os_and_ps(host)
        counts = [str(host.count(v) or "") for v in ("ok", "warn", "fail", "unknown")]
        names = host.not_ok_names()
        # OS caption and PS version come from the host: Text, never rich markup
        table.add_row(
            host.name,
            host.role,
            Text(os_name),
            Text(ps),
            *counts,
            Text(names),
            style=_row_style(host.worst),
        )
    console.print(table)
    attention = [h for h in result.checked if h.not_ok]
    if attention:
        console.print("\nNot ok, and what to do:")
    for host in attention:
        _print_not_ok(console, host)
    style = "bold green" if result.works else "bold red"
    console.print(Text("\n" + result.summary(), style=style))


def _row_style(worst: str) -> str | None:
    return {"fail": "red", "unknown": "red", "warn": "yellow"}.get(worst)


def _print_not_ok(console: Console, host: HostCheck) -> None:
    from rich.text import Text

    lines = host.not_ok
    login_failed = lines and lines[0].mechanism == "login" and lines[0].verdict == "fail"
    shown = lines[:1] if login_failed else lines
    for line in shown:
        head = Text(f"  {host.name} ", style="bold")
        head.append(f"{line.title}: ")
        head.append(line.verdict.upper(), style=VERDICT_STYLE.get(line.verdict, ""))
        head.append(f"  {line.evidence}")
        console.print(head)
        if line.action:
            console.print(Text(f"      do: {line.action}"))
    if login_failed and len(lines) > 1:
        console.print(
            Text(f"      the other {len(lines) - 1} mechanisms: unknown ({lines[1].evidence})")
        )


# --- markdown -----------------------------------------------------------------------------------


def render_markdown(result: FleetCheck) -> str:
    """The change-ticket attachment: the verdict and a summary first, then per host every
    line with its evidence. Every cell is escaped and redacted (`render._md`)."""
    from tealeaf_fleet import __version__
    from tealeaf_fleet.cli.render import _md

    out = [
        "# fleet check",
        "",
        "Read-only proof, per Windows host, of every remote mechanism the rollout uses "
        f"(tealeaf-fleet {__version__}). The only write on a host: a temporary file in "
        "Tools (or in the install folder while Tools does not exist yet; the line names the "
        "file), deleted before the check answered.",
        "",
        f"- Inventory: `{_md(result.inventory)}`",
        f"- Checked: {result.started_at} (controller clock, UTC), in {result.elapsed_s:.1f} s",
        f"- Result: **{_md(result.summary())}** (exit {result.exit_code})",
        "",
        "## Summary",
        "",
        "| host | role | OS | PowerShell | ok | warn | fail | unknown | not ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for host in result.hosts:
        if not host.contacted:
            out.append(f"| {_md(host.name)} | {host.role} | - | - | | | | | not contacted |")
            continue
        os_name, ps = _os_and_ps(host)
        counts = " | ".join(str(host.count(v)) for v in ("ok", "warn", "fail", "unknown"))
        names = host.not_ok_names()
        out.append(
            f"| {_md(host.name)} | {host.role} | {_md(os_name)} | {_md(ps)} | {counts} | {names} |"
        )
    for host in result.hosts:
        out += ["", f"## {_md(host.name)} ({host.role}, {_md(host.address)})", ""]
        if not host.contacted:
            out.append(_md(host.note))
            continue
        out += ["| mechanism | verdict | evidence | what to do |", "|---|---|---|---|"]
        for line in host.lines:
            shown = line.verdict if line.verdict == "ok" else f"**{line.verdict.upper()}**"
            out.append(
                f"| {_md(line.title)} | {shown} | {_md(line.evidence)} | {_md(line.action)} |"
            )
    return "\n".join(out) + "\n"
