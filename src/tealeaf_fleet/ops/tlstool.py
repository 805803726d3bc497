"""`TLSTool.exe` on a host: create / import / enable / disable (the vendor's procedure).

As the vendor runs it: in `<install>\\Tools`, the PFX by its bare file name
(`TLSTool.exe import TCXcert.pfx <password>`). TLSTool hands the file and the password to its
bundled openssl.exe, very likely on a command line it does not quote (and perhaps through
cmd.exe), and install folders such as `C:\\Program Files (x86)\\IBM\\Tealeaf` hold spaces and
parentheses. So the PFX must be in Tools under a plain name, and the password (an argument:
TLSTool's only interface) must hold no space, double quote or cmd metacharacter
(`certs.check_password`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import TYPE_CHECKING

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.secrets import Secret, redact

if TYPE_CHECKING:
    from pathlib import Path

    from tealeaf_fleet.transport import Connection

VERBS = ("create", "import", "enable", "disable")
TIMEOUT_S = 300.0
PFX_NAME = re.compile(r"[A-Za-z0-9._-]+")  # what openssl.exe gets intact on any command line


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
    from tealeaf_fleet.certs import PASSWORD_ADVICE
    from tealeaf_fleet.certs import check_password as problems_of

    problems = problems_of(password)
    if problems:
        raise InputError(
            "the PFX password cannot reach TLSTool.exe: " + "; ".join(problems),
            hint=PASSWORD_ADVICE,
        )


def check_pfx_name(name: str, *, file: Path | None = None, field: str | None = None) -> None:
    """InputError unless `name` is a PFX file name TLSTool.exe can hand to openssl.exe intact
    (letters, digits, `.`, `-`, `_`)."""
    if not PFX_NAME.fullmatch(name):
        raise InputError(
            f"the PFX file name {name!r} may hold only letters, digits, '.', '-' and '_': "
            "TLSTool.exe hands it to openssl.exe unquoted",
            file=file,
            field=field,
            hint="rename the PFX, e.g. TCXcert.pfx",
        )


def pfx_name(install_dir: str, pfx_path: str) -> str:
    """The bare file name TLSTool.exe gets for `pfx_path`, which must be in
    `<install_dir>\\Tools` (the script applies the same rule); InputError otherwise."""
    tools = str(PureWindowsPath(install_dir.replace("/", "\\")) / "Tools")
    prefix = tools.rstrip("\\") + "\\"
    given = pfx_path.replace("/", "\\")
    name = given[len(prefix) :] if given.lower().startswith(prefix.lower()) else ""
    if not name or "\\" in name:
        raise InputError(
            f"the PFX must be in {tools} (TLSTool.exe gets it by file name), not at {pfx_path}"
        )
    check_pfx_name(name)
    return name


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

    `pfx_path` must be in `InstallDir\\Tools`; TLSTool.exe gets its bare name. A non-zero
    TLSTool exit code is returned, not raised (the caller decides); a missing TLSTool.exe, or
    one still running at the script's deadline (it is killed then), raises RemoteScriptError.
    """
    from tealeaf_fleet.ops.services import native_deadline_s

    if verb not in VERBS:
        raise ValueError(f"unknown TLSTool verb {verb!r}")
    if not install_dir:
        raise InputError(
            f"{conn.name}: no Tealeaf install folder known for TLSTool.exe",
            hint="set tealeaf.install_dir or let facts discover it",
        )
    params = {
        "InstallDir": install_dir,
        "Verb": verb,
        "PfxPath": "",
        "Password": "",
        "TimeoutS": str(native_deadline_s(timeout_s)),
    }
    if verb in ("create", "import"):
        if not pfx_path or password is None:
            raise ValueError(f"TLSTool {verb} needs pfx_path and password")
        pfx_name(install_dir, pfx_path)
        check_password(password)
        params["PfxPath"] = pfx_path
        params["Password"] = password.reveal()
    raw = conn.run_op("tlstool", params, timeout_s=timeout_s, read_only=False)
    return TlsToolResult(
        verb=str(raw.get("verb", verb)),
        exit_code=int(raw.get("exit_code", -1)),
        output=redact(str(raw.get("output") or "")),
    )
