"""The seam between the lab's WinRM wire server (`lab/wsman*.py`) and its simulated hosts
(`lab/host.py` and friends). The wire knows nothing of Tealeaf; the host knows nothing of SOAP.

The wire server calls these methods on the host a request's port belongs to:
- on every HTTP request: `faults()` (re-read from faults.json) and `is_down()` (rebooting or
  `unreachable`: the connection is closed without an answer), `consume_flaky()` when `flaky` is
  set, then `record("request", ...)`;
- `command` / `args` are the command line (Command and all Arguments elements joined) split
  like Windows' CommandLineToArgvW: `command` is the program as the client wrote it
  (`powershell`, `powershell.exe`, `hostname`), quotes removed from every token;
- on Command: `wants_stdin(command, args)`; when False the command starts at once, else when
  the client's Send carries End="true" on a pipe-mode stdin (WINRS_CONSOLEMODE_STDIN FALSE or
  absent). A console-mode stdin never ends: the wire never starts such a command, and only a
  Signal ends it. The host needs no stdin mode: end-of-file is the wire's business;
- `run_command(command, args, stdin)` in a worker thread; it may take as long as the simulated
  work takes (service restarts); Receive long-polls for its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class CommandResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


class ShellHost(Protocol):
    name: str
    username: str  # the WinRM account the lab accepts (same for every host)

    def password(self) -> str:
        """The lab's WinRM password (read from the lab's credentials file)."""

    def faults(self) -> dict[str, Any]:
        """The current faults.json content ({} when healthy)."""

    def consume_flaky(self) -> bool:
        """If the `flaky` fault has a count left, decrement it (written back to faults.json,
        removing the key at zero) and return True: this request gets a 500. Atomic, since
        several connections may ask at once."""

    def is_down(self) -> bool:
        """True while the host is rebooting or has the `unreachable` fault."""

    def record(self, kind: str, **fields: Any) -> None:
        """Append one event to DIR/events.jsonl (ts and host are added)."""

    def wants_stdin(self, command: str, args: list[str]) -> bool:
        """Whether this command reads stdin to its end before it can run."""

    def run_command(self, command: str, args: list[str], stdin: bytes) -> CommandResult:
        """Run one command as the simulated host would; blocking."""
