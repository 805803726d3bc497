"""Every op end to end through the real stack: ops module -> transport (pywinrm, https + basic
with the lab CA) -> lab WinRM server -> packaged-script check -> lab op model -> host files,
registry and services. The lab's install folder is deliberately hostile (quote, `$()`,
backtick, semicolon, non-ASCII): parameters must arrive as data, never as code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tealeaf_fleet import certs
from tealeaf_fleet.errors import InputError, RemoteError, RemoteScriptError, RemoteTimeout
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.lab.events import read_events
from tealeaf_fleet.lab.fleet import Lab
from tealeaf_fleet.ops import checks, facts, files, logs, registry, services, tlstool
from tealeaf_fleet.ops.facts import HostFacts
from tealeaf_fleet.secrets import Secret
from tealeaf_fleet.transport import Connection

pytestmark = pytest.mark.timeout(180)

WEIRD_DIR = "D:\\Tea'leaf $(Get-Date) `x; \u00e9t\u00e9 & [1]"
# Whatever the PFX rules allow: printable ASCII without space, double quote and the characters
# cmd.exe interprets (& | < > ^ % !), which TLSTool.exe could not pass on to openssl.exe.
WEIRD_PASSWORD = "P'w$(calc)`;{}[]#~@(x)=+,-./:?_" + "x9"
CMD_METACHARACTERS = ["&", "|", "<", ">", "^", "%", "!"]
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
    assert result.tealeaf_build_source == "registry"
    assert result.enable_tls is None and result.enable_tls_value.absent
    assert result.fips_policy_enabled is False
    assert result.hash_provider == "SHA256CryptoServiceProvider"
    assert result.pending_services == []
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


# --- facts that survive real hosts (faults: lab/faults.py) --------------------------------------


def _canister_facts(conns, fleet) -> HostFacts:
    return facts.gather(conns[CANISTER], fleet.hosts[CANISTER], install_dir=None)


def _blockers(fleet, result: HostFacts) -> set[str]:
    findings = checks.preflight_blockers(
        fleet.hosts[CANISTER], result, pfx_sha256=None, expect_tls=True
    )
    return {f.code for f in findings if f.severity == checks.BLOCKER}


def test_facts_under_the_fips_policy_hash_with_the_fips_validated_class(conns, fleet, lab):
    host = lab.host(CANISTER)
    password = Secret("LabPfxPassW0rd784")
    pfx = certs.load_pfx(certs.generate_pfx(password), password)
    crt = SECURITY + "\\tealeaf.crt"
    host.write_file(crt, pfx.cert_pem())
    try:
        host.set_faults({"fips": True})
        result = _canister_facts(conns, fleet)
        assert result.fips_policy_enabled is True
        assert result.hash_provider == "SHA256CryptoServiceProvider"
        assert result.cert_sha256 == pfx.sha256
        digest = hashlib.sha256(pfx.cert_pem()).hexdigest()
        assert result.security_file("tealeaf.crt")["sha256"] == digest
        assert files.file_info(conns[CANISTER], [crt])[crt].sha256 == digest
        assert files.get_file(conns[CANISTER], crt) == pfx.cert_pem()
        assert _blockers(fleet, result) == set()
    finally:
        host.delete_file(crt)


def test_facts_report_a_string_enable_tls_as_text_not_a_failure(conns, fleet, lab):
    host = lab.host(CANISTER)
    host.set_faults({"enable_tls_string": True})
    result = _canister_facts(conns, fleet)
    assert result["enable_tls"] == {"text": "true", "kind": "String"}
    assert result.enable_tls is None  # not read as 0, nor as absent:
    assert result.enable_tls_value.describe() == "a REG_SZ holding 'true'"
    assert "enable_tls_not_numeric" in _blockers(fleet, result)
    host.set_faults({})
    tealeaf_key = "HKLM:\\SOFTWARE\\Wow6432Node\\TeaLeaf Technology"
    for text, seen in ((" 1 ", 1), ("", {"text": "", "kind": "String"})):
        host.reg_set(tealeaf_key, "EnableTLS", text, "String")
        try:
            assert _canister_facts(conns, fleet)["enable_tls"] == seen  # [int]::TryParse
        finally:
            host.reg_delete(tealeaf_key, "EnableTLS")


def test_facts_take_the_build_from_a_service_file_version_without_the_registry_value(
    conns, fleet, lab
):
    lab.host(CANISTER).set_faults({"build_value_missing": True})
    result = _canister_facts(conns, fleet)
    assert result.tealeaf_build == "9.0.2.1351"
    assert result.tealeaf_build_source == "file_version"
    assert "build_unknown" not in _blockers(fleet, result)


def test_facts_report_a_locked_security_file_and_still_answer(conns, fleet, lab):
    host = lab.host(CANISTER)
    p12 = SECURITY + "\\tealeaf.p12"
    host.write_file(p12, b"p12 bytes")
    try:
        host.set_faults({"security_file_locked": True})
        result = _canister_facts(conns, fleet)
        assert result.security_file_error("tealeaf.p12") == (
            f"The process cannot access the file '{p12}' because it is being used by "
            "another process."
        )
        assert result.security_file("tealeaf.crt") is None
        findings = checks.preflight_blockers(
            fleet.hosts[CANISTER], result, pfx_sha256=None, expect_tls=True
        )
        locked = [f for f in findings if f.code == "security_file_unreadable"]
        assert [f.severity for f in locked] == [checks.WARNING]
        assert "tealeaf.p12" in locked[0].message
    finally:
        host.delete_file(p12)


def test_facts_show_a_starting_service_as_start_pending_until_it_runs(conns, fleet, lab):
    lab.host(CANISTER).set_faults({"service_start_pending": {"seconds": 1}})
    result = _canister_facts(conns, fleet)
    assert len(result.pending_services) == 1
    name = result.pending_services[0]
    assert {s.name: s.state for s in result.services}[name] == "StartPending"  # not spaced
    assert "service_pending" in _blockers(fleet, result)
    deadline = time.monotonic() + 30
    while name not in result.running_services and time.monotonic() < deadline:
        time.sleep(0.2)
        result = _canister_facts(conns, fleet)
    assert name in result.running_services


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


def test_put_file_swaps_an_existing_file_in_place(conns, lab):
    """The old file is replaced in one step (File.Replace), never deleted first: PATH is not
    missing at any moment, whatever happens to the op."""
    path = WEIRD_DIR + "\\Tools\\swap 'me'.pfx"
    lab.host(PORTAL).write_file(path, b"old contents")
    mark = _mark(lab)
    data = os.urandom(1000)
    files.put_file(conns[PORTAL], data, path)
    assert lab.host(PORTAL).read_file(path) == data
    ops = [e["op"] for e in _events(lab, mark, kind="file", host=PORTAL, path=path)]
    assert ops == ["replace"]  # no delete of the target
    assert not lab.host(PORTAL).exists(path + ".fleet-part")


def test_put_file_over_a_read_only_file(conns, lab):
    """A PFX copied from a CD keeps the ReadOnly attribute; pushing our PFX over it works."""
    path = WEIRD_DIR + "\\Tools\\from media.pfx"
    lab.host(PORTAL).write_file(path, b"copied from media")
    lab.host(PORTAL).set_read_only(path, True)
    data = os.urandom(2000)
    result = files.put_file(conns[PORTAL], data, path)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert lab.host(PORTAL).read_file(path) == data
    assert not lab.host(PORTAL).is_read_only(path)


def test_put_file_refuses_a_folder_before_uploading(conns, lab):
    folder = WEIRD_DIR + "\\Tools"
    with pytest.raises(RemoteScriptError, match="because it is a folder"):
        files.put_file(conns[PORTAL], b"x" * 10, folder)
    assert lab.host(PORTAL).is_dir(folder)
    assert not lab.host(PORTAL).exists(folder + ".fleet-part")


def test_tlstool_create_import_enable_disable(conns, lab):
    conn = conns[PORTAL]
    password = Secret(WEIRD_PASSWORD, source="test")
    pfx_path = WEIRD_DIR + "\\Tools\\TCXcert-1.pfx"  # TLSTool gets the bare name
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


@pytest.mark.parametrize("char", CMD_METACHARACTERS)
def test_tlstool_refuses_cmd_metacharacters_in_the_password(conns, lab, char):
    """The controller refuses them (exit 2, re-export advice) and so does the script, for a
    caller that skips the controller's check; TLSTool.exe never runs."""
    bad = f"Abc{char}def9"
    pfx_path = WEIRD_DIR + "\\Tools\\TCXcert.pfx"
    with pytest.raises(InputError, match="re-export the PFX with another password") as info:
        tlstool.run(conns[PORTAL], WEIRD_DIR, "import", pfx_path=pfx_path, password=Secret(bad))
    assert info.value.exit_code == 2 and bad not in str(info.value)
    mark = _mark(lab)
    params = {"InstallDir": WEIRD_DIR, "Verb": "import", "PfxPath": pfx_path, "Password": bad}
    with pytest.raises(RemoteScriptError, match="re-export the PFX") as remote:
        conns[PORTAL].run_op("tlstool", params, timeout_s=60, read_only=False)
    assert remote.value.exit_code_remote == 2
    assert not _events(lab, mark, kind="tlstool", host=PORTAL)


def test_tlstool_gets_the_pfx_by_name_from_tools_only(conns, lab):
    outside = "C:\\Temp\\TCXcert.pfx"
    odd_name = WEIRD_DIR + "\\Tools\\TCX cert (1).pfx"
    for path in (outside, odd_name):
        with pytest.raises(InputError):
            tlstool.run(conns[PORTAL], WEIRD_DIR, "import", pfx_path=path, password=Secret("Ab1"))
    mark = _mark(lab)
    for path, message in ((outside, "must be in"), (odd_name, "may hold only letters")):
        params = {"InstallDir": WEIRD_DIR, "Verb": "import", "PfxPath": path, "Password": "Ab1"}
        with pytest.raises(RemoteScriptError, match=message) as remote:
            conns[PORTAL].run_op("tlstool", params, timeout_s=60, read_only=False)
        assert remote.value.exit_code_remote == 2
    assert not _events(lab, mark, kind="tlstool", host=PORTAL)


def test_hung_tlstool_is_killed_and_the_op_answers_first(conns, lab):
    """A TLSTool.exe that never ends (it waits for console input) is killed at the script's
    deadline with the processes it started; the op fails with a clear timeout error (the
    script's answer, not the transport's timeout) and nothing was imported."""
    conn = conns[CANISTER]
    password = Secret("Hang1ng-Pw", source="test")
    pfx_path = WEIRD_DIR + "\\Tools\\TCXcert.pfx"
    files.put_file(conn, certs.generate_pfx(password), pfx_path)
    lab.host(CANISTER).set_faults({"native_hangs": {"exe": "TLSTool.exe"}})
    mark = _mark(lab)
    with pytest.raises(RemoteScriptError) as info:
        tlstool.run(conn, WEIRD_DIR, "import", pfx_path=pfx_path, password=password, timeout_s=12)
    assert not isinstance(info.value, RemoteTimeout)
    deadline = services.native_deadline_s(12)
    assert f"TLSTool.exe did not finish within {deadline} s" in str(info.value)
    assert "killed" in str(info.value) and "Hang1ng-Pw" not in str(info.value)
    assert [(e["exe"], e["exit"]) for e in _events(lab, mark, kind="process")] == [
        ("TLSTool.exe", "killed")
    ]
    assert not _events(lab, mark, kind="tlstool")  # it never got to do anything
    assert not lab.host(CANISTER).exists(SECURITY + "\\tealeaf.p12")
    lab.host(CANISTER).set_faults({})
    done = tlstool.run(conn, WEIRD_DIR, "enable")  # the next run is not stuck behind it
    assert done.exit_code == 1 and "import" in done.output


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
    # the type is read back too: what the prerequisites playbook checks after every write
    assert (first.kind, result.kind) == ("DWord", "String")
    retyped = registry.set_value(
        conns[CANISTER], "HKLM:\\SOFTWARE\\fleet-test", "Text", 1, kind="DWord"
    )
    assert (retyped.kind, retyped.value) == ("DWord", 1)


def test_set_registry_create_only_never_touches_an_existing_value(conns, lab):
    """`create_only`: written where absent; where the value exists the op fails naming it,
    the value stays, and nothing of it comes back (it may be TLSTool's key)."""
    key = "HKLM:\\SOFTWARE\\Wow6432Node\\fleet-create-only"
    made = registry.set_value(conns[CANISTER], key, "TLSCertPassword", "x", create_only=True)
    assert (made.previous, made.value, made.kind) == (None, "x", "String")
    lab.host(CANISTER).reg_set(key, "TLSCertPassword", "kept-secret-value", "String")
    with pytest.raises(RemoteScriptError, match="exists already") as refused:
        registry.set_value(conns[CANISTER], key, "TLSCertPassword", "y", create_only=True)
    assert "kept-secret-value" not in str(refused.value)
    assert lab.host(CANISTER).reg_get(key, "TLSCertPassword") == "kept-secret-value"


def test_facts_boot_time_and_pending_reboot_markers(conns, fleet, lab):
    """The last boot (host-local, the format of `now`) and Windows' own pending-reboot
    markers: what "reboot pending since ..." is judged against."""
    host = lab.host(CANISTER)
    got = facts.gather(conns[CANISTER], fleet.hosts[CANISTER]).raw
    assert got["boot"]["last_boot"] <= got["now"]
    assert len(got["boot"]["last_boot"]) == len("2026-11-27T11:14:59")
    assert got["pending_reboot"] == {
        "cbs_reboot_pending": False,
        "wu_reboot_required": False,
        "file_rename_entries": 0,
    }
    host.reg_set(
        "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update"
        "\\RebootRequired",
        "x",
        1,
    )
    try:
        again = facts.gather(conns[CANISTER], fleet.hosts[CANISTER]).raw
        assert again["pending_reboot"]["wu_reboot_required"] is True
        codes = {f.code for f in checks.reboot_findings(CANISTER, again, [], block=True)}
        assert codes == {"windows_reboot_pending"}
    finally:
        host.reg_delete(
            "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update"
            "\\RebootRequired"
        )


def test_facts_name_configuration_files_that_mention_23443(conns, fleet, lab):
    """Read-only search of the install folder's small configuration files for the legacy
    port as a whole number; logs and other file types are left out."""
    host = lab.host(CANISTER)
    root = host.install_dir
    planted = {
        root + "\\Config\\DataService.config": b'<add key="Port" value="23443"/>',
        root + "\\Config\\Other.xml": b"<port>123443</port>",  # not the port
        root + "\\Logs\\notes.ini": b"port=23443",  # logs are left out
        root + "\\bin\\readme.txt": b"23443",  # not a configuration file type
    }
    for path, data in planted.items():
        host.write_file(path, data)
    try:
        got = facts.gather(conns[CANISTER], fleet.hosts[CANISTER]).raw
        assert got["port_23443_files"] == [root + "\\Config\\DataService.config"]
        finding = [
            f
            for f in checks.preflight_blockers(
                fleet.hosts[CANISTER], got, pfx_sha256=None, expect_tls=True
            )
            if f.code == "port_23443_in_config"
        ]
        assert finding and "DataService.config" in finding[0].message
        # a gate's poll skips the search: not searched (None), not "nothing found"
        polled = facts.gather(conns[CANISTER], fleet.hosts[CANISTER], port_search=False).raw
        assert polled["port_23443_files"] is None
    finally:
        for path in planted:
            host.delete_file(path)


def test_the_23443_search_is_bounded_by_folders_listed(conns, fleet, lab):
    """More than 500 folders under the install folder: the search stops listing there, so a
    deep tree cannot stretch the facts op; a mention in the first folders is still named."""
    host = lab.host(CANISTER)
    root = host.install_dir + "\\Deep"
    near = root + "\\a.config"
    far = root + "\\" + "\\".join(f"d{i}" for i in range(520)) + "\\far.config"
    host.write_file(near, b"port=23443")
    host.write_file(far, b"port=23443")
    try:
        got = facts.gather(conns[CANISTER], fleet.hosts[CANISTER]).raw["port_23443_files"]
        assert near in got and far not in got
    finally:
        shutil.rmtree(host.path(root))


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
    assert result.after is None  # nothing read back unless asked


def test_restart_reads_back_what_the_gates_need_in_the_same_op(conns, lab, fleet):
    """With install_dir: every TeaLeaf service's state (the stopped one too), IIS, and the Data
    Service's startup block since the restart began, from the same powershell.exe."""
    conn = conns[CANISTER]
    running = facts.gather(conn, fleet.hosts[CANISTER], install_dir=None).running_services
    time.sleep(1.1)  # log times have one-second resolution
    mark = _mark(lab)
    result = services.restart(conn, running, timeout_s=60, install_dir=WEIRD_DIR)
    after = result.after
    assert after is not None
    states = {s["name"]: s["state"] for s in after["services"]}
    assert all(states[name] == "Running" for name in running)
    assert states["TeaLeafSnapshotService"] == "Stopped"
    assert after["iis"]["present"] is False
    block = after["data_service"]
    assert block["mode"] == "plain" and block["started_at"] >= result.started_at
    ops = [e["op"] for e in _events(lab, mark, kind="op", host=CANISTER)]
    assert ops == ["restart_services"]  # one op, one powershell.exe, did it all


def test_restart_names_the_service_that_did_not_start(conns, lab):
    lab.host(CANISTER).set_faults({"service_start_fails": {"services": ["TeaLeafCanister"]}})
    # A deadline far beyond this module's 180 s test timeout: a service that failed to start
    # ends the op's wait at once (it is Stopped again), the deadline is never reached.
    with pytest.raises(RemoteScriptError, match="TeaLeafCanister") as info:
        services.restart(conns[CANISTER], ["TeaLeafCanister"], timeout_s=900)
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


def test_restart_with_iisreset_is_one_op_and_reads_iis_after_it(conns, lab, fleet):
    conn = conns[PORTAL]
    running = facts.gather(conn, fleet.hosts[PORTAL], install_dir=None).running_services
    mark = _mark(lab)
    result = services.restart(conn, running, timeout_s=60, install_dir=WEIRD_DIR, iisreset=True)
    assert _events(lab, mark, kind="iisreset", host=PORTAL)
    assert [e["op"] for e in _events(lab, mark, kind="op", host=PORTAL)] == ["restart_services"]
    assert result.after is not None and result.after["iis"] == {"present": True, "state": "Running"}
    with pytest.raises(RemoteScriptError, match="IIS"):  # no IIS there: the op fails, says so
        services.restart(
            conns[CANISTER], ["TeaLeafCanister", "TLSearchServer"], timeout_s=20, iisreset=True
        )


def test_reboot_and_wait(fleet, lab):
    host = fleet.hosts[CANISTER]
    mark = _mark(lab)
    with Connection(host, fleet.winrm_password(host)) as conn:
        result = services.reboot_and_wait(conn, wait_s=60, delay_s=1, poll_s=0.2)
        assert result.elapsed_s > 0
        states = [e["state"] for e in _events(lab, mark, kind="reboot", host=CANISTER)]
        assert states[:3] == ["scheduled", "down", "up"]
        assert facts.gather(conn, host).hostname == CANISTER.upper()
        _wait_booted(lab.host(CANISTER))


def _wait_booted(lab_host) -> None:
    """The boot starts every Auto service a moment after the host answers again: wait until
    all of them run (nothing Pending is not enough: the starts may not have begun), so no
    boot-time start lands inside the next test."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _booted(lab_host):
        time.sleep(0.1)
    assert _booted(lab_host), "the reboot did not bring the Auto services back"


def test_reboot_replaces_a_shutdown_someone_else_scheduled(fleet, lab):
    """shutdown.exe /r exits 1190 while another shutdown is scheduled: the op aborts that one,
    schedules its own, says so, and the host restarts once (not again at the other's time)."""
    host = fleet.hosts[CANISTER]
    lab.host(CANISTER).set_faults({"shutdown_scheduled": True})
    assert lab.host(CANISTER).pending_shutdown()["by"] == "another administrator"
    mark = _mark(lab)
    with Connection(host, fleet.winrm_password(host)) as conn:
        result = services.reboot_and_wait(conn, wait_s=60, delay_s=1, poll_s=0.2)
    assert result.replaced_scheduled is True and result.note is None
    reboots = [(e["state"], e.get("by")) for e in _events(lab, mark, kind="reboot", host=CANISTER)]
    assert reboots[:2] == [("aborted", "another administrator"), ("scheduled", "shutdown.exe")]
    assert [state for state, _ in reboots].count("down") == 1
    assert lab.host(CANISTER).pending_shutdown() is None  # nothing left to restart it again
    exits = [e["exit"] for e in _events(lab, mark, kind="process", host=CANISTER)]
    assert exits == [1190, 0, 0]  # /r refused, /a, /r again
    _wait_booted(lab.host(CANISTER))


def test_reboot_waits_for_a_scheduled_shutdown_it_cannot_abort(fleet, lab):
    """When the other shutdown cannot be aborted the host restarts at its time anyway: the op
    succeeds with a note and the wait sees that one restart."""
    host = fleet.hosts[CANISTER]
    lab.host(CANISTER).set_faults({"shutdown_scheduled": {"in_s": 4, "abortable": False}})
    mark = _mark(lab)
    with Connection(host, fleet.winrm_password(host)) as conn:
        result = services.reboot_and_wait(conn, wait_s=60, delay_s=1, poll_s=0.2)
    assert result.replaced_scheduled is False
    assert result.note and "could not be aborted" in result.note and "(1116)" in result.note
    states = [e["state"] for e in _events(lab, mark, kind="reboot", host=CANISTER)]
    assert states.count("down") == 1 and "scheduled" not in states  # ours never was
    _wait_booted(lab.host(CANISTER))


def test_a_later_unabortable_shutdown_is_named_when_the_wait_ends_first(fleet, lab):
    """The other shutdown is due after our whole wait: the timeout says why the host never
    went down and what to do, rather than suggesting it is stuck."""
    host = fleet.hosts[CANISTER]
    lab.host(CANISTER).set_faults({"shutdown_scheduled": {"in_s": 600, "abortable": False}})
    try:
        password = fleet.winrm_password(host)
        with Connection(host, password) as conn, pytest.raises(RemoteTimeout) as info:
            services.reboot_and_wait(conn, wait_s=3, delay_s=1, poll_s=0.2)
        assert "never went down" in info.value.message
        assert "could not be aborted" in info.value.message
        assert "shutdown /a" in (info.value.hint or "")
    finally:
        lab.host(CANISTER).set_faults({})  # aborts the other administrator's shutdown


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


def test_restart_mutex_held_by_another_account_is_contention(conns, lab):
    """Another account's restart op created the host-wide mutex, so ours may not even open it:
    the op reports the contention (exit 1, a message, not a crash) and touches no service."""
    lab.host(CANISTER).set_faults({"restart_mutex_denied": True})
    mark = _mark(lab)
    with pytest.raises(RemoteScriptError) as info:
        services.restart(conns[CANISTER], ["TeaLeafCanister", "TLSearchServer"], timeout_s=20)
    assert info.value.exit_code_remote == 1
    text = str(info.value)
    assert "another restart of TeaLeaf services is still running on this host" in text
    assert "another account" in text
    assert _events(lab, mark, kind="service", host=CANISTER) == []


def test_restart_never_lets_the_service_manager_start_an_unnamed_dependency(conns, lab):
    """StartService starts the stopped services a service depends on: the op checks first and
    reports them, so the operator's stopped TMS stays stopped (and the Data Service with it)."""
    host = lab.host(CANISTER)
    stopped = ["TLSearchServer", "TeaLeafCanister", "TeaLeafTransportService"]
    stopped += ["TeaLeafDataService", "TeaLeafTMS"]
    for name in stopped:  # dependents first, as the SCM requires
        host.stop_service(name)
    mark = _mark(lab)
    try:
        with pytest.raises(RemoteScriptError, match="TeaLeafDataService not started") as info:
            services.restart(conns[CANISTER], ["TeaLeafDataService"], timeout_s=20)
        assert "TeaLeafTMS" in str(info.value)
        assert _events(lab, mark, kind="service", host=CANISTER) == []
        assert host.service("TeaLeafTMS").state == "Stopped"
    finally:
        for name in reversed(stopped):
            host.start_service(name)
