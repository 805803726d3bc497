"""One exception tree for the whole tool.

Every error carries structured fields (`host`, `phase`, `hint`, and for input errors `file`,
`line`, `field`) so that the CLI can print one clear line and the journal can store the parts.
The CLI maps each class to an exit code (docs/architecture.md "Exit codes"): never catch
`Exception` to relabel it; raise the most specific class here instead.
"""

from __future__ import annotations

from pathlib import Path


class FleetError(Exception):
    """Base class. `exit_code` is what the CLI returns when this error ends a command."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        phase: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.phase = phase
        self.hint = hint

    def __str__(self) -> str:
        prefix = f"{self.host}: " if self.host else ""
        text = f"{prefix}{self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class PeerHealthError(FleetError):
    """Another host of an HBR's or Canister's rolling group is not healthy, so the host was
    not restarted (engine/peers.py). Exit 1: the run halts there, nothing was done to it."""


class InputError(FleetError):
    """Bad input: inventory, PFX, password source, playbook, flags. Exit 2.

    `file`, `line` (1-based) and `field` (a dotted path such as `hosts.hbr01.winrm.port`) locate
    the mistake; `str()` renders them as `FILE:LINE: FIELD: message`.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        if self.field:
            where += f"{self.field}: "
        text = where + self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class CertificateError(InputError):
    """A PFX that cannot be used: wrong password, not PKCS#12, no key, unfit certificate."""


class PreflightError(FleetError):
    """Preflight found blockers; nothing was changed. Exit 3.

    `blockers` maps host name to the list of things to fix there.
    """

    exit_code = 3

    def __init__(self, message: str, blockers: dict[str, list[str]]) -> None:
        super().__init__(message, phase="preflight")
        self.blockers = blockers


class StalePlanError(FleetError):
    """The approved plan no longer matches the inventory, playbook, tool or facts. Exit 4."""

    exit_code = 4

    def __init__(self, message: str, changed: list[str]) -> None:
        super().__init__(message)
        self.changed = changed


class ConcurrentRunError(FleetError):
    """Another run holds the state folder's lock."""

    exit_code = 1


class Interrupted(FleetError):
    """The operator pressed Ctrl-C; the run stopped between steps. Exit 130."""

    exit_code = 130


# --- failures talking to a host -------------------------------------------------------------


class RemoteError(FleetError):
    """Base for failures on or on the way to a Windows host."""

    transient = False


class HostUnreachable(RemoteError):
    """No connection (refused, reset, DNS, TCP timeout)."""

    transient = True


class AuthenticationFailed(RemoteError):
    """The host answered 401: wrong user, password, or transport."""


class RemoteTimeout(RemoteError):
    """An operation did not finish before its deadline."""

    transient = True


class ProtocolFault(RemoteError):
    """A WS-Management fault or an HTTP 5xx. `code` is the WSManFault code when there is one."""

    def __init__(self, message: str, *, code: str | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.code = code
        self.transient = code is None  # a 5xx with no WS-Man fault is worth a retry


class RemoteScriptError(RemoteError):
    """A remote script exited non-zero. `message` is its decoded error text (CLIXML stripped)."""

    def __init__(self, message: str, *, op: str, exit_code_remote: int, **kw) -> None:
        super().__init__(message, **kw)
        self.op = op
        self.exit_code_remote = exit_code_remote


class GateFailed(FleetError):
    """A health gate failed after a restart: the run halts before the next host. Exit 1."""

    def __init__(self, message: str, *, gate: str, **kw) -> None:
        super().__init__(message, **kw)
        self.gate = gate
