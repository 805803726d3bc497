"""`LabHost`: one simulated Windows server of the lab, the API the op models program against.

The host owns a folder `DIR/hosts/NAME/` with `registry.json`, `services.json`, `faults.json`
and `fs/` (its drives: `C:\\X\\y` is `fs/C/X/y`, looked up case-insensitively like NTFS), plus
lab-private files the simulated programs need (the TMS legacy certificate). It implements the
wire server's `ShellHost` protocol (lab/api.py) and, for `lab/models.py`, a small Windows-like
API: registry, files, services, IIS, reboot, TLSTool, host-local time and faults. Every state
change is one event in the lab's `events.jsonl`.

Errors that Windows would report raise `HostError` with Windows' wording; the runner passes the
message on as the remote script's error.
"""

from __future__ import annotations

import ntpath
import os
import re
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tealeaf_fleet.lab import dataservice, native, statustool, tlstool
from tealeaf_fleet.lab.api import CommandResult
from tealeaf_fleet.lab.events import EventLog
from tealeaf_fleet.lab.faults import (
    FaultFile,
    clock_skew_s,
    enable_tls_text,
    locked_files,
    mutex_denied,
    registry_write_denied,
    service_start_fails,
    start_pending,
    stopped_service,
)
from tealeaf_fleet.lab.hosterror import AccessDenied, DiskFull, HostError, RegistryAccessDenied
from tealeaf_fleet.lab.registry import (
    FIPS_KEY,
    NDP_KEY,
    SCHANNEL_KEY,
    SECURITY_KEY,
    TEALEAF_KEY,
    TLS12_SERVER_KEY,
    Registry,
)
from tealeaf_fleet.lab.services import (
    CRYPTO_SERVICE,
    DATA_SERVICE,
    IIS_SERVICE,
    SEARCH_SERVICE,
    TMS_SERVICE,
    ServiceInfo,
    ServiceManager,
    services_for_role,
    wmi_state,
)
from tealeaf_fleet.lab.tlstool import SECURITY_DIR
from tealeaf_fleet.secrets import MASK

RULES_SERVICE = "TeaLeafRulesEngine"
# The vendor's "Known issues": an HBR without the TLSCertPassword registry value logs this
RULES_KEY_ERROR = (
    "TeaLeaf Rules: unable to open key: The system cannot find the file specified while "
    'executing "registry get $path $key".'
)

__all__ = ["LabHost", "HostConfig", "HostError", "ServiceInfo", "OS_TABLE"]

# os key -> (Win32_OperatingSystem.Version, Caption, built-in PowerShell version)
OS_TABLE = {
    "2008r2": ("6.1.7601", "Microsoft Windows Server 2008 R2 Standard", "2.0"),
    "2012r2": ("6.3.9600", "Microsoft Windows Server 2012 R2 Standard", "4.0"),
    "2016": ("10.0.14393", "Microsoft Windows Server 2016 Standard", "5.1"),
    "2019": ("10.0.17763", "Microsoft Windows Server 2019 Standard", "5.1"),
}
# os key -> the .NET Framework setup keys (HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\...)
# of a fresh server (learn.microsoft.com/dotnet/framework/install/versions-and-dependencies,
# .../how-to-determine-which-versions-are-installed). 2008 R2: the CLR 2 that PowerShell 2.0
# runs on, and not the optional .NET 3.5.1 feature (the pessimistic reading: System.Core may be
# missing); 2012 R2 and later: the built-in 4.x by Release, 3.5 a feature on demand, absent.
DOTNET_SETUP: dict[str, dict[str, dict[str, Any]]] = {
    "2008r2": {"v2.0.50727": {"Install": 1, "Version": "2.0.50727.5420", "SP": 2}},
    "2012r2": {"v4\\Full": {"Install": 1, "Version": "4.5.51641", "Release": 378675}},
    "2016": {"v4\\Full": {"Install": 1, "Version": "4.6.01586", "Release": 394802}},
    "2019": {"v4\\Full": {"Install": 1, "Version": "4.7.03190", "Release": 461808}},
}
DEFAULT_BUILD = "9.0.2.1351"
DEFAULT_INSTALL_DIR = r"D:\Tealeaf"
SYSTEM32 = r"C:\Windows\system32"
SHUTDOWN_SCHEDULED = "A system shutdown has already been scheduled.(1190)\r\n"
NO_SHUTDOWN = "Unable to abort the system shutdown because no shutdown was in progress.(1116)\r\n"
OTHER_SHUTDOWN_IN_S = 600.0  # `shutdown_scheduled` without "in_s": ten minutes ahead
# What the managed hash classes' constructors throw (InvalidOperationException) under the
# "System cryptography: use FIPS compliant algorithms" policy; the CAPI/CNG wrappers work.
# learn.microsoft.com/dotnet/api/system.security.cryptography.cryptoconfig.allowonlyfipsalgorithms
FIPS_REFUSAL = (
    "This implementation is not part of the Windows Platform FIPS validated cryptographic "
    "algorithms."
)
MANAGED_HASHES = ("SHA256Managed", "SHA1Managed", "SHA384Managed", "SHA512Managed")
# The version resource of a lab placeholder exe: service exes carry "FileVersion: X", the
# Tools exes "Tealeaf build X" (both written in `create`).
_FILE_VERSION = re.compile(rb"FileVersion: ([^\r\n]+)|Tealeaf build (\d+(?:\.\d+)*)")
# How the Data Service names its log. dated: TLDataService_<yyyymmdd>.log, one per day (the
# Tealeaf 9.0.2 procedure's wording); live: TLDataService.log, renamed to
# TLDataService_<yyyymmdd>.log when its day is over (HCL Discover 12.1.6, "Log file location":
# help.hcl-software.com/HCLDiscover/12.1.6/en/DC/CfgDCCmpt/LogFileLocation_40.html).
LOG_STYLES = ("dated", "live")
# .NET DateTime ticks (100 ns since 0001-01-01) at the Unix epoch.
_EPOCH_TICKS = 621355968000000000
_TICKS_1601 = 504911232000000000
_LOG_STAMP = re.compile(rb"^\d{4}-\d\d-\d\d", re.M)
_BAD_NAME = re.compile(r'[<>:"|?*\x00-\x1f]')


def map_windows_path(fs_root: Path, win_path: str) -> Path:
    """`C:\\X\\y` -> `fs_root/C/X/y`, existing components matched case-insensitively;
    HostError for relative, UNC or malformed paths. Shared with `fleet lab state`."""
    text = win_path.replace("/", "\\").strip()
    match = re.match(r"^([A-Za-z]):(\\.*)?$", text)
    if not match:
        raise HostError(
            f"Cannot find path '{win_path}' because it is not an absolute path on a local drive."
        )
    parts: list[str] = []
    for comp in (match.group(2) or "").split("\\"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts:
                parts.pop()
            continue
        if _BAD_NAME.search(comp):
            raise HostError("The filename, directory name, or volume label syntax is incorrect.")
        parts.append(comp)
    cur = fs_root / match.group(1).upper()
    for comp in parts:
        real = cur / comp
        if not real.exists() and cur.is_dir():
            low = comp.lower()
            for child in cur.iterdir():
                if child.name.lower() == low:
                    real = child
                    break
        cur = real
    return cur


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: a new file is created 0600. The simulated disk
    holds private keys (tealeaf.crt, tealeaf.p12, the PFX copies): only the lab's user may
    read them, whatever the umask."""
    return os.open(path, flags, 0o600)


def private_dirs(path: Path) -> None:
    """mkdir -p where every folder made is 0700 (`Path.mkdir(parents=True)` would give the
    parents the umask's mode)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


@dataclass
class HostConfig:
    """What makes one simulated host different from another."""

    name: str
    role: str
    os: str = "2016"
    build: str = DEFAULT_BUILD
    install_dir: str = DEFAULT_INSTALL_DIR
    data_service_port: int = 0
    tms_port: int = 0
    search_port: int = 0  # Canisters: the Search Server (TLSearchServer)
    log_style: str = "dated"  # Data Service log naming: see LOG_STYLES


class LabHost:
    """One simulated Windows server (see module docstring)."""

    def __init__(
        self,
        root: Path,
        config: HostConfig,
        *,
        events: EventLog,
        username: str,
        password_file: Path,
        restart_s: float = 2.0,
        ps_startup_ms: int = 0,
        reboot_s: float | None = None,
    ) -> None:
        if config.os not in OS_TABLE:
            raise ValueError(f"unknown os {config.os!r}")
        if config.log_style not in LOG_STYLES:
            raise ValueError(f"unknown log style {config.log_style!r}")
        self.root = root
        self.config = config
        self.name = config.name
        self.role = config.role
        self.username = username
        self.restart_s = restart_s
        self.ps_startup_ms = ps_startup_ms
        self.reboot_s = reboot_s if reboot_s is not None else max(1.0, restart_s)
        self.data_service_port = config.data_service_port
        self.tms_port = config.tms_port
        self.search_port = config.search_port
        self._password_file = password_file
        self._password: str | None = None
        self._events = events
        self._fs = root / "fs"
        self._private = root / "private"
        self._down = False
        self._booted_at = time.time()  # LastBootUpTime: the lab's start, then each reboot
        self._tls12_at_boot = True  # SCHANNEL's TLS 1.2 server setting, read at boot (start)
        self._boot_registry: dict[tuple[str, str], Any] = {}  # statustool's values at boot
        self._ssl_stale = False  # fault ssl_cache_stale, until the cache is emptied
        self._app_events: list[dict[str, Any]] = []  # the Application event log, oldest first
        self._app_events_lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._applied_faults: set[str] = set()
        self._fault_file = FaultFile(root / "faults.json")
        self.registry = Registry(root / "registry.json", self._on_registry_change)
        self.services_mgr: ServiceManager | None = None
        self._ds: dataservice.Listener | None = None
        self._tms: dataservice.Listener | None = None
        self._search: dataservice.Listener | None = None
        self._ds_lock = threading.Lock()
        self._mutexes: dict[str, threading.Lock] = {}
        self._mutexes_guard = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._pending_shutdown: _PendingShutdown | None = None
        self._pending_armed = False
        self._ds_lock = threading.RLock()  # log_rolled may be noticed while a start writes
        self._started = False  # log_rolled waits for the first startup block
        # The log the Data Service holds open, and the write time its directory entry shows
        # meanwhile (see last_write_time_utc).
        self._open_log: tuple[Path, int] | None = None

    # ====================================================================== lifecycle =====
    def create(self, faults: dict[str, Any] | None = None) -> None:
        """Lay down a fresh, healthy host: folders, registry, services, install folder."""
        for sub in (self._fs / "C", self._private):
            private_dirs(sub)
        self._fault_file.write(dict(faults or {}))
        self.registry.load(self._initial_registry())
        inst = self.install_dir
        self._mkdirs(inst)
        self._mkdirs(inst + r"\Logs")
        self._mkdirs(r"C:\ProgramData\IBM\Tealeaf")
        if self.role != "rtv":
            stamp = f"tealeaf-fleet lab placeholder, Tealeaf build {self.config.build}\n"
            self._raw_write(inst + r"\Tools\TLSTool.exe", b"MZ TLSTool.exe " + stamp.encode())
            self._raw_write(inst + r"\Tools\openssl.exe", b"MZ openssl.exe " + stamp.encode())
        else:
            self._raw_write(inst + r"\RealiTea Viewer\RTV.exe", b"MZ RTV.exe lab placeholder\n")
        if self.role == "portal":
            self._raw_write(inst + "\\" + statustool.EXE, b"MZ TealeafStatus.exe placeholder\n")
        specs = services_for_role(self.role, inst)
        system_exes = ["shutdown.exe", "taskkill.exe"]
        if any(spec.name.lower() == IIS_SERVICE.lower() for spec in specs):
            system_exes.append("iisreset.exe")
        for exe in system_exes:
            self._raw_write(SYSTEM32 + "\\" + exe, b"MZ lab placeholder\n")
        for spec in specs:
            if spec.path.startswith('"'):
                # the file version Windows would read from the exe's version resource
                version = f"FileVersion: {self.config.build}\n".encode()
                self._raw_write(spec.path.strip('"'), b"MZ lab service placeholder\n" + version)
        self.services_mgr = ServiceManager(
            specs,
            self.root / "services.json",
            half_s=self.restart_s / 2,
            record=lambda n, s: self.record("service", name=n, state=s),
            on_start=self._service_started,
            on_stop=self._service_stopping,
            start_fails=lambda n: service_start_fails(self.faults(), n),
        )

    def start(self) -> None:
        """Bring up what runs at boot: the Data Service and TMS ports of running services."""
        self.faults()  # apply faults present at creation (e.g. data_service_23443)
        self._tls12_at_boot = self.tls12_server_on()
        self._boot_registry = statustool.snapshot(self)
        if self.data_service_port:
            self._ds = dataservice.Listener(
                self.data_service_port, "TeaLeaf Data Service", refuse_tls=self.tls_refused
            )
        if self.tms_port:
            self._tms = dataservice.Listener(
                self.tms_port, "TeaLeaf Management Server", refuse_tls=self.tls_refused
            )
        if self.search_port:
            self._search = dataservice.Listener(
                self.search_port, "TeaLeaf Search Server", refuse_tls=self.tls_refused
            )
        for svc in self.service_controllers():
            if svc.state == "Running":
                try:
                    self._service_started(svc.name)
                except HostError:
                    # e.g. EnableTLS=1 preset with no imported pair: the service fails at
                    # boot, as it would on Windows, instead of failing the whole lab.
                    assert self.services_mgr is not None
                    self.services_mgr.set_initial(svc.name, "Stopped")
                    self.record("service", name=svc.name, state="Stopped")
        self._started = True
        if self.faults().get("log_rolled"):
            self._roll_ds_logs()

    def shutdown(self) -> None:
        """Close every port for good and forget any scheduled restart (lab stop)."""
        with self._shutdown_lock:
            pending, self._pending_shutdown = self._pending_shutdown, None
        if pending is not None:
            pending.cancel.set()
        for listener in (self._ds, self._tms, self._search):
            if listener is not None:
                listener.close(final=True)

    def _initial_registry(self) -> dict[str, dict[str, Any]]:
        version, caption, ps = OS_TABLE[self.config.os]
        reg: dict[str, dict[str, Any]] = {
            r"HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion": {
                "ProductName": caption,
                "CurrentVersion": ".".join(version.split(".")[:2]),
                "CurrentBuildNumber": version.split(".")[2],
            },
            r"HKLM:\SOFTWARE\Microsoft\PowerShell\3\PowerShellEngine": {"PowerShellVersion": ps},
            r"HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName": {
                "ComputerName": self.name.upper()
            },
        }
        if self.role != "pca":
            reg[TEALEAF_KEY] = {"InstallDir": self.install_dir, "Version": self.config.build}
        for sub, values in DOTNET_SETUP[self.config.os].items():
            reg[f"{NDP_KEY}\\{sub}"] = dict(values)
        reg[FIPS_KEY] = {"Enabled": 0}  # present, 0, on Vista / 2008 and later
        if self.config.os == "2008r2":
            reg.update(self._schannel_healthy())
        return reg

    @staticmethod
    def _schannel_healthy() -> dict[str, dict[str, Any]]:
        return {
            SCHANNEL_KEY: {"SendTrustedIssuerList": 0},
            TLS12_SERVER_KEY: {"Enabled": 1, "DisabledByDefault": 0},
        }

    # ============================================================ identity and time =====
    @property
    def install_dir(self) -> str:
        """The Tealeaf install folder (Windows path), e.g. `D:\\Tealeaf`."""
        return self.config.install_dir

    @property
    def os_version(self) -> str:
        """Win32_OperatingSystem.Version, e.g. `6.1.7601` for 2008 R2."""
        return OS_TABLE[self.config.os][0]

    @property
    def os_caption(self) -> str:
        """Win32_OperatingSystem.Caption."""
        return OS_TABLE[self.config.os][1]

    @property
    def ps_version(self) -> str:
        """$PSVersionTable.PSVersion as text (`2.0`, `4.0`, `5.1`)."""
        return OS_TABLE[self.config.os][2]

    @property
    def language_mode(self) -> str:
        """`$ExecutionContext.SessionState.LanguageMode` of every powershell.exe here:
        ConstrainedLanguage under the `constrained_language` fault (an AppLocker or WDAC
        policy in force: about_Language_Modes), else FullLanguage. PowerShell 2.0 predates
        the AppLocker-enforced ConstrainedLanguage (introduced with 3.0), so the fault does
        not apply there."""
        if self.faults().get("constrained_language") and self.ps_version != "2.0":
            return "ConstrainedLanguage"
        return "FullLanguage"

    @property
    def build(self) -> str:
        """The Tealeaf build the registry reports (`Version`)."""
        return str(self.reg_get(TEALEAF_KEY, "Version") or "")

    def now_local(self) -> str:
        """Host-local time as `yyyy-MM-ddTHH:mm:ss`, the Data Service log's format, so op
        results compare with log lines."""
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())

    def now_utc(self) -> datetime:
        """[DateTime]::UtcNow: the host's clock (the lab's hosts share the machine's, shifted
        by the fault `clock_skew`, as a host whose time service is off drifts)."""
        skew = clock_skew_s(self.faults())
        return datetime.now(timezone.utc) + timedelta(seconds=skew)

    def last_boot(self) -> datetime:
        """Win32_OperatingSystem.LastBootUpTime (UTC): the lab's start or the last reboot."""
        return datetime.fromtimestamp(self._booted_at, timezone.utc)

    # =================================================================== ShellHost =====
    def password(self) -> str:
        """The lab's WinRM password (from the lab's 0600 credentials file)."""
        if self._password is None:
            self._password = self._password_file.read_text(encoding="utf-8").strip()
        return self._password

    def record(self, kind: str, **fields: Any) -> None:
        """Append one event (`ts` and `host` added). Callers never pass a password."""
        self._events.record(self.name, kind, **fields)

    def faults(self) -> dict[str, Any]:
        """Current faults.json (re-read when it changed); applies faults that change state
        (enable_tls_preset, schannel_tls12_missing, data_service_23443) when they appear."""
        data = self._fault_file.read()
        with self._fault_lock:
            active = set(data)
            added = active - self._applied_faults
            removed = self._applied_faults - active
            self._applied_faults = active
        if added or removed:
            self._apply_fault_changes(added, removed)
            self._apply_shutdown_fault(data.get("shutdown_scheduled"), added, removed)
        return data

    def consume_flaky(self) -> bool:
        """True when this request must fail (the `flaky` count is decremented on disk)."""
        return self._fault_file.consume_flaky()

    def set_faults(self, faults: dict[str, Any]) -> None:
        """Replace faults.json (tests and tools; editing the file works the same)."""
        self._fault_file.write(faults)
        self.faults()

    def is_down(self) -> bool:
        """True while rebooting or with the `unreachable` fault: the wire drops connections."""
        return self._down or bool(self.faults().get("unreachable"))

    def wants_stdin(self, command: str, args: list[str]) -> bool:
        """Whether the command reads stdin to its end first (our op bootstrap does)."""
        from tealeaf_fleet.lab import runner

        return runner.wants_stdin(command, args)

    def run_command(self, command: str, args: list[str], stdin: bytes) -> CommandResult:
        """Run a command as this host would (see lab/runner.py)."""
        from tealeaf_fleet.lab import runner

        return runner.run_command(self, command, args, stdin)

    def _apply_fault_changes(self, added: set[str], removed: set[str]) -> None:
        if "enable_tls_preset" in added:
            self.reg_set(TEALEAF_KEY, "EnableTLS", 1, "DWord")
        if "ssl_cache_stale" in added | removed:
            self._ssl_stale = "ssl_cache_stale" in added
        if "schannel_tls12_missing" in added:
            self.reg_delete(TLS12_SERVER_KEY)
        if "schannel_tls12_missing" in removed and self.config.os == "2008r2":
            for key, values in self._schannel_healthy().items():
                for name, value in values.items():
                    self.reg_set(key, name, value, "DWord")
        self._apply_fidelity_faults(added, removed)
        if "data_service_23443" in added | removed and self._ds is not None and self._ds.listening:
            # an administrator reconfigured the port and restarted the Data Service
            self._write_ds_block(self._ds.tls)
        if "log_rolled" in added and self._started:
            self._roll_ds_logs()

    def _apply_fidelity_faults(self, added: set[str], removed: set[str]) -> None:
        """fips, enable_tls_string, build_value_missing, service_start_pending, service_stopped
        (lab/faults.py)."""
        if "fips" in added | removed:
            self.reg_set(FIPS_KEY, "Enabled", 1 if "fips" in added else 0, "DWord")
        if "enable_tls_string" in added:
            self.reg_set(TEALEAF_KEY, "EnableTLS", enable_tls_text(self.faults()), "String")
        if "enable_tls_string" in removed:
            self.reg_delete(TEALEAF_KEY, "EnableTLS")
        if "build_value_missing" in added:
            self.reg_delete(TEALEAF_KEY, "Version")
        if "build_value_missing" in removed and self.role != "pca":
            self.reg_set(TEALEAF_KEY, "Version", self.config.build, "String")
        if "service_start_pending" in added:
            self._pending_armed = True
        if "service_start_pending" in removed:
            self._pending_armed = False
        if "service_stopped" in added and self.services_mgr is not None:
            name = stopped_service(self.faults(), self.role)
            if name is not None:
                self.services_mgr.crash(name)

    # ==================================================================== registry =====
    def reg_get(self, key: str, name: str) -> Any:
        """A value (int for DWORD, str for String) or None when the key or value is absent.
        Key paths as `HKLM:\\SOFTWARE\\...` (HKLM\\ and HKEY_LOCAL_MACHINE\\ accepted)."""
        return self.registry.get(key, name)

    def reg_set(self, key: str, name: str, value: Any, kind: str = "DWord") -> int | str:
        """Create the key as needed and set a value (`kind` DWord or String); returns the
        stored value. Records a `registry` event."""
        return self.registry.set(key, name, value, kind)

    def check_registry_write(self, key: str) -> None:
        """`RegistryKey.CreateSubKey` for writing: RegistryAccessDenied where the key's ACL
        refuses this account (`registry_write_denied`)."""
        if registry_write_denied(self.faults(), key):
            raise RegistryAccessDenied(key)

    def reg_delete(self, key: str, name: str | None = None) -> bool:
        """Delete a value, or the key and its subkeys when `name` is None."""
        return self.registry.delete(key, name)

    def reg_kind(self, key: str, name: str) -> str | None:
        """RegistryKey.GetValueKind as text ("DWord", "String"), None when absent; the hive
        implies the kind from the stored type."""
        value = self.reg_get(key, name)
        if value is None:
            return None
        return "DWord" if isinstance(value, int) else "String"

    def _on_registry_change(self, key: str, name: str, value: Any) -> None:
        shown = MASK if "password" in name.lower() and value is not None else value
        self.record("registry", key=key, name=name, value=shown)

    # ================================================================= file system =====
    def path(self, win_path: str) -> Path:
        """The real path behind a Windows path: `C:\\X\\y` -> `fs/C/X/y`, each existing
        component matched case-insensitively (like NTFS); `..` never leaves the drive."""
        return map_windows_path(self._fs, win_path)

    def exists(self, win_path: str) -> bool:
        """Test-Path."""
        return self.path(win_path).exists()

    def is_dir(self, win_path: str) -> bool:
        """Test-Path -PathType Container."""
        return self.path(win_path).is_dir()

    def listdir(self, win_path: str) -> list[str]:
        """Names in a folder (sorted); HostError when it is not a folder."""
        p = self.path(win_path)
        if not p.is_dir():
            raise HostError(f"Cannot find path '{win_path}' because it does not exist.")
        return sorted(child.name for child in p.iterdir())

    def read_file(self, win_path: str) -> bytes:
        """[IO.File]::ReadAllBytes / File.Open for reading; a file another process holds
        (`security_file_locked`) fails with Windows' sharing violation."""
        p = self.path(win_path)
        if not p.is_file():
            raise HostError(f"Could not find file '{win_path}'.")
        self._refuse_if_locked(win_path, p)
        return p.read_bytes()

    def _refuse_if_locked(self, win_path: str, real: Path) -> None:
        """A file another process holds without sharing (`security_file_locked`) cannot be
        opened, for reading or for writing (*pessimistic*: the holder shares neither)."""
        if self._locked(real):
            raise HostError(
                f"The process cannot access the file '{win_path}' because it is being used by "
                "another process."
            )

    def _locked(self, real: Path) -> bool:
        names = locked_files(self.faults())
        return any(self.path(SECURITY_DIR + "\\" + name) == real for name in names)

    def file_version(self, win_path: str) -> str | None:
        """FileVersionInfo.GetVersionInfo(path).FileVersion: the version the lab stamped into
        its placeholder executables, None for files without one; HostError
        (FileNotFoundException) when the file is absent."""
        p = self.path(win_path)
        if not p.is_file():
            raise HostError(f"Could not find file '{win_path}'.")
        match = _FILE_VERSION.search(p.read_bytes())
        if match is None:
            return None
        return (match.group(1) or match.group(2)).decode("ascii", "replace").strip()

    def last_write_time(self, win_path: str) -> str:
        """LastWriteTime of a FileInfo from a directory listing, host-local, as
        `yyyy-MM-ddTHH:mm:ss` (the log's format); see last_write_time_utc. A missing file
        reads as 1601-01-01 UTC in local time, as .NET documents
        (learn.microsoft.com/dotnet/api/system.io.filesysteminfo.lastwritetime)."""
        seconds = (self.last_write_time_utc(win_path) - _EPOCH_TICKS) // 10_000_000
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))

    def last_write_time_utc(self, win_path: str) -> int:
        """LastWriteTimeUtc.Ticks (100 ns since 0001-01-01 UTC) of a FileInfo from a directory
        listing (DirectoryInfo.GetFiles): what the scripts order files by. 1601-01-01 for a
        missing file. The listing reads the directory entry, which NTFS updates when a writer
        closes its handle: a log the Data Service holds open shows the time it had when the
        service opened it ("Why is the file size reported incorrectly for files that are still
        being written to?", devblogs.microsoft.com/oldnewthing/20111226-00/?p=8813; "the only
        guarantee about a file time stamp is that the file time is correctly reflected when the
        handle that makes the change is closed", learn.microsoft.com/windows/win32/sysinfo/
        file-times). The lab takes that stale reading."""
        p = self.path(win_path)
        if not p.is_file():
            return _TICKS_1601
        held = self._open_log
        ns = held[1] if held is not None and held[0] == p else p.stat().st_mtime_ns
        return ns // 100 + _EPOCH_TICKS

    def file_size(self, win_path: str) -> int | None:
        """Length of a file, None when absent."""
        p = self.path(win_path)
        return p.stat().st_size if p.is_file() else None

    def disk_space(self, drive: str) -> tuple[int, int]:
        """[IO.DriveInfo](DRIVE): (AvailableFreeSpace, TotalSize) in bytes: those of the
        machine's disk under the lab folder; no free space at all under `disk_full`."""
        if not re.fullmatch(r"[A-Za-z](:\\?)?", drive):
            raise HostError('Object must be a root directory ("C:\\") or a drive letter ("C").')
        usage = shutil.disk_usage(self._fs)
        free = 0 if self.faults().get("disk_full") else usage.free
        return free, usage.total

    def write_file(self, win_path: str, data: bytes, *, make_parents: bool = True) -> None:
        """Write a whole file (missing folders created unless `make_parents` is False).
        `disk_full` makes it fail like Windows; records a `file` event (op write)."""
        if self.faults().get("disk_full"):
            raise DiskFull()
        p = self.path(win_path)
        if p.is_dir():
            raise HostError(f"Access to the path '{win_path}' is denied.")
        if not make_parents and not p.parent.is_dir():
            raise HostError(f"Could not find a part of the path '{win_path}'.")
        self._refuse_if_locked(win_path, p)
        self._raw_write(win_path, data)
        self.record("file", path=win_path, op="write", size=len(data))

    def append_file(self, win_path: str, data: bytes) -> int:
        """Append to a file (created when absent; its folder must exist); returns the new size.
        Honours `disk_full`; records a `file` event (op append)."""
        if self.faults().get("disk_full"):
            raise DiskFull()
        p = self.path(win_path)
        if not p.parent.is_dir():
            raise HostError(f"Could not find a part of the path '{win_path}'.")
        with open(p, "ab", opener=private_opener) as fh:
            fh.write(data)
        size = p.stat().st_size
        self.record("file", path=win_path, op="append", size=size)
        return size

    def delete_file(self, win_path: str) -> bool:
        """[IO.File]::Delete; True when it existed. AccessDenied on a read-only file. Records a
        `file` event (op delete)."""
        p = self.path(win_path)
        if not p.is_file():
            return False
        self._refuse_read_only(win_path)
        p.unlink()
        self.record("file", path=win_path, op="delete")
        return True

    def move_file(self, src: str, dst: str) -> None:
        """Move-Item -Force (replaces dst; AccessDenied when dst is read-only). Records a `file`
        event (op move)."""
        ps, pd = self.path(src), self.path(dst)
        if not ps.is_file():
            raise HostError(f"Cannot find path '{src}' because it does not exist.")
        if pd.is_file():
            self._refuse_read_only(dst)
        pd.parent.mkdir(parents=True, exist_ok=True)
        os.replace(ps, pd)
        self.record("file", path=dst, op="move", source=src)

    def replace_file(self, src: str, dst: str) -> None:
        """[IO.File]::Replace(src, dst, null), i.e. Win32 ReplaceFile without a backup: dst takes
        src's content in one rename, so dst is never missing; src is gone afterwards. Windows
        refuses a missing file, a read-only one (AccessDenied, .NET's
        UnauthorizedAccessException) and files on different volumes
        (learn.microsoft.com/dotnet/api/system.io.file.replace). Records one `file` event
        (op replace)."""
        ps, pd = self.path(src), self.path(dst)
        for win_path, real in ((src, ps), (dst, pd)):
            if real.is_dir():
                raise AccessDenied(win_path)
            if not real.is_file():
                raise HostError(f"Could not find file '{win_path}'.")
            self._refuse_read_only(win_path)
        if ntpath.splitdrive(src)[0].lower() != ntpath.splitdrive(dst)[0].lower():
            raise HostError("The system cannot move the file to a different disk drive.")
        os.replace(ps, pd)
        self.record("file", path=dst, op="replace", source=src)

    def is_read_only(self, win_path: str) -> bool:
        """The file's ReadOnly attribute ([IO.File]::GetAttributes), kept as its write bit."""
        p = self.path(win_path)
        return p.is_file() and not p.stat().st_mode & stat.S_IWUSR

    def set_read_only(self, win_path: str, read_only: bool) -> None:
        """[IO.File]::SetAttributes with ReadOnly set or cleared (a file copied from a CD is
        read-only). Records a `file` event (op attributes)."""
        p = self.path(win_path)
        if not p.is_file():
            raise HostError(f"Could not find file '{win_path}'.")
        mode = p.stat().st_mode
        p.chmod(mode & ~0o222 if read_only else mode | stat.S_IWUSR)
        self.record("file", path=win_path, op="attributes", read_only=read_only)

    def _refuse_read_only(self, win_path: str) -> None:
        # Checked here, not left to the OS: the lab may run as root, which ignores the bit.
        if self.is_read_only(win_path):
            raise AccessDenied(win_path)

    def mkdir(self, win_path: str) -> None:
        """New-Item -ItemType Directory -Force (parents too); `disk_full` applies."""
        if self.path(win_path).is_dir():
            return
        if self.faults().get("disk_full"):
            raise DiskFull()
        self._mkdirs(win_path)
        self.record("file", path=win_path, op="mkdir")

    def _mkdirs(self, win_path: str) -> None:
        private_dirs(self.path(win_path))

    def _raw_write(self, win_path: str, data: bytes) -> None:
        p = self.path(win_path)
        private_dirs(p.parent)
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "xb", opener=private_opener) as fh:
            fh.write(data)
        os.replace(tmp, p)

    # ==================================================================== services =====
    def services(self) -> list[ServiceInfo]:
        """Every service as `Get-WmiObject Win32_Service` shows it: name, display_name, state
        (spaced: "Start Pending"), start_mode, path, depends_on. Copies: changing them changes
        nothing. An armed `service_start_pending` fault fires here (the next look)."""
        assert self.services_mgr is not None
        if self._pending_armed:
            self._pending_armed = False
            self._start_pending()
        out = self.services_mgr.list()
        for svc in out:
            svc.state = wmi_state(svc.state)
        return out

    def service_controllers(self) -> list[ServiceInfo]:
        """Every service as ServiceController shows it (state "StartPending", no space)."""
        assert self.services_mgr is not None
        return self.services_mgr.list()

    def service(self, name: str) -> ServiceInfo:
        """One service by name (case-insensitive), as `New-Object ServiceController NAME`
        shows it; HostError when there is none."""
        assert self.services_mgr is not None
        return self.services_mgr.get(name)

    def _start_pending(self) -> None:
        assert self.services_mgr is not None
        wanted, seconds = start_pending(self.faults())
        if wanted is None:
            running = sorted(
                (
                    s
                    for s in self.services_mgr.list()
                    if s.state == "Running"
                    and (
                        s.name.lower().startswith("tealeaf")
                        or s.display_name.lower().startswith("tealeaf")
                    )
                ),
                # the Data Service and TMS last: their ports stay open while "starting"
                key=lambda s: (s.name in (DATA_SERVICE, TMS_SERVICE), s.name.lower()),
            )
            if not running:
                return
            wanted = running[0].name
        self.services_mgr.start_pending_for(wanted, seconds)

    def stop_service(self, name: str) -> None:
        """Stop-Service: blocks restart_s/2 (StopPending then Stopped); refuses while a
        dependent runs; no-op when already stopped."""
        assert self.services_mgr is not None
        self.services_mgr.stop(name)

    def start_service(self, name: str) -> None:
        """Start-Service: starts stopped dependencies first, then blocks restart_s/2
        (StartPending then Running). HostError when `service_start_fails` applies or the
        service fails its own start-up; it then ends Stopped."""
        assert self.services_mgr is not None
        self.services_mgr.start(name)

    def iisreset(self) -> tuple[int, str]:
        """iisreset.exe: restarts W3SVC (takes restart_s); (exit code, console output)."""
        names = {s.name.lower() for s in self.services()}
        if IIS_SERVICE.lower() not in names:
            return 1, (
                "'iisreset' is not recognized as an internal or external command,\r\n"
                "operable program or batch file.\r\n"
            )
        self.record("iisreset")
        out = "Attempting stop...\r\n"
        self.stop_service(IIS_SERVICE)
        out += "Internet services successfully stopped\r\nAttempting start...\r\n"
        try:
            self.start_service(IIS_SERVICE)
        except HostError:
            return (
                1,
                out + "Restart attempt failed.\r\nThe IIS Admin Service or the World Wide "
                "Web Publishing Service, or a service dependent on them failed to start.\r\n",
            )
        return 0, out + "Internet services successfully restarted\r\n"

    def reboot(self, delay_s: float = 0.0) -> None:
        """A restart `delay_s` ahead (shutdown.exe /r /t N): returns at once; after `delay_s`
        every service stops, the host is unreachable (`is_down()`) for reboot_s, then comes
        back and starts its automatic services (StartPending is visible to whoever looks).
        HostError when a shutdown is already scheduled (Windows allows one at a time)."""
        if not self._schedule_shutdown(delay_s, by="shutdown.exe", abortable=True):
            raise HostError(SHUTDOWN_SCHEDULED.strip())

    def pending_shutdown(self) -> dict[str, Any] | None:
        """The scheduled restart not yet begun: {by, in_s, abortable}, or None."""
        with self._shutdown_lock:
            pending = self._pending_shutdown
        if pending is None:
            return None
        return {
            "by": pending.by,
            "in_s": max(0.0, pending.due - time.monotonic()),
            "abortable": pending.abortable,
        }

    def shutdown_exe(self, argv: list[str]) -> tuple[int, str]:
        """shutdown.exe: `/r ... /t N` schedules a restart N seconds ahead (30 without /t) and
        exits 1190 (ERROR_SHUTDOWN_IS_SCHEDULED) while another is scheduled; `/a` aborts the
        scheduled one, or exits 1116 when there is none it can abort.
        https://learn.microsoft.com/windows-server/administration/windows-commands/shutdown"""
        flags = [a.lower() for a in argv]
        if "/a" in flags:
            with self._shutdown_lock:
                pending = self._pending_shutdown
                if pending is None or not pending.abortable:
                    return 1116, NO_SHUTDOWN
                self._pending_shutdown = None
            pending.cancel.set()
            self.record("reboot", state="aborted", by=pending.by)
            return 0, ""
        if "/r" in flags:
            at = flags.index("/t") + 1 if "/t" in flags else 0
            try:
                delay = float(argv[at]) if at else 30.0
            except (IndexError, ValueError):
                return 87, "The parameter is incorrect.(87)\r\n"
            if not self._schedule_shutdown(delay, by="shutdown.exe", abortable=True):
                return 1190, SHUTDOWN_SCHEDULED
            return 0, ""
        return 87, "The parameter is incorrect.(87)\r\n"

    def _schedule_shutdown(self, delay_s: float, *, by: str, abortable: bool) -> bool:
        """Schedule the restart unless one is pending (False then)."""
        pending = _PendingShutdown(by, time.monotonic() + delay_s, abortable, threading.Event())
        with self._shutdown_lock:
            if self._pending_shutdown is not None:
                return False
            self._pending_shutdown = pending
        self.record("reboot", state="scheduled", delay_s=delay_s, by=by)

        def run() -> None:
            if pending.cancel.wait(delay_s):
                return  # aborted (shutdown.exe /a) or the lab stopped
            with self._shutdown_lock:
                if self._pending_shutdown is not pending:
                    return
                self._pending_shutdown = None
            self._down = True
            self.record("reboot", state="down")
            assert self.services_mgr is not None
            self.services_mgr.stop_all()
            time.sleep(self.reboot_s)
            self._down = False
            self._booted_at = time.time()
            self._tls12_at_boot = self.tls12_server_on()
            self._boot_registry = statustool.snapshot(self)
            self._ssl_stale = False  # the SChannel session cache lives in memory
            self.record("reboot", state="up")
            self.services_mgr.start_automatic()

        threading.Thread(target=run, name=f"reboot-{self.name}", daemon=True).start()
        return True

    def _apply_shutdown_fault(self, value: Any, added: set[str], removed: set[str]) -> None:
        """`shutdown_scheduled` (true or {"in_s": N, "abortable": bool}): someone else
        scheduled a restart N seconds ahead (default ten minutes); it happens then unless
        aborted. Removing the fault aborts it if it is still pending."""
        if "shutdown_scheduled" in added:
            spec = value if isinstance(value, dict) else {}
            self._schedule_shutdown(
                float(spec.get("in_s", OTHER_SHUTDOWN_IN_S)),
                by="another administrator",
                abortable=bool(spec.get("abortable", True)),
            )
        if "shutdown_scheduled" in removed:
            with self._shutdown_lock:
                pending = self._pending_shutdown
                if pending is None or pending.by != "another administrator":
                    return
                self._pending_shutdown = None
            pending.cancel.set()
            self.record("reboot", state="aborted", by=pending.by)

    # ============================================================== native processes =====
    def start_native(self, exe: str, command_line: str, *, cwd: str) -> native.NativeProcess:
        """Process.Start of `exe` with `command_line` in `cwd`, stdin closed (lab/native.py).
        HostError, as Process.Start's Win32Exception, when the exe or the folder is missing
        or the lab has no emulation of that exe."""
        if not self.path(exe).is_file():
            raise HostError("The system cannot find the file specified")
        if not self.is_dir(cwd):
            raise HostError("The directory name is invalid")
        argv = native.parse_command_line(command_line)
        name = ntpath.basename(exe)
        children: list[str] = []
        program: native.Program
        if name.lower() == "tlstool.exe":
            if argv and argv[0].lower() in ("create", "import"):
                children = ["openssl.exe"]
            program = lambda: self.tlstool(argv, cwd)  # noqa: E731
        elif name.lower() == "iisreset.exe":
            program = self.iisreset
        elif name.lower() == "shutdown.exe":
            program = lambda: self.shutdown_exe(argv)  # noqa: E731
        elif name.lower() == "tealeafstatus.exe":
            program = lambda: statustool.run(self, argv, dict(self._boot_registry))  # noqa: E731
        else:
            raise HostError(f"{name} is not a valid Win32 application")
        hangs = native.hang_target(self.faults(), [name, *children])
        return native.NativeProcess(self, name, program, children=children, hangs=hangs)

    # ============================================================== named objects =====
    def open_mutex(self, name: str) -> threading.Lock:
        """`New-Object Threading.Mutex $false, NAME`: the host-wide named mutex, created on first
        open and shared by every op on this host. AccessDenied when the mutex exists with a
        DACL that does not admit this account (fault `restart_mutex_denied`)."""
        if mutex_denied(self.faults(), name):
            raise AccessDenied(name)
        with self._mutexes_guard:
            return self._mutexes.setdefault(name, threading.Lock())

    # ============================================================== cryptography =====
    def fips_policy(self) -> bool:
        """The FIPS policy as .NET reads it: FipsAlgorithmPolicy Enabled non-zero."""
        value = self.reg_get(FIPS_KEY, "Enabled")
        return isinstance(value, int) and value != 0

    def load_assembly(self, name: str) -> bool:
        """Add-Type -AssemblyName NAME. System.ServiceProcess ships with every .NET; System.Core
        only with .NET 3.5 (a feature 2008 R2 leaves uninstalled by default) or 4.x, as the
        NDP setup keys record (learn.microsoft.com/dotnet/framework/install/how-to-determine-
        which-versions-are-installed)."""
        if name == "System.ServiceProcess":
            return True
        if name != "System.Core":
            return False
        return any(
            self.reg_get(f"{NDP_KEY}\\{sub}", "Install") == 1 for sub in ("v3.5", "v4\\Full")
        )

    def sha256_create_class(self) -> str:
        """The class [SHA256]::Create() returns: SHA256Managed on CLR 2, and (pessimistically,
        since older CLR 4 builds do too) on every PowerShell version."""
        return "SHA256Managed"

    def create_hash(self, class_name: str) -> Any:
        """`New-Object CLASS` of a SHA-256 class: a hashlib object, or HostError with the
        InvalidOperationException text when the FIPS policy refuses a managed class."""
        import hashlib

        if class_name in MANAGED_HASHES and self.fips_policy():
            raise HostError(FIPS_REFUSAL)
        return hashlib.sha256()

    # ===================================================================== TLSTool =====
    def tlstool(self, args: list[str], cwd: str | None = None) -> tuple[int, str]:
        """Run the emulated `TLSTool.exe ARGS` in `cwd` (default `<install>\\Tools`):
        (exit code, console output). The output never contains the password."""
        return tlstool.run(self, list(args), cwd or self.install_dir + r"\Tools")

    # ============================================================ simulated daemons =====
    def _service_started(self, name: str) -> None:
        if name.lower() == DATA_SERVICE.lower() and self._ds is not None:
            self._start_data_service()
        elif name.lower() == TMS_SERVICE.lower() and self._tms is not None:
            self._start_tms()
        elif name.lower() == SEARCH_SERVICE.lower() and self._search is not None:
            self._start_search()
        elif (
            name.lower() == RULES_SERVICE.lower()
            and self.reg_get(SECURITY_KEY, "TLSCertPassword") is None
        ):
            # the vendor's known issue: harmless, but logged at every start of the Rules Engine
            self.write_event("TeaLeaf Rules", "Error", 0, RULES_KEY_ERROR)
        elif name.lower() == CRYPTO_SERVICE.lower() and self._started:
            self.ssl_empty_cache(by=CRYPTO_SERVICE)  # a restart, not the first start at boot

    def _service_stopping(self, name: str) -> None:
        if name.lower() == DATA_SERVICE.lower() and self._ds is not None:
            self._ds.close()
            self._open_log = None  # its log handle closes: the directory entry catches up
        elif name.lower() == TMS_SERVICE.lower() and self._tms is not None:
            self._tms.close()
        elif name.lower() == SEARCH_SERVICE.lower() and self._search is not None:
            self._search.close()

    def write_event(self, source: str, entry_type: str, event_id: int, message: str) -> None:
        """An entry in the Application event log (EventLog.WriteEntry; `eventcreate`)."""
        entry = {
            "time": self.now_local(),
            "source": source,
            "entry_type": entry_type,
            "event_id": event_id,
            "message": message,
        }
        with self._app_events_lock:
            self._app_events.append(entry)
        self.record("eventlog", source=source, entry_type=entry_type)

    def application_events(self) -> list[dict[str, Any]]:
        """The Application event log's entries, oldest first (EventLog.Entries)."""
        with self._app_events_lock:
            return [dict(e) for e in self._app_events]

    def tls_refused(self) -> bool:
        """Whether the TLS listeners refuse handshakes now (fault ssl_cache_stale)."""
        self.faults()  # a fault set since the last request applies from now
        return self._ssl_stale

    def ssl_empty_cache(self, *, by: str = "SslEmptyCache") -> bool:
        """SslEmptyCache(NULL, 0): every SChannel session cache entry is dropped; True."""
        was, self._ssl_stale = self._ssl_stale, False
        if was or by == "SslEmptyCache":
            self.record("ssl_cache", state="cleared", by=by)
        return True

    def tls12_server_on(self) -> bool:
        """SCHANNEL's TLS 1.2 server protocol as the registry says now: on 2008 R2 only with
        `Enabled` non-zero and `DisabledByDefault` 0 present; from 2012 on unless switched off
        (learn.microsoft.com/windows-server/security/tls/tls-registry-settings)."""
        enabled = self.reg_get(TLS12_SERVER_KEY, "Enabled")
        disabled = self.reg_get(TLS12_SERVER_KEY, "DisabledByDefault")
        if self.config.os == "2008r2":
            return isinstance(enabled, int) and enabled != 0 and disabled == 0
        return enabled != 0 and disabled != 1

    def tls12_at_boot(self) -> bool:
        """The TLS 1.2 server setting SCHANNEL read at the last boot: what TLS servers on this
        host can negotiate until the next one, whatever the registry says meanwhile."""
        return self._tls12_at_boot

    def _server_context(self, cert: Any, key: Any) -> Any:
        """A TLS listener's context: without TLS 1.2 at boot, only TLS 1.0/1.1 are offered,
        which the controller's TLS 1.2 handshake refuses."""
        ctx = dataservice.context_from_objects(cert, key, self._private)
        if not self._tls12_at_boot:
            dataservice.without_tls12(ctx)
        return ctx

    def tls_enabled(self) -> bool:
        """EnableTLS == 1, as the services read it when they start."""
        value = self.reg_get(TEALEAF_KEY, "EnableTLS")
        return isinstance(value, int) and value == 1

    def imported_pair(self) -> tuple[Any, Any]:
        """(certificate, private key) from tealeaf.p12, opened with the opaque registry value
        TLSTool wrote at import; HostError when absent or unreadable."""
        from cryptography.hazmat.primitives.serialization import pkcs12

        token = self.reg_get(SECURITY_KEY, "TLSCertPassword")
        p12 = self.path(SECURITY_DIR + r"\tealeaf.p12")
        if not p12.is_file() or not isinstance(token, str):
            raise HostError(
                "the TLS certificate pair is not imported (tealeaf.p12 or TLSCertPassword missing)"
            )
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(p12.read_bytes(), token.encode())
        except ValueError:
            raise HostError("tealeaf.p12 cannot be opened with the registered key") from None
        if key is None or cert is None:
            raise HostError("tealeaf.p12 holds no certificate and key")
        return cert, key

    def _start_data_service(self) -> None:
        assert self._ds is not None
        with self._ds_lock:
            tls = self.tls_enabled()
            ctx = None
            if tls:
                cert, key = self.imported_pair()
                ctx = self._server_context(cert, key)
            self._ds.open(ctx)
            self._write_ds_block(tls)

    def _write_ds_block(self, tls: bool) -> None:
        port = 23443 if self.faults().get("data_service_23443") else self.data_service_port
        stamp = self.now_local()
        lines = [
            f"{stamp} Service.Start INFO Starting HTTP Server",
            f"{stamp} Service.Start INFO {'TLS Port' if tls else 'Port'}: {port}",
            f"{stamp} Service.Start INFO HTTP Server Started",
        ]
        data = ("\r\n".join(lines) + "\r\n").encode("ascii")
        log = self._current_ds_log()
        p = self.path(log)
        shown = p.stat().st_mtime_ns if p.is_file() else None
        self._write_log(log, data, None)
        # the service (re)opened its log: the directory entry keeps the time it had then
        self._open_log = (p, shown if shown is not None else p.stat().st_mtime_ns)

    def _ds_log(self, day: str | None = None) -> str:
        """The Data Service log of `day` (yyyymmdd), or the live file (day None)."""
        name = "TLDataService.log" if day is None else f"TLDataService_{day}.log"
        return f"{self.install_dir}\\Logs\\{name}"

    def _current_ds_log(self) -> str:
        """The file the Data Service writes to now. `live`: TLDataService.log, first renamed
        to its own day's dated name when that day is over (the vendor rolls at midnight; the
        lab rolls at the next write, which readers cannot tell apart)."""
        today = self.now_local()[:10].replace("-", "")
        if self.config.log_style == "dated":
            return self._ds_log(today)
        live = self._ds_log()
        if self.path(live).is_file():  # the service knows its file's day: the real write time
            day = time.strftime("%Y%m%d", time.localtime(self.path(live).stat().st_mtime))
            if day != today:
                self._move_log(live, self._ds_log(day))
        return live

    def _move_log(self, src: str, dst: str) -> None:
        """Rename a log keeping its LastWriteTime (a rename does not write); onto an existing
        file, the text is appended and the older time kept."""
        ps, pd = self.path(src), self.path(dst)
        mtime_ns = ps.stat().st_mtime_ns
        if pd.exists():
            with open(pd, "ab") as fh:
                fh.write(ps.read_bytes())
            ps.unlink()
        else:
            os.replace(ps, pd)
        os.utime(pd, ns=(mtime_ns, mtime_ns))
        self.record("file", path=dst, op="move", source=src)

    def _roll_ds_logs(self) -> None:
        """Fault `log_rolled`: make the Data Service log look as after days of running. The
        text of the current file (its startup blocks) moves, re-dated, into the file of two
        days ago, which with yesterday's file ends in ordinary request lines written just
        before midnight; the current file (today's, or the live one) then holds only request
        lines. Later starts append their block to the current file, as the service would."""
        with self._ds_lock:
            current = self._current_ds_log()
            p = self.path(current)
            if not p.is_file():
                return
            text = p.read_bytes()
            now = datetime.now()  # naive local: timestamp() applies that day's DST rule
            for back in (2, 1):
                day = (now - timedelta(days=back)).replace(hour=23, minute=59, second=50)
                stamp = day.strftime("%Y-%m-%dT%H:%M:%S")
                older = self._ds_log(day.strftime("%Y%m%d"))
                body = _LOG_STAMP.sub(stamp[:10].encode(), text) if back == 2 else b""
                self._write_log(older, body + _request_lines(stamp), day.timestamp())
            self._write_log(current, _request_lines(self.now_local()), None, replace=True)
            if self._open_log is not None:
                self._open_log = (p, p.stat().st_mtime_ns)

    def _write_log(
        self, log: str, data: bytes, mtime: float | None, *, replace: bool = False
    ) -> None:
        """Append (or replace) log text; `mtime` (epoch seconds) sets its LastWriteTime."""
        p = self.path(log)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb" if replace else "ab") as fh:
            fh.write(data)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        self.record("file", path=log, op="write" if replace else "append", size=p.stat().st_size)

    def _start_tms(self) -> None:
        assert self._tms is not None
        if self.tls_enabled():
            cert, key = self.imported_pair()
        else:
            cert, key = dataservice.legacy_tms_pem(self._private / "tms-legacy.pem")
        self._tms.open(self._server_context(cert, key))

    def _start_search(self) -> None:
        """The Search Server listens like the Data Service: with the imported pair when
        EnableTLS is 1 at its start, plainly otherwise."""
        assert self._search is not None
        ctx = None
        if self.tls_enabled():
            cert, key = self.imported_pair()
            ctx = self._server_context(cert, key)
        self._search.open(ctx)

    def data_service_mode(self) -> str | None:
        """'tls' / 'plain' while the Data Service listens, else None (for `lab state`)."""
        if self._ds is None or not self._ds.listening:
            return None
        return "tls" if self._ds.tls else "plain"


@dataclass
class _PendingShutdown:
    """A restart scheduled with shutdown.exe /r (or by someone else) that has not begun."""

    by: str
    due: float  # time.monotonic()
    abortable: bool
    cancel: threading.Event


def _request_lines(stamp: str) -> bytes:
    """Lines the Data Service writes while it serves (their wording is not documented; the
    lab only needs lines that are not a startup block, one of them naming a client's port)."""
    lines = [
        f"{stamp} Service.Request INFO GET /sessions from 10.0.0.21 Port: 50912",
        f"{stamp} Service.Request INFO 200 OK 14 ms",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
