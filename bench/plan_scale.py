"""Benchmark: plan a 1,000-host inventory, and time `fleet --help`.

Why: a change board plans the whole estate, and an operator runs `fleet --help` and `fleet plan`
often; both must stay quick as the estate grows and as commands are added. Prints figures
(medians); asserts nothing (timings do not belong in tests).

    .venv/bin/python bench/plan_scale.py [--hosts N] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MIX = (
    ("portal", 0.01),
    ("hbr", 0.10),
    ("canister", 0.75),
    ("report", 0.04),
    ("other", 0.05),
    ("pca", 0.02),
    ("rtv", 0.03),
)


def write_inventory(folder: Path, n: int) -> Path:
    """A realistic large estate: mostly Canisters, a tenth HBRs, a few of the rest."""
    lines = [
        "tealeaf: {install_dir: 'D:\\Tealeaf'}",
        "winrm: {username: 'CORP\\svc-tealeaf', password_env: TEALEAF_WINRM_PASSWORD}",
        "certificate: {source: generate, path: TCXcert.pfx, password_env: TEALEAF_PFX_PASSWORD}",
        "hosts:",
    ]
    i = 0
    for role, share in MIX:
        count = max(1, round(n * share))
        for _ in range(count):
            if i >= n:
                break
            extra = ", pca_build: 3682-24" if role == "pca" else ""
            lines.append(
                f"  {role}{i:04d}: {{address: 10.{i // 65536}.{i // 256 % 256}."
                f"{i % 256}, role: {role}{extra}}}"
            )
            i += 1
    path = folder / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def median_s(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from tealeaf_fleet.cli.render import render_markdown, render_text
    from tealeaf_fleet.inventory import load_fleet
    from tealeaf_fleet.plan import build_plan
    from tealeaf_fleet.playbooks import load_playbook

    with tempfile.TemporaryDirectory() as tmp:
        inv = write_inventory(Path(tmp), args.hosts)
        fleet = load_fleet(inv)
        playbook = load_playbook("rollout")
        plan = build_plan(playbook, fleet)
        steps = sum(len(p.steps) for p in plan.phases)
        print(
            f"inventory: {len(fleet.hosts)} hosts, plan: {len(plan.phases)} phases, {steps} steps"
        )
        rows = [
            ("load_fleet", median_s(lambda: load_fleet(inv), args.runs)),
            ("build_plan", median_s(lambda: build_plan(playbook, fleet), args.runs)),
            ("to_json", median_s(plan.to_json, args.runs)),
            ("render markdown", median_s(lambda: render_markdown(plan), args.runs)),
            ("render table text", median_s(lambda: render_text(plan), max(1, args.runs // 2))),
        ]
        fleet_cmd = [sys.executable, "-m", "tealeaf_fleet"]
        rows.append(
            (
                "`fleet plan --format json` (subprocess)",
                median_s(
                    lambda: subprocess.run(
                        [*fleet_cmd, "plan", str(inv), "--format", "json"],
                        check=True,
                        capture_output=True,
                    ),
                    3,
                ),
            )
        )
        rows.append(
            (
                "`fleet --help` (subprocess)",
                median_s(
                    lambda: subprocess.run([*fleet_cmd, "--help"], check=True, capture_output=True),
                    max(args.runs, 7),
                ),
            )
        )
        rows.append(
            (
                "python -c pass (interpreter baseline)",
                median_s(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 7),
            )
        )
    width = max(len(r[0]) for r in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms (median)")


if __name__ == "__main__":
    main()
