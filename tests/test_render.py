"""Renderers: what the change ticket (Markdown), the terminal table and the JSON contain, and
that no secret reaches any of them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tealeaf_fleet.cli.render import (
    FORMATS,
    colon_fp,
    hosts_by_role,
    render,
    render_markdown,
    render_summary,
    render_text,
)
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.plan import Plan, build_plan
from tealeaf_fleet.playbooks import load_playbook

SECRET_ENV = "Zq7-unique-env-secret-4711"
SECRET_FILE = "Zq7-unique-file-secret-0815"


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TLF_RENDER_WINRM_PW", SECRET_ENV)
    monkeypatch.setenv("TLF_RENDER_PFX_PW", SECRET_ENV + "-pfx")
    pw = tmp_path / "canister.pw"
    pw.write_text(SECRET_FILE + "\n")
    os.chmod(pw, 0o600)
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "tealeaf: {install_dir: 'D:\\Tealeaf'}\n"
        "winrm: {username: 'CORP\\svc', password_env: TLF_RENDER_WINRM_PW}\n"
        "certificate: {password_env: TLF_RENDER_PFX_PW}\n"
        "hosts:\n"
        "  portal01: {address: 10.0.0.1, role: portal}\n"
        "  hbr01: {address: 10.0.0.2, role: hbr}\n"
        "  hbr02: {address: 10.0.0.3, role: hbr}\n"
        "  can01: {address: 10.0.0.4, role: canister, winrm: {password_file: canister.pw}}\n"
        "  pca01: {address: 10.0.0.5, role: pca, pca_build: 3682-24}\n"
        "  rtv01: {address: 10.0.0.6, role: rtv}\n"
    )
    f = load_fleet(inv)
    # resolve every secret, as a rollout would, so that redaction knows them all
    for host in f.windows_hosts():
        f.winrm_password(host)
    f.pfx_password()
    return f


def test_markdown_is_a_change_ticket(fleet) -> None:
    plan = build_plan(load_playbook("rollout"), fleet)
    md = render_markdown(plan)
    for heading in (
        "# Change plan: rollout",
        "## Summary",
        "## Hosts by role",
        "## Phases, in order",
        "## Restart order",
        "## Expected impact per host",
        "## Rollback procedure",
        "## Approval",
    ):
        assert f"\n{heading}" in "\n" + md, heading
    # phases in order, each with its strategy
    order = [md.index(f"### {i}. {p.name}: ") for i, p in enumerate(plan.phases, 1)]
    assert order == sorted(order)
    assert (
        "### 5. enable: enable, all hosts or none (undone everywhere if one fails), "
        "compensate: disable" in md
    )
    assert "### 6. restart_hbr: restart, rolling, one host at a time" in md
    assert "1. restart_hbr: hbr01 -> hbr02 (one at a time" in md
    assert "3. restart_rest: portal01 together" in md
    assert "| HBR | hbr01, hbr02 | preflight, push_pfx, import, enable, restart, verify |" in md
    assert "| pca01 | pca | none: never contacted |" in md
    assert "- rtv01: import only, never enable or restart" in md
    assert "fleet rollback INVENTORY" in md
    assert f"Plan digest: `{plan.digest}`" in md
    # HTML-looking text is escaped so that a ticket system shows it
    assert "&lt;password&gt;" in md and "<password>" not in md


def test_markdown_for_rollback_and_prepare(fleet) -> None:
    rb = render_markdown(build_plan(load_playbook("rollback"), fleet))
    assert "This plan is itself the rollback" in rb
    assert "inter-process TLS OFF" in rb
    prep = render_markdown(build_plan(load_playbook("prepare"), fleet))
    assert "This plan restarts nothing." in prep
    assert "TLS setting unchanged" in prep


def test_table_text(fleet) -> None:
    plan = build_plan(load_playbook("rollout"), fleet)
    text = render_text(plan, width=160)
    assert "\x1b[" not in text  # no colour codes in files
    assert "6. restart_hbr (restart): rolling, one host at a time; gates: services" in text
    assert "left out: not affected by inter-process TLS" in text
    assert "(same as above)" in text  # repeated descriptions are not printed again
    assert f"Plan digest: {plan.digest}" in text
    for host in fleet.hosts:
        assert host in text


def test_json_is_the_plan(fleet) -> None:
    plan = build_plan(load_playbook("rollout"), fleet)
    assert Plan.from_json(render(plan, "json")) == plan
    assert json.loads(render(plan, "json"))["digest"] == plan.digest


@pytest.mark.parametrize("playbook", ["rollout", "rollback", "prepare", "status"])
def test_no_secret_in_any_format(fleet, playbook: str) -> None:
    plan = build_plan(load_playbook(playbook), fleet)
    raw = plan.to_json()  # before any redaction: the planner itself must not see secrets
    for fmt in FORMATS:
        text = render(plan, fmt)
        assert text
        for secret in (SECRET_ENV, SECRET_FILE, SECRET_ENV + "-pfx"):
            assert secret not in text, (fmt, secret)
            assert secret not in raw


def test_colon_fingerprint() -> None:
    assert colon_fp("ab01ff") == "AB:01:FF"


def test_large_phases_are_grouped_in_the_table_not_in_markdown(tmp_path: Path) -> None:
    lines = ["winrm: {username: u}", "hosts:"]
    lines += [f"  can{i:03d}: {{address: 10.1.0.{i}, role: canister}}" for i in range(1, 31)]
    lines += ["  hbr001: {address: 10.2.0.1, role: hbr}"]
    inv = tmp_path / "big.yaml"
    inv.write_text("\n".join(lines) + "\n")
    plan = build_plan(load_playbook("rollout"), load_fleet(inv))
    text = render_text(plan, width=200)
    assert "30 hosts: can001, can002" in text
    assert "1-30" in text  # the rolling order of the Canisters, as a range
    md = render_markdown(plan)
    assert "| 30 | can030 | canister |" in md  # the ticket names every server
    small = render_text(
        build_plan(load_playbook("rollout"), load_fleet(_small_inventory(tmp_path))), width=200
    )
    grouped = [line for line in small.splitlines() if " hosts: " in line]
    assert grouped and all("left out: " in line for line in grouped)  # steps: a row each
    assert "5 hosts: can1, can2, can3, can4, can5" in grouped[0]  # exclusions: one line


def _small_inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "small.yaml"
    inv.write_text(
        "winrm: {username: u}\nhosts:\n"
        + "".join(f"  can{i}: {{address: 10.3.0.{i}, role: canister}}\n" for i in range(1, 6))
    )
    return inv


def test_summary_is_one_line_per_phase(fleet) -> None:
    plan = build_plan(load_playbook("rollout"), fleet)
    lines = render_summary(plan, inventory="inv.yaml").splitlines()
    phase_lines = [line for line in lines if line.startswith("  ")]
    assert len(phase_lines) == len(plan.phases)
    for i, (line, phase) in enumerate(zip(phase_lines, plan.phases, strict=True), 1):
        assert line.lstrip().startswith(f"{i}. {phase.name}"), line
        assert ("gates: " + ", ".join(phase.gates) in line) == bool(phase.gates)
    by_name = {p.name: line for p, line in zip(plan.phases, phase_lines, strict=True)}
    assert "rolling, one at a time: hbr01 -> hbr02" in by_name["restart_hbr"]
    assert "4 hosts, all or none (compensate: disable)" in by_name["enable"]
    assert "left out: rtv01 (import only, never enable or restart)" in by_name["enable"]
    assert "left out: portal01, hbr01, hbr02, can01 (a Tealeaf server" in by_name["push_tools"]
    assert "once, on the controller" in by_name["certificate"]
    # a host no phase works on is said once, at the top, not on every phase line
    assert "Not touched: pca01 (not affected by inter-process TLS)" in lines
    assert not any("pca01" in line for line in phase_lines)
    assert lines[-2] == f"Plan digest: {plan.digest}"
    assert lines[-1] == "Full per-host table: fleet plan inv.yaml"
    assert "ends with inter-process TLS ON" in lines[0]
    rollback = render_summary(build_plan(load_playbook("rollback"), fleet), inventory="inv.yaml")
    assert "fleet plan inv.yaml --playbook rollback" in rollback
    assert "rtv01 (import only" in rollback.splitlines()[1]  # never touched by a rollback


def test_summary_counts_done_steps_and_caps_long_lists(fleet, tmp_path: Path) -> None:
    plan = build_plan(load_playbook("rollout"), fleet)
    plan.phase("import").steps[0].skip_reason = "nothing to do: already imported"
    line = next(x for x in render_summary(plan).splitlines() if ". import" in x)
    assert "3 hosts (hbr01, hbr02, can01) in parallel, 1 already done (skipped)" in line
    lines = ["winrm: {username: u}", "hosts:"]
    lines += [f"  can{i:03d}: {{address: 10.1.0.{i}, role: canister}}" for i in range(1, 31)]
    inv = tmp_path / "big.yaml"
    inv.write_text("\n".join(lines) + "\n")
    big = render_summary(build_plan(load_playbook("rollout"), load_fleet(inv)))
    restart = next(x for x in big.splitlines() if ". restart_canister" in x)
    assert "can001 -> can002" in restart and "-> ... (30 in all)" in restart
    assert "can030" not in restart
    assert len(restart) < 200


def test_summary_has_no_secret(fleet) -> None:
    for playbook in ("rollout", "rollback", "prepare", "status"):
        text = render_summary(build_plan(load_playbook(playbook), fleet))
        for secret in (SECRET_ENV, SECRET_FILE, SECRET_ENV + "-pfx"):
            assert secret not in text


def test_hosts_by_role_judges_every_host(fleet) -> None:
    plan = build_plan(load_playbook("rollout"), fleet)
    assert ("hbr", ["hbr01", "hbr02"], _treatment(done=())) in hosts_by_role(plan)
    # facts showed hbr01 already imported and enabled, hbr02 not: two rows, each true
    for phase in plan.phases:
        for step in phase.steps:
            if step.host == "hbr01" and step.action in ("import", "enable"):
                step.skip_reason = "nothing to do: already in place"
    rows = [r for r in hosts_by_role(plan) if r[0] == "hbr"]
    assert rows == [
        ("hbr", ["hbr01"], _treatment(done=("import", "enable"))),
        ("hbr", ["hbr02"], _treatment(done=())),
    ]
    md = render_markdown(plan)
    assert f"| HBR | hbr01 | {_treatment(done=('import', 'enable'))} |" in md
    assert f"| HBR | hbr02 | {_treatment(done=())} |" in md
    # every host appears in exactly one row
    names = [n for _role, hosts, _what in hosts_by_role(plan) for n in hosts]
    assert sorted(names) == sorted(h.name for h in plan.hosts)


def _treatment(done: tuple[str, ...]) -> str:
    ops = ("preflight", "push_pfx", "import", "enable", "restart", "verify")
    return ", ".join(op + (" (already done)" if op in done else "") for op in ops)


def test_printed_summary_wraps_under_the_phase_text(fleet) -> None:
    from rich.console import Console

    from tealeaf_fleet.cli.render import print_summary

    plan = build_plan(load_playbook("rollout"), fleet)
    console = Console(width=80, record=True, color_system=None, force_terminal=False)
    print_summary(plan, console, inventory="inv.yaml")
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    hbr = next(i for i, line in enumerate(lines) if ". restart_hbr " in line)
    column = lines[hbr].index("rolling")
    assert lines[hbr + 1].startswith(" " * column) and lines[hbr + 1][column] != " "
    # nothing was lost to the wrapping
    assert " ".join(" ".join(lines).split()) == " ".join(
        " ".join(render_summary(plan, inventory="inv.yaml").split("\n")).split()
    )


def test_opt_ins_are_marked_in_every_format(fleet, tmp_path: Path) -> None:
    """A playbook that relaxes a safety rule says so in red (table, summary), marked in the
    change ticket and listed in the JSON; the packaged playbooks show none."""
    import io

    from rich.console import Console

    from tealeaf_fleet.cli.render import print_summary, print_table

    book = tmp_path / "fast.yaml"
    book.write_text(
        "name: fast\nexpect_tls: true\nallow_partial_enable: true\nphases:\n"
        "  - {op: preflight}\n  - {name: enable_now, op: enable, strategy: parallel}\n"
    )
    plan = build_plan(load_playbook(book), fleet)
    line = "OPT-IN allow_partial_enable: TLS enabled otherwise than by one all_or_nothing phase"
    assert line in render_text(plan) and line in render_summary(plan)
    assert "- **OPT-IN `allow_partial_enable`**: TLS enabled otherwise" in render_markdown(plan)
    assert "relying on it: enable_now" in render_markdown(plan)
    assert json.loads(render(plan, "json"))["opt_ins"][0]["phases"] == ["enable_now"]
    for printer in (print_table, print_summary):
        buf = io.StringIO()
        printer(plan, Console(file=buf, width=200, force_terminal=True, color_system="standard"))
        red = [row for row in buf.getvalue().splitlines() if "OPT-IN" in row]
        assert red and all("\x1b[1;31m" in row for row in red), red
    plain = build_plan(load_playbook("rollout"), fleet)
    assert "OPT-IN" not in render_text(plain) + render_markdown(plain) + render_summary(plain)


def test_table_fits_100_columns_and_never_cuts_a_host_name(tmp_path: Path) -> None:
    """Long host names at the default width: every line within 100 columns, every name whole
    on one line (wrapped between names, never inside one), exclusions one row per reason."""
    names = [f"canister-{i:02d}.datacenter-west.example.internal" for i in range(1, 4)]
    lines = ["winrm: {username: u}", "hosts:"]
    lines += [f"  {n}: {{address: 10.4.0.{i}, role: canister}}" for i, n in enumerate(names, 1)]
    lines += ["  pca-collector-01.example.internal: {address: 10.4.1.1, role: pca}"]
    lines += [
        f"  rtv-{i}.workstations.example.internal: {{address: 10.4.2.{i}, role: rtv}}"
        for i in range(1, 4)
    ]
    inv = tmp_path / "long.yaml"
    inv.write_text("\n".join(lines) + "\n")
    fleet = load_fleet(inv)
    plan = build_plan(load_playbook("rollout"), fleet)
    text = render_text(plan)
    assert max(len(line) for line in text.splitlines()) <= 100
    for name in [*names, "pca-collector-01.example.internal"]:
        assert name in text, name
    assert "…" not in text
    enable = text[text.index("enable (enable)") :]
    enable = enable[: enable.index("restart_hbr")]
    assert enable.count("left out: import only") == 1  # three RTVs, one row


def test_markdown_ticket_has_the_window_and_the_commands_to_approve_and_run(fleet) -> None:
    from tealeaf_fleet.estimate import estimate

    plan = build_plan(load_playbook("rollout"), fleet)
    window = estimate(plan, fleet, measured={("restart", "hbr01"): 42.0})
    md = render_markdown(plan, window=window, inventory="site.yaml", limit="hbr*,can*")
    assert "## Change window (estimate)" in md
    assert "| **Total** |" in md and "1 step(s) from durations measured" in md
    assert "    fleet plan site.yaml --limit 'hbr*,can*' --out plan.json" in md
    assert "    fleet rollout site.yaml --limit 'hbr*,can*' --approved-plan plan.json" in md
    assert "SHA-256" not in md.replace("certificate fingerprint", "")  # one vocabulary
    back = render_markdown(build_plan(load_playbook("rollback"), fleet), inventory="site.yaml")
    assert "fleet plan site.yaml --playbook rollback --out plan.json" in back
    assert "fleet rollback site.yaml --approved-plan plan.json" in back


@pytest.mark.parametrize("name", ["rotate", "prerequisites", "prepare"])
def test_ticket_commands_name_every_packaged_playbook_and_quote_the_limit(fleet, name) -> None:
    """The approve-and-run commands work as pasted: a packaged playbook by its name (never
    FILE), and a --limit with `!` or `*` quoted for the shell."""
    from tealeaf_fleet.cli.render import run_commands

    plan = build_plan(load_playbook(name), fleet)
    make, run = run_commands(plan, "my site.yaml", "can0*,!can02")
    assert make.startswith(f"fleet plan 'my site.yaml' --playbook {name} --limit 'can0*,!can02'")
    assert run == (
        f"fleet rollout 'my site.yaml' --playbook {name} --limit 'can0*,!can02' "
        "--approved-plan plan.json"
    )
