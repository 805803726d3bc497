"""Engine events: the only way the engine tells anyone what it is doing.

Why: the engine never prints. The CLI subscribes a renderer (rich live view on stderr, or JSON
Lines on stdout with `--json`), the journal is written by the runner, and tests subscribe a list.
The JSON form is the contract in docs/architecture.md ("Events"):
`{"ts", "type", "run", "phase"?, "host"?, "action"?, "outcome"?, "message"?, ...extra}`.
Messages pass through `redact()` on their way out, so a password that slipped into an error text
from a remote tool is masked in every rendering.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tealeaf_fleet.secrets import redact

EVENT_TYPES = (
    "run_started",
    "phase_started",
    "step_started",
    "step_finished",
    "gate",
    "phase_finished",
    "run_finished",
    "message",
)
OUTCOMES = ("ok", "changed", "skipped", "failed")


@dataclass(frozen=True)
class Event:
    type: str
    run: int | None = None
    phase: str | None = None
    host: str | None = None
    action: str | None = None
    outcome: str | None = None
    message: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines form: fixed keys first, absent ones left out, extras after."""
        out: dict[str, Any] = {"ts": round(self.ts, 3), "type": self.type, "run": self.run}
        for key in ("phase", "host", "action", "outcome"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.message is not None:
            out["message"] = redact(self.message)
        for key, value in self.data.items():
            if key not in out:
                out[key] = _redacted(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


def _redacted(value: Any) -> Any:
    """`value` with every string in it redacted, however deep (a run's `blockers` are lists of
    messages per host, and a remote error's text may have quoted a password)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers, in order, from any thread (one at a time)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self.run: int | None = None  # stamped on every event once the run has an id

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def emit(
        self,
        type: str,
        *,
        phase: str | None = None,
        host: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        message: str | None = None,
        **data: Any,
    ) -> Event:
        event = Event(
            type=type,
            run=self.run,
            phase=phase,
            host=host,
            action=action,
            outcome=outcome,
            message=message,
            data=data,
        )
        with self._lock:
            for fn in self._subscribers:
                fn(event)
        return event


class Recorder:
    """A subscriber that keeps every event (tests, `fleet demo`'s summary)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, type: str) -> list[Event]:
        return [e for e in self.events if e.type == type]
