"""The restart windows of a run as an inline SVG: one row per host, time left to right.

Why SVG drawn by hand: the HTML report must be one file that opens offline and can be attached
to a ticket, with no script and no external asset; an SVG element inside the page is plain
markup, scales when printed, and `<title>` children give each bar its exact times on hover.
Every text placed in it goes through `html.escape` (host names and messages are data).
"""

from __future__ import annotations

import time

from tealeaf_fleet.report.model import Report
from tealeaf_fleet.report.sections import html_text as escape

ROW_H = 26
LABEL_W = 150
PLOT_W = 720
TOP = 30
COLOURS = {"changed": "#2f7d32", "ok": "#2f7d32", "failed": "#c62828", None: "#9e9e9e"}
GATE_COLOURS = {"ok": "#1565c0", "failed": "#c62828"}


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def svg(report: Report) -> str:
    """The timeline, or a short SVG saying there was no restart window in this run."""
    hosts = [h for h in report.hosts if h.windows or h.gates]
    start = report.run.started
    ends = [w.end or w.start for w in report.windows] + [g.ts for g in report.gates]
    end = max([report.run.finished or start, *ends, start + 1.0])
    span = end - start
    height = TOP + ROW_H * max(1, len(hosts)) + 30
    width = LABEL_W + PLOT_W + 20

    def x(ts: float) -> float:
        return LABEL_W + (ts - start) / span * PLOT_W

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="restart windows per host">',
        f'<text x="{LABEL_W}" y="16" class="axis">{escape(_clock(start))} UTC</text>',
        f'<text x="{LABEL_W + PLOT_W}" y="16" class="axis" text-anchor="end">'
        f"{escape(_clock(end))} UTC ({span:.0f}s)</text>",
    ]
    for i in range(5):  # faint vertical guides at quarter marks
        gx = LABEL_W + PLOT_W * i / 4
        parts.append(
            f'<line x1="{gx:.1f}" y1="{TOP - 6}" x2="{gx:.1f}" y2="{height - 24}" class="guide"/>'
        )
    if not hosts:
        parts.append(
            f'<text x="{LABEL_W}" y="{TOP + 16}" class="empty">no restart window in this run</text>'
        )
    for row, host in enumerate(hosts):
        y = TOP + row * ROW_H
        parts.append(f'<text x="4" y="{y + 16}" class="host">{escape(host.name)}</text>')
        for w in host.windows:
            x0 = x(w.start)
            x1 = x(w.end if w.end is not None else end)
            finish = _clock(w.end) if w.end is not None else "unfinished"
            tip = (
                f"{host.name} {w.action} ({w.phase}): {_clock(w.start)} to {finish} UTC, "
                f"{w.outcome or 'unfinished'}"
            )
            parts.append(
                f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(2.0, x1 - x0):.1f}" height="16" '
                f'rx="3" fill="{COLOURS.get(w.outcome, COLOURS[None])}" class="window">'
                f"<title>{escape(tip)}</title></rect>"
            )
        for g in host.gates:
            tip = f"{host.name} gate {g.gate} {g.outcome} at {_clock(g.ts)} UTC: {g.message}"
            parts.append(
                f'<circle cx="{x(g.ts):.1f}" cy="{y + 12}" r="4" '
                f'fill="{GATE_COLOURS.get(g.outcome, "#9e9e9e")}" class="gate">'
                f"<title>{escape(tip)}</title></circle>"
            )
    legend_y = height - 8
    parts.append(
        f'<rect x="{LABEL_W}" y="{legend_y - 10}" width="14" height="10" fill="{COLOURS["ok"]}"/>'
        f'<text x="{LABEL_W + 18}" y="{legend_y}" class="axis">restart window</text>'
        f'<circle cx="{LABEL_W + 140}" cy="{legend_y - 5}" r="4" fill="{GATE_COLOURS["ok"]}"/>'
        f'<text x="{LABEL_W + 148}" y="{legend_y}" class="axis">gate passed</text>'
        f'<rect x="{LABEL_W + 240}" y="{legend_y - 10}" width="14" height="10" '
        f'fill="{COLOURS["failed"]}"/>'
        f'<text x="{LABEL_W + 258}" y="{legend_y}" class="axis">failed</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
