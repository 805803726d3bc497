"""Evidence a run keeps for `fleet report`, written to the journal while the run happens.

Why at run time and not rebuilt afterwards: a change board closes a change on what the hosts
looked like before and after it and on every gate's verdict at the time; a report that read the
fleet again later would show today's state, not the change's. The steps table already holds the
restart windows (a restart step's start and finish); this adds, per run (`Journal.record`):

| kind | host | data |
|---|---|---|
| `plan` | - | `{"approved_plan": file or null, "digest"}` (once, when the run starts) |
| `before` | host | `host_state()` from the preflight's facts and handshakes |
| `after` | host | `host_state()` from verify's facts, handshakes and TealeafStatus run |
| `gate` | host | `{"gate", "outcome", "message"}`, every gate verdict as the engine emitted it |
| `warning` | host | `{"code", "message"}`, preflight's warnings |
| `finding` | - | `{"severity", "code", "message", "hosts"}`, the verify phase's findings |

Nothing here is secret: facts carry no password (the PFX password is never read back, only the
presence of TLSCertPassword), and the journal redacts every row anyway. A value the run did not
read is left out (or null), and the report shows it as "not checked", never as "ok".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tealeaf_fleet.engine.events import Event
    from tealeaf_fleet.inventory import Host
    from tealeaf_fleet.journal import Journal

KINDS = ("plan", "before", "after", "gate", "warning", "finding")


def host_state(
    facts: Mapping[str, Any] | None,
    handshakes: Mapping[str, Any],
    status_tool: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The part of a host's facts a report shows, plus its handshakes (`status.Handshake` or
    their dicts) per port name and the status tool's run (Portal, verify only). None for
    anything the run did not read."""
    from tealeaf_fleet.ops.facts import RegistryNumber

    facts = facts or {}
    security = facts.get("security") or {}
    ds = facts.get("data_service") or {}
    state: dict[str, Any] = {
        "facts_read": bool(facts),
        "enable_tls": (
            RegistryNumber.parse(facts.get("enable_tls")).describe()
            if "enable_tls" in facts
            else None
        ),
        "cert_sha256": security.get("cert_sha256"),
        "cert_not_after": security.get("cert_not_after"),
        "cert_subject": security.get("cert_subject"),
        "data_service": {
            "mode": ds.get("mode"),
            "port": ds.get("port"),
            "started_at": ds.get("started_at"),
            "log": ds.get("log"),
            "line": ds.get("line") or proving_line(ds.get("mode"), ds.get("port")),
            "line_verbatim": bool(ds.get("line")),
        }
        if ds
        else None,
        "services": [
            {"name": s.get("name"), "state": s.get("state")}
            for s in facts.get("services") or []
            if isinstance(s, Mapping)
        ]
        if "services" in facts
        else None,
        "handshakes": {
            which: (shake.to_dict() if hasattr(shake, "to_dict") else dict(shake))
            for which, shake in handshakes.items()
        },
    }
    if status_tool is not None:
        from tealeaf_fleet.secrets import mask

        # the tool's output is a third party's text: written-out passwords are masked before
        # it is kept (the journal's redact() knows only this run's secrets)
        state["status_tool"] = {
            k: mask(v) if isinstance(v, str) else v for k, v in dict(status_tool).items()
        }
    return state


def proving_line(mode: str | None, port: int | None) -> str | None:
    """The port line rebuilt from the mode and port (`TLS Port: N` / `Port: N`), for facts
    from a script version that did not return the line itself; the report says
    "reconstructed" then. Current facts carry the log line verbatim (`data_service.line`)."""
    if mode is None or port is None:
        return None
    return f"TLS Port: {port}" if mode == "tls" else f"Port: {port}"


def probe_host(probe: Callable[..., Any], host: Host, timeout_s: float = 5.0) -> dict[str, Any]:
    """One handshake per port the host is expected to listen on (status.ports_of)."""
    from tealeaf_fleet.status import as_handshake, ports_of

    return {
        which: as_handshake(port, probe(host.address, port, timeout_s=timeout_s))
        for which, port in ports_of(host)
    }


class GateRecorder:
    """A bus subscriber that journals every `gate` event of the run as evidence."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def __call__(self, event: Event) -> None:
        if event.type != "gate" or event.run is None:
            return
        self.journal.record(
            event.run,
            "gate",
            {
                "gate": event.data.get("gate"),
                "outcome": event.outcome,
                "message": event.message,
                "phase": event.phase,
            },
            host=event.host,
        )
