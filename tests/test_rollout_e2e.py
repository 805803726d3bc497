"""Rollout and rollback end to end through the real stack: the `fleet` CLI in a subprocess,
pywinrm over HTTPS (basic, lab CA) or NTLM-encrypted HTTP to the lab, real TLS handshakes, real
files, real SQLite. The lab's events.jsonl proves ordering and what was (not) touched.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tealeaf_fleet.journal import Journal
from tealeaf_fleet.lab.events import read_events
from tealeaf_fleet.lab.fleet import Lab

pytestmark = pytest.mark.slow

RESTART_S = 0.2
CHANGE_KINDS = ("service", "registry", "file", "tlstool", "iisreset", "reboot")
PROGRAM_FILES_DIR = "C:\\Program Files (x86)\\IBM\\Tealeaf"  # the default: spaces, parentheses


# --- helpers --------------------------------------------------------------------------------


def start_lab(folder: Path, *, soak_s: int = 0, **kw) -> Lab:
    kw.setdefault("restart_s", RESTART_S)
    lab = Lab.start(folder, **kw)
    text = lab.inventory.read_text(encoding="utf-8")
    lab.inventory.write_text(text.replace("soak_s: 1", f"soak_s: {soak_s}"), encoding="utf-8")
    return lab


@pytest.fixture
def lab(tmp_path):
    with start_lab(tmp_path / "lab") as lab:
        yield lab


@pytest.fixture(scope="module")
def module_lock_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("host-locks")


@pytest.fixture(autouse=True)
def lock_dir(module_lock_dir, monkeypatch) -> Path:
    """The host locks of every `fleet` run here (the CLI runs inherit the environment): one
    folder for the module, as every run of one controller shares one, outside the home."""
    monkeypatch.setenv("TEALEAF_FLEET_LOCK_DIR", str(module_lock_dir))
    return module_lock_dir


def fleet(
    *args: str, timeout: float = 150, stdin: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (stdin not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "tealeaf_fleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin or "",
        env={**os.environ, **(env or {})},
    )


def events(lab: Lab, since: float = 0.0) -> list[dict]:
    return [e for e in read_events(lab.dir / "events.jsonl") if e["ts"] >= since]


def changes(lab: Lab, since: float = 0.0) -> list[dict]:
    return [e for e in events(lab, since) if e["kind"] in CHANGE_KINDS]


def restart_windows(lab: Lab, since: float = 0.0) -> dict[str, tuple[float, float]]:
    """Per host: first service stop to last service start seen since `since`."""
    out: dict[str, tuple[float, float]] = {}
    for e in events(lab, since):
        if e["kind"] == "service" and e.get("state") in (
            "StopPending",
            "StartPending",
            "Running",
            "Stopped",
        ):
            lo, hi = out.get(e["host"], (e["ts"], e["ts"]))
            out[e["host"]] = (min(lo, e["ts"]), max(hi, e["ts"]))
    return out


def wait_until_settled(lab: Lab, host: str, timeout_s: float = 60) -> None:
    """Until none of the host's services is half-way (StopPending / StartPending)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [s for s in services(lab, host).values() if s.endswith("Pending")]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{host}'s services did not settle within {timeout_s}s")


def set_fault(lab: Lab, host: str, faults: dict) -> None:
    (lab.dir / "hosts" / host / "faults.json").write_text(json.dumps(faults))


def registry_value(lab: Lab, host: str, name: str):
    data = json.loads((lab.dir / "hosts" / host / "registry.json").read_text())
    return data.get("HKLM:\\SOFTWARE\\Wow6432Node\\TeaLeaf Technology", {}).get(name)


def newest_data_service_log(lab: Lab, host: str) -> bytes:
    """The text of the host's most recently written Data Service log file."""
    folder = lab.dir / "hosts" / host / "fs/D/Tealeaf/Logs"
    return max(folder.glob("TLDataService*.log"), key=lambda p: p.stat().st_mtime_ns).read_bytes()


def services(lab: Lab, host: str) -> dict[str, str]:
    return {
        s["name"]: s["state"]
        for s in json.loads((lab.dir / "hosts" / host / "services.json").read_text())
    }


def tls_hosts(lab: Lab) -> list[str]:
    return [
        n for n, r in lab.roles.items() if r in ("portal", "hbr", "canister", "report", "other")
    ]


def status_json(lab: Lab) -> dict:
    result = fleet("status", str(lab.inventory), "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def secrets_of(lab: Lab) -> list[str]:
    return [lab.winrm_password(), lab.pfx_password_file.read_text().strip()]


def assert_no_secret(lab: Lab, *texts: str) -> None:
    secrets = secrets_of(lab)
    state = lab.dir / ".tealeaf-fleet"
    blobs = list(texts)
    for path in state.glob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("utf-8", "replace"))
    for blob in blobs:
        for secret in secrets:
            assert secret not in blob


# --- the tests ------------------------------------------------------------------------------


def test_rollout_status_rollback(lab, tmp_path):
    plan_file = tmp_path / "plan.json"
    planned = fleet("plan", str(lab.inventory), "--format", "json", "--out", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    stopped_before = {
        n: [s for s, state in services(lab, n).items() if state == "Stopped"] for n in lab.hosts
    }
    assert any(stopped_before.values())  # the lab has a stopped TeaLeaf service somewhere
    t0 = time.time()
    out = fleet("rollout", str(lab.inventory), "--yes", "--json")
    assert out.returncode == 0, out.stderr + out.stdout[-3000:]
    stream = [json.loads(line) for line in out.stdout.splitlines()]  # JSON Lines only
    assert stream[0]["type"] == "run_started" and stream[-1]["type"] == "run_finished"
    assert stream[-1]["result"] == "ok"
    assert any(e["type"] == "gate" and e.get("gate") == "handshake" for e in stream)

    # No two HBR/Canister restarts overlapped, and HBRs went before Canisters.
    windows = restart_windows(lab, t0)
    serial = [n for n, r in lab.roles.items() if r in ("hbr", "canister")]
    spans = sorted(windows[n] for n in serial)
    assert len(spans) == len(serial)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start
    hbr_end = max(windows[n][1] for n, r in lab.roles.items() if r == "hbr")
    can_start = min(windows[n][0] for n, r in lab.roles.items() if r == "canister")
    assert hbr_end <= can_start
    # A service that was stopped before stays stopped (never started by the tool).
    for name, before in stopped_before.items():
        after = services(lab, name)
        assert all(after[svc] == "Stopped" for svc in before), name
    status = status_json(lab)
    assert status["consistent"] is True, status["findings"]
    for name in tls_hosts(lab):
        row = next(h for h in status["hosts"] if h["name"] == name)
        assert row["facts"]["enable_tls"] == 1
        assert row["handshakes"]["data_service"]["kind"] == "tls"

    # Running it again changes nothing: every step finds its work done.
    t_again = time.time()
    again = fleet("rollout", str(lab.inventory), "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert changes(lab, t_again) == []
    outcomes = {
        json.loads(line).get("outcome")
        for line in again.stdout.splitlines()
        if json.loads(line)["type"] == "step_finished"
    }
    assert outcomes <= {"ok", "skipped"}

    t1 = time.time()
    back = fleet("rollback", str(lab.inventory), "--yes")
    assert back.returncode == 0, back.stderr
    windows = restart_windows(lab, t1)
    spans = sorted(windows[n] for n in serial)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start
    status = status_json(lab)
    assert status["consistent"] is True, status["findings"]
    for name in tls_hosts(lab):
        row = next(h for h in status["hosts"] if h["name"] == name)
        assert row["facts"]["enable_tls"] == 0
        assert row["handshakes"]["data_service"]["kind"] == "plain"

    history = fleet("history", str(lab.inventory), "--json")
    runs = json.loads(history.stdout)["runs"]
    assert [r["command"] for r in runs[:2]] == ["rollback", "rollout"]
    assert all(r["outcome"] == "ok" for r in runs[:2])
    assert_no_secret(
        lab, out.stdout, out.stderr, back.stdout, back.stderr, plan_file.read_text(), history.stdout
    )


def test_rollout_over_ntlm_http_with_a_flaky_host(tmp_path):
    """Also the live Data Service log naming (TLDataService.log, older days dated) with an HBR
    whose service has run for days (`log_rolled`: no startup block in its newest log): the
    vendor's gate ('TLS Port:' after the restart) still runs and passes on every host."""
    with start_lab(
        tmp_path / "lab",
        http_inventory=True,
        topology={"portal": 1, "hbr": 1, "canister": 2, "rtv": 1},
        log_style="live",
        faults={"hbr01": {"log_rolled": True}},
    ) as lab:
        assert "scheme: http" in lab.inventory.read_text()
        assert b"Starting HTTP Server" not in newest_data_service_log(lab, "hbr01")
        set_fault(lab, "can01", {"flaky": {"count": 2}})
        out = fleet("rollout", str(lab.inventory), "--yes", "--json")
        assert out.returncode == 0, out.stderr
        gates = {
            e["host"]: e
            for e in map(json.loads, out.stdout.splitlines())
            if e["type"] == "gate" and e.get("gate") == "data_service_log"
        }
        assert set(gates) == set(tls_hosts(lab))
        assert all(e["outcome"] == "ok" and "TLS Port" in e["message"] for e in gates.values())
        status = status_json(lab)
        assert status["consistent"] is True, status["findings"]
        # The RTV workstation got the tools and the certificate, but never enable or restart.
        rtv = next(h for h in status["hosts"] if h["name"] == "rtv01")
        assert rtv["facts"]["security"]["cert_sha256"] == status["reference"]["sha256"]
        assert not [
            e for e in events(lab) if e["host"] == "rtv01" and e["kind"] in ("service", "iisreset")
        ]
        # Both injected 500s were served (the lab drops the fault once its count is spent).
        assert "flaky" not in json.loads((lab.dir / "hosts/can01/faults.json").read_text())
        assert_no_secret(lab, out.stdout, out.stderr)


def test_preflight_blocker_changes_nothing(tmp_path):
    faults = {"can02": {"data_service_23443": True, "log_rolled": True}}
    with start_lab(tmp_path / "lab", faults=faults) as lab:
        # the 23443 startup block is days old: only an older log file holds it
        assert b"Starting HTTP Server" not in newest_data_service_log(lab, "can02")
        set_fault(lab, "hbr01", {"unreachable": True})  # and one host does not answer at all
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes", "--json")
        assert out.returncode == 3, out.stderr
        finished = json.loads(out.stdout.splitlines()[-1])
        assert finished["result"] == "blocked"
        assert sorted(finished["blockers"]) == ["can02", "hbr01"]
        assert "cannot read facts" in finished["blockers"]["hbr01"][0]
        assert "23443" in finished["blockers"]["can02"][0]
        human = fleet("rollout", str(lab.inventory), "--yes")
        assert human.returncode == 3
        assert "Preflight blockers (nothing was changed)" in human.stderr
        assert "can02: " in human.stderr and "23443" in human.stderr
        assert changes(lab, t0) == []
        assert not (lab.dir / "TCXcert.pfx").exists()  # not even the certificate was made


def test_enable_failure_leaves_tls_off_everywhere(lab):
    set_fault(lab, "can02", {"enable_fails": True})
    t0 = time.time()
    out = fleet("rollout", str(lab.inventory), "--yes")
    assert out.returncode == 1, out.stderr
    assert "enable" in out.stderr and "can02" in out.stderr
    for name in tls_hosts(lab):
        assert registry_value(lab, name, "EnableTLS") in (0, None), name
    assert not [e for e in changes(lab, t0) if e["kind"] in ("service", "iisreset")]


def test_service_start_failure_halts_then_rerun_completes(lab):
    set_fault(lab, "can02", {"service_start_fails": True})
    t0 = time.time()
    out = fleet("rollout", str(lab.inventory), "--yes")
    assert out.returncode == 1, out.stderr
    assert "can02" in out.stderr and "fleet status" in out.stderr
    touched = restart_windows(lab, t0)
    assert {"hbr01", "hbr02", "can01", "can02"} <= set(touched)
    assert "can03" not in touched and "portal01" not in touched  # later hosts untouched

    set_fault(lab, "can02", {})
    t1 = time.time()
    again = fleet("rollout", str(lab.inventory), "--yes")
    assert again.returncode == 0, again.stderr
    touched = restart_windows(lab, t1)
    assert not {"hbr01", "hbr02", "can01"} & set(touched)  # passed before: not restarted
    assert {"can02", "can03", "portal01"} <= set(touched)
    status = status_json(lab)
    assert status["consistent"] is True, status["findings"]


def rollout_until_restart_of(lab, host, since, *extra: str, command: str = "rollout"):
    """Start `fleet rollout --yes` (or `command`) in the background and return it (still
    running) once the lab shows `host`'s services changing state."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tealeaf_fleet", command, str(lab.inventory), "--yes", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["host"] == host and e["kind"] == "service" for e in events(lab, since)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the rollout ended before {host}'s restart"
    return proc


def test_sigkill_mid_rolling_restart_resumes(tmp_path):
    with start_lab(
        tmp_path / "lab", restart_s=1.0, topology={"portal": 1, "hbr": 3, "canister": 1}
    ) as lab:
        t0 = time.time()
        proc = rollout_until_restart_of(lab, "hbr02", t0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
        proc.stderr.close()
        db = sqlite3.connect(lab.dir / ".tealeaf-fleet" / "journal.sqlite")
        assert db.execute("SELECT outcome FROM runs").fetchall() == [(None,)]
        wait_until_settled(lab, "hbr02")  # the host finishes what it was doing on its own
        t1 = time.time()
        again = fleet("rollout", str(lab.inventory), "--yes")
        assert again.returncode == 0, again.stderr
        assert "took over the lock" in again.stderr
        touched = restart_windows(lab, t1)
        assert "hbr01" not in touched  # restarted and gated before the kill
        assert "hbr03" in touched
        status = status_json(lab)
        assert status["consistent"] is True, status["findings"]


def test_concurrent_run_is_refused(lab):
    with Journal(lab.dir / ".tealeaf-fleet") as journal:
        journal.acquire(command="rollout")
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes")
    assert out.returncode == 1
    assert "another run holds" in out.stderr and f"pid {os.getpid()}" in out.stderr
    assert changes(lab, t0) == []


def test_stale_approved_plan_exits_4(lab, tmp_path):
    plan_file = tmp_path / "approved.json"
    made = fleet("plan", str(lab.inventory), "--format", "json", "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    fresh = fleet("rollout", str(lab.inventory), "--approved-plan", str(plan_file), "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    text = lab.inventory.read_text()
    lab.inventory.write_text(text.replace("health_timeout_s: 60", "health_timeout_s: 61"))
    t0 = time.time()
    stale = fleet("rollout", str(lab.inventory), "--approved-plan", str(plan_file), "--yes")
    assert stale.returncode == 4, stale.stderr
    assert "stale" in stale.stderr and "inventory" in stale.stderr
    wrong = fleet("rollback", str(lab.inventory), "--approved-plan", str(plan_file), "--yes")
    assert wrong.returncode == 4 and "playbook" in wrong.stderr
    assert changes(lab, t0) == []


def test_refuses_without_yes_when_not_interactive(lab):
    out = fleet("rollout", str(lab.inventory))
    assert out.returncode == 2
    assert "--yes" in out.stderr
    dry = fleet("rollout", str(lab.inventory), "--dry-run")
    assert dry.returncode == 0 and "Plan digest" in dry.stdout


def test_ctrl_c_stops_between_steps_and_the_rerun_resumes(tmp_path):
    with start_lab(
        tmp_path / "lab", restart_s=0.6, topology={"portal": 1, "hbr": 3, "canister": 1}
    ) as lab:
        t0 = time.time()
        proc = rollout_until_restart_of(lab, "hbr01", t0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "rerun `fleet rollout" in err
        touched = restart_windows(lab, t0)
        assert "hbr01" in touched and "hbr03" not in touched and "can01" not in touched
        db = sqlite3.connect(lab.dir / ".tealeaf-fleet" / "journal.sqlite")
        assert db.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",)]
        t1 = time.time()
        again = fleet("rollout", str(lab.inventory), "--yes")
        assert again.returncode == 0, again.stderr
        assert "hbr01" not in restart_windows(lab, t1)  # finished before the Ctrl-C took hold


def test_certificate_from_tlstool_on_the_first_server(tmp_path):
    """TLSTool.exe create and import under the default install folder, which has spaces and
    parentheses: TLSTool gets the PFX by its bare name in Tools, as the vendor runs it."""
    with start_lab(
        tmp_path / "lab",
        topology={"portal": 1, "hbr": 1, "canister": 1, "rtv": 1},
        install_dir=PROGRAM_FILES_DIR,
    ) as lab:
        text = lab.inventory.read_text()
        lab.inventory.write_text(text.replace("source: generate", "source: tlstool"))
        out = fleet("rollout", str(lab.inventory), "--yes")
        assert out.returncode == 0, out.stderr
        created = [e for e in events(lab) if e["kind"] == "tlstool" and e.get("verb") == "create"]
        assert [e["host"] for e in created] == ["portal01"]  # once, on the first Tealeaf server
        assert (lab.dir / "TCXcert.pfx").stat().st_mode & 0o077 == 0
        status = status_json(lab)
        assert status["consistent"] is True and status["reference"]["source"] == "pfx"
        assert_no_secret(lab, out.stdout, out.stderr)


def test_approved_plan_with_facts_goes_stale_when_a_host_changes(lab, tmp_path):
    plan_file = tmp_path / "facts-plan.json"
    made = fleet("plan", str(lab.inventory), "--facts", "--format", "json", "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    assert json.loads(plan_file.read_text())["facts_digest"]
    same = fleet("rollout", str(lab.inventory), "--approved-plan", str(plan_file), "--dry-run")
    assert same.returncode == 0, same.stderr
    lab.host("hbr02").stop_service("TeaLeafHBR")  # someone stops a service after approval
    stale = fleet("rollout", str(lab.inventory), "--approved-plan", str(plan_file), "--yes")
    assert stale.returncode == 4, stale.stderr
    assert "facts" in stale.stderr


def test_live_view_and_line_view_render_events():
    import io

    from rich.console import Console

    from tealeaf_fleet.cli.rollout import LineView, LiveView
    from tealeaf_fleet.engine.events import EventBus
    from tealeaf_fleet.secrets import Secret

    secret = Secret("View-S3cret-1", source="test")
    bus, live, stream = EventBus(), LiveView(), io.StringIO()
    bus.subscribe(live)
    bus.subscribe(LineView(stream))
    bus.run = 7
    bus.emit("run_started", message="rollout inv.yaml", resumes=[5])
    bus.emit(
        "phase_started",
        phase="restart_hbr",
        action="restart",
        strategy="rolling",
        hosts=["hbr01", "hbr02"],
        index=7,
        of=10,
    )
    bus.emit("step_started", phase="restart_hbr", host="hbr01", action="restart")
    bus.emit(
        "gate",
        phase="restart_hbr",
        host="hbr01",
        action="restart",
        outcome="ok",
        gate="handshake",
        message="Data Service TLS with the PFX's certificate",
    )
    bus.emit(
        "step_finished",
        phase="restart_hbr",
        host="hbr02",
        action="restart",
        outcome="failed",
        message=f"TLSTool said {secret.reveal()}",
    )
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None).print(live.renderable())
    screen = buf.getvalue()
    assert "phase 7/10: restart_hbr (rolling)" in screen
    assert "hbr01" in screen and "restarting..." in screen
    assert "hbr02" in screen and "failed" in screen
    assert "hbr01 handshake: ok" in screen
    lines = stream.getvalue()
    assert "run 7: rollout inv.yaml (resuming run 5)" in lines
    assert "== [7/10] restart_hbr" in lines and "hbr02: restart failed" in lines
    assert secret.reveal() not in screen + lines


def test_restart_reboot_reboots_instead(tmp_path):
    """restart: reboot, on a host where someone else already scheduled a shutdown (in ten
    minutes): the reboot op replaces it, and the host restarts once."""
    faults = {"hbr01": {"shutdown_scheduled": True}}
    with start_lab(tmp_path / "lab", topology={"hbr": 1}, faults=faults) as lab:
        text = lab.inventory.read_text()
        lab.inventory.write_text(text.replace("restart: services", "restart: reboot"))
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes")
        assert out.returncode == 0, out.stderr
        reboots = [e for e in events(lab, t0) if e["kind"] == "reboot"]
        assert [e["host"] for e in reboots][:1] == ["hbr01"]
        assert [e["state"] for e in reboots].count("down") == 1
        assert lab.host("hbr01").pending_shutdown() is None
        assert "rebooted" in out.stderr
        assert "replaced a shutdown someone else had scheduled" in out.stderr
        status = status_json(lab)
        assert status["consistent"] is True, status["findings"]


def test_prepare_imports_everywhere_and_enables_nothing(tmp_path):
    """The vendor recommends the certificate pair on every Windows server even with TLS off:
    `--playbook prepare` copies and imports it, and neither enables TLS nor restarts anything.
    A later rollout reuses that certificate and skips the copies and imports."""
    with start_lab(
        tmp_path / "lab",
        topology={"portal": 1, "hbr": 1, "canister": 1, "rtv": 1},
        install_dir=PROGRAM_FILES_DIR,
    ) as lab:
        t0 = time.time()
        done = fleet("rollout", str(lab.inventory), "--playbook", "prepare", "--yes")
        assert done.returncode == 0, done.stderr
        assert not restart_windows(lab, t0)  # nothing restarted
        assert all(registry_value(lab, h, "EnableTLS") in (None, 0) for h in tls_hosts(lab))
        status = status_json(lab)
        assert status["consistent"] is True, status["findings"]
        pfx_sha = status["reference"]["sha256"]
        for row in status["hosts"]:
            if row["role"] != "pca":
                assert row["facts"]["security"]["cert_sha256"] == pfx_sha, row["name"]
        t1 = time.time()
        rollout = fleet("rollout", str(lab.inventory), "--yes")
        assert rollout.returncode == 0, rollout.stderr
        tlstool_verbs = [e["verb"] for e in events(lab, t1) if e["kind"] == "tlstool"]
        assert "import" not in tlstool_verbs and "create" not in tlstool_verbs
        assert tlstool_verbs.count("enable") == len(tls_hosts(lab))
        assert fleet_status_ok(lab, pfx_sha)
        assert_no_secret(lab, done.stdout, done.stderr, rollout.stdout, rollout.stderr)


def fleet_status_ok(lab: Lab, pfx_sha: str) -> bool:
    status = status_json(lab)
    return status["consistent"] is True and status["reference"]["sha256"] == pfx_sha


def test_preflight_blocks_a_string_enable_tls_and_waits_for_a_starting_service(tmp_path):
    """Field fidelity on one lab: EnableTLS stored as the REG_SZ "true" blocks the rollout
    (exit 3, naming the value) and changes nothing; a TeaLeaf service found in Start Pending is
    waited on, then the rollout proceeds."""
    with start_lab(tmp_path / "lab", topology={"hbr": 1, "canister": 1}) as lab:
        lab.host("hbr01").set_faults({"enable_tls_string": True})  # applied now, before t0
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes", "--json")
        assert out.returncode == 3, out.stderr
        finished = json.loads(out.stdout.splitlines()[-1])
        assert finished["result"] == "blocked" and list(finished["blockers"]) == ["hbr01"]
        blocker = finished["blockers"]["hbr01"][0]
        assert "EnableTLS" in blocker and "a REG_SZ holding 'true'" in blocker
        assert changes(lab, t0) == []

        lab.host("hbr01").set_faults({"service_start_pending": {"seconds": 3}})
        t1 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes", "--json")
        assert out.returncode == 0, out.stderr + out.stdout[-3000:]
        stream = [json.loads(line) for line in out.stdout.splitlines()]
        said = [
            e["message"]
            for e in stream
            if e["type"] == "message"
            and e.get("host") == "hbr01"
            and e["phase"] == "preflight"
            and not e["message"].startswith("warning")
        ]
        assert len(said) == 2 and "(StartPending) to settle" in said[0], said
        assert said[1] == "services settled"
        pending = [
            e["name"]
            for e in events(lab, t1)
            if e["kind"] == "service" and e.get("state") == "StartPending"
        ]
        first_tlstool = next(e["ts"] for e in events(lab, t1) if e["kind"] == "tlstool")
        settled = [
            e["ts"]
            for e in events(lab, t1)
            if e["kind"] == "service" and e["name"] == pending[0] and e["state"] == "Running"
        ]
        assert settled and settled[0] < first_tlstool  # judged only after it ran


# --- hardening: approved plans are rebuilt, one run per fleet, signals ---------------------


def test_tampered_approved_plan_is_refused_and_touches_nothing(lab, tmp_path):
    """An approved plan whose HBR restarts were switched to parallel, digests left intact, is
    refused (exit 4) naming the first difference; no host is contacted, let alone changed."""
    plan_file = tmp_path / "approved.json"
    made = fleet("plan", str(lab.inventory), "--format", "json", "--out", str(plan_file))
    assert made.returncode == 0, made.stderr
    plan = json.loads(plan_file.read_text())
    index = next(i for i, p in enumerate(plan["phases"]) if p["name"] == "restart_hbr")
    plan["phases"][index]["strategy"] = "parallel"
    plan_file.write_text(json.dumps(plan, indent=2))
    t0 = time.time()
    for command in (("--yes",), ("--dry-run",)):
        out = fleet("rollout", str(lab.inventory), "--approved-plan", str(plan_file), *command)
        assert out.returncode == 4, out.stderr
        lines = out.stderr.splitlines()
        assert len(lines) == 1, out.stderr
        assert f"phases[{index}].strategy: approved 'parallel', rebuilt 'rolling'" in lines[0]
    assert changes(lab, t0) == []
    assert not [e for e in events(lab, t0) if e["kind"] == "request"]  # not even a Command


def test_second_run_on_another_state_dir_is_refused_and_sigterm_stops_resumably(tmp_path, lock_dir):
    """Two rollouts against the same lab with different --state-dir: the second is refused,
    naming a host, the first's pid and state folder. SIGTERM then stops the first between steps
    (exit 143, journal `interrupted`, every lock released) and a rerun resumes. A second SIGTERM
    during a rollback's restart stops at once: the step in flight is left unfinished."""
    with start_lab(
        tmp_path / "lab", restart_s=1.0, topology={"portal": 1, "hbr": 3, "canister": 1}
    ) as lab:
        first_dir, other_dir = tmp_path / "state-a", tmp_path / "state-b"
        t0 = time.time()
        proc = rollout_until_restart_of(lab, "hbr01", t0, "--state-dir", str(first_dir))
        second = fleet("rollout", str(lab.inventory), "--yes", "--state-dir", str(other_dir))
        assert second.returncode == 1, second.stderr
        assert "another run is working on" in second.stderr
        assert f"pid {proc.pid}" in second.stderr and str(first_dir) in second.stderr
        refused = sqlite3.connect(other_dir / "journal.sqlite")
        assert refused.execute("SELECT count(*) FROM runs").fetchone() == (0,)

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        assert "rerun `fleet rollout" in err
        db = sqlite3.connect(first_dir / "journal.sqlite")
        assert db.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",)]
        assert list(lock_dir.glob("*.lock")) == []  # released, not left to be taken over
        touched = restart_windows(lab, t0)
        assert "hbr01" in touched and "hbr03" not in touched
        t1 = time.time()
        again = fleet("rollout", str(lab.inventory), "--yes", "--state-dir", str(first_dir))
        assert again.returncode == 0, again.stderr
        assert "took over" not in again.stderr
        assert "hbr01" not in restart_windows(lab, t1)  # resumed: passed before the SIGTERM

        t2 = time.time()
        back = rollout_until_restart_of(
            lab, "hbr01", t2, "--state-dir", str(first_dir), command="rollback"
        )
        set_fault(lab, "hbr01", {"slow": {"ms": 1500}})  # its gates take a while: in flight
        back.send_signal(signal.SIGTERM)
        wait_for_line(back, "finishing the running steps")
        back.send_signal(signal.SIGTERM)
        _, err = back.communicate(timeout=60)
        assert back.returncode == 143, err
        assert "stopped at once" in err
        last = db.execute("SELECT id, outcome, message FROM runs ORDER BY id DESC").fetchone()
        assert last[1] == "interrupted" and "stopped at once" in last[2]
        unfinished = db.execute(
            "SELECT host, action FROM steps WHERE run=? AND outcome IS NULL", (last[0],)
        ).fetchall()
        assert unfinished == [("hbr01", "restart")]  # abandoned, not waited for
        assert list(lock_dir.glob("*.lock")) == []
        set_fault(lab, "hbr01", {})
        wait_until_settled(lab, "hbr01")


def wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 60) -> None:
    """Read the process's stderr until a line holds `text` (bounded by `timeout_s`)."""
    import threading

    found = threading.Event()

    def reader() -> None:
        for line in proc.stderr:
            if text in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout_s), f"no line with {text!r} on stderr"
