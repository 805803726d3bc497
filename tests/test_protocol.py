"""The script framing shared by the transport and the lab (ops/protocol.py)."""

from __future__ import annotations

import base64

import pytest

from tealeaf_fleet.ops import protocol


def test_bootstrap_carries_no_value_and_is_short():
    command, args = protocol.command_line()
    assert command == "powershell.exe"
    assert args[:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    decoded = base64.b64decode(args[3]).decode("utf-16-le")
    assert decoded == protocol.BOOTSTRAP
    # The whole command line stays far below cmd.exe's 8191-character limit.
    assert len(" ".join([command, *args])) < 2000


def test_bootstrap_parses_as_powershell():
    tsp = pytest.importorskip("tree_sitter_powershell")
    from tree_sitter import Language, Parser

    tree = Parser(Language(tsp.language())).parse(protocol.BOOTSTRAP.encode("ascii"))
    assert not tree.root_node.has_error


NASTY = [
    'D:\\Tea\'leaf $(Remove-Item C:\\) `whoami`; echo "x"',
    "line1\nline2\r\nline3",
    "caf\u00e9 \u65e5\u672c \U0001f512",
    "",
    "a:b c=d",
]


@pytest.mark.parametrize("value", NASTY)
def test_parameters_round_trip_as_data(value, monkeypatch):
    monkeypatch.setattr(protocol, "script_text", lambda name: f"# tealeaf-fleet-op: {name}\n")
    data = protocol.build_stdin("facts", {"InstallDir": value, "Flag": True, "Count": 3})
    assert data.isascii()
    inv = protocol.parse_stdin(data)
    assert inv.op == "facts"
    assert inv.params == {"InstallDir": value, "Flag": "1", "Count": "3"}
    # The value never appears as code: only its base64 form is on stdin.
    if value.strip():
        assert value.encode("utf-8") not in data


def test_list_parameters_travel_as_lines(monkeypatch):
    monkeypatch.setattr(protocol, "script_text", lambda name: f"# tealeaf-fleet-op: {name}\n")
    inv = protocol.parse_stdin(protocol.build_stdin("x", {"Names": ["A B", "C"]}))
    assert inv.params["Names"].split("\n") == ["A B", "C"]


def test_bad_parameter_name_is_refused(monkeypatch):
    monkeypatch.setattr(protocol, "script_text", lambda name: "")
    with pytest.raises(ValueError):
        protocol.build_stdin("x", {"bad name": "v"})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello\n",
        b"FLEET1 A:!!!\nlib\n%%FLEET-OP%%\nx",
        b"FLEET1 A\nlib\n%%FLEET-OP%%\nx",
        b"FLEET1\nno separator here",
    ],
)
def test_parse_stdin_rejects_foreign_input(data):
    with pytest.raises(ValueError):
        protocol.parse_stdin(data)


def test_result_is_read_after_the_last_marker():
    noise = "WARNING: something\r\n" + protocol.RESULT_MARKER + '\r\n{"old": 1}\r\n'
    out = noise + protocol.format_result({"ok": True, "name": "caf\u00e9"})
    assert protocol.parse_result(out) == {"ok": True, "name": "caf\u00e9"}
    assert protocol.format_result({"name": "caf\u00e9"}).isascii()


def test_missing_marker_is_an_error():
    with pytest.raises(ValueError):
        protocol.parse_result("no marker here\n")
