"""The engine's entry point: one call runs a plan against a fleet.

Why a function separate from the CLI: `fleet rollout`, `fleet rollback`, `fleet demo`, the bench
and the tests all run plans the same way (same context, same actions, same journal rules), and
none of them may print from inside the engine; they pass an EventBus and render what it emits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.engine.actions import ACTIONS, check_workstation_builds, load_existing_pfx
from tealeaf_fleet.engine.context import RunContext
from tealeaf_fleet.engine.events import EventBus
from tealeaf_fleet.engine.evidence import GateRecorder
from tealeaf_fleet.engine.runner import Runner, RunResult
from tealeaf_fleet.errors import InputError

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet, Host
    from tealeaf_fleet.journal import Journal


def execute(
    fleet: Fleet,
    plan: Mapping[str, Any],
    *,
    command: str,
    bus: EventBus,
    journal: Journal | None,
    inventory_label: str,
    forks: int = 10,
    stop: threading.Event | None = None,
    probe: Callable[..., Any] | None = None,
    connect: Callable[[Host], Any] | None = None,
    approved_plan: str | None = None,
    playbook_ref: str | None = None,
) -> RunResult:
    """Run `plan` (the Plan's JSON dict) and return how it ended; never prints.

    Input problems that need no host (unset password, unusable PFX) raise InputError /
    CertificateError before the journal records a run. `approved_plan` names the plan file the
    operator approved (kept as evidence for `fleet report`); `playbook_ref` the --playbook
    value as given (a name or a file's path), repeated in resume hints.
    """
    expect_tls = bool(plan.get("expect_tls"))
    stop = stop or threading.Event()
    ctx = RunContext(
        fleet, expect_tls=expect_tls, bus=bus, stop=stop, probe=probe, connect=connect, forks=forks
    )
    ctx.approved_plan = approved_plan
    ctx.force_restart = bool(plan.get("force_restart"))
    if journal is not None:
        bus.subscribe(GateRecorder(journal))
    ctx.rotation = bool(plan.get("rotation"))
    ops = {p.get("op") for p in plan.get("phases") or []}
    ctx.writes_prerequisites = "prerequisites" in ops
    if ops & {"certificate", "import", "push_pfx"}:
        from tealeaf_fleet import certs
        from tealeaf_fleet.ops import tlstool

        ctx.pfx_password = fleet.pfx_password()
        problems = certs.check_password(ctx.pfx_password)
        if problems:
            raise InputError(
                "the PFX password cannot be used with TLSTool.exe: " + "; ".join(problems),
                file=fleet.path,
                field="certificate.password",
                hint=certs.PASSWORD_ADVICE,
            )
        # TLSTool.exe gets the PFX by this name in <install>\Tools (ops.tlstool.pfx_name)
        tlstool.check_pfx_name(
            fleet.certificate.path.name, file=fleet.path, field="certificate.path"
        )
        load_existing_pfx(ctx)
    runner = Runner(
        plan=plan,
        actions=ACTIONS,
        context=ctx,
        bus=bus,
        journal=journal,
        command=command,
        inventory_label=inventory_label,
        forks=forks,
        stop=stop,
        after_phase=lambda phase: (
            check_workstation_builds(ctx) if phase.op == "preflight" else None
        ),
        playbook_ref=playbook_ref,
    )
    return runner.run()
