"""Process and lock-file helpers shared by the run journal's locks and the lab's "already
running" check, on a POSIX or a Windows controller.

Both ask the same question of a pid read from a file (is its writer still alive?), and both
need the same corner cases right, so the answer lives here once. Windows differs in ways that
matter (a Tealeaf administrator's jump host is usually Windows):
- `os.kill(pid, 0)` does not probe there: any signal other than CTRL_C_EVENT/CTRL_BREAK_EVENT
  *terminates* the process (docs.python.org/3/library/os.html#os.kill), so liveness is asked
  with OpenProcess + GetExitCodeProcess (STILL_ACTIVE = 259) instead
  (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-getexitcodeprocess);
- there is no `fcntl.flock`: `msvcrt.locking` locks a byte range instead, held until the file
  is closed or the process ends (learn.microsoft.com/cpp/c-runtime-library/reference/locking);
  the byte locked lies far past the lock file's content, so that other processes can still
  read the holder's pid from it (a locked range cannot be read by others);
- there is no `os.pread` / `os.pwrite`: a seek then a read or write does the same for the one
  thread that uses the descriptor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]

PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
STILL_ACTIVE = 259
ERROR_ACCESS_DENIED = 5
LOCK_OFFSET = 1 << 30  # the byte msvcrt locks: beyond any content of a lock file


def on_windows() -> bool:
    """The one `os.name` test of the controller code (tests make it true on any system)."""
    return os.name == "nt"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists. EPERM means it exists but is not ours; pid 0 and
    below are never a writer's pid (`os.kill(0, 0)` would ask about our own process group)."""
    if pid <= 0:
        return False
    if on_windows():
        return windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def windows_pid_alive(
    pid: int, kernel32: Any = None, last_error: Callable[[], int] | None = None
) -> bool:
    """Liveness on Windows without touching the process. `kernel32` and `last_error` are the
    ctypes ones unless given (tests on other systems give stand-ins)."""
    if kernel32 is None or last_error is None:
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        last_error = ctypes.get_last_error  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return last_error() == ERROR_ACCESS_DENIED  # it exists, and belongs to someone else
    try:
        import ctypes

        code = ctypes.c_ulong(0)
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # cannot tell: count it as alive (a second run is refused, not let in)
        return code.value == STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def try_lock(fd: int) -> bool | None:
    """Take the exclusive lock of an open lock file without waiting: True when taken, False
    when another process holds it, None where neither flock nor msvcrt exists (the caller then
    relies on the pid check alone)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if msvcrt is not None:
        os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True
    return None  # pragma: no cover - neither POSIX nor Windows


def read_at(fd: int, size: int, offset: int) -> bytes:
    """`os.pread`, or a seek and a read where it does not exist (Windows)."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def write_at(fd: int, data: bytes, offset: int) -> None:
    """`os.pwrite`, or a seek and a write where it does not exist (Windows)."""
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, offset)
        return
    os.lseek(fd, offset, os.SEEK_SET)
    os.write(fd, data)
