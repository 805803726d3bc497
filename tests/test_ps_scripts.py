"""Static checks of the packaged PowerShell: every script parses with tree-sitter-powershell and
uses nothing that Windows PowerShell 2.0 lacks (notes/windows.md), so a 2008 R2 host never meets
a script that only ran on a newer PowerShell. The rule checks are themselves tested with known-bad
snippets: a rule that cannot fail proves nothing.
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


def test_native_helper_catches_an_exe_that_never_started():
    """common.ps1's Invoke-FleetNative: an exe that cannot start (not a valid Win32
    application, access denied) is a statement-terminating error, caught, with exit_code left
    $null rather than the stale or missing $LASTEXITCODE."""
    source = _script_bytes("common").decode("ascii")
    body = source[source.index("function Invoke-FleetNative(") :]
    body = body[: body.index("\n}\n")]
    assert "$exitCode = $null\n    try {" in body
    assert re.search(r"\$exitCode = \$LASTEXITCODE\n    \} catch \{", body)
    assert "exit_code = $exitCode" in body


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
