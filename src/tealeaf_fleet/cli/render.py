"""Plan renderers: a rich table for terminals, Markdown for change tickets, JSON for machines.

Why three: the operator reads the table before typing `--yes`; the change board reads the
Markdown pasted into the ticket (so it says which servers restart when, one at a time, what
each loses meanwhile and how to roll back); the engine and `--approved-plan` read the JSON.
All three come from the same `Plan` and every text passes through `redact()` on its way out.
rich is imported inside the functions so `fleet --help` does not pay for it.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.cli.common import colon_fp
from tealeaf_fleet.estimate import Window, duration_text
from tealeaf_fleet.plan import CONTROLLER, Plan, PlanPhase, Step, at_a_time
from tealeaf_fleet.secrets import redact

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

TEXT_WIDTH = 100  # the plan's text table fits 100 columns without cutting a host name

FORMATS = ("table", "markdown", "json")

ROLE_LABELS = {
    "portal": "Portal",
    "hbr": "HBR",
    "canister": "Canister",
    "report": "Report",
    "other": "Other Tealeaf server",
    "rtv": "RTV workstation",
    "pca": "PCA (Linux)",
}
ROLE_ORDER = ("portal", "hbr", "canister", "report", "other", "rtv", "pca")
# the table's Role column: short, so that 100 columns leave room for the action
SHORT_ROLES = {**ROLE_LABELS, "other": "Other", "rtv": "RTV", "pca": "PCA"}

STRATEGY_TEXT = {
    "controller": "once, on the controller",
    "parallel": "all hosts in parallel",
    "all_or_nothing": "all hosts or none (undone everywhere if one fails)",
}


def strategy_text(phase: PlanPhase) -> str:
    if phase.strategy == "rolling":
        return (
            "rolling, one host at a time"
            if phase.batch == 1
            else f"rolling, {phase.batch} hosts at a time"
        )
    text = STRATEGY_TEXT.get(phase.strategy, phase.strategy)
    if phase.strategy == "all_or_nothing" and phase.compensate:
        text += f", compensate: {phase.compensate}"
    return text


def short(digest: str | None, n: int = 12) -> str:
    return digest[:n] if digest else "-"


def render(
    plan: Plan,
    fmt: str,
    *,
    width: int = TEXT_WIDTH,
    window: Window | None = None,
    inventory: str | None = None,
    limit: str | None = None,
) -> str:
    """The plan as text in `fmt` (table text has no colours: for files and pipes). `window`
    (the change window estimate), `inventory` and `limit` (for the commands the ticket shows)
    are presentation only: none of them is part of the plan or its digest."""
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan, window=window, inventory=inventory, limit=limit)
    if fmt == "table":
        return render_text(plan, width=width, window=window)
    raise ValueError(f"unknown format {fmt}")


def render_json(plan: Plan) -> str:
    return redact(plan.to_json())


# --------------------------------------------------------------------------------------------
# table (rich)


def plan_renderables(
    plan: Plan, window: Window | None = None, width: int = TEXT_WIDTH
) -> list[RenderableType]:
    """What `print_table` shows: a summary, one table per phase, the digest. Column widths
    are set, not left to rich (which would shorten a long host name with "..." to fit
    `width`): the host column is as wide as the longest name, the action takes the rest."""
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = []
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for key, value in _summary_rows(plan, window):
        summary.add_row(key, Text(redact(value)))  # paths are data, never rich markup
    out.append(Text(f"Plan: {plan.playbook['name']}", style="bold underline"))
    out.append(summary)
    out += [Text(redact(line), style="bold red") for line in opt_in_lines(plan)]
    for title, lines in (
        ("Certificate validity", validity_lines(plan)),
        ("PCA hand-off", handoff_lines(plan)),
    ):
        if lines:
            out.append(Text(title, style="bold"))
            out += [Text("  " + redact(line)) for line in lines]
    roles = _roles(plan)
    findings = plan.preflight.get("findings") or []
    if findings:
        ftable = Table(
            title=Text(
                "Preflight findings (the run's own judgement, per host)", style="table.title"
            ),
            title_justify="left",
        )
        ftable.add_column("Host", style="bold", no_wrap=True)
        ftable.add_column("Severity", no_wrap=True)
        ftable.add_column("Code", no_wrap=True)
        ftable.add_column("Finding", overflow="fold")  # the full text, never cut
        for f in findings:
            style = {"blocker": "bold red", "warning": "yellow"}.get(f["severity"], "dim")
            ftable.add_row(
                Text(", ".join(f["hosts"])),
                Text(f["severity"], style=style),
                Text(f["code"]),
                Text(redact(f["message"])),
            )
        out.append(ftable)
    longest = max((len(h.name) for h in plan.hosts), default=4)
    longest = max(longest, len(CONTROLLER))
    windows = {p.name: p for p in window.phases} if window else {}
    for i, phase in enumerate(plan.phases, 1):
        took = windows.get(phase.name)
        table = Table(
            title=Text(  # a playbook's phase name is data: "[red]" must show as written
                f"{i}. {phase.name} ({phase.op}): {strategy_text(phase)}"
                + (f"; gates: {', '.join(phase.gates)}" if phase.gates else "")
                + (f"; about {duration_text(took.expected_s)}" if took and took.steps else ""),
                style="table.title",
            ),
            title_justify="left",
            show_lines=False,
            expand=False,
        )
        grouped = len(phase.steps) + len(phase.excluded) > GROUP_OVER
        number = max(1, len(f"{len(phase.steps)}-{len(phase.steps)}"))
        role_w = max(len(v) for v in SHORT_ROLES.values())
        spare = width - 13 - number - role_w  # 5 borders, 4 x 2 padding
        host_w = max(longest + 1, min(40, spare - 40))  # + 1: the "," of a list of names
        rest = max(24, spare - host_w)
        table.add_column("#", justify="right", style="dim", no_wrap=True, width=number)
        # as wide as the longest host name: names are wrapped between names, never cut
        table.add_column("Host", style="bold", width=host_w, overflow="fold")
        table.add_column("Role", no_wrap=True, width=role_w)
        # the status (will run / skip: why) heads the action: four columns fit the width
        table.add_column("Status: action; impact", overflow="fold", width=rest)
        prev = None
        n = 0
        for group in _groups(phase.steps, roles, grouped):
            step = group[0]
            first, n = n + 1, n + len(group)
            order = (
                ""
                if phase.strategy != "rolling"
                else (str(first) if first == n else f"{first}-{n}")
            )
            desc, impact = _ditto(step, prev)
            prev = step
            cell = (
                Text("skip: " + redact(step.skip_reason), style="yellow")
                if step.skip_reason
                else Text("will run: ", style="green")
            )
            if step.skip_reason:
                cell.append("\n")
            what = desc if desc == impact == DITTO else f"{desc}\nimpact: {impact}"
            cell.append(redact(what))  # paths and names: shown as they will run, never markup
            table.add_row(
                order, Text(_host_cell(group)), SHORT_ROLES.get(roles.get(step.host, ""), "-"), cell
            )
        if not phase.steps:
            table.add_row("", "-", "-", Text("no host in roles " + ", ".join(phase.roles)))
        for group in _by_reason(phase.excluded):  # one row per reason, however many hosts
            ex = group[0]
            kinds = {roles.get(x.host, "") for x in group}
            table.add_row(
                "",
                Text(_host_cell(group)),
                SHORT_ROLES.get(kinds.pop(), "-") if len(kinds) == 1 else "-",
                Text("left out: " + redact(ex.reason), style="dim"),
            )
        out.append(table)
    out.append(Text(f"Plan digest: {plan.digest}", style="bold"))
    return out


# Above this many rows in a phase, the table merges consecutive rows that differ only in the
# host: a 1,000-host estate gives a readable page (and rich lays it out 10x faster). Markdown
# keeps one row per host, since a change ticket must name every server.
GROUP_OVER = 20


def _groups(items: list, roles: dict[str, str], grouped: bool) -> list[list]:
    """Consecutive steps (or exclusions) with the same role and text, as lists."""
    out: list[tuple[tuple, list]] = []
    for item in items:
        key = (
            roles.get(item.host),
            getattr(item, "description", None),
            getattr(item, "impact", None),
            getattr(item, "skip_reason", None),
            getattr(item, "reason", None),
        )
        if grouped and out and out[-1][0] == key:
            out[-1][1].append(item)
        else:
            out.append((key, [item]))
    return [g for _k, g in out]


def _by_reason(excluded: list) -> list[list]:
    """Exclusions grouped by their reason, in first-seen order."""
    out: dict[str, list] = {}
    for ex in excluded:
        out.setdefault(ex.reason, []).append(ex)
    return list(out.values())


def _host_cell(group: list) -> str:
    if len(group) == 1:
        return group[0].host
    return f"{len(group)} hosts: " + ", ".join(x.host for x in group)


def print_table(plan: Plan, console: Console, window: Window | None = None) -> None:
    for item in plan_renderables(plan, window, width=max(console.width, 60)):
        console.print(item)


def render_text(plan: Plan, *, width: int = TEXT_WIDTH, window: Window | None = None) -> str:
    """The table as plain text (no colour codes), for `--out FILE` and pipes."""
    from rich.console import Console

    buf = io.StringIO()
    console = Console(
        file=buf, width=width, color_system=None, force_terminal=False, highlight=False, emoji=False
    )
    print_table(plan, console, window)
    return redact(buf.getvalue())


# --------------------------------------------------------------------------------------------
# summary (Terraform-like): what `fleet demo` and the confirmation prompt show

# Names listed in one place before "and N more", and hosts shown of a rolling order: a
# 1,000-host phase stays one line.
SUMMARY_NAMES = 4
SUMMARY_ORDER = 6


def summary_lines(plan: Plan, *, inventory: str | None = None) -> list[str]:
    """The plan in a screenful: one line per phase (order, strategy, the hosts in order for
    rolling phases, counts, what is left out and why, gates), then the digest and the command
    that prints the full per-host table. Why: before typing `yes`, or in a demo, the operator
    needs the shape of the change; the full table (hundreds of lines) is one command away.
    Hosts that no phase works on are said once at the top instead of on every phase line."""
    contacted = sum(1 for h in plan.hosts if h.contacted)
    worked = {s.host for p in plan.phases for s in p.steps}
    untouched: dict[str, list[str]] = {}
    for phase in plan.phases:
        for ex in phase.excluded:
            if ex.host not in worked:
                hosts = untouched.setdefault(_short_reason(ex.reason), [])
                if ex.host not in hosts:
                    hosts.append(ex.host)
    lines = [
        f"Plan: {plan.playbook['name']} on {_count(len(plan.hosts))} ({contacted} over WinRM, "
        f"{len(plan.hosts) - contacted} never contacted); ends with {_ends_with(plan)}",
        *opt_in_lines(plan),
    ]
    if untouched:
        lines.append(
            "Not touched: " + "; ".join(f"{_names(h)} ({why})" for why, h in untouched.items())
        )
    lines.append(
        "Facts: "
        + (
            f"gathered (digest {short(plan.facts_digest)}), steps already done are skipped"
            if plan.facts_digest
            else "not gathered: every step is listed as if nothing was done yet"
        )
    )
    width = max((len(p.name) for p in plan.phases), default=0)
    number = len(str(len(plan.phases)))
    for i, phase in enumerate(plan.phases, 1):
        name = phase.name if phase.op in phase.name else f"{phase.name} [{phase.op}]"
        parts = [_targets(phase)]
        parts += _left_out(phase, worked)
        if phase.gates:
            parts.append("gates: " + ", ".join(phase.gates))
        lines.append(f"  {i:>{number}}. {name:<{width}}  " + "; ".join(parts))
    lines.append(f"Plan digest: {plan.digest}")
    lines.append(f"Full per-host table: {_plan_command(plan, inventory)}")
    return [redact(line) for line in lines]


def render_summary(plan: Plan, *, inventory: str | None = None) -> str:
    """`summary_lines` as one text (no colour), for pipes, files and tests."""
    return "\n".join(summary_lines(plan, inventory=inventory)) + "\n"


def print_summary(plan: Plan, console: Console, *, inventory: str | None = None) -> None:
    """The summary on a rich console. A phase line longer than the console wraps under its
    own text (a hanging indent), so the phase names stay a clean column; nothing is cut."""
    import textwrap

    width = max(console.width, 60)
    for line in summary_lines(plan, inventory=inventory):
        match = _PHASE_LINE.match(line)
        indent = " " * (match.end() if match else 2)
        style = "bold red" if line.startswith("OPT-IN ") else None
        for part in textwrap.wrap(
            line,
            width=width,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        ) or [""]:
            console.print(
                part, markup=False, highlight=False, overflow="fold", crop=False, style=style
            )


_PHASE_LINE = re.compile(r" +\d+\. \S+(?: \[\S+\])? +")


def _names(hosts: list[str]) -> str:
    if len(hosts) <= SUMMARY_NAMES:
        return ", ".join(hosts)
    return ", ".join(hosts[:SUMMARY_NAMES]) + f" and {len(hosts) - SUMMARY_NAMES} more"


def _count(n: int, what: str = "host") -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _short_reason(reason: str) -> str:
    """A reason up to its first ';' (the full text is in the table and the Markdown)."""
    return reason.split(";")[0].strip()


def _targets(phase: PlanPhase) -> str:
    """Who the phase works on and how: the rolling order, or a count; plus steps found done."""
    active = [s.host for s in phase.active_steps]
    done = len(phase.steps) - len(active)
    if not phase.steps:
        return f"nothing: no host with role {', '.join(phase.roles)}"
    if phase.strategy == "controller":
        text = "once, on the controller" if active else "on the controller: nothing to do"
    elif phase.strategy == "rolling":
        each = at_a_time(phase.batch)
        shown = active[:SUMMARY_ORDER]
        text = f"rolling, {each}: " + (" -> ".join(shown) if shown else "no host to change")
        if len(active) > len(shown):
            text += f" -> ... ({len(active)} in all)"
    else:
        text = _count(len(active))
        if active and len(active) <= 3:
            text += f" ({', '.join(active)})"
        if phase.strategy == "parallel":
            text += " in parallel" if len(active) > 1 else ""
        elif phase.strategy == "all_or_nothing":
            text += ", all or none" + (
                f" (compensate: {phase.compensate})" if phase.compensate else ""
            )
        else:
            text += f", {phase.strategy}"
    if done:
        text += f", {done} already done (skipped)"
    return text


def _left_out(phase: PlanPhase, worked: set[str]) -> list[str]:
    """'left out: HOSTS (why)' for the hosts other phases do work on (the rest are in the
    'Not touched' line), grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for ex in phase.excluded:
        if ex.host in worked:
            by_reason.setdefault(_short_reason(ex.reason), []).append(ex.host)
    if not by_reason:
        return []
    return ["left out: " + ", ".join(f"{_names(h)} ({why})" for why, h in by_reason.items())]


def _playbook_arg(name: str) -> str:
    """How a command names the plan's playbook: a packaged one by name (every one the tool
    ships: rotate and prerequisites too), any other as FILE (its path is the operator's)."""
    from tealeaf_fleet.playbooks import builtin_names

    return shlex.quote(name) if name in builtin_names() else "FILE"


def _plan_command(plan: Plan, inventory: str | None) -> str:
    name = plan.playbook["name"]
    command = f"fleet plan {shlex.quote(str(inventory or plan.inventory['path']))}"
    if name != "rollout":
        command += f" --playbook {_playbook_arg(name)}"
    return command


# --------------------------------------------------------------------------------------------
# markdown


def _md(text: str) -> str:
    """Escape a table cell: pipes split cells, angle brackets would vanish as HTML."""
    return (
        redact(text)
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\n", " ")
    )


DITTO = "(same as above)"


def opt_in_lines(plan: Plan) -> list[str]:
    """One line per safety rule the playbook relaxes with an opt-in key: what it allows and the
    phases that rely on it. Every view of the plan shows them (in red where it has colour)."""
    lines = []
    for opt in plan.opt_ins:
        used = ", ".join(opt["phases"]) or "none (set, but no phase needs it)"
        lines.append(f"OPT-IN {opt['key']}: {opt['allows']}; phases relying on it: {used}")
    return lines


def _ditto(step: Step, prev: Step | None) -> tuple[str, str]:
    """Description and impact, or DITTO where they repeat the row above: a 50-host phase
    would otherwise print the same paragraph 50 times and hide the rows that differ."""
    desc = DITTO if prev is not None and prev.description == step.description else step.description
    impact = DITTO if prev is not None and prev.impact == step.impact else step.impact
    return desc, impact


def _roles(plan: Plan) -> dict[str, str]:
    return {h.name: h.role for h in plan.hosts}


def _summary_rows(plan: Plan, window: Window | None = None) -> list[tuple[str, str]]:
    contacted = sum(1 for h in plan.hosts if h.contacted)
    facts = (
        f"gathered (digest {short(plan.facts_digest)}): steps already done are skipped"
        if plan.facts_digest
        else "not gathered: every step is listed as if nothing "
        "was done yet (use --facts to mark what is already in place)"
    )
    cert = f"{plan.certificate['source']} ({plan.certificate['path'].replace(chr(92), '/')})"
    if plan.pfx_sha256:
        cert += f", certificate fingerprint {colon_fp(plan.pfx_sha256)}"
    return [
        ("Playbook", f"{plan.playbook['name']} (digest {short(plan.playbook['digest'])})"),
        ("Inventory", f"{plan.inventory['path']} (digest {short(plan.inventory['digest'])})"),
        ("Tool", f"tealeaf-fleet {plan.tool_version}"),
        ("Ends with", _ends_with(plan)),
        (
            "Hosts",
            f"{len(plan.hosts)} ({contacted} contacted over WinRM, "
            f"{len(plan.hosts) - contacted} never contacted)",
        ),
        ("Certificate", cert),
        ("Facts", facts),
        ("Preflight", preflight_verdict(plan)),
        *([("Window", window_text(window))] if window else []),
        ("Plan digest", plan.digest),
    ]


def preflight_verdict(plan: Plan) -> str:
    """One line: not judged (no facts), BLOCKED (which hosts), or passes (with warnings)."""
    pre = plan.preflight
    if not pre.get("checked"):
        return "not judged: no facts (use --facts, or --dry-run without --no-facts)"
    findings = pre.get("findings") or []
    blockers = [f for f in findings if f["severity"] == "blocker"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    if blockers:
        hosts = sorted({h for f in blockers for h in f["hosts"]})
        return (
            f"BLOCKED: {len(blockers)} blocker(s) on {', '.join(hosts)}; the run would stop at "
            "its preflight and change nothing"
        )
    return f"passes ({len(warnings)} warning(s))"


def window_text(window: Window) -> str:
    """The estimated change window in one line."""
    return (
        f"about {duration_text(window.expected_s)}, at most {duration_text(window.worst_s)} "
        f"if every health gate waits its full timeout; figures from {window.source()}"
    )


def run_commands(
    plan: Plan, inventory: str | None = None, limit: str | None = None
) -> tuple[str, str]:
    """(the command that writes this plan as the approved JSON, the one that runs it)."""
    inv = shlex.quote(inventory) if inventory else "INVENTORY"
    name = plan.playbook["name"]
    run = "rollback" if name == "rollback" else "rollout"
    playbook = "" if name == run else f" --playbook {_playbook_arg(name)}"
    both = f" --limit {shlex.quote(limit)}" if limit else ""  # `!` and `*` are the shell's
    make = f"fleet plan {inv}{playbook if name != 'rollout' else ''}{both}"
    if name == "rollback":
        make = f"fleet plan {inv} --playbook rollback{both}"
    facts = " --facts" if plan.facts_digest else ""
    return (
        f"{make}{facts} --out plan.json",
        f"fleet {run} {inv}{playbook}{both} --approved-plan plan.json",
    )


def _ends_with(plan: Plan) -> str:
    ops = {p.op for p in plan.phases}
    if plan.rotation:
        new = (plan.validity or {}).get("new") or {}
        sha = new.get("sha256") or plan.pfx_sha256
        pair = f"pair {sha[:12]}" if sha else f"the pair in {Path(plan.certificate['path']).name}"
        return (
            "inter-process TLS stays ON; every Tealeaf server restarts onto "
            f"{pair} (RTV workstations: imported only)"
        )
    if "enable" in ops:
        return "inter-process TLS ON on every Tealeaf server"
    if "disable" in ops:
        return "inter-process TLS OFF on every Tealeaf server"
    if "reboot" in ops:
        return (
            "TLS setting unchanged (missing prerequisite values written; servers rebooted "
            "where a written value needs it)"
        )
    return "TLS setting unchanged (nothing is enabled, disabled or restarted)"


def _host_treatment(plan: Plan, host: str) -> str:
    ops: dict[str, bool] = {}  # action -> every step of it already done
    for phase in plan.phases:
        for step in phase.steps:
            if step.host == host:
                ops[step.action] = ops.get(step.action, True) and step.skip_reason is not None
    return (
        ", ".join(a + (" (already done)" if done else "") for a, done in ops.items())
        if ops
        else "nothing"
    )


def hosts_by_role(plan: Plan) -> list[tuple[str, list[str], str]]:
    """(role, hosts, what happens to them), one row per group of hosts of a role treated alike.

    Every host is judged on its own: when facts show a step done on hbr01 but not on hbr02, the
    change board must see two rows, not hbr02's treatment claimed for both.
    """
    rows: list[tuple[str, list[str], str]] = []
    for role in ROLE_ORDER:
        groups: dict[str, list[str]] = {}
        for h in plan.hosts:
            if h.role != role:
                continue
            what = _host_treatment(plan, h.name) if h.contacted else "nothing"
            if h.reason:
                what += f" ({h.reason})"
            groups.setdefault(what, []).append(h.name)
        rows += [(role, names, what) for what, names in groups.items()]
    return rows


def render_markdown(
    plan: Plan,
    *,
    window: Window | None = None,
    inventory: str | None = None,
    limit: str | None = None,
) -> str:
    """A change-ticket document: summary, window, hosts by role, phases, restarts, impact,
    rollback, and how to approve and run it."""
    roles = _roles(plan)
    lines: list[str] = []
    add = lines.append
    name = plan.playbook["name"]
    add(f"# Change plan: {name} (IBM Tealeaf CX inter-process TLS)")
    add("")
    if plan.description:
        add(f"> {_md(plan.description)}")
        add("")
    add("## Summary")
    add("")
    add("| | |")
    add("|---|---|")
    for key, value in _summary_rows(plan, window):
        add(f"| {key} | {_md(value)} |")
    add("")
    if window is not None:
        _window_section(add, plan, window)
    if plan.opt_ins:
        add("## Safety opt-ins: rules this playbook relaxes")
        add("")
        for line in opt_in_lines(plan):
            key, _, rest = line[len("OPT-IN ") :].partition(": ")
            add(f"- **OPT-IN `{key}`**: {_md(rest)}")
        add("")

    lines.extend(_findings_markdown(plan))
    lines.extend(_precheck_markdown(plan))
    for title, extra in (
        ("Certificate validity (new and installed, side by side)", validity_lines(plan)),
        ("PCA hand-off (outside this tool's reach)", handoff_lines(plan)),
    ):
        if extra:
            add(f"## {title}")
            add("")
            for line in extra:
                add(f"- {_md(line)}")
            add("")

    add("## Hosts by role")
    add("")
    add("| Role | Hosts | What happens to them |")
    add("|---|---|---|")
    for role, names, what in hosts_by_role(plan):
        add(f"| {ROLE_LABELS[role]} | {_md(', '.join(names))} | {_md(what)} |")
    add("")

    add("## Phases, in order")
    add("")
    for i, phase in enumerate(plan.phases, 1):
        head = f"### {i}. {_md(phase.name)}: {phase.op}, {strategy_text(phase)}"
        add(head)
        add("")
        if phase.gates:
            add(
                f"Gates after each host: {', '.join(phase.gates)}"
                f" (expecting {_expected_mode(plan, phase)}); a failed gate halts "
                "the run before the next host."
            )
            add("")
        if not phase.steps:
            add(f"No host has role {', '.join(phase.roles)}: nothing to do.")
            add("")
        else:
            add("| # | Host | Role | Action | Impact | Status |")
            add("|---|---|---|---|---|---|")
            prev = None
            for n, s in enumerate(phase.steps, 1):
                desc, impact = _ditto(s, prev)
                prev = s
                status = f"skip: {s.skip_reason}" if s.skip_reason else "will run"
                role = "controller" if s.host == CONTROLLER else roles.get(s.host, "")
                order = str(n) if phase.strategy == "rolling" else "-"
                add(
                    f"| {order} | {s.host} | {role} | {_md(desc)} | {_md(impact)} | {_md(status)} |"
                )
            add("")
        if phase.excluded:
            add("Left out:")
            add("")
            by_reason: dict[str, list[str]] = {}
            for ex in phase.excluded:
                by_reason.setdefault(ex.reason, []).append(ex.host)
            for reason, hosts in by_reason.items():
                add(f"- {', '.join(hosts)}: {_md(reason)}")
            add("")

    restarts = [p for p in plan.phases if p.op in ("restart", "reboot")]
    add("## Restart order")
    add("")
    if not restarts:
        add("This plan restarts nothing.")
    for n, phase in enumerate(restarts, 1):
        hosts = [s.host for s in phase.active_steps]
        if not hosts:
            add(f"{n}. {phase.name}: no host to restart.")
        elif phase.strategy == "rolling":
            each = at_a_time(phase.batch)
            add(
                f"{n}. {phase.name}: {' -> '.join(hosts)} ({each}; the next starts only "
                "after the previous passed its gates)"
            )
        else:
            add(f"{n}. {phase.name}: {', '.join(hosts)} together, after the phase above finished")
    add("")

    add("## Expected impact per host")
    add("")
    add("| Host | Role | Impact |")
    add("|---|---|---|")
    impacts_of: dict[str, list[str]] = {}
    for p in plan.phases:
        for s in p.active_steps:
            if not s.impact.startswith("none"):
                impacts_of.setdefault(s.host, []).append(s.impact)
    for h in plan.hosts:
        impacts = impacts_of.get(h.name, [])
        text = "; ".join(dict.fromkeys(impacts)) if impacts else "no service interruption"
        if not h.contacted:
            text = "none: never contacted"
        add(f"| {h.name} | {h.role} | {_md(text)} |")
    add("")

    add("## Rollback procedure")
    add("")
    for line in _rollback_text(plan):
        add(line)
    add("")
    add("## Deliberate departures from the vendor text")
    add("")
    for line in DEPARTURES:
        add(f"- {line}")
    add("")
    add("## Approval")
    add("")
    add(f"Plan digest: `{plan.digest}`")
    add("")
    make, run = run_commands(plan, inventory, limit)
    add("To make this the approved plan, write it as JSON and attach that file to the change:")
    add("")
    add(f"    {make}")
    add("")
    add(
        f"and check that it prints `plan {plan.digest[:12]}`. In the window, run exactly that plan:"
    )
    add("")
    add(f"    {run}")
    add("")
    add(
        "The tool rebuilds the plan and refuses to run (exit 4) if the inventory, playbook, "
        "tool version or facts changed since it was approved; it then asks for confirmation "
        "(add `--yes` when nobody can answer)."
    )
    add("")
    return redact("\n".join(lines))


# What this tool does differently from the vendor's procedure, on purpose (docs/prerequisites.md
# gives the reasons and sources); every change ticket states them.
DEPARTURES = (
    "WinHTTP DefaultSecureProtocols is written as 0xA80 (TLS 1.0, 1.1, 1.2), not the vendor's "
    "0xAA0, which also turns SSL 3.0 back on; `prerequisites.winhttp_protocols: 0xAA0` follows "
    "the vendor literally, with a warning. A value that already includes TLS 1.2 is left as is.",
    "Services an operator stopped stay stopped after a restart (the vendor restarts every "
    "TeaLeaf service); a reboot starts the services whose start mode is Auto, as Windows does.",
    "With certificate.source: generate the certificate pair is generated by the tool (one "
    "PKCS#12 with 3DES/SHA-1 that every Windows version imports), not by TLSTool.exe create; "
    "source: tlstool runs TLSTool.exe as the vendor does.",
    "HBRs restart (or reboot) one at a time, then Canisters one at a time, each behind health "
    "gates, then the other servers together; the vendor asks for one at a time without an "
    "order between HBRs and Canisters.",
    "The HBR's missing TLSCertPassword value is created with a placeholder text that says it "
    "is not a password, not the vendor's example 'Password123'.",
    "Configuration files that still mention port 23443 are named, never rewritten: the "
    "operator changes them.",
)


def _expected_mode(plan: Plan, phase: PlanPhase) -> str:
    if phase.op == "reboot":
        return "the mode EnableTLS gives, TLS or plain"
    return "TLS" if plan.expect_tls else "plain"


def _findings_markdown(plan: Plan) -> list[str]:
    """`## Preflight findings`: the verdict and every finding with its full text, per host."""
    out = ["## Preflight findings", "", f"**{_md(preflight_verdict(plan))}**", ""]
    findings = plan.preflight.get("findings") or []
    if findings:
        out += ["| Host | Severity | Code | Finding |", "|---|---|---|---|"]
        for f in findings:
            sev = f"**{f['severity'].upper()}**" if f["severity"] == "blocker" else f["severity"]
            out.append(
                f"| {_md(', '.join(f['hosts']))} | {sev} | {f['code']} | {_md(f['message'])} |"
            )
        out.append("")
    return out


def _precheck_markdown(plan: Plan) -> list[str]:
    """`## Pre-check: vendor prerequisites`: per Tealeaf server, what the `prerequisites`
    playbook still must write (or did: nothing left) and any reboot pending."""
    out = ["## Pre-check: vendor prerequisites", ""]
    if not plan.prechecks:
        out += [
            "Not checked: no facts were gathered. `fleet plan INVENTORY --facts` lists, per "
            "server, what `fleet rollout INVENTORY --playbook prerequisites` still has to write.",
            "",
        ]
        return out
    out += ["| Host | Prerequisites | Reboot |", "|---|---|---|"]
    for row in plan.prechecks:
        if not row["known"]:
            what, reboot = "unknown: its facts could not be read", "unknown"
        elif row["needed"]:
            what = "still to write (`--playbook prerequisites`): " + "; ".join(row["needed"])
            reboot = "needed after the writes" if row["reboot"] else "not needed"
        else:
            what, reboot = "all in place", "not needed"
        if row.get("written"):
            what = (
                "written by `--playbook prerequisites` (" + "; ".join(row["written"]) + "); " + what
            )
        if row["reboot_pending"]:
            reboot = f"PENDING {row['reboot_pending']}"
        out.append(f"| {row['host']} | {_md(what)} | {_md(reboot)} |")
    out.append("")
    return out


def _window_section(add: Any, plan: Plan, window: Window) -> None:
    """`## Change window`: one row per phase that does something, then the total."""
    add("## Change window (estimate)")
    add("")
    add("| Phase | Steps | About | At most |")
    add("|---|---|---|---|")
    for i, (phase, took) in enumerate(zip(plan.phases, window.phases, strict=True), 1):
        if not took.steps:
            continue
        measured = f" ({took.measured} measured)" if took.measured else ""
        add(
            f"| {i}. {_md(phase.name)} | {took.steps}{measured} | "
            f"{duration_text(took.expected_s)} | {duration_text(took.worst_s)} |"
        )
    add(
        f"| **Total** | | **{duration_text(window.expected_s)}** | "
        f"**{duration_text(window.worst_s)}** |"
    )
    add("")
    add(
        f"From {window.source()}; parallel phases in waves of {window.forks} hosts. "
        "'At most': every restart and every health gate waiting its full "
        "`rollout.health_timeout_s` (a run halts there rather than go on)."
    )
    add("")


def validity_lines(plan: Plan) -> list[str]:
    """The new pair and each installed pair, one line each: `new  <sha> valid A .. B`,
    `installed <sha> until B on hosts`; nothing when the plan knows neither."""
    v = plan.validity or {}
    lines = []
    new = v.get("new")
    if new:
        lines.append(
            f"new:       {new['sha256'][:12]}  valid {new['not_before']} .. {new['not_after']} UTC"
        )
    for row in v.get("installed") or []:
        same = " (the same pair)" if new and row["sha256"] == new["sha256"] else ""
        lines.append(
            f"installed: {row['sha256'][:12]}  until {row.get('not_after') or 'unknown'} "
            f"(host time){same}  on {', '.join(row['hosts'])}"
        )
    return lines


def handoff_lines(plan: Plan) -> list[str]:
    """One line per PCA: its declared build and the hand-off step."""
    return [
        f"{h['host']} (PCA build {h['build'] or 'not declared'}): {h['step']}"
        for h in plan.pca_handoff
    ]


def _rollback_text(plan: Plan) -> list[str]:
    ops = {p.op for p in plan.phases}
    if plan.rotation:
        return [
            "If a gate fails the run halts before the next host; TLS stays on everywhere "
            "(a rotation never switches it). Rerun the same command to resume.",
            "",
            "To go back to the previous pair: every pair the fleet used is archived in the "
            "state folder (`fleet cert history INVENTORY`); run `fleet rollout INVENTORY "
            "--playbook rotate --certificate-from-archive FINGERPRINT "
            "--certificate-password-file FILE` (the archive keeps no password).",
        ]
    if "enable" in ops:
        return [
            "If a gate fails the run halts before the next host; nothing else restarts. "
            "If enabling fails on any host, the tool disables TLS again wherever it succeeded "
            "(no service has restarted yet).",
            "",
            "To return to plain inter-process communication after the change: "
            "`fleet rollback INVENTORY` disables TLS on every Tealeaf server (TLSTool.exe "
            "disable, EnableTLS=0), restarts HBRs then Canisters one at a time and the rest in "
            "parallel, and checks that each Data Service logs `Port:` again. The imported "
            "certificates stay in place (harmless while TLS is off).",
            "",
            "By hand, per server: `TLSTool.exe disable` in `<install>\\Tools`, restart every "
            "service whose name starts with TeaLeaf, `iisreset`; HBRs and Canisters one at a "
            "time.",
        ]
    if "disable" in ops:
        return [
            "This plan is itself the rollback. To enable TLS again, run "
            "`fleet rollout INVENTORY` (the certificates are still in place, so copy and "
            "import are skipped)."
        ]
    if "prerequisites" in ops:
        return [
            "The values written are the vendor's prerequisites and change no running Tealeaf "
            "behaviour before TLS is enabled; each step lists the value found before (`was "
            "...`), which is what to restore by hand if one must be undone, followed by a "
            "reboot for SCHANNEL, .NET and WinHTTP values."
        ]
    return [
        "Nothing to roll back: this plan does not enable TLS or restart anything. The "
        "imported certificate files have no effect while EnableTLS is 0."
    ]
