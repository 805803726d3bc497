"""The report as one self-contained HTML file: inline CSS and an inline SVG timeline, no script
and no external asset (no link, image or font to fetch), so it opens offline and can be attached
to a change ticket as it is. Every text from the journal is escaped (host names and messages are
data, never markup); the whole page passes through `redact()` last."""

from __future__ import annotations

from collections.abc import Sequence

from tealeaf_fleet.report import sections, timeline
from tealeaf_fleet.report.model import NOT_CHECKED, Report
from tealeaf_fleet.report.sections import html_text as escape
from tealeaf_fleet.secrets import redact

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#212121;
max-width:1100px}
h1{font-size:1.5em;border-bottom:3px solid #1565c0;padding-bottom:6px}
h2{font-size:1.2em;margin-top:28px;color:#1565c0}
h3{font-size:1.05em;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;width:100%}
th,td{border:1px solid #cfd8dc;padding:4px 8px;text-align:left;vertical-align:top;
font-size:0.9em;overflow-wrap:anywhere}
table.state{table-layout:fixed}
table.state th:first-child{width:170px}
th{background:#eceff1}
td.k{width:190px;font-weight:600;background:#fafafa}
.ok,.changed{color:#2f7d32;font-weight:600}
.failed,.blocker,.crashed{color:#c62828;font-weight:600}
.warning,.interrupted,.blocked{color:#ef6c00;font-weight:600}
.unknown{color:#757575;font-style:italic}
code,.mono{font-family:Consolas,Menlo,monospace;font-size:0.85em;word-break:break-all}
svg.timeline{border:1px solid #cfd8dc;background:#fff}
svg .host{font-size:12px;fill:#212121}
svg .axis{font-size:11px;fill:#546e7a}
svg .empty{font-size:12px;fill:#757575}
svg .guide{stroke:#eceff1;stroke-width:1}
.host-block{border-left:4px solid #90a4ae;padding-left:12px;margin-bottom:18px}
footer{margin-top:30px;font-size:0.8em;color:#757575}
@media print{body{margin:0}.host-block{page-break-inside:avoid}}
"""

CLASSED = (
    "ok",
    "changed",
    "failed",
    "blocker",
    "warning",
    "info",
    "interrupted",
    "blocked",
    "crashed",
    "skipped",
)


def _td(text: str, *, cls: str | None = None) -> str:
    text = str(text)
    if cls is None:
        if text.startswith(NOT_CHECKED):
            cls = "unknown"
        elif "FAILED" in text or text.startswith("did not finish"):
            cls = "failed"
        elif text in CLASSED:
            cls = text
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(text)}</td>"


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    key_col: bool = False,
    cls: str | None = None,
) -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = [_td(c, cls="k") if key_col and i == 0 else _td(c) for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render(report: Report) -> str:
    title = sections.title(report)
    body = [f"<h1>{escape(title)}</h1>", _table((), sections.summary(report), key_col=True)]
    if not report.has_evidence:
        body.append(
            '<p class="unknown">This run kept no evidence in the journal (a tool version '
            "before fleet report): states and gates read &quot;not checked&quot;.</p>"
        )
    body.append("<h2>Restart windows</h2>")
    body.append(timeline.svg(report))
    windows = sections.window_rows(report)
    if windows:
        body.append(_table(("Host", "Action", "Start", "End", "Seconds", "Outcome"), windows))
    body.append("<h2>Hosts</h2>")
    for host in report.hosts:
        body.append('<div class="host-block">')
        body.append(f"<h3>{escape(sections.host_heading(host))}</h3>")
        body.append(
            _table(("", "Before", "After"), sections.state_rows(host), key_col=True, cls="state")
        )
        gates = sections.gate_rows(host)
        if gates:
            body.append(_table(("Gate", "Result", "Time", "Evidence"), gates))
        else:
            body.append(
                '<p class="unknown">Gates: not checked (no restart with gates ran on this '
                "host in this run).</p>"
            )
        body.append("</div>")
    body.append("<h2>Warnings and findings</h2>")
    rows = sections.warning_rows(report)
    body.append(_table(("Severity", "Code", "Hosts", "Message"), rows) if rows else "<p>None.</p>")
    body.append("<h2>Steps</h2>")
    body.append(
        _table(
            ("Phase", "Host", "Action", "Outcome", "Seconds", "Message"), sections.step_rows(report)
        )
    )
    body.append(
        f"<footer>Written by tealeaf-fleet from the journal of run {report.run.id}; "
        "nothing here was read from the hosts after the run.</footer>"
    )
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    return redact(page)
