"""Playbook + Fleet (+ facts) -> `Plan`: the change, host by host, before anything runs.

Why a separate, serialisable plan: the change board approves a document, and the rollout later
proves it runs that document (`--approved-plan`): the digests cover the inventory's normalized
content, the playbook's normalized content, the tool version, when facts were gathered the
facts, and the plan's body itself (hosts, phases, strategies, steps, gates, opt-ins). No
timestamps and no secrets go into the plan or its digests, and the digest leaves out what is
only presentation (the inventory's and the PFX's paths on this machine), so planning the same
inputs twice gives the same digest on any machine.

A plan file is never trusted: the rollout rebuilds the plan from the inventory, playbook and
facts and runs that, after checking the file matches it (`first_difference`). Reading a plan
file is bounded (`PLAN_MAX_BYTES`, regular files only) and its shape is checked field by field
(`PLAN_SHAPE`), so a truncated, huge or hand-edited file is one clear error, not a crash.

The planner is pure: it reads no network and changes nothing. Facts (raw `facts` op results,
one per host) only turn steps into "nothing to do, because ..." skips, judged by
`ops.checks.step_status`: the same rule the engine applies when it resumes, so the plan and the
run cannot disagree about what is already done.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tealeaf_fleet import __version__
from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import Fleet, Host
from tealeaf_fleet.ops.checks import step_status
from tealeaf_fleet.playbooks import OPT_INS, Phase, Playbook, sha256_json

FORMAT_VERSION = 4  # 2: the digest covers the body; `opt_ins`. 3: `rotation`, `validity`,
# `pca_handoff`. 4: `preflight`, `prechecks`
PLAN_MAX_BYTES = 16 * 1024 * 1024  # a 1,000-host plan is about 2 MiB
CONTROLLER = "controller"  # the `host` of steps that run on the machine running `fleet`
PCA_PIPELINE_BUILD = (3682, 24)  # PCA build that can secure the pipeline with the same PFX
VOLATILE_FACTS = ("now", "utc_now")  # differ on every gather; kept out of the facts digest
CHANGING_OPS = ("import", "enable", "disable")  # a restart follows any of these on a host

_IMPORT_IMPACT_ROTATION = (
    "none on running services: they keep the pair they loaded until their restart below; a "
    "server restarted outside this plan (reboot, crash) comes back on the new pair early"
)
PCA_REASON = "not affected by inter-process TLS; never contacted over WinRM"
RTV_REASON = "import only, never enable or restart"

_IMPACT = {
    "hbr": "this HBR stops routing sessions while its services restart; the other HBRs carry on",
    "canister": "this Canister stops storing and serving sessions while it restarts; the other "
    "Canisters carry on",
    "portal": "Portal web UI (iisreset) and the TMS master are unavailable during the restart",
    "report": "reporting is unavailable during the restart",
    "other": "the Tealeaf services on this server are unavailable during the restart",
}


@dataclass
class Step:
    host: str
    action: str
    description: str
    impact: str
    skip_reason: str | None = None


@dataclass
class Excluded:
    host: str
    reason: str


@dataclass
class PlanPhase:
    name: str
    op: str
    strategy: str
    batch: int
    gates: list[str]
    roles: list[str]
    steps: list[Step] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    compensate: str | None = None
    on_failure: str = "halt"

    @property
    def active_steps(self) -> list[Step]:
        return [s for s in self.steps if s.skip_reason is None]


@dataclass
class PlanHost:
    name: str
    role: str
    address: str
    contacted: bool
    reason: str | None = None


@dataclass
class Plan:
    """The JSON shape of docs/architecture.md ("Plan JSON"), plus `expect_tls`,
    `description`, `certificate` (source and path name) and `pfx_sha256`, for renderers."""

    tool_version: str
    playbook: dict[str, str]  # {name, digest}
    inventory: dict[str, str]  # {path, digest}
    facts_digest: str | None
    digest: str
    expect_tls: bool
    description: str
    certificate: dict[str, str]
    pfx_sha256: str | None
    hosts: list[PlanHost]
    phases: list[PlanPhase]
    # the playbook's safety opt-ins: [{key, allows, phases (that rely on it)}]
    opt_ins: list[dict[str, Any]] = field(default_factory=list)
    rotation: bool = False  # the playbook replaces the pair under a TLS that stays on
    # presentation only (not in the digest): the new pair's and the installed pairs' validity
    # side by side, {"new": {sha256, not_before, not_after} | null, "installed": [{sha256,
    # not_after, hosts}]}; null when neither is known (no PFX opened, no facts read)
    validity: dict[str, Any] | None = None
    # the PCA hand-off (rollout and rotate: plans that install a pair): one entry per PCA,
    # [{host, build (declared, or null), pipeline_ready (build >= 3682-24, null: unknown),
    # step}]; the PCA is never contacted, its administrator installs the same pair
    pca_handoff: list[dict[str, Any]] = field(default_factory=list)
    # the preflight judgement over the facts (`judge_preflight`): {checked, blocked, findings}
    preflight: dict[str, Any] = field(
        default_factory=lambda: {"checked": False, "blocked": False, "findings": []}
    )
    # per Tealeaf server, the vendor prerequisites still missing (`precheck_rows`)
    prechecks: list[dict[str, Any]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        ordered = {"format_version": d.pop("format_version")}
        ordered.update(d)
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        """Parse a plan written by `to_json`; InputError (one line naming `source`) when it is
        not one: not JSON, another format version, a missing, unexpected or mistyped field."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"not a plan: invalid JSON ({exc.msg})", file=source, line=exc.lineno
            ) from None
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting 10^5 deep
            raise InputError(
                f"not a plan: JSON this tool does not read ({type(exc).__name__})", file=source
            ) from None
        if not isinstance(d, dict):
            raise InputError("not a plan: expected a JSON object", file=source)
        version = d.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise InputError(
                f"plan format_version {_short(version)} is not supported (this tool "
                f"reads {FORMAT_VERSION})",
                file=source,
                field="format_version",
            )
        _check_shape(d, PLAN_SHAPE, "", source)
        phases = []
        for p in d["phases"]:
            p = dict(p)
            steps = [Step(**s) for s in p.pop("steps")]
            excluded = [Excluded(**x) for x in p.pop("excluded")]
            phases.append(PlanPhase(steps=steps, excluded=excluded, **p))
        fields = {k: v for k, v in d.items() if k not in ("hosts", "phases", "format_version")}
        return cls(**fields, hosts=[PlanHost(**h) for h in d["hosts"]], phases=phases)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        p = Path(path)
        return cls.from_json(read_plan_text(p), source=str(p))

    # ---- questions renderers and the engine ask ---------------------------------------------
    def phase(self, name: str) -> PlanPhase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    def host(self, name: str) -> PlanHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# digests


def inventory_digest(fleet: Fleet) -> str:
    return sha256_json(fleet.normalized)


def facts_digest(facts: dict[str, dict] | None, pfx_sha256: str | None) -> str | None:
    """Digest of what the controller learned before planning, without volatile fields."""
    if facts is None and pfx_sha256 is None:
        return None
    stable = {
        name: {k: v for k, v in (f or {}).items() if k not in VOLATILE_FACTS}
        for name, f in (facts or {}).items()
    }
    return sha256_json({"facts": stable, "pfx_sha256": pfx_sha256})


def digest_body(plan: dict[str, Any]) -> dict[str, Any]:
    """What the plan digest covers and an approved plan is compared on: the plan's JSON
    without its own digest and without presentation: the inventory's and the PFX's paths on
    this machine, and whether the PFX file exists here yet (the certificate step's skip: the
    controller's state, which the run's first step changes; the engine never makes a second
    certificate either way). A rotation's body names the new pair's fingerprint whenever its
    PFX could be opened (facts or not): an approved rotation installs that pair and no other."""
    body = copy.deepcopy(plan)
    body.pop("digest", None)
    validity = body.pop("validity", None)
    new = validity.get("new") if isinstance(validity, dict) else None
    if body.get("rotation") and isinstance(new, dict) and new.get("sha256"):
        body["new_pair_sha256"] = new["sha256"]
    for key in ("inventory", "certificate"):
        if isinstance(body.get(key), dict):
            body[key].pop("path", None)
    for phase in body.get("phases") or []:
        for step in phase.get("steps") or []:
            if step.get("host") == CONTROLLER and step.get("action") == "certificate":
                step["skip_reason"] = None
    return body


def plan_digest(plan: dict[str, Any]) -> str:
    """The digest of a plan's JSON form (`digest_body`): the tool version, the inventory,
    playbook and facts digests, and every host, phase, strategy, step, gate and opt-in."""
    return sha256_json(digest_body(plan))


_MISSING = object()


def first_difference(approved: Any, rebuilt: Any, where: str = "") -> str | None:
    """The first place two plan bodies differ, as `phases[6].strategy: approved 'parallel',
    rebuilt 'rolling'` (both values shortened); None when they are equal."""
    if isinstance(approved, dict) and isinstance(rebuilt, dict):
        for key in [*rebuilt, *(k for k in approved if k not in rebuilt)]:
            sub = f"{where}.{key}" if where else str(key)
            found = first_difference(approved.get(key, _MISSING), rebuilt.get(key, _MISSING), sub)
            if found:
                return found
        return None
    if isinstance(approved, list) and isinstance(rebuilt, list):
        for i, (a, b) in enumerate(zip(approved, rebuilt, strict=False)):
            found = first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        if len(approved) != len(rebuilt):
            return (
                f"{where}: approved {len(approved)} entries, rebuilt {len(rebuilt)}"
                f" (first extra: {where}[{min(len(approved), len(rebuilt))}])"
            )
        return None
    if approved == rebuilt and type(approved) is type(rebuilt):
        return None
    return f"{where}: approved {_short(approved)}, rebuilt {_short(rebuilt)}"


def _short(value: Any, limit: int = 48) -> str:
    """A value for a one-line message: repr (so control characters show), cut to `limit`."""
    text = "(absent)" if value is _MISSING else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# reading plan files


def read_plan_text(path: Path) -> str:
    """A plan file's text: a regular file of at most PLAN_MAX_BYTES in UTF-8, else InputError
    naming the file (safeio: a FIFO or a device is refused, not waited on)."""
    from tealeaf_fleet.safeio import decode_utf8, read_regular_file

    return decode_utf8(read_regular_file(path, PLAN_MAX_BYTES, "plan"), path, "plan")


_TEXT_OR_NULL = (str, type(None))
# The JSON shape of a plan, field by field: a dict is an object with exactly these keys, a
# one-item list a list of that shape, a type (or tuple of types) a value of that type.
PLAN_SHAPE: dict[str, Any] = {
    "format_version": int,
    "tool_version": str,
    "playbook": {"name": str, "digest": str},
    "inventory": {"path": str, "digest": str},
    "facts_digest": _TEXT_OR_NULL,
    "digest": str,
    "expect_tls": bool,
    "description": str,
    "certificate": {"source": str, "path": str},
    "pfx_sha256": _TEXT_OR_NULL,
    "hosts": [
        {"name": str, "role": str, "address": str, "contacted": bool, "reason": _TEXT_OR_NULL}
    ],
    "phases": [
        {
            "name": str,
            "op": str,
            "strategy": str,
            "batch": int,
            "gates": [str],
            "roles": [str],
            "steps": [
                {
                    "host": str,
                    "action": str,
                    "description": str,
                    "impact": str,
                    "skip_reason": _TEXT_OR_NULL,
                }
            ],
            "excluded": [{"host": str, "reason": str}],
            "compensate": _TEXT_OR_NULL,
            "on_failure": str,
        }
    ],
    "opt_ins": [{"key": str, "allows": str, "phases": [str]}],
    "preflight": {
        "checked": bool,
        "blocked": bool,
        "findings": [{"severity": str, "code": str, "message": str, "hosts": [str]}],
    },
    "prechecks": [
        {
            "host": str,
            "known": bool,
            "needed": [str],
            "reboot": bool,
            "reboot_pending": _TEXT_OR_NULL,
            "written": [str],
        }
    ],
    "rotation": bool,
    "validity": (dict, type(None)),
    "pca_handoff": [
        {
            "host": str,
            "build": _TEXT_OR_NULL,
            "pipeline_ready": (bool, type(None)),
            "step": str,
        }
    ],
}
_KINDS = {
    str: "text",
    int: "a whole number",
    bool: "true or false",
    type(None): "null",
    dict: "an object",
}


def _check_shape(value: Any, shape: Any, where: str, source: str) -> None:
    """InputError at the first place `value` does not have `shape` (see PLAN_SHAPE)."""

    def bad(problem: str) -> InputError:
        return InputError(f"not a plan: {where or 'top level'}: {problem}", file=source)

    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise bad(f"expected an object, got {_json_kind(value)}")
        for key in shape:
            if key not in value:
                raise bad(f"missing field '{key}'")
        for key in value:
            if key not in shape:
                raise bad(f"unexpected field {_short(key)}")
        for key, sub in shape.items():
            _check_shape(value[key], sub, f"{where}.{key}" if where else key, source)
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise bad(f"expected a list, got {_json_kind(value)}")
        for i, item in enumerate(value):
            _check_shape(item, shape[0], f"{where}[{i}]", source)
    else:
        types = shape if isinstance(shape, tuple) else (shape,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise bad(f"expected {' or '.join(_KINDS[t] for t in types)}, got {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


# --------------------------------------------------------------------------------------------
# the planner


def build_plan(
    playbook: Playbook,
    fleet: Fleet,
    facts: dict[str, dict] | None = None,
    pfx_sha256: str | None = None,
    *,
    tool_version: str = __version__,
    new_certificate: dict[str, str] | None = None,
    reboot_records: dict[str, list[dict]] | None = None,
    unread: dict[str, str] | None = None,
    tls12_probes: dict[str, Any] | None = None,
) -> Plan:
    """Compile the change. Pure: reads only the local PFX path's existence. `new_certificate`
    ({sha256, not_before, not_after} of the inventory's PFX, when the caller could open it)
    goes into the plan's `validity`, beside what the facts show installed.

    With facts, the plan also carries the preflight judgement the run would make
    (`judge_preflight`: blocked when any host has a blocker) and the prerequisites still
    missing per host; `reboot_records` are the journal's (`Journal.reboot_records`), `unread`
    the hosts whose facts could not be read, with why (a blocker, as in the run),
    `tls12_probes` the TLS 1.2-only handshakes to 2008 R2 TMS ports
    (`ops.checks.tls12_findings`)."""
    if pfx_sha256 is not None:
        pfx_sha256 = pfx_sha256.replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", pfx_sha256):
            raise InputError("PFX fingerprint must be 64 hex digits (SHA-256)", field="pfx_sha256")
    ctx = _PlanContext(playbook, fleet, facts or {}, pfx_sha256, reboot_records or {})
    phases = [ctx.phase(p, i) for i, p in enumerate(playbook.phases)]
    hosts = [_plan_host(h) for h in fleet.hosts.values()]
    plan = Plan(
        tool_version=tool_version,
        playbook={"name": playbook.name, "digest": playbook.digest},
        inventory={"path": str(fleet.path), "digest": inventory_digest(fleet)},
        facts_digest=facts_digest(facts, pfx_sha256),
        digest="",
        expect_tls=playbook.expect_tls,
        description=playbook.description,
        certificate={"source": fleet.certificate.source, "path": str(fleet.certificate.path)},
        pfx_sha256=pfx_sha256,
        hosts=hosts,
        phases=phases,
        opt_ins=[
            {"key": key, "allows": OPT_INS[key], "phases": list(playbook.opt_ins[key])}
            for key in OPT_INS
            if key in playbook.opt_ins
        ],
        rotation=playbook.rotation,
        validity=validity_table(new_certificate, facts),
        pca_handoff=pca_handoff(playbook, fleet),
    )
    if facts is not None:
        plan.preflight = judge_preflight(
            playbook,
            fleet,
            facts,
            pfx_sha256,
            reboot_records or {},
            unread or {},
            tls12_probes or {},
        )
        plan.prechecks = precheck_rows(fleet, facts, reboot_records or {})
    plan.digest = plan_digest(plan.to_dict())
    return plan


def judge_preflight(
    playbook: Playbook,
    fleet: Fleet,
    facts: dict[str, dict],
    pfx_sha256: str | None,
    reboot_records: dict[str, list[dict]],
    unread: dict[str, str],
    tls12_probes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's preflight verdict, made now: every finding of `ops.checks.preflight_blockers`
    for every host a preflight phase of the playbook checks, each with its own full text (a
    2008 R2 Portal's finding differs from a 2016 Canister's). A host whose facts could not be
    read blocks, as it would at the run's preflight."""
    from tealeaf_fleet.ops.checks import BLOCKER, Finding, preflight_blockers
    from tealeaf_fleet.prerequisites import runs_status_report

    roles = {r for p in playbook.phases if p.op == "preflight" for r in p.roles}
    writes = any(p.op == "prerequisites" for p in playbook.phases)
    findings: list[Finding] = []
    for host in fleet.hosts.values():
        if host.role not in roles:
            continue
        if host.name in unread:
            findings.append(
                Finding(
                    BLOCKER,
                    "facts_unreadable",
                    f"cannot read facts: {unread[host.name]}",
                    (host.name,),
                )
            )
            continue
        f = facts.get(host.name)
        if f is None:
            continue
        findings.extend(
            preflight_blockers(
                host,
                f,
                pfx_sha256=pfx_sha256,
                expect_tls=playbook.expect_tls,
                rotation=playbook.rotation,
                reboot_records=reboot_records.get(host.name, ()),
                status_report=runs_status_report(fleet, host),
                tls12_probe=(tls12_probes or {}).get(host.name),
                writes_prerequisites=writes,
            )
        )
    return {
        "checked": True,
        "blocked": any(x.severity == BLOCKER for x in findings),
        "findings": [x.to_dict() for x in findings],
    }


def precheck_rows(
    fleet: Fleet, facts: dict[str, dict], reboot_records: dict[str, list[dict]]
) -> list[dict[str, Any]]:
    """Per Tealeaf server, what the `prerequisites` playbook would still write there (or
    `known: false` when its facts were not read) and whether a reboot of its is pending."""
    from tealeaf_fleet.ops.checks import pending_reboot_since
    from tealeaf_fleet.prerequisites import needed_writes, reboot_areas

    rows = []
    for host in fleet.hosts.values():
        if not host.manages_tls:
            continue
        f = facts.get(host.name)
        if f is None:
            rows.append(
                {
                    "host": host.name,
                    "known": False,
                    "needed": [],
                    "reboot": False,
                    "reboot_pending": None,
                    "written": [],
                }
            )
            continue
        writes = needed_writes(fleet, host, f)
        pending = pending_reboot_since(f, reboot_records.get(host.name, ()))
        rows.append(
            {
                "host": host.name,
                "known": True,
                "needed": [w.shown() for w in writes],
                "reboot": bool(reboot_areas(writes)),
                "reboot_pending": (
                    f"since {pending[0]} ({', '.join(pending[1])})" if pending else None
                ),
                # what earlier prerequisites runs wrote that needed a boot (the journal)
                "written": [
                    f"run {r.get('run')} at {r.get('since')}: "
                    + ("rebooted" if r.get("rebooted") else ", ".join(r.get("areas") or []))
                    for r in reboot_records.get(host.name, ())
                ],
            }
        )
    return rows


def validity_table(
    new: dict[str, str] | None, facts: dict[str, dict] | None
) -> dict[str, Any] | None:
    """The new pair and each installed pair (from facts: `security.cert_sha256` and
    `cert_not_after`, grouped by fingerprint), for the plan to show side by side."""
    installed: dict[str, dict[str, Any]] = {}
    for name, f in (facts or {}).items():
        sec = (f or {}).get("security") or {}
        sha = sec.get("cert_sha256")
        if not sha:
            continue
        row = installed.setdefault(
            sha,
            {
                "sha256": sha,
                # UTC, as the new pair's validity beside it (host-local from an older facts)
                "not_after": sec.get("cert_not_after_utc") or sec.get("cert_not_after"),
                "hosts": [],
            },
        )
        row["hosts"].append(name)
    if new is None and not installed:
        return None
    return {"new": new, "installed": list(installed.values())}


def at_a_time(batch: int) -> str:
    """How a rolling phase restarts, in the words the plan, its table and its ticket share."""
    return "one at a time" if batch == 1 else f"{batch} at a time"


def pca_pipeline_ready(build: str | None) -> bool | None:
    """Whether a declared PCA build can secure the pipeline with the same pair (3682-24 or
    later); None when no build is declared or it does not read as NNNN-NN."""
    m = re.match(r"^(\d+)-(\d+)", build or "")
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2))) >= PCA_PIPELINE_BUILD


def export_command(fleet: Fleet) -> str:
    """`fleet cert export PFX --pem` with the inventory's password source, paths as the
    normalized inventory writes them (relative to its folder where they lie under it), so the
    plan digest stays the same on any machine. Never a password, only where it is read from."""
    cert = fleet.normalized.get("certificate") or {}
    path = cert.get("path")
    if not isinstance(path, str):  # an archived pair: its file in the state folder
        where = Path(fleet.certificate.path)
        base = Path(fleet.path).parent
        path = str(where.relative_to(base)) if where.is_relative_to(base) else str(where)
    text = f"fleet cert export {shlex.quote(path)} --pem"
    if cert.get("password_env"):
        text += f" --password-env {cert['password_env']}"
    elif cert.get("password_file"):
        text += f" --password-file {shlex.quote(str(cert['password_file']))}"
    return text


def pca_handoff(playbook: Playbook, fleet: Fleet) -> list[dict[str, Any]]:
    """The hand-off step for each PCA, in plans that install a pair (an import phase): the
    tool never reaches the PCA, so its administrator gets the pair to install it there."""
    if not any(p.op == "import" for p in playbook.phases):
        return []
    need = f"{PCA_PIPELINE_BUILD[0]}-{PCA_PIPELINE_BUILD[1]}"
    out = []
    for host in fleet.hosts.values():
        if host.role != "pca":
            continue
        ready = pca_pipeline_ready(host.pca_build)
        if ready is None:
            build = (
                f"declared build {host.pca_build!r} does not read as NNNN-NN"
                if host.pca_build
                else "no build declared (hosts.NAME.pca_build)"
            )
            verdict = f"{build}: check it is {need} or later before securing the pipeline"
        elif ready:
            verdict = f"declared build {host.pca_build} meets the {need} minimum"
        else:
            verdict = (
                f"declared build {host.pca_build} is older than {need}: upgrade the PCA "
                "before securing the pipeline"
            )
        out.append(
            {
                "host": host.name,
                "build": host.pca_build,
                "pipeline_ready": ready,
                "step": (
                    "outside this tool's reach (never contacted over WinRM): after the "
                    f"change, export the same pair with `{export_command(fleet)}` (from the "
                    "inventory's folder) and hand certificate and key to the PCA "
                    f"administrator, who installs them for pipeline encryption; {verdict}"
                ),
            }
        )
    return out


def _pca_reason(host: Host) -> str:
    reason = PCA_REASON
    if host.pca_build:
        ok = bool(pca_pipeline_ready(host.pca_build))
        need = f"{PCA_PIPELINE_BUILD[0]}-{PCA_PIPELINE_BUILD[1]}"
        if ok:
            reason += (
                f"; pipeline encryption (a separate change) can use the same PFX: "
                f"PCA build {host.pca_build} meets the {need} minimum"
            )
        else:
            reason += (
                f"; securing the pipeline (a separate change) needs PCA build {need} or "
                f"later, this one is {host.pca_build}"
            )
    return reason


def _plan_host(host: Host) -> PlanHost:
    if host.role == "pca":
        return PlanHost(host.name, host.role, host.address, False, _pca_reason(host))
    if host.role == "rtv":
        return PlanHost(host.name, host.role, host.address, True, RTV_REASON)
    return PlanHost(host.name, host.role, host.address, True, None)


class _PlanContext:
    """Per-plan state: which ops already listed their exclusions (each once per op), and which
    hosts have a change (import / enable / disable) planned before their restart."""

    def __init__(
        self,
        playbook: Playbook,
        fleet: Fleet,
        facts: dict[str, dict],
        pfx_sha256: str | None,
        reboot_records: dict[str, list[dict]],
    ) -> None:
        self.playbook = playbook
        self.fleet = fleet
        self.facts = facts
        self.pfx = pfx_sha256
        self.reboot_records = reboot_records
        self.reboot_planned: set[str] = set()  # hosts whose prerequisites step needs a reboot
        self.excluded_for_op: set[str] = set()
        self.changing: set[str] = set()  # hosts where a CHANGING_OPS step will run
        # every role some phase of each op covers: a host left out of `restart_hbr` is not
        # "excluded" from restarts when `restart_rest` takes it
        self.roles_by_op: dict[str, set[str]] = {}
        for p in playbook.phases:
            self.roles_by_op.setdefault(p.op, set()).update(p.roles)

    def install_dir(self, host: Host) -> str:
        f = self.facts.get(host.name) or {}
        return (
            host.install_dir
            or self.fleet.install_dir
            or f.get("install_dir")
            or "<install dir, discovered>"
        )

    def phase(self, phase: Phase, index: int) -> PlanPhase:
        out = PlanPhase(
            name=phase.name,
            op=phase.op,
            strategy=phase.strategy,
            batch=phase.batch,
            gates=list(phase.gates),
            roles=list(phase.roles),
            compensate=phase.compensate,
            on_failure=phase.on_failure,
        )
        if phase.op == "certificate":
            out.steps.append(self.certificate_step())
            return out
        for host in self.fleet.hosts.values():
            if host.role in phase.roles:
                out.steps.append(self.step(phase, host))
        if phase.op not in self.excluded_for_op:
            self.excluded_for_op.add(phase.op)
            covered = self.roles_by_op.get(phase.op, set())
            for host in self.fleet.hosts.values():
                if host.role in covered:
                    continue
                if host.role == "pca":
                    out.excluded.append(Excluded(host.name, _pca_reason(host)))
                elif host.role == "rtv":
                    out.excluded.append(Excluded(host.name, RTV_REASON))
                elif phase.op == "push_tools":
                    out.excluded.append(
                        Excluded(
                            host.name, "a Tealeaf server already has TLSTool.exe and openssl.exe"
                        )
                    )
                else:
                    out.excluded.append(
                        Excluded(
                            host.name,
                            f"role {host.role} is not part of this playbook's {phase.op} phases",
                        )
                    )
        return out

    # ---- one step per op ----------------------------------------------------------------
    def certificate_step(self) -> Step:
        c = self.fleet.certificate
        if c.source == "generate":
            desc = (
                f"generate one self-signed certificate pair (CN=IBM Tealeaf CX, TLS 1.2 "
                f"client and server) into {c.path.name}, once for the whole fleet"
            )
        elif c.source == "file":
            desc = (
                f"check the supplied {c.path.name} against Tealeaf's requirements (subject "
                "IBM Tealeaf CX, key included, ASCII password)"
            )
        else:
            first = next((h for h in self.fleet.hosts.values() if h.manages_tls), None)
            where = first.name if first else "the first Tealeaf server"
            desc = (
                f"run TLSTool.exe create -site {c.path.name} on {where} and fetch the PFX "
                "to the controller"
            )
        skip = None
        if c.source != "file" and c.path.is_file():
            skip = (
                f"nothing to do: {c.path.name} already exists and is reused (a fleet has "
                "one certificate; it is never generated twice)"
            )
        return Step(CONTROLLER, "certificate", desc, "none (runs on the controller)", skip)

    def step(self, phase: Phase, host: Host) -> Step:
        step = self.describe(phase, host)
        step.skip_reason = self.skip_reason(phase.op, host)
        if step.skip_reason is None and phase.op in CHANGING_OPS:
            self.changing.add(host.name)
        return step

    def skip_reason(self, op: str, host: Host) -> str | None:
        """`checks.step_status` over the host's facts; no facts (not gathered, or the host could
        not be read) means nothing is known to be done. A restart stays planned after a change
        this plan makes on the host, as the engine restarts after its own changes."""
        f = self.facts.get(host.name)
        if f is None:
            return None
        if op in ("prerequisites", "reboot"):
            return self.prerequisite_skip(op, host, f)
        verdict = step_status(host, f, op, pfx_sha256=self.pfx, expect_tls=self.playbook.expect_tls)
        if not verdict.done:
            return None
        if op == "restart" and host.name in self.changing:
            return None
        return f"nothing to do: {verdict.reason}"

    def prerequisite_skip(self, op: str, host: Host, f: dict) -> str | None:
        """The prerequisites step: skipped when nothing is missing; the reboot step: skipped
        when that step changes nothing needing a boot and no earlier change waits for one."""
        from tealeaf_fleet.ops.checks import pending_reboot_since
        from tealeaf_fleet.prerequisites import needed_writes, reboot_areas

        if op == "prerequisites":
            writes = needed_writes(self.fleet, host, f)
            if reboot_areas(writes):
                self.reboot_planned.add(host.name)
            return None if writes else "nothing to do: every prerequisite value is in place"
        pending = pending_reboot_since(f, self.reboot_records.get(host.name, ()))
        if host.name in self.reboot_planned or pending is not None:
            if not self.fleet.prerequisites.reboot:
                return (
                    "reboot left pending (prerequisites.reboot: false): reboot it yourself, "
                    "HBRs and Canisters one at a time"
                )
            return None
        return "nothing to do: no change of this tool waits for a reboot here"

    def describe(self, phase: Phase, host: Host) -> Step:
        """The step as the change board reads it (no skip: `skip_reason` decides that)."""
        op = phase.op
        f = self.facts.get(host.name)
        pfx = self.fleet.certificate.path.name
        tools = f"{self.install_dir(host)}\\Tools"
        if op == "preflight":
            return Step(
                host.name,
                op,
                "read-only checks: WinRM login, OS and PowerShell, "
                "install folder and TLSTool.exe, build >= 9.0.2.1351, EnableTLS, "
                "Data Service port (not 23443), TLS 1.2 server keys, TeaLeaf services",
                "none (read-only)",
            )
        if op == "facts":
            return Step(
                host.name,
                op,
                "read EnableTLS, certificate files and fingerprint, "
                "services, Data Service mode, TLS handshake",
                "none (read-only)",
            )
        if op == "push_pfx":
            return Step(
                host.name,
                op,
                f"copy {pfx} to {tools}\\{pfx} and check its file hash "
                "there (skipped where identical)",
                "none (file copy)",
            )
        if op == "push_tools":
            return Step(
                host.name,
                op,
                f"copy TLSTool.exe and openssl.exe (from a Tealeaf "
                f"server of the same build) to {tools}",
                "none (file copy)",
            )
        if op == "import":
            return Step(
                host.name,
                op,
                f"TLSTool.exe import {pfx} <password> in {tools}: "
                "writes tealeaf.crt and tealeaf.p12 under "
                "C:\\ProgramData\\IBM\\Tealeaf\\security; checks their fingerprint",
                _IMPORT_IMPACT_ROTATION
                if self.playbook.rotation
                else "none on running services (used after enable and restart)",
            )
        if op == "enable":
            return Step(
                host.name,
                op,
                "TLSTool.exe enable: EnableTLS=1, writes server.tls.xml",
                "none until the restart; if any host fails, "
                f"'{phase.compensate or 'disable'}' undoes it everywhere",
            )
        if op == "disable":
            return Step(
                host.name,
                op,
                "TLSTool.exe disable: EnableTLS=0 (certificates stay)",
                "none until the restart",
            )
        if op == "restart":
            return self.restart_step(phase, host, f)
        if op == "reboot":
            return self.restart_step(phase, host, f)
        if op == "prerequisites":
            return self.prerequisites_step(host, f)
        if op == "verify":
            mode = "TLS Port:" if self.playbook.expect_tls else "Port:"
            want = 1 if self.playbook.expect_tls else 0
            desc = (
                f"check EnableTLS={want}, the Data Service log shows '{mode} "
                f"{host.data_service_port}'"
            )
            if host.role == "rtv":
                desc = "check tealeaf.crt and tealeaf.p12 carry the fleet's certificate"
            elif self.playbook.expect_tls:
                search = f", {host.search_port} (Search Server)" if host.role == "canister" else ""
                desc += (
                    f", TLS handshakes on ports {host.data_service_port} (Data Service)"
                    f"{search} and {host.tms_port} (TMS) show the fleet's certificate"
                )
            if host.role == "portal":
                desc += "; run TealeafStatus -verbose where installed (a failure warns)"
            return Step(host.name, op, desc, "none (read-only)")
        raise AssertionError(f"op {op} has no planner")  # the playbook loader closes the list

    def prerequisites_step(self, host: Host, f: dict | None) -> Step:
        from tealeaf_fleet.prerequisites import needed_writes, runs_status_report

        if f is not None:
            writes = needed_writes(self.fleet, host, f)
            listed = "; ".join(w.shown() for w in writes) or "nothing missing"
            desc = f"write, typed, and read back: {listed}"
        else:
            parts = []
            if host.role == "hbr":
                parts.append("TLSCertPassword placeholder if absent")
            if runs_status_report(self.fleet, host):
                parts.append(
                    ".NET SchUseStrongCrypto/SystemDefaultTlsVersions and WinHTTP "
                    f"DefaultSecureProtocols (0x{self.fleet.prerequisites.winhttp_protocols:X}) "
                    "in both registry views"
                )
            parts.append("SCHANNEL TLS 1.2 Server/Client and SendTrustedIssuerList on 2008 R2")
            parts.append("EnableTLS 0 where it is 1 without a certificate pair")
            desc = "write what is missing, typed, each read back: " + "; ".join(parts)
        return Step(
            host.name,
            "prerequisites",
            desc,
            "none until the reboot (registry values only)",
        )

    def restart_step(self, phase: Phase, host: Host, f: dict | None) -> Step:
        expect = self.playbook.expect_tls
        mode = "TLS" if expect else "plain"
        if phase.op == "reboot":
            what = (
                "reboot the server if a change of this tool waits for a boot, and wait for it "
                "(the Data Service comes back in the mode EnableTLS gives)"
            )
            mode = "expected (TLS or plain, as EnableTLS says)"
        elif self.fleet.rollout.restart == "reboot":
            what = "reboot the server and wait for it"
        else:
            running = None
            if f is not None:
                running = [
                    s["name"] for s in f.get("services") or [] if s.get("state") == "Running"
                ]
            names = ", ".join(running) if running else "the TeaLeaf* services that are running"
            what = f"restart {names} (stopped ones stay stopped), iisreset where IIS runs"
        gates = []
        for g in phase.gates:
            if g == "services":
                gates.append("services running again")
            elif g == "iis":
                gates.append("IIS running")
            elif g == "data_service_log" and phase.op == "reboot":
                gates.append("a Data Service startup block written after the boot")
            elif g == "data_service_log":
                gates.append(
                    f"Data Service log shows '{'TLS Port' if expect else 'Port'}: "
                    f"{host.data_service_port}'"
                )
            elif g == "handshake":
                if self.fleet.rollout.verify_handshake:
                    gates.append(
                        f"{mode} handshake on ports {host.data_service_port} and "
                        f"{host.tms_port}"
                        + (
                            " with the fleet's certificate"
                            if expect and phase.op != "reboot"
                            else ""
                        )
                    )
            elif g == "soak":
                gates.append(f"soak {self.fleet.rollout.soak_s}s, recheck")
        desc = what + (f"; gates: {'; '.join(gates)}" if gates else "")
        impact = _IMPACT.get(host.role, _IMPACT["other"])
        if phase.op == "reboot":
            impact = impact.replace("restart", "reboot").replace("iisreset", "the reboot")
        if phase.strategy == "rolling":
            impact += f" ({at_a_time(phase.batch)})"
        return Step(host.name, phase.op, desc, impact)
