"""Per-host fault switches, `hosts/NAME/faults.json`, re-read whenever asked (cached by mtime).

A test or an operator edits the file while the lab runs; the next request sees the change.
`{}` means healthy. Keys (the lab's docs list each with the Windows behaviour it stands for):
- unreachable, auth_fails, flaky {"count": N}, slow {"ms": N}
- service_start_fails (true or {"services": [...]}), import_fails, enable_fails, disk_full
- enable_tls_preset, data_service_23443
- schannel_tls12_missing: the TLS 1.2 `Server` key is deleted; SCHANNEL reads it at boot, so on
  2008 R2 the host's TLS listeners offer no TLS 1.2 until it reboots with the keys set
- restart_mutex_denied: the restart ops' named mutex exists and belongs to another account, so
  opening it is denied
- constrained_language: every powershell.exe on the host runs in ConstrainedLanguage mode, as
  under AppLocker/WDAC
- native_hangs (true, or {"exe": NAME or [NAMES]}): that native exe, or the child it starts,
  waits for console input forever and is only ended by a kill (lab/native.py)
- shutdown_scheduled (true, or {"in_s": N, "abortable": bool}): someone else scheduled a restart
  N seconds ahead, ten minutes by default; shutdown.exe /r exits 1190 until it is aborted with
  shutdown.exe /a, and the host restarts at its time if nobody aborts it (lab/host.py)
- fips: the FIPS policy value is set (Lsa `FipsAlgorithmPolicy`, `Enabled` = 1), so the host
  refuses the managed SHA-256 class
- enable_tls_string (true or {"value": TEXT}): EnableTLS becomes a REG_SZ holding "true" (or
  TEXT)
- build_value_missing: the registry value `Version` is deleted (the build is then only in the
  service executables' file version)
- security_file_locked (true or {"files": [NAME, ...]}): tealeaf.p12 (or the named files of the
  security folder) cannot be opened, for reading or writing: another process holds it (sharing
  violation; so `TLSTool.exe import` writes tealeaf.crt and then fails on tealeaf.p12)
- service_start_pending (true or {"service": NAME, "seconds": N}): the next time the services
  are read (Win32_Service), a running TeaLeaf service is in Start Pending; it stays so for N
  seconds (default 3), then runs
- service_stopped (true or {"service": NAME}): the role's main TeaLeaf service (MAIN_SERVICE, or
  NAME) is found stopped: its process ended and nothing restarts it; it stays stopped unless
  something starts it (lab/services.py `crash`)
- not_admin: the WinRM account may connect (a member of Remote Management Users) but is not
  in the host's Administrators group (WindowsPrincipal.IsInRole(Administrator) is false)
- powershell_32bit: the WinRM session runs the 32-bit powershell.exe on 64-bit Windows (the
  Microsoft.PowerShell32 endpoint): HKLM SOFTWARE is the Wow6432Node view, so facts report the
  64-bit .NET/WinHTTP values unreadable (wow64_process) and set_registry refuses them
- clock_skew (true or {"s": N}): the host's clock ([DateTime]::UtcNow) reads N seconds ahead
  of the controller's (negative: behind), ten minutes ahead by default
- registry_write_denied (true, or {"keys": [KEY, ...]}): writing a value under any HKLM key (or
  under the named keys and their subkeys) is refused, as for a key whose ACL a Group Policy
  owns (learn.microsoft.com/dotnet/api/microsoft.win32.registrykey.createsubkey: "the user
  does not have the permissions required to create or open the registry key")
- ssl_cache_stale: from the moment it appears, the host's TLS listeners (Data Service, TMS,
  Search Server) refuse every handshake with an alert, as after a stale SChannel session cache,
  until the cache is emptied (SslEmptyCache, the Internet Options "Clear SSL State" button),
  Cryptographic Services (CryptSvc) restarts or the host reboots; it comes back only when the
  fault is removed and set again
- log_rolled: the Data Service has run for days: its newest log holds only request lines, the
  startup block sits in an older file by name and by LastWriteTime (applied once, by the host)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tealeaf_fleet.lab.events import write_json_atomic


class FaultFile:
    """Reads faults.json on demand; a value that is false/null/absent means the fault is off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        """The active faults. A file that is missing or not a JSON object counts as healthy,
        since a half-edited file must not crash the simulated host."""
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._data = None, {}
                return {}
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
                except (OSError, ValueError):
                    data = {}
                if not isinstance(data, dict):
                    data = {}
                self._data = {k: v for k, v in data.items() if v not in (None, False)}
                self._stamp = stamp
            return dict(self._data)

    def consume_flaky(self) -> bool:
        """True when this request must fail because of `flaky`; decrements and writes back
        the count, so `{"count": 2}` fails exactly the next two requests."""
        with self._lock:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                return False
            if not isinstance(data, dict):
                return False
            flaky = data.get("flaky")
            if not flaky:
                return False
            count = flaky.get("count", 1) if isinstance(flaky, dict) else 1
            if not isinstance(count, int) or count <= 0:
                return False
            count -= 1
            if count:
                data["flaky"] = {**(flaky if isinstance(flaky, dict) else {}), "count": count}
            else:
                data.pop("flaky")
            write_json_atomic(self.path, data)
            self._stamp = None
            return True

    def write(self, data: dict[str, Any]) -> None:
        """Replace the faults (used by the lab at creation and by tests)."""
        with self._lock:
            write_json_atomic(self.path, data)
            self._stamp = None


def service_start_fails(faults: dict[str, Any], service: str) -> bool:
    """Whether the fault `service_start_fails` applies to `service` (case-insensitive)."""
    value = faults.get("service_start_fails")
    if not value:
        return False
    if isinstance(value, dict) and value.get("services"):
        return service.lower() in {str(s).lower() for s in value["services"]}
    return True


# The named mutex restart_services.ps1 takes (one restart per host at a time).
RESTART_MUTEX = "Global\\tealeaf-fleet-restart-services"


def mutex_denied(faults: dict[str, Any], name: str) -> bool:
    """Whether opening the named mutex `name` is refused: with `restart_mutex_denied` the restart
    mutex exists and another account created it. A named mutex gets its default DACL from its
    creator's token, so an open by another account fails with access denied
    (learn.microsoft.com/windows/win32/sync/synchronization-object-security-and-access-rights)."""
    return bool(faults.get("restart_mutex_denied")) and name == RESTART_MUTEX


DEFAULT_PENDING_S = 3.0


def enable_tls_text(faults: dict[str, Any]) -> str:
    """The REG_SZ text `enable_tls_string` stores as EnableTLS ("true" unless given)."""
    value = faults.get("enable_tls_string")
    if isinstance(value, dict) and isinstance(value.get("value"), str):
        return value["value"]
    return "true"


def registry_write_denied(faults: dict[str, Any], key: str) -> bool:
    """Whether `registry_write_denied` refuses a write under `key` (`HKLM:\\...`, compared
    case-insensitively; a listed key covers its subkeys)."""
    value = faults.get("registry_write_denied")
    if not value:
        return False
    if isinstance(value, dict) and value.get("keys"):
        wanted = key.lower().rstrip("\\")
        return any(
            wanted == str(k).lower().rstrip("\\")
            or wanted.startswith(str(k).lower().rstrip("\\") + "\\")
            for k in value["keys"]
        )
    return True


def locked_files(faults: dict[str, Any]) -> list[str]:
    """Names in the security folder that `security_file_locked` makes unopenable."""
    value = faults.get("security_file_locked")
    if not value:
        return []
    if isinstance(value, dict) and value.get("files"):
        return [str(name) for name in value["files"]]
    return ["tealeaf.p12"]


# The service a role exists for: what `service_stopped` stops when no service is named.
MAIN_SERVICE = {
    "hbr": "TeaLeafHBR",
    "canister": "TeaLeafCanister",
    "portal": "TeaLeafPortalStatus",
    "report": "TeaLeafReportServer",
    "other": "TeaLeafTransportService",
}


def stopped_service(faults: dict[str, Any], role: str) -> str | None:
    """The service `service_stopped` stops on a host of `role` (None: the role has none)."""
    value = faults.get("service_stopped")
    if isinstance(value, dict) and value.get("service"):
        return str(value["service"])
    return MAIN_SERVICE.get(role)


def start_pending(faults: dict[str, Any]) -> tuple[str | None, float]:
    """(service or None for "any running TeaLeaf service", seconds) of
    `service_start_pending`."""
    value = faults.get("service_start_pending")
    if not isinstance(value, dict):
        return None, DEFAULT_PENDING_S
    service = value.get("service")
    seconds = value.get("seconds", DEFAULT_PENDING_S)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        seconds = DEFAULT_PENDING_S
    return (str(service) if service else None), float(seconds)


def clock_skew_s(faults: dict[str, Any]) -> float:
    """Seconds the host's clock is off with `clock_skew` (600 when given as true), else 0."""
    value = faults.get("clock_skew")
    if not value:
        return 0.0
    if isinstance(value, dict):
        return float(value.get("s", 600))
    return 600.0
