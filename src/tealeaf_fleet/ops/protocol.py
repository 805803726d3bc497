"""How a packaged script reaches `powershell.exe` and how its answer comes back.

Both the transport (which sends) and the lab (which receives and emulates) use this module, so
the framing is defined once.

Command line: `powershell.exe -NoProfile -NonInteractive -EncodedCommand <BOOTSTRAP>`. The
bootstrap is fixed text with no values in it. Its first statement stops the op when PowerShell
runs in any language mode but FullLanguage (ConstrainedLanguage under an AppLocker or WDAC
policy), with LANGUAGE_REFUSAL as the error. It then reads stdin, which is:

    FLEET1 Name:<base64 utf-8> Name2:<base64 utf-8> ...\n
    <scripts/common.ps1>\n
    %%FLEET-OP%%\n
    <scripts/<op>.ps1>\n
    %%FLEET-END%%\n

It reads stdin through `$input`, the lines the console host reads from redirected stdin, joined
with LF (STDIN_READ), as Ansible's bootstrap does (`$input | Out-String` in
lib/ansible/executor/powershell/bootstrap_wrapper.ps1), not through `[Console]::In`: PowerShell
3.0+ reads stdin into `$input` itself when the command text mentions `$input` (PowerShell's
ConsoleHost.cs, `AstSearcher.IsUsingDollarInput`), and 2.0 may do so whatever the command says,
leaving `[Console]::In` empty. The join rebuilds the text exactly, except the final newline it
drops, so the op script ends where the last line `%%FLEET-END%%` begins: the script arrives
byte for byte, whether it ends with a newline or not.

It decodes each parameter to a string (data, never code), dot-sources common.ps1 (the JSON
writer and helpers shared by every op), then runs the op script as one script block with the
parameters splatted onto its `param()` block. A list parameter travels as its items joined with
"\n". Everything on stdin is ASCII (so the shell's code page cannot mangle it) with LF line
ends (scripts are LF-only; the console host would split a lone CR too).

The op writes RESULT_MARKER on a line of its own and then exactly one JSON document (non-ASCII
escaped as \\uXXXX). Failure: a message on stderr and a non-zero exit code, through
common.ps1's helper (`[Environment]::Exit`), since a native command's $LASTEXITCODE must not leak
into the op's own exit code: the bootstrap ends with `exit 0`.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

STDIN_MAGIC = "FLEET1"
OP_SEPARATOR = "%%FLEET-OP%%"
STDIN_END = "%%FLEET-END%%"  # the last line on stdin: the op script ends right before it
RESULT_MARKER = "<<<TEALEAF-FLEET-RESULT>>>"
OP_HEADER = "# tealeaf-fleet-op: "  # first line of every op script: `# tealeaf-fleet-op: NAME`

POWERSHELL = "powershell.exe"

# What the bootstrap throws when PowerShell is not in FullLanguage mode; {mode} is the mode's
# name. No `$`, backtick or double quote: it sits inside a PowerShell "..." string.
LANGUAGE_REFUSAL = (
    "tealeaf-fleet needs PowerShell FullLanguage mode but this host runs it in {mode} mode "
    "(AppLocker/WDAC policy): allow-list powershell.exe for this account or use a FullLanguage "
    "endpoint"
)
_MODE = "$($ExecutionContext.SessionState.LanguageMode)"
# First statement. Only what ConstrainedLanguage allows (a property read, a string, `throw`),
# so it runs and explains itself where the rest would fail on `[ScriptBlock]::Create`. The
# property exists on 2.0 too; Ansible's bootstrap_wrapper.ps1 makes the same test.
LANGUAGE_CHECK = (
    f'if("{_MODE}" -ne \'FullLanguage\'){{throw "{LANGUAGE_REFUSAL.format(mode=_MODE)}"}};'
)
# The one statement that reads stdin: the console host's lines, joined with LF.
STDIN_READ = "$t=[string]::Join([string][char]10,[string[]]@($input));"

# Kept short (it travels on the command line) and free of any value. PowerShell 2.0 compatible.
BOOTSTRAP = (
    LANGUAGE_CHECK + "$ErrorActionPreference='Stop';" + STDIN_READ + "$n=$t.IndexOf([char]10);"
    "$h=@{};"
    "foreach($kv in ($t.Substring(0,$n).Trim() -split ' ')){"
    "if($kv -match '^(\\w+):([A-Za-z0-9+/=]*)$'){"
    "$h[$matches[1]]=[Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($matches[2]))}};"
    "$b=$t.Substring($n+1);"
    '$m=$b.IndexOf("`n' + OP_SEPARATOR + '`n",[StringComparison]::Ordinal);'
    "$t=$b.Substring($m+" + str(len(OP_SEPARATOR) + 2) + ");"
    '$t=$t.Substring(0,$t.LastIndexOf("`n' + STDIN_END + '",[StringComparison]::Ordinal));'
    ". ([ScriptBlock]::Create($b.Substring(0,$m)));"
    "& ([ScriptBlock]::Create($t)) @h;"
    "exit 0"
)


def language_mode_refused(text: str) -> str | None:
    """The language mode named in the bootstrap's LANGUAGE_REFUSAL within `text` (an op's
    decoded stderr), or None when `text` is not that refusal."""
    # Whitespace is ignored: the console host may wrap a long error line anywhere.
    before, _, after = (re.sub(r"\s+", "", part) for part in LANGUAGE_REFUSAL.partition("{mode}"))
    squashed = re.sub(r"\s+", "", text)
    match = re.search(re.escape(before) + r"(\w+?)" + re.escape(after), squashed)
    return match.group(1) if match else None


def encoded_bootstrap() -> str:
    """The bootstrap as PowerShell's -EncodedCommand wants it: base64 of UTF-16LE."""
    return base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode("ascii")


def command_line() -> tuple[str, list[str]]:
    """(command, arguments) for WinRM's Command operation. No `-ExecutionPolicy`: the policy
    does not apply to -EncodedCommand (about_PowerShell_exe). No `-InputFormat None`: it would
    stop the console host feeding stdin to `$input`, the bootstrap's only way in."""
    return POWERSHELL, ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded_bootstrap()]


@functools.cache
def script_text(name: str) -> str:
    """The packaged text of `scripts/<name>.ps1` (ASCII, LF line ends); read once per process,
    not on every op (build_stdin, the transport's parameter check and the lab's runner)."""
    return (
        resources.files("tealeaf_fleet.ops")
        .joinpath("scripts", f"{name}.ps1")
        .read_text(encoding="ascii")
        .replace("\r\n", "\n")
    )


ParamValue = str | int | bool | Sequence[str]


def _param_to_text(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return "\n".join(value)


def build_stdin(op: str, params: Mapping[str, ParamValue]) -> bytes:
    """The bytes to write to the bootstrap's stdin for op `op` with `params` (name -> value).

    Values are converted to text (bool -> "1"/"0", list -> lines) and base64-encoded, so any
    character arrives as itself. Callers pass `Secret.reveal()` here and nowhere else.
    """
    fields = [STDIN_MAGIC]
    for name, value in params.items():
        if not name.isidentifier():
            raise ValueError(f"bad parameter name {name!r}")
        encoded = base64.b64encode(_param_to_text(value).encode("utf-8")).decode("ascii")
        fields.append(f"{name}:{encoded}")
    text = " ".join(fields) + "\n" + script_text("common") + "\n" + OP_SEPARATOR + "\n"
    text += script_text(op) + "\n" + STDIN_END + "\n"
    return text.encode("ascii")


@dataclass(frozen=True)
class Invocation:
    """What a receiver (the lab) recovers from stdin."""

    op: str | None  # from the op script's header line; None when there is none
    params: dict[str, str]
    library: str
    script: str


def parse_stdin(data: bytes | str) -> Invocation:
    """Inverse of build_stdin, step by step as the bootstrap reads `$t`: `data` is stdin as
    sent, or the bootstrap's view of it (the console host's lines joined with LF, which lacks
    the final newline). Raises ValueError on anything not framed by build_stdin."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    first, sep, body = text.partition("\n")
    fields = first.strip().split(" ")
    if not sep or fields[0] != STDIN_MAGIC:
        raise ValueError("stdin is not a tealeaf-fleet invocation")
    params: dict[str, str] = {}
    for field in fields[1:]:
        if not field:
            continue
        name, colon, encoded = field.partition(":")
        if not colon:
            raise ValueError(f"bad parameter field {field!r}")
        params[name] = base64.b64decode(encoded, validate=True).decode("utf-8")
    library, sep, rest = body.partition("\n" + OP_SEPARATOR + "\n")
    if not sep:
        raise ValueError("no op separator on stdin")
    script, sep, _ = rest.rpartition("\n" + STDIN_END)
    if not sep:
        raise ValueError("no end line on stdin (cut short?)")
    header = script.split("\n", 1)[0]
    op = header[len(OP_HEADER) :].strip() if header.startswith(OP_HEADER) else None
    return Invocation(op=op, params=params, library=library, script=script)


def format_result(result: object) -> str:
    """What an op writes to stdout on success (used by the lab's op models)."""
    return RESULT_MARKER + "\n" + json.dumps(result, ensure_ascii=True) + "\n"


def parse_result(stdout: str) -> object:
    """The JSON document after the last RESULT_MARKER line. ValueError when there is none.

    A byte order mark is ignored: CLR 2's Console.Out (powershell.exe 2.0) starts redirected
    output in a code page 65001 shell with one, and the marker is usually the first thing out.
    """
    lines = stdout.replace("\r\n", "\n").split("\n")
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].replace("\ufeff", "").strip() == RESULT_MARKER:
            return json.loads("\n".join(lines[index + 1 :]))
    raise ValueError("the script wrote no result marker")
