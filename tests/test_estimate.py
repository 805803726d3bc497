"""The change window estimate (estimate.py): the plan's shape over the inventory's timings, and
durations measured in earlier runs (a real journal, real SQLite, opened read-only) where they
exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.estimate import (
    DEFAULT_REBOOT_S,
    DEFAULT_RESTART_S,
    GATE_S,
    OP_S,
    duration_text,
    estimate,
    measured_durations,
)
from tealeaf_fleet.journal import Journal
from tealeaf_fleet.plan import build_plan
from tealeaf_fleet.playbooks import load_playbook
from test_plan import ESTATE, make_fleet

TIMINGS = "rollout: {soak_s: 30, health_timeout_s: 600, restart_s: {hbr: 100, canister: 200}}"


def test_rolling_phases_add_up_host_by_host_and_parallel_ones_by_wave(tmp_path: Path):
    fleet = make_fleet(tmp_path, ESTATE, TIMINGS)
    plan = build_plan(load_playbook("rollout"), fleet)
    window = estimate(plan, fleet, forks=10)
    by = {p.name: p for p in window.phases}
    assert by["restart_hbr"].expected_s == 2 * (100 + GATE_S + 30)  # inventory's restart_s
    assert by["restart_canister"].expected_s == 3 * (200 + GATE_S + 30)
    # portal01 and report01 together: the slower (the Portal default) decides
    assert by["restart_rest"].expected_s == DEFAULT_RESTART_S["portal"] + GATE_S + 30
    assert by["restart_hbr"].worst_s == 2 * (2 * 600 + 30)
    assert by["import"].expected_s == OP_S["import"]  # 7 servers, one wave of 10
    assert estimate(plan, fleet, forks=3).phases[3].expected_s == 3 * OP_S["import"]
    assert window.expected_s == sum(p.expected_s for p in window.phases)
    assert window.measured == 0 and "inventory's timings" in window.source()


def test_measured_durations_from_the_journal_replace_the_model(tmp_path: Path):
    fleet = make_fleet(tmp_path, ESTATE, TIMINGS)
    journal = Journal(tmp_path / "state")
    run = journal.start_run(command="rollout", inventory_path=str(fleet.path))
    for host, outcome in (("hbr01", "changed"), ("hbr02", "skipped"), ("can01", "failed")):
        step = journal.step_started(run, "restart_hbr", host, "restart")
        journal.step_finished(step, outcome, None)
    journal.finish_run(run, "failed", None)
    journal.close()
    measured = measured_durations(tmp_path / "state" / "journal.sqlite", ["hbr01", "hbr02"])
    assert list(measured) == [("restart", "hbr01")]  # skipped and failed steps say nothing
    plan = build_plan(load_playbook("rollout"), fleet)
    window = estimate(plan, fleet, measured={("restart", "hbr01"): 42.0})
    hbr = next(p for p in window.phases if p.name == "restart_hbr")
    assert hbr.expected_s == 42.0 + (100 + GATE_S + 30) and hbr.measured == 1
    assert "1 step(s) from durations measured" in window.source()
    assert measured_durations(tmp_path / "nowhere.sqlite", ["hbr01"]) == {}


def test_steps_already_done_cost_nothing(tmp_path: Path):
    fleet = make_fleet(tmp_path, {"hbr01": "hbr"}, TIMINGS)
    plan = build_plan(load_playbook("rollout"), fleet)
    plan.phase("restart_hbr").steps[0].skip_reason = "nothing to do: already on TLS"
    assert next(p for p in estimate(plan, fleet).phases if p.name == "restart_hbr").steps == 0


def test_restart_s_in_the_inventory_is_checked(tmp_path: Path):
    with pytest.raises(InputError) as caught:
        make_fleet(tmp_path, {"hbr01": "hbr"}, "rollout: {restart_s: {hbr: 0}}")
    assert caught.value.field == "rollout.restart_s.hbr"
    with pytest.raises(InputError) as caught:
        make_fleet(tmp_path, {"hbr01": "hbr"}, "rollout: {restart_s: {rtv: 10}}")
    assert "unknown key 'rtv'" in caught.value.message


@pytest.mark.parametrize(
    "seconds,text", [(12.2, "13 s"), (60, "1 min"), (61, "2 min"), (3900, "1 h 05 min")]
)
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def test_the_prerequisites_reboots_are_timed_as_reboots_behind_their_gates(tmp_path: Path):
    """The prerequisites playbook's `reboot` op: a reboot per host (not one remote op), HBRs
    and Canisters one at a time, with the gates, the soak and the worst case of a restart."""
    fleet = make_fleet(tmp_path, ESTATE, TIMINGS)
    plan = build_plan(load_playbook("prerequisites"), fleet)
    by = {p.name: p for p in estimate(plan, fleet, forks=10).phases}
    assert by["reboot_hbr"].steps == 2 and by["reboot_canister"].steps == 3
    assert by["reboot_hbr"].expected_s == 2 * (DEFAULT_REBOOT_S + GATE_S + 30)
    assert by["reboot_canister"].expected_s == 3 * (DEFAULT_REBOOT_S + GATE_S + 30)
    assert by["reboot_rest"].expected_s == DEFAULT_REBOOT_S + GATE_S + 30  # one wave
    assert by["reboot_hbr"].worst_s == 2 * (2 * 600 + 30)
    # with `rollout.restart: reboot`, the inventory's restart_s times reboots
    (tmp_path / "reboot").mkdir()
    timed = make_fleet(
        tmp_path / "reboot",
        ESTATE,
        "rollout: {restart: reboot, soak_s: 30, health_timeout_s: 600, restart_s: {hbr: 400}}",
    )
    hbr = estimate(build_plan(load_playbook("prerequisites"), timed), timed).phases[2]
    assert hbr.name == "reboot_hbr" and hbr.expected_s == 2 * (400 + GATE_S + 30)
