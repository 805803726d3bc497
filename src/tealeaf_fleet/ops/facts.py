"""`facts`: everything preflight, status and drift need from one host, in one round trip.

`HostFacts` IS the op's JSON result (a dict subclass, so planners, digests and the status
evaluator can treat it as the raw document) with typed accessors on top, so that callers in
Python do not repeat key names and None checks. `collect` reads a whole fleet in parallel,
one Connection per host; a host that fails yields its `RemoteError` instead of facts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import RemoteError

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet, Host
    from tealeaf_fleet.transport import Connection

log = logging.getLogger(__name__)

TIMEOUT_S = 120.0
Progress = Callable[[str, str], None]  # (host name, "ok" | "failed")


@dataclass(frozen=True)
class ServiceFact:
    name: str
    display_name: str
    state: str
    start_mode: str
    path: str


# RegistryValueKind names (RegistryKey.GetValueKind) as regedit shows them.
_REG_KINDS = {
    "String": "REG_SZ",
    "ExpandString": "REG_EXPAND_SZ",
    "MultiString": "REG_MULTI_SZ",
    "Binary": "REG_BINARY",
    "DWord": "REG_DWORD",
    "QWord": "REG_QWORD",
}
# Service states that are on their way somewhere (ServiceControllerStatus names; facts.ps1
# writes Win32_Service's "Start Pending" this way).
PENDING_STATES = ("StartPending", "StopPending", "ContinuePending", "PausePending")


@dataclass(frozen=True)
class RegistryNumber:
    """A registry value the tool compares as a number, as facts report it
    (Get-FleetRegistryNumber): absent (null), a number (int), or not a number
    (`{"text": ..., "kind": ...}`, e.g. EnableTLS stored as the REG_SZ "true").

    Why a type: `int(value)` on the third shape would crash a caller, and reading it as 0 would
    hide it; every caller must say which of the three it got.
    """

    number: int | None = None
    text: str | None = None  # the raw text when the value is not a number
    kind: str | None = None  # RegistryValueKind of a value that is not a number ("String")

    @classmethod
    def parse(cls, raw: Any) -> RegistryNumber:
        if raw is None:
            return cls()
        if isinstance(raw, int) and not isinstance(raw, bool):
            return cls(number=raw)
        if isinstance(raw, Mapping):
            kind = raw.get("kind")
            return cls(text=str(raw.get("text") or ""), kind=str(kind) if kind else None)
        return cls(text=str(raw))  # anything else is not a number either

    @property
    def absent(self) -> bool:
        return self.number is None and self.text is None

    @property
    def is_number(self) -> bool:
        return self.number is not None

    @property
    def not_a_number(self) -> bool:
        return self.text is not None

    def describe(self) -> str:
        """For messages: "absent", "1", "a REG_SZ holding 'true'", "an empty REG_SZ"."""
        if self.number is not None:
            return str(self.number)
        if self.text is None:
            return "absent"
        kind = _REG_KINDS.get(self.kind or "", "value of an unknown type")
        if self.text == "":
            return f"an empty {kind}"
        return f"a {kind} holding {self.text!r}"


# The Data Service's executable in a Win32_Service PathName, quoted or not, with arguments or
# not. The name TLDataService.exe is inferred from its log's (<install>\Logs\TLDataService_...,
# vendor procedure) and unconfirmed, hence the name rule beside it.
_DATA_SERVICE_EXE = re.compile(r'(?:^|[\\/"\s])TLDataService\.exe(?:"|\s|$)', re.I)
# Service names and display names, compared without spaces, case or punctuation.
_DATA_SERVICE_NAMES = ("tealeafdataservice", "tldataservice")


def is_data_service(service: Mapping[str, Any]) -> bool:
    """Whether one `facts` service entry is the Tealeaf Data Service: its executable is
    TLDataService.exe, or its name or display name is the Data Service's. The one rule for
    "does this host run a Data Service": its services say so, never whether a log was found
    (the log rolls daily and may hold no startup block, or be named otherwise)."""
    if _DATA_SERVICE_EXE.search(str(service.get("path") or "")):
        return True
    names = (service.get("name"), service.get("display_name"))
    return any(re.sub(r"[^a-z]", "", str(n or "").lower()) in _DATA_SERVICE_NAMES for n in names)


def data_service_names(facts: Mapping[str, Any]) -> list[str]:
    """Names of the host's Data Service entries in a `facts` result (plain dict or HostFacts)."""
    services = facts.get("services") or []
    return [str(s.get("name")) for s in services if isinstance(s, Mapping) and is_data_service(s)]


@dataclass(frozen=True)
class DataServiceMode:
    """The Data Service's startup block in its log: mode "tls" / "plain", or None (none yet).
    `log` is the file holding the block; `newest_log` the newest log file, block or not."""

    mode: str | None
    port: int | None
    started_at: str | None
    log: str | None
    newest_log: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DataServiceMode:
        data = data or {}
        port = data.get("port")
        return cls(
            mode=data.get("mode"),
            port=int(port) if port is not None else None,
            started_at=data.get("started_at"),
            log=data.get("log"),
            newest_log=data.get("newest_log"),
        )


class HostFacts(dict):
    """The `facts` result of one host (docs/architecture.md) with typed accessors."""

    def __init__(self, host: str, raw: dict[str, Any]) -> None:
        super().__init__(raw)
        self.host = host

    @property
    def raw(self) -> dict[str, Any]:
        return dict(self)

    def _section(self, name: str) -> dict[str, Any]:
        value = self.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def hostname(self) -> str | None:
        return self.get("hostname")

    @property
    def now(self) -> str | None:
        """Host-local time as yyyy-MM-ddTHH:mm:ss (compares with Data Service log lines)."""
        return self.get("now")

    @property
    def os_version(self) -> str | None:
        return self._section("os").get("version")

    @property
    def os_caption(self) -> str | None:
        return self._section("os").get("caption")

    @property
    def ps_version(self) -> str | None:
        return self.get("ps_version")

    @property
    def install_dir(self) -> str | None:
        return self.get("install_dir")

    @property
    def install_dir_source(self) -> str | None:
        return self.get("install_dir_source")

    @property
    def has_tlstool(self) -> bool:
        return bool(self._section("tools").get("tlstool"))

    @property
    def has_openssl(self) -> bool:
        return bool(self._section("tools").get("openssl"))

    @property
    def tealeaf_build(self) -> str | None:
        return self.get("tealeaf_build")

    @property
    def tealeaf_build_source(self) -> str | None:
        """Where the build came from: "registry" (Version), "file_version" (a TeaLeaf service
        executable's), or None when neither gave one."""
        return self.get("tealeaf_build_source")

    @property
    def enable_tls_value(self) -> RegistryNumber:
        """EnableTLS as read: absent, a number, or text that is not a number."""
        return RegistryNumber.parse(self.get("enable_tls"))

    @property
    def enable_tls(self) -> int | None:
        """EnableTLS as a number; None when absent or not a number (`enable_tls_value` tells
        the two apart)."""
        return self.enable_tls_value.number

    def registry_number(self, section: str, name: str) -> RegistryNumber:
        """A registry value of `schannel`, `dotnet`, `winhttp` (e.g. ("dotnet",
        "wow6432_v4_strong_crypto"))."""
        return RegistryNumber.parse(self._section(section).get(name))

    @property
    def fips_policy_enabled(self) -> bool | None:
        """The "use FIPS compliant algorithms" policy; None when the value is absent."""
        return self._section("fips").get("policy_enabled")

    @property
    def hash_provider(self) -> str | None:
        """The SHA-256 class the host hashes with (SHA256CryptoServiceProvider, ...); None when
        none works there (`hash_error` says why)."""
        return self._section("fips").get("hash_provider")

    @property
    def hash_error(self) -> str | None:
        return self._section("fips").get("hash_error")

    @property
    def tls_cert_password_present(self) -> bool:
        return bool(self.get("tls_cert_password_present"))

    def security_file(self, name: str) -> dict[str, Any] | None:
        """{size, sha256} of tealeaf.crt / tealeaf.p12 / server.tls.xml, None if absent, or
        {error} when the file exists but cannot be read (locked by another process, ACL)."""
        return (self._section("security").get("files") or {}).get(name)

    def security_file_error(self, name: str) -> str | None:
        """Why a security file could not be read; None when it was read or is absent."""
        entry = self.security_file(name)
        return entry.get("error") if isinstance(entry, dict) else None

    @property
    def cert_sha256(self) -> str | None:
        return self._section("security").get("cert_sha256")

    @property
    def cert_subject(self) -> str | None:
        return self._section("security").get("cert_subject")

    @property
    def cert_not_after(self) -> str | None:
        return self._section("security").get("cert_not_after")

    @property
    def services(self) -> list[ServiceFact]:
        return [
            ServiceFact(
                name=s.get("name", ""),
                display_name=s.get("display_name", ""),
                state=s.get("state", ""),
                start_mode=s.get("start_mode", ""),
                path=s.get("path", ""),
            )
            for s in self.get("services") or []
        ]

    @property
    def running_services(self) -> list[str]:
        return [s.name for s in self.services if s.state == "Running"]

    @property
    def pending_services(self) -> list[str]:
        """TeaLeaf services on their way to another state (StartPending, StopPending, ...)."""
        return [s.name for s in self.services if s.state in PENDING_STATES]

    @property
    def iis_present(self) -> bool:
        return bool(self._section("iis").get("present"))

    @property
    def iis_state(self) -> str | None:
        return self._section("iis").get("state")

    @property
    def data_service(self) -> DataServiceMode:
        return DataServiceMode.from_dict(self._section("data_service"))

    @property
    def has_data_service(self) -> bool:
        """A Data Service is installed here (from the services, see `is_data_service`)."""
        return bool(data_service_names(self))


def gather(
    conn: Connection,
    host: Host | None = None,
    *,
    install_dir: str | None = None,
    since: str | None = None,
    port_search: bool = True,
    timeout_s: float = TIMEOUT_S,
) -> HostFacts:
    """Read one host's facts. `install_dir` None or '' = discover (services, then registry);
    `since` (host-local yyyy-MM-ddTHH:mm:ss) picks the first Data Service startup at or after
    it instead of the newest. `port_search` False skips the search of configuration files
    for 23443 (`port_23443_files` None): a gate polls facts often and never needs it."""
    name = host.name if host is not None else conn.name
    if install_dir is None and host is not None:
        install_dir = host.install_dir
    raw = conn.run_op(
        "facts",
        {
            "InstallDir": install_dir or "",
            "Since": since or "",
            "PortSearch": "1" if port_search else "0",
        },
        timeout_s=timeout_s,
        read_only=True,
    )
    return HostFacts(name, raw)


def collect(
    fleet: Fleet,
    *,
    forks: int = 10,
    on_progress: Progress | None = None,
    timeout_s: float = TIMEOUT_S,
    connect: Callable[[Host], Connection] | None = None,
) -> dict[str, HostFacts | RemoteError]:
    """Facts of every Windows host in parallel (at most `forks` at once), in inventory order.

    A host that cannot be read maps to its RemoteError; a bad password source is an InputError
    for the whole run (raised), since no host could be read with it.
    """
    hosts = fleet.windows_hosts()
    if connect is None:
        from tealeaf_fleet.transport import Connection

        passwords = {
            h.name: (None if h.winrm.transport == "certificate" else fleet.winrm_password(h))
            for h in hosts
        }

        def connect(h: Host) -> Connection:
            return Connection(h, passwords[h.name])

    def one(h: Host) -> HostFacts | RemoteError:
        install = h.install_dir or fleet.install_dir
        try:
            with connect(h) as conn:
                facts = gather(conn, h, install_dir=install, timeout_s=timeout_s)
        except RemoteError as exc:
            log.info("%s: facts failed: %s", h.name, exc)
            if on_progress:
                on_progress(h.name, "failed")
            return exc
        if on_progress:
            on_progress(h.name, "ok")
        return facts

    if not hosts:
        return {}
    with ThreadPoolExecutor(
        max_workers=max(1, min(forks, len(hosts))), thread_name_prefix="facts"
    ) as pool:
        results = list(pool.map(one, hosts))
    return {h.name: r for h, r in zip(hosts, results, strict=True)}


__all__ = [
    "HostFacts",
    "ServiceFact",
    "DataServiceMode",
    "RegistryNumber",
    "PENDING_STATES",
    "is_data_service",
    "data_service_names",
    "gather",
    "collect",
]
