"""What a simulated host does with a command line: `run_command` / `wants_stdin`.

Three kinds of command (docs/architecture.md, "The lab's script runner"):
1. `powershell.exe ... -EncodedCommand X` where X decodes to `protocol.BOOTSTRAP`, or to it with
   another stdin-read statement in place of `protocol.STDIN_READ` (STDIN_READS: e.g. the old
   `[Console]::In.ReadToEnd()`): the runner follows the bootstrap. Its language check stops
   it when the host's PowerShell is not in FullLanguage mode (fault `constrained_language`).
   It reads stdin through the channel its read statement uses, as the host's console host
   delivers it (`lab/consolehost.py`), then runs the Python model of the op only when the
   library and the op script it read equal the packaged `common.ps1` and `<op>.ps1` exactly,
   so that what the lab ran is what would run on Windows. Models:
   `tealeaf_fleet.lab.models.MODELS[op](host, params) -> dict`, raising `OpFailed`. Success:
   stdout `protocol.format_result(result)`; failure: stderr as powershell.exe writes an error
   record (CLIXML) and the exit code.
2. Generic commands (`hostname`, `whoami`, `echo`, `cmd /c ...`, a `Write-Output '...'`
   one-liner): `generic.run_generic`.
3. Anything else: exit 1 and cmd.exe's "is not recognized" message.
Every powershell.exe start pays the host's `ps_startup_ms`.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from tealeaf_fleet.lab import consolehost, generic
from tealeaf_fleet.lab.api import CommandResult
from tealeaf_fleet.lab.hosterror import HostError
from tealeaf_fleet.ops import protocol

if TYPE_CHECKING:
    from tealeaf_fleet.lab.host import LabHost


class OpFailed(Exception):
    """Raised by an op model: the script would write `message` to stderr and exit with
    `exit_code` (1 unless the op's contract says otherwise)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _program(command: str) -> str:
    base = command.replace("/", "\\").rsplit("\\", 1)[-1].lower()
    return base[:-4] if base.endswith(".exe") else base


def _encoded_script(args: list[str]) -> str | None:
    """The decoded -EncodedCommand of a powershell command line, or None."""
    for i, arg in enumerate(args):
        if generic._ENCODED_FLAG.match(arg) and i + 1 < len(args):
            try:
                return base64.b64decode(args[i + 1], validate=True).decode("utf-16-le")
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


# The stdin-read statements a bootstrap may carry, and the channel each one reads. The
# packaged bootstrap's own is protocol.STDIN_READ; the other is the bootstrap before it, kept so
# that a test can show why it had to go.
STDIN_READS = {
    protocol.STDIN_READ: consolehost.DOLLAR_INPUT,
    "$t=[Console]::In.ReadToEnd();": consolehost.CONSOLE_IN,
}


def bootstrap_channel(script: str | None) -> str | None:
    """The stdin channel the decoded command `script` reads when it is our bootstrap, exactly
    but for its stdin-read statement (one of STDIN_READS); None for anything else."""
    for statement, channel in STDIN_READS.items():
        if script == protocol.BOOTSTRAP.replace(protocol.STDIN_READ, statement):
            return channel
    return None


def _bootstrap(command: str, args: list[str]) -> tuple[str, str] | None:
    """(decoded script, stdin channel) when the command line starts our bootstrap."""
    if _program(command) != "powershell":
        return None
    script = _encoded_script(args)
    channel = bootstrap_channel(script)
    return (script, channel) if script is not None and channel is not None else None


def is_bootstrap(command: str, args: list[str]) -> bool:
    """Whether the command line starts our op bootstrap (any stdin-read variant)."""
    return _bootstrap(command, args) is not None


def wants_stdin(command: str, args: list[str]) -> bool:
    """Only the op bootstrap reads stdin to its end before doing anything."""
    return is_bootstrap(command, args)


def clixml_error(message: str) -> bytes:
    """stderr of powershell.exe for an error record: `#< CLIXML` then one <S S="Error"> per
    line, CR and LF written as `_x000D__x000A_` like PowerShell's serializer."""
    parts = []
    for line in message.replace("\r\n", "\n").split("\n"):
        text = escape(line).replace("\t", "_x0009_")
        parts.append(f'<S S="Error">{text}_x000D__x000A_</S>')
    body = (
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        + "".join(parts)
        + "</Objs>"
    )
    return ("#< CLIXML\r\n" + body).encode("utf-8")


def _not_recognized(command: str) -> CommandResult:
    text = (
        f"'{command}' is not recognized as an internal or external command,\r\n"
        "operable program or batch file.\r\n"
    )
    return CommandResult(exit_code=1, stderr=text.encode("utf-8"))


def _uncaught(script: str, at: str, message: str, category: str, error_id: str) -> CommandResult:
    """powershell.exe's answer to a terminating error nobody caught in an -EncodedCommand
    script: exit 1 and the error record on stderr as PowerShell formats it (message, position
    of the text `at`, category and error id)."""
    text = (
        f"{message}\nAt line:1 char:{script.index(at) + 1}\n"
        f"    + CategoryInfo          : {category}\n"
        f"    + FullyQualifiedErrorId : {error_id}"
    )
    return CommandResult(1, stderr=clixml_error(text))


def _thrown(script: str, message: str) -> CommandResult:
    """An uncaught `throw "message"` (the error id is the text; the category's target is the
    text shortened like PowerShell's ErrorCategoryInfo does past 40 characters)."""
    target = message if len(message) <= 40 else message[:15] + "..." + message[-15:]
    category = f"OperationStopped: ({target}:String) [], RuntimeException"
    return _uncaught(script, "throw", message, category, message)


def _pay_startup(host: LabHost) -> None:
    if host.ps_startup_ms:
        time.sleep(host.ps_startup_ms / 1000.0)


def _packaged(name: str) -> str | None:
    try:
        return protocol.script_text(name)
    except (FileNotFoundError, ModuleNotFoundError, UnicodeDecodeError, ValueError):
        return None


def run_bootstrap(host: LabHost, script: str, channel: str, stdin: bytes) -> CommandResult:
    """Follow the bootstrap `script` (whose stdin-read statement reads `channel`) on `host`."""
    mode = host.language_mode
    if mode != "FullLanguage":
        host.record("op", op=None, exit=1, refused=f"language mode {mode}")
        if script.startswith(protocol.LANGUAGE_CHECK):  # the bootstrap's first statement
            return _thrown(script, protocol.LANGUAGE_REFUSAL.format(mode=mode))
        # Without that check, Windows' own refusal of the first .NET method call on a type
        # outside the core set (about_Language_Modes, "Constrained language").
        message = (
            "Cannot invoke method. Method invocation is supported only on core types in this "
            "language mode."
        )
        return _uncaught(
            script,
            "[ScriptBlock]::Create",
            message,
            "InvalidOperation: (:) [], RuntimeException",
            "MethodInvocationNotSupportedInConstrainedLanguage",
        )
    items = consolehost.read(channel, ps_version=host.ps_version, command_text=script, stdin=stdin)
    text = "\n".join(items)  # STDIN_READ joins the lines; ReadToEnd() gives one string
    if "\n" not in text:  # $n is -1: $t.Substring(0,$n) throws, and EAP is Stop
        host.record("op", op=None, exit=1, refused=f"{channel} gave no line")
        return _uncaught(
            script,
            "$t.Substring(0,$n)",
            'Exception calling "Substring" with "2" argument(s): "Length cannot be less than '
            'zero.\nParameter name: length"',
            "NotSpecified: (:) [], MethodInvocationException",
            "ArgumentOutOfRangeException",
        )
    return run_op(host, text)


def run_op(host: LabHost, text: str) -> CommandResult:
    """Run the op framed in `text`, the stdin the bootstrap read."""
    try:
        inv = protocol.parse_stdin(text)
    except (ValueError, UnicodeDecodeError):
        return CommandResult(
            1,
            stderr=clixml_error(
                "The script block could not be parsed: stdin is not a tealeaf-fleet invocation."
            ),
        )
    op = inv.op or ""
    if (
        not op.replace("_", "").isalnum()
        or inv.library != _packaged("common")
        or inv.script != _packaged(op)
    ):
        host.record("op", op=op or None, exit=1, refused="not a packaged script")
        return CommandResult(
            1,
            stderr=clixml_error(
                f"The lab runs only the packaged tealeaf-fleet scripts; '{op or '?'}' with this "
                "text is not one of them."
            ),
        )
    from tealeaf_fleet.lab.models import MODELS  # here: models imports OpFailed from us

    model = MODELS.get(op)
    if model is None:
        host.record("op", op=op, exit=1, refused="no model")
        return CommandResult(1, stderr=clixml_error(f"The lab has no model of op '{op}'."))
    try:
        result = model(host, dict(inv.params))
    except OpFailed as exc:
        host.record("op", op=op, exit=exc.exit_code)
        return CommandResult(exc.exit_code, stderr=clixml_error(exc.message))
    except HostError as exc:  # what Windows refused surfaces as the script's terminating error
        host.record("op", op=op, exit=1)
        return CommandResult(1, stderr=clixml_error(str(exc)))
    host.record("op", op=op, exit=0)
    return CommandResult(
        0, stdout=protocol.format_result(result).replace("\n", "\r\n").encode("utf-8")
    )


def run_command(host: LabHost, command: str, args: list[str], stdin: bytes) -> CommandResult:
    """Run one command line on `host` (blocking for as long as the simulated work takes)."""
    program = _program(command)
    if program == "powershell":
        _pay_startup(host)
        bootstrap = _bootstrap(command, args)
        if bootstrap is not None:
            return run_bootstrap(host, *bootstrap, stdin)
    result = generic.run_generic(host.name.upper(), host.username, command, args)
    if result is not None:
        return result
    if program == "powershell":
        return CommandResult(
            1,
            stderr=clixml_error(
                "The lab cannot run this PowerShell command; only the packaged tealeaf-fleet "
                "scripts and simple Write-Output one-liners are emulated."
            ),
        )
    return _not_recognized(command)
