"""The lab's WinRM wire layer alone: real clients (pywinrm, pypsrp) over real HTTP(S) to
`WinRMServer`, with a small in-test ShellHost (generic commands + a few test programs).

Both transports: https + Basic with the lab CA as the only trust, and http + NTLM with message
encryption (pyspnego acceptor). Servers bind port 0 on 127.0.0.1 and are stopped after the
module.
"""

from __future__ import annotations

import base64
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests
import winrm
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)

from tealeaf_fleet.lab import ntlm_users, wsman
from tealeaf_fleet.lab.api import CommandResult
from tealeaf_fleet.lab.generic import run_generic
from tealeaf_fleet.lab.httpserver import WinRMServer
from tealeaf_fleet.lab.tlsca import LabCA

USER = "LAB\\fleet"
PASSWORD = "Wire-P@ss word!42"


class WireHost:
    """A ShellHost for wire tests: generic commands plus `readstdin`, `big N`, `sleep S`."""

    def __init__(self, name: str = "WIRE01") -> None:
        self.name = name
        self.username = USER
        self.fault_map: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.commands: list[tuple[str, list[str], bytes]] = []
        self._lock = threading.Lock()

    def password(self) -> str:
        return PASSWORD

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.fault_map)

    def consume_flaky(self) -> bool:
        with self._lock:
            flaky = self.fault_map.get("flaky")
            if not isinstance(flaky, dict) or int(flaky.get("count", 0)) <= 0:
                return False
            left = int(flaky["count"]) - 1
            if left:
                self.fault_map["flaky"] = {"count": left}
            else:
                del self.fault_map["flaky"]
            return True

    def is_down(self) -> bool:
        return bool(self.faults().get("unreachable"))

    def record(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self.events.append({"ts": time.time(), "host": self.name, "kind": kind, **fields})

    def actions(self) -> list[str]:
        with self._lock:
            return [e["action"] for e in self.events if e["kind"] == "request"]

    def wants_stdin(self, command: str, args: list[str]) -> bool:
        return command.lower() == "readstdin"

    def run_command(self, command: str, args: list[str], stdin: bytes) -> CommandResult:
        with self._lock:
            self.commands.append((command, list(args), stdin))
        prog = command.lower()
        if prog == "readstdin":
            return CommandResult(0, stdout=b"got:" + stdin, stderr=b"")
        if prog == "big":
            n = int(args[0])
            block = bytes(range(256))
            return CommandResult(0, stdout=(block * (n // 256 + 1))[:n], stderr=b"tail\r\n")
        if prog == "sleep":
            time.sleep(float(args[0]))
            return CommandResult(7, stdout=b"slept\r\n")
        if prog == "crash":
            raise RuntimeError("simulated host bug")
        if prog == "args":  # echo back the argv the host received, one per line
            return CommandResult(0, stdout="\n".join(args).encode("utf-8"))
        generic = run_generic(self.name, self.username, command, args)
        if generic is not None:
            return generic
        return CommandResult(
            1,
            stderr=f"'{command}' is not recognized as an internal or "
            "external command,\r\noperable program or batch file.\r\n".encode(),
        )


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return LabCA.create(tmp_path_factory.mktemp("labca"))


@pytest.fixture(scope="module")
def host() -> WireHost:
    return WireHost()


@pytest.fixture(autouse=True)
def _healthy(host: WireHost):
    with host._lock:
        host.fault_map.clear()
        host.events.clear()
        host.commands.clear()
    yield


@pytest.fixture(scope="module")
def https_server(host: WireHost, ca: LabCA):
    server = WinRMServer(
        host,
        scheme="https",
        ssl_context=ca.server_context("wire01"),
        receive_timeout_s=1.0,
        max_commands_per_shell=5,
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_server(host: WireHost):
    ntlm_users.register(USER, PASSWORD)
    server = WinRMServer(host, scheme="http", receive_timeout_s=1.0).start()
    yield server
    server.stop()


def basic_session(server: WinRMServer, ca: LabCA, password: str = PASSWORD, **kw) -> winrm.Session:
    return winrm.Session(
        server.url,
        auth=(USER, password),
        transport="basic",
        server_cert_validation="validate",
        ca_trust_path=str(ca.ca_file),
        proxy=None,
        **kw,
    )


def ntlm_session(server: WinRMServer, password: str = PASSWORD, **kw) -> winrm.Session:
    return winrm.Session(
        server.url, auth=(USER, password), transport="ntlm", proxy=None, ca_trust_path=None, **kw
    )


@pytest.fixture(params=["https-basic", "http-ntlm"])
def session_factory(request, https_server, http_server, ca):
    """A factory for pywinrm sessions on one of the two transports."""
    if request.param == "https-basic":
        return lambda **kw: basic_session(https_server, ca, **kw)
    return lambda **kw: ntlm_session(http_server, **kw)


# --- pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,expected",
    [
        ("a b  c", ["a", "b", "c"]),
        ('"C:\\Program Files\\x.exe" -a "b c"', ["C:\\Program Files\\x.exe", "-a", "b c"]),
        ('a\\\\"b c"', ["a\\b c"]),
        ('a\\"b', ['a"b']),
        ('"say ""hi"""', ['say "hi"']),
        ("x\\y\\", ["x\\y\\"]),
        ("", []),
    ],
)
def test_split_command_line_follows_windows_rules(line, expected):
    assert wsman.split_command_line(line) == expected


def test_parse_request_matches_namespaces_by_uri_not_prefix():
    xml = (
        '<Z:Envelope xmlns:Z="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:q="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:k="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">'
        "<Z:Header><q:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</q:Action>"
        "<q:MessageID>uuid:ABC-1</q:MessageID><k:OperationTimeout>PT1M30.5S</k:OperationTimeout>"
        '<k:SelectorSet><k:Selector Name="ShellId">S1</k:Selector></k:SelectorSet>'
        "</Z:Header><Z:Body/></Z:Envelope>"
    )
    req = wsman.parse_request(xml.encode())
    assert req.name == "Create"
    assert req.message_id == "uuid:ABC-1"
    assert req.operation_timeout_s == 90.5
    assert req.selectors == {"ShellId": "S1"}
    with pytest.raises(wsman.WsmanFault):
        wsman.parse_request(b"<not-xml")


def test_run_generic_answers_only_known_shapes():
    ps = base64.b64encode("Write-Output 'it''s ok'".encode("utf-16-le")).decode()
    assert run_generic("H1", "LAB\\Fleet", "whoami", []).stdout == b"lab\\fleet\r\n"
    assert run_generic("H1", "fleet", "hostname", []).stdout == b"H1\r\n"
    assert run_generic("H1", "u", "cmd", ["/c", "echo", "a", "b"]).stdout == b"a b\r\n"
    assert (
        run_generic("H1", "u", "PowerShell.exe", ["-NoProfile", "-EncodedCommand", ps]).stdout
        == b"it's ok\r\n"
    )
    evil = base64.b64encode("Write-Output 'x'; Remove-Item C:\\".encode("utf-16-le")).decode()
    assert run_generic("H1", "u", "powershell", ["-enc", evil]) is None
    assert run_generic("H1", "u", "tlstool.exe", ["enable"]) is None


# --- pywinrm over both transports -----------------------------------------------------------


def test_run_cmd_and_run_ps(session_factory, host):
    s = session_factory()
    r = s.run_cmd("hostname")
    assert (r.status_code, r.std_out) == (0, b"WIRE01\r\n")
    r = s.run_cmd("cmd", ["/c", "echo", '"quoted arg"', "x"])
    assert r.std_out == b"quoted arg x\r\n"
    r = s.run_ps("Write-Output 'from ps'")
    assert (r.status_code, r.std_out) == (0, b"from ps\r\n")
    r = s.run_cmd("nosuchtool")
    assert r.status_code == 1 and b"is not recognized" in r.std_err
    acts = host.actions()
    for action in ("Create", "Command", "Receive", "Signal", "Delete"):
        assert action in acts


def _commands(host: WireHost) -> list[dict[str, Any]]:
    with host._lock:
        return [e for e in host.events if e["kind"] == "request" and e["action"] == "Command"]


def test_stdin_through_send(session_factory, host):
    """A pipe-mode stdin (WINRS_CONSOLEMODE_STDIN FALSE, as Ansible sends stdin) ends with
    the Send that carries End="true"."""
    p = session_factory().protocol
    shell = p.open_shell(codepage=65001)
    try:
        cid = p.run_command(shell, "readstdin", ["-x"], console_mode_stdin=False)
        p.send_command_input(shell, cid, b"part1,", end=False)
        p.send_command_input(shell, cid, b"part2", end=True)
        out, err, rc, done = _receive_until_done(p, shell, cid)
        assert (out, rc) == (b"got:part1,part2", 0)
        p.cleanup_command(shell, cid)
    finally:
        p.close_shell(shell)
    assert host.commands[-1] == ("readstdin", ["-x"], b"part1,part2")
    assert [e["console_mode_stdin"] for e in _commands(host)] == [False]
    assert _commands(host)[0]["shell"] == shell.upper()
    if p.transport.endpoint.startswith("http:"):  # NTLM over http: every message was sealed
        assert p.transport.encryption is not None


def test_console_mode_stdin_never_reaches_end_of_file(https_server, ca, host):
    """pywinrm's default (WINRS_CONSOLEMODE_STDIN TRUE): a command that reads stdin to its end
    never sees end-of-file, so it never runs; only a Signal ends it."""
    p = basic_session(https_server, ca, operation_timeout_sec=1, read_timeout_sec=3).protocol
    shell = p.open_shell(codepage=65001)
    try:
        cid = p.run_command(shell, "readstdin", [])
        p.send_command_input(shell, cid, b"all of it", end=True)
        for _ in range(3):  # every Receive long-polls until it times out: no output, no exit
            with pytest.raises(WinRMOperationTimeoutError):
                p.get_command_output_raw(shell, cid)
        p.cleanup_command(shell, cid)  # Signal terminate: the client gives up on it
    finally:
        p.close_shell(shell)
    assert host.commands == []
    assert [e["console_mode_stdin"] for e in _commands(host)] == [True]
    signals = [e for e in host.events if e.get("action") == "Signal"]
    assert [(e["shell"], e["command"]) for e in signals] == [(shell.upper(), cid.upper())]


def test_console_mode_does_not_hold_a_command_that_reads_no_stdin(https_server, ca, host):
    p = basic_session(https_server, ca).protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "hostname", [], console_mode_stdin=True)
        out, _, rc, _ = _receive_until_done(p, shell, cid)
    finally:
        p.close_shell(shell)
    assert (out, rc) == (b"WIRE01\r\n", 0)


def _receive_until_done(p, shell, cid, limit_s: float = 30.0):
    out, err, polls = b"", b"", 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            o, e, rc, done = p.get_command_output_raw(shell, cid)
        except WinRMOperationTimeoutError:
            polls += 1
            continue
        out, err = out + o, err + e
        polls += 1
        if done:
            return out, err, rc, polls
    raise AssertionError("command did not finish")


def test_large_output_is_split_across_receives(session_factory):
    n = 200_000  # > 3 x 64 KiB
    p = session_factory().protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "big", [str(n)])
        out, err, rc, polls = _receive_until_done(p, shell, cid)
    finally:
        p.close_shell(shell)
    block = bytes(range(256))
    assert out == (block * (n // 256 + 1))[:n]
    assert err == b"tail\r\n" and rc == 0
    assert polls >= 4  # ceil(200006 / 65536)


def test_long_poll_times_out_then_completes(session_factory, host):
    s = session_factory(operation_timeout_sec=5, read_timeout_sec=10)
    p = s.protocol
    shell = p.open_shell()
    timeouts = 0
    try:
        cid = p.run_command(shell, "sleep", ["2.5"])
        while True:
            try:
                out, err, rc, done = p.get_command_output_raw(shell, cid)
            except WinRMOperationTimeoutError:
                timeouts += 1
                continue
            if done:
                break
    finally:
        p.close_shell(shell)
    assert (out, rc) == (b"slept\r\n", 7)
    assert timeouts >= 2  # receive_timeout_s=1.0 while the command takes 2.5 s


def test_operation_timeout_bounds_the_long_poll(https_server, ca):
    """A Receive whose OperationTimeout is shorter than the server's poll ends at it."""
    p = basic_session(https_server, ca, operation_timeout_sec=1, read_timeout_sec=2).protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "sleep", ["1.5"])
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell, cid)
        out, _, rc, _ = _receive_until_done(p, shell, cid)
        assert rc == 7
    finally:
        p.close_shell(shell)


def test_bad_credentials(session_factory, host):
    with pytest.raises(InvalidCredentialsError):
        session_factory(password="wrong-password").run_cmd("hostname")
    assert "auth" in host.actions()
    assert not host.commands


def test_auth_fails_fault(session_factory, host):
    host.fault_map["auth_fails"] = True
    with pytest.raises(InvalidCredentialsError):
        session_factory().run_cmd("hostname")
    host.fault_map.clear()
    assert session_factory().run_cmd("hostname").status_code == 0


def test_unknown_shell_is_a_fault(session_factory):
    p = session_factory().protocol
    with pytest.raises(WSManFaultError) as info:
        p.run_command("00000000-0000-0000-0000-000000000000", "hostname")
    assert info.value.wsman_fault_code == wsman.CODE_INVALID_SELECTORS
    assert info.value.code == 500
    # the connection (and its NTLM sealing state) survives a fault
    shell = p.open_shell()
    p.close_shell(shell)


def test_unknown_command_id_is_a_fault(https_server, ca):
    p = basic_session(https_server, ca).protocol
    shell = p.open_shell()
    try:
        with pytest.raises(WSManFaultError) as info:
            p.get_command_output_raw(shell, "11111111-2222-3333-4444-555555555555")
        assert info.value.wsman_fault_code == wsman.CODE_INVALID_SELECTORS
    finally:
        p.close_shell(shell)


def test_flaky_gives_one_500_then_works(session_factory, host):
    s = session_factory()
    assert s.run_cmd("hostname").status_code == 0  # authenticated, connection warm
    host.fault_map["flaky"] = {"count": 1}
    with pytest.raises(WSManFaultError) as info:
        s.protocol.open_shell()
    assert info.value.code == 500 and info.value.wsman_fault_code is None
    assert "flaky" not in host.faults()
    r = s.run_cmd("hostname")
    assert r.std_out == b"WIRE01\r\n"


def test_slow_fault_makes_client_read_timeouts_fire(session_factory, host):
    s = session_factory(operation_timeout_sec=1, read_timeout_sec=2)
    s.run_cmd("hostname")  # authenticated while healthy
    host.fault_map["slow"] = {"ms": 3000}
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.protocol.open_shell()
    host.fault_map.clear()
    assert session_factory().run_cmd("hostname").status_code == 0


def test_unreachable_host_drops_the_connection(session_factory, host):
    host.fault_map["unreachable"] = True
    with pytest.raises(requests.exceptions.ConnectionError):
        session_factory().run_cmd("hostname")
    assert host.actions() == []


def test_max_commands_per_shell_fault(https_server, ca):
    p = basic_session(https_server, ca).protocol
    shell = p.open_shell()
    try:
        for _ in range(5):
            cid = p.run_command(shell, "hostname")
            p.cleanup_command(shell, cid)
        with pytest.raises(WSManFaultError) as info:
            p.run_command(shell, "hostname")
        assert info.value.wsman_fault_code == wsman.CODE_QUOTA_MAX_OPERATIONS
    finally:
        p.close_shell(shell)
    shell = p.open_shell()  # a new shell has a fresh quota
    p.close_shell(shell)


def test_signal_after_done_and_relates_to(https_server, ca, host):
    """Signal after completion answers normally; RelatesTo echoes MessageID verbatim."""
    p = basic_session(https_server, ca).protocol
    shell = p.open_shell()
    cid = p.run_command(shell, "hostname")
    _receive_until_done(p, shell, cid)
    message_id = "uuid:AbC-odd-Case-123"
    req = {
        "env:Envelope": p.build_wsman_header(
            resource_uri=wsman.RESOURCE_CMD, action=wsman.ACTION_SIGNAL, shell_id=shell
        )
    }
    req["env:Envelope"]["env:Header"]["a:MessageID"] = message_id
    req["env:Envelope"].setdefault("env:Body", {})["rsp:Signal"] = {
        "@CommandId": cid,
        "rsp:Code": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/TERMINATE",
    }
    import xmltodict

    root = ET.fromstring(p.send_message(xmltodict.unparse(req)))
    relates = root.find(f"{{{wsman.NS_SOAP}}}Header/{{{wsman.NS_ADDR}}}RelatesTo")
    assert relates is not None and relates.text == message_id
    with pytest.raises(WSManFaultError):  # terminated: the command id is gone
        p.get_command_output_raw(shell, cid)
    p.close_shell(shell)


def test_arguments_joined_and_separate_give_same_argv(https_server, ca, host):
    p = basic_session(https_server, ca).protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "args", ['"C:\\Program Files\\x"', "-n", '"a b"'])
        out, _, _, _ = _receive_until_done(p, shell, cid)
    finally:
        p.close_shell(shell)
    assert out.decode().split("\n") == ["C:\\Program Files\\x", "-n", "a b"]


# --- pypsrp: an independent client ---------------------------------------------------------


def psrp_options(server: WinRMServer, auth: str, ca: LabCA | None = None) -> dict[str, Any]:
    """Keyword arguments for pypsrp's Client/WSMan to `server`: https (validated against the
    lab CA) when `ca` is given, else plain http."""
    options: dict[str, Any] = dict(
        server="127.0.0.1",
        port=server.port,
        ssl=ca is not None,
        auth=auth,
        username=USER,
        password=PASSWORD,
        no_proxy=True,
    )
    if ca is not None:
        options["cert_validation"] = str(ca.ca_file)
    return options


def test_pypsrp_https_basic(https_server, ca, host):
    from pypsrp.client import Client

    client = Client(**psrp_options(https_server, "basic", ca))
    out, err, rc = client.execute_cmd("whoami")
    assert (out, rc) == ("lab\\fleet\r\n", 0)
    out, err, rc = client.execute_cmd("cmd /c echo via pypsrp")
    assert out == "via pypsrp\r\n"


@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_pypsrp_http_ntlm_encrypted(http_server, host, auth):
    from pypsrp.client import Client
    from pypsrp.shell import Process, WinRS
    from pypsrp.wsman import WSMan

    client = Client(**psrp_options(http_server, auth))
    out, err, rc = client.execute_cmd("hostname")
    assert (out, rc) == ("WIRE01\r\n", 0)

    wsm = WSMan(**psrp_options(http_server, auth))
    with wsm, WinRS(wsm) as shell:
        proc = Process(shell, "readstdin", ["one", "two"])
        proc.begin_invoke()
        proc.send(b"hello", end=True)
        proc.end_invoke()
        proc.signal("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c")
    assert (proc.stdout, proc.rc) == (b"got:hello", 0)
    assert host.commands[-1][:2] == ("readstdin", ["one", "two"])
    # pypsrp sends no WINRS_CONSOLEMODE_STDIN: MS-WSMV 3.1.4.11, "the default implies pipe"
    assert _commands(host)[-1]["console_mode_stdin"] is False


def test_pypsrp_over_https_with_negotiate(https_server, ca):
    from pypsrp.client import Client

    ntlm_users.register(USER, PASSWORD)
    client = Client(**psrp_options(https_server, "ntlm", ca))
    out, _, rc = client.execute_cmd("hostname")
    assert (out, rc) == ("WIRE01\r\n", 0)


def test_pywinrm_ntlm_over_https(https_server, ca):
    ntlm_users.register(USER, PASSWORD)
    s = winrm.Session(
        https_server.url,
        auth=(USER, PASSWORD),
        transport="ntlm",
        proxy=None,
        server_cert_validation="validate",
        ca_trust_path=str(ca.ca_file),
    )
    r = s.run_cmd("whoami")
    assert (r.status_code, r.std_out) == (0, b"lab\\fleet\r\n")
    assert s.protocol.transport.encryption is None  # TLS protects it; no message sealing


def test_ntlm_user_of_another_lab_is_not_this_hosts_user(http_server, host):
    ntlm_users.register("OTHER\\someone", "Other-Pass1")
    with pytest.raises(InvalidCredentialsError):
        winrm.Session(
            http_server.url,
            auth=("OTHER\\someone", "Other-Pass1"),
            transport="ntlm",
            proxy=None,
            ca_trust_path=None,
        ).run_cmd("hostname")
    assert not host.commands


def test_ntlm_users_file_replaces_and_keeps_entries():
    path = ntlm_users.register("Z\\u1", "first")
    ntlm_users.register("z\\U1", "second")
    ntlm_users.register("plain", "pw3")
    lines = path.read_text().splitlines()
    assert "z:U1:second" in lines and "Z:u1:first" not in lines
    assert ":plain:pw3" in lines
    assert ntlm_users.path() == path
    with pytest.raises(ValueError):
        ntlm_users.register("x", "has:colon")


# --- the server object itself ---------------------------------------------------------------


def test_server_refuses_plain_basic_over_http(http_server):
    r = requests.post(
        http_server.url,
        data=b"<x/>",
        auth=(USER, PASSWORD),
        headers={"Content-Type": wsman.NS_SOAP},
        timeout=5,
        proxies={"http": None, "https": None},
    )
    assert r.status_code == 401
    assert r.headers["Content-Type"]
    assert "Negotiate" in r.headers.get("WWW-Authenticate", "")


def test_server_refuses_unencrypted_soap_over_http_even_with_ntlm(http_server, host):
    from requests_ntlm import HttpNtlmAuth

    r = requests.post(
        http_server.url,
        data=b"<x/>",
        auth=HttpNtlmAuth(USER, PASSWORD),
        headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
        timeout=5,
        proxies={"http": None, "https": None},
    )
    assert r.status_code == 401
    assert not host.commands


def test_oversize_message_gets_413(https_server, ca, host):
    p = basic_session(https_server, ca).protocol
    shell = p.open_shell()
    try:
        cid = p.run_command(shell, "readstdin")
        with pytest.raises(WinRMTransportError) as info:
            p.send_command_input(shell, cid, b"x" * (600 * 1024), end=True)
        assert info.value.code == 413
    finally:
        p.close_shell(shell)
    assert "too_large" in host.actions()


def test_host_failure_becomes_exit_code_not_a_hang(https_server, ca):
    r = basic_session(https_server, ca).run_cmd("crash")
    assert r.status_code == 1 and b"simulated host failed" in r.std_err


def test_stop_is_bounded_and_closes_the_port(ca):
    h = WireHost("STOPME")
    server = WinRMServer(h, scheme="https", ssl_context=ca.server_context("stop")).start()
    s = basic_session(server, ca)
    s.run_cmd("hostname")  # leaves an idle keep-alive connection open
    port = server.port
    server.stop(timeout_s=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(
            f"https://127.0.0.1:{port}/wsman",
            verify=str(ca.ca_file),
            timeout=2,
            proxies={"http": None, "https": None},
        )
