"""`fleet demo` end to end in a subprocess: lab, rollout, status, rollback, status, cleanup."""

from __future__ import annotations

import json
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
    assert "What to try next" in result.stderr
    match = re.search(r"lab with \d+ hosts in (\S+)", result.stderr)
    assert match, result.stderr[:2000]
    assert not Path(match.group(1)).exists()  # the temporary lab folder was removed


def test_demo_keeps_the_folder_when_asked(tmp_path):
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
            "portal=1,hbr=1,canister=1",
            "--restart-s",
            "0.1",
            "--soak-s",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (folder / "inventory.yaml").is_file()
    assert (folder / ".tealeaf-fleet" / "journal.sqlite").is_file()
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
