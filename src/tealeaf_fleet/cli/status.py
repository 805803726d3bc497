"""`fleet status INVENTORY [--json] [--forks N]`: the fleet's TLS state, read-only.

Renders a `tealeaf_fleet.status.FleetStatus`: one row per host, the findings below it. The
judgement lives in `tealeaf_fleet.status` (shared with the engine's verify phase and `fleet
demo`); this module only draws. Progress goes to stderr so that stdout stays the table, or with
`--json` exactly one JSON document. Exit 0 consistent, 1 not (a blocker, a certificate
expiring, a halted rotation), 2 bad input.

rich and the status core are imported inside the handler to keep `fleet --help` fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tealeaf_fleet import limit
from tealeaf_fleet.cli.common import (
    add_forks_argument,
    add_inventory_argument,
    bounded_int,
    colon_fp,
)

if TYPE_CHECKING:
    from rich.console import Console

    from tealeaf_fleet.status import FleetStatus, Handshake, HostStatus

CAPTION = (
    "TLS: the EnableTLS registry value; "
    "cert: certificate fingerprint prefix (! = not the reference); "
    "left: days until it ends; svc: TeaLeaf services running/installed; "
    "DS log: Data Service mode and port in its log; handshake: live, on the DS and TMS ports "
    "(and the Search Server's on Canisters)"
)

# One host is one line at 120 columns (a CI log, `| tee`): short headers, short values, and
# no wrapping except in the last column (a drifted host's two foreign fingerprints).
_CELL: dict[str, object] = {"no_wrap": True, "overflow": "ellipsis"}
COLUMNS: tuple[tuple[str, dict[str, object]], ...] = (
    ("host", {**_CELL, "max_width": 24}),
    ("role", _CELL),
    ("OS", _CELL),
    ("PS", _CELL),
    ("build", _CELL),
    ("TLS", _CELL),
    ("cert", _CELL),
    ("left", _CELL),
    ("tls.xml", _CELL),
    ("svc", _CELL),
    ("DS log", _CELL),
    ("handshake DS / TMS", {"overflow": "fold"}),
)
MAX_EXPIRY_DAYS = 36_500
OS_NAMES = {"6.1": "2008 R2", "6.2": "2012", "6.3": "2012 R2"}
SEVERITY_STYLE = {"blocker": "bold red", "warning": "yellow", "info": "dim"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show every host's TLS state and the drift between hosts",
        description="Read-only: per host EnableTLS, certificate fingerprint, server.tls.xml, "
        "TeaLeaf services, Data Service mode and a live TLS handshake to the Data "
        "Service and TMS ports; drift across hosts below. Exit 0 consistent, "
        "1 not (or a certificate ends within --expiry-days, or a rotation halted), 2 bad input.",
    )
    add_inventory_argument(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout (hosts, findings, consistent)",
    )
    add_forks_argument(p, default=8, what="read")
    p.add_argument(
        "--expiry-days",
        type=bounded_int(0, MAX_EXPIRY_DAYS),
        default=30,
        metavar="N",
        help="a certificate installed anywhere that ends within N days is a finding and makes "
        "the exit code 1 (default 30), e.g. for a scheduler or monitoring system",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state folder whose journal and archive tell a rotation in progress and the "
        "pending reboots (default: .tealeaf-fleet/ next to the inventory)",
    )
    limit.add_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tealeaf_fleet import status as core
    from tealeaf_fleet.certarchive import RotationUnknown, last_rotation
    from tealeaf_fleet.cli.common import console, load_fleet_or_exit
    from tealeaf_fleet.journal import default_state_dir, reboot_records_at

    fleet = limit.select(load_fleet_or_exit(args.inventory, connects=True), args.limit)
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir(fleet.path)
    unknown = None
    try:
        rotation = last_rotation(state_dir)
    except RotationUnknown as exc:  # the hosts can still be read: say what is not known
        rotation, unknown = None, str(exc)
    err = console(stderr=True)
    with _Progress(err, len(fleet.windows_hosts())) as advance:
        result = core.gather(
            fleet,
            forks=args.forks,
            on_progress=advance,
            reboot_records=reboot_records_at(state_dir),
            rotation=rotation,
            expiry_days=args.expiry_days,
        )
    if unknown is not None:
        result.findings.append(core.rotation_unknown(unknown))
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()
    else:
        render(console(), result)
    return result.exit_code


class _Progress:
    """A rich progress bar on stderr, advanced once per host whose answer arrived."""

    def __init__(self, console: Console, total: int, label: str = "reading facts") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("", total=total)

    def __enter__(self):
        self._bar.start()

        def advance(name: str, outcome: str = "ok") -> None:
            self._bar.update(self._task, advance=1, description=f"{name}: {outcome}")

        return advance

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


# --- rendering ----------------------------------------------------------------------------------


def status_tool_line(tool: dict[str, Any]) -> str:
    """One line on the Portal's `TealeafStatus -verbose` run (its output is in --json)."""
    present = tool.get("present")
    if present is None:
        return f"TealeafStatus -verbose not checked: {tool.get('error') or 'not run'}"
    if not present:
        return "TealeafStatus -verbose not checked: TealeafStatus.exe not found"
    code = tool.get("exit_code")
    if code is None:
        return f"TealeafStatus -verbose did not finish: {tool.get('error') or '?'}"
    return f"TealeafStatus -verbose exited {code}" + (" (ok)" if code == 0 else " (see findings)")


def render(console: Console, result: FleetStatus) -> None:
    """The table, then the findings, then the verdict."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="Tealeaf inter-process TLS",
        title_justify="left",
        caption=CAPTION,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    # The host name and the certificate identify a row: on a narrow output other columns give
    # way first, these two are never cut.
    must_show = {"host": max((len(h.name) for h in result.hosts), default=4), "cert": 12}
    for header, kwargs in COLUMNS:
        table.add_column(header, **kwargs, min_width=must_show.get(header))
    for host in result.hosts:
        cells = (Text(cell) for cell in _cells(host, result.reference_sha256))  # never markup
        table.add_row(*cells, style="red" if host.error else None)
    console.print(table)
    for host in result.hosts:
        if host.error:
            console.print(Text(f"{host.name}: not read: {host.error}", style="red"))
        elif host.role in ("pca", "rtv"):
            console.print(Text(f"{host.name}: {host.note}", style="dim"))
        if host.status_tool is not None:
            console.print(Text(f"{host.name}: {status_tool_line(host.status_tool)}"))
    ref = result.reference_sha256
    if ref:
        console.print(Text(f"reference certificate: {colon_fp(ref)} ({result.reference_source})"))
    certificates = result.certificates()
    if len(certificates) > 1 or result.rotation is not None:
        for cert in certificates:  # which hosts run which certificate
            where = [
                f"{how} {', '.join(cert[how])}" for how in ("installed", "presented") if cert[how]
            ]
            console.print(Text(f"  certificate {cert['sha256'][:12]}: {'; '.join(where)}"))
    for line in _expiry_lines(result):
        console.print(Text(line))
    if result.rotation is not None and result.rotation.in_progress:
        console.print(
            Text(
                f"rotation in progress: run {result.rotation.run} ({result.rotation.state}) to "
                f"{colon_fp(result.rotation.new_sha256)}",
                style="yellow",
            )
        )
    if result.findings:
        console.print("\nFindings:")
        for f in sorted(
            result.findings,
            key=lambda f: (
                ("blocker", "warning", "info").index(f.severity)
                if f.severity in SEVERITY_STYLE
                else 9
            ),
        ):
            who = ", ".join(f.hosts) if f.hosts else "fleet"
            line = Text(f"  {f.severity.upper():8} ", style=SEVERITY_STYLE.get(f.severity, ""))
            line.append(f"[{f.code}] {who}: {f.message}")
            console.print(line)
    blockers = sum(1 for f in result.findings if f.severity == "blocker")
    if result.expiring:
        console.print(
            Text(
                f"\ncertificate ends within {result.expiry_days} days on "
                f"{', '.join(result.expiring)}",
                style="bold yellow",
            )
        )
    if result.consistent:
        console.print(Text("\nconsistent", style="bold green"))
    else:
        console.print(Text(f"\nNOT consistent: {blockers} blocker(s)", style="bold red"))


def _cells(host: HostStatus, reference: str | None) -> list[str]:
    facts = host.facts
    if facts is None:
        first = "unreachable" if host.error else "-"
        return [host.name, host.role, first, *["-"] * 8, _handshakes(host, reference)]
    sec = facts.get("security") or {}
    services = [s for s in facts.get("services") or [] if isinstance(s, dict)]
    running = sum(1 for s in services if s.get("state") == "Running")
    ds = facts.get("data_service") or {}
    xml = (sec.get("files") or {}).get("server.tls.xml")
    cert = sec.get("cert_sha256")
    cert_text = "-" if not cert else cert[:12] + (" !" if reference and cert != reference else "")
    enable = facts.get("enable_tls")
    return [
        host.name,
        host.role,
        _os(facts),
        str(facts.get("ps_version") or "?"),
        str(facts.get("tealeaf_build") or "?"),
        _registry_text(enable),
        cert_text,
        _expiry_text(host),
        "present" if xml else "-",
        f"{running}/{len(services)}" if services else "none",
        _data_service(host.role, ds, facts),
        _handshakes(host, reference),
    ]


def _expiry_text(host: HostStatus) -> str:
    """`725d`: days the installed certificate has left (its date is printed under the table,
    in --json and the findings; the table stays one line per host at 120 columns)."""
    days = (host.expiry() or {}).get("days_left")
    if days is None:
        return "-"
    return "expired" if days < 0 else f"{days}d"


def _expiry_lines(result: FleetStatus) -> list[str]:
    """The dates behind the table's days-left column, one line per end date: `certificate
    ends 2028-11-27 (UTC): portal01, hbr01` (a scheduler reading the table sees when,
    not only how soon)."""
    by_date: dict[tuple[str, str], list[str]] = {}
    for host in result.hosts:
        expiry = host.expiry() or {}
        utc, local = expiry.get("not_after_utc"), expiry.get("not_after")
        if isinstance(utc, str) and utc:
            by_date.setdefault((utc[:10], "UTC"), []).append(host.name)
        elif isinstance(local, str) and local:
            by_date.setdefault((local[:10], "host clock"), []).append(host.name)
    return [
        f"certificate ends {day} ({zone}): {', '.join(names)}"
        for (day, zone), names in sorted(by_date.items())
    ]


def _registry_text(value: Any) -> str:
    """A registry value for a table cell: "absent", the number, or the text that is not one
    (EnableTLS as the REG_SZ "true" shows as 'true')."""
    from tealeaf_fleet.ops.facts import RegistryNumber

    reading = RegistryNumber.parse(value)
    if reading.not_a_number:
        return repr(reading.text)
    return "absent" if reading.absent else str(reading.number)


def _data_service(role: str, ds: dict[str, Any], facts: dict[str, Any]) -> str:
    from tealeaf_fleet.ops.facts import data_service_names

    if role == "rtv":
        return "-"
    if not ds.get("mode"):
        return "no startup in log" if data_service_names(facts) else "-"
    return f"{ds['mode']} :{ds.get('port') or '?'}"


def _os(facts: dict[str, Any]) -> str:
    version = str((facts.get("os") or {}).get("version") or "")
    short = ".".join(version.split(".")[:2])
    if short in OS_NAMES:
        return OS_NAMES[short]
    caption = str((facts.get("os") or {}).get("caption") or "")
    for year in ("2022", "2019", "2016"):
        if year in caption:
            return year
    return version or "?"


def _handshakes(host: HostStatus, reference: str | None) -> str:
    if not host.handshakes:
        return "-" if host.role in ("pca", "rtv") else "not probed"
    parts = []
    for which in ("data_service", "tms"):
        shake = host.handshakes.get(which)
        parts.append("-" if shake is None else _shake(shake, reference))
    search = host.handshakes.get("search")
    if search is not None:
        parts.append(f"search {_shake(search, reference)}")
    return " / ".join(parts)


def _shake(shake: Handshake, reference: str | None) -> str:
    if shake.kind != "tls":
        return shake.kind
    if not shake.sha256:
        return "tls (no cert)"
    if shake.sha256 == reference:
        return "tls ours"  # the fleet's certificate (the `cert` column's reference)
    return f"tls {shake.sha256[:8]}"
