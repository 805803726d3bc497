"""RTV workstations off the servers' critical path, at the engine's level (engine/runner.py,
engine/actions.py): a failure in a workstation phase does not halt the run, later workstation
phases leave that workstation out, and the run ends failed with one line per workstation and
the `--limit` command; a workstation of another build is warned about after preflight. The
same end to end, over WinRM to the lab: tests/test_workstations_e2e.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tealeaf_fleet.engine.actions import check_workstation_builds
from tealeaf_fleet.engine.context import RunContext
from tealeaf_fleet.engine.events import EventBus, Recorder
from tealeaf_fleet.engine.runner import Runner
from tealeaf_fleet.engine.strategies import StepResult
from test_plan import make_fleet

HOSTS = [
    {"name": "hbr01", "role": "hbr"},
    {"name": "rtv01", "role": "rtv"},
    {"name": "rtv02", "role": "rtv"},
]


def phase(name, op, hosts):
    return {"name": name, "op": op, "strategy": "parallel", "steps": [{"host": h} for h in hosts]}


PLAN = {
    "digest": "d-ws",
    "hosts": HOSTS,
    "phases": [
        phase("import", "import", ["hbr01"]),
        phase("restart_rest", "restart", ["hbr01"]),
        phase("rtv_push_pfx", "push_pfx", ["rtv01", "rtv02"]),
        phase("rtv_import", "import", ["rtv01", "rtv02"]),
    ],
}


def test_a_failed_workstation_leaves_the_servers_done_and_names_the_way_to_finish(tmp_path):
    calls = []

    def action(ctx, ph, host):
        calls.append((ph.name, host))
        if (ph.name, host) == ("rtv_push_pfx", "rtv02"):
            return StepResult("failed", "disk full")
        return StepResult("changed")

    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    context = SimpleNamespace(workstation_problems={})
    runner = Runner(
        plan=PLAN,
        actions={op: action for op in ("import", "restart", "push_pfx")},
        context=context,
        bus=bus,
        journal=None,
        command="rollout",
        inventory_label="inv.yaml --limit hbr01,rtv*",
    )
    result = runner.run()
    assert ("restart_rest", "hbr01") in calls  # the servers were done first
    assert ("rtv_import", "rtv01") in calls and ("rtv_import", "rtv02") not in calls
    assert result.outcome == "failed" and result.exit_code == 1
    assert result.workstations == {"rtv02": "rtv_push_pfx: disk full"}
    assert "the servers are done" in result.message
    assert "`fleet rollout inv.yaml --limit rtv02`" in result.hint  # this run's own limit goes
    skipped = [e for e in rec.of_type("step_finished") if e.host == "rtv02"]
    assert [e.outcome for e in skipped] == ["failed", "skipped"]
    finished = rec.of_type("run_finished")[0]
    assert finished.data["workstations"] == {"rtv02": "rtv_push_pfx: disk full"}


def test_a_workstation_of_another_build_is_warned_about(tmp_path: Path):
    fleet = make_fleet(tmp_path, {"hbr01": "hbr", "rtv01": "rtv", "rtv02": "rtv"})
    bus, rec = EventBus(), Recorder()
    bus.subscribe(rec)
    ctx = RunContext(fleet, expect_tls=True, bus=bus)
    ctx.facts = {
        "hbr01": {"tealeaf_build": "9.0.2.1351"},
        "rtv01": {"tealeaf_build": "9.0.2.1351"},
        "rtv02": {"tealeaf_build": "9.0.2.1223"},
    }
    check_workstation_builds(ctx)
    assert list(ctx.warnings) == ["rtv02"]
    assert "9.0.2.1223 differs from the servers' (9.0.2.1351)" in ctx.warnings["rtv02"][0]
    assert [e.host for e in rec.of_type("message")] == ["rtv02"]


ARCHIVED = {"source": "archive", "sha256": "ab" * 32, "password_env": "PFX_PASSWORD"}


def test_the_finish_command_names_the_playbook_and_the_archived_pair(tmp_path):
    """A prepare (or a rotate-back to an archived pair) an RTV failed in: the finish
    command is the same run's command (`--playbook`, the archive flags), limited to the
    workstation, or it would run the rollout playbook or make a new pair there."""

    def action(ctx, ph, host):
        return StepResult("failed", "unreachable") if host == "rtv02" else StepResult("changed")

    plan = {**PLAN, "playbook": {"name": "prepare"}}
    context = SimpleNamespace(
        workstation_problems={},
        fleet=SimpleNamespace(normalized={"certificate": ARCHIVED}),
    )
    runner = Runner(
        plan=plan,
        actions={op: action for op in ("import", "restart", "push_pfx")},
        context=context,
        bus=EventBus(),
        journal=None,
        command="rollout",
        inventory_label="inv.yaml --limit 'hbr01,rtv*'",
        playbook_ref="prepare",
    )
    result = runner.run()
    assert result.exit_code == 1
    from tealeaf_fleet.certarchive import rerun_flags

    flags = rerun_flags(ARCHIVED)
    assert flags  # the archive flag is carried over
    assert f"`fleet rollout inv.yaml --limit rtv02 --playbook prepare{flags}`" in result.hint
