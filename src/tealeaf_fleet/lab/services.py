"""Simulated Windows services: states, start modes, dependencies and the time they take.

Real TeaLeaf service names are unconfirmed (docs/vendor-procedure.md "Confirmed and
assumed"), so the lab uses plausible ones and deliberately includes the awkward cases the tool
must survive: a service whose Name does not start with "TeaLeaf" but whose DisplayName does, a
stopped Manual service that must stay stopped, and dependencies (stop dependents first, like
the SCM without -Force).

Timing (docs/architecture.md "Lab files (fixed shapes)"): a stop takes restart_s/2, a start
restart_s/2, and calls from different threads overlap, so one host's services may stop and
start concurrently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tealeaf_fleet.lab.events import write_json_atomic
from tealeaf_fleet.lab.hosterror import HostError

STATES = ("Stopped", "StartPending", "Running", "StopPending")
# Win32_Service.State spells the pending states with a space, ServiceControllerStatus without
# (learn.microsoft.com/windows/win32/cimwin32prov/win32-service,
# learn.microsoft.com/dotnet/api/system.serviceprocess.servicecontrollerstatus). The manager
# keeps the ServiceController form; `wmi_state` gives what Get-WmiObject Win32_Service shows.
_WMI_STATES = {
    "StartPending": "Start Pending",
    "StopPending": "Stop Pending",
    "ContinuePending": "Continue Pending",
    "PausePending": "Pause Pending",
}

DATA_SERVICE = "TeaLeafDataService"
TMS_SERVICE = "TeaLeafTMS"
SEARCH_SERVICE = "TLSearchServer"
IIS_SERVICE = "W3SVC"
CRYPTO_SERVICE = "CryptSvc"  # Cryptographic Services


class ServiceError(HostError):
    """What Stop-Service / Start-Service would report; the message is the cmdlet's."""


@dataclass
class ServiceInfo:
    """One service as `Get-WmiObject Win32_Service` shows it (path = PathName, quoted)."""

    name: str
    display_name: str
    state: str
    start_mode: str  # Auto | Manual | Disabled
    path: str
    depends_on: list[str] = field(default_factory=list)


# (name, display name, exe relative to the install folder, start mode, initial state, deps)
_COMMON = [
    (TMS_SERVICE, "TeaLeaf Management Server", r"bin\TMS.exe", "Auto", "Running", []),
    (
        DATA_SERVICE,
        "TeaLeaf Data Service",
        r"bin\TLDataService.exe",
        "Auto",
        "Running",
        [TMS_SERVICE],
    ),
]
# hbr, canister and "other" hosts all run the same Transport Service
_TRANSPORT = (
    "TeaLeafTransportService",
    "TeaLeaf Transport Service",
    r"bin\TLTransport.exe",
    "Auto",
    "Running",
    [TMS_SERVICE],
)
_ROLE_SERVICES = {
    "portal": [
        (
            "TeaLeafPortalStatus",
            "TeaLeaf Portal Status",
            r"bin\PortalStatus.exe",
            "Auto",
            "Running",
            [TMS_SERVICE],
        ),
        (
            "TeaLeafReportingService",
            "TeaLeaf Reporting Service",
            r"bin\TLReporting.exe",
            "Auto",
            "Running",
            [DATA_SERVICE],
        ),
    ],
    "hbr": [
        _TRANSPORT,
        (
            "TeaLeafHBR",
            "TeaLeaf Health Based Routing",
            r"bin\HBR.exe",
            "Auto",
            "Running",
            ["TeaLeafTransportService"],
        ),
        (
            "TeaLeafRulesEngine",
            "TeaLeaf Rules Engine",
            r"bin\TLRules.exe",
            "Auto",
            "Running",
            ["TeaLeafTransportService"],
        ),
    ],
    "canister": [
        _TRANSPORT,
        (
            "TeaLeafCanister",
            "TeaLeaf Canister",
            r"bin\Canister.exe",
            "Auto",
            "Running",
            ["TeaLeafTransportService"],
        ),
        (
            SEARCH_SERVICE,
            "TeaLeaf Search Server",
            r"bin\TLSearchServer.exe",
            "Auto",
            "Running",
            ["TeaLeafCanister"],
        ),
        (
            "TeaLeafSnapshotService",
            "TeaLeaf Snapshot Service",
            r"bin\TLSnapshot.exe",
            "Manual",
            "Stopped",
            [],
        ),
    ],
    "report": [
        (
            "TeaLeafReportServer",
            "TeaLeaf Report Server",
            r"bin\TLReportServer.exe",
            "Auto",
            "Running",
            [DATA_SERVICE],
        ),
        ("TeaLeafCXConnect", "TeaLeaf cxConnect", r"bin\cxConnect.exe", "Manual", "Stopped", []),
    ],
    "other": [
        _TRANSPORT,
    ],
}
_WINDOWS = [
    (
        "WinRM",
        "Windows Remote Management (WS-Management)",
        r"C:\Windows\System32\svchost.exe -k NetworkService",
        "Auto",
        "Running",
        [],
    ),
    ("Spooler", "Print Spooler", r"C:\Windows\System32\spoolsv.exe", "Auto", "Running", []),
    (
        CRYPTO_SERVICE,
        "Cryptographic Services",
        r"C:\Windows\system32\svchost.exe -k NetworkService",
        "Auto",
        "Running",
        [],
    ),
]
_IIS = [
    (
        "WAS",
        "Windows Process Activation Service",
        r"C:\Windows\system32\svchost.exe -k iissvcs",
        "Manual",
        "Running",
        [],
    ),
    (
        IIS_SERVICE,
        "World Wide Web Publishing Service",
        r"C:\Windows\system32\svchost.exe -k iissvcs",
        "Auto",
        "Running",
        ["WAS"],
    ),
]


def services_for_role(role: str, install_dir: str) -> list[ServiceInfo]:
    """The initial services of a host of `role` (RTV and PCA hosts: no TeaLeaf services)."""
    rows = list(_WINDOWS)
    if role in _ROLE_SERVICES:
        rows += _COMMON + _ROLE_SERVICES[role]
    if role == "portal":
        rows += _IIS
    out = []
    for name, display, exe, mode, state, deps in rows:
        path = exe if exe.startswith("C:\\Windows") else f'"{install_dir.rstrip(chr(92))}\\{exe}"'
        out.append(ServiceInfo(name, display, state, mode, path, list(deps)))
    return out


def wmi_state(state: str) -> str:
    """A ServiceController status as Win32_Service.State spells it ("Start Pending")."""
    return _WMI_STATES.get(state, state)


Hook = Callable[[str], None]


class ServiceManager:
    """Holds one host's services and moves them through their states.

    `on_start(name)` runs at the end of StartPending (e.g. the Data Service binds its port; an
    exception there makes the start fail), `on_stop(name)` at the start of StopPending (the
    port closes at once). `record(name, state)` reports every transition.
    """

    def __init__(
        self,
        services: list[ServiceInfo],
        state_file: Path,
        *,
        half_s: float,
        record: Callable[[str, str], None],
        on_start: Hook,
        on_stop: Hook,
        start_fails: Callable[[str], bool],
    ) -> None:
        self._services = {s.name.lower(): s for s in services}
        self._state_file = state_file
        self.half_s = half_s
        self._record = record
        self._on_start = on_start
        self._on_stop = on_stop
        self._start_fails = start_fails
        self._cond = threading.Condition()
        self._save()

    # -- queries ---------------------------------------------------------------------------
    def list(self) -> list[ServiceInfo]:
        with self._cond:
            return [ServiceInfo(**asdict(s)) for s in self._services.values()]

    def get(self, name: str) -> ServiceInfo:
        with self._cond:
            return ServiceInfo(**asdict(self._lookup(name)))

    def _lookup(self, name: str) -> ServiceInfo:
        svc = self._services.get(name.lower())
        if svc is None:
            raise ServiceError(f"Cannot find any service with service name '{name}'.")
        return svc

    def _dependents(self, svc: ServiceInfo) -> list[ServiceInfo]:
        return [
            s
            for s in self._services.values()
            if svc.name.lower() in {d.lower() for d in s.depends_on}
        ]

    # -- transitions -----------------------------------------------------------------------
    def _set(self, svc: ServiceInfo, state: str) -> None:
        svc.state = state
        self._save()
        self._cond.notify_all()
        self._record(svc.name, state)

    def _save(self) -> None:
        write_json_atomic(self._state_file, [asdict(s) for s in self._services.values()])

    def stop(self, name: str) -> None:
        """Stop-Service without -Force: refuses while a dependent service still runs."""
        with self._cond:
            svc = self._lookup(name)
            while svc.state in ("StartPending", "StopPending"):
                self._cond.wait()
            if svc.state == "Stopped":
                return
            running = [d.name for d in self._dependents(svc) if d.state != "Stopped"]
            if running:
                raise ServiceError(
                    f"Cannot stop service '{svc.display_name} ({svc.name})' because it has "
                    f"dependent services ({', '.join(running)}). It can only be stopped if the "
                    "Force flag is set."
                )
            self._set(svc, "StopPending")
        self._on_stop(svc.name)
        time.sleep(self.half_s)
        with self._cond:
            self._set(svc, "Stopped")

    def start(self, name: str, *, _chain: tuple[str, ...] = ()) -> None:
        """Start-Service: starts stopped dependencies first (as the SCM does), then this one.

        Raises ServiceError (and the service ends Stopped) when `service_start_fails` applies
        or the service's own start-up fails (e.g. the Data Service cannot read its certificate).
        """
        with self._cond:
            svc = self._lookup(name)
            if svc.start_mode == "Disabled":
                raise ServiceError(
                    f"Service '{svc.display_name} ({svc.name})' cannot be started due to the "
                    f"following error: Cannot start service {svc.name} on computer '.'."
                )
            deps = list(svc.depends_on)
        for dep in deps:
            if dep.lower() not in _chain:
                self.start(dep, _chain=_chain + (svc.name.lower(),))
        with self._cond:
            while svc.state in ("StartPending", "StopPending"):
                self._cond.wait()
            if svc.state == "Running":
                return
            self._set(svc, "StartPending")
        time.sleep(self.half_s)
        failure = None
        if self._start_fails(svc.name):
            failure = "the service did not respond to the start or control request"
        else:
            try:
                self._on_start(svc.name)
            except (OSError, ValueError, RuntimeError) as exc:
                failure = str(exc)
        with self._cond:
            if failure:
                self._set(svc, "Stopped")
                raise ServiceError(
                    f"Service '{svc.display_name} ({svc.name})' cannot be started due to the "
                    f"following error: Cannot start service {svc.name} on computer '.'. "
                    f"({failure})"
                )
            self._set(svc, "Running")

    def stop_all(self) -> None:
        """Shutdown: every running service stops at once (no dependency refusal)."""
        with self._cond:
            doomed = [s for s in self._services.values() if s.state != "Stopped"]
            for svc in doomed:
                self._set(svc, "StopPending")
        for svc in doomed:
            self._on_stop(svc.name)
        time.sleep(self.half_s)
        with self._cond:
            for svc in doomed:
                self._set(svc, "Stopped")

    def start_automatic(self) -> list[str]:
        """Boot: start every Auto service at once (each waits for its dependencies, as the SCM
        does); returns the names that failed to start."""
        failed: list[str] = []
        lock = threading.Lock()

        def one(name: str) -> None:
            try:
                self.start(name)
            except ServiceError:
                with lock:
                    failed.append(name)

        threads = [
            threading.Thread(target=one, args=(s.name,), daemon=True)
            for s in self.list()
            if s.start_mode == "Auto"
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return failed

    def start_pending_for(self, name: str, seconds: float) -> bool:
        """A running service is seen starting: StartPending for `seconds`, then Running (the
        fault `service_start_pending`; as when its recovery action restarts its process). Its
        hooks do not run: ports stay as they are. False when it is not Running."""
        with self._cond:
            svc = self._lookup(name)
            if svc.state != "Running":
                return False
            self._set(svc, "StartPending")

        def finish() -> None:
            time.sleep(seconds)
            with self._cond:
                if svc.state == "StartPending":
                    self._set(svc, "Running")

        threading.Thread(target=finish, name=f"pending-{name}", daemon=True).start()
        return True

    def crash(self, name: str) -> bool:
        """The service's process ended on its own: the SCM records it Stopped at once, with no
        Stop Pending (learn.microsoft.com/windows/win32/services/service-status-transitions),
        and, with no recovery action configured (the default, *pessimistic*), nothing starts it
        again until someone does. The fault `service_stopped`. False when it was not running."""
        with self._cond:
            svc = self._lookup(name)
            if svc.state != "Running":
                return False
        self._on_stop(svc.name)
        with self._cond:
            self._set(svc, "Stopped")
        return True

    def set_initial(self, name: str, state: str) -> None:
        """Set a state without delay or event (lab creation only)."""
        with self._cond:
            self._lookup(name).state = state
            self._save()
