"""A whole rollout on a ~40-host lab, measured against its critical-path lower bound.

The lab runs in a child process (`fleet lab up`) with injected WinRM latency, powershell.exe
start-up time and service restart time; the rollout runs in this process through the engine
(`engine.execute`, what `fleet rollout` runs, minus the CLI's import time), over https + basic.

Lower bound, from the lab's parameters only (L = latency per request, P = powershell start-up,
S = restart time, f = forks, op = 4 L + P, the cheapest remote op on an open shell: Command,
Send, Receive, cleanup; the first op on a host also opens its shell, + L):
- every phase that touches hosts needs at least one op per host: ceil(n / f) waves of `op`;
- a host's services restart in dependency order (stop dependents first, start dependencies
  first), each level taking S/2 to stop and S/2 to start: d S for a dependency depth d, read
  from the lab's `hosts/NAME/services.json` (TeaLeaf services that are running);
- each HBR and Canister restarts alone: d S plus the restart op, which also makes the gates'
  first read (and the iisreset where IIS runs): d S + op each, one after the other;
- the rest restart in parallel: the slowest of them, d S (+ S for iisreset where IIS runs)
  + op, per wave of f hosts;
- the certificate is made on the controller: counted as 0;
- with `--soak-s`, each restart (and each wave of a parallel restart phase) also waits it and
  reads the host once more (+ op, or + P in the critical path).
The ratio measured / bound says how much the engine adds (polling, verification reads, Python,
two cores shared by the lab and the controller). Aim: 1.25 or better.

The restart phases alone are also held to their critical path (`restart_bound`): the serial
restarts in dependency waves plus one PowerShell start per restarted host and per parallel
phase (d S + P per HBR or Canister, one after the other; per wave of the rest, the slowest
d S, + S where iisreset runs, + P). Aim: 1.10 or better, also with --ps-startup-ms 800. This
is what the peer-health reads (overlapped with the previous host's restart) and the gates'
first read (returned by the restart op itself) must not add to.

    .venv/bin/python bench/rollout.py [--latency-ms 20 --ps-startup-ms 100 --restart-s 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPOLOGY = {"portal": 2, "hbr": 6, "canister": 12, "report": 4, "other": 8, "pca": 1, "rtv": 8}


def start_lab(
    folder: Path, args: argparse.Namespace, topology: dict[str, int] = TOPOLOGY
) -> subprocess.Popen:
    """`fleet lab up` in a child process with the bench's timings; returns once it is ready."""
    topo = ",".join(f"{k}={v}" for k, v in topology.items())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tealeaf_fleet",
            "lab",
            "up",
            "--dir",
            str(folder),
            "--topology",
            topo,
            "--latency-ms",
            str(args.latency_ms),
            "--ps-startup-ms",
            str(args.ps_startup_ms),
            "--restart-s",
            str(args.restart_s),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (folder / "lab.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the lab did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    return proc


def restart_depth(folder: Path, host: str) -> int:
    """Dependency depth of the host's running TeaLeaf services (restart waves)."""
    services = json.loads((folder / "hosts" / host / "services.json").read_text())
    mine = {
        s["name"]: s
        for s in services
        if s["state"] == "Running"
        and (
            s["name"].lower().startswith("tealeaf")
            or s.get("display_name", "").lower().startswith("tealeaf")
        )
    }

    def depth(name: str, seen: frozenset = frozenset()) -> int:
        deps = [d for d in mine[name]["depends_on"] if d in mine and d not in seen]
        return 1 + max((depth(d, seen | {name}) for d in deps), default=0)

    return max((depth(n) for n in mine), default=0)


def lower_bound(
    phases: list[dict], roles: dict[str, str], depths: dict[str, int], args: argparse.Namespace
) -> dict[str, float]:
    L, P, S, f = args.latency_ms / 1000, args.ps_startup_ms / 1000, args.restart_s, args.forks
    op = 4 * L + P
    soak = args.soak_s + op if args.soak_s else 0.0  # the wait, then the gates read once more
    out: dict[str, float] = {}
    for phase in phases:
        hosts = [s["host"] for s in phase["steps"] if s["host"] != "controller"]
        name, strategy = phase["name"], phase["strategy"]
        if phase["op"] == "certificate" or not hosts:
            out[name] = 0.0
        elif phase["op"] == "restart" and strategy == "rolling":
            out[name] = sum(depths[h] * S + op + soak for h in hosts)
        elif phase["op"] == "restart":
            slowest = soak + max(
                depths[h] * S + op + (S if roles[h] == "portal" else 0) for h in hosts
            )
            out[name] = math.ceil(len(hosts) / f) * slowest
        else:
            out[name] = math.ceil(len(hosts) / f) * op + (L if phase["op"] == "preflight" else 0)
    return out


def restart_bound(
    phases: list[dict], roles: dict[str, str], depths: dict[str, int], args: argparse.Namespace
) -> dict[str, float]:
    """The restart phases' critical path (module docstring): restart phase name -> seconds."""
    P, S, f = args.ps_startup_ms / 1000, args.restart_s, args.forks
    soak = args.soak_s + P if args.soak_s else 0.0  # the wait, then the gates' second read
    out: dict[str, float] = {}
    for phase in phases:
        hosts = [s["host"] for s in phase["steps"] if s["host"] != "controller"]
        if phase["op"] != "restart" or not hosts:
            continue
        if phase["strategy"] == "rolling":
            out[phase["name"]] = sum(depths[h] * S + P + soak for h in hosts)
        else:
            slowest = max(depths[h] * S + (S if roles[h] == "portal" else 0) for h in hosts)
            out[phase["name"]] = math.ceil(len(hosts) / f) * (slowest + P + soak)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--ps-startup-ms", type=int, default=100)
    parser.add_argument("--restart-s", type=float, default=1.0)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument(
        "--soak-s",
        type=float,
        default=0,
        help="rollout.soak_s (default 0): with a soak, the next HBR's or Canister's peer reads "
        "overlap it; without, they are one read before each restart",
    )
    parser.add_argument("--keep", action="store_true", help="keep the lab folder")
    args = parser.parse_args()

    from tealeaf_fleet.engine.events import EventBus, Recorder
    from tealeaf_fleet.engine.execute import execute
    from tealeaf_fleet.inventory import load_fleet
    from tealeaf_fleet.plan import build_plan
    from tealeaf_fleet.playbooks import load_playbook

    folder = Path(tempfile.mkdtemp(prefix="fleet-bench-rollout-"))
    lab = start_lab(folder, args)
    try:
        inventory = folder / "inventory.yaml"
        soak = f"soak_s: {args.soak_s:g}"
        text = inventory.read_text(encoding="utf-8").replace("soak_s: 1", soak)
        inventory.write_text(text, encoding="utf-8")
        fleet = load_fleet(inventory)
        plan = build_plan(load_playbook("rollout"), fleet).to_dict()
        roles = {name: host.role for name, host in fleet.hosts.items()}
        bus, rec = EventBus(), Recorder()
        bus.subscribe(rec)
        started = time.monotonic()
        result = execute(
            fleet,
            plan,
            command="rollout",
            bus=bus,
            journal=None,
            inventory_label=str(inventory),
            forks=args.forks,
        )
        elapsed = time.monotonic() - started
        if result.outcome != "ok":
            print(f"rollout {result.outcome}: {result.message}", file=sys.stderr)
            return 1
        depths = {h: restart_depth(folder, h) for h, r in roles.items() if r != "pca"}
        bound = lower_bound(plan["phases"], roles, depths, args)
        starts = {e.phase: e.ts for e in rec.of_type("phase_started")}
        ends = {e.phase: e.ts for e in rec.of_type("phase_finished")}
        windows = sum(1 for r in roles.values() if r != "pca")
        print(
            f"rollout of {windows} Windows hosts (+{len(roles) - windows} PCA): "
            f"latency {args.latency_ms} ms/request, powershell start {args.ps_startup_ms} ms, "
            f"restart {args.restart_s} s, forks {args.forks}, soak {args.soak_s:g} s"
        )
        print(f"{'phase':<18}{'measured s':>11}{'bound s':>9}{'ratio':>7}")
        ratios: dict[str, float | None] = {}
        for phase in plan["phases"]:
            name = phase["name"]
            took = ends.get(name, 0) - starts.get(name, 0)
            lb = bound[name]
            ratios[name] = round(took / lb, 3) if lb else None
            ratio = f"{took / lb:7.2f}" if lb else "      -"
            print(f"{name:<18}{took:>11.2f}{lb:>9.2f}{ratio}")
        total = sum(bound.values())
        print(f"{'total':<18}{elapsed:>11.2f}{total:>9.2f}{elapsed / total:7.2f}")
        critical = restart_bound(plan["phases"], roles, depths, args)
        restart_took = sum(ends.get(n, 0) - starts.get(n, 0) for n in critical)
        restart_lb = sum(critical.values())
        print("restart phases against their critical path (d S + P per restart):")
        restart_ratios: dict[str, float] = {}
        for name, lb in critical.items():
            took = ends.get(name, 0) - starts.get(name, 0)
            restart_ratios[name] = round(took / lb, 3)
            print(f"  {name:<16}{took:>11.2f}{lb:>9.2f}{took / lb:7.2f}")
        print(
            f"  {'all restarts':<16}{restart_took:>11.2f}{restart_lb:>9.2f}"
            f"{restart_took / restart_lb:7.2f}"
        )
        print(
            json.dumps(
                {
                    "measured_s": round(elapsed, 2),
                    "lower_bound_s": round(total, 2),
                    "ratio": round(elapsed / total, 3),
                    "restart_measured_s": round(restart_took, 2),
                    "restart_bound_s": round(restart_lb, 2),
                    "restart_ratio": round(restart_took / restart_lb, 3),
                    "phase_ratios": ratios,
                    "restart_phase_ratios": restart_ratios,
                }
            )
        )
        return 0
    finally:
        stop_lab(lab, folder, keep=args.keep)


def stop_lab(lab: subprocess.Popen, folder: Path, *, keep: bool) -> None:
    """Stop the child lab (SIGTERM, then kill) and remove its folder unless asked to keep it."""
    lab.send_signal(signal.SIGTERM)
    try:
        lab.wait(timeout=30)
    except subprocess.TimeoutExpired:
        lab.kill()
    if not keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    elif os.environ.get("CI") is None:
        print(f"lab folder kept: {folder}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
