"""The lab's host model: registry, file system, services, TLSTool, Data Service / TMS, faults,
reboot, runner. Real files, real sockets, real TLS (Python `ssl`); no WinRM here (see
test_lab_cli.py for the wire)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from tealeaf_fleet import certs
from tealeaf_fleet.lab.api import CommandResult
from tealeaf_fleet.lab.dataservice import LEGACY_TMS_CN, free_port
from tealeaf_fleet.lab.events import EventLog, read_events
from tealeaf_fleet.lab.faults import RESTART_MUTEX
from tealeaf_fleet.lab.host import HostConfig, HostError, LabHost
from tealeaf_fleet.lab.hosterror import AccessDenied
from tealeaf_fleet.lab.registry import SECURITY_KEY, TEALEAF_KEY, TLS12_SERVER_KEY
from tealeaf_fleet.lab.runner import clixml_error
from tealeaf_fleet.ops import protocol
from tealeaf_fleet.secrets import Secret

PFX_PW = "LabPfxPassW0rd784"
SEC = r"C:\ProgramData\IBM\Tealeaf\security"
HALF = 0.05  # restart_s/2 for these tests


def make_host(
    tmp_path: Path,
    role: str = "hbr",
    os_key: str = "2016",
    *,
    listeners: bool = True,
    faults: dict | None = None,
    build: str = "9.0.2.1351",
    log_style: str = "dated",
) -> LabHost:
    tmp_path.mkdir(parents=True, exist_ok=True)
    events = EventLog(tmp_path / "events.jsonl")
    pw = tmp_path / "winrm-password.txt"
    pw.write_text("winrm-pw\n")
    cfg = HostConfig(
        name=f"{role}01",
        role=role,
        os=os_key,
        build=build,
        data_service_port=free_port() if listeners and role != "rtv" else 0,
        tms_port=free_port() if listeners and role != "rtv" else 0,
        log_style=log_style,
    )
    host = LabHost(
        tmp_path / "hosts" / cfg.name,
        cfg,
        events=events,
        username="LAB\\u",
        password_file=pw,
        restart_s=2 * HALF,
        reboot_s=0.1,
    )
    host.create(faults)
    host.start()
    return host


@pytest.fixture
def host(tmp_path: Path):
    h = make_host(tmp_path)
    yield h
    h.shutdown()


def events_of(host: LabHost, kind: str) -> list[dict]:
    return [
        e
        for e in read_events(host.root.parent.parent / "events.jsonl")
        if e["kind"] == kind and e["host"] == host.name
    ]


def wait_for(cond, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def put_pfx(host: LabHost) -> str:
    path = host.install_dir + r"\Tools\TCXcert.pfx"
    host.write_file(path, certs.generate_pfx(Secret(PFX_PW)))
    return path


def peer_cert(port: int) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        assert tls.version() == "TLSv1.2"
        return tls.getpeercert(binary_form=True)


def plain_reply(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# --------------------------------------------------------------------------- registry ----
def test_registry_is_case_insensitive_persisted_and_recorded(host: LabHost) -> None:
    assert host.reg_get(TEALEAF_KEY, "InstallDir") == r"D:\Tealeaf"
    assert (
        host.reg_get(r"HKEY_LOCAL_MACHINE\software\wow6432node\tealeaf technology", "version")
        == "9.0.2.1351"
    )
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") is None  # absent by default
    assert (
        host.reg_set(r"HKLM\SOFTWARE\Wow6432Node\TeaLeaf Technology", "EnableTLS", "0", "DWord")
        == 0
    )
    on_disk = json.loads((host.root / "registry.json").read_text())
    assert on_disk[TEALEAF_KEY]["EnableTLS"] == 0  # original key spelling kept
    ev = events_of(host, "registry")[-1]
    assert (ev["key"], ev["name"], ev["value"]) == (TEALEAF_KEY, "EnableTLS", 0)
    with pytest.raises(HostError):
        host.reg_set(TEALEAF_KEY, "EnableTLS", "yes", "DWord")
    with pytest.raises(HostError):
        host.reg_get(r"HKCU:\Software", "x")
    assert host.reg_delete(TEALEAF_KEY, "enabletls") is True
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") is None


def test_os_table_and_schannel_defaults(tmp_path: Path) -> None:
    old = make_host(tmp_path / "a", os_key="2008r2", listeners=False)
    new = make_host(tmp_path / "b", os_key="2012r2", listeners=False)
    assert (old.os_version, old.ps_version) == ("6.1.7601", "2.0")
    assert "2008 R2" in old.os_caption
    assert (new.os_version, new.ps_version) == ("6.3.9600", "4.0")
    # hosts are created healthy: 2008 R2 gets the TLS 1.2 server keys, later OSes need none
    assert old.reg_get(TLS12_SERVER_KEY, "Enabled") == 1
    assert old.reg_get(TLS12_SERVER_KEY, "DisabledByDefault") == 0
    assert new.reg_get(TLS12_SERVER_KEY, "Enabled") is None


# ------------------------------------------------------------------------ file system ----
def test_windows_paths_map_into_fs_case_insensitively(host: LabHost) -> None:
    host.write_file(r"C:\ProgramData\IBM\Tealeaf\security\x.txt", b"abc")
    real = host.root / "fs/C/ProgramData/IBM/Tealeaf/security/x.txt"
    assert real.read_bytes() == b"abc"
    assert host.read_file(r"c:\programdata\ibm\TEALEAF\Security\X.TXT") == b"abc"
    assert host.path(r"C:\a\..\..\..\ProgramData") == host.root / "fs/C/ProgramData"
    assert host.exists(r"D:\Tealeaf\Tools\TLSTool.exe")
    assert "TLSTool.exe" in host.listdir(r"d:\tealeaf\tools")
    for bad in ("relative\\path", r"\\server\share\x", r"C:\a|b"):
        with pytest.raises(HostError):
            host.path(bad)
    ev = events_of(host, "file")[-1]
    assert (ev["path"], ev["op"]) == (r"C:\ProgramData\IBM\Tealeaf\security\x.txt", "write")
    host.append_file(r"C:\ProgramData\IBM\Tealeaf\security\x.txt", b"d")
    host.move_file(r"C:\ProgramData\IBM\Tealeaf\security\x.txt", r"C:\y.txt")
    assert host.read_file(r"C:\Y.TXT") == b"abcd"
    assert host.delete_file(r"C:\y.txt") and not host.exists(r"C:\y.txt")


def test_rtv_has_install_folder_without_tools_or_services(tmp_path: Path) -> None:
    rtv = make_host(tmp_path, role="rtv")
    assert rtv.exists(rtv.install_dir)
    assert not rtv.exists(rtv.install_dir + r"\Tools")
    assert rtv.reg_get(TEALEAF_KEY, "InstallDir") == rtv.install_dir
    assert not [s for s in rtv.services() if "tealeaf" in (s.name + s.display_name).lower()]


# --------------------------------------------------------------------------- services ----
def test_service_catalogue_has_the_awkward_cases(tmp_path: Path) -> None:
    can = make_host(tmp_path / "c", role="canister", listeners=False)
    portal = make_host(tmp_path / "p", role="portal", listeners=False)
    svcs = {s.name: s for s in can.services()}
    odd = [
        s
        for s in svcs.values()
        if not s.name.lower().startswith("tealeaf") and s.display_name.lower().startswith("tealeaf")
    ]
    assert odd, "one service must match only by DisplayName"
    assert any(
        s.start_mode == "Manual" and s.state == "Stopped"
        for s in svcs.values()
        if s.display_name.lower().startswith("tealeaf")
    )
    assert any(s.depends_on for s in svcs.values())
    assert all(
        s.path.startswith('"D:\\Tealeaf\\')
        for s in svcs.values()
        if s.name.lower().startswith("tealeaf")
    )
    assert "W3SVC" in {s.name for s in portal.services()} and "W3SVC" not in svcs


def test_stop_and_start_pass_through_pending_states_in_order(host: LabHost) -> None:
    with pytest.raises(HostError, match="dependent services"):
        host.stop_service("TeaLeafTransportService")  # HBR and Rules depend on it
    host.stop_service("TeaLeafHBR")
    assert host.service("tealeafhbr").state == "Stopped"
    states = [e["state"] for e in events_of(host, "service") if e["name"] == "TeaLeafHBR"]
    assert states == ["StopPending", "Stopped"]
    saved = {s["name"]: s["state"] for s in json.loads((host.root / "services.json").read_text())}
    assert saved["TeaLeafHBR"] == "Stopped"
    host.stop_service("TeaLeafRulesEngine")
    host.stop_service("TeaLeafTransportService")
    host.start_service("TeaLeafHBR")  # the SCM starts the stopped dependency first
    assert host.service("TeaLeafTransportService").state == "Running"
    seq = [(e["name"], e["state"]) for e in events_of(host, "service")]
    assert seq.index(("TeaLeafTransportService", "Running")) < seq.index(
        ("TeaLeafHBR", "StartPending")
    )
    assert host.service("TeaLeafRulesEngine").state == "Stopped"  # not named, not started
    with pytest.raises(HostError, match="Cannot find any service"):
        host.start_service("NoSuchService")


def test_service_start_fails_fault(host: LabHost) -> None:
    host.set_faults({"service_start_fails": {"services": ["TeaLeafHBR"]}})
    host.stop_service("TeaLeafHBR")
    with pytest.raises(HostError, match="cannot be started"):
        host.start_service("TeaLeafHBR")
    assert host.service("TeaLeafHBR").state == "Stopped"
    host.stop_service("TeaLeafRulesEngine")
    host.start_service("TeaLeafRulesEngine")  # not listed: starts
    host.set_faults({"service_start_fails": True})
    host.stop_service("TeaLeafRulesEngine")
    with pytest.raises(HostError):
        host.start_service("TeaLeafRulesEngine")
    host.set_faults({})
    host.start_service("TeaLeafHBR")
    assert host.service("TeaLeafHBR").state == "Running"


def test_iisreset_on_portal_only(tmp_path: Path) -> None:
    portal = make_host(tmp_path / "p", role="portal", listeners=False)
    code, out = portal.iisreset()
    assert code == 0 and "successfully restarted" in out
    assert [e["state"] for e in events_of(portal, "service") if e["name"] == "W3SVC"] == [
        "StopPending",
        "Stopped",
        "StartPending",
        "Running",
    ]
    assert len(events_of(portal, "iisreset")) == 1
    hbr = make_host(tmp_path / "h", role="hbr", listeners=False)
    assert hbr.iisreset()[0] == 1


def test_reboot_goes_down_and_starts_automatic_services_only(tmp_path: Path) -> None:
    can = make_host(tmp_path, role="canister")
    try:
        can.stop_service("TLSearchServer")  # an operator stopped an Auto service
        can.reboot()
        assert wait_for(lambda: can.is_down())
        assert wait_for(lambda: not can.is_down())
        auto = [s.name for s in can.services() if s.start_mode == "Auto"]
        assert wait_for(lambda: all(can.service(n).state == "Running" for n in auto))
        assert can.service("TeaLeafSnapshotService").state == "Stopped"  # Manual stays down
        assert [e["state"] for e in events_of(can, "reboot")] == ["scheduled", "down", "up"]
        assert can.data_service_mode() == "plain"
    finally:
        can.shutdown()


def test_shutdown_exe_one_scheduled_restart_at_a_time(tmp_path: Path) -> None:
    """shutdown.exe /r exits 1190 while another shutdown is scheduled; /a aborts it (1116 when
    there is none); a scheduled shutdown nobody aborts restarts the host at its time."""
    can = make_host(tmp_path, role="canister", faults={"shutdown_scheduled": {"in_s": 2}})
    try:
        assert can.pending_shutdown()["by"] == "another administrator"
        code, out = can.shutdown_exe(["/r", "/f", "/t", "5"])
        assert code == 1190 and out == "A system shutdown has already been scheduled.(1190)\r\n"
        assert wait_for(lambda: can.is_down()) and wait_for(lambda: not can.is_down())
        assert can.pending_shutdown() is None
        states = [e["state"] for e in events_of(can, "reboot")]
        assert states == ["scheduled", "down", "up"]  # the other one, at its time
        assert can.shutdown_exe(["/a"]) == (
            1116,
            "Unable to abort the system shutdown because no shutdown was in progress.(1116)\r\n",
        )
        assert can.shutdown_exe(["/r", "/t", "60"])[0] == 0
        assert can.shutdown_exe(["/a"])[0] == 0
        assert can.pending_shutdown() is None
        assert [e["state"] for e in events_of(can, "reboot")][3:] == ["scheduled", "aborted"]
    finally:
        can.shutdown()


def test_native_process_gets_its_command_line_split_like_windows(host: LabHost) -> None:
    put_pfx(host)
    tools = host.install_dir + r"\Tools"
    proc = host.start_native(tools + r"\TLSTool.exe", f'import "TCXcert.pfx" {PFX_PW}', cwd=tools)
    assert proc.wait(10) and proc.exit_code == 0, proc.output
    assert [(e["exe"], e["exit"]) for e in events_of(host, "process")] == [("TLSTool.exe", 0)]
    with pytest.raises(HostError, match="cannot find the file"):
        host.start_native(tools + r"\nope.exe", "", cwd=tools)


def test_native_hangs_until_killed_with_its_children(host: LabHost) -> None:
    """native_hangs on the child openssl.exe: TLSTool.exe never ends; killing the tree ends
    both, and the import never happened."""
    put_pfx(host)
    host.set_faults({"native_hangs": {"exe": "openssl.exe"}})
    tools = host.install_dir + r"\Tools"
    proc = host.start_native(tools + r"\TLSTool.exe", f"import TCXcert.pfx {PFX_PW}", cwd=tools)
    assert proc.wait(0.3) is False
    proc.kill_tree()
    assert [(e["exe"], e["exit"]) for e in events_of(host, "process")] == [
        ("TLSTool.exe", "killed"),
        ("openssl.exe", "killed"),
    ]
    assert not host.exists(SEC + r"\tealeaf.p12") and not events_of(host, "tlstool")
    host.set_faults({})
    enable = host.start_native(tools + r"\TLSTool.exe", "enable", cwd=tools)  # not hung
    assert enable.wait(10) and enable.exit_code == 1


def test_tlstool_hands_file_and_password_to_openssl_unquoted(host: LabHost) -> None:
    """Pessimistic: a file argument with a space or parentheses, or a password with a cmd
    metacharacter, reaches openssl.exe broken."""
    put_pfx(host)
    full = host.install_dir + r"\Tools\TCXcert.pfx"
    host.write_file(r"C:\Program Files (x86)\x.pfx", host.read_file(full))
    code, out = host.tlstool(["import", r"C:\Program Files (x86)\x.pfx", PFX_PW])
    assert code == 2 and r"Can't open C:\Program for reading" in out
    code, out = host.tlstool(["import", "TCX(1).pfx", PFX_PW])
    assert code == 2
    for char in "&|<>^%!":
        code, out = host.tlstool(["import", "TCXcert.pfx", f"Abc{char}def"])
        assert code == 3 and f"Abc{char}def" not in out
        assert host.tlstool(["create", "-site", "new.pfx", f"Abc{char}def"])[0] == 4
    assert host.tlstool(["create", "-site", "new pfx.pfx", PFX_PW])[0] == 4
    assert not host.exists(SEC + r"\tealeaf.p12")
    assert host.tlstool(["import", "TCXcert.pfx", PFX_PW])[0] == 0  # bare name, plain password


# ---------------------------------------------------------------------------- TLSTool ----
def test_tlstool_create_import_enable_disable(host: LabHost) -> None:
    code, out = host.tlstool(["create", "-site", "TCXcert.pfx", PFX_PW])
    assert code == 0 and PFX_PW not in out
    pfx = certs.load_pfx(host.read_file(r"D:\Tealeaf\Tools\TCXcert.pfx"), Secret(PFX_PW))

    code, out = host.tlstool(["enable"])
    assert code == 1 and "import" in out  # refuses without an imported pair
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") is None

    code, out = host.tlstool(["import", "TCXcert.pfx", "wrong-password"])
    assert code == 3 and "password" in out
    assert not host.exists(SEC + r"\tealeaf.crt")

    code, out = host.tlstool(["import", "missing.pfx", PFX_PW])
    assert code == 2

    code, out = host.tlstool(["import", "TCXcert.pfx", PFX_PW])
    assert code == 0, out
    crt = host.read_file(SEC + r"\tealeaf.crt")
    assert b"BEGIN CERTIFICATE" in crt and b"PRIVATE KEY" in crt
    from tealeaf_fleet.lab.state import first_cert_sha256

    assert first_cert_sha256(crt) == pfx.sha256
    assert host.exists(SEC + r"\tealeaf.p12")
    token = host.reg_get(SECURITY_KEY, "TLSCertPassword")
    assert isinstance(token, str) and token and token != PFX_PW
    cert, _key = host.imported_pair()
    assert certs.fingerprint(cert) == pfx.sha256

    code, out = host.tlstool(["enable"])
    assert code == 0
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") == 1
    assert b"<TLSConfiguration>" in host.read_file(SEC + r"\server.tls.xml")
    code, out = host.tlstool(["disable"])
    assert code == 0 and host.reg_get(TEALEAF_KEY, "EnableTLS") == 0

    assert host.tlstool(["frobnicate"])[0] == 1
    assert host.tlstool(["import", "TCXcert.pfx", "p w"])[0] == 1  # no spaces
    ev = events_of(host, "tlstool")
    assert [(e["verb"], e["exit"]) for e in ev][:5] == [
        ("create", 0),
        ("enable", 1),
        ("import", 3),
        ("import", 2),
        ("import", 0),
    ]
    everything = "".join(
        p.read_text(errors="replace") for p in host.root.parent.parent.rglob("*") if p.is_file()
    )
    assert PFX_PW not in everything


def test_private_key_copies_are_0600_in_0700_folders(host: LabHost) -> None:
    """The lab's copies of private keys (the PFX pushed to Tools, one appended part by part,
    tealeaf.crt and tealeaf.p12 after import, the TMS legacy key) are readable by the lab's
    user only: 0600 files in 0700 folders all the way down from the host's folder."""
    import stat

    pfx = put_pfx(host)
    host.append_file(host.install_dir + r"\Tools\Other.pfx.fleet-part", b"part one")
    assert host.tlstool(["import", "TCXcert.pfx", PFX_PW])[0] == 0
    wait_for(lambda: (host.root / "private" / "tms-legacy.pem").exists())
    files = [
        host.path(pfx),
        host.path(host.install_dir + r"\Tools\Other.pfx.fleet-part"),
        host.path(SEC + r"\tealeaf.crt"),
        host.path(SEC + r"\tealeaf.p12"),
        host.root / "private" / "tms-legacy.pem",
    ]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        folder = path.parent
        while folder != host.root.parent:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            folder = folder.parent


def test_import_and_enable_faults(host: LabHost) -> None:
    put_pfx(host)
    host.set_faults({"import_fails": True})
    assert host.tlstool(["import", "TCXcert.pfx", PFX_PW])[0] == 4
    assert not host.exists(SEC + r"\tealeaf.p12")
    host.set_faults({})
    assert host.tlstool(["import", "TCXcert.pfx", PFX_PW])[0] == 0
    host.set_faults({"enable_fails": True})
    assert host.tlstool(["enable"])[0] == 4
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") is None


def test_disk_full_fault_fails_writes(host: LabHost) -> None:
    pfx_path = put_pfx(host)
    host.set_faults({"disk_full": True})
    with pytest.raises(HostError, match="not enough space on the disk"):
        host.write_file(r"C:\x.bin", b"1")
    code, out = host.tlstool(["import", pfx_path, PFX_PW])
    assert code == 4 and "not enough space" in out
    host.set_faults({})
    host.write_file(r"C:\x.bin", b"1")


def test_read_only_file_refuses_delete_move_and_replace(host: LabHost) -> None:
    """Windows' ReadOnly attribute (a file copied from a CD): File.Delete, File.Move onto it and
    File.Replace of it raise UnauthorizedAccessException, whoever runs the lab."""
    target, part = r"C:\media\TCXcert.pfx", r"C:\media\TCXcert.pfx.fleet-part"
    host.write_file(target, b"old")
    host.write_file(part, b"new")
    host.set_read_only(target, True)
    assert host.is_read_only(target) and not host.is_read_only(part)
    denied = re.escape(f"Access to the path '{target}' is denied.")
    with pytest.raises(AccessDenied, match=denied):
        host.delete_file(target)
    with pytest.raises(AccessDenied, match=denied):
        host.move_file(part, target)
    with pytest.raises(AccessDenied, match=denied):
        host.replace_file(part, target)
    assert host.read_file(target) == b"old" and host.read_file(part) == b"new"
    host.set_read_only(target, False)
    host.replace_file(part, target)
    assert host.read_file(target) == b"new" and not host.exists(part)
    ops = [(e["op"], e["path"]) for e in events_of(host, "file") if e["path"] == target]
    assert ops[-3:] == [("attributes", target), ("attributes", target), ("replace", target)]


def test_replace_file_needs_two_files_on_one_drive(host: LabHost) -> None:
    host.write_file(r"C:\a.bin", b"a")
    with pytest.raises(HostError, match="Could not find file"):
        host.replace_file(r"C:\a.bin", r"C:\missing.bin")
    host.write_file(r"D:\b.bin", b"b")
    with pytest.raises(HostError, match="different disk drive"):
        host.replace_file(r"C:\a.bin", r"D:\b.bin")
    assert host.read_file(r"D:\b.bin") == b"b" and host.read_file(r"C:\a.bin") == b"a"


def test_restart_mutex_denied_fault(host: LabHost) -> None:
    """A named mutex another account created cannot be opened (its DACL comes from its
    creator's token); other names and a healthy host are unaffected."""
    mutex = host.open_mutex(RESTART_MUTEX)
    assert host.open_mutex(RESTART_MUTEX) is mutex  # one object per name and host
    host.set_faults({"restart_mutex_denied": True})
    with pytest.raises(AccessDenied, match=re.escape(RESTART_MUTEX)):
        host.open_mutex(RESTART_MUTEX)
    assert host.open_mutex("Global\\other") is not mutex
    host.set_faults({})
    assert host.open_mutex(RESTART_MUTEX) is mutex


# --------------------------------------------------------------- Data Service and TMS ----
def test_data_service_plain_then_tls_with_imported_certificate(host: LabHost) -> None:
    ds, tms = host.data_service_port, host.tms_port
    assert b"200 OK" in plain_reply(ds)
    legacy = ssl.DER_cert_to_PEM_cert(peer_cert(tms))
    from cryptography import x509

    assert LEGACY_TMS_CN in x509.load_pem_x509_certificate(legacy.encode()).subject.rfc4514_string()

    put_pfx(host)
    assert host.tlstool(["import", "TCXcert.pfx", PFX_PW])[0] == 0
    assert host.tlstool(["enable"])[0] == 0
    assert b"200 OK" in plain_reply(ds)  # nothing changes before the restart
    pfx = certs.load_pfx(host.read_file(r"D:\Tealeaf\Tools\TCXcert.pfx"), Secret(PFX_PW))

    host.stop_service("TeaLeafDataService")
    assert refused(ds)
    host.start_service("TeaLeafDataService")
    assert hashlib.sha256(peer_cert(ds)).hexdigest() == pfx.sha256
    # TMS still has its legacy certificate until it restarts
    assert hashlib.sha256(peer_cert(tms)).hexdigest() != pfx.sha256
    for name in (
        "TeaLeafRulesEngine",
        "TeaLeafHBR",
        "TeaLeafTransportService",
        "TeaLeafDataService",
        "TeaLeafTMS",
    ):
        host.stop_service(name)
    for name in ("TeaLeafTMS", "TeaLeafDataService"):
        host.start_service(name)
    assert hashlib.sha256(peer_cert(tms)).hexdigest() == pfx.sha256

    log = host.root / "fs/D/Tealeaf/Logs"
    text = "".join(p.read_text() for p in sorted(log.glob("TLDataService_*.log")))
    blocks = [line for line in text.splitlines() if "Port: " in line]
    assert blocks[0].endswith(f"INFO Port: {ds}")
    assert blocks[-1].endswith(f"INFO TLS Port: {ds}")
    assert text.splitlines()[-3].endswith("Service.Start INFO Starting HTTP Server")
    assert text.splitlines()[-1].endswith("Service.Start INFO HTTP Server Started")
    assert host.now_local()[:10].replace("-", "") in sorted(log.glob("*.log"))[-1].name


def test_data_service_23443_and_enable_tls_preset_and_schannel_faults(tmp_path: Path) -> None:
    h = make_host(tmp_path, os_key="2008r2", faults={"data_service_23443": True})
    try:
        from tealeaf_fleet.lab.state import data_service_from_log

        logs = h.root / "fs/D/Tealeaf/Logs"
        assert data_service_from_log(logs)["port"] == 23443
        h.set_faults({})  # reconfigured back to its own port
        assert data_service_from_log(logs) == {
            **data_service_from_log(logs),
            "port": h.data_service_port,
            "mode": "plain",
        }
        h.set_faults({"enable_tls_preset": True, "schannel_tls12_missing": True})
        assert h.reg_get(TEALEAF_KEY, "EnableTLS") == 1
        assert h.reg_get(TLS12_SERVER_KEY, "Enabled") is None
        h.set_faults({})
        assert h.reg_get(TLS12_SERVER_KEY, "Enabled") == 1
    finally:
        h.shutdown()


def test_schannel_tls12_is_read_at_boot_on_2008r2(tmp_path: Path) -> None:
    """2008 R2 booted without the TLS 1.2 server keys: with TLS enabled the Data Service offers
    no TLS 1.2 (the controller's handshake fails); writing the keys changes nothing until the
    next boot, after which it does."""
    h = make_host(tmp_path, os_key="2008r2", faults={"schannel_tls12_missing": True})
    try:
        assert not h.tls12_at_boot() and not h.tls12_server_on()
        put_pfx(h)
        assert h.tlstool(["import", "TCXcert.pfx", PFX_PW])[0] == 0
        assert h.tlstool(["enable"])[0] == 0
        restart_data_service(h)
        with pytest.raises(ssl.SSLError):
            peer_cert(h.data_service_port)
        h.reg_set(TLS12_SERVER_KEY, "Enabled", 1, "DWord")
        h.reg_set(TLS12_SERVER_KEY, "DisabledByDefault", 0, "DWord")
        assert h.tls12_server_on() and not h.tls12_at_boot()
        restart_data_service(h)  # a service restart is not a boot
        with pytest.raises(ssl.SSLError):
            peer_cert(h.data_service_port)
        h.reboot()
        assert wait_for(lambda: h.is_down()) and wait_for(lambda: not h.is_down())
        assert wait_for(lambda: h.data_service_mode() == "tls")
        assert h.tls12_at_boot()
        assert len(peer_cert(h.data_service_port)) > 0
    finally:
        h.shutdown()


START = "Service.Start INFO Starting HTTP Server"


def ds_logs(host: LabHost) -> dict[str, tuple[float, str]]:
    """The host's Data Service log files: name -> (modification time, text)."""
    folder = host.root / "fs/D/Tealeaf/Logs"
    return {p.name: (p.stat().st_mtime, p.read_text()) for p in folder.iterdir()}


def restart_data_service(host: LabHost) -> None:
    host.stop_service("TeaLeafDataService")
    host.start_service("TeaLeafDataService")


@pytest.mark.parametrize("style", ["dated", "live"])
def test_log_rolled_leaves_the_startup_block_in_an_older_file(tmp_path: Path, style: str) -> None:
    """The service has run for days: the newest log (by name and by time) holds only request
    lines, the startup block sits in an older dated file whose time is that day. `fleet lab
    state` finds the block by time, and a later start appends to the current file."""
    from tealeaf_fleet.lab.state import data_service_from_log

    h = make_host(tmp_path, log_style=style, faults={"log_rolled": True})
    try:
        today = f"TLDataService_{h.now_local()[:10].replace('-', '')}.log"
        logs = ds_logs(h)
        newest = max(logs, key=lambda n: logs[n][0])
        assert newest == (today if style == "dated" else "TLDataService.log")
        assert START not in logs[newest][1] and "Service.Request" in logs[newest][1]
        (older,) = [n for n, (_, text) in logs.items() if START in text]
        assert older < today and logs[older][0] < logs[newest][0]
        day = time.strftime("%Y%m%d", time.localtime(logs[older][0]))
        assert older == f"TLDataService_{day}.log"
        started = re.search(r"^(\S+) " + re.escape(START), logs[older][1], re.M)
        assert started and started.group(1)[:10].replace("-", "") == day
        assert len(logs) == 3  # two days ago, yesterday (request lines only), the current file
        state = data_service_from_log(h.root / "fs/D/Tealeaf/Logs")
        assert (state["mode"], state["port"]) == ("plain", h.data_service_port)

        restart_data_service(h)
        after = ds_logs(h)
        assert after[newest][1].splitlines()[-3].endswith(START)
        assert {n for n, (_, text) in after.items() if START in text} == {older, newest}
    finally:
        h.shutdown()


def test_live_log_is_renamed_to_its_day_when_the_day_is_over(tmp_path: Path) -> None:
    h = make_host(tmp_path, log_style="live")
    try:
        live = h.root / "fs/D/Tealeaf/Logs/TLDataService.log"
        assert set(ds_logs(h)) == {"TLDataService.log"} and START in live.read_text()
        yesterday = time.time() - 86400
        os.utime(live, (yesterday, yesterday))
        restart_data_service(h)
        rolled = f"TLDataService_{time.strftime('%Y%m%d', time.localtime(yesterday))}.log"
        logs = ds_logs(h)
        assert set(logs) == {"TLDataService.log", rolled}
        assert logs[rolled][0] == pytest.approx(yesterday)  # renamed, not written
        assert all(START in text for _, text in logs.values())
    finally:
        h.shutdown()


def test_last_write_time_local_and_utc_ticks(host: LabHost) -> None:
    path = r"D:\Tealeaf\Logs\x.log"
    host.write_file(path, b"x")
    os.utime(host.path(path), ns=(1_700_000_000_123_456_789,) * 2)
    assert host.last_write_time_utc(path) == 621355968000000000 + 17_000_000_001_234_567
    assert host.last_write_time(path) == time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.localtime(1_700_000_000)
    )
    assert host.last_write_time_utc(r"D:\nope.log") == 504911232000000000  # 1601-01-01 UTC


def test_the_log_held_open_lists_with_the_time_it_had_when_opened(host: LabHost) -> None:
    """NTFS updates a directory entry when the writer closes its handle: while the Data
    Service runs, a listing shows its log's time from when the service opened it."""
    log = rf"D:\Tealeaf\Logs\TLDataService_{host.now_local()[:10].replace('-', '')}.log"
    host.stop_service("TeaLeafDataService")
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(host.path(log), ns=(hour_ago, hour_ago))
    host.start_service("TeaLeafDataService")  # appends its startup block now
    assert host.last_write_time_utc(log) == hour_ago // 100 + 621355968000000000
    host.stop_service("TeaLeafDataService")
    real = host.path(log).stat().st_mtime_ns
    assert real > hour_ago and host.last_write_time_utc(log) == real // 100 + 621355968000000000


def test_data_service_with_tls_but_no_certificate_fails_to_start(host: LabHost) -> None:
    host.reg_set(TEALEAF_KEY, "EnableTLS", 1)
    host.stop_service("TeaLeafDataService")
    with pytest.raises(HostError, match="not imported"):
        host.start_service("TeaLeafDataService")
    assert host.service("TeaLeafDataService").state == "Stopped"
    assert refused(host.data_service_port)


def test_flaky_unreachable_and_wire_faults(host: LabHost) -> None:
    (host.root / "faults.json").write_text(json.dumps({"flaky": {"count": 2}, "slow": {"ms": 5}}))
    assert host.faults()["slow"] == {"ms": 5}
    assert host.consume_flaky() and host.consume_flaky()
    assert not host.consume_flaky()
    assert json.loads((host.root / "faults.json").read_text()) == {"slow": {"ms": 5}}
    assert not host.is_down()
    (host.root / "faults.json").write_text('{"unreachable": true}')
    assert host.is_down()
    (host.root / "faults.json").write_text("{not json")  # half-edited file: healthy
    assert host.faults() == {} and not host.is_down()


# ------------------------------------------------------------------- field fidelity ----
def test_wmi_shows_pending_states_spaced_and_service_controller_does_not(host: LabHost) -> None:
    """Win32_Service.State says "Start Pending"; ServiceControllerStatus says StartPending."""
    host.set_faults({"service_start_pending": {"service": "TeaLeafHBR", "seconds": 0.3}})
    assert host.service("TeaLeafHBR").state == "Running"  # armed: fires at the next WMI look
    wmi = {s.name: s.state for s in host.services()}
    assert wmi["TeaLeafHBR"] == "Start Pending"
    assert host.service("TeaLeafHBR").state == "StartPending"
    assert {s.name: s.state for s in host.service_controllers()}["TeaLeafHBR"] == "StartPending"
    assert wait_for(lambda: host.service("TeaLeafHBR").state == "Running")
    assert {s.name: s.state for s in host.services()}["TeaLeafHBR"] == "Running"  # once only
    states = [e["state"] for e in events_of(host, "service") if e["name"] == "TeaLeafHBR"]
    assert states == ["StartPending", "Running"]


def test_start_pending_fault_picks_a_running_tealeaf_service(host: LabHost) -> None:
    host.set_faults({"service_start_pending": True})
    pending = [s.name for s in host.services() if s.state == "Start Pending"]
    assert len(pending) == 1 and pending[0].lower().startswith("tealeaf")
    assert pending[0] not in ("TeaLeafDataService", "TeaLeafTMS")  # their ports stay as they are


def test_fips_fault_sets_the_policy_and_refuses_the_managed_hash(host: LabHost) -> None:
    fips_key = r"HKLM:\SYSTEM\CurrentControlSet\Control\Lsa\FipsAlgorithmPolicy"
    assert host.reg_get(fips_key, "Enabled") == 0
    host.create_hash("SHA256Managed")  # no policy: every class works
    host.set_faults({"fips": True})
    assert host.reg_get(fips_key, "Enabled") == 1 and host.fips_policy()
    with pytest.raises(HostError, match="not part of the Windows Platform FIPS validated"):
        host.create_hash("SHA256Managed")
    hasher = host.create_hash("SHA256CryptoServiceProvider")
    hasher.update(b"x")
    assert hasher.hexdigest() == hashlib.sha256(b"x").hexdigest()
    host.set_faults({})
    assert host.reg_get(fips_key, "Enabled") == 0


def test_enable_tls_string_and_build_value_missing_faults(host: LabHost) -> None:
    host.set_faults({"enable_tls_string": True, "build_value_missing": True})
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") == "true"
    assert host.reg_kind(TEALEAF_KEY, "EnableTLS") == "String"
    assert host.reg_get(TEALEAF_KEY, "Version") is None
    exe = next(s.path.strip('"') for s in host.services() if s.name == "TeaLeafHBR")
    assert host.file_version(exe) == "9.0.2.1351"  # stamped into the placeholder exe
    assert host.file_version(host.install_dir + r"\Tools\TLSTool.exe") == "9.0.2.1351"
    host.write_file(r"C:\tools\plain.exe", b"MZ no version resource")
    assert host.file_version(r"C:\tools\plain.exe") is None
    assert not host.tls_enabled()  # services do not read text as 1
    host.set_faults({})
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") is None  # the fault ended: value removed
    assert host.reg_get(TEALEAF_KEY, "Version") == "9.0.2.1351"
    host.set_faults({"enable_tls_string": {"value": "yes"}})
    assert host.reg_get(TEALEAF_KEY, "EnableTLS") == "yes"


def test_security_file_locked_fault_fails_opens_with_the_sharing_violation(host: LabHost) -> None:
    for name in ("tealeaf.crt", "tealeaf.p12"):
        host.write_file(SEC + "\\" + name, b"data")
    host.set_faults({"security_file_locked": True})
    with pytest.raises(HostError) as info:
        host.read_file(SEC + r"\TEALEAF.P12")
    assert str(info.value) == (
        "The process cannot access the file 'C:\\ProgramData\\IBM\\Tealeaf\\security\\"
        "TEALEAF.P12' because it is being used by another process."
    )
    assert host.read_file(SEC + r"\tealeaf.crt") == b"data"
    host.set_faults({"security_file_locked": {"files": ["tealeaf.crt"]}})
    assert host.read_file(SEC + r"\tealeaf.p12") == b"data"
    with pytest.raises(HostError, match="being used by another process"):
        host.read_file(SEC + r"\tealeaf.crt")
    with pytest.raises(HostError, match="being used by another process"):  # nor written
        host.write_file(SEC + r"\tealeaf.crt", b"new")
    assert host.path(SEC + r"\tealeaf.crt").read_bytes() == b"data"
    host.write_file(SEC + r"\tealeaf.p12", b"new")
    assert host.read_file(SEC + r"\tealeaf.p12") == b"new"


def test_facts_model_without_system_core_under_fips_still_answers(
    host: LabHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No System.Core: SHA256.Create() (SHA256Managed) is all there is, and FIPS refuses it;
    the facts still answer, naming the error per file and in `fips`."""
    host.write_file(SEC + r"\tealeaf.p12", b"data")
    host.set_faults({"fips": True})
    monkeypatch.setattr(host, "load_assembly", lambda name: False)
    res = _op(host, "facts", {"InstallDir": "", "Since": ""})
    assert res.exit_code == 0, res.stderr
    facts = protocol.parse_result(res.stdout.decode())
    refusal = "This implementation is not part of the Windows Platform FIPS validated"
    assert facts["fips"]["policy_enabled"] is True
    assert facts["fips"]["hash_provider"] is None
    assert facts["fips"]["hash_error"].startswith(refusal)
    assert facts["security"]["files"]["tealeaf.p12"]["error"].startswith(refusal)
    res = _op(host, "file_info", {"Paths": [SEC + r"\tealeaf.p12"]})
    assert res.exit_code == 1 and refusal.encode() in res.stderr


# ----------------------------------------------------------------------------- runner ----
def _op(host: LabHost, op: str, params: dict, *, script: str | None = None) -> CommandResult:
    cmd, args = protocol.command_line()
    assert host.wants_stdin(cmd, args)
    stdin = protocol.build_stdin(op, params)
    if script is not None:
        stdin = stdin.replace(protocol.script_text(op).encode(), script.encode())
    return host.run_command(cmd, args, stdin)


def test_runner_generic_and_unknown_commands(host: LabHost) -> None:
    assert not host.wants_stdin("hostname", [])
    assert host.run_command("hostname", [], b"").stdout == b"HBR01\r\n"
    res = host.run_command("frob.exe", ["x"], b"")
    assert res.exit_code == 1 and b"is not recognized" in res.stderr


def test_runner_runs_models_only_for_packaged_scripts(host: LabHost) -> None:
    pytest.importorskip("tealeaf_fleet.lab.models")
    res = _op(host, "file_info", {"Paths": [r"D:\Tealeaf\Tools\TLSTool.exe", r"C:\none"]})
    assert res.exit_code == 0, res.stderr
    files = protocol.parse_result(res.stdout.decode())["files"]
    assert files[r"D:\Tealeaf\Tools\TLSTool.exe"]["exists"] is True
    assert files[r"C:\none"]["exists"] is False
    tampered = protocol.script_text("file_info") + "\n# edited\n"
    res = _op(host, "file_info", {"Paths": [r"C:\none"]}, script=tampered)
    assert res.exit_code == 1 and res.stderr.startswith(b"#< CLIXML\r\n")
    assert b"packaged" in res.stderr
    # a model's refusal arrives as a CLIXML error record with the exit code
    res = _op(host, "get_file", {"Path": r"C:\none", "Offset": 0, "Length": 10})
    assert res.exit_code != 0 and b'<S S="Error">' in res.stderr


def test_clixml_error_shape() -> None:
    out = clixml_error("bad <thing>\nline2").decode()
    assert out.startswith("#< CLIXML\r\n<Objs ")
    assert '<S S="Error">bad &lt;thing&gt;_x000D__x000A_</S>' in out
    assert '<S S="Error">line2_x000D__x000A_</S>' in out


def test_enable_tls_preset_at_lab_start_fails_the_tls_services_not_the_lab(tmp_path: Path) -> None:
    """EnableTLS=1 with no imported pair at boot: the Data Service and TMS fail to start (as on
    Windows) and the lab still comes up, so preflight can report the preset."""
    from tealeaf_fleet.lab.fleet import Lab

    with Lab.start(
        tmp_path / "lab",
        topology={"hbr": 1},
        restart_s=0.2,
        faults={"hbr01": {"enable_tls_preset": True}},
    ) as lab:
        h = lab.host("hbr01")
        states = {s.name: s.state for s in h.services()}
        assert h.reg_get(TEALEAF_KEY, "EnableTLS") == 1
        assert states["TeaLeafDataService"] == "Stopped"
        assert states["TeaLeafTMS"] == "Stopped"
        assert states["TeaLeafHBR"] == "Running"


def test_service_stopped_fault_stops_the_main_service_until_something_starts_it(
    host: LabHost,
) -> None:
    """The process ended on its own: Stopped with no Stop Pending, and it stays stopped
    (no recovery action) until a Start-Service brings it back."""
    host.set_faults({"service_stopped": True})
    assert {s.name: s.state for s in host.services()}["TeaLeafHBR"] == "Stopped"
    states = [e["state"] for e in events_of(host, "service") if e["name"] == "TeaLeafHBR"]
    assert states == ["Stopped"]
    time.sleep(0.3)
    assert host.service("TeaLeafHBR").state == "Stopped"  # nothing restarts it
    host.services_mgr.start("TeaLeafHBR")
    assert host.service("TeaLeafHBR").state == "Running"


def test_service_stopped_fault_can_name_the_service(host: LabHost) -> None:
    host.set_faults({"service_stopped": {"service": "TeaLeafRulesEngine"}})
    states = {s.name: s.state for s in host.services()}
    assert states["TeaLeafRulesEngine"] == "Stopped" and states["TeaLeafHBR"] == "Running"


def test_the_log_walk_stops_after_its_byte_budget(tmp_path: Path, monkeypatch) -> None:
    """Get-FleetDataServiceMode without Since reads the newest log whatever its size, then
    older ones only within $FleetDataServiceLogBudget bytes: past it, the port is unknown
    rather than the op outliving its deadline. The lab model and the script share the bounds."""
    from tealeaf_fleet.lab import models

    script = protocol.script_text("common")
    assert f"$FleetDataServiceLogBudget = {models.DATA_SERVICE_LOG_BUDGET}" in script
    assert f"$FleetDataServiceLogLimit = {models.DATA_SERVICE_LOG_LIMIT}" in script

    h = make_host(tmp_path, faults={"log_rolled": True})
    try:
        found = models._data_service_mode(h, h.install_dir, "")
        assert found["mode"] == "plain" and found["log"] != found["newest_log"]
        walk = models._data_service_logs(h, h.install_dir + "\\Logs")
        older = sum(h.file_size(log) for log in walk[1 : walk.index(found["log"]) + 1])
        monkeypatch.setattr(models, "DATA_SERVICE_LOG_BUDGET", older - 1)
        cut = models._data_service_mode(h, h.install_dir, "")
        assert cut["mode"] is None and cut["newest_log"] == found["newest_log"]
        monkeypatch.setattr(models, "DATA_SERVICE_LOG_BUDGET", older)
        assert models._data_service_mode(h, h.install_dir, "")["mode"] == "plain"
    finally:
        h.shutdown()


def test_constrained_language_is_a_powershell_3_mode_and_refuses_in_windows_words(
    tmp_path: Path,
) -> None:
    """Under an AppLocker/WDAC policy, PowerShell 3.0+ runs ConstrainedLanguage; 2.0 has no
    such mode. The lab answers our refusal only when the bootstrap carries the language check;
    a bootstrap without it meets Windows' own error, so removing the check fails the tests."""
    from tealeaf_fleet.lab import runner

    old = make_host(tmp_path / "a", os_key="2008r2", faults={"constrained_language": True})
    new = make_host(tmp_path / "b", os_key="2016", faults={"constrained_language": True})
    try:
        assert old.language_mode == "FullLanguage"
        assert new.language_mode == "ConstrainedLanguage"
        ours = runner.run_bootstrap(new, protocol.BOOTSTRAP, "input", b"")
        assert ours.exit_code == 1 and b"ConstrainedLanguage" in ours.stderr
        bare = protocol.BOOTSTRAP.replace(protocol.LANGUAGE_CHECK, "", 1)
        windows = runner.run_bootstrap(new, bare, "input", b"")
        assert windows.exit_code == 1
        assert b"supported only on core types" in windows.stderr
        assert b"tealeaf-fleet needs" not in windows.stderr  # not our refusal
    finally:
        old.shutdown()
        new.shutdown()
