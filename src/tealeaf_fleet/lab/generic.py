"""Answers to the handful of generic commands any WinRM client may try first.

Protocol tests, health checks (`hostname`, `whoami`) and third-party clients probing a lab host
send ordinary commands, not tealeaf-fleet ops. The host's runner calls `run_generic` before its
own op models; `None` means "not one of these", so the runner goes on to the packaged ops and
finally answers like cmd.exe does for an unknown program.

Only the shapes listed in docs/architecture.md ("The lab's script runner") are understood, on
purpose: the lab must never pretend to run PowerShell it cannot run.
"""

from __future__ import annotations

import base64
import binascii
import re

from tealeaf_fleet.lab.api import CommandResult

CRLF = "\r\n"

# A decoded -EncodedCommand that is exactly one output statement of a single-quoted literal
# ('' is PowerShell's escape for a quote inside such a literal).
_PS_ONE_LINER = re.compile(
    r"^\s*(?:write-output|write-host|echo)\s+'((?:[^']|'')*)'\s*;?\s*$", re.IGNORECASE
)
# PowerShell accepts any unambiguous prefix of -EncodedCommand, plus the alias -ec.
_ENCODED_FLAG = re.compile(
    r"^[-/](?:e|ec|en|enc|enco|encod|encode|encoded|encodedc|encodedco"
    r"|encodedcom|encodedcomm|encodedcomma|encodedcomman|encodedcommand)$",
    re.IGNORECASE,
)


def _program(name: str) -> str:
    """`C:\\Windows\\System32\\CMD.EXE` -> `cmd`: how Windows resolves the program name."""
    base = name.replace("/", "\\").rsplit("\\", 1)[-1].lower()
    return base[:-4] if base.endswith(".exe") else base


def _ok(text: str) -> CommandResult:
    return CommandResult(exit_code=0, stdout=text.encode("utf-8"))


def _echo(args: list[str]) -> CommandResult:
    # cmd's echo prints its argument text verbatim (quotes included); we only have tokens, so
    # they are joined with single spaces.
    if not args:
        return _ok("ECHO is on." + CRLF)
    return _ok(" ".join(args) + CRLF)


def _whoami(hostname: str, username: str) -> str:
    if "\\" in username:
        return username.lower()
    if "@" in username:  # UPN: whoami shows the NetBIOS form, which we approximate
        user, _, domain = username.partition("@")
        return f"{domain.split('.')[0]}\\{user}".lower()
    return f"{hostname}\\{username}".lower()


def _powershell(args: list[str]) -> CommandResult | None:
    for i, arg in enumerate(args):
        if _ENCODED_FLAG.match(arg):
            if i + 1 >= len(args):
                return None
            try:
                script = base64.b64decode(args[i + 1], validate=True).decode("utf-16-le")
            except (binascii.Error, UnicodeDecodeError):
                return None
            match = _PS_ONE_LINER.match(script)
            if not match:
                return None
            return _ok(match.group(1).replace("''", "'") + CRLF)
    return None


def run_generic(
    hostname: str, username: str, command: str, args: list[str]
) -> CommandResult | None:
    """The result of a generic command, or None when `command args` is not one of them.

    `command` and `args` are the command line split like Windows does (see
    `wsman.split_command_line`).
    """
    program = _program(command)
    if program == "hostname" and not args:
        return _ok(hostname + CRLF)
    if program == "whoami" and not args:
        return _ok(_whoami(hostname, username) + CRLF)
    if program == "echo":
        return _echo(args)
    if program == "cmd" and args and args[0].lower() in ("/c", "/k"):
        if len(args) < 2:
            return None
        return run_generic(hostname, username, args[1], args[2:])
    if program == "powershell":
        return _powershell(args)
    return None
