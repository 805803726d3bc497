"""Text the user or a host controls is shown as written, never read as rich markup.

Why: the operator approves what the table shows. A phase named "[red]x[/red]" shown as "x", a
path "D:\\Tea[bold]leaf" shown as "D:\\Tealeaf" or a "[/]" that crashes the view would make
the screen differ from what runs. The plan table is covered by tests/data/hostile/markup.yaml;
these cover the other rich views: `fleet status`, `fleet history` and the live rollout view.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from tealeaf_fleet.engine.events import Event
from tealeaf_fleet.status import FleetStatus, HostStatus

MARKUP = "[red]9.0[/red]"
BROKEN = "pre[/]flight"  # a closing tag with nothing to close: rich raises MarkupError


def _console() -> Console:
    return Console(width=200, record=True, color_system=None, force_terminal=False)


def test_status_table_shows_host_facts_as_written() -> None:
    """Facts come from the hosts (a build string, an OS caption): the table shows them raw."""
    from tealeaf_fleet.cli.status import render

    facts = {
        "os": {"version": "10.0.17763", "caption": "Windows [/]"},
        "ps_version": BROKEN,
        "tealeaf_build": MARKUP,
        "services": [],
        "security": {},
    }
    host = HostStatus(
        name="hbr01", role="hbr", address="10.0.0.1", contacted=True, note="", facts=facts
    )
    console = _console()
    render(console, FleetStatus([host], [], None, None))
    text = console.export_text()
    assert MARKUP in text and BROKEN in text


def test_history_tables_show_journal_text_as_written(capsys) -> None:
    from tealeaf_fleet.cli.history import _print_run, _print_runs

    run = SimpleNamespace(
        id=7,
        command="rollout",
        started=1.0,
        finished=2.0,
        state="failed",
        user="ops",
        plan_digest="ab" * 32,
        message=f"halted at {MARKUP}",
        inventory_path="/x/inventory.yaml",
        controller="ctl",
    )
    step = SimpleNamespace(
        phase=BROKEN,
        host="hbr01",
        action="restart",
        outcome="failed",
        started=1.0,
        finished=2.0,
        message=MARKUP,
    )
    _print_runs([run])
    _print_run(run, [step], Path("/x/run-7.log"))
    out = capsys.readouterr().out
    assert f"halted at {MARKUP}" in out
    assert BROKEN in out and out.count(MARKUP) >= 2


def test_live_view_shows_phase_names_and_messages_as_written() -> None:
    from tealeaf_fleet.cli.rollout import LiveView

    view = LiveView()
    view(Event("step_started", run=1, phase=BROKEN, host="hbr01", action="restart"))
    view(
        Event(
            "step_finished",
            run=1,
            phase=BROKEN,
            host="can01",
            action="restart",
            outcome="failed",
            message=MARKUP,
        )
    )
    console = _console()
    console.print(view.renderable())
    text = console.export_text()
    assert BROKEN in text and MARKUP in text


def test_check_table_shows_host_answers_as_written() -> None:
    """`fleet check` prints the OS caption and PowerShell version a host reported."""
    from tealeaf_fleet.check import FleetCheck, HostCheck
    from tealeaf_fleet.check_rules import Line
    from tealeaf_fleet.cli.check import render

    host = HostCheck(
        name="hbr01",
        role="hbr",
        address="10.0.0.1",
        contacted=True,
        lines=[Line("fips", "warn", "FIPS policy [bold]on[/bold]", "")],
        facts={"os": {"version": "10.9[/]", "caption": "Windows"}},
        check={"powershell": {"version": MARKUP}},
    )
    console = _console()
    render(console, FleetCheck(hosts=[host], inventory="inv.yaml", started_at="", elapsed_s=1))
    text = console.export_text()
    assert "10.9[/]" in text and MARKUP in text and "[bold]on[/bold]" in text
