"""The one NTLM user file of this process, for pyspnego's NTLM acceptor.

pyspnego's pure-Python NTLM acceptor takes no credentials as arguments: it looks the user up in
the file named by the environment variable `NTLM_USER_FILE` (lines `DOMAIN:USER:PASSWORD`),
reading the variable and the file afresh for every AUTHENTICATE message (spnego/_ntlm.py,
`_NTLMCredential` -> `_get_credential_file()`). An environment variable is process-wide, so all
labs in a process share one file; `register()` adds (or replaces) a user in it and points the
variable at it. The file is rewritten atomically (temp file + rename) so an authentication in
flight never reads half a file.

Limit: the file holds one password per DOMAIN\\USER; registering the same account again with a
new password replaces it for every lab in the process. The WinRM server additionally checks
that the authenticated principal is its own host's user.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

ENV = "NTLM_USER_FILE"

_lock = threading.Lock()
_dir: Path | None = None
_entries: dict[tuple[str, str], tuple[str, str, str]] = {}  # (DOMAIN, USER) upper -> line parts


def split_user(user: str) -> tuple[str, str]:
    """`CORP\\svc` -> ("CORP", "svc"); `svc` -> ("", "svc"); a UPN stays whole, no domain."""
    if "\\" in user:
        domain, _, name = user.partition("\\")
        return domain, name
    return "", user


def _cleanup() -> None:
    if _dir is not None:
        shutil.rmtree(_dir, ignore_errors=True)


def _file() -> Path:
    """Create the private folder on first use; adopt users of a pre-existing NTLM_USER_FILE."""
    global _dir
    if _dir is None:
        _dir = Path(tempfile.mkdtemp(prefix="tealeaf-lab-ntlm-"))
        atexit.register(_cleanup)
        previous = os.environ.get(ENV)
        if previous and os.path.isfile(previous):
            for line in Path(previous).read_text(encoding="utf-8").splitlines():
                parts = line.split(":")
                if len(parts) == 3:
                    _entries[(parts[0].upper(), parts[1].upper())] = (parts[0], parts[1], parts[2])
    return _dir / "ntlm_users"


def register(user: str, password: str) -> Path:
    """Make `user` (optionally `DOMAIN\\user`) with `password` acceptable to NTLM; the file path.

    Sets `os.environ["NTLM_USER_FILE"]` to the shared file. Passwords containing ':' or a line
    break cannot be stored in this format and are refused with ValueError.
    """
    if ":" in user or any(c in password for c in ":\r\n") or "\n" in user:
        raise ValueError("NTLM lab users and passwords cannot contain ':' or line breaks")
    domain, name = split_user(user)
    with _lock:
        path = _file()
        _entries[(domain.upper(), name.upper())] = (domain, name, password)
        text = "".join(f"{d}:{u}:{p}\n" for d, u, p in _entries.values())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        os.environ[ENV] = str(path)
        return path


def path() -> Path | None:
    """The shared user file, or None before the first `register`."""
    with _lock:
        return None if _dir is None else _dir / "ntlm_users"
