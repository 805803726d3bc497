"""The one error a simulated host raises for what Windows itself would refuse.

Its message is the text Windows or the cmdlet would show (e.g. "There is not enough space on
the disk."), so the op models and the runner can pass it on unchanged as the remote error.
"""

from __future__ import annotations


class HostError(RuntimeError):
    """A refusal by the simulated Windows host (bad path, disk full, service will not start)."""


class DiskFull(HostError):
    """The `disk_full` fault: every file write fails like a full volume."""

    def __init__(self) -> None:
        super().__init__("There is not enough space on the disk.")


class AccessDenied(HostError):
    """What .NET raises as UnauthorizedAccessException: a read-only file that would be deleted
    or replaced, or a named kernel object (mutex) whose DACL does not admit this account."""

    def __init__(self, path: str) -> None:
        super().__init__(f"Access to the path '{path}' is denied.")


class RegistryAccessDenied(HostError):
    """UnauthorizedAccessException from `RegistryKey.CreateSubKey` / `SetValue` on a key whose
    ACL does not let this account write (e.g. one a Group Policy owns)."""

    def __init__(self, key: str) -> None:
        native = "HKEY_LOCAL_MACHINE\\" + key.split("\\", 1)[1] if "\\" in key else key
        super().__init__(f"Access to the registry key '{native}' is denied.")
