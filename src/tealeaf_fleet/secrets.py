"""Secrets that never print themselves.

`Secret` wraps a password: `str()`, `repr()`, `format()` and f-strings show `'******'`; only
`.reveal()` gives the value, and only the code that hands it to a library or a remote script
calls it. Every secret created here is registered with `redact()`, which logging and error
formatting run over any text that leaves the process.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.procutil import on_windows
from tealeaf_fleet.safeio import MAX_INPUT_BYTES, decode_utf8, read_regular_file

MASK = "******"
_known: set[str] = set()  # every secret value, as written and JSON-escaped
_longest_first: tuple[str, ...] = ()  # `_known`, sorted once per new secret, not per redact()
_known_lock = threading.Lock()


class Secret:
    """A password. Compare with `==`, hand over with `.reveal()`, never print."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # e.g. "env TEALEAF_PFX_PASSWORD", "file /x/pw.txt": safe to show
        if value:
            _remember(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK}, source={self.source!r})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the value somewhere
        raise TypeError("Secret cannot be pickled")


def _forms(value: str) -> set[str]:
    """The value as written, and as it appears inside a JSON string (a password holding a
    backslash or a quote is escaped there, and would slip past a plain search)."""
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def _remember(value: str) -> None:
    """Register a secret for `redact()`. The forms are worked out here, once: `redact()` runs
    over every line of output and every log record."""
    global _longest_first
    forms = _forms(value)
    with _known_lock:
        if forms <= _known:
            return
        _known.update(forms)
        # longest first, so that a secret containing another is masked whole
        _longest_first = tuple(sorted(_known, key=len, reverse=True))


def redact(text: str) -> str:
    """Replace every known secret value in `text`, also in its JSON-escaped form, with the
    mask."""
    for form in _longest_first:  # a tuple, swapped whole under the lock: safe to read
        if form in text:
            text = text.replace(form, MASK)
    return text


def from_env(
    var: str, *, file: str | Path | None = None, line: int | None = None, field: str | None = None
) -> Secret:
    """Read a secret from an environment variable; unset or empty is an input error."""
    value = os.environ.get(var)
    if not value:
        raise InputError(
            f"environment variable {var} is unset or empty",
            file=file,
            line=line,
            field=field,
            hint=f"export {var}=... before running",
        )
    return Secret(value, source=f"env {var}")


def from_file(
    path: str | Path,
    *,
    file: str | Path | None = None,
    line: int | None = None,
    field: str | None = None,
) -> Secret:
    """Read a secret from a regular file that only its owner can read (a FIFO, a device or a
    folder is refused before anything is read, so none can hang or flood the tool). Trailing
    newlines are dropped; the content must be UTF-8 and is never shown in a message."""
    p = Path(path)
    where = {"file": file, "line": line, "field": field}

    def private(st: os.stat_result) -> None:
        if on_windows():  # the mode bits say nothing there: the ACL decides
            windows_private(p, where)
            return
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(
                f"password file {p} is readable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o})",
                hint=f"chmod 600 {p}",
                **where,
            )

    data = read_regular_file(p, MAX_INPUT_BYTES, "password file", check=private, **where)
    value = decode_utf8(data, p, "password file", **where).rstrip("\r\n")
    if not value:
        raise InputError(f"password file {p} is empty", **where)
    return Secret(value, source=f"file {p}")


def windows_private(path: Path, where: dict[str, Any], reader: Any = None) -> None:
    """InputError when anyone but the file's owner (and SYSTEM, Administrators) may read it,
    by its Windows ACL (winacl.py). `reader` stands in for the Win32 call in tests."""
    from tealeaf_fleet import winacl

    try:
        owner, aces = (reader or winacl.file_readers)(str(path))
    except OSError as exc:
        raise InputError(
            f"password file {path}: its access control list cannot be read ({exc})",
            hint=winacl.FIX.format(path=path),
            **where,
        ) from None
    others = winacl.others_who_read(owner, aces)
    if others:
        raise InputError(
            f"password file {path} is readable by others than its owner: {', '.join(others)}",
            hint=winacl.FIX.format(path=path),
            **where,
        )


def prompt(label: str, *, confirm: bool = False) -> Secret:
    """Ask on the terminal (no echo). Refuses when stdin is not a terminal."""
    if not sys.stdin.isatty():
        raise InputError(
            f"{label}: no password source given and no terminal to ask on",
            hint="use --password-env VAR or --password-file FILE",
        )
    value = getpass.getpass(f"{label}: ")
    if confirm and getpass.getpass(f"{label} (again): ") != value:
        raise InputError(f"{label}: the two entries differ")
    if not value:
        raise InputError(f"{label}: empty password")
    return Secret(value, source="prompt")


# a key ending in pass/password/passwd/pwd (TLSCertPassword, PfxPassword, "password"), then
# `=`/`:` (after an optional closing quote), or a `-password VALUE` switch; a quoted value is
# masked up to its closing quote, a bare one up to a space, quote, comma or semicolon
_SECRETISH = re.compile(
    r"""(?ix)
    (?P<key>\w*(?:pass(?:word|wd)?|pwd)["']?\s*[=:]\s*
      | -\w*(?:pass(?:word|wd)?|pwd)\s+(?=[^\s-]))
    (?P<value>"[^"\r\n]*"?|'[^'\r\n]*'?|[^\s"',;]+)
    """
)


def mask(text: str) -> str:
    """Known secrets and anything that looks like a written-out password, masked."""
    return _SECRETISH.sub(_masked, redact(text))


def _masked(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return match.group("key") + quote + MASK + (quote if value.endswith(quote) and quote else "")
