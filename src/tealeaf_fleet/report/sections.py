"""The report's content as plain rows, shared by the Markdown and HTML renderers, so the two
formats always say the same thing (and spell every unknown "not checked")."""

from __future__ import annotations

from html import escape
from typing import Any

from tealeaf_fleet.report import model
from tealeaf_fleet.report.model import NOT_CHECKED, HostReport, Report
from tealeaf_fleet.secrets import mask


def html_text(text: str) -> str:
    """Text for the HTML page: secrets masked (known ones and written-out passwords, as in
    the support bundle), then escaped; masking the page after escaping would miss a secret
    holding &, <, > or a quote."""
    return escape(mask(str(text)))


def title(report: Report) -> str:
    run = report.run
    return f"Tealeaf TLS change report: run {run.id} ({run.command})"


def summary(report: Report) -> list[tuple[str, str]]:
    run = report.run
    duration = f"{run.finished - run.started:.0f}s" if run.finished else "unfinished"
    if report.approved_plan:
        approved = f"approved plan file {report.approved_plan}"
    elif report.has_evidence:
        approved = (
            "none (run without --approved-plan; the plan was confirmed at the prompt or --yes)"
        )
    else:
        approved = NOT_CHECKED
    return [
        ("Runs covered", runs_covered(report)),
        ("Command", run.command),
        ("Playbook", model.shown(run.playbook)),
        ("Outcome", run.state),
        ("Message", run.message or "-"),
        ("Started", model.utc(run.started)),
        ("Finished", model.utc(run.finished) if run.finished else "unfinished"),
        ("Duration", duration),
        ("Account", model.shown(run.user)),
        ("Controller host", model.shown(run.controller)),
        ("Inventory", model.shown(run.inventory_path)),
        ("Inventory digest", model.shown(run.inventory_digest)),
        ("Plan digest", model.shown(run.plan_digest)),
        ("Approval", approved),
        ("Tool version", model.shown(run.tool_version)),
        ("Report written", model.utc(report.generated)),
    ]


def runs_covered(report: Report) -> str:
    """Which runs the report stands on: a resumed change spans the halted runs before it."""
    runs = report.runs or [report.run]
    if len(runs) == 1:
        return f"run {runs[0].id} only"
    listed = ", ".join(f"run {r.id} ({r.state}, started {model.utc(r.started)})" for r in runs)
    return (
        f"{listed}: run {report.run.id} resumed the others (same plan digest); "
        f"'before' is from the first run that read each host, 'after' from the last, gates, "
        "windows and steps from all"
    )


def state_rows(host: HostReport) -> list[tuple[str, str, str]]:
    """(what, before, after) for one host, handshakes per port last."""
    before, after = model.facts_row(host.before), model.facts_row(host.after)
    rows = [(k, before[k], after[k]) for k in before]
    shakes_before = dict(model.handshakes(host.before))
    shakes_after = dict(model.handshakes(host.after))
    labels = list(dict.fromkeys([*shakes_before, *shakes_after]))
    if not labels:
        rows.append(("Handshakes", NOT_CHECKED, NOT_CHECKED))
    for label in labels:
        rows.append(
            (
                f"Handshake {label}",
                shakes_before.get(label, NOT_CHECKED),
                shakes_after.get(label, NOT_CHECKED),
            )
        )
    if host.role == "portal" or (host.after or {}).get("status_tool"):
        tool = (host.after or {}).get("status_tool")
        rows.append(("TealeafStatus -verbose", NOT_CHECKED, status_tool(tool)))
    return rows


def status_tool(tool: dict[str, Any] | None) -> str:
    """The Portal's status-tool run after the change, with the end of its output."""
    if not tool or tool.get("present") is None:
        why = (tool or {}).get("error")
        return NOT_CHECKED + (f" ({why})" if why else "")
    if not tool.get("present"):
        return f"{NOT_CHECKED} (TealeafStatus.exe not found)"
    code = tool.get("exit_code")
    if code is None:
        return f"did not finish: {tool.get('error') or 'no exit code'}"
    tail = " / ".join(
        line.strip() for line in str(tool.get("output") or "").splitlines()[-3:] if line.strip()
    )
    verdict = "ok" if code == 0 else "FAILED, see the prerequisites playbook"
    return f"exit {code} ({verdict})" + (f"; output ends: {tail}" if tail else "")


def gate_rows(host: HostReport) -> list[tuple[str, str, str, str]]:
    return [(g.gate, g.outcome, model.utc(g.ts), g.message) for g in host.gates]


def window_rows(report: Report) -> list[tuple[str, str, str, str, str, str]]:
    out = []
    for w in report.windows:
        seconds = f"{w.end - w.start:.1f}" if w.end is not None else "unfinished"
        out.append(
            (
                w.host,
                w.action,
                model.utc(w.start),
                model.utc(w.end) if w.end is not None else "unfinished",
                seconds,
                w.outcome or "unfinished",
            )
        )
    return out


def warning_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(severity, code, hosts, message): preflight warnings per host, then verify's findings."""
    rows = [
        ("warning", str(w.get("code") or "?"), h.name, str(w.get("message") or ""))
        for h in report.hosts
        for w in h.warnings
    ]
    rows += [
        (
            str(f.get("severity") or "?"),
            str(f.get("code") or "?"),
            ", ".join(f.get("hosts") or []) or "fleet",
            str(f.get("message") or ""),
        )
        for f in report.findings
    ]
    return rows


def step_rows(report: Report) -> list[tuple[str, str, str, str, str, str]]:
    out = []
    several = len(report.runs) > 1  # a resumed change: say which run each step belongs to
    for s in report.steps:  # journal order: what ran, as it ran (controller steps included)
        secs = f"{s.finished - s.started:.1f}" if s.finished else "-"
        phase = f"run {s.run}: {s.phase}" if several else s.phase
        out.append((phase, s.host, s.action, s.outcome or "unfinished", secs, s.message or ""))
    return out


def host_heading(host: HostReport) -> str:
    where = f"{host.role}, {host.address}"
    if not host.in_inventory:
        where += "; no longer in the inventory"
    return f"{host.name} ({where})"
