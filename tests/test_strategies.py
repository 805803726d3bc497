"""Strategy semantics with plain callables: ordering, bounds, no overlap, compensation, stop."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from tealeaf_fleet.engine.context import RunContext
from tealeaf_fleet.engine.events import EventBus, Recorder
from tealeaf_fleet.engine.gates import Before, run_gates
from tealeaf_fleet.engine.runner import Runner
from tealeaf_fleet.engine.strategies import (
    CONTROLLER,
    StepResult,
    run_all_or_nothing,
    run_parallel,
    run_rolling,
    run_strategy,
)
from tealeaf_fleet.errors import GateFailed, RemoteScriptError
from tealeaf_fleet.journal import Journal
from tealeaf_fleet.secrets import Secret, redact

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
        assert max(ends[2 * b : 2 * b + 2]) < min(starts[2 * (b + 1) :] or [len(work.log)])


def test_rolling_halts_at_the_first_failure_leaving_later_hosts_untouched():
    work = Tracker(fail={"h2"})
    result = run_rolling(HOSTS, work, batch=1)
    assert result.failed == ["h2"]
    assert [name for kind, name in work.log if kind == "start"] == ["h0", "h1", "h2"]
    assert result.not_started == ["h3", "h4", "h5"]


def test_a_raised_fleet_error_is_a_failed_step():
    def work(name):
        if name == "h1":
            raise RemoteScriptError(
                "TLSTool.exe missing", op="tlstool", exit_code_remote=1, host=name
            )
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
    result = run_all_or_nothing(
        HOSTS, work, compensate=lambda n: undone.append(n) or StepResult("changed"), retries=1
    )
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
    result = run_all_or_nothing(
        HOSTS, flaky, compensate=lambda n: undone.append(n) or StepResult("changed")
    )
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

    result = run_all_or_nothing(
        HOSTS,
        work,
        forks=1,
        stop=stop,
        compensate=lambda n: undone.append(n) or StepResult("changed"),
    )
    assert result.interrupted
    assert undone == ["h0"]


def test_unknown_strategy():
    with pytest.raises(ValueError):
        run_strategy("yolo", HOSTS, lambda n: StepResult("ok"))


# --- the runner over a plan's JSON, with plain actions and a real journal --------------------


def _plan(digest="d1"):
    def phase(name, op, strategy, hosts):
        return {
            "name": name,
            "op": op,
            "strategy": strategy,
            "batch": 1,
            "gates": [],
            "steps": [{"host": h, "action": op} for h in hosts],
        }

    return {
        "digest": digest,
        "inventory": {"path": "inv.yaml", "digest": "i"},
        "playbook": {"name": "rollout", "digest": "p"},
        "phases": [
            phase("preflight", "preflight", "parallel", ["a", "b", "c"]),
            phase("enable", "enable", "all_or_nothing", ["a", "b", "c"]),
            phase("restart", "restart", "rolling", ["a", "b", "c"]),
        ],
    }


class Actions(dict):
    def __init__(self, fail=None):
        super().__init__()
        self.fail = fail or set()
        self.calls: list[tuple[str, str]] = []
        for op in ("preflight", "enable", "disable", "restart"):
            self[op] = self._make(op)

    def _make(self, op):
        def action(ctx, phase, host):
            self.calls.append((op, host))
            if (op, host) in self.fail:
                return StepResult("failed", f"{op} broke on {host}")
            return StepResult("changed")

        return action


def _runner(tmp_path, actions, digest="d1", stop=None):
    bus = EventBus()
    rec = Recorder()
    bus.subscribe(rec)
    journal = Journal(tmp_path)
    runner = Runner(
        plan=_plan(digest),
        actions=actions,
        context=None,
        bus=bus,
        journal=journal,
        command="rollout",
        inventory_label="inv.yaml",
        stop=stop,
    )
    return runner, rec, journal


def test_runner_halts_on_the_first_failed_phase_and_resumes(tmp_path):
    actions = Actions(fail={("restart", "b")})
    runner, rec, journal = _runner(tmp_path, actions)
    result = runner.run()
    assert result.outcome == "failed" and result.exit_code == 1
    assert "restart" in result.message and "b" in result.message
    assert "fleet status inv.yaml" in result.hint and "fleet rollback inv.yaml" in result.hint
    assert ("restart", "c") not in actions.calls
    assert rec.events[0].type == "run_started" and rec.events[-1].type == "run_finished"
    journal.close()
    # Rerun with the fault gone: "a" passed its restart before, so it is not restarted again.
    actions2 = Actions()
    runner2, rec2, journal2 = _runner(tmp_path, actions2)
    result2 = runner2.run()
    assert result2.outcome == "ok"
    assert [h for op, h in actions2.calls if op == "restart"] == ["b", "c"]
    skipped = [e for e in rec2.of_type("step_finished") if e.outcome == "skipped"]
    assert [(e.host, e.action) for e in skipped] == [("a", "restart")]
    assert result2.recap["a"]["skipped"] == 1
    journal2.close()


def test_runner_preflight_blocker_changes_nothing(tmp_path):
    actions = Actions(fail={("preflight", "c")})
    runner, _, journal = _runner(tmp_path, actions)
    result = runner.run()
    assert result.outcome == "blocked" and result.exit_code == 3
    assert result.blockers == {"c": ["preflight broke on c"]}
    assert {op for op, _ in actions.calls} == {"preflight"}
    assert journal.runs()[0].outcome == "blocked"
    journal.close()


def test_event_json_redacts_secrets_at_any_depth():
    """A blocker quoting a password (a run's `blockers` are lists per host) is masked in the
    JSON Lines form, like the message itself."""
    secret = Secret("Ev3nt-Deep-S3cret", source="test")
    text = f"remote said {secret.reveal()}"
    event = EventBus().emit(
        "run_finished",
        message=text,
        hint=text,
        blockers={"h1": [text]},
        pairs=[("h2", text)],
        recap={"h1": {"failed": 1}},
    )
    line = event.to_json()
    assert secret.reveal() not in line
    data = json.loads(line)
    assert data["blockers"]["h1"] == [redact(text)] and data["pairs"] == [["h2", redact(text)]]
    assert data["message"] == data["hint"] == redact(text) != text
    assert data["recap"] == {"h1": {"failed": 1}}  # not strings: kept as they are


def test_runner_enable_failure_compensates(tmp_path):
    actions = Actions(fail={("enable", "b")})
    runner, rec, journal = _runner(tmp_path, actions)
    result = runner.run()
    assert result.outcome == "failed"
    assert sorted(h for op, h in actions.calls if op == "disable") == ["a", "c"]
    assert not [c for c in actions.calls if c[0] == "restart"]
    assert "disable was run again on 2 host(s)" in result.message
    journal.close()


def test_runner_interrupt_between_steps(tmp_path):
    stop = threading.Event()
    actions = Actions()
    original = actions["restart"]

    def restart(ctx, phase, host):
        if host == "a":
            stop.set()
        return original(ctx, phase, host)

    actions["restart"] = restart
    runner, _, journal = _runner(tmp_path, actions, stop=stop)
    result = runner.run()
    assert result.outcome == "interrupted" and result.exit_code == 130
    assert "rerun `fleet rollout inv.yaml`" in result.hint
    assert [h for op, h in actions.calls if op == "restart"] == ["a"]
    assert journal.runs()[0].outcome == "interrupted"
    journal.close()


def test_runner_journals_an_unexpected_exception_as_crashed(tmp_path):
    """A bug in an action (not a FleetError) ends the run `crashed` in the journal, never `ok`,
    and still reaches the caller (the CLI writes the crash log)."""
    actions = Actions()

    def enable(ctx, phase, host):
        raise ZeroDivisionError("a bug")

    actions["enable"] = enable
    runner, rec, journal = _runner(tmp_path, actions)
    with pytest.raises(ZeroDivisionError):
        runner.run()
    record = journal.runs()[0]
    assert record.outcome == "crashed" and record.state == "crashed"
    assert "ZeroDivisionError" in record.message
    finished = rec.of_type("run_finished")[-1]
    assert finished.data["result"] == "crashed" and finished.outcome == "failed"
    assert not [op for op, _ in actions.calls if op == "restart"]
    journal.close()


def test_a_second_interrupt_does_not_wait_for_steps_in_flight(tmp_path):
    """KeyboardInterrupt (the CLI's second Ctrl-C / SIGTERM) reaches the runner while another
    host's step is still running: the run is journaled `interrupted` at once, and that step is
    abandoned, not waited for."""
    release, finished = threading.Event(), []
    actions = Actions()

    def preflight(ctx, phase, host):
        if host == "a":
            raise KeyboardInterrupt
        release.wait(20)  # b and c: still running when the interrupt arrives
        finished.append(host)
        return StepResult("ok")

    actions["preflight"] = preflight
    runner, _, journal = _runner(tmp_path, actions)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run()
        assert finished == []  # returned before b and c finished
        record = journal.runs()[0]
        assert record.outcome == "interrupted" and "stopped at once" in record.message
    finally:
        release.set()
        journal.close()


# --- health gates against scripted facts and probes (no network) ------------------------------

PFX_SHA = "ab" * 32
OLD_SHA = "cd" * 32


class ScriptedConn:
    """Answers each `facts` op with the next scripted result (the last one repeats)."""

    name = "hbr01"

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def run_op(self, op, params, *, timeout_s, read_only):
        assert op == "facts" and read_only
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def close(self):
        pass


def _facts(states, mode="tls", started="2026-11-27T11:00:05"):
    return {
        "services": [{"name": n, "state": s} for n, s in states.items()],
        "iis": {"present": False},
        "install_dir": "D:\\Tealeaf",
        "data_service": {"mode": mode, "port": 23000, "started_at": started, "log": "x.log"},
    }


def _ctx(conn, *, expect_tls=True, probes=None, timeout=1):
    from tealeaf_fleet.inventory import PrerequisiteSettings

    fleet = SimpleNamespace(
        install_dir="D:\\Tealeaf",
        hosts={},
        rollout=SimpleNamespace(
            health_timeout_s=timeout, soak_s=0, verify_handshake=True, restart="services"
        ),
        prerequisites=PrerequisiteSettings(),
    )
    probes = probes or {
        23000: SimpleNamespace(kind="tls", sha256=PFX_SHA),
        20000: SimpleNamespace(kind="tls", sha256=PFX_SHA),
    }
    bus = EventBus()
    rec = Recorder()
    bus.subscribe(rec)
    ctx = RunContext(
        fleet,
        expect_tls=expect_tls,
        bus=bus,
        connect=lambda h: conn,
        probe=lambda address, port, timeout_s: probes[port],
    )
    ctx.pfx = SimpleNamespace(sha256=PFX_SHA)
    return ctx, rec


HOST = SimpleNamespace(
    name="hbr01",
    role="hbr",
    address="127.0.0.1",
    data_service_port=23000,
    tms_port=20000,
    install_dir=None,
)
GATES = ["services", "iis", "data_service_log", "handshake", "soak"]


def _before(**kw):
    base = dict(
        running=["TeaLeafTMS", "TeaLeafDataService"],
        stopped=["TeaLeafSnapshot"],
        iis_running=False,
        has_data_service=True,
        imported_sha256=OLD_SHA,
        since="2026-11-27T11:00:00",
    )
    base.update(kw)
    return Before(**base)


def test_gates_pass_from_one_snapshot():
    conn = ScriptedConn(
        [
            _facts(
                {
                    "TeaLeafTMS": "Running",
                    "TeaLeafDataService": "Running",
                    "TeaLeafSnapshot": "Stopped",
                }
            )
        ]
    )
    ctx, rec = _ctx(conn)
    passed = run_gates(ctx, "restart_hbr", HOST, GATES, _before())
    assert [p.split(":")[0] for p in passed] == ["services", "data_service_log", "handshake"]
    assert conn.calls == 1  # one facts read answered every gate
    assert [e.data["gate"] for e in rec.of_type("gate")] == [
        "services",
        "data_service_log",
        "handshake",
    ]


def test_gates_wait_for_a_slow_service_then_pass():
    slow = _facts(
        {
            "TeaLeafTMS": "Running",
            "TeaLeafDataService": "StartPending",
            "TeaLeafSnapshot": "Stopped",
        },
        started="2026-11-27T10:00:00",
    )
    ready = _facts(
        {"TeaLeafTMS": "Running", "TeaLeafDataService": "Running", "TeaLeafSnapshot": "Stopped"}
    )
    conn = ScriptedConn([slow, ready])
    ctx, _ = _ctx(conn, timeout=10)
    run_gates(ctx, "restart_hbr", HOST, GATES, _before())
    assert conn.calls == 2


def test_a_service_that_never_comes_back_fails_the_gate():
    conn = ScriptedConn(
        [
            _facts(
                {
                    "TeaLeafTMS": "Running",
                    "TeaLeafDataService": "Stopped",
                    "TeaLeafSnapshot": "Stopped",
                }
            )
        ]
    )
    ctx, rec = _ctx(conn, timeout=1)
    with pytest.raises(GateFailed) as info:
        run_gates(ctx, "restart_hbr", HOST, GATES, _before())
    assert info.value.gate == "services" and "TeaLeafDataService (Stopped)" in str(info.value)
    assert rec.of_type("gate")[-1].outcome == "failed"


def test_a_stopped_service_found_running_fails_at_once():
    conn = ScriptedConn(
        [
            _facts(
                {
                    "TeaLeafTMS": "Running",
                    "TeaLeafDataService": "Running",
                    "TeaLeafSnapshot": "Running",
                }
            )
        ]
    )
    ctx, _ = _ctx(conn, timeout=30)
    with pytest.raises(GateFailed, match="never starts them"):
        run_gates(ctx, "restart_hbr", HOST, GATES, _before())
    assert conn.calls == 1  # failed on the first read, not polled until the deadline


def test_data_service_in_the_wrong_mode_after_the_restart_fails():
    conn = ScriptedConn(
        [
            _facts(
                {"TeaLeafTMS": "Running", "TeaLeafDataService": "Running"},
                mode="plain",
                started="2026-11-27T11:00:03",
            )
        ]
    )
    ctx, _ = _ctx(conn, timeout=30)
    with pytest.raises(GateFailed) as info:
        run_gates(ctx, "restart_hbr", HOST, GATES, _before(stopped=[]))
    assert info.value.gate == "data_service_log" and "plain mode" in str(info.value)


def test_a_startup_block_from_the_same_second_is_not_mistaken_for_the_new_one():
    same_second = _facts(
        {"TeaLeafTMS": "Running", "TeaLeafDataService": "Running"},
        mode="plain",
        started="2026-11-27T11:00:00",
    )
    later = _facts(
        {"TeaLeafTMS": "Running", "TeaLeafDataService": "Running"},
        mode="tls",
        started="2026-11-27T11:00:01",
    )
    conn = ScriptedConn([same_second, later])
    ctx, _ = _ctx(conn, timeout=10)
    run_gates(ctx, "restart_hbr", HOST, GATES, _before(stopped=[]))
    assert conn.calls == 2


def test_rollback_handshake_waits_while_tms_shows_the_imported_certificate():
    conn = ScriptedConn(
        [_facts({"TeaLeafTMS": "Running", "TeaLeafDataService": "Running"}, mode="plain")]
    )
    probes = {
        23000: SimpleNamespace(kind="plain", sha256=None),
        20000: SimpleNamespace(kind="tls", sha256=PFX_SHA),
    }
    ctx, _ = _ctx(conn, expect_tls=False, probes=probes, timeout=1)
    with pytest.raises(GateFailed, match="still presents the imported certificate"):
        run_gates(ctx, "restart_hbr", HOST, GATES, _before(stopped=[], imported_sha256=PFX_SHA))
    probes[20000] = SimpleNamespace(kind="tls", sha256=OLD_SHA)  # TMS back on its own cert
    passed = run_gates(
        ctx, "restart_hbr", HOST, GATES, _before(stopped=[], imported_sha256=PFX_SHA)
    )
    assert any("plain" in p for p in passed)


# --- preflight: services still changing state -------------------------------------------------


def _preflight_facts(state: str) -> dict:
    """Facts a rollback preflight passes on, with TeaLeafHBR in `state`."""
    return {
        "install_dir": "D:\\Tealeaf",
        "tools": {"tlstool": True, "openssl": True},
        "enable_tls": 0,
        "services": [
            {"name": "TeaLeafTMS", "state": "Running", "start_mode": "Auto"},
            {"name": "TeaLeafHBR", "state": state, "start_mode": "Auto"},
        ],
        "iis": {"present": False},
        "data_service": {"mode": "plain", "port": 23000, "started_at": None, "log": None},
    }


def _preflight_ctx(conn, timeout):
    from tealeaf_fleet.inventory import Host, WinRMSettings

    winrm = WinRMSettings("https", 5986, "basic", "u", None, None, None)
    ctx, rec = _ctx(conn, expect_tls=False, timeout=timeout)
    ctx.fleet.hosts = {"hbr01": Host("hbr01", "127.0.0.1", "hbr", winrm)}
    return ctx, rec


def test_preflight_waits_for_a_pending_service_then_judges():
    from tealeaf_fleet.engine.actions import preflight

    conn = ScriptedConn(
        [
            _preflight_facts("StartPending"),
            _preflight_facts("StartPending"),
            _preflight_facts("Running"),
        ]
    )
    ctx, rec = _preflight_ctx(conn, timeout=30)
    result = preflight(ctx, SimpleNamespace(name="preflight"), "hbr01")
    assert result.outcome == "ok", result.message
    assert conn.calls == 3  # read again until nothing was pending, then judged
    said = [e.message for e in rec.of_type("message")]
    assert len(said) == 2 and "TeaLeafHBR (StartPending)" in said[0] and "30s" in said[0]
    assert "settled" in said[1]


def test_preflight_service_still_pending_at_the_deadline_is_a_blocker_naming_it():
    from tealeaf_fleet.engine.actions import preflight

    conn = ScriptedConn([_preflight_facts("StartPending")])
    ctx, rec = _preflight_ctx(conn, timeout=1)
    result = preflight(ctx, SimpleNamespace(name="preflight"), "hbr01")
    assert result.outcome == "failed"
    assert "TeaLeafHBR (StartPending)" in result.message
    assert ctx.blockers["hbr01"] == [result.message]
    assert conn.calls == 2  # waited once (0.5 s); the next wait would pass the 1 s deadline
    assert "still TeaLeafHBR (StartPending)" in rec.of_type("message")[-1].message


def test_restart_counts_pending_services_by_where_they_are_going():
    from tealeaf_fleet.engine.actions import _before

    conn = ScriptedConn([_preflight_facts("Running")])
    ctx, _ = _preflight_ctx(conn, timeout=1)
    ctx.facts["hbr01"] = {
        "services": [
            {"name": "A", "state": "StartPending"},
            {"name": "B", "state": "StopPending"},
            {"name": "C", "state": "Running"},
            {"name": "D", "state": "Stopped"},
        ]
    }
    before = _before(ctx, SimpleNamespace(name="restart", op="restart"), ctx.fleet.hosts["hbr01"])
    assert before.running == ["A", "C"]
    assert before.stopped == ["B", "D"]


@pytest.mark.parametrize(
    "services,log,expected",
    [
        # the log shows no startup block (rolled days ago): the services still say so
        ([("TLDS", "TeaLeaf DS", "D:\\bin\\TLDataService.exe", "Running")], None, True),
        ([("TeaLeafDataService", "TeaLeaf Data Service", "D:\\bin\\x.exe", "Running")], None, True),
        # a log, but the Data Service was stopped by the operator: it stays stopped, no gate
        ([("TeaLeafDataService", "TeaLeaf Data Service", "", "Stopped")], "x.log", False),
        # a log, but no Data Service among the services
        (
            [("TeaLeafTMS", "TeaLeaf Management Server", "D:\\bin\\TMS.exe", "Running")],
            "x.log",
            False,
        ),
    ],
)
def test_before_knows_the_data_service_from_the_services_not_the_log(services, log, expected):
    from tealeaf_fleet.engine.actions import _before

    ctx, _ = _ctx(ScriptedConn([{}]))
    ctx.set_facts(
        HOST.name,
        {
            "services": [
                {"name": n, "display_name": d, "path": p, "state": s} for n, d, p, s in services
            ],
            "data_service": {"mode": None, "port": None, "log": log, "newest_log": log},
        },
    )
    before = _before(ctx, SimpleNamespace(name="restart_hbr", op="restart"), HOST)
    assert before.has_data_service is expected


def test_runner_fleet_wide_preflight_refusal_changes_nothing(tmp_path):
    """Every host passes its own preflight, but the context's fleet-wide rule refuses (a
    rotation with nothing to do): the run is blocked before the next phase."""

    class Context:
        def __init__(self):
            self.asked = 0

        def after_preflight(self):
            self.asked += 1
            return {"controller": ["nothing to rotate"]}

    actions = Actions()
    runner, rec, journal = _runner(tmp_path, actions)
    runner.context = context = Context()
    result = runner.run()
    assert context.asked == 1
    assert result.outcome == "blocked" and result.exit_code == 3
    assert result.blockers == {"controller": ["nothing to rotate"]}
    assert "nothing to rotate" in result.message and "nothing was changed" in result.message
    assert {op for op, _ in actions.calls} == {"preflight"}
    finished = [e for e in rec.of_type("phase_finished") if e.phase == "preflight"]
    assert finished[0].outcome == "failed"
    journal.close()


def test_a_second_signal_while_connections_close_leaves_the_outcome_journaled(tmp_path):
    """The run's outcome is written before the context closes its WinRM shells: a second
    Ctrl-C arriving during that close must not leave the journal's run without an outcome."""

    class ClosingContext:
        def close(self):
            raise KeyboardInterrupt  # the second Ctrl-C, landing inside close()

    runner, _, journal = _runner(tmp_path, Actions())
    runner.context = ClosingContext()
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    record = journal.runs()[0]
    assert record.outcome == "ok", record
    journal.close()


def test_the_handshake_gate_waits_for_a_canisters_search_server_too():
    """status judges the Search Server port on Canisters: the restart's gate must too, or the
    next Canister restarts while this one's searches still fail."""
    from tealeaf_fleet.engine.gates import gate_handshake

    canister = SimpleNamespace(**{**vars(HOST), "name": "can01", "role": "canister"})
    canister.search_port = 19000
    states = {"TeaLeafTMS": "Running", "TeaLeafDataService": "Running", "TLSearchServer": "Running"}
    before = _before(running=list(states), stopped=[])
    tls = SimpleNamespace(kind="tls", sha256=PFX_SHA)
    plain = SimpleNamespace(kind="plain", sha256=None, error=None)
    ctx, _ = _ctx(ScriptedConn([_facts(states)]), probes={23000: tls, 20000: tls, 19000: plain})
    with pytest.raises(GateFailed, match="gate handshake .*Search Server port 19000 answers plain"):
        run_gates(ctx, "restart_canister", canister, ["handshake"], before)
    ctx, _ = _ctx(ScriptedConn([_facts(states)]), probes={23000: tls, 20000: tls, 19000: tls})
    assert "Search Server 19000 TLS" in gate_handshake(ctx, canister, before)
    # a Search Server that was not running before the restart is not waited for
    assert "Search Server" not in gate_handshake(ctx, canister, _before(stopped=[]))


def _halted_hint(tmp_path, *, command, label, playbook, ref=None, context=None):
    """The hint of a run of `playbook` halted by a failed restart on host b."""
    plan = dict(_plan(), playbook={"name": playbook, "digest": "p"})
    with Journal(tmp_path) as journal:
        runner = Runner(
            plan=plan,
            actions=Actions(fail={("restart", "b")}),
            context=context,
            bus=EventBus(),
            journal=journal,
            command=command,
            inventory_label=label,
            playbook_ref=ref,
        )
        result = runner.run()
    assert result.outcome == "failed"
    return result.hint


def test_resume_hints_repeat_the_archived_pair_and_its_password_source(tmp_path):
    """A halted rotate-back: the rerun the hint names points at the same archived pair, with
    the password flag naming its variable or file (never the password)."""
    sha = "ab12" * 16

    def ctx(**password):
        cert = {"source": "archive", "sha256": sha, "password_env": None, "password_file": None}
        cert.update(password)
        return SimpleNamespace(fleet=SimpleNamespace(normalized={"certificate": cert}))

    hint = _halted_hint(
        tmp_path / "env",
        command="rollout",
        label="inv.yaml",
        playbook="rotate",
        ref="rotate",
        context=ctx(password_env="OLD_PFX_PW"),
    )
    expected = (
        "`fleet rollout inv.yaml --playbook rotate --certificate-from-archive "
        f"{sha[:16]} --certificate-password-env OLD_PFX_PW`"
    )
    assert expected in hint
    hint = _halted_hint(
        tmp_path / "file",
        command="rollout",
        label="inv.yaml",
        playbook="rotate",
        context=ctx(password_file="/secure/old pw.txt"),
    )
    assert f"{sha[:16]} --certificate-password-file '/secure/old pw.txt'`" in hint


def test_resume_hints_name_a_playbook_file_by_path_and_leave_troubleshoot_alone(tmp_path):
    hint = _halted_hint(
        tmp_path / "file",
        command="rollout",
        label="inv.yaml",
        playbook="mine",
        ref="plays/my rollout.yaml",
    )
    assert "rerun `fleet rollout inv.yaml --playbook 'plays/my rollout.yaml'`" in hint
    hint = _halted_hint(
        tmp_path / "ts",
        command="troubleshoot",
        label="inv.yaml --fix reboot",
        playbook="troubleshoot",
    )
    assert "rerun `fleet troubleshoot inv.yaml --fix reboot` " in hint
    assert "--playbook" not in hint
    hint = _halted_hint(tmp_path / "rb", command="rollback", label="inv.yaml", playbook="rollback")
    assert "rerun `fleet rollback inv.yaml` " in hint
