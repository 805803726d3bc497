"""The vendor's status tool on a Portal: `TealeafStatus -verbose`, as the TLS procedure says to
test it after the status-report registry settings are in place and the host rebooted.

Read-only and time-limited (the script kills it past `timeout_s`). Its output is kept as
evidence (the last `OUTPUT_LIMIT` characters, redacted). A non-zero exit, a tool that did not
finish, or one that could not start is a warning pointing at the prerequisites playbook (the
.NET, WinHTTP and SCHANNEL values the report needs); a tool that is not installed is "not
checked", never "ok".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import RemoteScriptError
from tealeaf_fleet.ops.services import native_deadline_s
from tealeaf_fleet.secrets import redact

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

TIMEOUT_S = 150.0
OUTPUT_LIMIT = 16000
PREREQUISITES_HINT = (
    "run `fleet rollout INVENTORY --playbook prerequisites` (the .NET SchUseStrongCrypto / "
    "SystemDefaultTlsVersions, WinHTTP DefaultSecureProtocols and, on 2008 R2, SCHANNEL TLS 1.2 "
    "values the status report needs), then reboot the host"
)


@dataclass(frozen=True)
class StatusToolResult:
    present: bool
    path: str | None = None
    exit_code: int | None = None  # None: not run, or did not finish
    output: str = ""
    cut: bool = False
    error: str | None = None  # why it did not finish

    @property
    def ok(self) -> bool:
        return self.present and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "path": self.path,
            "exit_code": self.exit_code,
            "output": self.output,
            "cut": self.cut,
            "error": self.error,
        }


def run(
    conn: Connection, install_dir: str | None, *, timeout_s: float = TIMEOUT_S
) -> StatusToolResult:
    """Run it once; a tool that timed out or could not start comes back with `error`."""
    try:
        raw = conn.run_op(
            "status_tool",
            {
                "InstallDir": install_dir or "",
                "TimeoutS": native_deadline_s(timeout_s),
                "OutputLimit": OUTPUT_LIMIT,
            },
            timeout_s=timeout_s,
            read_only=True,
        )
    except RemoteScriptError as exc:
        if exc.op != "status_tool":
            raise
        return StatusToolResult(present=True, error=redact(exc.message))
    code = raw.get("exit_code")
    return StatusToolResult(
        present=bool(raw.get("present")),
        path=raw.get("path"),
        exit_code=int(code) if isinstance(code, int) else None,
        output=redact(str(raw.get("output") or "")),
        cut=bool(raw.get("cut")),
    )
