"""`fleet lab up|state`: start a simulated Tealeaf fleet on loopback, or summarise one.

`up` runs in the foreground until SIGINT/SIGTERM, then stops every endpoint and exits 0: a lab is
something you rehearse a change against from another terminal (`fleet rollout
DIR/inventory.yaml`), so it prints where the inventory is and one line per host once every
endpoint answers. `state` reads the lab's files only, so it also works after the lab stopped.
The lab modules (and cryptography) are imported inside the handlers to keep `fleet --help` fast.
"""

from __future__ import annotations

import argparse
import json
import sys

OS_CHOICES = ("2008r2", "2012r2", "2016", "2019", "mixed")


class _OneLineParser(argparse.ArgumentParser):
    """Bad flags: exit 2 with a single line (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


# Simulated delays: a minute per request or per powershell.exe start is already absurd; an
# hour per service restart too. Anything larger only makes a lab that never answers.
MAX_DELAY_MS = 60_000
MAX_RESTART_S = 3600.0


def _non_negative_int(text: str) -> int:
    """Milliseconds of simulated delay: 0 to MAX_DELAY_MS."""
    from tealeaf_fleet.cli.common import whole_number

    return whole_number(text, 0, MAX_DELAY_MS)


def _non_negative_float(text: str) -> float:
    """Seconds of a simulated restart: 0 to MAX_RESTART_S (NaN and infinity refused)."""
    from tealeaf_fleet.cli.common import bounded_float

    return bounded_float(0, MAX_RESTART_S)(text)


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser(
        "lab",
        help="start a simulated fleet on 127.0.0.1 / show its state",
        description="A simulated Tealeaf fleet on loopback, speaking real "
        "WinRM: rehearse a change, demo, test.",
    )
    ls = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND", parser_class=_OneLineParser)
    ls.required = True

    up = ls.add_parser(
        "up",
        help="start a lab and run until Ctrl-C / SIGTERM",
        description="Start a simulated fleet; writes DIR/inventory.yaml, "
        "DIR/lab.json and per-host state under DIR/hosts/.",
    )
    up.add_argument("--dir", required=True, metavar="DIR", help="the lab's folder")
    src = up.add_mutually_exclusive_group()
    src.add_argument(
        "--topology",
        metavar="ROLE=N,...",
        help="hosts per role (default portal=1,hbr=2,canister=3,pca=1,rtv=1; "
        "roles portal hbr canister report other pca rtv)",
    )
    src.add_argument(
        "--from-inventory", metavar="FILE", help="mirror a real inventory's host names and roles"
    )
    up.add_argument(
        "--install-dir",
        metavar="PATH",
        help=r"Tealeaf install folder on every host (default D:\Tealeaf)",
    )
    up.add_argument(
        "--latency-ms",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="added to every WinRM request",
    )
    up.add_argument(
        "--ps-startup-ms",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="paid by every powershell.exe start",
    )
    up.add_argument(
        "--restart-s",
        type=_non_negative_float,
        default=2.0,
        metavar="S",
        help="a service stop takes S/2, a start S/2; iisreset S (default 2)",
    )
    up.add_argument(
        "--os",
        default="mixed",
        metavar="OS|NAME=OS,...",
        help="Windows version: one of 2008r2 2012r2 2016 2019 mixed for every "
        "host, or per host (e.g. 2016,hbr01=2008r2; default mixed)",
    )
    up.add_argument(
        "--build",
        default=None,
        metavar="BUILD|NAME=BUILD,...",
        help="Tealeaf build in the registry (default 9.0.2.1351), for every host "
        "or per host (e.g. hbr02=9.0.2.1223 to rehearse an old server)",
    )
    up.add_argument(
        "--log-style",
        default="dated",
        metavar="STYLE|NAME=STYLE,...",
        help="how the Data Service names its log: dated (TLDataService_<yyyymmdd>.log, the "
        "default) or live (TLDataService.log, older days renamed with their date), for every "
        "host or per host (e.g. dated,hbr01=live)",
    )
    up.add_argument(
        "--http",
        action="store_true",
        help="the inventory uses http + NTLM (message encryption) instead of https + basic",
    )
    up.set_defaults(handler=run_up)

    state = ls.add_parser(
        "state",
        help="summarise a lab's hosts from its files",
        description="Per host: EnableTLS, certificate fingerprint, TeaLeaf "
        "services running/total, Data Service mode and port.",
    )
    state.add_argument("--dir", required=True, metavar="DIR", help="the lab's folder")
    state.add_argument("--json", action="store_true", help="print one JSON document")
    state.set_defaults(handler=run_state)


def run_up(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from tealeaf_fleet.errors import InputError
    from tealeaf_fleet.lab.fleet import Lab, parse_topology
    from tealeaf_fleet.lab.host import LOG_STYLES

    if args.install_dir is not None and not (
        len(args.install_dir) >= 3 and args.install_dir[1:3] == ":\\"
    ):
        raise InputError(
            f"'{args.install_dir}' is not an absolute Windows path like "
            r"D:\Tealeaf",
            field="--install-dir",
        )
    topology = parse_topology(args.topology) if args.topology is not None else None
    os_choice = per_host(args.os, "--os", OS_CHOICES)
    build = per_host(args.build, "--build") if args.build is not None else None
    log_style = per_host(args.log_style, "--log-style", LOG_STYLES)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        lab = Lab.start(
            args.dir,
            topology=topology,
            from_inventory=args.from_inventory,
            install_dir=args.install_dir,
            latency_ms=args.latency_ms,
            ps_startup_ms=args.ps_startup_ms,
            restart_s=args.restart_s,
            os=os_choice,
            http_inventory=args.http,
            build=build,
            log_style=log_style,
        )
        try:
            print(
                f"lab ready in {lab.dir} (pid {os.getpid()}); inventory: {lab.inventory}",
                flush=True,
            )
            for name, role in lab.roles.items():
                host = lab.hosts.get(name)
                if host is None:
                    print(
                        f"  {name:<10} {role:<9} not simulated (PCA: never contacted)", flush=True
                    )
                    continue
                ports = (
                    f"data_service={host.data_service_port} tms={host.tms_port}"
                    if host.data_service_port
                    else "no Tealeaf services"
                )
                if host.search_port:
                    ports += f" search={host.search_port}"
                print(
                    f"  {name:<10} {role:<9} {lab.url(name, 'https')} {host.config.os} {ports}",
                    flush=True,
                )
            print("press Ctrl-C (or send SIGTERM) to stop", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            lab.stop()
        print("lab stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def per_host(text: str, flag: str, allowed: tuple[str, ...] | None = None) -> str | dict:
    """`V` -> "V"; `V,name=W,...` / `name=W,...` -> {"*": V, "name": W}. InputError when a
    value is not in `allowed` (if given) or an entry is malformed."""
    from tealeaf_fleet.errors import InputError

    values: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, value = part.rpartition("=") if "=" in part else ("*", "", part)
        name, value = name.strip(), value.strip()
        if not value or not name or (eq and name == "*") or name in values:
            raise InputError(f"bad entry '{part}' in '{text}'", field=flag)
        if allowed is not None and value not in allowed:
            raise InputError(f"'{value}' is not one of {', '.join(allowed)}", field=flag)
        values[name] = value
    return values["*"] if list(values) == ["*"] else values


def run_state(args: argparse.Namespace) -> int:
    from tealeaf_fleet.lab.state import lab_state, render_text

    state = lab_state(args.dir)
    if args.json:
        json.dump(state, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"lab {state['dir']} (pid {state['pid']}); inventory: {state['inventory']}")
        print(render_text(state))
    return 0
