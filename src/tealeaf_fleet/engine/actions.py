"""One function per playbook op: what the engine does to one host.

The steps, in order, and why: docs/vendor-procedure.md "The procedure as the tool runs it".

Every action first asks "is there anything to do?" from facts (ops/checks.py's rules, shared with
`fleet plan --facts` and `fleet status`) and returns `skipped` with the reason when the host is
already right, so a rerun after a halt or a crash repeats nothing. Every change is verified from
the host afterwards (a tool's exit code is not evidence). Actions raise FleetError subclasses for
failures; the runner records them as failed steps and halts the run.

Signature: `action(ctx: RunContext, phase: PhaseSpec, host_name: str) -> StepResult`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.engine import peers
from tealeaf_fleet.engine.context import RunContext
from tealeaf_fleet.engine.gates import POLL_MAX_S, POLL_S, Before, run_gates
from tealeaf_fleet.engine.peers import PeerCheck
from tealeaf_fleet.engine.strategies import CONTROLLER, StepResult
from tealeaf_fleet.errors import CertificateError, FleetError, RemoteError, RemoteScriptError
from tealeaf_fleet.safeio import O_BINARY

if TYPE_CHECKING:
    from tealeaf_fleet.engine.runner import PhaseSpec
    from tealeaf_fleet.inventory import Host

RTV_TOOLS = ("TLSTool.exe", "openssl.exe")
RUNNING_STATES = ("Running", "StartPending", "ContinuePending")
STOPPED_STATES = ("Stopped", "StopPending")


def _short(sha: str | None) -> str:
    return f"{sha[:12]}..." if sha else "none"


def _gather(ctx: RunContext, host: Host) -> dict[str, Any]:
    from tealeaf_fleet.ops import facts as facts_op

    install = host.install_dir or ctx.fleet.install_dir
    result = facts_op.gather(ctx.connection(host), host, install_dir=install).raw
    ctx.set_facts(host.name, result)
    return result


def _tlstool(
    ctx: RunContext, host: Host, verb: str, *, pfx_path: str | None = None, password: Any = None
) -> str:
    """Run TLSTool.exe; a non-zero exit is a failure carrying its (masked) output."""
    from tealeaf_fleet.ops import tlstool

    result = tlstool.run(
        ctx.connection(host), ctx.install_dir(host), verb, pfx_path=pfx_path, password=password
    )
    output = result.output.strip()
    if result.exit_code != 0:
        raise RemoteScriptError(
            f"TLSTool.exe {verb} exited {result.exit_code}: {output or 'no output'}",
            op="tlstool",
            exit_code_remote=result.exit_code,
            host=host.name,
        )
    return output


# --- preflight ------------------------------------------------------------------------------


def preflight(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Read-only: facts, then the shared preflight rules. Blockers fail the step (and so the
    phase, before anything changed anywhere)."""
    from tealeaf_fleet.ops import checks
    from tealeaf_fleet.prerequisites import runs_status_report

    host = ctx.host(name)
    workstation = host.role == "rtv"
    try:
        facts = _settled_facts(ctx, phase, host)
    except RemoteError as exc:
        if workstation:  # never holds up the servers: its phases come after theirs
            return _workstation_warning(ctx, phase, name, f"cannot read facts: {exc}")
        ctx.blockers[name] = [f"cannot read facts: {exc}"]
        raise
    pfx_sha = ctx.pfx.sha256 if ctx.pfx is not None else None
    tls12 = None
    if checks.tls12_probe_due(host, facts):
        tls12 = ctx.probe_tls12(host.address, host.tms_port)
    findings = checks.preflight_blockers(
        host,
        facts,
        pfx_sha256=pfx_sha,
        expect_tls=ctx.expect_tls,
        rotation=ctx.rotation,
        reboot_records=ctx.reboot_records(name),
        status_report=runs_status_report(ctx.fleet, host),
        restarting=_resumed_restart(ctx, name),
        tls12_probe=tls12,
        writes_prerequisites=ctx.writes_prerequisites,
    )
    if workstation:  # what would block a server is a warning on a workstation
        findings = [
            checks.Finding(checks.WARNING, f.code, f.message, f.hosts)
            if f.severity == checks.BLOCKER
            else f
            for f in findings
        ]
    if ctx.rotation and host.manages_tls and ctx.fleet.rollout.verify_handshake:
        served = ctx.probe(host.address, host.tms_port)  # which pair the running TMS uses
        ctx.serving[name] = getattr(served, "sha256", None)
    blockers = [f.message for f in findings if f.severity == checks.BLOCKER]
    warned = [f for f in findings if f.severity == checks.WARNING]
    warnings = [f.message for f in warned]
    if warnings:
        ctx.warnings[name] = warnings
    _record_before(ctx, host, facts, warned)
    for finding in warned:  # the full text once per kind; each host's step names the codes
        with ctx.cache_lock:
            first = finding.code not in ctx.warned_codes
            ctx.warned_codes.add(finding.code)
        if first:
            ctx.bus.emit(
                "message",
                phase=phase.name,
                host=name,
                message=f"warning ({finding.code}, first seen on {name}): {finding.message}",
            )
    if blockers:
        ctx.blockers[name] = blockers
        return StepResult("failed", "; ".join(blockers))
    running = sum(1 for s in facts.get("services") or [] if s.get("state") == "Running")
    total = len(facts.get("services") or [])
    from_file = " (file version)" if facts.get("tealeaf_build_source") == "file_version" else ""
    if workstation:  # only what applies: it imports, never enables or restarts
        tools = facts.get("tools") or {}
        have = "present" if tools.get("tlstool") and tools.get("openssl") else "to be copied"
        text = f"build {facts.get('tealeaf_build')}{from_file}, TLSTool.exe and openssl.exe {have}"
    else:
        text = (
            f"build {facts.get('tealeaf_build')}{from_file}, EnableTLS "
            f"{_registry_shown(facts.get('enable_tls'))}, {running}/{total} TeaLeaf services "
            "running"
        )
    if warned:
        text += "; warnings: " + ", ".join(f.code for f in warned)
    return StepResult("ok", text)


def _workstation_warning(ctx: RunContext, phase: PhaseSpec, name: str, why: str) -> StepResult:
    """An RTV workstation preflight could not judge: a warning, and its later phases are not
    attempted (the run ends exit 1 naming it, with the command that finishes it)."""
    ctx.warnings.setdefault(name, []).append(why)
    ctx.workstation_problems[name] = why
    ctx.bus.emit("message", phase=phase.name, host=name, message=f"warning: {why}")
    return StepResult("ok", f"warning: {why}; its phases run after the servers' and are skipped")


def check_workstation_builds(ctx: RunContext) -> None:
    """After preflight: an RTV workstation of another build than every server's gets a
    warning (TLSTool.exe and openssl.exe are copied from a server of its own build)."""
    servers = {
        str(f.get("tealeaf_build"))
        for n, f in ctx.facts.items()
        if n in ctx.fleet.hosts and ctx.fleet.hosts[n].manages_tls and f.get("tealeaf_build")
    }
    for name, f in ctx.facts.items():
        host = ctx.fleet.hosts.get(name)
        build = f.get("tealeaf_build")
        if host is None or host.role != "rtv" or not servers or str(build) in servers:
            continue
        why = (
            f"build {build} differs from the servers' ({', '.join(sorted(servers))}): "
            "Tealeaf asks every component of a deployment to run the same build"
        )
        ctx.warnings.setdefault(name, []).append(why)
        ctx.bus.emit("message", phase="preflight", host=name, message=f"warning: {why}")


def _resumed_restart(ctx: RunContext, name: str) -> list[str]:
    """The services an unfinished restart of this plan stopped on the host (journal notes):
    the resumed restart starts them again, so preflight does not count them as found stopped."""
    runner = ctx.runner
    out: list[str] = []
    for phase in runner.phases if runner is not None else ():
        if phase.op == "restart" and name in phase.hosts:
            out.extend((ctx.first_note(phase.name, name, "restart") or {}).get("running", []))
    return out


def _record_before(ctx: RunContext, host: Host, facts: dict[str, Any], warned: list) -> None:
    """Evidence for `fleet report`: the host as preflight found it, with a handshake on each
    of its ports (read-only; none when `rollout.verify_handshake` is off), and its warnings."""
    from tealeaf_fleet.engine.evidence import host_state, probe_host

    if not ctx.recording:
        return
    shakes = probe_host(ctx.probe, host) if ctx.fleet.rollout.verify_handshake else {}
    ctx.record("before", host_state(facts, shakes), host=host.name)
    for finding in warned:
        ctx.record("warning", {"code": finding.code, "message": finding.message}, host=host.name)


def _settled_facts(ctx: RunContext, phase: PhaseSpec, host: Host) -> dict[str, Any]:
    """Facts to judge by. A TeaLeaf service in a pending state (StartPending, StopPending, ...)
    is on its way somewhere: read the facts again until none is, for at most
    `rollout.health_timeout_s`, saying so on the bus. What is still pending then is left to
    the preflight rules (a blocker naming it)."""
    from tealeaf_fleet.ops.checks import pending_services

    facts = _gather(ctx, host)
    timeout = ctx.fleet.rollout.health_timeout_s
    deadline = time.monotonic() + timeout
    delay = POLL_S
    waited = False
    while True:
        pending = [f"{name} ({state})" for name, state in pending_services(facts)]
        if not pending or ctx.stop.is_set() or time.monotonic() + delay > deadline:
            break
        if not waited:
            ctx.bus.emit(
                "message",
                phase=phase.name,
                host=host.name,
                message=f"waiting up to {timeout}s for {', '.join(pending)} to settle",
            )
            waited = True
        ctx.stop.wait(delay)
        delay = min(POLL_MAX_S, delay * 1.5)
        facts = _gather(ctx, host)
    if waited:
        outcome = f"still {', '.join(pending)}" if pending else "settled"
        ctx.bus.emit("message", phase=phase.name, host=host.name, message=f"services {outcome}")
    return facts


# --- certificate (controller) -----------------------------------------------------------------


def load_existing_pfx(ctx: RunContext) -> None:
    """Before preflight: open the PFX if it already exists (a resumed or repeated run), so
    preflight can tell "EnableTLS=1 with our certificate" (resume) from a foreign one."""
    from tealeaf_fleet import certs

    settings = ctx.fleet.certificate
    if not Path(settings.path).is_file():
        return
    if settings.source == "tlstool":
        data = Path(settings.path).read_bytes()
        ctx.pfx = certs.load_pfx(data, ctx.pfx_password, name=str(settings.path))
        ctx.pfx_bytes = data
        return
    ctx.pfx, ctx.pfx_bytes = certs.certificate_for(ctx.fleet, create=False)


def certificate(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Once, on the controller. Never generates a second certificate for a fleet."""
    from tealeaf_fleet import certs

    settings = ctx.fleet.certificate
    path = Path(settings.path)
    existed = path.is_file()
    if settings.source == "tlstool" and not existed:
        return _certificate_from_tlstool(ctx, path)
    if settings.source == "tlstool":
        data = path.read_bytes()
        ctx.pfx, ctx.pfx_bytes = certs.load_pfx(data, ctx.pfx_password, name=str(path)), data
    else:
        ctx.pfx, ctx.pfx_bytes = certs.certificate_for(ctx.fleet, create=True)
    kept = _archive(ctx, path)
    if existed:
        return StepResult(
            "ok",
            f"{path.name} already exists and is reused (certificate "
            f"{_short(ctx.pfx.sha256)}){kept}",
        )
    return StepResult(
        "changed", f"generated {path.name} (certificate {_short(ctx.pfx.sha256)}){kept}"
    )


def _archive(ctx: RunContext, path: Path) -> str:
    """Keep the PFX this run uses in the state folder's archive (certarchive): the way back
    after a rotation. Returns the suffix the step's message gets ('' without a journal)."""
    from tealeaf_fleet import certarchive

    runner = ctx.runner
    journal = runner.journal if runner is not None else None
    if journal is None or ctx.pfx is None or ctx.pfx_bytes is None:
        return ""
    entry = certarchive.archive(
        journal.state_dir,
        ctx.pfx,
        ctx.pfx_bytes,
        source=path.name,
        run_id=runner.run_id,
        command=runner.command,
        playbook=(runner.plan.get("playbook") or {}).get("name"),
        rotation=ctx.rotation,
        replaces=ctx.fleet_fingerprints() if ctx.rotation else (),
        resume_flags=certarchive.rerun_flags(ctx.fleet.normalized.get("certificate") or {}),
    )
    return f"; archived as {certarchive.FOLDER}/{entry.pfx_path.name}"


def _certificate_from_tlstool(ctx: RunContext, path: Path) -> StepResult:
    """`TLSTool.exe create -site` on the first Tealeaf server, then fetch the PFX back."""
    from tealeaf_fleet import certs
    from tealeaf_fleet.ops import files

    first = next((h for h in ctx.fleet.hosts.values() if h.manages_tls), None)
    if first is None:
        raise CertificateError(
            "certificate.source tlstool needs a Tealeaf server in the "
            "inventory to run TLSTool.exe create on"
        )
    remote = ctx.remote_pfx_path(first)
    _tlstool(ctx, first, "create", pfx_path=remote, password=ctx.pfx_password)
    data = files.get_file(ctx.connection(first), remote)
    pfx = certs.load_pfx(data, ctx.pfx_password, name=f"{first.name}:{remote}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o600)
    except FileExistsError:
        raise CertificateError(
            f"{path} appeared while TLSTool was creating one on "
            f"{first.name}: another run? refusing to use two certificates"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    ctx.pfx, ctx.pfx_bytes = pfx, data
    return StepResult(
        "changed",
        f"TLSTool.exe create -site on {first.name}; fetched "
        f"{path.name} (certificate {_short(pfx.sha256)}){_archive(ctx, path)}",
    )


def _need_pfx(ctx: RunContext) -> tuple[Any, bytes]:
    if ctx.pfx is None or ctx.pfx_bytes is None:
        raise FleetError("no certificate: the certificate phase did not run before this one")
    return ctx.pfx, ctx.pfx_bytes


def _import_status(ctx: RunContext, host: Host, facts: dict[str, Any], pfx_sha256: str) -> Any:
    """Whether the host already carries this run's certificate. One verdict for push_pfx and
    import, so the copy is skipped exactly when the import would be, and import checks its own
    work against the same rule.

    tealeaf.crt is the only evidence the facts give (tealeaf.p12 is re-encrypted per host, so
    its hash says nothing), and an import that failed part-way can leave the new tealeaf.crt
    beside the old tealeaf.p12 (a held tealeaf.p12 refuses the write). So an import that an
    earlier run started on this host (of this plan or any other: the inventory may have been
    edited since) and no import finished since is done again, however tealeaf.crt reads."""
    from tealeaf_fleet.ops import checks

    verdict = checks.step_status(
        host, facts, "import", pfx_sha256=pfx_sha256, expect_tls=ctx.expect_tls
    )
    if verdict.done and _import_unfinished(ctx, host, pfx_sha256):
        return checks.Needed(
            "an earlier import of this certificate on this host failed part-way "
            "(tealeaf.crt alone proves nothing then): importing again"
        )
    return verdict


def _import_unfinished(ctx: RunContext, host: Host, pfx_sha256: str) -> bool:
    """An import of this certificate started on `host` in an earlier run (its note) and no
    import there finished since, in any run of any plan (an inventory edited after the halt
    changes the plan digest, not the host), nor in this run."""
    runner = ctx.runner
    if runner is None or "import" in ctx.changed_ops(host.name):
        return False
    if runner.journal is None or runner.run_id is None:
        return False
    planned = [p for p in runner.phases if p.op == "import" and host.name in p.hosts]
    if not planned or all((p.name, host.name, "import") in runner.done for p in planned):
        return False
    return runner.journal.unfinished_import(host.name, before_run=runner.run_id) == pfx_sha256


# --- push -------------------------------------------------------------------------------------


def push_pfx(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    from tealeaf_fleet.ops import files

    host = ctx.host(name)
    pfx, data = _need_pfx(ctx)
    verdict = _import_status(ctx, host, ctx.facts.get(name) or {}, pfx.sha256)
    if verdict.done:
        return StepResult("skipped", f"nothing to do: {verdict.reason}")
    path = ctx.remote_pfx_path(host)
    # put_file compares the host's SHA-256 of the file with ours (raising when they differ)
    result = files.put_file(ctx.connection(host), data, path)
    if result.skipped:
        return StepResult(
            "skipped",
            f"nothing to do: {path} is already identical (file hash {_short(result.sha256)})",
        )
    return StepResult(
        "changed", f"copied to {path}; its file hash {_short(result.sha256)} checked there"
    )


def push_tools(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """RTV workstations: TLSTool.exe and openssl.exe from a Tealeaf server of the same build."""
    from tealeaf_fleet.ops import files

    host = ctx.host(name)
    facts = ctx.facts.get(name) or {}
    tools = facts.get("tools") or {}
    if tools.get("tlstool") and tools.get("openssl"):
        return StepResult("skipped", "nothing to do: TLSTool.exe and openssl.exe are there")
    build = facts.get("tealeaf_build")
    source = _tool_source(ctx, build)
    blobs = _tool_files(ctx, source, build)
    tools_dir = PureWindowsPath(ctx.install_dir(host)) / "Tools"
    copied = []
    for file_name, data in blobs.items():
        key = "tlstool" if file_name == "TLSTool.exe" else "openssl"
        if tools.get(key):
            continue
        files.put_file(ctx.connection(host), data, str(tools_dir / file_name))
        copied.append(file_name)
    return StepResult(
        "changed", f"copied {', '.join(copied)} from {source.name} (build {build}) to {tools_dir}"
    )


def _tool_source(ctx: RunContext, build: Any) -> Host:
    """A Tealeaf server of `build` with both tools. A server this run has no facts of (left
    out by --limit) is read, read-only, once; under the cache lock, so that two workstations
    never use one server's connection at once."""
    with ctx.cache_lock:
        return _find_tool_source(ctx, build)


def _find_tool_source(ctx: RunContext, build: Any) -> Host:
    for host in ctx.fleet.hosts.values():
        f = ctx.facts.get(host.name)
        if f is None and host.manages_tls:
            try:
                f = _gather(ctx, host)
            except RemoteError:
                f = {}
        f = f or {}
        if (
            host.manages_tls
            and f.get("tealeaf_build") == build
            and (f.get("tools") or {}).get("tlstool")
            and (f.get("tools") or {}).get("openssl")
        ):
            return host
    raise FleetError(
        f"no Tealeaf server of build {build} with Tools\\TLSTool.exe and "
        "Tools\\openssl.exe to copy them from",
        hint="copy both files to the workstation's Tools folder by hand, or add "
        "a server of the same build to the inventory",
    )


def _tool_files(ctx: RunContext, source: Host, build: Any) -> dict[str, bytes]:
    from tealeaf_fleet.ops import files

    with ctx.cache_lock:  # fetched once per build, however many RTV hosts need them
        cached = ctx.tool_cache.get(str(build))
        if cached is None:
            tools_dir = PureWindowsPath(ctx.install_dir(source)) / "Tools"
            cached = {
                n: files.get_file(ctx.connection(source), str(tools_dir / n)) for n in RTV_TOOLS
            }
            ctx.tool_cache[str(build)] = cached
    return cached


# --- import / enable / disable ------------------------------------------------------------------


def _tlstool_verified(
    ctx: RunContext, host: Host, verb: str, judge: Callable[[dict[str, Any]], Any], **tool: Any
) -> str:
    """Run TLSTool.exe VERB, then read the host's facts again and judge them with the rule
    that said the step was needed (its exit code is not evidence). Returns the verdict's
    reason; RemoteError when the host does not show the change."""
    _tlstool(ctx, host, verb, **tool)
    ctx.mark_changed(host.name, verb)
    check = judge(_gather(ctx, host))
    if not check.done:
        raise RemoteError(f"TLSTool.exe {verb} reported success but {check.reason}", host=host.name)
    return check.reason


def import_(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    host = ctx.host(name)
    pfx, _ = _need_pfx(ctx)

    def judge(facts: dict[str, Any]) -> Any:
        return _import_status(ctx, host, facts, pfx.sha256)

    verdict = judge(ctx.facts.get(name) or {})
    if verdict.done:
        return StepResult("skipped", f"nothing to do: {verdict.reason}")
    ctx.note(phase.name, name, {"importing": pfx.sha256})  # a rerun distrusts a half import
    reason = _tlstool_verified(
        ctx, host, "import", judge, pfx_path=ctx.remote_pfx_path(host), password=ctx.pfx_password
    )
    return StepResult("changed", f"imported certificate {_short(pfx.sha256)}; {reason}")


def enable(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    from tealeaf_fleet.ops import checks

    host = ctx.host(name)
    pfx, _ = _need_pfx(ctx)
    facts = ctx.facts.get(name) or {}
    installed = (facts.get("security") or {}).get("cert_sha256")
    if installed != pfx.sha256:
        raise FleetError(
            f"refusing to enable: tealeaf.crt holds {_short(installed)}, not the "
            f"PFX's {_short(pfx.sha256)} (every host must carry the same "
            "certificate first)",
            host=name,
        )

    def judge(facts: dict[str, Any]) -> Any:
        return checks.step_status(host, facts, "enable", pfx_sha256=pfx.sha256, expect_tls=True)

    verdict = judge(facts)
    if verdict.done:
        return StepResult("skipped", f"nothing to do: {verdict.reason}, with our certificate")
    return StepResult("changed", f"EnableTLS=1; {_tlstool_verified(ctx, host, 'enable', judge)}")


def disable(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Rollback's step, and the compensation of a failed all-or-nothing enable."""
    from tealeaf_fleet.ops import checks

    host = ctx.host(name)

    def judge(facts: dict[str, Any]) -> Any:
        return checks.step_status(host, facts, "disable", pfx_sha256=None, expect_tls=False)

    verdict = judge(ctx.facts.get(name) or {})
    if verdict.done and "enable" not in ctx.changed_ops(name):
        return StepResult("skipped", f"nothing to do: {verdict.reason}")
    return StepResult("changed", f"EnableTLS=0; {_tlstool_verified(ctx, host, 'disable', judge)}")


# --- restart + gates ------------------------------------------------------------------------------


def _before(ctx: RunContext, phase: PhaseSpec, host: Host) -> Before:
    from tealeaf_fleet.ops.facts import data_service_names

    facts = ctx.facts.get(host.name) or {}
    services = facts.get("services") or []
    # ServiceController spellings (facts.ps1 normalises Win32_Service's "Start Pending"): a
    # service on its way up counts as running, one on its way down as stopped
    running = [s["name"] for s in services if s.get("state") in RUNNING_STATES]
    stopped = [s["name"] for s in services if s.get("state") in STOPPED_STATES]
    earlier = ctx.first_note(phase.name, host.name, phase.op)
    if earlier:  # a failed attempt may have left some of them stopped: bring back all of them
        for svc in earlier.get("running", []):
            if svc not in running:
                running.append(svc)
                if svc in stopped:
                    stopped.remove(svc)
    if not ctx.expect_tls:
        # a rollback starts what TLS left stopped (its rollout restart failed on this host)
        for svc in ctx.down_with_tls(host.name):
            if svc not in running:
                running.append(svc)
                if svc in stopped:
                    stopped.remove(svc)
    iis = facts.get("iis") or {}
    return Before(
        running=running,
        stopped=stopped,
        iis_running=bool(iis.get("present"))
        and iis.get("state") == "Running"
        or bool(earlier and earlier.get("iis")),
        # from the services, never from the log (it may hold no startup block for days): a
        # Data Service that was running must log its new mode; a stopped one stays stopped
        has_data_service=any(n in running for n in data_service_names(facts)),
        imported_sha256=(facts.get("security") or {}).get("cert_sha256"),
    )


def _already_healthy(ctx: RunContext, phase: PhaseSpec, host: Host, before: Before) -> str | None:
    """A host this run did not change, whose gates already pass, needs no restart (a rerun
    after a crash, or a fleet already in the wanted state). Returns the reason, or None."""
    if ctx.changed_ops(host.name) & {"import", "enable", "disable"}:
        return None
    if ctx.rotation and not ctx.fleet.rollout.verify_handshake:
        # TLS was on before and after: only a handshake tells the old pair from the new one,
        # so without it a restart the journal does not record as done is repeated
        return None
    from tealeaf_fleet.ops import checks

    facts = ctx.facts.get(host.name) or {}
    verdict = checks.step_status(host, facts, "restart", pfx_sha256=None, expect_tls=ctx.expect_tls)
    if not verdict.done:
        return None
    states = {s.get("name"): s.get("state") for s in facts.get("services") or []}
    if any(states.get(n) != "Running" for n in before.running):
        return None
    if ctx.fleet.rollout.verify_handshake:
        from tealeaf_fleet.engine.gates import _Pending, gate_handshake

        try:
            gate_handshake(ctx, host, before)
        except _Pending:
            return None
    return verdict.reason


def restart(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    host = ctx.host(name)
    # peers of an HBR or Canister are read while this host's own state is judged
    check = PeerCheck(ctx, phase, name) if peers.applies(ctx, phase, name) else None
    healthy_after = False
    try:
        before = _before(ctx, phase, host)
        # a troubleshooting reboot is asked for even where the gates pass (ctx.force_restart)
        healthy = None if ctx.force_restart else _already_healthy(ctx, phase, host, before)
        if healthy:
            healthy_after = True
            return StepResult(
                "skipped", f"nothing to do: {healthy}; services and handshakes already right"
            )
        restart_mode = ctx.fleet.rollout.restart
        if restart_mode != "reboot" and not before.running and not before.iis_running:
            return StepResult(
                "skipped",
                "nothing to restart: no TeaLeaf service was running and IIS is not running here "
                "(stopped services stay stopped)",
            )
        if restart_mode == "reboot":
            _boot_starts_automatic(ctx, host, before)
        did = _peers_then_bounce(ctx, phase, host, before, check, reboot=restart_mode == "reboot")
        healthy_after = True
        return StepResult("changed", did)
    finally:
        if check is not None:
            check.finish(healthy_after)


def _peers_then_bounce(
    ctx: RunContext,
    phase: PhaseSpec,
    host: Host,
    before: Before,
    check: PeerCheck | None,
    *,
    reboot: bool,
) -> str:
    """The peers' health first (raises naming an unhealthy peer, before anything touches this
    host), then the restart or reboot with its gates; the next host's peer reads start once
    this host's polled gates passed, during the soak (never earlier: a peer that fails while
    this host restarts must still be seen)."""
    did = ""
    prefetch = None
    if check is not None:
        did = f"{check.require()}; "
        prefetch = check.prefetch_next
    return did + _bounce(ctx, phase, host, before, reboot=reboot, during_soak=prefetch)


def _bounce(
    ctx: RunContext,
    phase: PhaseSpec,
    host: Host,
    before: Before,
    *,
    reboot: bool,
    during_soak: Callable[[], None] | None = None,
) -> str:
    """Restart the host's TeaLeaf services and IIS, or reboot it; then its phase's gates (the
    next HBR or Canister starts only after they pass). Returns what was done, for the step."""
    from tealeaf_fleet.ops import services

    ctx.note(phase.name, host.name, {"running": before.running, "iis": before.iis_running})
    conn = ctx.connection(host)
    timeout = ctx.fleet.rollout.health_timeout_s
    first: dict | None = None  # what the restart op read for the gates, if it did
    if reboot:
        rebooted = services.reboot_and_wait(conn, timeout)
        ctx.drop_connection(host)
        ctx.record_rebooted(host.name, str(rebooted.scheduled_at or ""))
        before.since = rebooted.scheduled_at
        did = f"rebooted (back after {rebooted.elapsed_s:.0f}s)"
        if rebooted.replaced_scheduled:
            did += "; replaced a shutdown someone else had scheduled"
        if rebooted.note:
            did += f"; {rebooted.note}"
    else:
        if before.running:
            # one op: the services, iisreset where IIS runs, and the gates' first read
            result = services.restart(
                conn,
                before.running,
                timeout,
                install_dir=ctx.install_dir(host),
                iisreset=before.iis_running,
            )
            before.since = result.started_at
            first = result.after
        elif before.iis_running:
            services.iisreset(conn)
        did = f"restarted {len(before.running)} TeaLeaf service(s)"
        if before.iis_running:
            did += " and IIS (iisreset)"
    passed = run_gates(
        ctx, phase.name, host, phase.gates, before, first=first, during_soak=during_soak
    )
    return did + ("; gates passed: " + "; ".join(passed) if passed else "")


def _boot_starts_automatic(ctx: RunContext, host: Host, before: Before) -> list[str]:
    """A reboot starts every service whose start mode is Auto, stopped or not (the tool cannot
    keep them stopped): the gates then expect those running, and only the others stopped.
    Returns the names moved."""
    facts = ctx.facts.get(host.name) or {}
    auto = {s.get("name") for s in facts.get("services") or [] if s.get("start_mode") == "Auto"}
    moved = [n for n in before.stopped if n in auto]
    for svc in moved:
        before.stopped.remove(svc)
        before.running.append(svc)
    if moved:
        from tealeaf_fleet.ops.facts import data_service_names

        before.has_data_service = any(n in before.running for n in data_service_names(facts))
    return moved


# --- prerequisites + reboot -----------------------------------------------------------------


def prerequisites(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Write each registry value the host still needs (prerequisites.py), typed, and read each
    back (value and registry type); then read the facts again and require that nothing is
    still missing. A value that takes effect at boot is journaled as a pending reboot BEFORE it
    is sent: a write can land with its reply lost, the host can stop answering before the
    facts are read again, the operator can press Ctrl-C; in each case the next run must still
    know that the host owes a boot (a needless reboot is the pessimistic price)."""
    from tealeaf_fleet import prerequisites as prereq
    from tealeaf_fleet.ops import registry

    host = ctx.host(name)
    facts = _gather(ctx, host)  # fresh: the boot the writes land in is the one journaled
    writes = prereq.needed_writes(ctx.fleet, host, facts)
    if not writes:
        return StepResult("skipped", "nothing to do: every prerequisite value is in place")
    conn = ctx.connection(host)
    boot = (facts.get("boot") or {}).get("last_boot_utc")
    journaled: set[str] = set()
    for write in writes:
        if write.needs_reboot and write.area not in journaled:
            ctx.record_reboot_needed(
                name, str(facts.get("now") or ""), [write.area], str(boot or "")
            )
            journaled.add(write.area)
        result = registry.set_value(
            conn, write.key, write.name, write.value, kind=write.kind, create_only=write.create_only
        )
        ctx.mark_changed(name, "prerequisites")
        problem = _read_back_problem(write, result)
        if problem:
            raise RemoteError(
                f"{write.key}\\{write.name}: {problem}",
                host=name,
                hint="check the key's permissions and any policy that resets it",
            )
        ctx.bus.emit("message", phase=phase.name, host=name, message=f"{name}: set {write.shown()}")
    after = _gather(ctx, host)
    still = prereq.needed_writes(ctx.fleet, host, after)
    if still:
        raise RemoteError(
            "written and read back, but the facts still show missing: "
            + "; ".join(w.shown() for w in still),
            host=name,
        )
    text = f"set {len(writes)} value(s), each read back"
    areas = prereq.reboot_areas(writes)
    if areas:
        text += f"; reboot needed ({', '.join(areas)} take effect at boot)"
    return StepResult("changed", text)


def _read_back_problem(write: Any, result: Any) -> str | None:
    """Why the value read back is not the one written (None when it is): the type first (a
    REG_SZ "1" is not the DWORD 1), then the value (a DWORD reads back as a signed Int32). No
    type read back is a failure too: the write is unverified, not verified."""
    kind = result.kind
    if kind is None:
        return f"wrote a {write.kind} but could not read its registry type back"
    if str(kind).lower() != write.kind.lower():
        return f"wrote a {write.kind} but read back a {kind}"
    value = result.value
    if write.kind == "DWord":
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (value & 0xFFFFFFFF) == int(write.value)
    else:
        ok = value == write.value
    if not ok:
        if write.kind == "DWord":
            return f"wrote {write.value} but read back {value}"
        return "wrote the placeholder but read back another text"
    return None


def reboot(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Reboot a host with a change of this tool that waits for a boot (the journal's record,
    judged against the host's last boot), then the phase's gates; the mode the services come
    back in follows EnableTLS as it is now. On 2008 R2, SCHANNEL keys in place but TLS 1.2
    refused by the TMS port count as pending too (set by hand, never booted with). Nothing
    pending: skipped; `prerequisites.reboot: false`: skipped, the reboot stays pending
    (status and preflight say so)."""
    from tealeaf_fleet.ops import checks

    host = ctx.host(name)
    facts = ctx.facts.get(name) or _gather(ctx, host)
    pending = checks.pending_reboot_since(facts, ctx.reboot_records(name))
    if pending is None and checks.tls12_probe_due(host, facts):
        # keys set by hand (or by a run whose journal is gone) and never booted with
        probe = ctx.probe_tls12(host.address, host.tms_port)
        if checks.tls12_findings(name, facts, host.tms_port, probe, block=False):
            pending = ("the last boot (TLS 1.2 not active)", ["schannel"])
    if pending is None:
        return StepResult("skipped", "nothing to do: no change of this tool waits for a reboot")
    since, areas = pending
    if not ctx.fleet.prerequisites.reboot:
        return StepResult(
            "skipped",
            f"reboot pending since {since} ({', '.join(areas)}): prerequisites.reboot is false; "
            "reboot it yourself (HBRs and Canisters one at a time) or rerun with reboot: true",
        )
    check = PeerCheck(ctx, phase, name) if peers.applies(ctx, phase, name) else None
    healthy_after = False
    try:
        before = _before(ctx, phase, host)
        before.want_tls = checks.tls_configured(facts) is True
        moved = _boot_starts_automatic(ctx, host, before)
        did = _peers_then_bounce(ctx, phase, host, before, check, reboot=True)
        if "schannel" in areas and checks.tls12_probe_due(host, facts):
            did += "; " + _tls12_after_boot(ctx, host)
        healthy_after = True
    finally:
        if check is not None:
            check.finish(healthy_after)
    if moved:
        did += f"; {', '.join(moved)} (start mode Auto) started at boot"
    return StepResult("changed", f"pending since {since} ({', '.join(areas)}): {did}")


def _tls12_after_boot(ctx: RunContext, host: Host) -> str:
    """The reboot's proof for SCHANNEL keys on 2008 R2: a TLS 1.2-only handshake to the TMS
    port completes (the registry read back says nothing about what SCHANNEL loaded at boot).
    Polled until `rollout.health_timeout_s`, as the other gates; then the run halts before the
    next host."""
    from tealeaf_fleet.errors import GateFailed

    deadline = time.monotonic() + ctx.fleet.rollout.health_timeout_s
    while True:
        result = ctx.probe_tls12(host.address, host.tms_port)
        if getattr(result, "kind", None) == "tls" and getattr(result, "sha256", None):
            return f"TLS 1.2 handshake on TMS port {host.tms_port} after the boot"
        if ctx.stop.is_set() or time.monotonic() + POLL_S > deadline:
            raise GateFailed(
                f"TLS 1.2 not active after the reboot: a TLS 1.2-only handshake to the TMS "
                f"port {host.tms_port} answers {getattr(result, 'kind', None)} "
                f"({getattr(result, 'error', None)}); check the SCHANNEL TLS 1.2 Server keys",
                gate="tls12",
                host=host.name,
            )
        time.sleep(POLL_S)


def read_facts(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Read-only: refresh the host's facts (a read failure raises, failing the step); they
    are the run's "before" evidence when no preflight recorded any."""
    host = ctx.host(name)
    facts = _gather(ctx, host)
    _record_before(ctx, host, facts, [])
    return StepResult("ok", "facts read")


# --- troubleshooting fixes (fleet troubleshoot --fix) ---------------------------------------


def clear_ssl_cache(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Empty the host's SChannel session cache (the "Clear SSL State" button)."""
    from tealeaf_fleet.ops import schannel

    host = ctx.host(name)
    before = _before(ctx, phase, host)
    at = schannel.clear_ssl_cache(ctx.connection(host))
    ctx.mark_changed(name, "clear_ssl_cache")
    return StepResult(
        "changed",
        f"SSL session cache emptied (SslEmptyCache) at {at}" + _gated(ctx, phase, host, before),
    )


def restart_cryptsvc(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Restart Cryptographic Services (CryptSvc), the vendor's other remedy for a stale cache."""
    from tealeaf_fleet.ops import schannel, services

    host = ctx.host(name)
    before = _before(ctx, phase, host)
    result = services.restart(
        ctx.connection(host),
        [schannel.CRYPTO_SERVICE],
        ctx.fleet.rollout.health_timeout_s,
    )
    ctx.mark_changed(name, "restart_cryptsvc")
    return StepResult(
        "changed",
        f"Cryptographic Services restarted at {result.started_at} ({result.elapsed_s:.0f}s)"
        + _gated(ctx, phase, host, before),
    )


def _gated(ctx: RunContext, phase: PhaseSpec, host: Host, before: Before) -> str:
    """Run the fix phase's gates (a rolling phase: the next server waits for them); the text
    appended to the step's message."""
    passed = run_gates(ctx, phase.name, host, phase.gates, before)
    return "; gates passed: " + "; ".join(passed) if passed else ""


# --- verify ---------------------------------------------------------------------------------------


def verify(ctx: RunContext, phase: PhaseSpec, name: str) -> StepResult:
    """Fleet-wide evaluation (status.py), once for the whole phase; each host's step reports
    the findings about it."""
    from tealeaf_fleet import status
    from tealeaf_fleet.ops import status_tool
    from tealeaf_fleet.ops.checks import BLOCKER

    with ctx.cache_lock:  # one gather per verify phase, over that phase's hosts only
        fleet_status = ctx.verify_status.get(phase.name)
        if fleet_status is None:
            fleet_status = ctx.verify_status[phase.name] = status.gather(
                ctx.fleet.only(phase.hosts),
                forks=ctx.forks,
                collector=_collector(ctx),
                prober=lambda a, p, t: ctx.probe(a, p, t),
                tool_runner=lambda host, facts: status_tool.run(
                    ctx.connection(host), ctx.install_dir(host)
                ).to_dict(),
            )
            for finding in fleet_status.findings:
                ctx.record("finding", finding.to_dict())
    row = fleet_status.host(name)
    from tealeaf_fleet.engine.evidence import host_state

    ctx.record("after", host_state(row.facts, row.handshakes, row.status_tool), host=name)
    mine = fleet_status.findings_for(name)
    blockers = [f.message for f in mine if f.severity == BLOCKER]
    if blockers:
        return StepResult("failed", "; ".join(blockers))
    facts = row.facts or {}
    return StepResult(
        "ok",
        f"EnableTLS {_registry_shown(facts.get('enable_tls'))}, certificate "
        f"{_short((facts.get('security') or {}).get('cert_sha256'))}, Data "
        f"Service {_shown((facts.get('data_service') or {}).get('mode'))}",
    )


def _collector(ctx: RunContext) -> Callable[..., dict[str, Any]]:
    def collect(fleet: Any, *, forks: int, on_progress: Any = None) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor

        from tealeaf_fleet import status

        hosts = fleet.windows_hosts()

        def one(host: Host) -> Any:
            try:
                return _gather(ctx, host)
            except FleetError as exc:
                return status.error_text(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts) or 1))) as pool:
            return dict(zip([h.name for h in hosts], pool.map(one, hosts), strict=True))

    return collect


ACTIONS: dict[str, Callable[[RunContext, Any, str], StepResult]] = {
    "preflight": preflight,
    "certificate": certificate,
    "push_pfx": push_pfx,
    "push_tools": push_tools,
    "import": import_,
    "enable": enable,
    "disable": disable,
    "restart": restart,
    "verify": verify,
    "facts": read_facts,
    "prerequisites": prerequisites,
    "reboot": reboot,
    "clear_ssl_cache": clear_ssl_cache,
    "restart_cryptsvc": restart_cryptsvc,
}

__all__ = ["ACTIONS", "CONTROLLER", "load_existing_pfx"]


def _shown(value: object) -> str:
    """A fact for a console line: a registry value or log mode that is not there reads
    "absent", not Python's "None"."""
    return "absent" if value is None else str(value)


def _registry_shown(value: object) -> str:
    """A registry value for a console line: "absent", the number, or what was found instead
    ("a REG_SZ holding 'true'"), never Python's repr of the facts' shape."""
    from tealeaf_fleet.ops.facts import RegistryNumber

    return RegistryNumber.parse(value).describe()
