"""Who else can read a file on a Windows controller: the Windows meaning of "chmod 600".

Why: on Windows `os.stat` reports every writable file as mode 0666 (the permission bits are not
the ACL: docs.python.org/3/library/os.html#os.stat), so the POSIX check ("no group or other
bits") would refuse every password file there, or, relaxed, accept any. What decides there is
the file's DACL: a password file is private when no access-allowed entry grants read access to
anyone but its owner, SYSTEM (S-1-5-18) and the local Administrators group (S-1-5-32-544),
who can read every file anyway. A file without a DACL grants everyone everything.

The reading (`file_readers`) uses GetNamedSecurityInfoW, GetAclInformation and GetAce
(learn.microsoft.com/windows/win32/api/aclapi/nf-aclapi-getnamedsecurityinfow,
learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-getace); the judgement
(`others_who_read`) is plain Python over (type, flags, mask, SID) tuples, so it is tested on any
system. The fix an operator types: `icacls FILE /inheritance:r /grant:r "%USERNAME%:R"`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ACCESS_ALLOWED_ACE_TYPE = 0
INHERIT_ONLY_ACE = 0x08
# Any of these in an allow entry's mask lets its trustee read the file's content.
READ_RIGHTS = (
    0x0001  # FILE_READ_DATA
    | 0x80000000  # GENERIC_READ
    | 0x10000000  # GENERIC_ALL
)
ALWAYS_ALLOWED = {"S-1-5-18": "SYSTEM", "S-1-5-32-544": "Administrators"}
FIX = 'icacls "{path}" /inheritance:r /grant:r "%USERNAME%:R"'


@dataclass(frozen=True)
class Ace:
    type: int
    flags: int
    mask: int
    sid: str
    name: str | None = None  # DOMAIN\\user when it could be looked up


def others_who_read(owner_sid: str, aces: Iterable[Ace] | None) -> list[str]:
    """The trustees other than the owner (and SYSTEM, Administrators) that may read the file:
    `None` for the ACL (no DACL at all) means everyone."""
    if aces is None:
        return ["Everyone (the file has no access control list)"]
    out: list[str] = []
    for ace in aces:
        if ace.type != ACCESS_ALLOWED_ACE_TYPE or ace.flags & INHERIT_ONLY_ACE:
            continue
        if not ace.mask & READ_RIGHTS:
            continue
        if ace.sid == owner_sid or ace.sid in ALWAYS_ALLOWED:
            continue
        label = f"{ace.name} ({ace.sid})" if ace.name else ace.sid
        if label not in out:
            out.append(label)
    return out


def file_readers(path: str) -> tuple[str, list[Ace] | None]:  # pragma: no cover - Windows only
    """(owner SID, the DACL's entries or None when there is no DACL) of `path`, read with the
    Win32 security API. OSError when Windows refuses to tell."""
    import ctypes
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    se_file_object = 1
    owner_info, dacl_info = 0x1, 0x4
    owner = ctypes.c_void_p()
    dacl = ctypes.c_void_p()
    descriptor = ctypes.c_void_p()
    status = advapi32.GetNamedSecurityInfoW(
        ctypes.c_wchar_p(path),
        se_file_object,
        owner_info | dacl_info,
        ctypes.byref(owner),
        None,
        ctypes.byref(dacl),
        None,
        ctypes.byref(descriptor),
    )
    if status != 0:
        raise OSError(status, f"GetNamedSecurityInfoW failed ({status})")
    try:
        owner_sid = _sid_text(advapi32, kernel32, owner)
        if not dacl.value:
            return owner_sid, None

        class AclSizeInformation(ctypes.Structure):
            _fields_ = [
                ("AceCount", wintypes.DWORD),
                ("AclBytesInUse", wintypes.DWORD),
                ("AclBytesFree", wintypes.DWORD),
            ]

        info = AclSizeInformation()
        if not advapi32.GetAclInformation(dacl, ctypes.byref(info), ctypes.sizeof(info), 2):
            raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
        aces = []
        for index in range(info.AceCount):
            ace = ctypes.c_void_p()
            if not advapi32.GetAce(dacl, index, ctypes.byref(ace)):
                raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
            raw = ctypes.cast(ace, ctypes.POINTER(ctypes.c_ubyte))
            ace_type, flags = raw[0], raw[1]
            mask = ctypes.cast(ace.value + 4, ctypes.POINTER(wintypes.DWORD))[0]
            sid = ctypes.c_void_p(ace.value + 8)  # ACCESS_ALLOWED_ACE.SidStart
            aces.append(Ace(ace_type, flags, mask, _sid_text(advapi32, kernel32, sid)))
        return owner_sid, aces
    finally:
        kernel32.LocalFree(descriptor)


def _sid_text(advapi32, kernel32, sid) -> str:  # type: ignore[no-untyped-def] # pragma: no cover
    import ctypes

    text = ctypes.c_wchar_p()
    if not advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)):
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    try:
        return str(text.value)
    finally:
        kernel32.LocalFree(text)
