"""A controller on Windows: the code that depends on `os.name` or on a module only one system
has (fcntl, msvcrt, os.pread, the Win32 security API), run here with that condition made true.
What cannot run off Windows (the ctypes calls themselves) is replaced by stand-ins that answer
as the documented API does; the decisions around them are the code under test."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from tealeaf_fleet import journal, procutil, secrets, winacl
from tealeaf_fleet.errors import InputError
from tealeaf_fleet.safeio import O_BINARY, read_regular_file

OWNER = "S-1-5-21-1-2-3-1001"
USERS = "S-1-5-32-545"


def ace(sid, mask=0x120089, flags=0, kind=winacl.ACCESS_ALLOWED_ACE_TYPE, name=None):
    return winacl.Ace(kind, flags, mask, sid, name)


@pytest.mark.parametrize(
    "aces,others",
    [
        ([ace(OWNER)], []),
        ([ace(OWNER), ace("S-1-5-18"), ace("S-1-5-32-544")], []),  # SYSTEM, Administrators
        ([ace(OWNER), ace(USERS, name="BUILTIN\\Users")], ["BUILTIN\\Users (S-1-5-32-545)"]),
        ([ace(USERS, mask=0x80000000)], [USERS]),  # GENERIC_READ
        ([ace(USERS, mask=0x10000000)], [USERS]),  # GENERIC_ALL
        ([ace(USERS, mask=0x0002)], []),  # FILE_WRITE_DATA only: cannot read
        ([ace(USERS, flags=winacl.INHERIT_ONLY_ACE)], []),  # applies to children only
        ([ace(USERS, kind=1)], []),  # an access-denied entry grants nothing
        (None, ["Everyone (the file has no access control list)"]),
    ],
)
def test_acl_judgement_is_the_windows_meaning_of_chmod_600(aces, others):
    assert winacl.others_who_read(OWNER, aces) == others


def test_a_password_file_is_judged_by_its_acl_on_windows(tmp_path: Path, monkeypatch):
    """Mode 0644 would be refused on POSIX; on Windows the mode says nothing, the ACL does."""
    pw = tmp_path / "pw.txt"
    pw.write_text("s3cret\n")
    pw.chmod(0o644)
    with pytest.raises(InputError, match="readable by group or others"):
        secrets.from_file(pw)
    monkeypatch.setattr(secrets, "on_windows", lambda: True)
    monkeypatch.setattr(winacl, "file_readers", lambda path: (OWNER, [ace(OWNER)]))
    assert secrets.from_file(pw).reveal() == "s3cret"
    monkeypatch.setattr(
        winacl,
        "file_readers",
        lambda path: (OWNER, [ace(OWNER), ace(USERS, name="BUILTIN\\Users")]),
    )
    with pytest.raises(InputError) as caught:
        secrets.from_file(pw)
    assert "BUILTIN\\Users" in caught.value.message and "s3cret" not in str(caught.value)
    assert caught.value.hint.startswith("icacls")

    def refused(path):
        raise OSError(5, "access denied")

    monkeypatch.setattr(winacl, "file_readers", refused)
    with pytest.raises(InputError, match="access control list cannot be read"):
        secrets.from_file(pw)


class Kernel32:
    """Answers as OpenProcess / GetExitCodeProcess / CloseHandle do (processthreadsapi.h)."""

    def __init__(self, handle: int, code: int = procutil.STILL_ACTIVE) -> None:
        self.handle, self.code, self.closed = handle, code, []

    def OpenProcess(self, access, inherit, pid):  # noqa: N802 (the Win32 name)
        assert access == procutil.PROCESS_QUERY_LIMITED_INFORMATION
        return self.handle

    def GetExitCodeProcess(self, handle, ref):  # noqa: N802
        ctypes.cast(ref, ctypes.POINTER(ctypes.c_ulong))[0] = self.code
        return 1

    def CloseHandle(self, handle):  # noqa: N802
        self.closed.append(handle)


@pytest.mark.parametrize(
    "handle,code,error,alive",
    [
        (7, procutil.STILL_ACTIVE, 0, True),
        (7, 0, 0, False),  # exited: its exit code is kept while a handle is open
        (0, 0, procutil.ERROR_ACCESS_DENIED, True),  # another account's process
        (0, 0, 87, False),  # ERROR_INVALID_PARAMETER: no such process
    ],
)
def test_windows_liveness_never_signals_the_process(handle, code, error, alive):
    kernel32 = Kernel32(handle, code)
    assert procutil.windows_pid_alive(42, kernel32, lambda: error) is alive
    assert kernel32.closed == ([handle] if handle else [])


def test_pid_alive_takes_the_windows_path_there(monkeypatch):
    asked = []
    monkeypatch.setattr(procutil, "on_windows", lambda: True)
    monkeypatch.setattr(procutil, "windows_pid_alive", lambda pid: asked.append(pid) or True)
    monkeypatch.setattr(procutil.os, "kill", lambda *a: pytest.fail("os.kill would kill it"))
    assert procutil.pid_alive(4242) and asked == [4242]


def test_locks_with_msvcrt_where_there_is_no_flock(tmp_path: Path, monkeypatch):
    calls = []

    class Msvcrt:
        LK_NBLCK = 2
        held = False

        @classmethod
        def locking(cls, fd, mode, size):
            calls.append((os.lseek(fd, 0, os.SEEK_CUR), mode, size))
            if cls.held:
                raise OSError(13, "Permission denied")
            cls.held = True

    monkeypatch.setattr(procutil, "fcntl", None)
    monkeypatch.setattr(procutil, "msvcrt", Msvcrt)
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT | O_BINARY)
    try:
        assert procutil.try_lock(fd) is True
        assert procutil.try_lock(fd) is False  # held
        assert calls[0] == (procutil.LOCK_OFFSET, Msvcrt.LK_NBLCK, 1)  # past the content
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the pid is read and written from 0
    finally:
        os.close(fd)


def test_flock_refuses_a_second_holder(tmp_path: Path):
    if procutil.fcntl is None:
        pytest.skip("POSIX flock")
    first = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    second = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        assert procutil.try_lock(first) is True
        assert procutil.try_lock(second) is False
    finally:
        os.close(first)
        os.close(second)


def test_positional_io_without_pread(tmp_path: Path, monkeypatch):
    monkeypatch.delattr(os, "pread", raising=False)
    monkeypatch.delattr(os, "pwrite", raising=False)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT | O_BINARY)
    try:
        procutil.write_at(fd, b"0123456789", 0)
        procutil.write_at(fd, b"ab", 4)
        assert procutil.read_at(fd, 100, 0) == b"0123ab6789"
        assert procutil.read_at(fd, 3, 2) == b"23a"
    finally:
        os.close(fd)


def test_the_lock_folder_is_in_local_app_data_on_windows(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(journal.LOCK_DIR_ENV, raising=False)
    monkeypatch.setattr(journal, "on_windows", lambda: True)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    assert journal.lock_dir() == tmp_path / "tealeaf-fleet" / "locks"


def test_binary_files_come_back_byte_for_byte(tmp_path: Path):
    """CRLF and a Ctrl-Z byte: what Windows' text mode would change (a PFX holds both)."""
    data = b"a\r\nb\x1ac\n\x00"
    path = tmp_path / "blob.pfx"
    path.write_bytes(data)
    assert read_regular_file(path, 1024, "file") == data
    assert getattr(os, "O_BINARY", 0) == O_BINARY
