"""`fleet check` on a 50-host lab: wall time against its lower bound, and WinRM requests per host.

The lab runs in a child process (`fleet lab up`, as bench/rollout.py starts it) with injected
WinRM latency and powershell.exe start-up time; the check runs in this process through
`tealeaf_fleet.check.gather` (what `fleet check` runs, minus the CLI's import and rendering),
over https + basic. Requests are counted from the lab's own `request` events per host.

Lower bound (L = latency per request, P = powershell start-up, f = forks): per host a shell
Create, two ops of Command, Send, Receive and Signal each paying P, and the shell's Delete:
10 L + 2 P, in ceil(n / f) waves. The ratio measured / bound says what the controller adds.

    .venv/bin/python bench/check.py [--latency-ms 20 --ps-startup-ms 500 --forks 8]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout import start_lab, stop_lab  # noqa: E402 - the sibling bench script

TOPOLOGY = {"portal": 2, "hbr": 6, "canister": 14, "report": 4, "other": 12, "rtv": 12}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--ps-startup-ms", type=int, default=500)
    parser.add_argument("--forks", type=int, default=8, help="as fleet check's default")
    parser.add_argument("--keep", action="store_true", help="keep the lab folder")
    args = parser.parse_args()
    args.restart_s = 1.0  # nothing restarts; start_lab passes it on

    from tealeaf_fleet.check import gather
    from tealeaf_fleet.inventory import load_fleet
    from tealeaf_fleet.lab.events import read_events

    folder = Path(tempfile.mkdtemp(prefix="fleet-bench-check-"))
    lab = start_lab(folder, args, TOPOLOGY)
    try:
        fleet = load_fleet(folder / "inventory.yaml")
        began = time.time()
        started = time.monotonic()
        result = gather(fleet, forks=args.forks)
        elapsed = time.monotonic() - started
        ended = time.time()
        requests = [
            e
            for e in read_events(folder / "events.jsonl")
            if e["kind"] == "request" and began <= e["ts"] <= ended
        ]
        per_host = Counter(e["host"] for e in requests)
        actions = Counter(e.get("action") for e in requests)
        n = len(fleet.windows_hosts())
        L, P = args.latency_ms / 1000, args.ps_startup_ms / 1000
        bound = math.ceil(n / args.forks) * (10 * L + 2 * P)
        counts = [per_host.get(h.name, 0) for h in fleet.windows_hosts()]
        print(
            f"fleet check of {n} Windows hosts: latency {args.latency_ms} ms/request, "
            f"powershell start {args.ps_startup_ms} ms, forks {args.forks}"
        )
        print(f"result: {result.summary()}")
        print(f"wall time {elapsed:.2f} s, lower bound {bound:.2f} s, ratio {elapsed / bound:.2f}")
        print(
            f"WinRM requests per host: min {min(counts)}, median {statistics.median(counts):g}, "
            f"max {max(counts)}; by action: {dict(sorted(actions.items()))}"
        )
        print(
            json.dumps(
                {
                    "measured_s": round(elapsed, 2),
                    "lower_bound_s": round(bound, 2),
                    "ratio": round(elapsed / bound, 3),
                    "requests_per_host": statistics.median(counts),
                    "works": result.works,
                }
            )
        )
        return 0 if result.works else 1
    finally:
        stop_lab(lab, folder, keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
