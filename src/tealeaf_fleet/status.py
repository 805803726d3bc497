"""The state of a whole fleet, read-only: facts from every Windows host, a live TLS handshake to
each TLS-role host's Data Service and TMS ports, and the findings that make it (in)consistent.

`gather()` does the I/O; `evaluate()` is pure (facts and handshakes in, `FleetStatus` out), so
`fleet status`, the engine's verify phase and `fleet demo` share one judgement and the rules can
be tested without a network. The CLI only renders a `FleetStatus`.

What "consistent" means: no blocker among the findings. A host that cannot be reached is a
blocker (we cannot vouch for it); so is a handshake that contradicts the host's EnableTLS, or that
shows a certificate other than the reference. The reference certificate is the inventory's PFX
when it exists and opens with its password, else the one most hosts carry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import CertificateError, FleetError, InputError
from tealeaf_fleet.inventory import TLS_ROLES
from tealeaf_fleet.ops import checks
from tealeaf_fleet.ops.checks import BLOCKER, INFO, WARNING, Finding
from tealeaf_fleet.secrets import redact

if TYPE_CHECKING:
    from tealeaf_fleet.certarchive import Rotation
    from tealeaf_fleet.inventory import Fleet, Host

log = logging.getLogger(__name__)

PORT_NAMES = ("data_service", "tms", "search")
PORT_LABELS = {"data_service": "Data Service", "tms": "TMS", "search": "Search Server"}
SEARCH_ROLES = ("canister",)  # where the Search Server listens (search_port)
PCA_NOTE = (
    "Linux PCA: not contacted (inter-process TLS does not apply; securing the pipeline "
    "needs PCA build 3682-24 or later and the same PFX)"
)
RTV_NOTE = (
    "RTV workstation (import only): certificate checked; no services, no enable, no "
    "handshake expected"
)
TLS_NOTE = "facts and live handshakes on the Data Service and TMS ports"
CANISTER_NOTE = TLS_NOTE + " and the Search Server port"

# A collector returns, per Windows host name, its facts dict or the error that stopped it.
Collector = Callable[..., Mapping[str, Any]]
Prober = Callable[[str, int, float], Any]
# Runs the vendor's status tool on one host (given its facts): `ops.status_tool` result dict.
ToolRunner = Callable[["Host", Mapping[str, Any]], Mapping[str, Any]]
STATUS_TOOL_ROLES = ("portal",)
Progress = Callable[[str, str], None]  # (host name, "ok" | "failed")


@dataclass(frozen=True)
class Handshake:
    """One TLS probe from the controller: `kind` is tls | plain | unreachable."""

    port: int
    kind: str
    sha256: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "kind": self.kind, "sha256": self.sha256, "detail": self.detail}


@dataclass
class HostStatus:
    """One row of `fleet status`: what was read from the host and what could not be."""

    name: str
    role: str
    address: str
    contacted: bool
    note: str
    facts: dict[str, Any] | None = None
    error: str | None = None
    handshakes: dict[str, Handshake] = field(default_factory=dict)
    status_tool: dict[str, Any] | None = None  # TealeafStatus -verbose (Portal), None: not run

    @property
    def installed_sha256(self) -> str | None:
        return ((self.facts or {}).get("security") or {}).get("cert_sha256")

    @property
    def presented_sha256(self) -> list[str]:
        """The certificates this host's ports present now (what its running services use)."""
        return list(dict.fromkeys(h.sha256 for h in self.handshakes.values() if h.sha256))

    def expiry(self) -> dict[str, Any] | None:
        """The installed certificate's end (host-local and UTC) and the days left, when known."""
        if self.facts is None:
            return None
        sec = self.facts.get("security") or {}
        return {
            "not_after": sec.get("cert_not_after"),
            "not_after_utc": sec.get("cert_not_after_utc"),
            "days_left": checks.cert_days_left(self.facts),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "status_tool": self.status_tool,
            "name": self.name,
            "role": self.role,
            "address": self.address,
            "contacted": self.contacted,
            "note": self.note,
            "error": self.error,
            "expiry": self.expiry(),
            "facts": self.facts,
            "handshakes": {k: v.to_dict() for k, v in self.handshakes.items()},
        }


@dataclass
class FleetStatus:
    """The whole fleet's state and the findings over it."""

    hosts: list[HostStatus]
    findings: list[Finding]
    reference_sha256: str | None
    reference_source: str | None  # "pfx" | "majority" | "rotation" | None
    rotation: Rotation | None = None
    expiry_days: int = checks.CERT_EXPIRY_WARNING.days

    @property
    def consistent(self) -> bool:
        return not checks.has_blockers(self.findings)

    @property
    def rotation_halted(self) -> bool:
        """The last rotation stopped before finishing (failed, crashed or interrupted): the
        fleet runs two pairs until someone reruns it, which a scheduler must hear about."""
        return self.rotation is not None and self.rotation.state in (
            "failed",
            "crashed",
            "interrupted",
        )

    @property
    def exit_code(self) -> int:
        """0: consistent, nothing expiring, no halted rotation; 1 otherwise."""
        return 0 if self.consistent and not self.expiring and not self.rotation_halted else 1

    @property
    def expiring(self) -> list[str]:
        """Hosts whose installed certificate ends within `expiry_days` (or has ended)."""
        return sorted({h for f in self.findings if f.code == "cert_expiring" for h in f.hosts})

    def certificates(self) -> list[dict[str, Any]]:
        """Which hosts carry (tealeaf.crt) and which present (live handshakes) each
        certificate: one fingerprint normally, two during a rotation."""
        table: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            marks = [(host.installed_sha256, "installed")]
            marks += [(sha, "presented") for sha in host.presented_sha256]
            for sha, how in marks:
                if not sha:
                    continue
                row = table.setdefault(sha, {"sha256": sha, "installed": [], "presented": []})
                row[how].append(host.name)
        return list(table.values())

    def host(self, name: str) -> HostStatus:
        return next(h for h in self.hosts if h.name == name)

    def findings_for(self, name: str) -> list[Finding]:
        return [f for f in self.findings if name in f.hosts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "reference": {"sha256": self.reference_sha256, "source": self.reference_source},
            "rotation": self.rotation.to_dict() if self.rotation else None,
            "certificates": self.certificates(),
            "expiry_days": self.expiry_days,
            "expiring": self.expiring,
            "hosts": [h.to_dict() for h in self.hosts],
            "findings": [f.to_dict() for f in self.findings],
        }


# --- gathering ----------------------------------------------------------------------------------


def pfx_fingerprint(fleet: Fleet) -> tuple[str | None, list[Finding]]:
    """The inventory PFX's certificate fingerprint when the file exists and opens, else None
    (plus a warning saying why it could not be used)."""
    path = fleet.certificate.path
    if not path.exists():
        return None, []
    from tealeaf_fleet import certs

    try:
        pfx = certs.load_pfx(path.read_bytes(), fleet.pfx_password(), name=str(path))
    except (CertificateError, InputError) as exc:
        return None, [
            Finding(
                WARNING,
                "pfx_unusable",
                f"{path} exists but cannot be opened ({redact(str(exc))}): "
                "comparing certificates with the majority instead",
            )
        ]
    except OSError as exc:
        return None, [
            Finding(
                WARNING,
                "pfx_unusable",
                f"{path} cannot be read ({exc.strerror}): comparing "
                "certificates with the majority instead",
            )
        ]
    return pfx.sha256, []


def _default_collector(
    fleet: Fleet, *, forks: int, on_progress: Progress | None
) -> Mapping[str, Any]:
    from tealeaf_fleet.ops import facts

    return facts.collect(fleet, forks=forks, on_progress=on_progress)


def _default_prober(address: str, port: int, timeout_s: float) -> Any:
    from tealeaf_fleet import tlsprobe

    return tlsprobe.handshake(address, port, timeout_s=timeout_s)


def as_handshake(port: int, result: Any) -> Handshake:
    """A probe result (`tlsprobe.ProbeResult`, or a test's stand-in with `kind` and `sha256`)
    as a status row shows it: the error, else the negotiated protocol."""
    kind = str(result.kind)
    detail = getattr(result, "error", None)
    if detail is None and kind == "tls":
        detail = getattr(result, "protocol", None)
    return Handshake(
        port=port,
        kind=kind,
        sha256=getattr(result, "sha256", None),
        detail=redact(str(detail)) if detail else None,
    )


def gather(
    fleet: Fleet,
    *,
    forks: int = 8,
    probe: bool = True,
    timeout_s: float = 10.0,
    on_progress: Progress | None = None,
    collector: Collector | None = None,
    prober: Prober | None = None,
    reboot_records: Mapping[str, list[dict]] | None = None,
    status_tool: bool = True,
    tool_runner: ToolRunner | None = None,
    rotation: Rotation | None = None,
    expiry_days: int = checks.CERT_EXPIRY_WARNING.days,
) -> FleetStatus:
    """Read every Windows host's facts in parallel, probe TLS-role ports, run the vendor's
    status tool on the Portal(s) (`status_tool`), evaluate.

    `collector`, `prober` and `tool_runner` default to `ops.facts.collect`,
    `tlsprobe.handshake` and a connection per Portal; they are parameters so that the engine
    can pass its own connections and the demo its own timeouts.
    """
    collect = collector or _default_collector
    results = dict(collect(fleet, forks=forks, on_progress=on_progress))
    pfx_sha256, pfx_findings = pfx_fingerprint(fleet)
    handshakes: dict[str, dict[str, Handshake]] = {}
    if probe:
        handshakes = probe_fleet(fleet, forks=forks, timeout_s=timeout_s, prober=prober)
    tools: dict[str, dict[str, Any]] = {}
    if status_tool:
        tools = run_status_tools(fleet, results, forks=forks, runner=tool_runner)
    status = evaluate(
        fleet.hosts.values(),
        results,
        handshakes,
        pfx_sha256=pfx_sha256,
        tools=tools,
        rotation=rotation,
        expiry_days=expiry_days,
    )
    status.findings[:0] = pfx_findings
    tls12: dict[str, Any] = {}
    if probe:
        known = {r.name: r.facts for r in status.hosts if r.facts is not None}
        tls12 = probe_tls12(fleet, known, forks=forks, timeout_s=timeout_s, prober=prober)
    status.findings.extend(prerequisite_findings(fleet, status, reboot_records or {}, tls12))
    return status


def probe_tls12(
    fleet: Fleet,
    facts: Mapping[str, Any],
    *,
    forks: int = 8,
    timeout_s: float = 10.0,
    prober: Prober | None = None,
) -> dict[str, Any]:
    """host -> a TLS 1.2-only handshake to its TMS port, on the 2008 R2 hosts whose facts were
    read (`ops.checks.tls12_probe_due`): whether SCHANNEL has TLS 1.2 on since the last boot.
    `prober` (a test's stand-in) replaces `tlsprobe.tls12_active`."""
    from tealeaf_fleet import tlsprobe

    def default(address: str, port: int, timeout_s: float) -> Any:
        return tlsprobe.tls12_active(address, port, timeout_s=timeout_s)

    shake = prober or default
    due = [
        h
        for h in fleet.hosts.values()
        if isinstance(facts.get(h.name), Mapping) and checks.tls12_probe_due(h, facts[h.name])
    ]
    if not due:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(due)))) as pool:
        futures = {h.name: pool.submit(shake, h.address, h.tms_port, timeout_s) for h in due}
        return {name: future.result() for name, future in futures.items()}


def prerequisite_findings(
    fleet: Fleet,
    status: FleetStatus,
    reboot_records: Mapping[str, list[dict]],
    tls12_probes: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """The vendor prerequisites per host read (warnings: `prerequisites.status_findings`)."""
    from tealeaf_fleet.prerequisites import status_findings

    out: list[Finding] = []
    for row in status.hosts:
        host = fleet.hosts.get(row.name)
        if host is None or row.facts is None:
            continue
        out.extend(
            status_findings(
                fleet,
                host,
                row.facts,
                reboot_records.get(row.name, []),
                (tls12_probes or {}).get(row.name),
            )
        )
    return out


def ports_of(host: Host) -> list[tuple[str, int]]:
    """The ports a TLS-role host listens on that TLS covers, by name (none for other roles)."""
    if host.role not in TLS_ROLES:
        return []
    ports = [("data_service", host.data_service_port), ("tms", host.tms_port)]
    if host.role in SEARCH_ROLES:
        ports.append(("search", host.search_port))
    return ports


def probe_fleet(
    fleet: Fleet, *, forks: int, timeout_s: float, prober: Prober | None = None
) -> dict[str, dict[str, Handshake]]:
    """A handshake to every port `ports_of` names on every host, in parallel."""
    probe = prober or _default_prober
    targets = [(h, which, port) for h in fleet.hosts.values() for which, port in ports_of(h)]
    out: dict[str, dict[str, Handshake]] = {}
    if not targets:
        return out
    with ThreadPoolExecutor(max_workers=max(1, min(forks * 2, len(targets)))) as pool:
        futures = [
            (h, which, port, pool.submit(probe, h.address, port, timeout_s))
            for h, which, port in targets
        ]
        for h, which, port, future in futures:
            out.setdefault(h.name, {})[which] = as_handshake(port, future.result())
    return out


def _default_tool_runner(fleet: Fleet) -> ToolRunner:
    def run(host: Host, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        from tealeaf_fleet.ops import status_tool
        from tealeaf_fleet.transport import Connection

        password = None if host.winrm.transport == "certificate" else fleet.winrm_password(host)
        install = host.install_dir or fleet.install_dir or facts.get("install_dir")
        with Connection(host, password) as conn:
            return status_tool.run(conn, install).to_dict()

    return run


def run_status_tools(
    fleet: Fleet, results: Mapping[str, Any], *, forks: int, runner: ToolRunner | None = None
) -> dict[str, dict[str, Any]]:
    """`TealeafStatus -verbose` on every Portal whose facts were read, in parallel. A host the
    tool could not be run on maps to `{"present": None, "error": ...}` (not checked)."""
    run = runner or _default_tool_runner(fleet)
    targets = [
        h
        for h in fleet.hosts.values()
        if h.role in STATUS_TOOL_ROLES and isinstance(results.get(h.name), Mapping)
    ]

    def one(host: Host) -> dict[str, Any]:
        try:
            return dict(run(host, results[host.name]))
        except FleetError as exc:
            return {"present": None, "exit_code": None, "output": "", "error": error_text(exc)}

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(targets)))) as pool:
        return dict(zip([h.name for h in targets], pool.map(one, targets), strict=True))


def status_tool_findings(name: str, tool: Mapping[str, Any] | None) -> list[Finding]:
    """A warning when the status tool ran and failed (or did not finish); nothing when it is
    absent or could not be run (the report says "not checked" then)."""
    from tealeaf_fleet.ops.status_tool import PREREQUISITES_HINT

    if not tool or not tool.get("present"):
        return []
    code = tool.get("exit_code")
    if code == 0:
        return []
    if code is None:
        what = f"did not finish: {tool.get('error') or 'no exit code'}"
    else:
        lines = [ln.strip() for ln in str(tool.get("output") or "").splitlines() if ln.strip()]
        error = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
        what = f"exited {code}" + (f": {error}" if error else "")
    return [
        Finding(
            WARNING,
            "status_tool_failed",
            f"TealeafStatus -verbose {what}; {PREREQUISITES_HINT}",
            (name,),
        )
    ]


# --- evaluation (pure) --------------------------------------------------------------------------


def evaluate(
    hosts: Any,
    results: Mapping[str, Any],
    handshakes: Mapping[str, Mapping[str, Handshake]],
    *,
    pfx_sha256: str | None,
    tools: Mapping[str, Mapping[str, Any]] | None = None,
    rotation: Rotation | None = None,
    expiry_days: int = checks.CERT_EXPIRY_WARNING.days,
) -> FleetStatus:
    """Judge a fleet from per-host facts (or errors), handshakes and status-tool runs; no I/O.

    `results` maps a Windows host's name to its facts dict, or to an exception / error text
    when its facts could not be read. `rotation` (the state folder's last change, when it was
    a rotation): its pair is the reference, and while it has not finished, hosts carrying or
    presenting a pair of this fleet's archive are "rotation in progress", not a mismatch.
    """
    rows: list[HostStatus] = []
    findings: list[Finding] = []
    seen: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    for host in hosts:
        row = _row(host, results.get(host.name), handshakes.get(host.name, {}))
        rows.append(row)
        if row.facts is not None:
            seen[host.name] = row.facts
            roles[host.name] = host.role
        elif row.contacted:
            findings.append(
                Finding(
                    BLOCKER,
                    "host_unreachable",
                    f"facts could not be read: {row.error}",
                    (host.name,),
                )
            )
    if rotation is not None:
        pfx_sha256, source = rotation.new_sha256, "rotation"
    elif pfx_sha256:
        source = "pfx"
    if pfx_sha256:
        reference = pfx_sha256
    else:
        reference = checks.majority_fingerprint(seen)
        source = "majority" if reference else None
    drift = checks.fleet_drift(seen, pfx_sha256=pfx_sha256, roles=roles, expiry_days=expiry_days)
    findings.extend(drift)
    for row in rows:
        findings.extend(_handshake_findings(row, reference))
        tool = (tools or {}).get(row.name)
        if tool is not None:
            row.status_tool = dict(tool)
            findings.extend(status_tool_findings(row.name, tool))
    if rotation is not None and rotation.in_progress:
        findings = _rotation_in_progress(rows, findings, rotation)
    return FleetStatus(rows, findings, reference, source, rotation, expiry_days)


CERT_CODES = ("cert_mismatch", "handshake_cert")


def rotation_unknown(reason: str) -> Finding:
    """The journal could not be read: two pairs in the fleet may be a rotation under way."""
    return Finding(
        WARNING,
        "rotation_unknown",
        f"whether a rotation is under way is unknown ({reason}): two certificates in the fleet "
        "may be a halted rotation; `fleet history` and `fleet cert history` show the runs",
        ("controller",),
    )


def _rotation_in_progress(
    rows: list[HostStatus], findings: list[Finding], rotation: Rotation
) -> list[Finding]:
    """During a rotation two of the fleet's own pairs are expected: the certificate findings
    about hosts that carry and present only pairs of the archive become one warning saying
    which hosts run which pair. A pair from outside the archive stays a blocker."""
    ours = rotation.known | {rotation.new_sha256}
    by_name = {r.name: r for r in rows}

    def only_ours(name: str) -> bool:
        row = by_name.get(name)
        if row is None:
            return False
        shas = [row.installed_sha256, *row.presented_sha256]
        return all(sha in ours for sha in shas if sha)

    kept = [
        f
        for f in findings
        if f.code not in CERT_CODES or not all(only_ours(name) for name in f.hosts)
    ]
    old = {
        r.name: sorted({s for s in (r.installed_sha256, *r.presented_sha256) if s})
        for r in rows
        if only_ours(r.name)
        and any(s != rotation.new_sha256 for s in (r.installed_sha256, *r.presented_sha256) if s)
    }
    if not old:
        return kept
    groups = []
    for cert in FleetStatus(rows, [], None, None).certificates():
        if cert["sha256"] not in ours:
            continue
        which = "new" if cert["sha256"] == rotation.new_sha256 else "old"
        parts = []
        if cert["installed"]:
            parts.append("installed on " + ", ".join(cert["installed"]))
        if cert["presented"]:
            parts.append("presented by " + ", ".join(cert["presented"]))
        groups.append(f"{which} {checks.short_sha(cert['sha256'])}: {'; '.join(parts)}")
    kept.append(
        Finding(
            WARNING,
            "rotation_in_progress",
            f"rotation in progress to {checks.short_sha(rotation.new_sha256)} (run "
            f"{rotation.run}, {rotation.state}): " + " | ".join(groups) + "; rerun the rotation "
            f"(`{rotation.resume_command}`) to finish: finished steps are not repeated",
            tuple(sorted(old)),
        )
    )
    return kept


def _row(host: Host, result: Any, handshakes: Mapping[str, Handshake]) -> HostStatus:
    if host.role == "pca":
        return HostStatus(host.name, host.role, host.address, False, PCA_NOTE)
    note = {"rtv": RTV_NOTE, "canister": CANISTER_NOTE}.get(host.role, TLS_NOTE)
    row = HostStatus(host.name, host.role, host.address, True, note, handshakes=dict(handshakes))
    if isinstance(result, Mapping):
        row.facts = dict(result)
    elif result is None:
        row.error = "no facts were returned for this host"
    else:
        row.error = error_text(result) if isinstance(result, BaseException) else redact(str(result))
    return row


def _handshake_findings(row: HostStatus, reference: str | None) -> list[Finding]:
    if row.role not in TLS_ROLES or not row.handshakes:
        return []
    # EnableTLS that is not 0/1/absent (e.g. the REG_SZ "true"): unknown, so not judged here
    enabled = checks.tls_configured(row.facts) if row.facts is not None else None
    advice = checks.restart_advice(row.facts or {})
    out: list[Finding] = []
    for which in PORT_NAMES:
        shake = row.handshakes.get(which)
        if shake is None:
            continue
        label = f"{PORT_LABELS[which]} port {shake.port}"
        if which == "search" and row.facts is not None and not _search_running(row.facts):
            out.append(
                Finding(
                    INFO,
                    "search_not_running",
                    f"{label}: not judged, no TeaLeaf Search Server service is running here",
                    (row.name,),
                )
            )
            continue
        out.extend(_judge(row.name, label, which, shake, enabled, reference, advice))
    return out


def _search_running(facts: Mapping[str, Any]) -> bool:
    """A running service whose name or display name says Search Server (TLSearchServer)."""
    for svc in facts.get("services") or []:
        if not isinstance(svc, Mapping) or svc.get("state") != "Running":
            continue
        text = f"{svc.get('name') or ''} {svc.get('display_name') or ''}".lower()
        if "searchserver" in text.replace(" ", ""):
            return True
    return False


def _judge(
    name: str,
    label: str,
    which: str,
    shake: Handshake,
    enabled: bool | None,
    reference: str | None,
    advice: str = "restart the TeaLeaf services",
) -> list[Finding]:
    hosts = (name,)
    if shake.kind == "unreachable":
        detail = f" ({shake.detail})" if shake.detail else ""
        return [
            Finding(
                BLOCKER,
                "handshake_unreachable",
                f"{label} does not answer from the controller{detail}: is the service "
                "running and the port open?",
                hosts,
            )
        ]
    if enabled is None:  # facts unknown: show, do not judge
        return []
    if enabled:
        if shake.kind != "tls":
            return [
                Finding(
                    BLOCKER,
                    "handshake_plain",
                    f"{label} answers without TLS although EnableTLS is 1: {advice}",
                    hosts,
                )
            ]
        if not shake.sha256:
            return [
                Finding(
                    BLOCKER,
                    "handshake_refused",
                    f"{label} refuses the TLS handshake ({shake.detail or 'no certificate'}): "
                    "a stale SSL session cache? `fleet troubleshoot` checks and clears it",
                    hosts,
                )
            ]
        if reference and shake.sha256 != reference:
            return [
                Finding(
                    BLOCKER,
                    "handshake_cert",
                    f"{label} presents certificate {checks.short_sha(shake.sha256)}, not "
                    f"the fleet's {checks.short_sha(reference)}: import the PFX and "
                    "restart the TeaLeaf services",
                    hosts,
                )
            ]
        return []
    if which in ("data_service", "search") and shake.kind == "tls":
        return [
            Finding(
                BLOCKER,
                "handshake_tls",
                f"{label} answers with TLS although EnableTLS is not 1: restart the "
                "TeaLeaf services so that it listens plainly again",
                hosts,
            )
        ]
    if which == "tms" and shake.kind != "tls":
        return [
            Finding(
                INFO,
                "tms_plain",
                f"{label} answers without TLS (TMS normally uses its own legacy "
                "certificate while EnableTLS is 0)",
                hosts,
            )
        ]
    return []


def error_text(exc: BaseException) -> str:
    """One redacted line for a host that could not be read (the row already names the host)."""
    if isinstance(exc, FleetError):
        text = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text) or type(exc).__name__
