"""What a run report says, read from the journal alone (no host is contacted).

Why from the journal: the report is evidence of the change as it happened (engine/evidence.py
records the hosts' state before and after, every gate and every finding while the run runs);
reading the fleet again would describe today, not the change. The steps table gives what ran
and the restart windows (a `restart` or `reboot` step's start and finish).

The rule for unknowns: a value the run did not read is None here and every renderer prints
`NOT_CHECKED` for it; nothing absent is ever shown as "ok".
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.status import PORT_LABELS

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Host
    from tealeaf_fleet.journal import Journal, RunRecord, StepRecord

NOT_CHECKED = "not checked"
WINDOW_ACTIONS = ("restart", "reboot")


@dataclass(frozen=True)
class Gate:
    host: str
    gate: str
    outcome: str
    message: str
    ts: float
    phase: str | None = None


@dataclass(frozen=True)
class Window:
    """A restart (or reboot) window of one host: its step's start to finish."""

    host: str
    action: str
    phase: str
    start: float
    end: float | None
    outcome: str | None
    message: str | None


@dataclass
class HostReport:
    name: str
    role: str
    address: str
    in_inventory: bool
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    gates: list[Gate] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)


@dataclass
class Report:
    run: RunRecord
    approved_plan: str | None
    hosts: list[HostReport]
    findings: list[dict[str, Any]]
    generated: float
    has_evidence: bool  # False for a run recorded before the journal kept evidence
    steps: list[StepRecord] = field(default_factory=list)  # every step, in journal order
    # the runs covered, oldest first: the run asked for, and the halted or interrupted runs of
    # the same plan it resumed (journal.resume_chain); one run when it resumed nothing
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def windows(self) -> list[Window]:
        return [w for h in self.hosts for w in h.windows]

    @property
    def gates(self) -> list[Gate]:
        return [g for h in self.hosts for g in h.gates]


def build(journal: Journal, hosts: Iterable[Host], run_id: int | None = None) -> Report:
    """The report of run `run_id` (default: the latest run); InputError when there is none.
    `hosts` (the inventory's) give the order, roles and addresses; a host the journal names
    that the inventory no longer lists is kept, marked so."""
    if run_id is None:
        latest = journal.runs(1)
        if not latest:
            raise InputError(f"no runs recorded yet in {journal.path}", field="RUN_ID")
        record = latest[0]
    else:
        found = journal.run(run_id)
        if found is None:
            raise InputError(f"no run {run_id} in {journal.path}", field="RUN_ID")
        record = found
    runs = covered_runs(journal, record)
    evidence = [item for r in runs for item in journal.evidence(r.id)]
    steps = [step for r in runs for step in journal.steps(r.id)]
    by_name: dict[str, HostReport] = {
        h.name: HostReport(h.name, h.role, h.address, True) for h in hosts
    }

    def host(name: str) -> HostReport:
        if name not in by_name:
            by_name[name] = HostReport(name, "?", "?", False)
        return by_name[name]

    approved = None
    findings: list[dict[str, Any]] = []
    for item in evidence:
        data = item.data
        if item.kind == "plan":
            approved = data.get("approved_plan") or approved
        elif item.kind == "finding":
            if data not in findings:
                findings.append(data)
        elif item.host is None:
            continue
        elif item.kind == "before":
            # the first run of the chain saw the fleet before the change; a resumed run's
            # preflight sees it half-changed
            if host(item.host).before is None:
                host(item.host).before = data
        elif item.kind == "after":
            host(item.host).after = data
        elif item.kind == "gate":
            host(item.host).gates.append(
                Gate(
                    item.host,
                    str(data.get("gate") or "?"),
                    str(data.get("outcome") or "?"),
                    str(data.get("message") or ""),
                    item.ts,
                    data.get("phase"),
                )
            )
        elif item.kind == "warning" and data not in host(item.host).warnings:
            host(item.host).warnings.append(data)
    for step in steps:
        if step.host == "controller":  # e.g. the certificate step: in `steps`, not a host
            continue
        row = host(step.host)
        row.steps.append(step)
        if step.action in WINDOW_ACTIONS and step.outcome not in ("skipped",):
            row.windows.append(
                Window(
                    step.host,
                    step.action,
                    step.phase,
                    step.started,
                    step.finished,
                    step.outcome,
                    step.message,
                )
            )
    return Report(
        run=record,
        approved_plan=approved,
        hosts=list(by_name.values()),
        findings=findings,
        generated=time.time(),
        has_evidence=bool(evidence),
        steps=steps,
        runs=runs,
    )


def covered_runs(journal: Journal, record: RunRecord) -> list[RunRecord]:
    """`record` and the runs of the same plan it resumed, oldest first: a change halted and
    then resumed is one change, whose "before" is the first run's."""
    if not record.plan_digest:
        return [record]
    earlier = journal.resume_chain(record.plan_digest, before_run=record.id)
    found = [journal.run(run_id) for run_id in reversed(earlier)]
    return [r for r in found if r is not None] + [record]


# --- shared wording for the renderers -----------------------------------------------------------


def utc(ts: float | None) -> str:
    """Controller times in the report: UTC, so a ticket read in another time zone agrees."""
    if ts is None:
        return NOT_CHECKED
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def shown(value: Any) -> str:
    """A value, or "not checked" when the run did not read it."""
    return NOT_CHECKED if value is None or value == "" else str(value)


def fingerprint(sha: str | None) -> str:
    """Colon-separated upper-case hex, as `fleet cert` and the plan print it."""
    if not sha:
        return NOT_CHECKED
    return ":".join(sha[i : i + 2] for i in range(0, len(sha), 2)).upper()


def data_service(state: dict[str, Any] | None) -> str:
    """The Data Service mode and the log line that proves it."""
    if not state or not state.get("facts_read"):
        return NOT_CHECKED
    ds = state.get("data_service")
    if not ds:
        return NOT_CHECKED
    if not ds.get("mode"):
        return "no startup block found in its log"
    how = "" if ds.get("line_verbatim") else " (reconstructed from mode and port)"
    return (
        f"{ds['mode']}: '{ds.get('line') or '?'}'{how} at {shown(ds.get('started_at'))} "
        f"in {shown(ds.get('log'))}"
    )


def handshakes(state: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(port label, what a peer saw) per port; an empty list when none was probed."""
    out = []
    for which, shake in ((state or {}).get("handshakes") or {}).items():
        label = f"{PORT_LABELS.get(which, which)} {shake.get('port')}"
        kind = shake.get("kind")
        if kind == "tls":
            seen = f"TLS, peer certificate {fingerprint(shake.get('sha256'))}"
        elif kind == "plain":
            seen = "plain (no TLS)"
        else:
            seen = f"{kind or NOT_CHECKED}" + (
                f" ({shake['detail']})" if shake.get("detail") else ""
            )
        out.append((label, seen))
    return out


def services(state: dict[str, Any] | None) -> str:
    items = (state or {}).get("services")
    if items is None:
        return NOT_CHECKED
    if not items:
        return "no TeaLeaf service"
    return ", ".join(f"{s.get('name')} {s.get('state')}" for s in items)


def facts_row(state: dict[str, Any] | None) -> dict[str, str]:
    """The before/after cells of one host, every unknown spelled "not checked"."""
    read = bool(state and state.get("facts_read"))
    get = (state or {}).get if read else (lambda _k: None)
    return {
        "EnableTLS": shown(get("enable_tls")),
        "Certificate": fingerprint(get("cert_sha256"))
        if get("cert_sha256")
        else ("none found in tealeaf.crt" if read else NOT_CHECKED),
        "Expires": shown(get("cert_not_after"))
        if not read or get("cert_sha256")
        else "no certificate",
        "Data Service": data_service(state),
        "Services": services(state) if read else NOT_CHECKED,
    }
