"""Peer health before a disruptive step on an HBR or Canister.

Why: HBRs (and Canisters) restart one at a time so that the others carry the load meanwhile
(vendor procedure, "Minimize disruption"). That only holds if the others really are up: with one
HBR's service already stopped, restarting another leaves no HBR routing, and captured data is
lost. So before restarting (or rebooting) a host of a rolling group, every other host of the
group must be healthy:
- every automatic-start TeaLeaf service is running (`checks.stopped_auto_services`);
- its Data Service, where one runs, answers on its port in the expected mode: the run's mode
  for a peer this run already restarted, else the mode its newest startup block logged (what
  it runs now).
If one is not, the step fails before touching its host, naming the peer and what is wrong.
Hosts that `--limit` leaves out of the run are not peers: the operator chose to go on
without them (preflight's advice for a host whose service is down: "start it, or leave this
host out with --limit"), so their state is not read and does not stop the run.

Why it costs at most one facts read per restarted host, and usually none: the evidence for a
peer is, in order of preference,
1. the peer's own gates, when it is of the batch restarted just before (they proved it healthy
   a moment ago; `gated`);
2. a read made during the previous host's soak (`prefetch`: launched once that host's polled
   gates passed, so after its restart, joined at the end of its step: it overlaps the soak's
   wait, and a peer that failed while that host restarted is seen);
3. a read now, of the peers in parallel, right before the disruptive step (the first host of
   the first group, after a resume, or with no soak: `soak_s: 0`). A host found already
   healthy (skipped) reads nothing.
A prefetch reads hosts other than the restarting one, whose connections are idle: every host's
connection stays used by one thread at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import FleetError, PeerHealthError
from tealeaf_fleet.playbooks import SERIAL_RESTART_ROLES

if TYPE_CHECKING:
    from tealeaf_fleet.engine.context import RunContext
    from tealeaf_fleet.engine.runner import PhaseSpec


@dataclass
class PeerRead:
    """What one read of a peer saw: its facts and its Data Service probe, or why it failed."""

    facts: dict[str, Any] | None
    probe: Any = None
    error: str | None = None


def group_peers(phase: PhaseSpec, host: str) -> tuple[list[str], list[str]]:
    """(peers to check, peers whose gates count as evidence) of `host` in a rolling phase:
    every other host of the phase except the ones of its own batch (restarted together by a
    playbook's knowing `allow_parallel_restart`); the trusted ones are the batch before."""
    hosts = list(phase.hosts)
    size = max(1, phase.batch)
    mine = hosts.index(host) // size
    peers = [h for i, h in enumerate(hosts) if i // size != mine]
    previous = [h for i, h in enumerate(hosts) if i // size == mine - 1]
    return peers, previous


def applies(ctx: RunContext, phase: PhaseSpec, host: str) -> bool:
    return (
        phase.strategy == "rolling"
        and ctx.host(host).role in SERIAL_RESTART_ROLES
        and host in phase.hosts
        and len(phase.hosts) > 1
    )


class PeerCheck:
    """The check for one host's restart: made at the step's beginning (taking what was
    prefetched for it), judged right before its disruptive call (`require`), then the prefetch
    for the next host (`prefetch_next`), joined at the step's end (`finish`)."""

    def __init__(self, ctx: RunContext, phase: PhaseSpec, host: str) -> None:
        self.ctx = ctx
        self.phase = phase
        self.host = host
        peers, previous = group_peers(phase, host)
        self.peers = peers
        gated = ctx.peer_state.gated_in(phase.name)
        self.trusted = [p for p in previous if p in gated]
        self.reads: dict[str, Future[PeerRead] | PeerRead] = dict(
            ctx.peer_state.take(phase.name, host)
        )
        self._next: dict[str, Future[PeerRead]] = {}
        self._following: list[str] = []
        self._phase_of_next = phase.name

    def require(self) -> str:
        """Raise PeerHealthError naming every unhealthy peer; else one line for the step.
        Peers with neither gate evidence nor a prefetched read are read now, in parallel, and
        every read is finished before this returns or raises (a peer's connection is never
        left in use by a read when the next step starts)."""
        todo = [p for p in self.peers if p not in self.trusted and p not in self.reads]
        self.reads.update(self.ctx.peer_state.read_now(self.ctx, todo))
        gated = self.ctx.peer_state.gated_in(self.phase.name)
        problems: list[str] = []
        for peer in self.peers:
            if peer in self.trusted:
                continue
            entry = self.reads[peer]
            read = entry.result() if isinstance(entry, Future) else entry
            found = judge(self.ctx, peer, read, restarted=peer in gated)
            if found:
                problems.append(f"{peer}: {'; '.join(found)}")
        if problems:
            role = self.ctx.host(self.host).role
            label = "HBR" if role == "hbr" else role.capitalize()
            raise PeerHealthError(
                f"not restarting {self.host}: peer(s) of its rolling group not healthy: "
                + " | ".join(problems)
                + f"; restarting this {label} now would leave their share to nobody (captured "
                "data lost)",
                host=self.host,
                hint="bring the named peer back (start its services, or find why its Data "
                "Service does not answer), then rerun; or leave it out with --limit",
            )
        return f"{len(self.peers)} peer(s) healthy"

    def prefetch_next(self) -> None:
        """Read the peers of the host after this one during this one's soak; after the last
        host of the group, those of the next rolling group's first host (the Canisters while
        the last HBR restarts): their connections are idle meanwhile."""
        hosts = list(self.phase.hosts)
        size = max(1, self.phase.batch)
        mine = hosts.index(self.host) // size
        following = [h for i, h in enumerate(hosts) if i // size == mine + 1]
        self._phase_of_next = self.phase.name
        if following:
            skip = {h for i, h in enumerate(hosts) if i // size in (mine, mine + 1)}
            todo = [h for h in hosts if h not in skip]
        else:
            group = self._next_group()
            if group is None:
                return
            size = max(1, group.batch)
            following = [h for i, h in enumerate(group.hosts) if i // size == 0]
            todo = [h for i, h in enumerate(group.hosts) if i // size != 0]
            self._phase_of_next = group.name
        self._next = self.ctx.peer_state.read_now(self.ctx, todo)
        self._following = following

    def _next_group(self) -> PhaseSpec | None:
        """The phase right after this one, when it is a rolling group that checks peers."""
        runner = self.ctx.runner
        phases = list(getattr(runner, "phases", None) or [])
        if self.phase not in phases:
            return None
        index = phases.index(self.phase) + 1
        if index >= len(phases):
            return None
        group = phases[index]
        if not group.hosts or not applies(self.ctx, group, group.hosts[0]):
            return None
        return group

    def finish(self, healthy: bool) -> None:
        """At the end of the step (a `finally`): record this host's gates as evidence and
        hand the prefetched reads, joined, to the next host(s) when the step succeeded; when
        it failed, only join them (never raising over the step's own exception)."""
        if healthy:
            self.ctx.peer_state.mark_gated(self.phase.name, self.host)
        if not self._next:
            return
        # joined either way (no read left using a peer's connection), but only a step that
        # succeeded takes their results: a failing step's own exception is what goes on
        wait(list(self._next.values()))
        if not healthy:
            return
        done = {peer: future.result() for peer, future in self._next.items()}
        for host in self._following:
            self.ctx.peer_state.give(self._phase_of_next, host, done)


class PeerState:
    """Per run: which hosts passed their gates in which rolling phase, and prefetched reads
    waiting for the host they were made for. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gated: dict[str, set[str]] = {}
        self._ready: dict[tuple[str, str], dict[str, PeerRead]] = {}
        self._reading: dict[str, Future[PeerRead]] = {}  # the read of each host under way

    def gated_in(self, phase: str) -> set[str]:
        with self._lock:
            return set(self._gated.get(phase, ()))

    def mark_gated(self, phase: str, host: str) -> None:
        with self._lock:
            self._gated.setdefault(phase, set()).add(host)

    def give(self, phase: str, host: str, reads: dict[str, PeerRead]) -> None:
        with self._lock:
            self._ready[(phase, host)] = dict(reads)

    def take(self, phase: str, host: str) -> dict[str, PeerRead]:
        with self._lock:
            return self._ready.pop((phase, host), {})

    def read_now(self, ctx: RunContext, hosts: Sequence[str]) -> dict[str, Future[PeerRead]]:
        """Start one read per host, each on its own thread (at most `forks` at once). A host
        whose read is already under way (for a batch-mate of a `batch` > 1 group, checking the
        same peers at the same moment) is not read again: that read is shared, so a host's
        connection is never used by two threads at once."""
        if not hosts:
            return {}
        out: dict[str, Future[PeerRead]] = {}
        with self._lock:
            todo = []
            for h in hosts:
                running = self._reading.get(h)
                if running is not None and not running.done():
                    out[h] = running
                else:
                    todo.append(h)
            if todo:
                pool = ThreadPoolExecutor(
                    max_workers=max(1, min(ctx.forks, len(todo))), thread_name_prefix="peer"
                )
                try:
                    for h in todo:
                        out[h] = self._reading[h] = pool.submit(read_peer, ctx, h)
                finally:
                    pool.shutdown(wait=False)  # the futures finish; the pool's threads end
        return {h: out[h] for h in hosts}


def read_peer(ctx: RunContext, name: str) -> PeerRead:
    """One facts read of the peer and, where its Data Service runs, one probe of its port."""
    from tealeaf_fleet.ops import facts as facts_op
    from tealeaf_fleet.ops.facts import data_service_names

    host = ctx.host(name)
    try:
        facts = facts_op.gather(ctx.connection(host), host, install_dir=ctx.install_dir(host)).raw
    except FleetError as exc:
        return PeerRead(None, error=f"cannot read its facts: {exc}")
    states = {s.get("name"): s.get("state") for s in facts.get("services") or []}
    probe = None
    if any(states.get(n) == "Running" for n in data_service_names(facts)):
        probe = ctx.probe(host.address, host.data_service_port)
    return PeerRead(facts, probe)


def judge(ctx: RunContext, name: str, read: PeerRead, *, restarted: bool) -> list[str]:
    """What is wrong with the peer (empty: healthy)."""
    from tealeaf_fleet.ops.checks import stopped_auto_services

    if read.facts is None:
        return [read.error or "cannot read its facts"]
    problems: list[str] = []
    stopped = stopped_auto_services(read.facts)
    if stopped:
        problems.append(f"automatic-start TeaLeaf service(s) not running: {', '.join(stopped)}")
    if read.probe is not None:
        port = ctx.host(name).data_service_port
        logged = (read.facts.get("data_service") or {}).get("mode")
        want = ("tls" if ctx.expect_tls else "plain") if restarted else logged
        kind = getattr(read.probe, "kind", None)
        if kind not in ("tls", "plain"):
            problems.append(f"its Data Service does not answer on port {port} ({kind})")
        elif want is not None and kind != want:
            problems.append(
                f"its Data Service answers {_mode(kind)} on port {port}, expected {_mode(want)}"
            )
    return problems


def _mode(kind: str) -> str:
    return "TLS" if kind == "tls" else "plain"
