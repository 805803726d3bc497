"""The data-loss rule across the fleet, end to end (real CLI, real WinRM to the lab): an HBR or
Canister is never restarted while another host of its rolling group is unhealthy, whether that
is found at preflight (a blocker, nothing changed) or appears during the run (the run halts
before touching the host, naming the peer). The lab's events.jsonl is the evidence.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from test_rollout_e2e import (  # the e2e helpers: one lab per test, the real CLI
    changes,
    events,
    fleet,
    lock_dir,  # noqa: F401 (autouse fixture: one lock folder per module)
    module_lock_dir,  # noqa: F401
    services,
    set_fault,
    start_lab,
)

pytestmark = pytest.mark.slow


def stop_pending(lab, host: str, since: float) -> list[dict]:
    return [
        e
        for e in events(lab, since)
        if e["kind"] == "service" and e["host"] == host and e.get("state") == "StopPending"
    ]


def test_a_stopped_hbr_service_blocks_at_preflight_and_nothing_changes(tmp_path):
    with start_lab(tmp_path / "lab", faults={"hbr02": {"service_stopped": True}}) as lab:
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes", "--json")
        assert out.returncode == 3, out.stderr
        finished = json.loads(out.stdout.splitlines()[-1])
        assert list(finished["blockers"]) == ["hbr02"]
        assert "TeaLeafHBR" in finished["blockers"]["hbr02"][0]
        assert "--limit" in finished["blockers"]["hbr02"][0]
        assert changes(lab, t0) == []
        assert services(lab, "hbr02")["TeaLeafHBR"] == "Stopped"  # the tool never starts it


def test_an_hbr_service_stopping_mid_run_halts_before_the_other_hbr_restarts(tmp_path):
    """hbr02's service dies after preflight (while the PFX is being pushed): the restart of
    hbr01, first of the group, must not happen: no StopPending on it, exit 1, hbr02 named."""
    with start_lab(tmp_path / "lab") as lab:
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tealeaf_fleet", "rollout", str(lab.inventory), "--yes"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(e["kind"] == "file" for e in events(lab, t0)):  # push_pfx began
                break
            time.sleep(0.02)
        set_fault(lab, "hbr02", {"service_stopped": True})
        stdout, stderr = proc.communicate(timeout=150)
        assert proc.returncode == 1, stderr + stdout[-2000:]
        assert stop_pending(lab, "hbr01", t0) == []
        restarts = [e for e in changes(lab, t0) if e["kind"] in ("service", "iisreset")]
        assert {e["host"] for e in restarts} <= {"hbr02"}  # only the fault's own stop
        assert "hbr02" in stderr and "TeaLeafHBR" in stderr, stderr
        assert "not restarting hbr01" in stderr, stderr

        # its administrator starts it again (Start-Service): the rerun finishes the change
        set_fault(lab, "hbr02", {})
        lab.host("hbr02").services_mgr.start("TeaLeafHBR")
        t1 = time.time()
        again = fleet("rollout", str(lab.inventory), "--yes")
        assert again.returncode == 0, again.stderr
        first, second = stop_pending(lab, "hbr01", t1), stop_pending(lab, "hbr02", t1)
        assert first and second
        hbr01_back = max(
            e["ts"]
            for e in events(lab, t1)
            if e["kind"] == "service" and e["host"] == "hbr01" and e.get("state") == "Running"
        )
        assert hbr01_back <= min(e["ts"] for e in second)  # one HBR at a time


def test_a_canister_stopping_while_the_previous_one_restarts_halts_before_the_next(
    tmp_path, monkeypatch
):
    """can03's service dies while can01 restarts (its stop already under way): the peer read
    for can02 is made after can01's gates, during its soak, so it sees can03 down; can02 is
    never stopped, the run exits 1 naming can03. A read made before can01's restart (the
    flaw this guards against) would have found can03 healthy and restarted can02."""
    topology = {"portal": 1, "hbr": 1, "canister": 3}
    with start_lab(tmp_path / "lab", soak_s=3, restart_s=1.0, topology=topology) as lab:
        can01, can03 = lab.host("can01"), lab.host("can03")
        record = can01.record
        flipped: list[dict] = []

        def can03_dies_mid_restart(kind: str, **fields) -> None:
            record(kind, **fields)
            if kind == "service" and fields.get("state") == "StopPending" and not flipped:
                flipped.append(fields)  # can01's restart began: can03's service ends now
                can03.set_faults({"service_stopped": True})

        monkeypatch.setattr(can01, "record", can03_dies_mid_restart)
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes", timeout=240)
        assert flipped, out.stderr + out.stdout[-2000:]
        assert out.returncode == 1, out.stderr + out.stdout[-2000:]
        assert stop_pending(lab, "can01", t0)
        assert stop_pending(lab, "can02", t0) == []
        assert "not restarting can02" in out.stderr and "can03" in out.stderr, out.stderr
        assert services(lab, "can03")["TeaLeafCanister"] == "Stopped"


def test_a_rollback_after_an_hbr_failed_to_start_with_tls_succeeds(tmp_path):
    """The common failed rollout: hbr02's services do not start with TLS (exit 1, hbr02 left
    stopped with EnableTLS=1). Once the cause is gone, the rollback must be possible: hbr02's
    stopped service is a warning there (its own restart, with EnableTLS 0, brings it back),
    not the blocker it is before a rollout."""
    topology = {"portal": 1, "hbr": 2, "canister": 1}
    with start_lab(tmp_path / "lab", topology=topology) as lab:
        set_fault(lab, "hbr02", {"service_start_fails": True})
        out = fleet("rollout", str(lab.inventory), "--yes")
        assert out.returncode == 1, out.stderr + out.stdout[-2000:]
        assert services(lab, "hbr02")["TeaLeafHBR"] == "Stopped"
        set_fault(lab, "hbr02", {})
        back = fleet("rollback", str(lab.inventory), "--yes")
        assert back.returncode == 0, back.stderr + back.stdout[-3000:]
        assert services(lab, "hbr02")["TeaLeafHBR"] == "Running"
