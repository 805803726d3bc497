"""`TLSTool.exe` on a host: create / import / enable / disable (the vendor's procedure).

The password reaches TLSTool.exe as a command-line argument (its only interface), so it must
survive Windows PowerShell's native-argument passing: ASCII printable, no space, no double
quote (the vendor requires ASCII without spaces; PowerShell mangles embedded quotes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.secrets import Secret, redact

if TYPE_CHECKING:
    from tealeaf_fleet.transport import Connection

VERBS = ("create", "import", "enable", "disable")
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TlsToolResult:
    verb: str
    exit_code: int
    output: str  # the password replaced by ******

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def check_password(password: Secret) -> None:
    """InputError unless TLSTool.exe can receive this password intact (the rules are
    `certs.check_password`'s, so a PFX that passed `fleet cert` passes here too)."""
    from tealeaf_fleet.certs import check_password as problems_of

    problems = problems_of(password)
    if problems:
        raise InputError(
            "the PFX password cannot reach TLSTool.exe: " + "; ".join(problems),
            hint='use ASCII letters, digits and punctuation other than "',
        )


def run(
    conn: Connection,
    install_dir: str,
    verb: str,
    pfx_path: str | None = None,
    password: Secret | None = None,
    *,
    timeout_s: float = TIMEOUT_S,
) -> TlsToolResult:
    """Run `InstallDir\\Tools\\TLSTool.exe VERB ...` in its folder; its exit code and output.

    A non-zero TLSTool exit code is returned, not raised (the caller decides); a missing
    TLSTool.exe raises RemoteScriptError.
    """
    if verb not in VERBS:
        raise ValueError(f"unknown TLSTool verb {verb!r}")
    if not install_dir:
        raise InputError(
            f"{conn.name}: no Tealeaf install folder known for TLSTool.exe",
            hint="set tealeaf.install_dir or let facts discover it",
        )
    params = {"InstallDir": install_dir, "Verb": verb, "PfxPath": "", "Password": ""}
    if verb in ("create", "import"):
        if not pfx_path or password is None:
            raise ValueError(f"TLSTool {verb} needs pfx_path and password")
        check_password(password)
        params["PfxPath"] = pfx_path
        params["Password"] = password.reveal()
    raw = conn.run_op("tlstool", params, timeout_s=timeout_s, read_only=False)
    return TlsToolResult(
        verb=str(raw.get("verb", verb)),
        exit_code=int(raw.get("exit_code", -1)),
        output=redact(str(raw.get("output") or "")),
    )
