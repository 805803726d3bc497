"""The script framing shared by the transport and the lab (ops/protocol.py)."""

from __future__ import annotations

import base64

import pytest

from tealeaf_fleet.lab import consolehost
from tealeaf_fleet.ops import protocol


def test_bootstrap_carries_no_value_and_is_short():
    command, args = protocol.command_line()
    assert command == "powershell.exe"
    assert args[:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    decoded = base64.b64decode(args[3]).decode("utf-16-le")
    assert decoded == protocol.BOOTSTRAP
    # The whole command line stays far below cmd.exe's 8191-character limit.
    assert len(" ".join([command, *args])) < 4096


def test_bootstrap_reads_stdin_through_dollar_input_only():
    """`[Console]::In` is empty where the console host took stdin into `$input` (PowerShell
    2.0, pessimistic reading; 3.0+ whenever the text mentions `$input`)."""
    assert protocol.STDIN_READ in protocol.BOOTSTRAP
    assert "[Console]::In" not in protocol.BOOTSTRAP
    assert protocol.BOOTSTRAP.count("$input") == 1


def test_bootstrap_first_checks_the_language_mode():
    assert protocol.BOOTSTRAP.startswith(protocol.LANGUAGE_CHECK)
    check = protocol.LANGUAGE_CHECK
    assert "$ExecutionContext.SessionState.LanguageMode" in check and "throw" in check
    assert "'FullLanguage'" in check
    refusal = protocol.LANGUAGE_REFUSAL.format(mode="ConstrainedLanguage")
    for forbidden in ("$", "`", '"'):
        assert forbidden not in protocol.LANGUAGE_REFUSAL  # it sits inside "..." unescaped
    assert "allow-list" in refusal and "FullLanguage endpoint" in refusal


def test_language_mode_refusal_is_recognised_even_wrapped():
    text = protocol.LANGUAGE_REFUSAL.format(mode="ConstrainedLanguage")
    wrapped = text[:50] + "\r\n" + text[50:77] + "\n" + text[77:] + "\r\nAt line:1 char:77"
    assert protocol.language_mode_refused(wrapped) == "ConstrainedLanguage"
    assert protocol.language_mode_refused(text.replace("ConstrainedLanguage", "X")) == "X"
    assert protocol.language_mode_refused("file not found: C:\\x") is None


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


def _as_the_bootstrap_reads_it(data: bytes) -> str:
    """`$t` after the bootstrap's STDIN_READ: the console host's lines, joined with LF."""
    return "\n".join(consolehost.input_lines(data))


@pytest.mark.parametrize("op", ["facts", "tlstool", "put_file"])
def test_packaged_scripts_survive_the_console_host_byte_for_byte(op):
    """The lines the console host feeds `$input`, joined with LF, lose the final newline; the
    end line makes the op script arrive exactly as packaged (the lab compares it exactly)."""
    data = protocol.build_stdin(op, {"Password": "p@ss\nword", "Names": ["A", "B"]})
    assert data.endswith(b"\n" + protocol.STDIN_END.encode() + b"\n")
    for text in (_as_the_bootstrap_reads_it(data), data):
        inv = protocol.parse_stdin(text)
        assert inv.script == protocol.script_text(op)
        assert inv.library == protocol.script_text("common")
        assert inv.params == {"Password": "p@ss\nword", "Names": "A\nB"}


@pytest.mark.parametrize("script", ["x", "x\n", "x\n\n\n", "\n\nx\n", "a\n\nb"])
def test_script_ends_survive_the_console_host(script, monkeypatch):
    """Blank lines inside or at the end of a script, and a script with no final newline."""
    texts = {"common": "lib\n", "op": "# tealeaf-fleet-op: op\n" + script}
    monkeypatch.setattr(protocol, "script_text", texts.__getitem__)
    inv = protocol.parse_stdin(_as_the_bootstrap_reads_it(protocol.build_stdin("op", {})))
    assert inv.script == texts["op"] and inv.library == texts["common"]


def test_console_host_lines_follow_readline():
    assert consolehost.input_lines(b"") == []
    assert consolehost.input_lines(b"a\n") == ["a"]
    assert consolehost.input_lines(b"a\r\nb\rc\n\nd") == ["a", "b", "c", "", "d"]
    assert consolehost.input_lines(b"a\n\n") == ["a", ""]


@pytest.mark.parametrize(
    ("ps_version", "text", "fed"),
    [
        ("2.0", "[Console]::In.ReadToEnd()", True),  # 2.0: whatever the command says
        ("5.1", "$x=[Console]::In.ReadToEnd()", False),
        ("5.1", "@($INPUT)", True),
        ("4.0", "${input} | Out-String", True),
        ("5.1", "$inputs = 1", False),
    ],
)
def test_console_host_feeds_dollar_input(ps_version, text, fed):
    assert consolehost.host_reads_stdin(ps_version, text) is fed
    got = consolehost.read(
        consolehost.CONSOLE_IN, ps_version=ps_version, command_text=text, stdin=b"a\nb\n"
    )
    assert got == ([""] if fed else ["a\nb\n"])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello\n",
        b"FLEET1 A:!!!\nlib\n%%FLEET-OP%%\nx\n%%FLEET-END%%\n",
        b"FLEET1 A\nlib\n%%FLEET-OP%%\nx\n%%FLEET-END%%\n",
        b"FLEET1\nno separator here",
        b"FLEET1\nlib\n%%FLEET-OP%%\ncut short before the end line",
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
