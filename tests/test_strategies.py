"""Strategy semantics with plain callables: ordering, bounds, no overlap, compensation, stop."""

from __future__ import annotations

import threading
import time

import pytest

from tealeaf_fleet.engine.strategies import (
    CONTROLLER,
    StepResult,
    run_all_or_nothing,
    run_parallel,
    run_rolling,
    run_strategy,
)
from tealeaf_fleet.errors import RemoteScriptError

HOSTS = [f"h{i}" for i in range(6)]


class Tracker:
    """Records start/end order and the peak number of hosts working at once."""

    def __init__(self, fail=(), hold=0.02):
        self.fail = set(fail)
        self.hold = hold
        self.log: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, name: str) -> StepResult:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.log.append(("start", name))
        time.sleep(self.hold)  # long enough that overlapping work would be seen overlapping
        with self.lock:
            self.active -= 1
            self.log.append(("end", name))
        if name in self.fail:
            return StepResult("failed", f"{name} broke")
        return StepResult("changed")


def test_controller_runs_once():
    calls = []
    result = run_strategy("controller", HOSTS, lambda t: calls.append(t) or StepResult("ok"))
    assert calls == [CONTROLLER]
    assert result.ok and list(result.results) == [CONTROLLER]


def test_parallel_runs_everything_within_forks():
    work = Tracker(hold=0.05)
    result = run_parallel(HOSTS, work, forks=3)
    assert result.ok
    assert list(result.results) == HOSTS  # reported in inventory order
    assert 1 < work.peak <= 3


def test_parallel_failure_does_not_stop_the_others():
    work = Tracker(fail={"h1"})
    result = run_parallel(HOSTS, work, forks=2)
    assert result.failed == ["h1"]
    assert len(result.results) == len(HOSTS) and not result.ok


def test_rolling_never_overlaps_and_keeps_order():
    work = Tracker()
    result = run_rolling(HOSTS, work, batch=1, forks=10)
    assert result.ok
    assert work.peak == 1
    expected = [entry for h in HOSTS for entry in (("start", h), ("end", h))]
    assert work.log == expected


def test_rolling_batches_of_two():
    work = Tracker(hold=0.05)
    run_rolling(HOSTS, work, batch=2, forks=10)
    assert work.peak == 2
    # Each batch ends completely before the next one starts.
    starts = [i for i, (kind, _) in enumerate(work.log) if kind == "start"]
    ends = [i for i, (kind, _) in enumerate(work.log) if kind == "end"]
    for b in range(3):
        assert max(ends[2 * b:2 * b + 2]) < min(starts[2 * (b + 1):] or [len(work.log)])


def test_rolling_halts_at_the_first_failure_leaving_later_hosts_untouched():
    work = Tracker(fail={"h2"})
    result = run_rolling(HOSTS, work, batch=1)
    assert result.failed == ["h2"]
    assert [name for kind, name in work.log if kind == "start"] == ["h0", "h1", "h2"]
    assert result.not_started == ["h3", "h4", "h5"]


def test_a_raised_fleet_error_is_a_failed_step():
    def work(name):
        if name == "h1":
            raise RemoteScriptError("TLSTool.exe missing", op="tlstool", exit_code_remote=1,
                                    host=name)
        return StepResult("ok")

    result = run_rolling(HOSTS, work)
    assert result.failed == ["h1"]
    assert "TLSTool.exe missing" in result.results["h1"].message
    assert isinstance(result.results["h1"].error, RemoteScriptError)


def test_a_bug_in_work_is_not_swallowed():
    def work(name):
        raise KeyError(name)

    with pytest.raises(KeyError):
        run_parallel(HOSTS, work)


def test_all_or_nothing_compensates_the_hosts_that_succeeded():
    work = Tracker(fail={"h3"})
    undone = []
    result = run_all_or_nothing(HOSTS, work, compensate=lambda n: undone.append(n)
                                or StepResult("changed"), retries=1)
    assert result.failed == ["h3"]
    # h3 was tried twice (one retry), everybody else once.
    starts = [name for kind, name in work.log if kind == "start"]
    assert starts.count("h3") == 2 and all(starts.count(h) == 1 for h in HOSTS if h != "h3")
    assert sorted(undone) == [h for h in HOSTS if h != "h3"]
    assert set(result.compensated) == set(undone)
    assert not result.ok


def test_all_or_nothing_retry_that_succeeds_needs_no_compensation():
    attempts = {}

    def flaky(name):
        attempts[name] = attempts.get(name, 0) + 1
        if name == "h0" and attempts[name] == 1:
            return StepResult("failed", "transient")
        return StepResult("changed")

    undone = []
    result = run_all_or_nothing(HOSTS, flaky, compensate=lambda n: undone.append(n)
                                or StepResult("changed"))
    assert result.ok and undone == [] and attempts["h0"] == 2


def test_stop_starts_no_new_host():
    stop = threading.Event()

    def work(name):
        if name == "h1":
            stop.set()  # the operator pressed Ctrl-C while h1 was restarting
        return StepResult("changed")

    result = run_rolling(HOSTS, work, stop=stop)
    assert list(result.results) == ["h0", "h1"]  # h1 finished its work
    assert result.interrupted and result.not_started == ["h2", "h3", "h4", "h5"]


def test_interrupted_all_or_nothing_is_undone():
    stop = threading.Event()
    undone = []

    def work(name):
        if name == "h0":
            stop.set()
        return StepResult("changed")

    result = run_all_or_nothing(HOSTS, work, forks=1, stop=stop,
                                compensate=lambda n: undone.append(n) or StepResult("changed"))
    assert result.interrupted
    assert undone == ["h0"]


def test_unknown_strategy():
    with pytest.raises(ValueError):
        run_strategy("yolo", HOSTS, lambda n: StepResult("ok"))
