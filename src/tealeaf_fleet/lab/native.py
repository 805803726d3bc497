"""Native processes on a simulated host: how Windows hands a command line to an exe, and a
started process that a caller waits for with a deadline and may kill with its children.

What the op scripts do (`Invoke-FleetNative` in common.ps1) is `Process.Start` with stdin,
stdout and stderr redirected and stdin closed at once, reading both output pipes until they
end or a deadline passes, and past the deadline `taskkill /PID n /T /F`. The lab's side:

- `parse_command_line`: the exe receives one command-line string and splits it itself with the
  C runtime's rules (CommandLineToArgvW agrees on everything a quoting writer emits):
  https://learn.microsoft.com/en-us/cpp/c-language/parsing-c-command-line-arguments
- `NativeProcess`: the program runs on a thread of its own; `wait(timeout_s)` is
  WaitForExit; `kill_tree()` is taskkill /T /F, which ends the process and the processes it
  started (TLSTool.exe runs openssl.exe). A program the `native_hangs` fault names (or whose
  child it names) never ends by itself: pessimistically, a tool that wants console input is
  taken to wait forever even though its stdin is closed.

Every process that ends records a `process` event `{exe, exit}` (exit code, or "killed" for
each process of a killed tree); never its arguments (a password may be among them). A program
that is not hung runs to its end even past a kill (the lab's programs are quick); only its
result is discarded then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.lab.wsman import split_command_line

if TYPE_CHECKING:
    from tealeaf_fleet.lab.host import LabHost

Program = Callable[[], tuple[int, str]]
KILLED = "killed"


def parse_command_line(text: str) -> list[str]:
    """The arguments an exe finds in `text` (the part after its own name), split with the C
    runtime's rules (the wire's `split_command_line`: the same rules, the same code)."""
    return split_command_line(text)


def hang_target(faults: dict[str, Any], names: list[str]) -> str | None:
    """Which of `names` (an exe and the processes it starts) the `native_hangs` fault makes
    wait forever: `true` (every exe), `{"exe": NAME}` or `{"exe": [NAMES]}` (case-insensitive)."""
    value = faults.get("native_hangs")
    if not value:
        return None
    if not isinstance(value, dict):
        return names[0]
    wanted = value.get("exe")
    listed = {str(w).lower() for w in (wanted if isinstance(wanted, list) else [wanted])}
    return next((name for name in names if name.lower() in listed), None)


class NativeProcess:
    """A started native process (see the module docstring)."""

    def __init__(
        self,
        host: LabHost,
        exe_name: str,
        program: Program,
        *,
        children: list[str],
        hangs: str | None,
    ) -> None:
        self.host = host
        self.exe_name = exe_name
        self.exit_code: int | None = None
        self.output = ""
        self._program = program
        self._children = children
        self._hangs = hangs
        self._killed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"native-{exe_name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._hangs is not None:
            self._killed.wait()  # waits for console input nobody gives
            return
        code, output = self._program()
        if self._killed.is_set():
            return
        self.exit_code, self.output = code, output
        self.host.record("process", exe=self.exe_name, exit=code)

    def wait(self, timeout_s: float) -> bool:
        """Process.WaitForExit(ms): True when the process ended within `timeout_s`."""
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    def kill_tree(self) -> None:
        """taskkill /PID n /T /F: the process and the processes it started end now."""
        if not self._thread.is_alive():
            return
        self._killed.set()
        started = [self.exe_name]
        if self._hangs is not None and self._hangs != self.exe_name:
            started += [c for c in self._children if c == self._hangs]
        for name in started:
            self.host.record("process", exe=name, exit=KILLED)
        self._thread.join(5.0)
