"""The `prerequisites` playbook end to end through the real stack (the `fleet` CLI in a
subprocess, pywinrm to the lab, real handshakes, real SQLite): a 2008 R2 fleet without the
vendor's TLS 1.2 keys is refused by the rollout and by `plan --facts`, fixed and rebooted by
`--playbook prerequisites` (never two HBR/Canister reboots at once, per the lab's
events.jsonl), then rolled out; a second prerequisites run writes and reboots nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tealeaf_fleet.lab.fleet import Lab
from test_rollout_e2e import (  # the e2e helpers and the shared host-lock folder
    assert_no_secret,
    changes,
    events,
    fleet,
    lock_dir,  # noqa: F401  (autouse fixture)
    module_lock_dir,  # noqa: F401
    start_lab,
)

pytestmark = pytest.mark.slow

TOPOLOGY = {"portal": 1, "hbr": 2, "canister": 2}
SCHANNEL = r"HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL"
TLS12 = SCHANNEL + r"\Protocols\TLS 1.2"
DOTNET_V4 = r"HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319"
DOTNET_WOW_V2 = r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework\v2.0.50727"
WINHTTP = r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp"
WINHTTP_WOW = (
    r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp"
)
SECURITY = r"HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology\security"


def r2_lab(folder: Path, **kw) -> Lab:
    """Every server 2008 R2 without the TLS 1.2 server keys (the fault removes them)."""
    faults = {
        name: {"schannel_tls12_missing": True}
        for name in ("portal01", "hbr01", "hbr02", "can01", "can02")
    }
    return start_lab(folder, topology=TOPOLOGY, os="2008r2", faults=faults, **kw)


def reg(lab: Lab, host: str, key: str, name: str):
    return lab.host(host).reg_get(key, name)


def reg_kind(lab: Lab, host: str, key: str, name: str):
    return lab.host(host).reg_kind(key, name)


def reboot_windows(lab: Lab, since: float) -> dict[str, tuple[float, float]]:
    """Per host: from its reboot being scheduled to the end of its reboot step (the gates
    passed), from the lab's events and the run's JSON events together."""
    out: dict[str, tuple[float, float]] = {}
    for e in events(lab, since):
        if e["kind"] == "reboot" and e.get("state") == "scheduled":
            out[e["host"]] = (e["ts"], e["ts"])
        if e["kind"] == "reboot" and e.get("state") == "up":
            lo, _ = out[e["host"]]
            out[e["host"]] = (lo, e["ts"])
    return out


def step_finish_times(stdout: str, action: str) -> dict[str, float]:
    """host -> time of its `step_finished` event for `action` (JSON Lines on stdout)."""
    out = {}
    for line in stdout.splitlines():
        event = json.loads(line)
        if event.get("type") == "step_finished" and event.get("action") == action:
            out[event["host"]] = event["ts"]
    return out


def test_r2_without_tls12_is_blocked_then_fixed_by_prerequisites(tmp_path):
    with r2_lab(tmp_path / "lab") as lab:
        inv = str(lab.inventory)
        t0 = time.time()

        # 1. the change board sees the blockers before the change: exit 3, plan written
        plan_file = tmp_path / "plan.json"
        planned = fleet("plan", inv, "--facts", "--format", "json", "--out", str(plan_file))
        assert planned.returncode == 3, planned.stderr
        assert "preflight would block" in planned.stderr
        plan = json.loads(plan_file.read_text())
        assert plan["preflight"]["checked"] and plan["preflight"]["blocked"]
        blocked = {
            f["hosts"][0]
            for f in plan["preflight"]["findings"]
            if f["code"] == "schannel_tls12_server" and f["severity"] == "blocker"
        }
        assert blocked == {"portal01", "hbr01", "hbr02", "can01", "can02"}
        assert all(
            "TLS 1.2\\Server\\Enabled = 1" in f["message"]
            for f in plan["preflight"]["findings"]
            if f["code"] == "schannel_tls12_server"
        )
        # each host's own findings, with its own text (HBRs also miss TLSCertPassword)
        hbr_codes = {f["code"] for f in plan["preflight"]["findings"] if f["hosts"] == ["hbr01"]}
        assert "tls_cert_password_absent" in hbr_codes
        can_codes = {f["code"] for f in plan["preflight"]["findings"] if f["hosts"] == ["can01"]}
        assert "tls_cert_password_absent" not in can_codes
        markdown = fleet("plan", inv, "--facts", "--format", "markdown")
        assert markdown.returncode == 3
        assert "## Preflight findings" in markdown.stdout and "BLOCKED" in markdown.stdout
        assert "## Pre-check: vendor prerequisites" in markdown.stdout
        assert "## Deliberate departures from the vendor text" in markdown.stdout
        dry = fleet("rollout", inv, "--dry-run")
        assert dry.returncode == 3, dry.stderr
        assert "schannel_tls12_server" in dry.stdout

        # 2. the rollout itself refuses at preflight and changes nothing
        refused = fleet("rollout", inv, "--yes")
        assert refused.returncode == 3, refused.stderr
        assert changes(lab, t0) == []

        # 3. prerequisites: writes what is missing, reboots HBRs then Canisters one at a time
        t1 = time.time()
        fixed = fleet("rollout", inv, "--playbook", "prerequisites", "--yes", "--json")
        assert fixed.returncode == 0, fixed.stderr
        for host in ("portal01", "hbr01", "hbr02", "can01", "can02"):
            assert reg(lab, host, TLS12 + r"\Server", "Enabled") == 1
            assert reg(lab, host, TLS12 + r"\Server", "DisabledByDefault") == 0
            assert reg(lab, host, TLS12 + r"\Client", "Enabled") == 1
            assert reg(lab, host, DOTNET_V4, "SchUseStrongCrypto") == 1
            assert reg(lab, host, DOTNET_WOW_V2, "SystemDefaultTlsVersions") == 1
            assert reg(lab, host, WINHTTP, "DefaultSecureProtocols") == 0xA80
            assert reg(lab, host, WINHTTP_WOW, "DefaultSecureProtocols") == 0xA80
            assert reg_kind(lab, host, WINHTTP, "DefaultSecureProtocols") == "DWord"
        for hbr in ("hbr01", "hbr02"):
            assert reg_kind(lab, hbr, SECURITY, "TLSCertPassword") == "String"
        assert reg(lab, "can01", SECURITY, "TLSCertPassword") is None  # HBRs only
        written = {
            (e["host"], e["key"], e["name"]) for e in changes(lab, t1) if e["kind"] == "registry"
        }
        # exactly what was missing, nothing outside the vendor's list (SendTrustedIssuerList
        # was already 0 here: not rewritten)
        dotnet_keys = [
            DOTNET_V4,
            DOTNET_WOW_V2,
            r"HKLM:\SOFTWARE\Microsoft\.NETFramework\v2.0.50727",
            r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework\v4.0.30319",
        ]
        per_host = {
            (TLS12 + side, name)
            for side in (r"\Server", r"\Client")
            for name in ("Enabled", "DisabledByDefault")
        }
        per_host |= {
            (key, name)
            for key in dotnet_keys
            for name in ("SchUseStrongCrypto", "SystemDefaultTlsVersions")
        }
        per_host |= {(WINHTTP, "DefaultSecureProtocols"), (WINHTTP_WOW, "DefaultSecureProtocols")}
        expected = {
            (host, key, name)
            for host in ("portal01", "hbr01", "hbr02", "can01", "can02")
            for key, name in per_host
        }
        expected |= {(hbr, SECURITY, "TLSCertPassword") for hbr in ("hbr01", "hbr02")}
        assert written == expected

        windows = reboot_windows(lab, t1)
        assert set(windows) == {"portal01", "hbr01", "hbr02", "can01", "can02"}
        finished = step_finish_times(fixed.stdout, "reboot")
        serial = sorted(
            (windows[h][0], finished[h], h) for h in ("hbr01", "hbr02", "can01", "can02")
        )
        assert [h for _, _, h in serial] == ["hbr01", "hbr02", "can01", "can02"]
        for (_, end, host), (start, _, nxt) in zip(serial, serial[1:], strict=False):
            assert end <= start, f"{nxt} began rebooting before {host} was healthy"
        assert windows["portal01"][0] >= finished["can02"]  # the rest after the Canisters

        # 4. a second run writes nothing and reboots nothing
        t2 = time.time()
        again = fleet("rollout", inv, "--playbook", "prerequisites", "--yes")
        assert again.returncode == 0, again.stderr
        assert [e for e in changes(lab, t2) if e["kind"] in ("registry", "reboot")] == []

        # 5. the plan is clear now, and the rollout succeeds
        clear = fleet("plan", inv, "--facts", "--format", "json")
        assert clear.returncode == 0, clear.stderr
        cleared = json.loads(clear.stdout)
        assert not cleared["preflight"]["blocked"]
        # the pre-check now says what the prerequisites did and that nothing is left
        for row in cleared["prechecks"]:
            assert row["known"] and row["needed"] == [] and row["reboot_pending"] is None
            assert row["written"] and "schannel" in row["written"][0], row
        done = fleet("rollout", inv, "--yes")
        assert done.returncode == 0, done.stderr
        # no password in any output, the plan file, the journal or the run logs
        outputs = [planned, markdown, dry, refused, fixed, again, clear, done]
        texts = [p.stdout + p.stderr for p in outputs] + [plan_file.read_text()]
        assert_no_secret(lab, *texts)


def status_json(inv: str) -> dict:
    out = fleet("status", inv, "--json")
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def findings_of(status: dict, host: str) -> list[dict]:
    return [f for f in status["findings"] if host in f["hosts"]]


def test_reboot_false_leaves_a_pending_reboot_that_blocks_until_rebooted(tmp_path):
    """`prerequisites.reboot: false`: the writes happen (EnableTLS preset without a pair is
    set to 0, no restart), no host reboots, status and preflight say "reboot pending since",
    and the rollout is blocked by the pending SCHANNEL reboot on 2008 R2 until a prerequisites
    run with reboots on has rebooted the hosts."""
    faults = {"hbr01": {"schannel_tls12_missing": True}, "can01": {"enable_tls_preset": True}}
    with start_lab(
        tmp_path / "lab", topology={"hbr": 1, "canister": 1}, os="2008r2", faults=faults
    ) as lab:
        inv = str(lab.inventory)
        text = lab.inventory.read_text()
        lab.inventory.write_text(
            text.replace("hosts:\n", "prerequisites:\n  reboot: false\nhosts:\n", 1)
        )

        # EnableTLS=1 without a pair: the Data Service did not start; status must not advise
        # the restart that would fail again
        before = status_json(inv)
        can01 = findings_of(before, "can01")
        assert any(f["code"] == "prerequisites_missing" for f in can01)
        advice = [f["message"] for f in can01 if "restart the TeaLeaf services" in f["message"]]
        assert advice and all("do NOT restart the TeaLeaf services" in m for m in advice), advice

        t0 = time.time()
        run = fleet("rollout", inv, "--playbook", "prerequisites", "--yes", "--json")
        assert run.returncode == 0, run.stderr
        assert [e for e in changes(lab, t0) if e["kind"] == "reboot"] == []
        assert reg(lab, "can01", r"HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology", "EnableTLS") == 0
        assert reg(lab, "hbr01", TLS12 + r"\Server", "Enabled") == 1
        skipped = [
            json.loads(line)
            for line in run.stdout.splitlines()
            if '"step_finished"' in line and '"reboot"' in line
        ]
        assert {e["host"] for e in skipped} == {"hbr01", "can01"}
        assert all(
            e["outcome"] == "skipped" and "reboot pending since" in e["message"] for e in skipped
        )

        after = status_json(inv)
        pending = [f for f in after["findings"] if f["code"] == "reboot_pending"]
        assert {f["hosts"][0] for f in pending} == {"hbr01", "can01"}
        assert all(
            f["severity"] == "warning" and "reboot pending since" in f["message"] for f in pending
        )

        refused = fleet("rollout", inv, "--yes")
        assert refused.returncode == 3, refused.stderr
        assert "reboot pending since" in refused.stderr + refused.stdout
        planned = fleet("plan", inv, "--facts", "--format", "json")
        assert planned.returncode == 3
        blockers = [
            f
            for f in json.loads(planned.stdout)["preflight"]["findings"]
            if f["code"] == "reboot_pending"
        ]
        assert {f["hosts"][0] for f in blockers} == {"hbr01", "can01"}
        assert all(f["severity"] == "blocker" for f in blockers)

        # reboots on: the same playbook now writes nothing and reboots both, one at a time
        lab.inventory.write_text(lab.inventory.read_text().replace("reboot: false", "reboot: true"))
        t1 = time.time()
        rebooted = fleet("rollout", inv, "--playbook", "prerequisites", "--yes", "--json")
        assert rebooted.returncode == 0, rebooted.stderr
        # can01's Data Service and TMS (and the other services that read EnableTLS) had not
        # started (EnableTLS=1 without a pair): Auto, so the boot starts them, and the gates
        # expected them running, plain, after the boot
        can_reboot = [
            json.loads(line)
            for line in rebooted.stdout.splitlines()
            if '"step_finished"' in line and '"can01"' in line and '"reboot"' in line
        ]
        message = can_reboot[0]["message"]
        started = message.rsplit("; ", 1)[-1]
        assert started.endswith("(start mode Auto) started at boot"), message
        assert "TeaLeafDataService" in started and "TeaLeafTMS" in started
        assert "'Port: " in message
        assert [e for e in changes(lab, t1) if e["kind"] == "registry"] == []
        assert set(reboot_windows(lab, t1)) == {"hbr01", "can01"}
        assert not [f for f in status_json(inv)["findings"] if f["code"] == "reboot_pending"]
        done = fleet("rollout", inv, "--yes")
        assert done.returncode == 0, done.stderr


def test_a_refused_write_halts_before_any_reboot_and_keeps_what_was_written_pending(tmp_path):
    """A key whose ACL refuses the write (lab fault `registry_write_denied`): the step fails
    naming the key, no host reboots, the values already written are journaled as waiting for
    a boot (status says so), and the rerun after the fix writes only what is left, then
    reboots."""
    faults = {
        "hbr01": {"schannel_tls12_missing": True, "registry_write_denied": {"keys": [WINHTTP]}}
    }
    with start_lab(
        tmp_path / "lab", topology={"hbr": 1, "canister": 1}, os="2008r2", faults=faults
    ) as lab:
        inv = str(lab.inventory)
        t0 = time.time()
        failed = fleet("rollout", inv, "--playbook", "prerequisites", "--yes")
        assert failed.returncode == 1, failed.stderr
        assert "Access to the registry key 'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows" in (
            failed.stderr
        )
        assert [e for e in changes(lab, t0) if e["kind"] == "reboot"] == []
        assert reg(lab, "hbr01", TLS12 + r"\Server", "Enabled") == 1  # written before the refusal
        assert reg(lab, "hbr01", WINHTTP, "DefaultSecureProtocols") is None
        pending = {
            f["hosts"][0]: f["message"]
            for f in status_json(inv)["findings"]
            if f["code"] == "reboot_pending"
        }
        assert set(pending) == {"hbr01", "can01"}
        assert "schannel" in pending["hbr01"]

        lab.host("hbr01").set_faults({})
        t1 = time.time()
        fixed = fleet("rollout", inv, "--playbook", "prerequisites", "--yes")
        assert fixed.returncode == 0, fixed.stderr
        rewritten = {(e["host"], e["key"]) for e in changes(lab, t1) if e["kind"] == "registry"}
        # what the refusal left: WinHTTP, and the HBR placeholder written after it
        assert rewritten == {("hbr01", WINHTTP), ("hbr01", WINHTTP_WOW), ("hbr01", SECURITY)}
        assert set(reboot_windows(lab, t1)) == {"hbr01", "can01"}


def test_a_host_lost_after_the_writes_still_owes_its_reboot(tmp_path, monkeypatch):
    """Every value lands, then the host stops answering before the facts are read again (the
    lab's `unreachable` fault switched on at the first request after the last write): the run
    fails, yet the reboot those writes need is journaled (it was, before each was sent), so
    status says "reboot pending" and the rerun, which has nothing left to write, reboots."""
    faults = {"hbr01": {"schannel_tls12_missing": True}}
    with start_lab(tmp_path / "lab", topology={"hbr": 1}, os="2008r2", faults=faults) as lab:
        host = lab.host("hbr01")
        record = host.record
        armed: list[bool] = []

        def unreachable_after_the_last_write(kind: str, **fields) -> None:
            record(kind, **fields)
            if kind == "registry" and fields.get("name") == "TLSCertPassword":
                armed.append(True)  # the HBR placeholder is the playbook's last write here
            elif armed and kind == "request" and fields.get("action") in ("Command", "Send"):
                host.set_faults({"schannel_tls12_missing": True, "unreachable": True})

        monkeypatch.setattr(host, "record", unreachable_after_the_last_write)
        inv = str(lab.inventory)
        t0 = time.time()
        lost = fleet("rollout", inv, "--playbook", "prerequisites", "--yes")
        assert lost.returncode != 0
        assert armed, "the placeholder was never written"
        monkeypatch.setattr(host, "record", record)
        host.set_faults({"schannel_tls12_missing": True})
        assert reg(lab, "hbr01", TLS12 + r"\Server", "Enabled") == 1
        assert [e for e in changes(lab, t0) if e["kind"] == "reboot"] == []
        pending = [f for f in status_json(inv)["findings"] if f["code"] == "reboot_pending"]
        assert [f["hosts"] for f in pending] == [["hbr01"]]
        assert "schannel" in pending[0]["message"]

        t1 = time.time()
        rerun = fleet("rollout", inv, "--playbook", "prerequisites", "--yes")
        assert rerun.returncode == 0, rerun.stderr
        assert [e for e in changes(lab, t1) if e["kind"] == "registry"] == []
        assert set(reboot_windows(lab, t1)) == {"hbr01"}


def test_tls12_keys_set_without_a_reboot_block_until_the_host_boots_with_them(tmp_path):
    """The SCHANNEL TLS 1.2 keys put back by hand (the fault removed) and never booted with:
    the registry looks right, but SCHANNEL read it at boot, so the TMS port refuses a TLS
    1.2-only handshake. Status warns, `plan --facts` and the rollout's preflight block
    (tls12_not_active), although the journal has no record of a change; the prerequisites
    playbook reboots both hosts, one at a time, and the reboot is proven by a TLS 1.2
    handshake to TMS."""
    faults = {name: {"schannel_tls12_missing": True} for name in ("hbr01", "can01")}
    with start_lab(
        tmp_path / "lab", topology={"hbr": 1, "canister": 1}, os="2008r2", faults=faults
    ) as lab:
        for name in faults:
            lab.host(name).set_faults({})  # the keys are back in the registry, no reboot
            assert lab.host(name).tls12_server_on() and not lab.host(name).tls12_at_boot()
        text = lab.inventory.read_text()  # no TealeafStatus values: no reboot owed for them
        lab.inventory.write_text(
            text.replace("hosts:\n", "prerequisites:\n  status_report_hosts: []\nhosts:\n", 1)
        )
        inv = str(lab.inventory)
        warned = {
            f["hosts"][0]: f
            for f in status_json(inv)["findings"]
            if f["code"] == "tls12_not_active"
        }
        assert set(warned) == {"hbr01", "can01"}
        assert warned["hbr01"]["severity"] == "warning"
        assert "TLS 1.2 not active since boot" in warned["hbr01"]["message"]

        plan_file = tmp_path / "plan.json"
        planned = fleet("plan", inv, "--facts", "--format", "json", "--out", str(plan_file))
        assert planned.returncode == 3, planned.stderr
        blocked = {
            f["hosts"][0]
            for f in json.loads(plan_file.read_text())["preflight"]["findings"]
            if f["code"] == "tls12_not_active" and f["severity"] == "blocker"
        }
        assert blocked == {"hbr01", "can01"}

        t1 = time.time()
        fixed = fleet("rollout", inv, "--playbook", "prerequisites", "--yes", "--json")
        assert fixed.returncode == 0, fixed.stderr
        windows = reboot_windows(lab, t1)
        assert set(windows) == {"hbr01", "can01"}
        finished = step_finish_times(fixed.stdout, "reboot")
        first, second = sorted(windows, key=lambda host: windows[host][0])
        assert finished[first] <= windows[second][0], (
            f"{second} rebooted before {first} was healthy"
        )
        proven = [
            e["message"]
            for e in map(json.loads, fixed.stdout.splitlines())
            if e.get("type") == "step_finished" and e.get("action") == "reboot"
        ]
        assert len(proven) == 2
        assert all("TLS 1.2 handshake on TMS port" in m for m in proven), proven
        assert all(lab.host(name).tls12_at_boot() for name in faults)
        after = status_json(inv)["findings"]
        assert not [f for f in after if f["code"] == "tls12_not_active"]


def test_a_32bit_session_blocks_the_prerequisites_before_any_write(tmp_path):
    """The WinRM session runs the 32-bit PowerShell (lab fault `powershell_32bit`): facts
    report the 64-bit .NET/WinHTTP values unreadable with the flag, and the prerequisites
    playbook's preflight blocks that host (exit 3) naming the 64-bit endpoint, before
    anything is written anywhere."""
    faults = {"hbr01": {"schannel_tls12_missing": True, "powershell_32bit": True}}
    with start_lab(
        tmp_path / "lab", topology={"hbr": 1, "canister": 1}, os="2008r2", faults=faults
    ) as lab:
        inv = str(lab.inventory)
        lab.host("hbr01").reg_set(DOTNET_V4, "SchUseStrongCrypto", 1)  # there, but unreadable
        t0 = time.time()
        blocked = fleet("rollout", inv, "--playbook", "prerequisites", "--yes")
        assert blocked.returncode == 3, blocked.stderr
        assert "32-bit PowerShell on 64-bit Windows (WOW64)" in blocked.stdout + blocked.stderr
        assert [e for e in changes(lab, t0) if e["kind"] in ("registry", "reboot")] == []
        found = findings_of(status_json(inv), "hbr01")
        wow = [f for f in found if f["code"] == "wow64_session"]
        assert wow and wow[0]["severity"] == "warning"
        assert "Microsoft.PowerShell32" in wow[0]["message"]
        assert not [
            f for f in findings_of(status_json(inv), "can01") if f["code"] == "wow64_session"
        ]
