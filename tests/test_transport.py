"""transport.Connection against a real lab: pywinrm over https+basic and http+ntlm (message
encryption) to the lab's WinRM endpoints, with live fault injection through faults.json.

The shell-reuse test counts the lab's `request` events per op: a short op on an open shell
should cost Command, Send, Receive, Signal. HOST runs PowerShell 2.0 (2008 R2), PS5 runs 5.1
(2016): the lab's console hosts treat stdin differently there (lab/consolehost.py).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import time
import warnings
from pathlib import Path

import pytest

from tealeaf_fleet.errors import (
    AuthenticationFailed,
    HostUnreachable,
    InputError,
    RemoteScriptError,
    RemoteTimeout,
)
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.lab.events import read_events
from tealeaf_fleet.lab.fleet import Lab
from tealeaf_fleet.ops import protocol
from tealeaf_fleet.secrets import Secret
from tealeaf_fleet.transport import Connection, decode_clixml

pytestmark = pytest.mark.timeout(120)
HOST = "hbr01"
PS5 = "hbr02"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab.start(
        tmp_path_factory.mktemp("lab"),
        topology={"hbr": 2},
        restart_s=0.2,
        os={HOST: "2008r2", PS5: "2016"},
    )
    yield lab
    lab.stop()


@pytest.fixture(autouse=True)
def healthy(lab):
    """Every test starts and ends with no faults and the normal command quota."""
    for name in (HOST, PS5):
        lab.host(name).set_faults({})
    yield
    for name in (HOST, PS5):
        lab.host(name).set_faults({})
    lab.servers[HOST]["https"].shells.max_commands_per_shell = 1000


@pytest.fixture(scope="module")
def fleet(lab):
    return load_fleet(lab.inventory)


@pytest.fixture
def https_host(fleet):
    return fleet.hosts[HOST]


@pytest.fixture
def http_host(fleet, lab):
    host = fleet.hosts[HOST]
    port = lab.servers[HOST]["http"].port
    winrm = dataclasses.replace(
        host.winrm, scheme="http", transport="ntlm", port=port, ca_bundle=None
    )
    return dataclasses.replace(host, winrm=winrm)


@pytest.fixture
def password(fleet, https_host):
    return fleet.winrm_password(https_host)


def _with(host, **winrm):
    return dataclasses.replace(host, winrm=dataclasses.replace(host.winrm, **winrm))


def _requests(lab: Lab, since: int) -> list[str]:
    return [e.get("action") for e in _request_events(lab, since)]


def _request_events(lab: Lab, since: int, host: str = HOST) -> list[dict]:
    events = read_events(lab.dir / "events.jsonl")[since:]
    return [e for e in events if e.get("kind") == "request" and e["host"] == host]


def _mark(lab: Lab) -> int:
    return len(read_events(lab.dir / "events.jsonl"))


FILE_INFO = {"Paths": ["C:\\Windows\\nothing.txt"]}


@pytest.mark.parametrize("which", ["https_host", "http_host"])
def test_both_transports_run_an_op(which, request, password, lab):
    host = request.getfixturevalue(which)
    with Connection(host, password) as conn:
        result = conn.run_op("facts", {"InstallDir": "", "Since": ""}, timeout_s=30, read_only=True)
    assert result["hostname"] == HOST.upper()
    assert result["os"]["version"] == lab.host(HOST).os_version
    assert result["ps_version"] == "2.0"


def test_shell_is_reused_and_a_short_op_costs_four_requests(https_host, password, lab):
    with Connection(https_host, password) as conn:
        conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)  # opens the shell
        per_op = []
        for _ in range(3):
            mark = _mark(lab)
            result = conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
            per_op.append(_requests(lab, mark))
        assert conn.shells_opened == 1
    assert result["files"]["C:\\Windows\\nothing.txt"]["exists"] is False
    for actions in per_op:
        assert "Create" not in actions
        assert actions[:2] == ["Command", "Send"] and actions[-1] == "Signal"
        assert len(actions) <= 5, actions
    print("requests per op on an open shell:", [len(a) for a in per_op])


def test_probe_leaves_no_shell_open(https_host, password, lab):
    """reboot_and_wait polls with probe(), each on a fresh shell: a shell left open per poll
    would pile up on the host towards WinRS's MaxShellsPerUser (then every probe fails)."""
    mark = _mark(lab)
    with Connection(https_host, password) as conn:
        assert all([conn.probe(timeout_s=30) for _ in range(3)])
        actions = _requests(lab, mark)
    assert actions.count("Create") == 3
    assert actions.count("Delete") == 3


def test_reopens_the_shell_when_the_command_quota_is_spent(https_host, password, lab):
    lab.servers[HOST]["https"].shells.max_commands_per_shell = 2
    mark = _mark(lab)
    with Connection(https_host, password) as conn:
        for _ in range(5):
            conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
        assert conn.shells_opened == 3
    assert _requests(lab, mark).count("Create") == 3


def test_flaky_server_is_retried(https_host, password, lab):
    lab.host(HOST).set_faults({"flaky": {"count": 2}})
    with Connection(https_host, password) as conn:
        result = conn.run_op("file_info", FILE_INFO, timeout_s=60, read_only=True)
    assert "files" in result
    assert lab.host(HOST).consume_flaky() is False  # both failures were used up


def test_flaky_before_start_retries_a_changing_op_once(https_host, password, lab):
    """A 500 fault on Command means the script never started: safe to send again, and the
    change happens exactly once."""
    key = "HKLM:\\SOFTWARE\\tealeaf-fleet-test"
    with Connection(https_host, password) as conn:
        conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)  # shell open
        lab.host(HOST).set_faults({"flaky": {"count": 1}})
        mark = _mark(lab)
        result = conn.run_op(
            "set_registry",
            {"Key": key, "Name": "Flaky", "Type": "DWord", "Value": "7"},
            timeout_s=60,
            read_only=False,
        )
    assert result["value"] == 7
    writes = [
        e
        for e in read_events(lab.dir / "events.jsonl")[mark:]
        if e["kind"] == "registry" and e.get("name") == "Flaky"
    ]
    assert len(writes) == 1


def test_slow_host_times_out_and_a_started_change_is_not_resent(https_host, password, lab):
    key = "HKLM:\\SOFTWARE\\tealeaf-fleet-test"
    with Connection(https_host, password) as conn:
        conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
        lab.host(HOST).set_faults({"slow": {"ms": 1200}})
        mark = _mark(lab)
        with pytest.raises(RemoteTimeout) as info:
            conn.run_op(
                "set_registry",
                {"Key": key, "Name": "Slow", "Type": "DWord", "Value": "1"},
                timeout_s=2.0,
                read_only=False,
            )
    assert info.value.host == HOST
    assert "may have run" in (info.value.hint or "")
    lab.host(HOST).set_faults({})
    deadline = time.monotonic() + 10
    writes: list = []
    while time.monotonic() < deadline and not writes:
        writes = [
            e
            for e in read_events(lab.dir / "events.jsonl")[mark:]
            if e["kind"] == "registry" and e.get("name") == "Slow"
        ]
        time.sleep(0.2)
    assert len(writes) == 1  # it ran once and was not sent again
    assert _requests(lab, mark).count("Command") == 1


def test_slow_but_in_time_succeeds(https_host, password, lab):
    lab.host(HOST).set_faults({"slow": {"ms": 200}})
    with Connection(https_host, password) as conn:
        assert "files" in conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)


def test_read_timeout_of_a_read_only_op_is_a_remote_timeout(https_host, password, lab):
    host = _with(https_host, read_timeout_s=2, operation_timeout_s=1)
    lab.host(HOST).set_faults({"slow": {"ms": 2500}})
    with Connection(host, password, retries=1) as conn, pytest.raises(RemoteTimeout) as info:
        conn.run_op("file_info", FILE_INFO, timeout_s=8, read_only=True)
    assert info.value.host == HOST


def test_unreachable_fault(https_host, password, lab):
    lab.host(HOST).set_faults({"unreachable": True})
    with (
        Connection(https_host, password, retries=1) as conn,
        pytest.raises(HostUnreachable) as info,
    ):
        conn.run_op("file_info", FILE_INFO, timeout_s=20, read_only=True)
    assert info.value.host == HOST and info.value.hint


def test_closed_port_is_unreachable(https_host, password):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with (
        Connection(_with(https_host, port=port), password, retries=0) as conn,
        pytest.raises(HostUnreachable) as info,
    ):
        conn.run_op("file_info", FILE_INFO, timeout_s=10, read_only=True)
    assert str(port) in info.value.hint or str(port) in info.value.message


@pytest.mark.parametrize("which", ["https_host", "http_host"])
def test_wrong_password_is_authentication_failed_without_the_password(which, request):
    host = request.getfixturevalue(which)
    wrong = Secret("Wr0ng-Pa55word-xyz", source="test")
    with Connection(host, wrong) as conn, pytest.raises(AuthenticationFailed) as info:
        conn.run_op("file_info", FILE_INFO, timeout_s=20, read_only=True)
    assert info.value.host == HOST
    assert "Wr0ng-Pa55word-xyz" not in str(info.value) + repr(info.value.args)


def test_auth_fails_fault(https_host, password, lab):
    lab.host(HOST).set_faults({"auth_fails": True})
    with Connection(https_host, password) as conn, pytest.raises(AuthenticationFailed):
        conn.run_op("file_info", FILE_INFO, timeout_s=20, read_only=True)


def test_script_failure_carries_the_decoded_message(https_host, password):
    with Connection(https_host, password) as conn, pytest.raises(RemoteScriptError) as info:
        conn.run_op(
            "get_file",
            {"Path": "C:\\no\\such 'file'.txt", "Offset": 0, "Length": 10},
            timeout_s=30,
            read_only=True,
        )
    assert info.value.exit_code_remote == 1
    assert info.value.op == "get_file"
    assert info.value.message == "file not found: C:\\no\\such 'file'.txt"


def test_certificate_validation_is_on_by_default(https_host, password):
    """Without the lab CA the lab's certificate is not trusted: refused, not retried."""
    with (
        Connection(_with(https_host, ca_bundle=None), password) as conn,
        pytest.raises(HostUnreachable) as info,
    ):
        conn.run_op("file_info", FILE_INFO, timeout_s=20, read_only=True)
    assert "TLS" in info.value.message and "ca_bundle" in (info.value.hint or "")
    assert info.value.transient is False


def test_validate_certs_false_warns_loudly(https_host, password):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conn = Connection(_with(https_host, ca_bundle=None, validate_certs=False), password)
        with conn:
            conn.run_op("file_info", FILE_INFO, timeout_s=20, read_only=True)
    assert any("validation is OFF" in str(w.message) for w in caught)


def test_settings_that_leak_credentials_are_refused(https_host, password):
    with pytest.raises(InputError, match="unencrypted"):
        Connection(_with(https_host, scheme="http", transport="basic"), password)
    Connection(
        _with(https_host, scheme="http", transport="basic", allow_unencrypted=True), password
    )
    with pytest.raises(InputError, match="read_timeout_s"):
        Connection(_with(https_host, read_timeout_s=20, operation_timeout_s=20), password)


def test_unknown_op_parameter_is_a_programming_error(https_host, password):
    with Connection(https_host, password) as conn, pytest.raises(ValueError, match="Bogus"):
        conn.run_op("file_info", {"Bogus": "x"}, timeout_s=5, read_only=True)


def test_decode_clixml():
    raw = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/'
        b'powershell/2004/04"><S S="Error">line one_x000D__x000A_</S>'
        b'<S S="Error">caf\xc3\xa9 &amp; more_x000D__x000A_</S></Objs>'
    )
    assert decode_clixml(raw) == "line one\r\ncaf\u00e9 & more"
    assert decode_clixml(b"plain text\r\n") == "plain text"
    assert decode_clixml(b"\xef\xbb\xbfplain text\r\n") == "plain text"


def test_result_after_a_byte_order_mark():
    """powershell.exe 2.0 runs on CLR 2, whose Console.Out in a code page 65001 shell begins
    redirected output with a UTF-8 byte order mark, right before the result marker."""
    stdout = b"\xef\xbb\xbf" + protocol.format_result({"ok": True}).encode("ascii")
    assert protocol.parse_result(stdout.decode("utf-8")) == {"ok": True}


def test_lab_events_file_exists(lab):
    assert Path(lab.dir / "events.jsonl").is_file()


# --- how the op reaches PowerShell: stdin channel, stdin mode, language mode -----------------

OLD_BOOTSTRAP = protocol.BOOTSTRAP.replace(protocol.STDIN_READ, "$t=[Console]::In.ReadToEnd();")


@pytest.mark.parametrize(("name", "ps_version"), [(HOST, "2.0"), (PS5, "5.1")])
def test_ops_run_on_powershell_2_and_5_with_a_pipe_mode_stdin(name, ps_version, fleet, lab):
    """The bootstrap reads stdin through `$input`, which both console hosts feed, and every
    command the transport starts has a pipe-mode stdin (WINRS_CONSOLEMODE_STDIN FALSE)."""
    host = fleet.hosts[name]
    mark = _mark(lab)
    with Connection(host, fleet.winrm_password(host)) as conn:
        result = conn.run_op("facts", {"InstallDir": "", "Since": ""}, timeout_s=30, read_only=True)
        conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
    assert result["ps_version"] == ps_version
    commands = [e for e in _request_events(lab, mark, name) if e["action"] == "Command"]
    assert [e["console_mode_stdin"] for e in commands] == [False, False]


@pytest.mark.parametrize("name", [HOST, PS5])
def test_a_console_in_bootstrap_fails_on_powershell_2_only(name, fleet, lab, monkeypatch):
    """The bootstrap as it was, reading `[Console]::In.ReadToEnd()`: PowerShell 2.0's console
    host (lab: pessimistic reading) takes stdin into `$input` whatever the command says, so
    the text is empty and `$t.Substring(0,-1)` throws; 5.1 leaves the stream to the command."""
    line = ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    encoded = base64.b64encode(OLD_BOOTSTRAP.encode("utf-16-le")).decode("ascii")
    monkeypatch.setattr(protocol, "command_line", lambda: (protocol.POWERSHELL, [*line, encoded]))
    host = fleet.hosts[name]
    with Connection(host, fleet.winrm_password(host)) as conn:
        if name == PS5:
            assert "files" in conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
            return
        with pytest.raises(RemoteScriptError) as info:
            conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
    assert info.value.exit_code_remote == 1
    assert 'Exception calling "Substring"' in info.value.message


def test_a_console_mode_stdin_never_ends_so_the_op_times_out(
    https_host, password, lab, monkeypatch
):
    """pywinrm's default console-mode stdin never reaches end-of-file: the bootstrap waits for
    stdin until the op's deadline (then the transport signals it), while the same op in pipe
    mode completes."""
    from winrm.protocol import Protocol

    original = Protocol.run_command

    def console_mode(self, shell_id, command, arguments=(), **kwargs):
        kwargs["console_mode_stdin"] = True
        return original(self, shell_id, command, arguments, **kwargs)

    mark = _mark(lab)
    with Connection(https_host, password, retries=0) as conn:
        monkeypatch.setattr(Protocol, "run_command", console_mode)
        with pytest.raises(RemoteTimeout):
            conn.run_op("file_info", FILE_INFO, timeout_s=3, read_only=True)
        monkeypatch.setattr(Protocol, "run_command", original)
        assert "files" in conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
    events = read_events(lab.dir / "events.jsonl")[mark:]
    ops = [e for e in events if e["kind"] == "op" and e["host"] == HOST]
    assert [e["exit"] for e in ops] == [0]  # the console-mode one never ran
    commands = [e for e in _request_events(lab, mark) if e["action"] == "Command"]
    assert [e["console_mode_stdin"] for e in commands] == [True, False]
    first = commands[0]["shell"]
    signals = [e for e in _request_events(lab, mark) if e["action"] == "Signal"]
    assert signals and signals[0]["shell"] == first  # the transport gave up on it


@pytest.mark.parametrize("then", ["run_op", "probe", "close"])
def test_a_shell_abandoned_mid_op_is_closed_once_the_host_answers(
    then, https_host, password, lab, monkeypatch
):
    """A connection-level failure after the op started drops the shell; once the host answers
    on the new session, the abandoned command gets its Signal and its shell a Delete, once."""
    host = lab.host(HOST)
    sends: list[dict] = []
    record = host.record

    def unreachable_after_the_send(kind: str, **fields) -> None:
        record(kind, **fields)
        if kind == "request" and fields.get("action") == "Send" and not sends:
            sends.append(fields)  # the op's stdin is in: the host goes away now
            host.set_faults({"unreachable": True})

    with Connection(https_host, password, retries=1) as conn:
        conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
        monkeypatch.setattr(host, "record", unreachable_after_the_send)
        with pytest.raises(HostUnreachable):
            conn.run_op("file_info", FILE_INFO, timeout_s=20, read_only=True)
        monkeypatch.setattr(host, "record", record)
        host.set_faults({})
        shell, command = sends[0]["shell"], sends[0]["command"]
        mark = _mark(lab)
        if then == "probe":
            assert conn.probe(timeout_s=30)
        elif then == "run_op":
            assert "files" in conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
        if then != "close":
            conn.run_op("file_info", FILE_INFO, timeout_s=30, read_only=True)
    # then == "close": no op after the failure; closing the connection ends the leftover
    events = [e for e in _request_events(lab, mark) if e.get("shell") == shell]
    assert [(e["action"], e.get("command")) for e in events] == [
        ("Signal", command),
        ("Delete", None),
    ]
    if then != "close":
        actions = _requests(lab, mark)
        assert actions.index("Create") < actions.index("Signal") < actions.index("Command")


@pytest.mark.parametrize(
    ("op", "params", "read_only"),
    [
        ("facts", {"InstallDir": "", "Since": ""}, True),
        (
            "set_registry",
            {"Key": "HKLM:\\SOFTWARE\\x", "Name": "N", "Type": "DWord", "Value": "1"},
            False,
        ),
    ],
)
def test_constrained_language_mode_is_named_and_not_retried(
    op, params, read_only, fleet, password, lab
):
    """Every op goes through the bootstrap, whose first statement refuses ConstrainedLanguage
    (AppLocker/WDAC) before anything runs. On PowerShell 5.1: 2.0 has no such mode."""
    lab.host(PS5).set_faults({"constrained_language": True})
    mark = _mark(lab)
    with Connection(fleet.hosts[PS5], password) as conn, pytest.raises(RemoteScriptError) as info:
        conn.run_op(op, params, timeout_s=30, read_only=read_only)
    err = info.value
    assert "ConstrainedLanguage" in err.message and "Constrained Language Mode" in err.message
    assert "allow-list" in (err.hint or "") and "FullLanguage" in (err.hint or "")
    assert err.exit_code_remote == 1 and err.op == op
    assert [e.get("action") for e in _request_events(lab, mark, PS5)].count("Command") == 1
    events = read_events(lab.dir / "events.jsonl")[mark:]
    assert not [e for e in events if e["kind"] == "registry"]


def test_fleet_status_shows_constrained_language_mode(lab, capsys):
    from tealeaf_fleet.cli.main import main

    lab.host(PS5).set_faults({"constrained_language": True})
    lab.host(HOST).set_faults({"constrained_language": True})  # PowerShell 2.0: no such mode
    code = main(["status", str(lab.inventory), "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = {h["name"]: h for h in doc["hosts"]}
    assert code == 1 and rows[HOST]["facts"] is not None and rows[PS5]["facts"] is None
    assert "ConstrainedLanguage" in rows[PS5]["error"]
    assert "Constrained Language Mode" in rows[PS5]["error"]
    main(["status", str(lab.inventory)])
    out = capsys.readouterr().out
    assert f"{PS5}: not read: PowerShell on this host runs in ConstrainedLanguage" in out


def test_abandoned_shells_not_reached_stay_queued_for_the_next_answer(https_host, password):
    """A cleanup cut off by a connection failure keeps the shells it did not close, the one it
    was on first, for the next time the host answers."""
    import requests

    class Unanswering:
        def __init__(self):
            self.calls = []

        def cleanup_command(self, shell, command):
            self.calls.append(("Signal", shell))
            if shell == "s2":
                raise requests.exceptions.ConnectionError("host gone again")

        def close_shell(self, shell, close_session=True):
            self.calls.append(("Delete", shell))

    conn = Connection(https_host, password)
    conn._abandoned = [("s1", "c1"), ("s2", "c2"), ("s3", "c3")]
    proto = Unanswering()
    conn._close_abandoned(proto)
    assert proto.calls == [("Signal", "s1"), ("Delete", "s1"), ("Signal", "s2")]
    assert conn._abandoned == [("s2", "c2"), ("s3", "c3")]
