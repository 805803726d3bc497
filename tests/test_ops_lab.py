"""Every op end to end through the real stack: ops module -> transport (pywinrm, https + basic
with the lab CA) -> lab WinRM server -> packaged-script check -> lab op model -> host files,
registry and services. The lab's install folder is deliberately hostile (quote, `$()`,
backtick, semicolon, non-ASCII): parameters must arrive as data, never as code.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tealeaf_fleet import certs
from tealeaf_fleet.errors import InputError, RemoteError, RemoteScriptError
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.lab.events import read_events
from tealeaf_fleet.lab.fleet import Lab
from tealeaf_fleet.ops import checks, facts, files, logs, registry, services, tlstool
from tealeaf_fleet.ops.facts import HostFacts
from tealeaf_fleet.secrets import Secret
from tealeaf_fleet.transport import Connection

pytestmark = pytest.mark.timeout(180)

WEIRD_DIR = "D:\\Tea'leaf $(Get-Date) `x; \u00e9t\u00e9 & [1]"
# Whatever the PFX rules allow: printable ASCII without space and double quote.
WEIRD_PASSWORD = "P'w$(calc)`;&|<>^%!{}[]#~@" + "x9"
PORTAL, CANISTER = "portal01", "can01"
SECURITY = "C:\\ProgramData\\IBM\\Tealeaf\\security"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab.start(
        tmp_path_factory.mktemp("opslab"),
        topology={"portal": 1, "canister": 1},
        restart_s=0.2,
        reboot_s=0.5,
        install_dir=WEIRD_DIR,
        os="2012r2",
    )
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def fleet(lab):
    return load_fleet(lab.inventory)


@pytest.fixture(scope="module")
def conns(fleet):
    opened = {
        name: Connection(fleet.hosts[name], fleet.winrm_password(fleet.hosts[name]))
        for name in (PORTAL, CANISTER)
    }
    yield opened
    for conn in opened.values():
        conn.close()


@pytest.fixture(autouse=True)
def healthy(lab):
    yield
    for name in (PORTAL, CANISTER):
        lab.host(name).set_faults({})


def _events(lab, mark=0, **match):
    return [
        e
        for e in read_events(lab.dir / "events.jsonl")[mark:]
        if all(e.get(k) == v for k, v in match.items())
    ]


def _mark(lab):
    return len(read_events(lab.dir / "events.jsonl"))


def test_facts_discovers_the_install_folder_and_services(conns, fleet, lab):
    host = fleet.hosts[CANISTER]
    result = facts.gather(conns[CANISTER], host, install_dir=None)
    assert isinstance(result, HostFacts) and isinstance(result, dict)
    assert result.install_dir == WEIRD_DIR
    assert result.install_dir_source == "service"
    assert result.has_tlstool and result.has_openssl
    assert result.tealeaf_build == "9.0.2.1351"
    assert result.enable_tls is None
    names = {s.name for s in result.services}
    assert {"TeaLeafTMS", "TeaLeafDataService", "TLSearchServer"} <= names  # by display name
    assert "Spooler" not in names
    stopped = {s.name for s in result.services if s.state == "Stopped"}
    assert "TeaLeafSnapshotService" in stopped
    assert result.os_version == lab.host(CANISTER).os_version
    assert result.data_service.mode == "plain"
    assert result.data_service.port == lab.host(CANISTER).data_service_port
    assert result.security_file("tealeaf.crt") is None
    assert result.iis_present is False


def test_facts_uses_the_given_install_dir(conns, fleet):
    given = "E:\\Other 'place'"
    result = facts.gather(conns[PORTAL], fleet.hosts[PORTAL], install_dir=given)
    assert result.install_dir == given and result.install_dir_source == "inventory"
    assert result.has_tlstool is False
    assert result.iis_present and result.iis_state == "Running"


def test_collect_reads_every_windows_host_in_parallel(fleet):
    seen: list[tuple[str, str]] = []
    results = facts.collect(fleet, forks=2, on_progress=lambda h, s: seen.append((h, s)))
    assert set(results) == {PORTAL, CANISTER}
    assert all(isinstance(r, HostFacts) for r in results.values())
    assert sorted(seen) == [(CANISTER, "ok"), (PORTAL, "ok")]


def test_facts_walk_back_to_the_startup_block_of_a_rolled_log(tmp_path):
    """log_rolled: the Data Service has run for days, so its newest log (today's dated file, or
    the live TLDataService.log) holds only request lines and the startup block sits in an older
    file. facts reports that block and the newest file; a host with a Data Service and no log
    at all gets preflight's "port unknown" warning instead of silence."""
    with Lab.start(
        tmp_path / "lab",
        topology={"hbr": 2},
        restart_s=0.2,
        ntlm=False,
        log_style={"hbr02": "live"},
        faults={"hbr01": {"log_rolled": True}, "hbr02": {"log_rolled": True}},
    ) as rolled:
        inventory = load_fleet(rolled.inventory)
        for name in ("hbr01", "hbr02"):
            host, lab_host = inventory.hosts[name], rolled.host(name)
            with Connection(host, inventory.winrm_password(host)) as conn:
                ds = facts.gather(conn, host).data_service
                assert (ds.mode, ds.port) == ("plain", host.data_service_port)
                assert ds.log and ds.newest_log and ds.log != ds.newest_log
                assert b"Starting HTTP Server" not in lab_host.read_file(ds.newest_log)
                assert b"Starting HTTP Server" in lab_host.read_file(ds.log)
                if name == "hbr02":
                    assert ds.newest_log == "D:\\Tealeaf\\Logs\\TLDataService.log"
                else:  # dated: the newest by name too
                    assert ds.newest_log > ds.log
                # Since: the files written at or after it, whatever their names
                again = logs.data_service_mode(conn, "D:\\Tealeaf", ds.started_at)
                assert (again.started_at, again.log) == (ds.started_at, ds.log)
                assert (
                    logs.data_service_mode(conn, "D:\\Tealeaf", lab_host.now_local()).mode is None
                )

        lab_host = rolled.host("hbr01")
        for name in lab_host.listdir("D:\\Tealeaf\\Logs"):
            lab_host.delete_file("D:\\Tealeaf\\Logs\\" + name)
        host = inventory.hosts["hbr01"]
        with Connection(host, inventory.winrm_password(host)) as conn:
            bare = facts.gather(conn, host)
        assert bare.has_data_service and bare.data_service.newest_log is None
        findings = checks.preflight_blockers(host, bare, pfx_sha256=None, expect_tls=True)
        (unknown,) = [f for f in findings if f.code == "data_service_port_unknown"]
        assert unknown.severity == checks.WARNING and "port unknown" in unknown.message
        assert "D:\\Tealeaf\\Logs" in unknown.message


def test_collect_reports_a_failed_host_as_its_error(fleet, lab):
    lab.host(PORTAL).set_faults({"auth_fails": True})
    results = facts.collect(fleet, forks=2)
    assert isinstance(results[PORTAL], RemoteError)
    assert isinstance(results[CANISTER], HostFacts)


def test_put_get_and_skip(conns, lab):
    data = os.urandom(600 * 1024)  # three parts of 256 KiB
    path = "C:\\Drop 'it' $(here)`;\u00fc\\payload.bin"
    result = files.put_file(conns[PORTAL], data, path)
    assert result == files.PutResult(
        skipped=False, sha256=hashlib.sha256(data).hexdigest(), size=len(data), parts=3
    )
    assert lab.host(PORTAL).read_file(path) == data
    assert not lab.host(PORTAL).exists(path + ".fleet-part")
    assert files.put_file(conns[PORTAL], data, path).skipped is True
    info = files.file_info(conns[PORTAL], [path, "C:\\nope.txt"])
    assert info[path].exists and info[path].size == len(data)
    assert info["C:\\nope.txt"].exists is False
    assert files.get_file(conns[PORTAL], path) == data


def test_put_file_disk_full_removes_the_part_file(conns, lab):
    path = "C:\\full\\x.bin"
    lab.host(PORTAL).mkdir("C:\\full")
    lab.host(PORTAL).set_faults({"disk_full": True})
    with pytest.raises(RemoteScriptError, match="disk full"):
        files.put_file(conns[PORTAL], b"abc" * 100, path)
    lab.host(PORTAL).set_faults({})
    assert not lab.host(PORTAL).exists(path + ".fleet-part")
    assert not lab.host(PORTAL).exists(path)


def test_tlstool_create_import_enable_disable(conns, lab):
    conn = conns[PORTAL]
    password = Secret(WEIRD_PASSWORD, source="test")
    pfx_path = WEIRD_DIR + "\\Tools\\TCX 'cert' $(x).pfx"
    mark = _mark(lab)
    created = tlstool.run(conn, WEIRD_DIR, "create", pfx_path=pfx_path, password=password)
    assert created.ok, created.output
    pfx = certs.load_pfx(lab.host(PORTAL).read_file(pfx_path), password)
    imported = tlstool.run(conn, WEIRD_DIR, "import", pfx_path=pfx_path, password=password)
    assert imported.ok, imported.output
    after = facts.gather(conn, None, install_dir=WEIRD_DIR)
    assert after.cert_sha256 == pfx.sha256
    assert after.cert_subject == "CN=IBM Tealeaf CX"
    assert after.security_file("tealeaf.p12") is not None
    assert after.tls_cert_password_present
    assert tlstool.run(conn, WEIRD_DIR, "enable").ok
    assert facts.gather(conn, None, install_dir=WEIRD_DIR).enable_tls == 1
    assert tlstool.run(conn, WEIRD_DIR, "disable").ok
    assert facts.gather(conn, None, install_dir=WEIRD_DIR).enable_tls == 0
    verbs = [(e["verb"], e["exit"]) for e in _events(lab, mark, kind="tlstool", host=PORTAL)]
    assert verbs == [("create", 0), ("import", 0), ("enable", 0), ("disable", 0)]
    log_text = (lab.dir / "events.jsonl").read_text(encoding="utf-8")
    assert WEIRD_PASSWORD not in log_text


def test_tlstool_wrong_password_output_is_masked(conns, lab):
    conn = conns[PORTAL]
    good = Secret("Right-0ne", source="test")
    path = WEIRD_DIR + "\\Tools\\other.pfx"
    assert tlstool.run(conn, WEIRD_DIR, "create", pfx_path=path, password=good).ok
    wrong = Secret("Wrong-0ne'$x", source="test")
    result = tlstool.run(conn, WEIRD_DIR, "import", pfx_path=path, password=wrong)
    assert result.exit_code != 0
    assert "Wrong-0ne'$x" not in result.output


def test_tlstool_refuses_passwords_it_cannot_pass(conns):
    for bad in ('has"quote', "has space", "caf\u00e9"):
        with pytest.raises(InputError):
            tlstool.run(
                conns[PORTAL], WEIRD_DIR, "import", pfx_path="C:\\x.pfx", password=Secret(bad)
            )


def test_tlstool_missing_is_a_script_error(conns):
    with pytest.raises(RemoteScriptError, match="TLSTool.exe not found"):
        tlstool.run(conns[PORTAL], "C:\\Nowhere", "enable")


def test_set_registry_dword_and_string(conns, lab):
    key = (
        "HKLM:\\SOFTWARE\\Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Internet "
        "Settings\\WinHttp"
    )
    first = registry.set_value(conns[CANISTER], key, "DefaultSecureProtocols", 0xA80)
    assert first.previous is None and first.value == 0xA80
    second = registry.set_value(conns[CANISTER], key, "DefaultSecureProtocols", 0xA00)
    assert second.previous == 0xA80 and second.value == 0xA00
    text = "line1\nline2 'q' \"dq\" $(x) `b; \u00fc"
    result = registry.set_value(conns[CANISTER], "HKLM:\\SOFTWARE\\fleet-test", "Text", text)
    assert result.value == text
    assert lab.host(CANISTER).reg_get("HKLM:\\SOFTWARE\\fleet-test", "Text") == text


def test_restart_keeps_stopped_services_stopped_and_logs_show_the_restart(conns, lab, fleet):
    conn = conns[CANISTER]
    before = facts.gather(conn, fleet.hosts[CANISTER], install_dir=None)
    running = before.running_services
    assert "TeaLeafSnapshotService" not in running
    time.sleep(1.1)  # log times have one-second resolution
    mark = _mark(lab)
    result = services.restart(conn, running, timeout_s=60)
    assert {s.name for s in result.services} == set(running)
    assert all(s.before == "Running" and s.after == "Running" for s in result.services)
    states = [(e["name"], e["state"]) for e in _events(lab, mark, kind="service", host=CANISTER)]
    assert ("TeaLeafSnapshotService", "StartPending") not in states
    # dependents stop before what they depend on: TLSearchServer -> Canister -> Transport
    stops = [n for n, s in states if s == "StopPending"]
    assert (
        stops.index("TLSearchServer")
        < stops.index("TeaLeafCanister")
        < stops.index("TeaLeafTransportService")
        < stops.index("TeaLeafTMS")
    )
    mode = logs.data_service_mode(conn, WEIRD_DIR, result.started_at)
    assert mode.mode == "plain" and mode.started_at >= result.started_at
    assert logs.data_service_mode(conn, WEIRD_DIR, "2999-01-01T00:00:00").mode is None


def test_restart_names_the_service_that_did_not_start(conns, lab):
    lab.host(CANISTER).set_faults({"service_start_fails": {"services": ["TeaLeafCanister"]}})
    with pytest.raises(RemoteScriptError, match="TeaLeafCanister") as info:
        services.restart(conns[CANISTER], ["TeaLeafCanister"], timeout_s=20)
    assert info.value.exit_code_remote == 1
    lab.host(CANISTER).set_faults({})
    services.restart(conns[CANISTER], ["TeaLeafCanister", "TLSearchServer"], timeout_s=20)


def test_iisreset(conns, lab):
    mark = _mark(lab)
    result = services.iisreset(conns[PORTAL])
    assert result.exit_code == 0 and "successfully restarted" in result.output
    assert _events(lab, mark, kind="iisreset", host=PORTAL)
    with pytest.raises(RemoteScriptError, match="IIS"):
        services.iisreset(conns[CANISTER])


def test_reboot_and_wait(fleet, lab):
    host = fleet.hosts[CANISTER]
    mark = _mark(lab)
    with Connection(host, fleet.winrm_password(host)) as conn:
        result = services.reboot_and_wait(conn, wait_s=60, delay_s=1, poll_s=0.2)
        assert result.elapsed_s > 0
        states = [e["state"] for e in _events(lab, mark, kind="reboot", host=CANISTER)]
        assert states[:3] == ["scheduled", "down", "up"]
        assert facts.gather(conn, host).hostname == CANISTER.upper()
        # The boot starts every Auto service a moment after the host answers again: wait until
        # all of them run (nothing Pending is not enough: the starts may not have begun), so no
        # boot-time start lands inside the next test.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _booted(lab.host(CANISTER)):
            time.sleep(0.1)
        assert _booted(lab.host(CANISTER)), "the reboot did not bring the Auto services back"


def _booted(lab_host) -> bool:
    listed = lab_host.services()
    return all(s.state == "Running" for s in listed if s.start_mode == "Auto") and not any(
        s.state.endswith("Pending") for s in listed
    )


def test_concurrent_restarts_on_one_host_take_turns(fleet, lab):
    """A restart left running by a killed controller and a resumed run's restart must not
    interleave: the host-wide restart lock makes the second wait for the first."""
    host = fleet.hosts[CANISTER]
    names = ["TeaLeafCanister", "TLSearchServer"]
    mark = _mark(lab)

    def one(_: int) -> services.RestartResult:
        with Connection(host, fleet.winrm_password(host)) as conn:
            return services.restart(conn, names, timeout_s=60)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(2)))
    assert all(s.after == "Running" for r in results for s in r.services)
    seq = [
        (e["name"], e["state"])
        for e in _events(lab, mark, kind="service", host=CANISTER)
        if e["state"] in ("StopPending", "Running") and e["name"] in names
    ]
    one_restart = [
        ("TLSearchServer", "StopPending"),
        ("TeaLeafCanister", "StopPending"),
        ("TeaLeafCanister", "Running"),
        ("TLSearchServer", "Running"),
    ]
    assert seq == one_restart * 2
