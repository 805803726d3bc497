"""`fleet troubleshoot`: the vendor's troubleshooting list, first read-only, then its fixes.

The vendor's list, in its order ("Troubleshoot" in the TLS procedure): EnableTLS is 1 on every
server; the certificate pair is present (and, since one pair is shared, identical) everywhere;
the Data Service log says which mode it started in; then, if connections still fail, clear the
SSL cache: reboot, or "Clear SSL State" and restart Cryptographic Services. `checklist()` turns
one `status.gather()` into one verdict per item (pure, so the wording is tested without a
network); a value that could not be read makes its item "not checked", never "ok".

The fixes run through the engine like a rollout (journal, locks, events, evidence, `fleet
report`): `fix_plan()` builds the plan: read facts, the fix, then verify. `reboot` restarts
servers under the rollout's rules: HBRs one at a time, then Canisters one at a time, each
behind every health gate, then the rest in parallel.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet import __version__
from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import ROLES, TLS_ROLES, WINDOWS_ROLES
from tealeaf_fleet.ops.checks import short_sha, tls_configured
from tealeaf_fleet.playbooks import HEALTH_GATES, sha256_json

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet, Host
    from tealeaf_fleet.status import FleetStatus, HostStatus

OK, FAIL, NOT_CHECKED = "ok", "FAIL", "not checked"
FIXES = ("ssl-cache", "cryptsvc", "reboot")
FIX_OPS = {"ssl-cache": "clear_ssl_cache", "cryptsvc": "restart_cryptsvc"}
REFUSED = "handshake_refused"
SERIAL_ROLES = ("hbr", "canister")  # restarted one at a time, in this order
# what a cache fix must leave behind before the next server: its TeaLeaf services still up
# and its ports answering TLS with the fleet's certificate (no restart, so no new log block)
FIX_GATES = ("services", "handshake")
HANDSHAKE_CODES = ("handshake_unreachable", "handshake_plain", "handshake_cert", "handshake_tls")


@dataclass(frozen=True)
class Verdict:
    item: str
    status: str  # OK | FAIL | NOT_CHECKED
    detail: str
    hosts: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.status:<11} {self.item}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def limit_fleet(fleet: Fleet, limit: str | None) -> Fleet:
    """The fleet restricted to `--limit` (comma-separated host names or roles); InputError
    naming what matches nothing."""
    if not limit:
        return fleet
    wanted = [w.strip() for w in limit.split(",") if w.strip()]
    keep: dict[str, Host] = {}
    for word in wanted:
        if word in fleet.hosts:
            keep[word] = fleet.hosts[word]
        elif word in ROLES:
            keep.update({n: h for n, h in fleet.hosts.items() if h.role == word})
        else:
            raise InputError(
                f"{word!r} is neither a host nor a role of the inventory", field="--limit"
            )
    if not keep:
        raise InputError("no host matches", field="--limit")
    ordered = {n: h for n, h in fleet.hosts.items() if n in keep}
    return dataclasses.replace(fleet, hosts=ordered)


# --- the read-only checklist -------------------------------------------------------------------


def checklist(status: FleetStatus) -> list[Verdict]:
    """One verdict per item of the vendor's list, over the hosts in `status`. An item with no
    host in scope (`--limit rtv`, no Data Service anywhere) is "not checked", never "ok"."""
    servers = [h for h in status.hosts if h.role in TLS_ROLES]
    holders = [h for h in status.hosts if h.role in WINDOWS_ROLES]
    return [
        _enable_tls(servers),
        _pair_present(holders),
        _pair_identical(holders, status.reference_sha256),
        _data_service_modes(servers),
        _handshakes(servers, status),
        _ssl_cache(servers, status),
    ]


def _verdict(
    item: str,
    bad: list[str],
    unknown: list[str],
    good: str,
    what: str,
    *,
    judged: int = 1,
    none: str = "no host in scope to check it on",
) -> Verdict:
    """FAIL naming `bad`; else "not checked" naming `unknown`, or when nothing was `judged`."""
    if bad:
        text = f"{what}: {', '.join(bad)}"
        if unknown:
            text += f"; not read: {', '.join(_names(unknown))}"
        return Verdict(item, FAIL, text, tuple(_names(bad)))
    if unknown:
        return Verdict(item, NOT_CHECKED, f"not read on {', '.join(_names(unknown))}")
    if judged <= 0:
        return Verdict(item, NOT_CHECKED, none)
    return Verdict(item, OK, good)


NONE_IN_SCOPE = "no host in scope to check it on"


def _names(texts: Iterable[str]) -> list[str]:
    return [t.split(" ")[0] for t in texts]


def _enable_tls(servers: list[HostStatus]) -> Verdict:
    from tealeaf_fleet.ops.facts import RegistryNumber

    bad, unknown = [], []
    for h in servers:
        if h.facts is None:
            unknown.append(h.name)
        elif tls_configured(h.facts) is not True:
            bad.append(f"{h.name} ({RegistryNumber.parse(h.facts.get('enable_tls')).describe()})")
    return _verdict(
        "EnableTLS on every Tealeaf server",
        bad,
        unknown,
        f"1 on all {len(servers)} server(s)",
        "not 1 on",
        judged=len(servers),
    )


def _pair_present(holders: list[HostStatus]) -> Verdict:
    bad, unknown = [], []
    for h in holders:
        if h.facts is None:
            unknown.append(h.name)
            continue
        files = (h.facts.get("security") or {}).get("files") or {}
        missing = [n for n in ("tealeaf.crt", "tealeaf.p12") if not _readable(files.get(n))]
        if missing:
            bad.append(f"{h.name} ({', '.join(missing)})")
    return _verdict(
        "certificate pair present",
        bad,
        unknown,
        f"tealeaf.crt and tealeaf.p12 on all {len(holders)} host(s)",
        "missing or unreadable on",
        judged=len(holders),
    )


def _readable(entry: Any) -> bool:
    return isinstance(entry, Mapping) and "error" not in entry


def _pair_identical(holders: list[HostStatus], reference: str | None) -> Verdict:
    seen = {
        h.name: (h.facts.get("security") or {}).get("cert_sha256")
        for h in holders
        if h.facts is not None
    }
    unknown = [h.name for h in holders if h.facts is None]
    if not holders:
        return Verdict("one certificate everywhere", NOT_CHECKED, NONE_IN_SCOPE)
    if reference is None:
        return Verdict(
            "one certificate everywhere",
            NOT_CHECKED,
            "no reference certificate (no PFX, no majority)",
        )
    bad = [f"{n} ({short_sha(sha)})" for n, sha in seen.items() if sha != reference]
    return _verdict(
        "one certificate everywhere",
        bad,
        unknown,
        f"every host carries {short_sha(reference)}",
        f"not {short_sha(reference)} on",
        judged=len(seen),
    )


def _data_service_modes(servers: list[HostStatus]) -> Verdict:
    from tealeaf_fleet.ops.facts import data_service_names

    bad, unknown, shown = [], [], 0
    for h in servers:
        if h.facts is None:
            unknown.append(h.name)
            continue
        if not data_service_names(h.facts):
            continue
        mode = (h.facts.get("data_service") or {}).get("mode")
        enabled = tls_configured(h.facts)
        if mode is None or enabled is None:
            unknown.append(f"{h.name} (no startup block in its log)" if mode is None else h.name)
            continue
        shown += 1
        if (mode == "tls") != enabled:
            line = "TLS Port" if mode == "tls" else "Port"
            bad.append(f"{h.name} (log says '{line}' but EnableTLS is {int(enabled)})")
    return _verdict(
        "Data Service mode matches EnableTLS",
        bad,
        unknown,
        f"the log's startup block agrees on {shown} server(s)",
        "restart the TeaLeaf services on",
        judged=shown,
        none="no Data Service on the servers in scope",
    )


def _handshakes(servers: list[HostStatus], status: FleetStatus) -> Verdict:
    ports = _handshake_faults(servers, status)
    bad = [f"{name} ({', '.join(labels)})" for name, labels in ports.items()]
    unknown = [h.name for h in servers if h.name not in ports and not _judgeable(h)]
    return _verdict(
        "handshakes on every port",
        bad,
        unknown,
        "every Data Service, TMS and Search Server port answers as EnableTLS says",
        "wrong on",
        judged=len(servers),
    )


def _handshake_faults(servers: list[HostStatus], status: FleetStatus) -> dict[str, list[str]]:
    """server -> the ports whose handshake finding names it ("TMS port 20000")."""
    names = {h.name for h in servers}
    ports: dict[str, list[str]] = {}
    for f in status.findings:
        if f.code in (*HANDSHAKE_CODES, REFUSED) and f.hosts and f.hosts[0] in names:
            label = re.match(r"(.*? port \d+)", f.message)
            ports.setdefault(f.hosts[0], []).append(label.group(1) if label else f.code)
    return ports


def _judgeable(h: HostStatus) -> bool:
    """Whether `status` could judge this server's handshakes: probed, and EnableTLS read
    (without it a handshake is shown, not judged, so silence does not mean "ok")."""
    return bool(h.handshakes) and h.facts is not None and tls_configured(h.facts) is not None


def _ssl_cache(servers: list[HostStatus], status: FleetStatus) -> Verdict:
    """A server set up right (EnableTLS 1, the fleet's pair, the log in TLS mode) whose ports
    refuse the handshake: the vendor's "SSL cache" case. A refusal on a server not set up
    right is named too (the items above say what to fix first); a server whose facts or
    handshakes are unknown makes the item "not checked"."""
    item = "SSL session cache"
    refused = {f.hosts[0] for f in status.findings if f.code == REFUSED and f.hosts}
    stale, other = [], []
    for h in servers:
        if h.name not in refused:
            continue
        right = (
            h.facts is not None
            and tls_configured(h.facts)
            and (h.facts.get("security") or {}).get("cert_sha256") == status.reference_sha256
        )
        (stale if right else other).append(h.name)
    if stale or other:
        parts = []
        if stale:
            parts.append(
                f"{', '.join(stale)} set up right but refuse TLS handshakes: clear the cache "
                "with --fix ssl-cache (then --fix cryptsvc, then --fix reboot)"
            )
        if other:
            parts.append(
                f"{', '.join(other)} refuse TLS handshakes but are not set up right: fix the "
                "items above first"
            )
        return Verdict(item, FAIL, "; ".join(parts), tuple(stale + other))
    unknown = [h.name for h in servers if not _judgeable(h)]
    if unknown:
        return Verdict(item, NOT_CHECKED, f"not known on {', '.join(unknown)}")
    if not servers:
        return Verdict(item, NOT_CHECKED, NONE_IN_SCOPE)
    return Verdict(item, OK, "no server refuses a handshake")


def exit_code(verdicts: list[Verdict]) -> int:
    return 1 if any(v.status != OK for v in verdicts) else 0


def expects_tls(status: FleetStatus) -> bool:
    """Whether the fleet is meant to run TLS now (a fix's gates and verify judge by it): some
    Tealeaf server has EnableTLS 1."""
    return any(
        h.facts is not None and tls_configured(h.facts) is True
        for h in status.hosts
        if h.role in TLS_ROLES
    )


# --- the fixes -------------------------------------------------------------------------------


def fix_fleet(fleet: Fleet, fix: str) -> Fleet:
    """The fleet as the fix's run sees it: `reboot` restarts by rebooting."""
    if fix != "reboot":
        return fleet
    return dataclasses.replace(fleet, rollout=dataclasses.replace(fleet.rollout, restart="reboot"))


def fix_plan(fleet: Fleet, fix: str, *, expect_tls: bool) -> dict[str, Any]:
    """The plan of one fix over the (limited) fleet's Tealeaf servers, in the shape the engine
    runs (docs/architecture.md, "Playbooks and plans")."""
    if fix not in FIXES:
        raise InputError(f"unknown fix '{fix}' (one of {', '.join(FIXES)})", field="--fix")
    servers = [h for h in fleet.hosts.values() if h.role in TLS_ROLES]
    if not servers:
        raise InputError("no Tealeaf server among the hosts chosen", field="--limit")

    def phase(name: str, op: str, hosts: list[Host], **kw: Any) -> dict[str, Any]:
        return {
            "name": name,
            "op": op,
            "strategy": kw.get("strategy", "parallel"),
            "batch": kw.get("batch", 1),
            "gates": list(kw.get("gates", ())),
            "steps": [{"host": h.name} for h in hosts],
        }

    phases = [phase("facts", "facts", servers)]
    # every fix touches what peers connect to (a reboot, CryptSvc, the SChannel cache), so
    # all three follow the rollout's safety model: HBRs one at a time, then Canisters one at
    # a time, each gated healthy before the next; the rest in parallel
    op = "restart" if fix == "reboot" else FIX_OPS[fix]
    gates = list(HEALTH_GATES) if fix == "reboot" else list(FIX_GATES)
    stem = fix.replace("-", "_")
    for role in SERIAL_ROLES:
        hosts = [h for h in servers if h.role == role]
        if hosts:
            phases.append(phase(f"{stem}_{role}", op, hosts, strategy="rolling", gates=gates))
    rest = [h for h in servers if h.role not in SERIAL_ROLES]
    if rest:
        phases.append(phase(f"{stem}_rest", op, rest, gates=gates))
    phases.append(phase("verify", "verify", servers))
    from tealeaf_fleet.plan import inventory_digest

    body = {
        "tool_version": __version__,
        "playbook": {"name": f"troubleshoot --fix {fix}"},
        "inventory": {"path": str(fleet.path), "digest": inventory_digest(fleet)},
        "expect_tls": expect_tls,
        "force_restart": fix == "reboot",
        "phases": phases,
    }
    return {**body, "digest": sha256_json(body)}


@dataclass(frozen=True)
class FixPlan:
    """A fix's plan as `cli.rollout.run_plan` takes one (it calls `to_dict()`)."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data
