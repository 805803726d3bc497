"""The report as Markdown, for tickets that take text (sections.py holds the content)."""

from __future__ import annotations

from collections.abc import Sequence

from tealeaf_fleet.report import sections
from tealeaf_fleet.report.model import Report
from tealeaf_fleet.secrets import mask


def _cell(text: str) -> str:
    """One table cell: one line, `|` escaped, and `<`/`>` as entities so a ticket system that
    renders HTML inside Markdown shows host text as text."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render(report: Report) -> str:
    out = [f"# {sections.title(report)}", ""]
    out += _table(("", ""), sections.summary(report))
    if not report.has_evidence:
        out += [
            "This run kept no evidence in the journal (a tool version before `fleet report`): "
            'states and gates read "not checked".',
            "",
        ]
    out += ["## Hosts", ""]
    for host in report.hosts:
        out += [f"### {sections.host_heading(host)}", ""]
        out += _table(("", "Before", "After"), sections.state_rows(host))
        gates = sections.gate_rows(host)
        if gates:
            out += _table(("Gate", "Result", "Time", "Evidence"), gates)
        else:
            out += ["Gates: not checked (no restart with gates ran on this host in this run).", ""]
    out += ["## Warnings and findings", ""]
    rows = sections.warning_rows(report)
    out += _table(("Severity", "Code", "Hosts", "Message"), rows) if rows else ["None.", ""]
    out += ["## Restart windows", ""]
    windows = sections.window_rows(report)
    out += (
        _table(("Host", "Action", "Start", "End", "Seconds", "Outcome"), windows)
        if windows
        else ["No restart window in this run.", ""]
    )
    out += ["## Steps", ""]
    out += _table(
        ("Phase", "Host", "Action", "Outcome", "Seconds", "Message"), sections.step_rows(report)
    )
    return mask("\n".join(out))
