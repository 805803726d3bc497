"""`fleet demo` end to end in a subprocess: lab, rollout, status, rollback, status, cleanup."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_both_ways_and_cleans_up():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tealeaf_fleet",
            "demo",
            "--restart-s",
            "0.1",
            "--soak-s",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]  # JSON Lines only
    finished = [e for e in events if e["type"] == "run_finished"]
    assert [e["result"] for e in finished] == ["ok", "ok"]
    commands = [e["command"] for e in events if e["type"] == "run_started"]
    assert commands == ["rollout", "rollback"]
    assert "status consistent after each: rollout=True, rollback=True" in result.stderr
    # `fleet check` ran first and its summary is one line
    summary = re.search(
        r"fleet check: (\d+) Windows host\(s\) x 17 mechanisms: (.*)", result.stderr
    )
    assert summary and summary.group(1) == "7", result.stderr[:3000]  # 8 hosts, one is a PCA
    assert summary.group(2).endswith("every mechanism works")
    assert "check: exit 0, rollout: exit 0, rollback: exit 0" in result.stderr
    assert "What to try next" in result.stderr
    match = re.search(r"lab with \d+ hosts in (\S+)", result.stderr)
    assert match, result.stderr[:2000]
    assert not Path(match.group(1)).exists()  # the temporary lab folder was removed
    # it ended by writing the rollout's HTML report outside that folder, and said where
    written = re.search(r"HTML report of the rollout written to (\S+)", result.stderr)
    assert written, result.stderr[-3000:]
    report = Path(written.group(1))
    try:
        page = report.read_text(encoding="utf-8")
        assert "<svg" in page and "run 1 (rollout)" in page
    finally:
        report.unlink()


def test_demo_keeps_the_folder_when_asked(tmp_path):
    folder = tmp_path / "demo"
    # pytest exports COLUMNS=80, which the CLI honours: drop it to see the pipe default (120)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tealeaf_fleet",
            "demo",
            "--dir",
            str(folder),
            "--topology",
            "portal=1,hbr=1,canister=1",
            "--restart-s",
            "0.1",
            "--soak-s",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # the plans are summaries (one line per phase), not the full per-host tables
    flat = " ".join(result.stdout.split())  # long summary lines wrap at 120 columns
    assert "Full per-host table: fleet plan " in flat
    assert f"fleet plan {folder.resolve() / 'inventory.yaml'} --playbook rollback" in flat
    assert "rolling, one at a time: hbr01" in flat
    assert "┃ Action" not in result.stdout and "(same as above)" not in result.stdout
    # a restart's line says how many gates passed; each gate had its own line just above
    restarts = re.findall(r"hbr01: restart changed: (.*)", result.stderr)
    assert len(restarts) == 2, result.stderr[-4000:]
    for line in restarts:  # services, data_service_log, handshake (no IIS on an HBR, soak 0)
        assert re.fullmatch(r"restarted \d+ TeaLeaf service\(s\); 3 gates passed", line), line
    assert "gates passed:" not in result.stderr
    # piped output is 120 columns wide, not rich's 80: one status row per host
    rows = [line for line in result.stdout.splitlines() if line.startswith("hbr01 ")]
    assert len(rows) == 2 and all(len(line) <= 120 for line in rows), rows
    assert (folder / "inventory.yaml").is_file()
    assert (folder / ".tealeaf-fleet" / "journal.sqlite").is_file()
    assert f"HTML report of the rollout written to {folder.resolve() / 'report.html'}" in (
        " ".join(result.stdout.split())
    )
    history = subprocess.run(
        [
            sys.executable,
            "-m",
            "tealeaf_fleet",
            "history",
            str(folder / "inventory.yaml"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    runs = json.loads(history.stdout)["runs"]
    assert [(r["command"], r["outcome"]) for r in runs] == [("rollback", "ok"), ("rollout", "ok")]


def test_restart_line_counts_the_gates_instead_of_repeating_them():
    from tealeaf_fleet.cli.rollout import short_step_message

    full = (
        "restarted 4 TeaLeaf service(s) and IIS (iisreset); gates passed: services: 4 TeaLeaf "
        "service(s) running again; 1 stopped one(s) left stopped; iis: IIS running; "
        "data_service_log: Data Service log shows 'TLS Port: 1' at 2026-11-27T12:00:00; "
        "handshake: Data Service 1 plain; TMS 2 back on its own certificate; soak: after 1s, "
        "services still right"
    )
    assert short_step_message(full) == (
        "restarted 4 TeaLeaf service(s) and IIS (iisreset); 5 gates passed"
    )
    assert short_step_message("EnableTLS=1; EnableTLS is 1") == "EnableTLS=1; EnableTLS is 1"


def test_a_report_path_in_a_missing_folder_is_refused_before_the_lab_starts(tmp_path):
    folder = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tealeaf_fleet",
            "demo",
            "--dir",
            str(folder),
            "--topology",
            "hbr=1",
            "--report",
            str(tmp_path / "no-such-folder" / "report.html"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("fleet: error: --report: folder ")
    assert len(result.stderr.splitlines()) == 1
    assert not folder.exists()  # refused before a lab was started


def test_markdown_cells_keep_angle_brackets_as_text():
    from tealeaf_fleet.report.markdown import _table

    (row,) = _table(("a",), [("<img src=x onerror=alert(1)> | x",)])[2:3]
    assert row == "| &lt;img src=x onerror=alert(1)&gt; \\| x |"
