"""Pure checks over `facts` results: preflight blockers, per-step "done already?", fleet drift.

Facts in, verdicts out, nothing else: no I/O, no clock, no WinRM. The facts dict is the `facts`
op result pinned in docs/architecture.md. Keeping these rules here (and not in the engine or the
CLI) means the planner (`fleet plan --facts`), the engine (preflight and resume) and `fleet
status` all judge a host by the same rules, and the rules can be tested from plain dicts.

Every message says what to fix and where (registry key and value, file, service, port), because
the reader is an operator in a change window, not the author.

Decisions worth knowing:
- EnableTLS=1 before a rollout is a blocker unless the certificate installed there is the PFX of
  this rollout (`security.cert_sha256 == pfx_sha256`: a resumed rollout). When no PFX exists yet
  (`certificate.source: generate` before its first run) it is always a blocker, even when every
  security file is present: the rollout would generate a new certificate and import it over a
  live TLS configuration, one host at a time, which splits the fleet. Point the inventory at the
  existing PFX (`source: file`) to adopt it, or roll back first.
- A step counts as done only on positive evidence. `enable`: EnableTLS=1 AND server.tls.xml
  (EnableTLS=1 alone may be left from FP2's optional security features, vendor procedure;
  `TLSTool.exe enable` writes both). `disable`: EnableTLS absent or 0, as read (facts without
  the key prove nothing). `restart`: the Data Service's logged mode AND EnableTLS both match
  what is wanted (services read EnableTLS when they start).
- "Enabled" of an SCHANNEL protocol key counts as on when it is non-zero (Windows reads it so;
  0xffffffff is common), "DisabledByDefault" must be exactly 0.
- Registry values arrive as a number, null (absent) or `{"text", "kind"}` (not a number, e.g.
  EnableTLS as the REG_SZ "true"; ops.facts.RegistryNumber). Text is never read as 0: for
  EnableTLS it blocks a rollout (nobody can tell whether TLS is on), elsewhere it counts as
  "not set" and the message says what was found.
- Services are judged in ServiceController's spelling ("StartPending"; facts.ps1 turns
  Win32_Service's "Start Pending" into it). A TeaLeaf service still pending when preflight
  judges (the engine waits for pending services first) blocks: its restart could not be
  planned.
- Severity: `blocker` stops a rollout (preflight) or makes a fleet inconsistent (drift);
  `warning` is worth fixing but changes nothing; `info` is just said.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.inventory import TLS_ROLES
from tealeaf_fleet.ops.facts import PENDING_STATES, RegistryNumber, data_service_names
from tealeaf_fleet.playbooks import OPS  # the closed op vocabulary has one home
from tealeaf_fleet.playbooks import SERIAL_RESTART_ROLES as SERIAL_GROUP_ROLES

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Host

BLOCKER = "blocker"
WARNING = "warning"
INFO = "info"

MIN_BUILD = (9, 0, 2, 1351)  # Tealeaf 9.0.2 Fix Pack 6
MIN_BUILD_TEXT = "9.0.2.1351"

TEALEAF_KEY = r"HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology"
SCHANNEL_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL"
TLS12_KEY = SCHANNEL_KEY + r"\Protocols\TLS 1.2"
DOTNET_KEYS = {
    "v2": r"HKLM:\SOFTWARE\Microsoft\.NETFramework\v2.0.50727",
    "v4": r"HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319",
    # Tealeaf is 32-bit: its .NET tools (TealeafStatus) read the WOW64 view
    "wow6432_v2": r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework\v2.0.50727",
    "wow6432_v4": r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework\v4.0.30319",
}
WINHTTP_KEYS = {
    "native": r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp",
    "wow6432": r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\Windows\CurrentVersion"
    r"\Internet Settings\WinHttp",
}
WINHTTP_TLS12 = 0x800
SECURITY_FILES = ("tealeaf.crt", "tealeaf.p12", "server.tls.xml")
DEFAULT_SECURITY_DIR = r"C:\ProgramData\IBM\Tealeaf\security"
LEGACY_DATA_SERVICE_PORT = 23443
CERT_EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class Finding:
    """One verdict. `hosts` names the hosts it is about (one for preflight, several for drift)."""

    severity: str  # blocker | warning | info
    code: str  # stable identifier, e.g. "schannel_tls12_server"
    message: str  # what is wrong and what to fix, naming key / file / service / port
    hosts: tuple[str, ...] = ()

    @property
    def host(self) -> str | None:
        return self.hosts[0] if len(self.hosts) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hosts": list(self.hosts),
        }


@dataclass(frozen=True)
class Done:
    """The host is already in the wanted state for this step; `reason` says why we think so."""

    reason: str
    done: bool = field(default=True, init=False)


@dataclass(frozen=True)
class Needed:
    """The step has work to do on this host; `reason` says what is missing."""

    reason: str
    done: bool = field(default=False, init=False)


StepVerdict = Done | Needed


# --- small readers over the facts dict ---------------------------------------------------------


def parse_build(text: Any) -> tuple[int, ...] | None:
    """`"9.0.2.1351"` -> (9, 0, 2, 1351); None when there is no leading dotted number."""
    if not isinstance(text, str):
        return None
    match = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    if not match:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def build_at_least(text: Any, minimum: tuple[int, ...] = MIN_BUILD) -> bool | None:
    """Numeric comparison of dotted versions (9.0.2.999 < 9.0.2.1351); None when unknown."""
    build = parse_build(text)
    if build is None:
        return None
    width = max(len(build), len(minimum))
    return build + (0,) * (width - len(build)) >= minimum + (0,) * (width - len(minimum))


def _get(facts: Mapping[str, Any], *path: str) -> Any:
    node: Any = facts
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _security_dir(facts: Mapping[str, Any]) -> str:
    return _get(facts, "security", "dir") or DEFAULT_SECURITY_DIR


def _file_present(facts: Mapping[str, Any], name: str) -> bool:
    return bool(_get(facts, "security", "files", name))


def _missing_security_files(
    facts: Mapping[str, Any], names: tuple[str, ...] = SECURITY_FILES
) -> list[str]:
    return [name for name in names if not _file_present(facts, name)]


def _is_2008r2(facts: Mapping[str, Any]) -> bool:
    version = str(_get(facts, "os", "version") or "")
    return version == "6.1" or version.startswith("6.1.")


def _on(value: Any) -> bool:
    """SCHANNEL "Enabled": Windows treats any non-zero DWORD as on."""
    return isinstance(value, int) and not isinstance(value, bool) and value != 0


def pair_imported(facts: Mapping[str, Any]) -> bool:
    """tealeaf.crt (with a certificate in it) and tealeaf.p12 are both in the security folder:
    what the services need to start with EnableTLS=1."""
    security = facts.get("security") or {}
    files = security.get("files") or {}
    return bool(security.get("cert_sha256")) and isinstance(files.get("tealeaf.p12"), Mapping)


# The advice where "restart the TeaLeaf services" would break the host: EnableTLS=1 without a
# certificate pair stops the Data Service from starting.
NO_PAIR_ADVICE = (
    "do NOT restart the TeaLeaf services (with EnableTLS=1 and no certificate pair the Data "
    "Service would not start): set EnableTLS to 0 (`fleet rollout INVENTORY --playbook "
    "prerequisites` does, without a restart) or import the fleet's PFX first"
)


def restart_advice(facts: Mapping[str, Any]) -> str:
    """ "restart the TeaLeaf services", unless that would break the host (NO_PAIR_ADVICE)."""
    if facts.get("enable_tls") == 1 and not pair_imported(facts):
        return NO_PAIR_ADVICE
    return "restart the TeaLeaf services"


is_2008r2 = _is_2008r2  # shared with prerequisites.py (the same reading of the facts)
schannel_on = _on


def short_sha(sha: str | None) -> str:
    """The first 12 hex digits, enough to tell certificates apart in a message."""
    return sha[:12] if sha else "none"


def _enable_tls(facts: Mapping[str, Any]) -> Any:
    return facts.get("enable_tls")


def _found(value: Any) -> str:
    """The suffix ` (now a REG_SZ holding 'x')` for a registry value that is not a number."""
    reading = RegistryNumber.parse(value)
    return f" (now {reading.describe()})" if reading.not_a_number else ""


def tls_configured(facts: Mapping[str, Any]) -> bool | None:
    """EnableTLS as the registry says: True (1), False (absent or 0), None when unknown.

    Unknown covers facts without the `enable_tls` key (a partial or foreign facts dict: absence
    of the key is not absence of the value) and any value other than absent, 0 or 1 (a number
    such as 2, or text such as the REG_SZ "true").
    """
    if "enable_tls" not in facts:
        return None
    value = facts["enable_tls"]
    if value is None or value == 0:
        return False
    return True if value == 1 else None


def _enable_tls_text(facts: Mapping[str, Any]) -> str:
    if "enable_tls" not in facts:
        return "unknown (the facts do not show it)"
    return RegistryNumber.parse(facts["enable_tls"]).describe()


def _tealeaf_services(facts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    services = facts.get("services") or []
    return [s for s in services if isinstance(s, Mapping)]


def _role_is_tls(role: str) -> bool:
    return role in TLS_ROLES


def _host_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.strip()[:19])
    except ValueError:
        return None


# --- preflight ----------------------------------------------------------------------------------


def _host_findings(name: str) -> tuple[list[Finding], Callable[[str, str, str], None]]:
    """A findings list about one host, and its `add(severity, code, message)`: every preflight
    rule names the host the same way."""
    out: list[Finding] = []

    def add(severity: str, code: str, message: str) -> None:
        out.append(Finding(severity, code, message, (name,)))

    return out, add


def preflight_blockers(
    host: Host,
    facts: Mapping[str, Any],
    *,
    pfx_sha256: str | None,
    expect_tls: bool,
    restarting: Collection[str] = (),
    rotation: bool = False,
    reboot_records: Sequence[Mapping[str, Any]] = (),
    status_report: bool = True,
    tls12_probe: Any = None,
    writes_prerequisites: bool = False,
) -> list[Finding]:
    """What stops a rollout (expect_tls=True) or a rollback (False) on this host, plus warnings.
    `restarting`: services that an unfinished restart of this change stopped and the resumed
    run starts again (not "found stopped").

    Rollback needs far less (the install folder, TLSTool.exe for TLS roles, services to restart):
    a rollback must stay possible on a host that a rollout would refuse. A rotation
    (`rotation=True`) needs what a rollout needs, except that TLS must already be on: EnableTLS
    1 with server.tls.xml and a Data Service running in tls mode (`rotation_blockers`).
    `reboot_records`: the journal's record of values this tool changed on the host that take
    effect at boot (`Journal.reboot_records`); a pending SCHANNEL reboot on 2008 R2 blocks a
    rollout.
    `status_report`: whether TealeafStatus runs here (`prerequisites.status_report_hosts`).
    `tls12_probe`: a TLS 1.2-only handshake to the TMS port on 2008 R2 (`tls12_findings`).
    `writes_prerequisites`: the run writes the vendor prerequisites (a 32-bit session blocks).
    """
    name = host.name
    tls_role = _role_is_tls(host.role)
    out, add = _host_findings(name)

    install_dir = facts.get("install_dir")
    if not install_dir:
        add(
            BLOCKER,
            "install_dir_not_found",
            "Tealeaf install folder not found: no TeaLeaf service's executable path leads to a "
            r"folder holding Tools\TLSTool.exe and the registry value "
            rf"{TEALEAF_KEY}\InstallDir is absent; set tealeaf.install_dir (or "
            f"hosts.{name}.install_dir) in the inventory",
        )
    tlstool = _get(facts, "tools", "tlstool")
    if install_dir and not tlstool:
        path = rf"{install_dir}\Tools\TLSTool.exe"
        if tls_role:
            add(
                BLOCKER,
                "tlstool_missing",
                f"{path} not found: TLSTool.exe ships with Tealeaf 9.0.2 FP6; install the fix "
                "pack or point install_dir at the folder that holds Tools\\TLSTool.exe",
            )
        elif expect_tls:
            add(
                INFO,
                "tlstool_will_be_copied",
                f"{path} not found: the rollout copies TLSTool.exe and openssl.exe there from "
                "a Tealeaf server of the same build (push_tools)",
            )

    services = _tealeaf_services(facts)
    if tls_role and not services:
        add(
            BLOCKER,
            "no_tealeaf_services",
            "no Windows service whose name or display name starts with 'TeaLeaf' was found: "
            "is Tealeaf installed on this host, and is its role in the inventory right?",
        )
    pending = pending_services(facts)
    if pending:
        add(
            BLOCKER,
            "service_pending",
            "TeaLeaf service(s) still changing state: "
            + ", ".join(f"{n} ({state})" for n, state in pending)
            + " (preflight waits up to rollout.health_timeout_s for them): the restart cannot "
            "tell whether to bring them back; find out why they hang, then rerun",
        )
    out.extend(_unreadable_security_files(name, facts))
    out.extend(
        _stopped_services(
            name,
            facts,
            host.role,
            restarting,
            reboot_due=pending_reboot_since(facts, reboot_records) is not None,
            expect_tls=expect_tls,
        )
    )

    if expect_tls:
        out.extend(
            _rollout_blockers(
                host,
                facts,
                pfx_sha256=pfx_sha256,
                rotation=rotation,
                status_report=status_report,
            )
        )
    out.extend(reboot_findings(name, facts, reboot_records, block=expect_tls))
    out.extend(tls12_findings(name, facts, host.tms_port, tls12_probe, block=expect_tls))
    out.extend(wow64_findings(host, facts, block=expect_tls or writes_prerequisites))
    if facts.get("ps_version") is not None and str(facts.get("ps_version")).startswith("2."):
        add(
            INFO,
            "powershell_2",
            f"Windows PowerShell {facts.get('ps_version')}: supported (every remote script is "
            "written for PowerShell 2.0)",
        )
    return out


def _rollout_blockers(
    host: Host,
    facts: Mapping[str, Any],
    *,
    pfx_sha256: str | None,
    rotation: bool = False,
    status_report: bool = True,
) -> list[Finding]:
    name = host.name
    tls_role = _role_is_tls(host.role)
    out, add = _host_findings(name)

    build = facts.get("tealeaf_build")
    verdict = build_at_least(build)
    if verdict is None:
        if build is None:
            where = (
                f"registry value {TEALEAF_KEY}\\Version is absent and no TeaLeaf service "
                "executable carries a file version"
            )
        elif facts.get("tealeaf_build_source") == "file_version":
            where = f"a TeaLeaf service executable's file version reads {build!r}"
        else:
            where = f"registry value {TEALEAF_KEY}\\Version reads {build!r}"
        add(
            BLOCKER if tls_role else WARNING,
            "build_unknown",
            f"Tealeaf build unknown ({where}); inter-process TLS "
            f"needs {MIN_BUILD_TEXT} (9.0.2 FP6) or later: check the installed fix pack",
        )
    elif not verdict:
        add(
            BLOCKER,
            "build_too_old",
            f"Tealeaf build {build} is older than {MIN_BUILD_TEXT} (9.0.2 FP6); install Fix "
            "Pack 6 or later before enabling TLS",
        )

    hash_error = _get(facts, "fips", "hash_error")
    if hash_error:
        add(
            BLOCKER,
            "sha256_unavailable",
            f"no SHA-256 class works on this host ({hash_error}), so copies and certificates "
            "cannot be verified there: install .NET Framework 3.5 (System.Core's "
            "SHA256CryptoServiceProvider works under the FIPS policy)",
        )
    if tls_role:
        if rotation:
            out.extend(rotation_blockers(name, facts))
        else:
            out.extend(_enable_tls_blockers(name, facts, pfx_sha256))
        port = _get(facts, "data_service", "port")
        mentions = port_23443_files(facts)
        if port == LEGACY_DATA_SERVICE_PORT:
            add(
                BLOCKER,
                "data_service_23443",
                f"the Data Service listens on port {LEGACY_DATA_SERVICE_PORT} (the FP2-FP4 "
                "option): set it back to 23000, and the Search Service configuration on "
                "Canisters and HBRs that points at 23443, before enabling TLS"
                + (
                    f"; files that mention {LEGACY_DATA_SERVICE_PORT}: {', '.join(mentions)}"
                    if mentions
                    else ""
                ),
            )
        elif mentions:
            add(WARNING, "port_23443_in_config", port_23443_text(mentions))
        elif isinstance(port, int) and port != host.data_service_port:
            add(
                WARNING,
                "data_service_port_mismatch",
                f"the Data Service log shows port {port} but the inventory says "
                f"data_service_port {host.data_service_port}: the handshake gate probes the "
                "inventory's port; correct the inventory",
            )
        elif port is None and data_service_names(facts):
            add(WARNING, "data_service_port_unknown", _port_unknown(facts))
        log = _get(facts, "data_service", "log") or _get(facts, "data_service", "newest_log")
        if log and _tealeaf_services(facts) and not data_service_names(facts):
            add(
                WARNING,
                "data_service_not_recognised",
                f"{log} exists but no TeaLeaf service is recognised as the Data Service "
                "(executable TLDataService.exe, or name TeaLeafDataService / display name "
                "'TeaLeaf Data Service'): the Data Service log gate and handshake will not run "
                "on this host; check which service runs the Data Service (name and executable)",
            )
        if _is_2008r2(facts):
            out.extend(_schannel_2008r2(name, facts))
        if host.role == "hbr" and facts.get("tls_cert_password_present") is False:
            add(
                WARNING,
                "tls_cert_password_absent",
                f"{TEALEAF_KEY}\\security\\TLSCertPassword is absent: HBRs then log a "
                "spurious 'TeaLeaf Rules: unable to open key' error in the Application event "
                "log (harmless; the vendor suggests creating it as a string with a dummy value)",
            )
        status_gaps = _status_report_gaps(facts) if status_report else []
        if status_gaps:
            add(
                WARNING,
                "status_report_tls",
                "TealeafStatus cannot report once TLS is on until these are set (vendor "
                "section 'Generate the status report with TLS enabled'; reboot after): "
                + "; ".join(status_gaps)
                + ". Prefer DefaultSecureProtocols 0xA80 (TLS 1.0-1.2) to the vendor's 0xAA0, "
                "which also turns SSL 3.0 back on",
            )
    return out


def port_23443_files(facts: Mapping[str, Any]) -> list[str]:
    """Configuration files under the install folder whose text holds 23443 (facts'
    read-only search; Logs left out)."""
    files = facts.get("port_23443_files") or []
    return [str(f) for f in files if isinstance(f, str)]


def port_23443_text(files: list[str]) -> str:
    return (
        f"configuration files under the install folder still mention port "
        f"{LEGACY_DATA_SERVICE_PORT}: {', '.join(files)}; if one points the Data Service or the "
        "Search Service at it, change it to 23000 before enabling TLS (the tool rewrites no "
        "configuration file)"
    )


# LastBootUpTime is derived from the clock and the uptime: it can move by a few seconds between
# reads of one boot (a clock step); a different boot is minutes apart at the least.
BOOT_SLACK_S = 60


def pending_reboot_since(
    facts: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> tuple[str, list[str]] | None:
    """(since, areas) of the journal's reboot records the host still owes a boot for, or None.

    A record made in a known boot (`boot`: LastBootUpTime in UTC, facts'
    `boot.last_boot_utc`) is pending while the host still runs that boot (within
    BOOT_SLACK_S): UTC times, so a DST change or a clock step cannot make a reboot look owed
    or done. A record made in an unknown boot ("") is pending until a later record of a
    reboot by this tool (`rebooted`), which ends every record before it (the tool saw that
    host go down and come back, however close the two boot times). Rows of older journals
    (`boot` None) keep the old reading: host-local `since` against facts' `boot.last_boot`.
    An unknown current boot leaves every record pending (the pessimistic reading)."""
    booted_utc = _host_time(_get(facts, "boot", "last_boot_utc"))
    booted_local = _get(facts, "boot", "last_boot")
    pending: list[Mapping[str, Any]] = []
    for r in records:
        boot = r.get("boot")
        if r.get("rebooted"):
            pending = []
        elif boot is None:
            if not isinstance(booted_local, str) or booted_local <= str(r.get("since") or ""):
                pending.append(r)
        elif boot == "" or booted_utc is None:
            pending.append(r)
        else:
            recorded = _host_time(boot)
            if recorded is None or abs((booted_utc - recorded).total_seconds()) <= BOOT_SLACK_S:
                pending.append(r)
    if not pending:
        return None
    since = min(str(r.get("since")) for r in pending)
    areas = sorted({a for r in pending for a in (r.get("areas") or [])})
    return since, areas


def wow64_findings(host: Host, facts: Mapping[str, Any], *, block: bool) -> list[Finding]:
    """A 32-bit PowerShell session on 64-bit Windows (facts' `wow64_process`) sees
    HKLM\\SOFTWARE through WOW64 redirection: the 64-bit values read back unreadable and a
    write would land in Wow6432Node (learn.microsoft.com/windows/win32/winprog64/
    registry-redirector). A blocker with `block` (a run that judges or writes them)."""
    if not _role_is_tls(host.role) or facts.get("wow64_process") is not True:
        return []
    out, add = _host_findings(host.name)
    add(
        BLOCKER if block else WARNING,
        "wow64_session",
        "the WinRM session runs the 32-bit PowerShell on 64-bit Windows (WOW64): the 64-bit "
        "registry values under HKLM:\\SOFTWARE (.NET SchUseStrongCrypto and "
        "SystemDefaultTlsVersions, WinHTTP DefaultSecureProtocols) cannot be read and a "
        "write there would land in Wow6432Node, so the prerequisites are neither judged "
        "nor written on this host; connect to the 64-bit endpoint (Microsoft.PowerShell, "
        "WinRM's default, not Microsoft.PowerShell32)",
    )
    return out


def tls12_probe_due(host: Host, facts: Mapping[str, Any]) -> bool:
    """Whether `tls12_findings` has something to judge here: a Tealeaf TLS role with a TMS
    port on Windows Server 2008 R2 (from 2012 on, TLS 1.2 is on unless switched off)."""
    return _role_is_tls(host.role) and bool(host.tms_port) and _is_2008r2(facts)


def tls12_findings(
    name: str, facts: Mapping[str, Any], port: int, probe: Any, *, block: bool
) -> list[Finding]:
    """On 2008 R2, SCHANNEL reads the TLS 1.2 keys at boot: keys set by hand and never
    rebooted look right in the registry while TLS 1.2 handshakes still fail. `probe`: a TLS
    1.2-only handshake (`tlsprobe.tls12_active`) to the TMS port, which answers TLS on its
    own certificate whatever EnableTLS says. A TLS refusal, or a connection dropped in the
    handshake, means TLS 1.2 is not on (a blocker with `block`); no answer at all proves
    nothing (the stopped TMS is reported on its own)."""
    if probe is None or not _is_2008r2(facts):
        return []
    kind = getattr(probe, "kind", None)
    if kind == "unreachable" or (kind == "tls" and getattr(probe, "sha256", None)):
        return []
    out, add = _host_findings(name)
    error = getattr(probe, "error", None) or kind
    add(
        BLOCKER if block else WARNING,
        "tls12_not_active",
        f"TLS 1.2 not active since boot: a TLS 1.2-only handshake to the TMS port {port} "
        f"failed ({error}); Windows Server 2008 R2 reads the SCHANNEL TLS 1.2 keys at boot: "
        "reboot the host (`fleet rollout INVENTORY --playbook prerequisites` writes what is "
        "missing and reboots HBRs and Canisters one at a time)",
    )
    return out


def reboot_findings(
    name: str, facts: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *, block: bool
) -> list[Finding]:
    """ "reboot pending since ..." from the journal, and the reboot Windows itself says it owes.
    With `block` (a rollout's preflight), a pending SCHANNEL reboot on 2008 R2 is a blocker:
    TLS 1.2 is not on until the host boots with the keys."""
    out, add = _host_findings(name)
    pending = pending_reboot_since(facts, records)
    if pending is not None:
        since, areas = pending
        schannel = "schannel" in areas and _is_2008r2(facts)
        add(
            BLOCKER if block and schannel else WARNING,
            "reboot_pending",
            f"reboot pending since {since}: this tool changed {', '.join(areas) or 'registry'} "
            f"values that take effect at boot, and the host last booted at "
            f"{_get(facts, 'boot', 'last_boot') or 'an unknown time'}"
            + ("; TLS 1.2 is not on until it reboots" if schannel else "")
            + ": rerun `fleet rollout INVENTORY --playbook prerequisites` (it reboots HBRs and "
            "Canisters one at a time), or reboot the host yourself",
        )
    markers = facts.get("pending_reboot") or {}
    owed = []
    if markers.get("cbs_reboot_pending"):
        owed.append("Component Based Servicing RebootPending")
    if markers.get("wu_reboot_required"):
        owed.append("Windows Update RebootRequired")
    if isinstance(markers.get("file_rename_entries"), int) and markers["file_rename_entries"]:
        owed.append(f"{markers['file_rename_entries']} PendingFileRenameOperations")
    if owed:
        add(
            WARNING,
            "windows_reboot_pending",
            f"Windows owes a reboot ({', '.join(owed)}): a reboot during the change window "
            "(or the prerequisites playbook's) also applies those updates",
        )
    return out


def _port_unknown(facts: Mapping[str, Any]) -> str:
    """Why the Data Service port is not known, and where to look: a port still on 23443 would
    otherwise pass preflight unseen."""
    install = facts.get("install_dir")
    folder = rf"{install}\Logs" if install else r"<install>\Logs"
    newest = _get(facts, "data_service", "newest_log")
    found = f"the newest is {newest}" if newest else "there is none"
    return (
        f"Data Service port unknown: no startup block ('Service.Start INFO Starting HTTP "
        f"Server', then 'Port: N' or 'TLS Port: N') in the newest TLDataService*.log files in "
        f"{folder} ({found}); check that the Data Service listens on 23000, not "
        f"{LEGACY_DATA_SERVICE_PORT} (its configuration, or its log after its next restart), "
        "before enabling TLS"
    )


def _enable_tls_blockers(
    name: str, facts: Mapping[str, Any], pfx_sha256: str | None
) -> list[Finding]:
    value = _enable_tls(facts)
    key = f"{TEALEAF_KEY}\\EnableTLS"
    if RegistryNumber.parse(value).not_a_number:
        return [_enable_tls_not_numeric(name, value)]
    if value in (None, 0):
        return []
    installed = _get(facts, "security", "cert_sha256")
    if value == 1:
        if pfx_sha256 and installed == pfx_sha256:
            return [
                Finding(
                    INFO,
                    "resume_enabled",
                    f"{key} is already 1 with this rollout's certificate "
                    f"({short_sha(pfx_sha256)}): resuming",
                    (name,),
                )
            ]
        if pfx_sha256:
            why = (
                f"the certificate in {_security_dir(facts)}\\tealeaf.crt is "
                f"{short_sha(installed)}, not this rollout's PFX ({short_sha(pfx_sha256)})"
            )
        else:
            why = (
                "no PFX exists yet, so the rollout would generate a new certificate and "
                "import it over a live TLS configuration"
            )
        return [
            Finding(
                BLOCKER,
                "enable_tls_preset",
                f"{key} is already 1 and {why}; "
                + (
                    "to adopt the certificate in place, set certificate.source: file with "
                    "that PFX, else run `fleet rollback` (or set EnableTLS to 0 and restart "
                    "the TeaLeaf services) first"
                    if pair_imported(facts)
                    else "no certificate pair is imported here, so the vendor's value is 0: "
                    "`fleet rollout INVENTORY --playbook prerequisites` sets it (no restart "
                    "needed; do not restart the TeaLeaf services while it is 1)"
                ),
                (name,),
            )
        ]
    return [
        Finding(
            BLOCKER,
            "enable_tls_unexpected",
            f"{key} reads {value!r}; expected absent, 0 or 1: set it to 0",
            (name,),
        )
    ]


def rotation_blockers(name: str, facts: Mapping[str, Any]) -> list[Finding]:
    """A rotation replaces the pair under a TLS that stays on: a Tealeaf server where TLS is
    not on (EnableTLS not 1, server.tls.xml missing, or a Data Service that last started
    plainly) is a blocker; the rollout is the way to switch it on."""
    value = _enable_tls(facts)
    if RegistryNumber.parse(value).not_a_number:
        return [_enable_tls_not_numeric(name, value)]
    problems = []
    if value != 1:
        problems.append(f"{TEALEAF_KEY}\\EnableTLS is {_enable_tls_text(facts)}")
    elif not _file_present(facts, "server.tls.xml"):
        problems.append(f"{_security_dir(facts)}\\server.tls.xml is missing")
    mode = _get(facts, "data_service", "mode")
    if mode == "plain" and not problems:
        problems.append("the Data Service last started in plain mode ('Port:' in its log)")
    if not problems:
        return []
    return [
        Finding(
            BLOCKER,
            "rotation_tls_off",
            f"TLS is not on here ({'; '.join(problems)}): a rotation only replaces the pair "
            "on a fleet with TLS on everywhere; run `fleet rollout` (it imports the new pair "
            "and enables TLS) instead",
            (name,),
        )
    ]


def rotation_fleet_blockers(
    installed: Mapping[str, str | None],
    serving: Mapping[str, str | None],
    *,
    new_sha256: str | None,
    not_after: datetime | None,
    now: datetime,
    min_days: int = 30,
) -> list[Finding]:
    """The fleet-wide refusals of a rotation, after every host's preflight passed.

    `installed`: host -> fingerprint in its tealeaf.crt (every Windows host); `serving`: TLS
    host -> fingerprint its TMS port presents now (None when not probed or not TLS). The new
    pair must exist (a rotation never generates one on the fly), must not expire within
    `min_days`, and must differ from what the fleet runs: when every host has it installed and
    every probed server presents it, there is nothing to do. A fleet where only some hosts have
    it (a halted rotation) is resumed, not refused.
    """
    out: list[Finding] = []
    if new_sha256 is None:
        return [
            Finding(
                BLOCKER,
                "rotation_no_pair",
                "the inventory's certificate.path does not exist yet: a rotation installs a "
                "pair made beforehand (`fleet cert create --out FILE`, or the organisation's "
                "PFX with certificate.source: file)",
                ("controller",),
            )
        ]
    if not_after is not None:
        left = not_after - now
        if left <= timedelta(0):
            state = f"expired on {not_after:%Y-%m-%d}"
        elif left < timedelta(days=min_days):
            state = f"expires on {not_after:%Y-%m-%d}, in {left.days} day(s)"
        else:
            state = None
        if state:
            out.append(
                Finding(
                    BLOCKER,
                    "rotation_pair_expiring",
                    f"the new certificate {short_sha(new_sha256)} {state}: a rotation needs "
                    f"one valid for at least {min_days} more days; create or request a new pair",
                    ("controller",),
                )
            )
    done = all(sha == new_sha256 for sha in installed.values()) and all(
        sha in (None, new_sha256) for sha in serving.values()
    )
    if installed and done and any(sha == new_sha256 for sha in serving.values()):
        out.append(
            Finding(
                BLOCKER,
                "rotation_nothing_to_do",
                f"every host already has the new certificate {short_sha(new_sha256)} installed "
                "and every server presents it: nothing to rotate (point certificate.path at "
                "the new pair)",
                ("controller",),
            )
        )
    return out


def _enable_tls_not_numeric(name: str, value: Any) -> Finding:
    """EnableTLS holding something other than a number (the REG_SZ "true", an empty string):
    a blocker for a rollout and in drift, since nobody can tell whether TLS is on."""
    return Finding(
        BLOCKER,
        "enable_tls_not_numeric",
        f"{TEALEAF_KEY}\\EnableTLS is {RegistryNumber.parse(value).describe()}, not a number: "
        "the tool cannot tell whether TLS is on there (TLSTool.exe writes a DWORD, 0 or 1): "
        "delete the value or set it to the DWORD 0 (or run `fleet rollback`), then rerun",
        (name,),
    )


def _schannel_2008r2(name: str, facts: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    missing = []
    enabled = _get(facts, "schannel", "tls12_server_enabled")
    if not _on(enabled):
        missing.append(f"{TLS12_KEY}\\Server\\Enabled = 1 (DWORD){_found(enabled)}")
    disabled = _get(facts, "schannel", "tls12_server_disabled_by_default")
    if disabled != 0:
        missing.append(f"{TLS12_KEY}\\Server\\DisabledByDefault = 0 (DWORD){_found(disabled)}")
    if missing:
        out.append(
            Finding(
                BLOCKER,
                "schannel_tls12_server",
                "Windows Server 2008 R2 without TLS 1.2 server support: set "
                + " and ".join(missing)
                + ", then reboot (SCHANNEL reads them at boot; `fleet rollout INVENTORY "
                "--playbook prerequisites` does both)",
                (name,),
            )
        )
    found = _get(facts, "schannel", "send_trusted_issuer_list")
    if found != 0:
        out.append(
            Finding(
                BLOCKER,
                "send_trusted_issuer_list",
                f"Windows Server 2008 R2: set {SCHANNEL_KEY}\\SendTrustedIssuerList "
                f"= 0 (DWORD){_found(found)}, as the vendor's prerequisites require, then "
                "reboot (`fleet rollout INVENTORY --playbook prerequisites` does both)",
                (name,),
            )
        )
    return out


def _status_report_gaps(facts: Mapping[str, Any]) -> list[str]:
    """The vendor's registry settings for TealeafStatus with TLS on that are not in place,
    one entry per registry key: `KEY: Name = value, Name = value`."""
    gaps: dict[str, list[str]] = {}
    dotnet = facts.get("dotnet") or {}
    for ver, key in DOTNET_KEYS.items():
        for field_name, value_name in (
            ("strong_crypto", "SchUseStrongCrypto"),
            ("system_default_tls", "SystemDefaultTlsVersions"),
        ):
            value = dotnet.get(f"{ver}_{field_name}")
            if value != 1:
                gaps.setdefault(key, []).append(f"{value_name} = 1{_found(value)}")
    winhttp = facts.get("winhttp") or {}
    for which, key in WINHTTP_KEYS.items():
        value = winhttp.get(which)
        if not (isinstance(value, int) and value & WINHTTP_TLS12):
            gaps.setdefault(key, []).append(f"DefaultSecureProtocols = 0xA80{_found(value)}")
    if _is_2008r2(facts):  # TLS 1.2 client is on by default from 2012 on
        schannel = facts.get("schannel") or {}
        key = f"{TLS12_KEY}\\Client"
        enabled = schannel.get("tls12_client_enabled")
        if not _on(enabled):
            gaps.setdefault(key, []).append(f"Enabled = 1{_found(enabled)}")
        disabled = schannel.get("tls12_client_disabled_by_default")
        if disabled != 0:
            gaps.setdefault(key, []).append(f"DisabledByDefault = 0{_found(disabled)}")
    return [f"{key}: {', '.join(values)}" for key, values in gaps.items()]


# --- "nothing to do, because ..." -------------------------------------------------------------


def step_status(
    host: Host,
    facts: Mapping[str, Any],
    op: str,
    *,
    pfx_sha256: str | None,
    expect_tls: bool,
    changed_at: str | None = None,
    pfx_file_sha256: str | None = None,
) -> Done | Needed:
    """Whether `op` still has work on `host`, judged from its facts.

    Two hashes, never mixed up: `pfx_sha256` is the certificate fingerprint (SHA-256 of the
    certificate's DER, what tealeaf.crt and a handshake show); `pfx_file_sha256` is the file
    hash of the PFX file itself (what a copy is checked against). `push_pfx` reads a
    `file_info` result merged into the facts as `facts["files"]` (PATH -> {exists, size,
    sha256 (file hash)}); a file there with the PFX's file hash counts as pushed.
    `restart` optionally takes `changed_at`, the host-local time of the last import/enable or
    disable on this host (from the journal): the Data Service must have started after it, since
    during a certificate rotation its mode reads "tls" both before and after the restart.
    """
    role = host.role
    tls_role = _role_is_tls(role)
    if op in ("preflight", "facts", "verify", "certificate"):
        return Needed(f"{op} always runs (read-only or controller-side)")
    if op in ("prerequisites", "reboot"):  # they need the inventory and the journal too
        return Needed(f"{op} is judged by prerequisites.needed_writes and the reboot records")
    if op == "push_tools":
        if role != "rtv":
            return Done("only RTV workstations need TLSTool.exe copied")
        if _get(facts, "tools", "tlstool") and _get(facts, "tools", "openssl"):
            return Done(r"Tools\TLSTool.exe and Tools\openssl.exe are already there")
        return Needed(r"Tools\TLSTool.exe or Tools\openssl.exe is missing")
    if op == "push_pfx":
        return _push_pfx_status(facts, pfx_sha256, pfx_file_sha256)
    if op == "import":
        return _import_status(facts, pfx_sha256)
    if op in ("enable", "disable", "restart") and not tls_role:
        return Done(f"role {role}: {op} does not apply (import only)")
    if op == "enable":
        value = _enable_tls(facts)
        if value == 1 and _file_present(facts, "server.tls.xml"):
            return Done(f"EnableTLS is 1 and {_security_dir(facts)}\\server.tls.xml exists")
        if value == 1:
            return Needed("EnableTLS is 1 but server.tls.xml is missing: enable again")
        return Needed(f"EnableTLS is {_enable_tls_text(facts)}")
    if op == "disable":
        if tls_configured(facts) is False:
            return Done(f"EnableTLS is {_enable_tls_text(facts)}")
        return Needed(f"EnableTLS is {_enable_tls_text(facts)}")
    if op == "restart":
        return _restart_status(facts, expect_tls=expect_tls, changed_at=changed_at)
    raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")


def _push_pfx_status(
    facts: Mapping[str, Any], pfx_sha256: str | None, pfx_file_sha256: str | None
) -> Done | Needed:
    if not pfx_sha256:
        return Needed("the certificate does not exist yet")
    if _get(facts, "security", "cert_sha256") == pfx_sha256 and _file_present(facts, "tealeaf.p12"):
        return Done(
            f"already imported (certificate fingerprint {short_sha(pfx_sha256)}): no copy needed"
        )
    files = facts.get("files") or {}
    for path, info in files.items():
        if pfx_file_sha256 and isinstance(info, Mapping) and info.get("sha256") == pfx_file_sha256:
            return Done(f"{path} already is the PFX (file hash {short_sha(pfx_file_sha256)})")
    return Needed("the PFX is not on the host (or its file hash is unknown)")


def _import_status(facts: Mapping[str, Any], pfx_sha256: str | None) -> Done | Needed:
    folder = _security_dir(facts)
    installed = _get(facts, "security", "cert_sha256")
    if not pfx_sha256:
        return Needed("the certificate does not exist yet")
    missing = _missing_security_files(facts, ("tealeaf.crt", "tealeaf.p12"))
    if missing:
        return Needed(f"{', '.join(missing)} missing in {folder}")
    if installed != pfx_sha256:
        return Needed(
            f"{folder}\\tealeaf.crt holds {short_sha(installed)}, not the PFX's "
            f"{short_sha(pfx_sha256)}"
        )
    return Done(
        f"{folder}\\tealeaf.crt and tealeaf.p12 carry the PFX's certificate "
        f"({short_sha(pfx_sha256)})"
    )


def _restart_status(
    facts: Mapping[str, Any], *, expect_tls: bool, changed_at: str | None
) -> Done | Needed:
    wanted = "tls" if expect_tls else "plain"
    mode = _get(facts, "data_service", "mode")
    started = _get(facts, "data_service", "started_at")
    if mode is None:
        return Needed("no Data Service startup found in its log")
    if mode != wanted:
        return Needed(f"the Data Service last started in {mode} mode; {wanted} is wanted")
    if tls_configured(facts) is not expect_tls:
        # the services read EnableTLS when they start: a registry that disagrees with the
        # wanted state means an enable/disable is still to come, and a restart after it
        return Needed(
            f"the Data Service runs {mode} but EnableTLS is "
            f"{_enable_tls_text(facts)}: the {'enable' if expect_tls else 'disable'} "
            "and a restart after it are still to come"
        )
    if changed_at is not None:
        since, began = _host_time(changed_at), _host_time(started)
        if since is None or began is None or began < since:
            return Needed(
                f"the Data Service started at {started}, before the change at {changed_at}"
            )
    return Done(
        f"EnableTLS is {_enable_tls_text(facts)} and the Data Service started in "
        f"{wanted} mode at {started}"
    )


# --- drift across the fleet ---------------------------------------------------------------------


def fleet_drift(
    facts_by_host: Mapping[str, Mapping[str, Any]],
    *,
    pfx_sha256: str | None,
    roles: Mapping[str, str] | None = None,
    expiry_days: int = CERT_EXPIRY_WARNING.days,
) -> list[Finding]:
    """Where hosts disagree with each other (or with the PFX) in ways that break TLS, plus
    a `cert_expiring` warning per host whose installed certificate ends within `expiry_days`.

    `roles` (host -> role) tells TLS roles from RTV workstations; hosts missing from it count as
    TLS roles. Unreachable hosts are left out by the caller: drift is over what was seen.
    """
    roles = roles or {}
    names = list(facts_by_host)
    tls_hosts = [n for n in names if _role_is_tls(roles.get(n, "other"))]
    out: list[Finding] = []
    out.extend(_certificate_drift(facts_by_host, names, pfx_sha256))
    out.extend(_enable_drift(facts_by_host, tls_hosts))
    for name in tls_hosts:
        out.extend(_host_consistency(name, facts_by_host[name]))
    for name in names:
        out.extend(_stopped_services(name, facts_by_host[name]))
        out.extend(_unreadable_security_files(name, facts_by_host[name]))
        out.extend(_cert_expiry(name, facts_by_host[name], expiry_days))
    out.extend(_build_drift(facts_by_host, names))
    return out


def _certificate_drift(
    facts_by_host: Mapping[str, Mapping[str, Any]], names: list[str], pfx_sha256: str | None
) -> list[Finding]:
    present = {n: _get(facts_by_host[n], "security", "cert_sha256") for n in names}
    present = {n: sha for n, sha in present.items() if sha}
    if not present:
        return []
    out: list[Finding] = []
    if pfx_sha256:
        reference, source = pfx_sha256, "the PFX"
    else:
        reference, source = majority_fingerprint(facts_by_host), "the majority"
        if reference is None:  # a tie
            groups = "; ".join(
                f"{short_sha(sha)} on "
                + ", ".join(sorted(n for n, s in present.items() if s == sha))
                for sha, _ in Counter(present.values()).most_common()
            )
            return [
                Finding(
                    BLOCKER,
                    "cert_mismatch",
                    f"tealeaf.crt differs across hosts with no majority: {groups}; "
                    "import one PFX everywhere",
                    tuple(sorted(present)),
                )
            ]
    outliers = sorted(n for n, sha in present.items() if sha != reference)
    for name in outliers:
        out.append(
            Finding(
                BLOCKER,
                "cert_mismatch",
                f"{_security_dir(facts_by_host[name])}\\tealeaf.crt holds "
                f"{short_sha(present[name])}, not {source}'s {short_sha(reference)}: "
                "import the fleet's PFX here",
                (name,),
            )
        )
    return out


def _enable_drift(
    facts_by_host: Mapping[str, Mapping[str, Any]], tls_hosts: list[str]
) -> list[Finding]:
    on = sorted(n for n in tls_hosts if _enable_tls(facts_by_host[n]) == 1)
    off = sorted(n for n in tls_hosts if n not in on)
    if on and off:
        return [
            Finding(
                BLOCKER,
                "enable_tls_mixed",
                f"{TEALEAF_KEY}\\EnableTLS is 1 on {', '.join(on)} but not on "
                f"{', '.join(off)}: TLS must be on everywhere or nowhere (finish the "
                "rollout or run `fleet rollback`)",
                tuple(on + off),
            )
        ]
    return []


def _host_consistency(name: str, facts: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    value = _enable_tls(facts)
    folder = _security_dir(facts)
    mode = _get(facts, "data_service", "mode")
    if RegistryNumber.parse(value).not_a_number:
        out.append(_enable_tls_not_numeric(name, value))
    if value == 1:
        missing = _missing_security_files(facts)
        if missing:
            out.append(
                Finding(
                    BLOCKER,
                    "cert_files_missing",
                    f"EnableTLS is 1 but {', '.join(missing)} missing in {folder}: "
                    "import the PFX and enable again, or set EnableTLS to 0 (`--playbook "
                    "prerequisites` does); until then do NOT restart the TeaLeaf services "
                    "(the Data Service would not start)",
                    (name,),
                )
            )
    if mode is None and data_service_names(facts):
        out.append(
            Finding(
                WARNING,
                "data_service_unknown",
                "no Data Service startup block found in "
                r"<install>\Logs\TLDataService*.log: its mode is unknown",
                (name,),
            )
        )
    elif value == 1 and mode != "tls":
        out.append(
            Finding(
                BLOCKER,
                "data_service_mode",
                f"EnableTLS is 1 but the Data Service last started in {mode} mode "
                f"(its log shows 'Port:', not 'TLS Port:'): {restart_advice(facts)}",
                (name,),
            )
        )
    elif value != 1 and mode == "tls":
        out.append(
            Finding(
                BLOCKER,
                "data_service_mode",
                f"EnableTLS is {_enable_tls_text(facts)} but the "
                "Data Service last started in tls mode (its log shows 'TLS Port:'): "
                "restart the TeaLeaf services",
                (name,),
            )
        )
    return out


def pending_services(facts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, state) of the TeaLeaf services in a pending state (StartPending, ...): on their
    way somewhere, so neither "running" nor "stopped" can be trusted yet."""
    return [
        (str(s.get("name")), str(s.get("state")))
        for s in _tealeaf_services(facts)
        if s.get("state") in PENDING_STATES
    ]


def _unreadable_security_files(name: str, facts: Mapping[str, Any]) -> list[Finding]:
    """A security file that exists but could not be read (locked by another process, ACL):
    facts report `{"error": ...}` for it instead of failing the host."""
    files = _get(facts, "security", "files") or {}
    out = []
    for file_name, entry in files.items():
        if isinstance(entry, Mapping) and entry.get("error"):
            out.append(
                Finding(
                    WARNING,
                    "security_file_unreadable",
                    f"{_security_dir(facts)}\\{file_name} cannot be read: {entry['error']} "
                    "(its size and SHA-256 are unknown; find what holds it)",
                    (name,),
                )
            )
    return out


def stopped_auto_services(
    facts: Mapping[str, Any], *, pending: bool = True, exempt: Collection[str] = ()
) -> list[str]:
    """The automatic-start TeaLeaf services that are not running, each with its state when it
    is not plainly "Stopped": on an HBR or Canister, one of them means the host is not doing
    its share, and restarting another of its group would leave that share to nobody."""
    return sorted(
        str(s.get("name")) + ("" if s.get("state") == "Stopped" else f" ({s.get('state')})")
        for s in _tealeaf_services(facts)
        if str(s.get("start_mode", "")).lower() in ("auto", "automatic")
        and s.get("state") != "Running"
        and (pending or s.get("state") not in PENDING_STATES)
        and str(s.get("name")) not in exempt
    )


def down_for_rollback(facts: Mapping[str, Any]) -> list[str]:
    """The stopped automatic-start TeaLeaf services of a host with EnableTLS=1 (seen before a
    rollback changed it): a rollback's restart starts them, as the rolling group's first."""
    if tls_configured(facts) is not True:
        return []
    return [
        str(s.get("name"))
        for s in _tealeaf_services(facts)
        if str(s.get("start_mode", "")).lower() in ("auto", "automatic")
        and s.get("state") in ("Stopped",)
    ]


def _stopped_services(
    name: str,
    facts: Mapping[str, Any],
    role: str | None = None,
    exempt: Collection[str] = (),
    *,
    reboot_due: bool = False,
    expect_tls: bool = True,
) -> list[Finding]:
    """`service_stopped`: a warning, and a blocker on an HBR or Canister (with `role` given,
    i.e. in a preflight): the other hosts of its group restart one at a time on the
    assumption that this one carries the load meanwhile (vendor procedure, "Minimize
    disruption"). Leave the host out of the run (`--limit`) to go on without it. `exempt`:
    services an unfinished restart of this change stopped (the resumed run starts them)."""
    # a preflight names a pending service once, as `service_pending`
    stopped = stopped_auto_services(facts, pending=role is None, exempt=exempt)
    if not stopped:
        return []
    if reboot_due and role is not None:
        # a reboot this tool still owes the host starts its automatic services (a rollout is
        # blocked by the pending reboot itself; the prerequisites playbook reboots it)
        return [
            Finding(
                WARNING,
                "service_stopped",
                f"automatic-start TeaLeaf service(s) not running: {', '.join(stopped)}; the "
                "reboot pending on this host starts them",
                (name,),
            )
        ]
    if role is not None and not expect_tls and tls_configured(facts) is True:
        # a rollback after the common failed rollout (services that did not start with TLS):
        # this run sets EnableTLS to 0 and its restart starts them, this host first in its
        # group (RunContext.rolling_order); the peer check still guards every other restart
        return [
            Finding(
                WARNING,
                "service_stopped",
                f"automatic-start TeaLeaf service(s) not running: {', '.join(stopped)}; with "
                "EnableTLS=1 here, this rollback's restart (EnableTLS 0) starts them, this host "
                "first of its group",
                (name,),
            )
        ]
    if facts.get("enable_tls") == 1 and not pair_imported(facts):
        # why they are down is known, and starting them would fail the same way: a warning
        # with that advice (the preset EnableTLS is a rollout blocker of its own; the
        # prerequisites playbook sets it to 0, and the peer check still guards every restart)
        return [
            Finding(
                WARNING,
                "service_stopped",
                f"automatic-start TeaLeaf service(s) not running: {', '.join(stopped)}; "
                + NO_PAIR_ADVICE,
                (name,),
            )
        ]
    message = (
        f"automatic-start TeaLeaf service(s) not running: {', '.join(stopped)} "
        "(restarts leave stopped services stopped: start them if they should run)"
    )
    severity = WARNING
    if role in SERIAL_GROUP_ROLES:
        severity = BLOCKER
        message += (
            f"; on {'an HBR' if role == 'hbr' else 'a ' + role.capitalize()} this blocks the "
            f"run: restarting another {role} meanwhile would leave this one's share to "
            "nobody (captured data lost); start it, or leave this host out with --limit"
        )
    return [Finding(severity, "service_stopped", message, (name,))]


def cert_not_after(facts: Mapping[str, Any]) -> tuple[datetime | None, str]:
    """The installed certificate's end and its zone: UTC (`cert_not_after_utc`) when the facts
    have it, else host-local (`cert_not_after`, facts of an older tool)."""
    utc = _host_time(_get(facts, "security", "cert_not_after_utc"))
    if utc is not None:
        return utc, "UTC"
    return _host_time(_get(facts, "security", "cert_not_after")), "host clock"


def cert_days_left(facts: Mapping[str, Any]) -> int | None:
    """Whole days from the host's clock to its installed certificate's end, both in UTC when
    the facts have them (a zone or daylight-saving change moves neither), else both
    host-local; negative once expired; None when either is unknown."""
    not_after, zone = cert_not_after(facts)
    now = _host_time(facts.get("utc_now" if zone == "UTC" else "now"))
    if not_after is None or now is None:
        return None
    return int((not_after - now).total_seconds() // 86400)


def _cert_expiry(name: str, facts: Mapping[str, Any], expiry_days: int) -> list[Finding]:
    left = cert_days_left(facts)
    if left is None or left >= expiry_days:
        return []
    not_after, zone = cert_not_after(facts)
    state = "expired" if left < 0 else f"expires in {left} day(s)"
    return [
        Finding(
            WARNING,
            "cert_expiring",
            f"{_security_dir(facts)}\\tealeaf.crt {state}, on {not_after:%Y-%m-%d} ({zone}) "
            f"(watched: {expiry_days} days): plan a certificate rotation (`fleet cert create`, "
            "then `fleet rollout INVENTORY --playbook rotate`)",
            (name,),
        )
    ]


def _build_drift(facts_by_host: Mapping[str, Mapping[str, Any]], names: list[str]) -> list[Finding]:
    builds = {n: facts_by_host[n].get("tealeaf_build") for n in names}
    known = {n: b for n, b in builds.items() if b}
    if len(set(known.values())) <= 1:
        return []
    listing = "; ".join(
        f"{b} on {', '.join(sorted(n for n, x in known.items() if x == b))}"
        for b in sorted(set(known.values()))
    )
    return [
        Finding(
            WARNING,
            "build_mismatch",
            f"Tealeaf builds differ ({TEALEAF_KEY}\\Version): {listing}",
            tuple(sorted(known)),
        )
    ]


def majority_fingerprint(facts_by_host: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The certificate fingerprint most hosts carry; None when none has one or on a tie."""
    counts = Counter(
        sha for f in facts_by_host.values() if (sha := _get(f, "security", "cert_sha256"))
    ).most_common(2)
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def has_blockers(findings: list[Finding]) -> bool:
    """True when any finding is a blocker."""
    return any(f.severity == BLOCKER for f in findings)
