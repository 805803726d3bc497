"""How one phase's work is spread over its hosts (playbook `strategy:`).

Why a separate module: the safety rules of a rollout live here and nowhere else, and they can be
tested with plain Python callables:
- `controller`: the work runs once, on the controller (the certificate is made once, never twice);
- `parallel`: every host at once, bounded by `forks`; one host failing does not stop the others
  (the phase fails afterwards);
- `rolling`: `batch` hosts at a time; a host's work includes its health gates, so the next batch
  starts only after the previous one is healthy, and the first failure stops the phase with the
  later hosts untouched (no two HBRs or Canisters restart at once with batch 1);
- `all_or_nothing`: every host in parallel, failures retried; if any host still fails (or the
  operator interrupted before all were done), the compensation runs on every host that succeeded
  so that none is left half-changed (TLS must never be enabled on a subset).

A work callable takes a target name (a host name, or "controller") and returns a `StepResult`; a
`FleetError` it raises counts as a failed step. `stop` is checked before each host starts:
Ctrl-C lets running hosts finish and starts no new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tealeaf_fleet.errors import FleetError

STRATEGIES = ("controller", "parallel", "rolling", "all_or_nothing")
CONTROLLER = "controller"
WORKER_PREFIX = "fleet"  # the name prefix of the worker threads that run steps


@dataclass
class StepResult:
    outcome: str  # ok | changed | skipped | failed
    message: str = ""
    error: FleetError | None = None

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


Work = Callable[[str], StepResult]


@dataclass
class PhaseResult:
    results: dict[str, StepResult] = field(default_factory=dict)
    compensated: dict[str, StepResult] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        return [name for name, r in self.results.items() if r.failed]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_started and not self.interrupted


def _call(work: Work, target: str) -> StepResult:
    try:
        return work(target)
    except FleetError as exc:  # a failed step, reported as such (other errors are bugs)
        return StepResult("failed", str(exc), exc)


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def run_controller(work: Work, *, stop: threading.Event | None = None) -> PhaseResult:
    result = PhaseResult()
    if _stopped(stop):
        result.not_started.append(CONTROLLER)
        result.interrupted = True
        return result
    result.results[CONTROLLER] = _call(work, CONTROLLER)
    return result


def _run_many(
    hosts: Sequence[str], work: Work, forks: int, stop: threading.Event | None, result: PhaseResult
) -> None:
    """Run `work` on `hosts` concurrently (at most `forks` at once); fill `result`."""
    if not hosts:
        return
    lock = threading.Lock()
    done: dict[str, StepResult] = {}
    skipped: set[str] = set()

    def one(name: str) -> None:
        if _stopped(stop):
            with lock:
                skipped.add(name)
            return
        outcome = _call(work, name)
        with lock:
            done[name] = outcome

    pool = ThreadPoolExecutor(
        max_workers=max(1, min(forks, len(hosts))), thread_name_prefix=WORKER_PREFIX
    )
    abandon = False
    try:
        futures = [pool.submit(one, name) for name in hosts]
        for future in futures:
            future.result()  # re-raise bugs (non-FleetError) in the caller
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: do not wait for running steps
        abandon = True
        raise
    finally:
        pool.shutdown(wait=not abandon, cancel_futures=abandon)
    # Report in inventory order, whatever order the hosts finished in.
    result.results.update((name, done[name]) for name in hosts if name in done)
    result.not_started.extend(name for name in hosts if name in skipped)
    if skipped:
        result.interrupted = True


def run_parallel(
    hosts: Sequence[str], work: Work, *, forks: int = 10, stop: threading.Event | None = None
) -> PhaseResult:
    result = PhaseResult()
    _run_many(hosts, work, forks, stop, result)
    return result


def run_rolling(
    hosts: Sequence[str],
    work: Work,
    *,
    batch: int = 1,
    forks: int = 10,
    stop: threading.Event | None = None,
) -> PhaseResult:
    result = PhaseResult()
    batch = max(1, batch)
    for start in range(0, len(hosts), batch):
        group = list(hosts[start : start + batch])
        if _stopped(stop):
            result.not_started.extend(hosts[start:])
            result.interrupted = True
            break
        _run_many(group, work, min(forks, batch), stop, result)
        if result.failed or result.interrupted:
            result.not_started.extend(
                h for h in hosts[start + batch :] if h not in result.not_started
            )
            break
    return result


def run_all_or_nothing(
    hosts: Sequence[str],
    work: Work,
    *,
    compensate: Work | None,
    forks: int = 10,
    retries: int = 1,
    stop: threading.Event | None = None,
) -> PhaseResult:
    result = PhaseResult()
    _run_many(hosts, work, forks, stop, result)
    for _ in range(retries):
        again = result.failed
        if not again or _stopped(stop):
            break
        retry = PhaseResult()
        _run_many(again, work, forks, stop, retry)
        result.results.update(retry.results)
        if retry.interrupted:
            result.interrupted = True
    if result.ok or compensate is None:
        return result
    succeeded = [
        name for name in hosts if name in result.results and not result.results[name].failed
    ]
    undo = PhaseResult()
    _run_many(succeeded, compensate, forks, None, undo)  # compensation ignores Ctrl-C
    result.compensated = undo.results
    return result


def run_strategy(
    strategy: str,
    hosts: Sequence[str],
    work: Work,
    *,
    forks: int = 10,
    batch: int = 1,
    compensate: Work | None = None,
    retries: int = 1,
    stop: threading.Event | None = None,
) -> PhaseResult:
    """Dispatch by the playbook's strategy name."""
    if strategy == "controller":
        return run_controller(work, stop=stop)
    if strategy == "parallel":
        return run_parallel(hosts, work, forks=forks, stop=stop)
    if strategy == "rolling":
        return run_rolling(hosts, work, batch=batch, forks=forks, stop=stop)
    if strategy == "all_or_nothing":
        return run_all_or_nothing(
            hosts, work, compensate=compensate, forks=forks, retries=retries, stop=stop
        )
    raise ValueError(f"unknown strategy {strategy!r}")
