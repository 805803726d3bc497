"""Health gates after a restart: the evidence that a host came back right before the next starts.

Why each gate exists (docs/vendor-procedure.md "Restart order and gates"):
- `services`: every TeaLeaf service that was running before is running again, and the ones the
  operator had stopped are still stopped (the tool never starts them);
- `iis`: where IIS was running, it runs again after iisreset;
- `data_service_log`: the vendor's own signal: a Data Service startup block written after the
  restart says `TLS Port: N` (rollout) or `Port: N` (rollback);
- `handshake`: what a peer really sees, on every port `fleet status` judges (status.ports_of:
  the Data Service, TMS, and on Canisters the Search Server where it was running): each
  presents the PFX's certificate (rollout); after a rollback the Data Service and Search Server
  are plain again and TMS is back on its own legacy certificate;
- `soak`: wait `rollout.soak_s`, then check services, the log and handshakes again (a service
  that dies a few seconds after starting is caught here, not on the next host); `soak_s: 0`
  means no soak.
Gates are polled until they pass or `rollout.health_timeout_s` (counted from the end of the
restart) runs out; the first gate that cannot pass raises `GateFailed`, which halts the run
before the next host. Every verdict is emitted as a `gate` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.engine.context import RunContext
from tealeaf_fleet.errors import FleetError, GateFailed

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Host

POLL_S = 0.5
POLL_MAX_S = 3.0


@dataclass
class Before:
    """What the host looked like before its restart (the gates compare against it)."""

    running: list[str]  # TeaLeaf services that were running: they must run again
    stopped: list[str]  # TeaLeaf services that were stopped: they must stay stopped
    iis_running: bool
    has_data_service: bool
    imported_sha256: str | None  # the certificate in tealeaf.crt (rollback: TMS must not show it)
    since: str | None = None  # host time the restart began (Data Service log cut-off)
    # what the Data Service and TMS must come back as; None: the playbook's expect_tls. A
    # reboot for the prerequisites keeps whatever mode EnableTLS gives (set before the reboot)
    want_tls: bool | None = None


def wants_tls(ctx: RunContext, before: Before) -> bool:
    """TLS or plain after this host's restart: its own expectation, else the playbook's."""
    return ctx.expect_tls if before.want_tls is None else before.want_tls


class _Pending(Exception):
    """A gate that has not passed yet (internal: polled again until the deadline)."""


def _emit_gate(
    ctx: RunContext, phase: str, host: Host, gate: str, outcome: str, message: str
) -> None:
    """One `gate` event: every verdict, passed or failed, is reported the same way."""
    ctx.bus.emit(
        "gate",
        phase=phase,
        host=host.name,
        action="restart",
        outcome=outcome,
        message=message,
        gate=gate,
    )


def run_gates(
    ctx: RunContext,
    phase: str,
    host: Host,
    gates: Sequence[str],
    before: Before,
    *,
    first: dict[str, Any] | None = None,
    during_soak: Callable[[], None] | None = None,
) -> list[str]:
    """Run the phase's gates in order; returns one short line per passed gate.

    `during_soak`: called once the polled gates passed, right before the soak's wait (the
    peer reads for the next host, so they overlap the wait yet see the peers as they are after
    this host's restart); not called without a soak.

    Each poll reads one snapshot (one `facts` op: services, IIS and the Data Service's newest
    startup block together, plus the two handshakes), so a healthy host passes every gate for
    the price of one round trip; gates that passed are not asked again.
    """
    deadline = time.monotonic() + ctx.fleet.rollout.health_timeout_s
    for gate in gates:
        if gate not in _GATES and gate != "soak":
            raise FleetError(f"unknown gate {gate!r}", host=host.name, phase=phase)
    checks = [g for g in gates if g != "soak"]
    passed = _poll(ctx, phase, host, checks, before, deadline, first=first)
    if "soak" in gates and ctx.fleet.rollout.soak_s > 0:
        soak_s = ctx.fleet.rollout.soak_s
        if during_soak is not None:
            during_soak()
        ctx.stop.wait(soak_s)  # Ctrl-C cuts the wait short; the recheck still runs
        again = [g for g in checks if g in ("services", "data_service_log", "handshake")]
        _poll(ctx, phase, host, again, before, max(deadline, time.monotonic() + 10), emit=False)
        text = f"after {soak_s}s, {', '.join(again) or 'nothing'} still right"
        _emit_gate(ctx, phase, host, "soak", "ok", text)
        passed.append(f"soak: {text}")
    return passed


def _poll(
    ctx: RunContext,
    phase: str,
    host: Host,
    gates: Sequence[str],
    before: Before,
    deadline: float,
    *,
    emit: bool = True,
    first: dict[str, Any] | None = None,
) -> list[str]:
    """Poll until every gate passed. `first`: facts the restart op itself read (the first
    poll's, saving a read); later polls read the host again."""
    todo = list(gates)
    passed: list[str] = []
    delay = POLL_S
    while todo:
        snap = Snapshot(ctx, host, facts=first)
        first = None
        gate = todo[0]
        try:
            while todo:
                gate = todo[0]
                text = _GATES[gate](ctx, host, before, snap)
                todo.pop(0)
                if text is None:
                    continue
                passed.append(f"{gate}: {text}")
                if emit:
                    _emit_gate(ctx, phase, host, gate, "ok", text)
        except _Pending as pending:
            if time.monotonic() + delay > deadline:
                message = (
                    f"gate {gate} did not pass within health_timeout_s="
                    f"{ctx.fleet.rollout.health_timeout_s}: {pending}"
                )
                _emit_gate(ctx, phase, host, gate, "failed", message)
                raise GateFailed(message, gate=gate, host=host.name, phase=phase) from None
            time.sleep(delay)
            delay = min(POLL_MAX_S, delay * 1.5)
        except GateFailed as failed:
            _emit_gate(ctx, phase, host, gate, "failed", failed.message)
            failed.phase = phase
            raise
    return passed


class Snapshot:
    """One poll's view of a host, read lazily: facts at most once, each port probed once."""

    def __init__(self, ctx: RunContext, host: Host, facts: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.host = host
        self._facts: dict[str, Any] | None = facts
        self._probes: dict[int, Any] = {}

    def facts(self) -> dict[str, Any]:
        if self._facts is None:
            from tealeaf_fleet.ops import facts as facts_op

            try:
                result = facts_op.gather(
                    self.ctx.connection(self.host),
                    self.host,
                    install_dir=self.ctx.install_dir(self.host),
                    port_search=False,  # polled: the configuration-file search is for people
                )
            except FleetError as exc:
                if getattr(exc, "transient", False):
                    raise _Pending(f"facts could not be read yet: {exc}") from None
                raise
            self._facts = result.raw
        return self._facts

    def probe(self, port: int) -> Any:
        if port not in self._probes:
            self._probes[port] = self.ctx.probe(self.host.address, port)
        return self._probes[port]


# --- the gates ------------------------------------------------------------------------------


def gate_services(ctx: RunContext, host: Host, before: Before, snap: Snapshot) -> str | None:
    if not before.running and not before.stopped:
        return None
    states = {s.get("name"): s.get("state") for s in snap.facts().get("services") or []}
    down = [n for n in before.running if states.get(n) != "Running"]
    if down:
        raise _Pending(
            "not running: " + ", ".join(f"{n} ({states.get(n) or 'missing'})" for n in down)
        )
    started = [n for n in before.stopped if states.get(n) not in ("Stopped", None)]
    if started:
        raise GateFailed(
            f"services that were stopped before the restart are now "
            f"{', '.join(started)}: the tool never starts them; check who did",
            gate="services",
            host=host.name,
        )
    kept = f"; {len(before.stopped)} stopped one(s) left stopped" if before.stopped else ""
    return f"{len(before.running)} TeaLeaf service(s) running again{kept}"


def gate_iis(ctx: RunContext, host: Host, before: Before, snap: Snapshot) -> str | None:
    if not before.iis_running:
        return None
    state = (snap.facts().get("iis") or {}).get("state")
    if state != "Running":
        raise _Pending(f"IIS (W3SVC) is {state or 'missing'}")
    return "IIS running"


def gate_data_service_log(
    ctx: RunContext, host: Host, before: Before, snap: Snapshot
) -> str | None:
    """The newest startup block of the Data Service log (read by the facts op, the same
    parser as `ops.logs`), judged against the restart's start time here: log times have
    one-second resolution, so "the first block at or after Since" can be a block written in
    the same second as the restart began, before it."""
    if not before.has_data_service:
        return None
    data = snap.facts().get("data_service") or {}
    mode, port, started = data.get("mode"), data.get("port"), data.get("started_at")
    tls = wants_tls(ctx, before)
    want = "tls" if tls else "plain"
    label = "TLS Port" if tls else "Port"
    if mode is None or (before.since and (started or "") < before.since):
        raise _Pending(f"no Data Service startup block in its log since {before.since}")
    if mode != want:
        if before.since and started == before.since:
            raise _Pending(
                f"the newest startup block ({mode}) is from the second the restart "
                "began; waiting for the next one"
            )
        raise GateFailed(
            f"the Data Service started in {mode} mode after the restart "
            f"(log {data.get('log')}, at {started}); expected "
            f"'{label}: {host.data_service_port}'",
            gate="data_service_log",
            host=host.name,
        )
    return f"Data Service log shows '{label}: {port}' at {started}"


def gate_handshake(
    ctx: RunContext, host: Host, before: Before, snap: Snapshot | None = None
) -> str | None:
    if not ctx.fleet.rollout.verify_handshake:
        return None
    from tealeaf_fleet.status import PORT_LABELS, ports_of

    snap = snap or Snapshot(ctx, host)
    # every port status judges (status.ports_of: the Search Server's too, on Canisters); the
    # Data Service and Search Server only where they were running before the restart
    ports = [
        (which, port)
        for which, port in ports_of(host)
        if (which != "data_service" or before.has_data_service)
        and (which != "search" or _search_was_running(before))
    ]
    parts = []
    for which, port in ports:
        label, result = PORT_LABELS[which], snap.probe(port)
        kind = getattr(result, "kind", None)
        if wants_tls(ctx, before):
            want = ctx.pfx.sha256 if ctx.pfx is not None else before.imported_sha256
            if kind != "tls" or not getattr(result, "sha256", None):
                raise _Pending(f"{label} port {port} answers {_kind(result)}, not TLS")
            if want and result.sha256 != want:
                raise _Pending(
                    f"{label} port {port} presents certificate "
                    f"{result.sha256[:12]}..., not the PFX's {want[:12]}..."
                )
            parts.append(f"{label} {port} TLS with the PFX's certificate")
        elif which != "tms":
            if kind != "plain":
                raise _Pending(f"{label} port {port} answers {_kind(result)}, not plain")
            parts.append(f"{label} {port} plain")
        else:
            if kind == "unreachable":
                raise _Pending(f"TMS port {port} does not answer")
            if before.imported_sha256 and getattr(result, "sha256", None) == before.imported_sha256:
                raise _Pending(f"TMS port {port} still presents the imported certificate")
            parts.append(f"TMS {port} back on its own certificate")
    return "; ".join(parts) if parts else None


def _search_was_running(before: Before) -> bool:
    """Whether a Search Server service (TLSearchServer) was running before the restart."""
    return any("searchserver" in name.lower() for name in before.running)


def _kind(result: Any) -> str:
    kind = getattr(result, "kind", None) or "nothing"
    error = getattr(result, "error", None)
    return f"{kind} ({error})" if error else kind


_GATES: dict[str, Callable[[RunContext, Host, Before, Snapshot], str | None]] = {
    "services": gate_services,
    "iis": gate_iis,
    "data_service_log": gate_data_service_log,
    "handshake": gate_handshake,
}
