"""`fleet check` end to end against one lab (pywinrm over HTTPS, the packaged scripts checked
byte for byte, the lab's models of `facts` and `check`): a healthy fleet works and nothing on
a host changes but the probe file; faults fail the lines they should and the output says what
to do; no secret ever appears. Each lab fault a check line watches has a case here
(`FAULT_LINES` and the tests after it)."""

from __future__ import annotations

import hashlib
import json
import secrets

import pytest

from tealeaf_fleet import check as core
from tealeaf_fleet.check_rules import RESTART_MUTEX
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.lab.events import read_events
from tealeaf_fleet.lab.fleet import Lab
from tealeaf_fleet.lab.models import CBS_REBOOT_PENDING_KEY
from tealeaf_fleet.lab.registry import SECURITY_KEY, TEALEAF_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOPOLOGY = {"portal": 1, "hbr": 2, "canister": 2, "rtv": 1, "pca": 1}
MECHANISM_COUNT = 17


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab.start(tmp_path_factory.mktemp("checklab"), topology=TOPOLOGY, restart_s=0.2) as lab:
        yield lab


@pytest.fixture(autouse=True)
def healthy(lab):
    yield
    for host in lab.hosts.values():
        host.set_faults({})


def windows(lab: Lab) -> list[str]:
    return [name for name, role in lab.roles.items() if role != "pca"]


def secrets_of(lab: Lab) -> list[str]:
    return [lab.winrm_password(), lab.pfx_password_file.read_text(encoding="utf-8").strip()]


def fleet_check(capsys, lab: Lab, *flags: str, also_secret: str = "") -> tuple[int, str, str]:
    """`fleet check` in-process (the console script's main); the output is searched for every
    lab secret on the way."""
    from tealeaf_fleet.cli.main import main

    code = main(["check", str(lab.inventory), "--forks", "6", *flags])
    out, err = capsys.readouterr()
    for secret in [*secrets_of(lab), also_secret]:
        if secret:
            assert secret not in out and secret not in err
    return code, out, err


def snapshot(lab: Lab) -> dict[str, object]:
    """Every host's registry, services and files (path -> SHA-256), as the lab keeps them."""
    state: dict[str, object] = {}
    for name in windows(lab):
        root = lab.dir / "hosts" / name
        state[f"{name}/registry"] = json.loads((root / "registry.json").read_text())
        state[f"{name}/services"] = json.loads((root / "services.json").read_text())
        for path in sorted((root / "fs").rglob("*")):
            key = f"{name}/fs/{path.relative_to(root / 'fs')}"
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


def by_mechanism(doc: dict) -> dict[str, dict[str, dict]]:
    return {
        h["name"]: {line["mechanism"]: line for line in h["lines"]}
        for h in doc["hosts"]
        if h["contacted"]
    }


def test_a_healthy_fleet_works_and_only_the_probe_file_is_written(capsys, lab, tmp_path):
    token = secrets.token_urlsafe(16)  # what TLSTool import leaves under ...\security
    lab.host("hbr01").reg_set(SECURITY_KEY, "TLSCertPassword", token, "String")
    before, mark = snapshot(lab), len(read_events(lab.dir / "events.jsonl"))
    markdown = tmp_path / "check.md"

    code, out, err = fleet_check(capsys, lab, "--json", "--out", str(markdown), also_secret=token)

    assert code == 0, out[-3000:] + err[-2000:]
    doc = json.loads(out)  # stdout is exactly one JSON document
    assert doc["works"] is True and doc["counts"]["fail"] == doc["counts"]["unknown"] == 0
    lines = by_mechanism(doc)
    assert set(lines) == set(windows(lab))
    for name, mine in lines.items():
        assert len(mine) == MECHANISM_COUNT
        assert {x["verdict"] for x in mine.values()} <= {"ok", "warn"}, (name, mine)
        assert mine["stdin_framing"]["verdict"] == "ok"
    pca = next(h for h in doc["hosts"] if h["name"] == "pca01")
    assert pca["contacted"] is False and pca["lines"] == []
    build = lines["hbr01"]["tealeaf_build"]["evidence"]
    assert "InstallDir, Version" in build and "subkeys: security" in build
    # read-only: registry, services and files as before; the only file events are the probe's
    assert snapshot(lab) == before
    events = read_events(lab.dir / "events.jsonl")[mark:]
    assert {e["kind"] for e in events} <= {"request", "op", "file"}
    files = [e for e in events if e["kind"] == "file"]
    assert all("tealeaf-fleet-check-" in e["path"] for e in files), files
    for name in windows(lab):
        mine = [e["op"] for e in files if e["host"] == name]
        assert mine == ["write", "delete"], (name, mine)
    ops = sorted((e["host"], e["op"], e["exit"]) for e in events if e["kind"] == "op")
    assert ops == sorted((n, op, 0) for n in windows(lab) for op in ("facts", "check"))
    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("# fleet check") and "every mechanism works" in text
    for name in lab.roles:
        assert f"## {name} (" in text
    assert token not in text and all(s not in text for s in secrets_of(lab))

    code, out, _ = fleet_check(capsys, lab, also_secret=token)
    assert code == 0 and "every mechanism works" in " ".join(out.split())


@pytest.fixture
def awkward_states(lab):
    """States no fault makes: a restart holding hbr01's mutex; on rtv01 a reboot pending after
    servicing and no build value in the registry. Undone afterwards."""
    lock = lab.host("hbr01").open_mutex(RESTART_MUTEX)  # what a running restart op holds
    rtv = lab.host("rtv01")
    build = rtv.reg_get(TEALEAF_KEY, "Version")
    lock.acquire()
    rtv.reg_set(CBS_REBOOT_PENDING_KEY, "lab", 1)
    rtv.reg_delete(TEALEAF_KEY, "Version")
    try:
        yield
    finally:
        lock.release()
        rtv.reg_delete(CBS_REBOOT_PENDING_KEY)
        rtv.reg_set(TEALEAF_KEY, "Version", build, "String")


def test_faults_fail_their_lines_and_the_table_says_what_to_do(capsys, lab, awkward_states):
    faults = {
        "hbr02": {"unreachable": True},
        "can02": {"auth_fails": True},
        "can01": {"disk_full": True},
        "hbr01": {"data_service_23443": True},
    }
    for name, fault in faults.items():
        lab.host(name).set_faults(fault)

    code, out, _ = fleet_check(capsys, lab, "--json")

    assert code == 1
    lines = by_mechanism(json.loads(out))
    assert lines["hbr01"]["restart_mutex"]["verdict"] == "warn"
    assert "running on this host right now" in lines["hbr01"]["restart_mutex"]["evidence"]
    rtv = lines["rtv01"]
    assert rtv["os"]["verdict"] == "warn" and "RebootPending" in rtv["os"]["evidence"]
    assert rtv["tealeaf_build"]["verdict"] == "warn"  # an RTV: preflight only warns
    assert "value names under TeaLeaf Technology: InstallDir;" in rtv["tealeaf_build"]["evidence"]
    for name, why in (("hbr02", "cannot connect"), ("can02", "rejected the credentials")):
        assert lines[name]["login"]["verdict"] == "fail" and why in lines[name]["login"]["evidence"]
        assert lines[name]["login"]["action"]
        rest = [x for m, x in lines[name].items() if m != "login"]
        assert {x["verdict"] for x in rest} == {"unknown"}
    assert "login was refused" in lines["can02"]["disk"]["evidence"]
    full = lines["can01"]
    assert full["tools_writable"]["verdict"] == "fail"
    assert "not enough space" in full["tools_writable"]["evidence"]
    assert full["disk"]["verdict"] == "fail" and full["login"]["verdict"] == "ok"
    port = lines["hbr01"]["data_service_log"]
    assert port["verdict"] == "warn" and "23443" in port["evidence"] and "23000" in port["action"]
    assert {x["verdict"] for x in lines["portal01"].values()} == {"ok"}

    code, out, _ = fleet_check(capsys, lab)
    flat = " ".join(out.split())
    assert code == 1
    assert "NOT proven on hbr02, can01, can02" in flat  # inventory order
    assert "do: check username" in flat and "do: free space on the C: drive" in flat
    assert "16 mechanisms: unknown" in flat


def test_bad_out_folder_is_refused_before_any_host_is_contacted(capsys, lab, tmp_path):
    mark = len(read_events(lab.dir / "events.jsonl"))
    code, _, err = fleet_check(capsys, lab, "--out", str(tmp_path / "nope" / "check.md"))
    assert code == 2 and "does not exist" in err
    assert read_events(lab.dir / "events.jsonl")[mark:] == []


def _check_one(lab: Lab, name: str, fault: dict) -> dict[str, dict]:
    lab.host(name).set_faults(fault)
    result = core.gather(load_fleet(lab.inventory), forks=6)
    row = next(h for h in result.hosts if h.name == name)
    return {x.mechanism: x.to_dict() | {"raw": row.check} for x in row.lines}


def test_fips_policy_is_reported_and_hashing_still_works(lab):
    lines = _check_one(lab, "can01", {"fips": True})  # 2019: .NET 4.7.2
    assert lines["fips"]["verdict"] == "ok" and "FIPS policy ON" in lines["fips"]["evidence"]
    assert lines["tools_writable"]["verdict"] == "ok"


def test_constrained_language_fails_the_powershell_line(lab):
    lines = _check_one(lab, "hbr02", {"constrained_language": True})
    assert lines["login"]["verdict"] == "ok"
    assert lines["powershell"]["verdict"] == "fail"
    assert "ConstrainedLanguage" in lines["powershell"]["evidence"]


def test_a_rolled_log_still_shows_the_startup_block(lab):
    lines = _check_one(lab, "portal01", {"log_rolled": True})
    assert lines["data_service_log"]["verdict"] == "ok"
    assert lines["data_service_log"]["raw"]["logs"]["count"] >= 2


def test_a_denied_restart_mutex_fails_its_line(lab):
    lines = _check_one(lab, "hbr01", {"restart_mutex_denied": True})
    assert lines["restart_mutex"]["verdict"] == "fail"
    assert "denied" in lines["restart_mutex"]["evidence"].lower()


def _without_tlstool(lab: Lab):
    host = lab.host("can02")
    tool = host.install_dir + "\\Tools\\TLSTool.exe"
    data = host.read_file(tool)
    host.delete_file(tool)
    return lambda: host.write_file(tool, data)


# (host, fault, state change returning its undo, mechanism, verdict, words in evidence/action)
FAULT_LINES = {
    "clock_ahead_10_min": (
        "can01",
        {"clock_skew": True},
        None,
        "clock_skew",
        "fail",
        "ahead by 600",
    ),
    "clock_behind_2_min": (
        "can01",
        {"clock_skew": {"s": -120}},
        None,
        "clock_skew",
        "warn",
        "behind by 120",
    ),
    "build_only_in_file_version": (
        "hbr01",
        {"build_value_missing": True},
        None,
        "tealeaf_build",
        "ok",
        "file version",
    ),
    "service_start_pending": (
        "hbr02",
        {"service_start_pending": {"seconds": 30}},
        None,
        "services",
        "warn",
        "StartPending",
    ),
    # 2008 R2 without the .NET 3.5 feature: no System.Core, so no FIPS-validated SHA-256 class
    "fips_on_2008r2_without_dotnet35": (
        "can02",
        {"fips": True},
        None,
        "fips",
        "fail",
        "hashing the probe file failed",
    ),
    "account_not_an_administrator": (
        "hbr01",
        {"not_admin": True},
        None,
        "shell",
        "fail",
        "NOT an administrator",
    ),
    "tlstool_missing": (
        "can02",
        {},
        _without_tlstool,
        "tools",
        "fail",
        "missing: D:\\Tealeaf\\Tools\\TLSTool.exe",
    ),
}


@pytest.mark.parametrize("case", FAULT_LINES, ids=list(FAULT_LINES))
def test_each_fault_shows_on_its_line(lab, case):
    name, fault, change, mechanism, verdict, words = FAULT_LINES[case]
    undo = change(lab) if change else None
    try:
        lines = _check_one(lab, name, fault)
    finally:
        if undo:
            undo()
    line = lines[mechanism]
    assert line["verdict"] == verdict, line
    assert words in line["evidence"], line
    if verdict != "ok":
        assert line["action"], line
