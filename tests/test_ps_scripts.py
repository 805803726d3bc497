"""Static checks of the packaged PowerShell: every script parses with tree-sitter-powershell and
uses nothing that Windows PowerShell 2.0 lacks (docs/windows.md "What PowerShell 2.0 lacks"),
so a 2008 R2 host never meets a script that only ran on a newer PowerShell. The rule checks are
themselves tested with known-bad snippets: a rule that cannot fail proves nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import pytest
import tree_sitter as ts
import tree_sitter_powershell as tsp

from tealeaf_fleet.ops import protocol

PARSER = ts.Parser(ts.Language(tsp.language()))
SCRIPTS_DIR = resources.files("tealeaf_fleet.ops").joinpath("scripts")
OPS = (
    "facts",
    "file_info",
    "put_file",
    "get_file",
    "tlstool",
    "restart_services",
    "iisreset",
    "reboot",
    "set_registry",
    "data_service_log",
    "check",
    "status_tool",
    "clear_ssl_cache",
    "support_logs",
)

# Cmdlets (and their aliases) that Windows PowerShell 2.0 does not have.
FORBIDDEN_COMMANDS = {
    name.lower()
    for name in (
        "ConvertTo-Json",
        "ConvertFrom-Json",
        "Get-FileHash",
        "Invoke-WebRequest",
        "iwr",
        "Invoke-RestMethod",
        "irm",
        "Import-PfxCertificate",
        "Export-PfxCertificate",
        "Get-CimInstance",
        "gcim",
        "Get-CimClass",
        "Get-CimAssociatedInstance",
        "Invoke-CimMethod",
        "New-CimInstance",
        "Remove-CimInstance",
        "Set-CimInstance",
        "New-CimSession",
        "Get-CimSession",
        "Remove-CimSession",
        "Register-CimIndicationEvent",
        "icim",
        "ncim",
        "rcim",
        "scim",
        "ncms",
        "gcms",
        "rcms",
        "Get-Clipboard",
        "ConvertFrom-String",
        "Unblock-File",
        "Get-FileHash",
        "New-TemporaryFile",
        "Compress-Archive",
        "Expand-Archive",
        "using",
    )
}
GCI_NAMES = {"get-childitem", "gci", "dir", "ls"}
GCI_PS3_SWITCHES = {
    "-file",
    "-directory",
    "-af",
    "-ad",
    "-attributes",
    "-hidden",
    "-system",
    "-readonly",
}
WHERE_NAMES = {"where-object", "where", "?"}
FOREACH_NAMES = {"foreach-object", "foreach", "%"}
PS3_OPERATORS = {"-in", "-notin", "-shl", "-shr"}
PS3_TYPES = {"ordered", "pscustomobject"}
# Members a collection really has; anything else on a list variable is member enumeration.
COLLECTION_MEMBERS = {
    "count",
    "length",
    "add",
    "addrange",
    "remove",
    "removeat",
    "removerange",
    "contains",
    "toarray",
    "indexof",
    "clear",
    "insert",
    "getenumerator",
    "copyto",
    "sort",
    "reverse",
    "item",
    "gettype",
    "tostring",
    "keys",
    "values",
    "containskey",
    "clone",
    "rank",
    "getlength",
    "getvalue",
    "setvalue",
    "getupperbound",
    "getlowerbound",
    "isfixedsize",
    "syncroot",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    line: int
    text: str


def _walk(node: ts.Node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _text(node: ts.Node) -> str:
    return node.text.decode("utf-8", "replace")


def _array_variables(root: ts.Node) -> set[str]:
    """Variables assigned a list somewhere: `@(...)`, `,x`, `New-Object ...ArrayList`, or a
    `.ToArray()` / `Split-FleetList` result. Syntax cannot type every variable; these can be."""
    names: set[str] = set()
    for node in _walk(root):
        if node.type != "assignment_expression" or node.child_count < 3:
            continue
        target, value = node.children[0], node.children[-1]
        if not _text(target).startswith("$"):
            continue
        rhs = _text(value).strip()
        if (
            rhs.startswith("@(")
            or rhs.startswith(",")
            or "ArrayList" in rhs
            or rhs.endswith(".ToArray()")
            or rhs.startswith("Split-FleetList")
        ):
            names.add(_text(target).strip().lower())
    return names


def _typed_params(scope: ts.Node) -> set[str]:
    """Lower-cased names of the type-constrained parameters `scope` (the script or one
    function) declares."""
    names: set[str] = set()
    for decl in scope.children:
        if decl.type not in ("param_block", "function_parameter_declaration"):
            continue
        for param in _walk(decl):
            if param.type == "script_parameter" and any(
                t.type == "type_literal" for t in _walk(param)
            ):
                names.update(_text(v).lower() for v in param.children if v.type == "variable")
    return names


def _own_nodes(scope: ts.Node):
    """The nodes of `scope` outside its nested functions (which have scopes of their own)."""
    for child in scope.children:
        if child.type != "function_statement":
            yield child
            yield from _own_nodes(child)


def _typed_param_assignments(root: ts.Node) -> list[ts.Node]:
    """Assignments to a typed parameter in its own scope. Variable names ignore case and the
    parameter's type sticks to the variable: `$names = Split-FleetList $Names` under
    `param([string]$Names)` joins the list back into one string."""
    found = []
    for scope in [root] + [n for n in _walk(root) if n.type == "function_statement"]:
        typed = _typed_params(scope)
        for node in _own_nodes(scope):
            if node.type == "assignment_expression":
                target = node.children[0]
            elif node.type == "foreach_statement":
                target = next((c for c in node.children if c.type == "variable"), None)
            else:
                continue
            if target is not None and _text(target).strip().lower() in typed:
                found.append(node)
    return found


def lint(source: bytes) -> list[Violation]:
    """Every PowerShell-2.0 violation in `source` (one script's bytes)."""
    found: list[Violation] = []

    def flag(rule: str, node: ts.Node) -> None:
        found.append(Violation(rule, node.start_point[0] + 1, _text(node)[:60]))

    if any(byte > 0x7F for byte in source):
        line = source[: next(i for i, b in enumerate(source) if b > 0x7F)].count(b"\n") + 1
        found.append(Violation("non-ascii", line, ""))
    root = PARSER.parse(source).root_node
    arrays = _array_variables(root)
    for node in _typed_param_assignments(root):
        flag("typed-param-assigned", node)
    for node in _walk(root):
        kind = node.type
        if kind == "ERROR" or node.is_missing:
            text = _text(node)
            if "??" in text:
                flag("null-coalescing", node)
            elif "?." in text or (
                text.strip() == "?"
                and node.next_sibling is not None
                and node.next_sibling.type == "."
            ):
                flag("null-conditional", node)
            elif "?" in text:
                flag("ternary", node)
            else:
                flag("parse-error", node)
        elif kind == "command":
            name_node = node.child_by_field_name("command_name") or node.children[0]
            name = _text(name_node).lower()
            if name in FORBIDDEN_COMMANDS:
                flag(f"command:{name}", node)
            elements = [c for c in node.children if c.type == "command_elements"]
            args = (
                [c for c in elements[0].children if c.type != "command_argument_sep"]
                if elements
                else []
            )
            if name in GCI_NAMES and any(
                a.type == "command_parameter" and _text(a).lower().rstrip(":") in GCI_PS3_SWITCHES
                for a in args
            ):
                flag("gci-file-directory", node)
            short_form = args and not _text(args[0]).startswith("{")
            if name in WHERE_NAMES | FOREACH_NAMES and short_form:
                flag("simplified-syntax", node)
        elif kind == "comparison_operator" and _text(node).lower() in PS3_OPERATORS:
            flag(f"operator:{_text(node).lower()}", node)
        elif kind == "type_literal":
            spec = _text(node).strip("[]").strip().lower()
            if spec in PS3_TYPES:
                flag(f"type:{spec}", node)
        elif kind == "variable" and _text(node).lower() in ("$psitem", "${psitem}"):
            flag("psitem", node)
        elif kind in ("class_statement", "enum_statement"):
            flag(kind.replace("_statement", ""), node)
        elif kind == "pipeline_chain_tail":
            flag("pipeline-chain", node)
        elif kind in ("invokation_expression", "member_access"):
            member = node.child_by_field_name("member_name")
            members = [c for c in node.children if c.type == "member_name"]
            member = member or (members[0] if members else None)
            if member is None:
                continue
            mname = _text(member).lower()
            static = node.children[0].type == "type_literal"
            if kind == "invokation_expression" and mname == "new" and static:
                flag("static-new", node)
            target = node.children[0]
            if (
                target.type == "variable"
                and _text(target).lower() in arrays
                and mname not in COLLECTION_MEMBERS
            ):
                flag("member-enumeration", node)
    return found


def _script_bytes(name: str) -> bytes:
    return SCRIPTS_DIR.joinpath(f"{name}.ps1").read_bytes()


ALL_SCRIPTS = ("common",) + OPS


def test_every_op_is_packaged():
    present = {p.name[:-4] for p in SCRIPTS_DIR.iterdir() if p.name.endswith(".ps1")}
    assert present == set(ALL_SCRIPTS)


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_script_parses_and_is_powershell_2(name):
    source = _script_bytes(name)
    assert not PARSER.parse(source).root_node.has_error
    assert lint(source) == []


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_script_is_ascii_with_lf(name):
    source = _script_bytes(name)
    source.decode("ascii")
    assert b"\r" not in source


@pytest.mark.parametrize("name", OPS)
def test_op_header_and_string_params(name):
    source = _script_bytes(name).decode("ascii")
    first, _, _ = source.partition("\n")
    assert first == f"{protocol.OP_HEADER}{name}"
    root = PARSER.parse(source.encode()).root_node
    blocks = [n for n in _walk(root) if n.type == "param_block"]
    assert len(blocks) == 1, "exactly one param() block"
    params = [n for n in _walk(blocks[0]) if n.type == "script_parameter"]
    for param in params:
        types = [_text(t) for t in _walk(param) if t.type == "type_literal"]
        assert types == ["[string]"], f"{name}: {_text(param)} must be typed [string]"


def test_common_uses_the_protocol_marker():
    assert f"'{protocol.RESULT_MARKER}'" in _script_bytes("common").decode("ascii")


def test_bootstrap_parses_and_is_powershell_2():
    source = protocol.BOOTSTRAP.encode("ascii")
    assert not PARSER.parse(source).root_node.has_error
    assert lint(source) == []


def test_bootstrap_reads_stdin_only_through_dollar_input():
    """PowerShell 2.0's console host may take redirected stdin into `$input` whatever the
    command says, leaving `[Console]::In` empty: `$input` is the one channel that works on
    every version (3.0+ feed it because the text mentions it)."""
    root = PARSER.parse(protocol.BOOTSTRAP.encode("ascii")).root_node
    types = {_text(n).strip("[]").lower() for n in _walk(root) if n.type == "type_literal"}
    assert "console" not in types and "system.console" not in types
    variables = [_text(n).lower() for n in _walk(root) if n.type == "variable"]
    assert variables.count("$input") == 1


# Nodes Constrained Language Mode may refuse (about_Language_Modes: method calls and type
# literals outside the core types, and commands it may not load); property reads, strings and
# `throw` are allowed.
CLM_RISKY = {"invokation_expression", "type_literal", "command", "cast_expression"}


def test_bootstrap_first_statement_stops_outside_full_language():
    """Under AppLocker/WDAC the rest of the bootstrap fails on `[ScriptBlock]::Create` with a
    confusing error; its first statement names the mode first, with CLM-safe syntax only."""
    statements = PARSER.parse(protocol.BOOTSTRAP.encode("ascii")).root_node.children[0]
    first = statements.children[0]
    assert first.type == "if_statement"
    condition = _text(first.children[2])
    assert "$ExecutionContext.SessionState.LanguageMode" in condition
    assert "-ne 'FullLanguage'" in condition
    body = [n for n in _walk(first) if n.type == "statement_block"][0]
    assert [n.type for n in body.children[1].children] == ["flow_control_statement"]
    assert _text(body.children[1].children[0]).startswith("throw ")
    assert not {n.type for n in _walk(first)} & CLM_RISKY
    # the rule can fail: the second statement onwards uses what CLM refuses
    assert {n.type for n in _walk(statements)} & CLM_RISKY


BAD_SNIPPETS = [
    ("$j = $x | ConvertTo-Json", "command:convertto-json"),
    ("$o = ConvertFrom-Json $t", "command:convertfrom-json"),
    ("$h = Get-FileHash -Path $p", "command:get-filehash"),
    ("$s = Get-CimInstance Win32_Service", "command:get-ciminstance"),
    ("$s = gcim Win32_Service", "command:gcim"),
    ("Invoke-WebRequest http://x", "command:invoke-webrequest"),
    ("Invoke-RestMethod http://x", "command:invoke-restmethod"),
    ("Import-PfxCertificate -FilePath a.pfx", "command:import-pfxcertificate"),
    ("$h = [ordered]@{a = 1}", "type:ordered"),
    ("$o = [PSCustomObject]@{a = 1}", "type:pscustomobject"),
    ("if ($a -in $b) { 1 }", "operator:-in"),
    ("if ($a -notin $b) { 1 }", "operator:-notin"),
    ("$x = 1 -shl 2", "operator:-shl"),
    ("$x = 8 -shr 1", "operator:-shr"),
    ("Get-ChildItem $d -File", "gci-file-directory"),
    ("gci -Directory", "gci-file-directory"),
    ("$x | ForEach-Object { $PSItem.Name }", "psitem"),
    ("Get-Service | Where-Object Status -eq 'Running'", "simplified-syntax"),
    ("Get-Service | ? Status -eq 'Running'", "simplified-syntax"),
    ("Get-Service | ForEach-Object Name", "simplified-syntax"),
    ("$list = @(Get-Service)\n$names = $list.Name", "member-enumeration"),
    ("$x = $c?.d", "null-conditional"),
    ("$x = $a ?? $b", "null-coalescing"),
    ("$x = $a ? 1 : 2", "ternary"),
    ("class Foo { [int]$x }", "class"),
    ("enum Color { Red }", "enum"),
    ("using namespace System.IO", "command:using"),
    ("$sb = [Text.StringBuilder]::new()", "static-new"),
    ("a && b", "pipeline-chain"),
    ("Write-Output 'caf\u00e9'", "non-ascii"),
    ("if ($x { 1 }", "parse-error"),
    ("param([string]$Names)\n$names = Split-FleetList $Names", "typed-param-assigned"),
    ("function F([int]$Code) {\n    foreach ($code in 1, 2) { $code }\n}", "typed-param-assigned"),
]


@pytest.mark.parametrize(("snippet", "rule"), BAD_SNIPPETS)
def test_rules_catch_known_bad_snippets(snippet, rule):
    rules = {v.rule for v in lint(snippet.encode("utf-8"))}
    assert rule in rules, f"{rule} not caught in {snippet!r}: {rules}"


GOOD_SNIPPETS = [
    "$x | Where-Object { $_.Status -eq 'Running' }",
    "Get-ChildItem -LiteralPath $d -Filter '*.log'",
    "$list = @(Get-Service)\n$n = $list.Count",
    "$s = Get-WmiObject Win32_Service",
    "$sha = [Security.Cryptography.SHA256]::Create()",
    "$a = New-Object System.Collections.ArrayList\n[void]$a.Add(1)\n$b = $a.ToArray()",
    "function F([int]$Code) { $Code }\nfunction G([string]$Text) { $code = [int]$Text[0] }",
]


@pytest.mark.parametrize("snippet", GOOD_SNIPPETS)
def test_rules_accept_powershell_2_idioms(snippet):
    assert lint(snippet.encode("ascii")) == []


def test_parameters_are_never_pasted_into_script_text():
    """Values travel base64 on stdin: the script text is the packaged file, byte for byte."""
    evil = 'D:\\Tea\'leaf $(calc) `n; "x" \u00e9'
    stdin = protocol.build_stdin("facts", {"InstallDir": evil, "Since": ""}).decode("ascii")
    assert evil not in stdin
    assert re.search(r"^FLEET1 InstallDir:[A-Za-z0-9+/=]+ Since: *$", stdin.split("\n")[0])
    parsed = protocol.parse_stdin(stdin.encode("ascii"))
    assert parsed.params["InstallDir"] == evil
    assert parsed.script == protocol.script_text("facts")


def test_json_string_fast_path_admits_only_what_needs_no_escape():
    """ConvertTo-FleetJsonString skips its per-character loop for text matching one regex;
    anything JSON must escape, or that is not ASCII, has to miss it. -cmatch and \\z are
    .NET's: Python's default matching is case-sensitive too, and \\Z is its \\z."""
    source = _script_bytes("common").decode("ascii")
    match = re.search(
        r"if \(\$Text -cmatch '([^']+)'\) \{ return '\"' \+ \$Text \+ '\"' \}", source
    )
    assert match, "the fast path must use -cmatch (case-insensitive ranges admit U+212A)"
    assert match.group(1).endswith("\\z"), "$ would also match before a final newline"
    fast = re.compile(match.group(1)[:-2] + "\\Z")
    assert fast.match("QUJD+/09azAZ" * 100) and fast.match("") and fast.match("C:/x y_z~!#")
    for needs_escape in ('a"b', "a\\b", "a\n", "a\rb", "a\tb", "\x7f", "\u212a", "caf\u00e9"):
        assert not fast.match(needs_escape), repr(needs_escape)


NATIVE_CALL = re.compile(r"^\s*\$\w+ = (& \$exe\b|Invoke-FleetNative )", re.M)


NATIVE_OPS = [name for name in OPS if NATIVE_CALL.search(_script_bytes(name).decode("ascii"))]


def test_the_native_command_ops_are_found():
    # Guards the parametrization below against matching nothing.
    assert {"tlstool", "iisreset", "reboot"} <= set(NATIVE_OPS)


def _function(name: str, script: str = "common") -> ts.Node:
    """The function_statement `name` of a packaged script."""
    root = PARSER.parse(_script_bytes(script)).root_node
    for node in _walk(root):
        if node.type == "function_statement":
            names = [c for c in node.children if c.type == "function_name"]
            if names and _text(names[0]).lower() == name.lower():
                return node
    raise AssertionError(f"{script}.ps1 has no function {name}")


def _commands(node: ts.Node) -> list[tuple[str, list[str]]]:
    """Every command in `node`: (name, [argument texts])."""
    found = []
    for cmd in _walk(node):
        if cmd.type != "command":
            continue
        name = _text(cmd.child_by_field_name("command_name") or cmd.children[0])
        elements = [c for c in cmd.children if c.type == "command_elements"]
        args = [_text(a) for e in elements for a in e.children if a.type != "command_argument_sep"]
        found.append((name, args))
    return found


def _members(node: ts.Node) -> set[str]:
    """Lower-cased names of the members `node` reads, sets or calls."""
    return {_text(n).lower() for n in _walk(node) if n.type == "member_name"}


def _assignments(node: ts.Node) -> dict[str, str]:
    """`$x.Prop = value` and `$x = value` in `node`: target text -> value text."""
    return {
        _text(n.children[0]).strip(): _text(n.children[-1]).strip()
        for n in _walk(node)
        if n.type == "assignment_expression"
    }


def test_native_helper_reports_an_exe_that_never_started():
    """Invoke-FleetNative: an exe that cannot start (missing, not a valid Win32 application,
    access denied) throws from Process.Start; that is caught and answered with exit_code
    $null (never a stale $LASTEXITCODE), which every caller must refuse."""
    fn = _function("Invoke-FleetNative")
    tries = [n for n in _walk(fn) if n.type == "try_statement"]
    assert len(tries) == 1
    body, catch = tries[0].children[1], tries[0].children[2]
    assert [name for name, _ in _commands(body)] == ["Start-FleetNative"]
    returns = [n for n in _walk(catch) if n.type == "flow_control_statement"]
    assert len(returns) == 1 and _text(returns[0]).startswith("return @{")
    assert re.search(r"\bexit_code = \$null\b", _text(returns[0]))
    assert "$LASTEXITCODE" not in _text(fn) and "& $Exe" not in _text(fn)


def test_native_helper_runs_a_process_with_stdin_closed():
    """Process.Start without the shell, in the given folder, every stream redirected, stdin
    closed at once: a tool that asks something reads end-of-file instead of waiting on a
    console (the exe inherits PowerShell's stdin otherwise)."""
    fn = _function("Start-FleetNative")
    set_ = _assignments(fn)
    assert set_["$info.UseShellExecute"] == "$false"
    assert set_["$info.WorkingDirectory"] == "$WorkingDirectory"
    for stream in ("Input", "Output", "Error"):
        assert set_[f"$info.RedirectStandard{stream}"] == "$true"
    text = _text(fn)
    assert text.index("$process.Start()") < text.index("$process.StandardInput.Close()")
    assert "ConvertTo-FleetArgument $item" in text


def test_native_helper_reads_both_pipes_without_event_handlers():
    """stdout and stderr are read together (one read to its end first deadlocks on a tool
    that fills the other pipe), with BeginRead and no callback, polled: script-block event
    handlers and Process's own async readers need a runspace on the raising thread."""
    common = _script_bytes("common").decode("ascii")
    for forbidden in ("Register-ObjectEvent", "add_OutputDataReceived", "BeginOutputReadLine"):
        assert forbidden not in common
    fn = _function("Read-FleetNative")
    assert {"beginread", "endread", "iscompleted", "waitforexit"} <= _members(fn)
    assert "ReadToEnd" not in _text(fn)
    assert re.search(r"\.BeginRead\([^)]*, \$null, \$null\)", _text(fn))
    assert "@($Process.StandardOutput, $Process.StandardError)" in _text(fn)
    assert "CurrentEncoding.GetString" in _text(fn)  # the process's stream encoding


def test_native_timeout_kills_the_tree_and_names_the_exe_and_limit():
    tree = _function("Stop-FleetNativeTree")
    text = _text(tree)
    assert "'taskkill.exe'" in text and "@('/PID', [string]$Process.Id, '/T', '/F')" in text
    assert text.index("taskkill.exe") < text.index("$Process.Kill()")  # Kill() is the fallback
    fn = _function("Invoke-FleetNative")
    calls = [name for name, _ in _commands(fn)]
    assert calls.index("Stop-FleetNativeTree") < calls.index("Stop-FleetOp")
    stop = next(args for name, args in _commands(fn) if name == "Stop-FleetOp")
    assert "$name did not finish within $TimeoutS s" in " ".join(stop)
    assert "[IO.Path]::GetFileName($Exe)" in _text(fn)


class _StringBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def call(self, member: str, args: list) -> object:
        if member == "append":
            self.parts.append(args[0] * (args[1] if len(args) > 1 else 1))
            return self
        if member == "tostring":
            return "".join(self.parts)
        raise NotImplementedError(member)


class _Return(Exception):
    def __init__(self, value: object) -> None:
        self.value = value


class _Continue(Exception):
    pass


class _MiniPowerShell:
    """Runs one PowerShell function of the packaged text on a string, for the constructs
    ConvertTo-FleetArgument uses (and fails loudly on any other): so the test exercises the
    function's own text, not a Python copy. Semantics as PowerShell's: -eq on text and chars
    ignores case, -match/-notmatch is a case-insensitive .NET regex, [char]N is a character."""

    def __init__(self, fn: ts.Node) -> None:
        self.fn = fn
        self.vars: dict[str, object] = {}

    def call(self, value: str) -> object:
        params = [n for n in _walk(self.fn) if n.type == "script_parameter"]
        self.vars = {_text(params[0].children[-1]).lower(): value}
        body = next(c for c in self.fn.children if c.type == "script_block")
        try:
            self.block(body)
        except _Return as done:
            return done.value
        raise AssertionError("the function did not return")

    def block(self, node: ts.Node) -> None:
        for child in node.children:
            if child.type in ("script_block_body", "statement_list", "statement_block"):
                self.block(child)
            elif child.type in ("{", "}"):
                continue
            else:
                self.statement(child)

    def statement(self, node: ts.Node) -> None:
        kind = node.type
        if kind == "if_statement":
            self.if_(node)
        elif kind == "foreach_statement":
            var = next(c for c in node.children if c.type == "variable")
            items = self.expr(next(c for c in node.children if c.type == "pipeline"))
            for item in items:  # type: ignore[attr-defined]
                self.vars[_text(var).lower()] = item
                try:
                    self.block(next(c for c in node.children if c.type == "statement_block"))
                except _Continue:
                    continue
        elif kind == "flow_control_statement":
            word = node.children[0].type
            if word == "continue":
                raise _Continue()
            if word == "return":
                raise _Return(self.expr(node.children[1]))
            raise NotImplementedError(word)
        elif kind == "pipeline":
            self.expr(node)
        else:
            raise NotImplementedError(kind)

    def if_(self, node: ts.Node) -> None:
        clauses = [(node.children[2], node.children[4])]
        for child in node.children[5:]:
            for clause in _walk(child):
                if clause.type == "elseif_clause":
                    clauses.append((clause.children[2], clause.children[4]))
                elif clause.type == "else_clause":
                    clauses.append((None, clause.children[1]))
        for cond, block in clauses:
            if cond is None or self.expr(cond):
                self.block(block)
                return

    def expr(self, node: ts.Node) -> object:
        kids = [c for c in node.children if c.type not in ("command_argument_sep",)]
        kind = node.type
        if kind == "assignment_expression":
            name = _text(node.children[0]).strip().lower()
            self.vars[name] = self.expr(node.children[2])
            return None
        if kind == "command":
            name = _text(node.children[0])
            args = [_text(a) for e in kids[1:] for a in e.children if a.type == "generic_token"]
            if name == "New-Object" and args == ["System.Text.StringBuilder"]:
                return _StringBuilder()
            raise NotImplementedError(_text(node))
        if kind == "variable":
            return self.vars[_text(node).lower()]
        if kind == "integer_literal":
            return int(_text(node))
        if kind == "string_literal" and _text(node).startswith("'"):
            return _text(node)[1:-1].replace("''", "'")
        if kind == "parenthesized_expression":
            return self.expr(node.children[1])
        if kind == "post_increment_expression":
            name = _text(node.children[0]).lower()
            self.vars[name] = int(self.vars[name]) + 1  # type: ignore[call-overload]
            return None
        if kind == "cast_expression":
            target = _text(node.children[0]).lower()
            value = self.expr(node.children[1])
            if target == "[char]":
                return chr(value)  # type: ignore[arg-type]
            if target == "[void]":
                return None
            raise NotImplementedError(target)
        if kind == "member_access":
            value = self.expr(node.children[0])
            member = _text(node.children[2]).lower()
            if member == "length" and isinstance(value, str):
                return len(value)
            raise NotImplementedError(member)
        if kind == "invokation_expression":
            target = self.expr(node.children[0])
            member = _text(node.children[2]).lower()
            args = [
                self.expr(a) for a in _walk(node.children[3]) if a.type == "argument_expression"
            ]
            if isinstance(target, _StringBuilder):
                return target.call(member, args)
            if member == "tochararray" and isinstance(target, str):
                return list(target)
            raise NotImplementedError(member)
        if (
            kind
            in (
                "comparison_expression",
                "logical_expression",
                "additive_expression",
                "multiplicative_expression",
                "additive_argument_expression",
                "multiplicative_argument_expression",
            )
            and len(kids) == 3
        ):
            return self.binary(kids[0], _text(kids[1]).lower(), kids[2])
        if len(kids) == 1:
            return self.expr(kids[0])
        raise NotImplementedError(f"{kind}: {_text(node)}")

    def binary(self, left_node: ts.Node, op: str, right_node: ts.Node) -> object:
        left = self.expr(left_node)
        if op == "-and":
            return bool(left) and bool(self.expr(right_node))
        right = self.expr(right_node)
        if op == "-eq":
            return str(left).casefold() == str(right).casefold()
        if op == "-gt":
            return left > right  # type: ignore[operator]
        if op in ("-match", "-notmatch"):
            found = re.search(str(right), str(left), re.IGNORECASE) is not None
            return found if op == "-match" else not found
        if op == "+":
            return left + right  # type: ignore[operator]
        if op == "*":
            return left * right  # type: ignore[operator]
        raise NotImplementedError(op)


# Microsoft's examples ("Parsing C command-line arguments") and the awkward cases: empty,
# spaces and parentheses (install folders), backslashes before an embedded quote and at the end.
ARGUMENTS = [
    "",
    "abc",
    "a b",
    "C:\\Program Files (x86)\\IBM\\Tealeaf\\Tools",
    "C:\\Program Files (x86)\\",
    "a\\\\b",
    'a"b',
    'a\\"b',
    'a\\\\"b c',
    "tab\there",
    "\\\\server\\share\\",
    "P'w$(calc)`;{}[]#~@",
    "trailing\\",
    '"',
    "\\",
    "p:4:1",
]


@pytest.mark.parametrize("value", ARGUMENTS)
def test_argument_quoting_of_the_packaged_function_round_trips(value):
    """ConvertTo-FleetArgument's own text, run on each value, writes an argument that the C
    runtime's rules (lab.native.parse_command_line, checked against Microsoft's table in
    test_windows_command_line_parser_follows_microsoft) read back unchanged, also between
    other arguments; the lab's op models use the same writer."""
    from tealeaf_fleet.lab import models
    from tealeaf_fleet.lab.native import parse_command_line

    run = _MiniPowerShell(_function("ConvertTo-FleetArgument"))
    written = run.call(value)
    assert parse_command_line(f"x {written} y") == ["x", value, "y"]
    assert written == models._argument(value)
    if value and not re.search(r'[ \t"]', value):
        assert written == value  # quoted only when needed, as TLSTool's arguments usually are


def test_argument_quoting_matches_the_documented_escapes():
    run = _MiniPowerShell(_function("ConvertTo-FleetArgument"))
    assert run.call("") == '""'
    assert run.call('a"b') == '"a\\"b"'
    assert run.call('a\\"b') == '"a\\\\\\"b"'  # 2n+1 backslashes before an embedded quote
    assert run.call("a b\\") == '"a b\\\\"'  # 2n before the closing quote
    assert run.call("a\\b c") == '"a\\b c"'  # a backslash elsewhere stays single


def test_windows_command_line_parser_follows_microsoft():
    """The lab's reading of a command line against the table in "Parsing C command-line
    arguments" (learn.microsoft.com/en-us/cpp/c-language/parsing-c-command-line-arguments)."""
    from tealeaf_fleet.lab.native import parse_command_line

    assert parse_command_line('"abc" d e') == ["abc", "d", "e"]
    assert parse_command_line('a\\\\b d"e f"g h') == ["a\\\\b", "de fg", "h"]
    assert parse_command_line('a\\\\\\"b c d') == ['a\\"b', "c", "d"]
    assert parse_command_line('a\\\\\\\\"b c" d e') == ["a\\\\b c", "d", "e"]
    assert parse_command_line('a"b"" c d') == ['ab" c d']
    assert parse_command_line("  ") == []


@pytest.mark.parametrize("name", NATIVE_OPS)
def test_native_command_that_never_started_is_a_failure(name):
    """A native command that cannot start (not a valid Win32 application, access denied) is a
    statement-terminating error: with $ErrorActionPreference 'Continue' the script goes on,
    $LASTEXITCODE stays $null and [int]$null is 0, so the op would report success. Every op
    that runs one must refuse a $null exit code."""
    source = _script_bytes(name).decode("ascii")
    code = r"\$(exitCode|run\.exit_code)"
    assert re.search(rf"if \(\(?\$null -eq {code}\)?[^\n]*Stop-FleetOp", source) or re.search(
        rf"if \({code} -ne 0\) \{{ Stop-FleetOp", source
    ), f"{name}: a $null exit code is not refused"


# Commands that read a registry value's data; the names-only helpers are not among them.
_VALUE_READERS = re.compile(
    r"(Get-FleetRegistryValue|Get-FleetRegistryNumber|Get-ItemProperty|\.GetValue\()[^\n]*",
    re.IGNORECASE,
)


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_no_script_reads_a_value_under_the_tealeaf_security_key(name):
    """`TeaLeaf Technology\\security` holds TLSCertPassword: scripts learn that it exists from
    the key's value names and never read it (it must not reach a result, a log or a ticket)."""
    source = _script_bytes(name).decode("ascii")
    for match in _VALUE_READERS.finditer(source):
        assert "security" not in match.group(0).lower(), f"{name}: {match.group(0)}"


def test_the_known_bad_security_read_is_caught():
    bad = "$p = Get-FleetRegistryValue ($tealeafKey + '\\security') 'TLSCertPassword'"
    assert _VALUE_READERS.search(bad) and "security" in _VALUE_READERS.search(bad).group(0)


def test_the_kill_budget_is_the_one_the_controller_keeps():
    """The controller leaves KILL_BUDGET_S between a native tool's deadline and the op's, so
    the script's waits while killing a hung tool must fit in it."""
    from tealeaf_fleet.ops import services

    text = _script_bytes("common").decode("ascii")
    assert f"$FleetKillBudgetS = {int(services.KILL_BUDGET_S)}" in text
    waits = re.search(r"function Stop-FleetNativeTree.*?\n}\n", text, re.S).group(0)
    taskkill = int(re.search(r"AddSeconds\((\d+)\)", waits).group(1))
    exit_ms = int(re.search(r"WaitForExit\((\d+)\)", waits).group(1))
    assert taskkill + exit_ms / 1000 <= services.KILL_BUDGET_S
    for timeout in (30, 120, 300):
        left = timeout - services.native_deadline_s(timeout)
        assert left >= services.KILL_BUDGET_S + services.MIN_MARGIN_S


@pytest.mark.parametrize("name", ["bootstrap", *ALL_SCRIPTS])
def test_string_searches_are_ordinal(name):
    """String.IndexOf/LastIndexOf/StartsWith/EndsWith(string) compare by the current culture,
    which ignores some characters and differs between hosts; the scripts search for markers
    byte for byte, so every such call with a string argument names a StringComparison."""
    text = protocol.BOOTSTRAP if name == "bootstrap" else _script_bytes(name).decode("ascii")
    calls = re.findall(r"\.(?:Last)?IndexOf\(([^)]*)\)|\.(?:Starts|Ends)With\(([^)]*)\)", text)
    for args in (a or b for a, b in calls):
        if args.startswith("[char]"):
            continue  # a char search is ordinal
        assert "StringComparison" in args, f"{name}: ({args})"
