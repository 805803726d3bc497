"""`fleet troubleshoot`: the vendor's checklist and its fixes, end to end against the lab (the
real CLI, pywinrm, real handshakes that the `ssl_cache_stale` fault makes the listeners refuse,
the journal), plus the checklist's wording from tables (no network)."""

from __future__ import annotations

import copy
import json

import pytest

from tealeaf_fleet.errors import HostUnreachable, InputError
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.journal import Journal
from tealeaf_fleet.status import Handshake, evaluate
from tealeaf_fleet.troubleshoot import FAIL, NOT_CHECKED, OK, checklist, fix_plan, limit_fleet
from test_rollout_e2e import assert_no_secret, events, fleet, start_lab
from test_status import HOSTS, ON, ON_SHAKES, OTHER, PFX, changed, facts

TOPOLOGY = {"portal": 1, "hbr": 1, "canister": 2}


def verdicts(stdout: str, title: str = "checklist") -> dict[str, tuple[str, str]]:
    """item -> (status, detail) from the lines under `title:`."""
    lines = stdout.split(f"{title}:\n", 1)[1].splitlines()
    out = {}
    for line in lines:
        if not line.startswith("  "):
            break
        status, rest = line[2:13].strip(), line[14:]
        item, detail = rest.split(": ", 1)
        out[item] = (status, detail)
    return out


@pytest.fixture(scope="module")
def rolled_out(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("troubleshoot")
    os.environ["TEALEAF_FLEET_LOCK_DIR"] = str(folder / "locks")
    with start_lab(folder / "lab", topology=TOPOLOGY) as lab:
        out = fleet("rollout", str(lab.inventory), "--yes")
        assert out.returncode == 0, out.stderr[-3000:]
        yield lab
    os.environ.pop("TEALEAF_FLEET_LOCK_DIR", None)


@pytest.mark.slow
def test_a_stale_ssl_cache_is_found_and_cured_by_clearing_it(rolled_out):
    lab = rolled_out
    out = fleet("troubleshoot", str(lab.inventory))
    assert out.returncode == 0, out.stdout + out.stderr
    assert {s for s, _ in verdicts(out.stdout).values()} == {OK}
    assert len(verdicts(out.stdout)) == 6  # one line per item

    lab.host("can01").set_faults({"ssl_cache_stale": True})
    out = fleet("troubleshoot", str(lab.inventory))
    assert out.returncode == 1
    found = verdicts(out.stdout)
    assert found["SSL session cache"][0] == FAIL
    assert found["SSL session cache"][1].startswith("can01 set up right but refuse")
    assert "--fix ssl-cache" in found["SSL session cache"][1]
    assert found["handshakes on every port"][0] == FAIL
    assert found["EnableTLS on every Tealeaf server"][0] == OK  # the rest of the list is fine

    since = events(lab)[-1]["ts"]
    out = fleet("troubleshoot", str(lab.inventory), "--fix", "ssl-cache", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert {s for s, _ in verdicts(out.stdout, "checklist after --fix ssl-cache").values()} == {OK}
    cleared = [e["host"] for e in events(lab, since) if e["kind"] == "ssl_cache"]
    assert sorted(cleared) == sorted(n for n in lab.roles if lab.roles[n] != "pca")
    # journaled like a run: its own run with one step per server, reportable
    with Journal(lab.dir / ".tealeaf-fleet") as journal:
        run = journal.runs(1)[0]
        assert (run.command, run.outcome) == ("troubleshoot", "ok")
        assert run.playbook == "troubleshoot --fix ssl-cache"
        records = journal.steps(run.id)
        steps = [(s.phase, s.host, s.outcome) for s in records]
    assert ("ssl_cache_canister", "can01", "changed") in steps and (
        "verify",
        "can01",
        "ok",
    ) in steps
    # the safety model: the HBR, then each Canister, one at a time, none overlapping
    serial = sorted(
        (s.started, s.finished, s.host)
        for s in records
        if s.phase.startswith("ssl_cache_") and s.phase != "ssl_cache_rest"
    )
    assert [h for _, _, h in serial] == ["hbr01", "can01", "can02"]
    assert all(a[1] <= b[0] for a, b in zip(serial, serial[1:], strict=False))
    report = fleet("report", str(lab.inventory))
    assert "run 2 (troubleshoot)" in report.stdout.splitlines()[0]
    assert_no_secret(lab, out.stdout, out.stderr, report.stdout)


@pytest.mark.slow
def test_restarting_cryptographic_services_cures_it_too_on_the_limited_host(rolled_out):
    lab = rolled_out
    lab.host("can02").set_faults({})
    lab.host("can02").set_faults({"ssl_cache_stale": True})
    assert fleet("troubleshoot", str(lab.inventory)).returncode == 1
    since = events(lab)[-1]["ts"]
    out = fleet(
        "troubleshoot", str(lab.inventory), "--fix", "cryptsvc", "--limit", "can02", "--yes"
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    restarted = {
        e["host"] for e in events(lab, since) if e["kind"] == "service" and e["name"] == "CryptSvc"
    }
    assert restarted == {"can02"}  # --limit: no other host touched
    assert fleet("troubleshoot", str(lab.inventory)).returncode == 0


@pytest.mark.slow
def test_reboot_fix_reboots_hbrs_then_canisters_one_at_a_time(rolled_out):
    lab = rolled_out
    lab.host("can01").set_faults({})
    lab.host("can01").set_faults({"ssl_cache_stale": True})
    since = events(lab)[-1]["ts"]
    out = fleet(
        "troubleshoot", str(lab.inventory), "--fix", "reboot", "--limit", "hbr,canister", "--yes"
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    windows: dict[str, list[float]] = {}
    for e in events(lab, since):
        if e["kind"] == "reboot" and e.get("state") in ("down", "up"):
            windows.setdefault(e["host"], []).append(e["ts"])
    assert set(windows) == {"hbr01", "can01", "can02"}  # the Portal was not in --limit
    order = sorted(windows, key=lambda h: windows[h][0])
    assert order[0] == "hbr01"
    spans = [(windows[h][0], windows[h][-1]) for h in order]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no overlap
    assert fleet("troubleshoot", str(lab.inventory)).returncode == 0


def test_a_fix_needs_yes_when_nobody_can_answer(rolled_out):
    out = fleet("troubleshoot", str(rolled_out.inventory), "--fix", "ssl-cache")
    assert out.returncode == 2 and "fleet: error:" in out.stderr and "--yes" in out.stderr
    out = fleet("troubleshoot", str(rolled_out.inventory), "--limit", "nosuch")
    assert out.returncode == 2 and "--limit" in out.stderr and "nosuch" in out.stderr


def test_unread_hosts_are_not_checked_never_ok():
    results = dict(ON)
    results["hbr01"] = HostUnreachable("connection refused", host="hbr01")
    shakes = copy.deepcopy(ON_SHAKES)
    del shakes["hbr01"]
    found = {v.item: v for v in checklist(evaluate(HOSTS, results, shakes, pfx_sha256=PFX))}
    for item in ("EnableTLS on every Tealeaf server", "certificate pair present"):
        assert found[item].status == NOT_CHECKED and "hbr01" in found[item].detail
    assert found["SSL session cache"].status == NOT_CHECKED


def test_a_refused_handshake_on_a_host_set_up_right_is_the_cache():
    shakes = copy.deepcopy(ON_SHAKES)
    shakes["can01"]["tms"] = Handshake(20000, "tls", None, "TLS alert from the peer")
    found = {v.item: v for v in checklist(evaluate(HOSTS, ON, shakes, pfx_sha256=PFX))}
    assert found["SSL session cache"].status == FAIL and found["SSL session cache"].hosts == (
        "can01",
    )
    assert "can01 (TMS port 20000)" in found["handshakes on every port"].detail


def test_limit_takes_names_and_roles(tmp_path):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "winrm: {transport: ntlm, username: u, password_env: X}\n"
        "hosts:\n  hbr01: {address: a, role: hbr}\n  can01: {address: b, role: canister}\n"
        "  can02: {address: c, role: canister}\n",
        encoding="utf-8",
    )
    fleet_ = load_fleet(inv)
    assert list(limit_fleet(fleet_, "canister,hbr01").hosts) == ["hbr01", "can01", "can02"]
    assert list(limit_fleet(fleet_, "can02").hosts) == ["can02"]
    with pytest.raises(InputError, match="neither a host nor a role"):
        limit_fleet(fleet_, "can03")
    assert json.dumps(list(limit_fleet(fleet_, None).hosts))


def _checklist(results, shakes, hosts=HOSTS) -> dict[str, object]:
    return {v.item: v for v in checklist(evaluate(hosts, results, shakes, pfx_sha256=PFX))}


def test_a_refusal_on_a_host_not_set_up_right_fails_the_cache_item_naming_it():
    results = changed(ON, "can01", facts(cert=OTHER, enabled=True, mode="tls"))
    shakes = copy.deepcopy(ON_SHAKES)
    shakes["can01"]["data_service"] = Handshake(23000, "tls", None, "TLS alert from the peer")
    cache = _checklist(results, shakes)["SSL session cache"]
    assert cache.status == FAIL and cache.hosts == ("can01",)
    assert "not set up right" in cache.detail and "--fix ssl-cache" not in cache.detail


def test_a_server_without_facts_is_not_checked_even_when_its_ports_answered():
    results = dict(ON)
    results["can01"] = HostUnreachable("access denied", host="can01")
    found = _checklist(results, ON_SHAKES)  # can01's ports were probed, its facts unknown
    for item in ("handshakes on every port", "SSL session cache"):
        assert found[item].status == NOT_CHECKED and "can01" in found[item].detail


def test_items_over_no_host_in_scope_are_not_checked():
    rtv_only = [h for h in HOSTS if h.role == "rtv"]  # what `--limit rtv` leaves
    found = _checklist({"ws01": ON["ws01"]}, {}, rtv_only)
    for item in (
        "EnableTLS on every Tealeaf server",
        "Data Service mode matches EnableTLS",
        "handshakes on every port",
        "SSL session cache",
    ):
        assert found[item].status == NOT_CHECKED, (item, found[item])
    assert found["certificate pair present"].status == OK  # ws01 holds the pair


def test_no_data_service_facts_leave_the_mode_item_not_checked():
    found = _checklist(ON, ON_SHAKES)  # the table's services list only TeaLeafTMS
    mode = found["Data Service mode matches EnableTLS"]
    assert mode.status == NOT_CHECKED and "no Data Service" in mode.detail


@pytest.mark.parametrize("fix", ["ssl-cache", "cryptsvc", "reboot"])
def test_every_fix_goes_hbrs_then_canisters_one_at_a_time_then_the_rest(tmp_path, fix):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "winrm: {transport: ntlm, username: u, password_env: X}\n"
        "hosts:\n  portal01: {address: p, role: portal}\n  can01: {address: b, role: canister}\n"
        "  hbr01: {address: a, role: hbr}\n  can02: {address: c, role: canister}\n",
        encoding="utf-8",
    )
    plan = fix_plan(load_fleet(inv), fix, expect_tls=True)
    shape = [
        (p["name"].split("_")[-1], p["strategy"], [s["host"] for s in p["steps"]])
        for p in plan["phases"]
    ]
    assert shape == [
        ("facts", "parallel", ["portal01", "can01", "hbr01", "can02"]),
        ("hbr", "rolling", ["hbr01"]),
        ("canister", "rolling", ["can01", "can02"]),
        ("rest", "parallel", ["portal01"]),
        ("verify", "parallel", ["portal01", "can01", "hbr01", "can02"]),
    ]
    for p in plan["phases"][1:4]:
        assert "handshake" in p["gates"] and "services" in p["gates"]
        assert p["batch"] == 1
