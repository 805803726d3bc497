"""The peer-health rule's bookkeeping (engine/peers.py): which peers a restart checks, which
evidence it accepts (the previous batch's gates, a read made while the previous host
restarted, else a read now), and how a read is judged. The reads themselves go over WinRM to
the lab in tests/test_peer_health_e2e.py; here `read_peer` is replaced by a recorder so that
the tests can say which host was read for which restart."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tealeaf_fleet.engine import peers
from tealeaf_fleet.engine.context import RunContext
from tealeaf_fleet.engine.events import EventBus
from tealeaf_fleet.engine.runner import PhaseSpec
from tealeaf_fleet.errors import PeerHealthError
from test_plan import make_fleet

CANISTERS = {f"can0{i}": "canister" for i in range(1, 5)}


def healthy_facts(mode: str = "plain", stopped: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "services": [
            {
                "name": name,
                "display_name": name,
                "start_mode": "Auto",
                "state": "Stopped" if name in stopped else "Running",
                "path": r'"D:\Tealeaf\bin\TLDataService.exe"'
                if name == "TeaLeafDataService"
                else r'"D:\Tealeaf\bin\Canister.exe"',
            }
            for name in ("TeaLeafDataService", "TeaLeafCanister")
        ],
        "data_service": {"mode": mode},
    }


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch) -> RunContext:
    fleet = make_fleet(tmp_path, CANISTERS, "tealeaf: {install_dir: 'D:\\Tealeaf'}")
    context = RunContext(fleet, expect_tls=True, bus=EventBus())
    context.reads = []  # (host read, during whose step)
    context.world = {
        name: peers.PeerRead(healthy_facts(), SimpleNamespace(kind="plain")) for name in CANISTERS
    }

    def fake_read(c: RunContext, name: str) -> peers.PeerRead:
        c.reads.append(name)
        return c.world[name]

    monkeypatch.setattr(peers, "read_peer", fake_read)
    return context


def rolling(batch: int = 1) -> PhaseSpec:
    return PhaseSpec("restart_canister", "restart", "rolling", batch, (), tuple(CANISTERS))


def test_group_peers_leave_out_the_own_batch_and_trust_the_previous_one():
    assert peers.group_peers(rolling(), "can02") == (["can01", "can03", "can04"], ["can01"])
    assert peers.group_peers(rolling(2), "can03") == (["can01", "can02"], ["can01", "can02"])
    assert peers.group_peers(rolling(2), "can01") == (["can03", "can04"], [])


def test_first_host_reads_every_peer_then_later_hosts_use_the_prefetch(ctx):
    phase = rolling()
    for i, name in enumerate(CANISTERS):
        before = list(ctx.reads)
        check = peers.PeerCheck(ctx, phase, name)
        assert "peer(s) healthy" in check.require()
        during_own_check = ctx.reads[len(before) :]
        check.prefetch_next()
        check.finish(True)
        ctx.world[name] = peers.PeerRead(healthy_facts("tls"), SimpleNamespace(kind="tls"))
        if i == 0:
            assert sorted(during_own_check) == ["can02", "can03", "can04"]
        else:  # nothing read on its critical path: the prefetch and the gates cover it
            assert during_own_check == [], name
    # each prefetch read everyone but the restarting host and the next one
    assert len(ctx.reads) == 3 + 2 + 2 + 2


def test_a_stopped_peer_halts_naming_it_and_the_service(ctx):
    ctx.world["can03"] = peers.PeerRead(healthy_facts(stopped=("TeaLeafCanister",)), None)
    check = peers.PeerCheck(ctx, rolling(), "can01")
    with pytest.raises(PeerHealthError) as caught:
        check.require()
    assert "can03" in caught.value.message and "TeaLeafCanister" in caught.value.message
    assert "can02" not in caught.value.message and caught.value.host == "can01"


def test_without_gate_evidence_the_previous_host_is_read_now(ctx):
    """A host skipped as 'nothing to restart' proved nothing: the next one reads it."""
    phase = rolling()
    first = peers.PeerCheck(ctx, phase, "can01")
    first.finish(False)
    ctx.reads.clear()
    peers.PeerCheck(ctx, phase, "can02").require()
    assert sorted(ctx.reads) == ["can01", "can03", "can04"]


@pytest.mark.parametrize(
    "restarted,logged,answers,problem",
    [
        (False, "plain", "plain", None),
        (False, "plain", "tls", "answers TLS on port 23000, expected plain"),
        (True, "tls", "plain", "answers plain on port 23000, expected TLS"),
        (True, "tls", "tls", None),
        (False, None, "tls", None),  # no startup block seen: either mode is an answer
        (False, "plain", "unreachable", "does not answer on port 23000"),
    ],
)
def test_judge_wants_the_data_service_in_its_expected_mode(
    ctx, restarted, logged, answers, problem
):
    read = peers.PeerRead(healthy_facts(mode=logged), SimpleNamespace(kind=answers))
    found = peers.judge(ctx, "can02", read, restarted=restarted)
    assert (found == []) if problem is None else (problem in " ".join(found))


def test_judge_counts_an_unreadable_peer_as_unhealthy(ctx):
    found = peers.judge(
        ctx, "can02", peers.PeerRead(None, error="cannot read its facts: 401"), restarted=False
    )
    assert found == ["cannot read its facts: 401"]


def test_only_rolling_hbr_and_canister_phases_check_peers(ctx):
    assert peers.applies(ctx, rolling(), "can01")
    parallel = PhaseSpec("restart_rest", "restart", "parallel", 1, (), tuple(CANISTERS))
    assert not peers.applies(ctx, parallel, "can01")


def test_the_next_groups_first_check_is_read_while_the_last_host_restarts(tmp_path, monkeypatch):
    """The Canisters' peers are read while the last HBR restarts: the first Canister's check
    then reads nothing on its own critical path."""
    estate = {"hbr01": "hbr", "hbr02": "hbr", "can01": "canister", "can02": "canister"}
    fleet = make_fleet(tmp_path, estate, "tealeaf: {install_dir: 'D:\\Tealeaf'}")
    context = RunContext(fleet, expect_tls=True, bus=EventBus())
    reads: list[str] = []

    def fake_read(c: RunContext, name: str) -> peers.PeerRead:
        reads.append(name)
        return peers.PeerRead(healthy_facts("plain"), SimpleNamespace(kind="plain"))

    monkeypatch.setattr(peers, "read_peer", fake_read)
    hbr = PhaseSpec("restart_hbr", "restart", "rolling", 1, (), ("hbr01", "hbr02"))
    can = PhaseSpec("restart_canister", "restart", "rolling", 1, (), ("can01", "can02"))
    context.runner = SimpleNamespace(phases=[hbr, can])
    last = peers.PeerCheck(context, hbr, "hbr02")
    last.require()
    assert reads == ["hbr01"]  # no gate evidence for it in this test: read now
    reads.clear()
    last.prefetch_next()
    last.finish(True)
    assert reads == ["can02"]  # made for can01, during hbr02's soak
    reads.clear()
    peers.PeerCheck(context, can, "can01").require()
    assert reads == []


def test_hosts_left_out_by_limit_are_not_peers(tmp_path, monkeypatch):
    """Preflight's advice for a host whose service is down is "leave this host out with
    --limit": the run then goes on without it, so a left-out host is never read as a peer
    (`--limit hbr01,hbr02` of three HBRs: hbr03, down, stops nothing)."""
    fleet = make_fleet(
        tmp_path,
        {"hbr01": "hbr", "hbr02": "hbr", "hbr03": "hbr"},
        "tealeaf: {install_dir: 'D:\\Tealeaf'}",
    )
    context = RunContext(fleet, expect_tls=True, bus=EventBus())
    read: list[str] = []

    def read_peer(c, name):
        read.append(name)
        stopped = ("TeaLeafDataService",) if name == "hbr03" else ()
        return peers.PeerRead(healthy_facts(stopped=stopped), None)

    monkeypatch.setattr(peers, "read_peer", read_peer)
    alone = PhaseSpec("restart_hbr", "restart", "rolling", 1, (), ("hbr01",))
    assert not peers.applies(context, alone, "hbr01")
    two = PhaseSpec("restart_hbr", "restart", "rolling", 1, (), ("hbr01", "hbr02"))
    assert peers.PeerCheck(context, two, "hbr01").require() == "1 peer(s) healthy"
    assert read == ["hbr02"]


def test_a_host_found_already_healthy_reads_no_peer(ctx):
    check = peers.PeerCheck(ctx, rolling(), "can01")
    check.finish(True)  # skipped before its disruptive step: require() never ran
    assert ctx.reads == []


def test_batch_mates_checking_at_once_never_read_one_peer_twice_at_once(ctx, monkeypatch):
    """`batch: 2`: can03 and can04 are checked together, with the same peers (can01, can02);
    each peer's connection is used by one read at a time (the read under way is shared)."""
    import threading
    import time

    active: dict[str, int] = {}
    most: dict[str, int] = {}
    lock = threading.Lock()
    both_in = threading.Barrier(2)

    def slow_read(c, name):
        with lock:
            active[name] = active.get(name, 0) + 1
            most[name] = max(most.get(name, 0), active[name])
        time.sleep(0.3)  # long enough for the batch-mate's check to start meanwhile
        with lock:
            active[name] -= 1
        return c.world[name]

    monkeypatch.setattr(peers, "read_peer", slow_read)
    phase = rolling(2)
    said: list[str] = []

    def check(host: str) -> None:
        c = peers.PeerCheck(ctx, phase, host)
        both_in.wait()
        said.append(c.require())

    threads = [threading.Thread(target=check, args=(h,)) for h in ("can03", "can04")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert said == ["2 peer(s) healthy", "2 peer(s) healthy"]
    assert most == {"can01": 1, "can02": 1}


def test_a_failing_step_keeps_its_own_exception_over_a_prefetch_that_broke(ctx, monkeypatch):
    """finish() runs in the step's `finally`: when the step failed (its gates, say), a
    prefetch that itself raised must not replace the step's exception."""

    def broken(c, name):
        raise RuntimeError("prefetch broke")

    check = peers.PeerCheck(ctx, rolling(), "can01")
    check.require()
    monkeypatch.setattr(peers, "read_peer", broken)
    check.prefetch_next()
    with pytest.raises(ValueError, match="the step's own failure"):
        try:
            raise ValueError("the step's own failure")
        finally:
            check.finish(False)
    assert peers.PeerCheck(ctx, rolling(), "can02").reads == {}  # nothing handed on
