"""Playbooks: the ordered phases of a change, as data (docs/architecture.md, "Playbooks and
plans").

Why data and not code: a change board reads and approves the playbook; the planner and the
engine only interpret it. The vocabulary is closed (ops, strategies, gates), and anything
outside it is an `InputError` naming file:line:field, so a typo cannot turn into a step that
silently does nothing. The safety rules of the vendor procedure (enable all or nothing, HBRs
and Canisters restarted one at a time behind every health gate, a preflight before any change,
TLS checks after an enable) hold for custom playbooks too: a playbook that breaks one is
refused unless it says so with that rule's opt-in key (`OPT_INS`), and every plan shows the
opt-ins it relies on. The packaged playbooks live in the repo's top-level `playbooks/` and are
force-included into the wheel as `tealeaf_fleet/playbooks`; `builtin_dir()` finds either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import ROLES, TLS_ROLES, WINDOWS_ROLES, _compose, _Ctx, _Map
from tealeaf_fleet.safeio import file_problem

OPS = (
    "preflight",
    "certificate",
    "push_pfx",
    "push_tools",
    "import",
    "enable",
    "disable",
    "restart",
    "verify",
    "facts",
)
STRATEGIES = ("controller", "parallel", "rolling", "all_or_nothing")
GATES = ("services", "iis", "data_service_log", "handshake", "soak")
ON_FAILURE = ("halt",)
COMPENSATE = {"enable": "disable", "disable": "enable"}  # op -> the op that undoes it
# Ops that change what a running Tealeaf server does: never on RTV (import only) or PCA.
TLS_ONLY_OPS = ("enable", "disable", "restart")
# Restarting two of these at once loses captured data (vendor procedure, "Minimize disruption").
SERIAL_RESTART_ROLES = ("hbr", "canister")

# Ops that change a host (or, for `certificate` with source tlstool, run on one): a preflight
# must have checked every role they touch first.
CHANGING_OPS = ("certificate", "push_pfx", "push_tools", "import", "enable", "disable", "restart")
# The gates an HBR or Canister restart needs before the next one starts (all of them: `iis` is
# a no-op where IIS does not run, `soak` where `rollout.soak_s` is 0).
HEALTH_GATES = GATES
# Opt-in keys: each lets a playbook break one safety rule, knowingly. Key -> what it allows, in
# the words the plan shows in red.
OPT_INS = {
    "allow_parallel_restart": "several HBRs or Canisters restart at once (captured data can be "
    "lost)",
    "allow_partial_enable": "TLS enabled otherwise than by one all_or_nothing phase over every "
    "server role (TLS can end up on some servers only)",
    "allow_ungated_restart": "HBRs or Canisters restart without every health gate (the next one "
    "can restart while this one is unhealthy)",
    "allow_no_preflight": "hosts change without a preflight of their role first (a blocked host "
    "can be changed)",
    "allow_enable_without_tls_checks": "TLS is enabled by a playbook with expect_tls: false (its "
    "gates and checks expect plain connections)",
}

PLAYBOOK_KEYS = ("name", "description", "expect_tls", "rotation", *OPT_INS, "phases")
# Ops a rotation (`rotation: true`) never runs: it replaces the certificate under a TLS that
# stays on, so neither switching TLS on nor off belongs in it.
ROTATION_REFUSED_OPS = ("enable", "disable")
PHASE_KEYS = ("name", "op", "roles", "strategy", "batch", "gates", "on_failure", "compensate")
DEFAULT_ROLES = {
    "preflight": WINDOWS_ROLES,
    "certificate": (),
    "push_pfx": WINDOWS_ROLES,
    "push_tools": ("rtv",),
    "import": WINDOWS_ROLES,
    "enable": TLS_ROLES,
    "disable": TLS_ROLES,
    "restart": TLS_ROLES,
    "verify": WINDOWS_ROLES,
    "facts": WINDOWS_ROLES,
}


@dataclass(frozen=True)
class Phase:
    name: str
    op: str
    roles: tuple[str, ...]
    strategy: str
    batch: int = 1
    gates: tuple[str, ...] = ()
    on_failure: str = "halt"
    compensate: str | None = None
    line: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "roles": list(self.roles),
            "strategy": self.strategy,
            "batch": self.batch,
            "gates": list(self.gates),
            "on_failure": self.on_failure,
            "compensate": self.compensate,
        }


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    expect_tls: bool
    allow_parallel_restart: bool
    phases: tuple[Phase, ...]
    source: str  # "builtin:rollout" or the file path, for messages only (not in the digest)
    # opt-in key set to true -> the phases that rely on it (empty: set but not needed)
    opt_ins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # a certificate rotation: TLS is on everywhere before and after, a new pair replaces the
    # installed one (preflight refuses a fleet with TLS off, or the same pair; docs/rotation.md)
    rotation: bool = False

    @property
    def normalized(self) -> dict[str, Any]:
        """Effective content (defaults filled in): what the digest covers."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "expect_tls": self.expect_tls,
            "allow_parallel_restart": self.allow_parallel_restart,
        }
        out.update({key: key in self.opt_ins for key in OPT_INS if key != "allow_parallel_restart"})
        if self.rotation:  # only when set: the digests of the other playbooks stay as they were
            out["rotation"] = True
        out["phases"] = [p.as_dict() for p in self.phases]
        return out

    @property
    def digest(self) -> str:
        return sha256_json(self.normalized)


def sha256_json(data: Any) -> str:
    """SHA-256 of canonical JSON (sorted keys, no spaces): the one digest recipe of the tool."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def builtin_dir() -> Path:
    """The packaged playbooks: inside the installed wheel, else the repo's `playbooks/`."""
    try:
        packaged = resources.files("tealeaf_fleet") / "playbooks"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parents[2] / "playbooks"


def builtin_names() -> list[str]:
    """Names accepted by `--playbook NAME`."""
    d = builtin_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_playbook(name_or_file: str | Path) -> Playbook:
    """Load a packaged playbook by name (`rollout`) or any playbook file by path."""
    text = str(name_or_file)
    looks_like_file = (
        isinstance(name_or_file, Path)
        or "/" in text
        or "\\" in text
        or text.endswith((".yaml", ".yml"))
    )
    if not looks_like_file:
        path = builtin_dir() / f"{text}.yaml"
        if not path.is_file():
            names = ", ".join(builtin_names()) or "none found"
            raise InputError(
                f"no packaged playbook '{text}' (packaged: {names})",
                field="--playbook",
                hint="or give a playbook file path",
            )
        return _load(path, f"builtin:{text}")
    path = Path(text)
    problem = file_problem(path)
    if problem is not None:
        raise InputError(f"playbook file {path} {problem}", field="--playbook")
    return _load(path, str(path))


def _load(path: Path, source: str) -> Playbook:
    from tealeaf_fleet.inventory import read_yaml_text  # bounded, regular files only

    text = read_yaml_text(path, "playbook")
    ctx = _Ctx(path)
    doc = _compose(text, path)
    if doc is None:
        raise ctx.error("the playbook is empty", 1, "phases")
    top = ctx.mapping(doc, "", 1, PLAYBOOK_KEYS)
    name = ctx.string(top, "name", "name", required=True)
    description = ctx.string(top, "description", "description", default="") or ""
    if "expect_tls" not in top:
        raise ctx.error(
            "'expect_tls' is required (true: the change ends with TLS on; false: with TLS off)",
            top.line,
            "expect_tls",
        )
    expect_tls = ctx.boolean(top, "expect_tls", "expect_tls", True)
    rotation = bool(ctx.boolean(top, "rotation", "rotation", False))
    if rotation and not expect_tls:
        raise ctx.error(
            "a rotation keeps TLS on: it needs expect_tls: true",
            top.key_line("expect_tls"),
            "expect_tls",
        )
    allowed = {key for key in OPT_INS if ctx.boolean(top, key, key, False)}
    allow_parallel = "allow_parallel_restart" in allowed
    raw_phases = top.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise ctx.error("expected a non-empty list of phases", top.key_line("phases"), "phases")
    phases: list[Phase] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_phases):
        fld = f"phases[{i}]"
        if not isinstance(raw, _Map):
            raise ctx.error(
                "expected a mapping {name, op, roles, strategy, ...}", top.key_line("phases"), fld
            )
        phase = _phase(ctx, raw, fld, allow_parallel)
        if phase.name in seen:
            raise ctx.error(
                f"duplicate phase name '{phase.name}' (first at line {seen[phase.name]})",
                raw.key_line("name"),
                f"{fld}.name",
            )
        seen[phase.name] = raw.key_line("name")
        if rotation and phase.op in ROTATION_REFUSED_OPS:
            raise ctx.error(
                f"a rotation keeps TLS on: no {phase.op} phase (use the rollout or rollback "
                "playbook to switch TLS)",
                raw.key_line("op"),
                f"{fld}.op",
            )
        phases.append(phase)
    uses: dict[str, list[str]] = {key: [] for key in sorted(allowed)}
    for rule in _broken_rules(phases, raw_phases, expect_tls, top):
        if rule.key not in allowed:
            raise ctx.error(
                rule.message,
                rule.line,
                rule.field,
                f"keep the rule, or set {rule.key}: true at the top of the playbook to "
                "accept the risk; the plan then shows it in red",
            )
        uses[rule.key].append(rule.phase)
    return Playbook(
        name=name or path.stem,
        description=description,
        expect_tls=expect_tls,
        allow_parallel_restart=allow_parallel,
        phases=tuple(phases),
        source=source,
        opt_ins={key: tuple(dict.fromkeys(names)) for key, names in uses.items()},
        rotation=rotation,
    )


@dataclass(frozen=True)
class _BrokenRule:
    """A safety rule a phase breaks: refused unless the playbook sets `key`."""

    key: str
    phase: str
    message: str
    line: int
    field: str


def _broken_rules(
    phases: list[Phase], raw: list[_Map], expect_tls: bool, top: _Map
) -> list[_BrokenRule]:
    """Every safety rule the phases break, in phase order (the first refused is reported)."""
    out: list[_BrokenRule] = []
    checked: set[str] = set()  # roles some earlier preflight phase checks
    for i, (phase, m) in enumerate(zip(phases, raw, strict=True)):
        fld = f"phases[{i}]"
        for key, message, at in _phase_rules(phase, "gates" in m, checked):
            out.append(_BrokenRule(key, phase.name, message, m.key_line(at), f"{fld}.{at}"))
        if phase.op == "preflight":
            checked.update(phase.roles)
        if phase.op == "enable" and not expect_tls:
            out.append(
                _BrokenRule(
                    "allow_enable_without_tls_checks",
                    phase.name,
                    f"phase '{phase.name}' enables TLS but expect_tls is false: the gates and "
                    "checks would expect plain connections",
                    top.key_line("expect_tls"),
                    "expect_tls",
                )
            )
    out.extend(_split_enable_rules(phases, raw))
    return out


def _split_enable_rules(phases: list[Phase], raw: list[_Map]) -> list[_BrokenRule]:
    """TLS is all or none across the fleet: one all_or_nothing enable phase is undone
    everywhere if one host fails, but two enable phases (the first stays done when the second
    fails) or one that leaves a server role out would each leave TLS on some servers only."""
    enables = [(i, p) for i, p in enumerate(phases) if p.op == "enable"]
    if not enables:
        return []
    if len(enables) > 1:
        i, phase = enables[1]
        return [
            _BrokenRule(
                "allow_partial_enable",
                phase.name,
                f"TLS is enabled by {len(enables)} phases ("
                + ", ".join(f"'{p.name}'" for _, p in enables)
                + "): when a later one fails, the earlier stay enabled and TLS is on some "
                "servers only (the vendor: all or none)",
                raw[i].key_line("op"),
                f"phases[{i}].op",
            )
        ]
    i, phase = enables[0]
    left_out = [r for r in TLS_ROLES if r not in phase.roles]
    if not left_out:
        return []
    return [
        _BrokenRule(
            "allow_partial_enable",
            phase.name,
            f"phase '{phase.name}' enables TLS on roles {', '.join(phase.roles)} only: servers "
            f"of roles {', '.join(left_out)} would keep it off (the vendor: all or none)",
            raw[i].key_line("roles") if "roles" in raw[i] else raw[i].key_line("op"),
            f"phases[{i}].roles" if "roles" in raw[i] else f"phases[{i}].op",
        )
    ]


def _phase_rules(phase: Phase, has_gates: bool, checked: set[str]) -> list[tuple[str, str, str]]:
    """(opt-in key, message, key of the phase to point at) for each rule this phase breaks;
    `checked`: the roles earlier preflight phases check."""
    out = []
    if phase.op in CHANGING_OPS:
        unchecked = [r for r in phase.roles if r not in checked]
        if unchecked or not checked:
            what = f"role {', '.join(unchecked)}" if unchecked else "any host"
            out.append(
                (
                    "allow_no_preflight",
                    f"phase '{phase.name}' ({phase.op}) runs before a preflight phase has "
                    f"checked {what}",
                    "op",
                )
            )
    if phase.op == "enable" and phase.strategy != "all_or_nothing":
        out.append(
            (
                "allow_partial_enable",
                f"enable with strategy {phase.strategy} can leave TLS on some servers only "
                "(the vendor: all or none, undone everywhere if one fails)",
                "strategy",
            )
        )
    serial = [r for r in phase.roles if r in SERIAL_RESTART_ROLES]
    missing = [g for g in HEALTH_GATES if g not in phase.gates]
    if phase.op == "restart" and serial and missing:
        out.append(
            (
                "allow_ungated_restart",
                f"restart of {'/'.join(serial)} servers without the gates {', '.join(missing)} "
                "(the next one could restart while this one is unhealthy)",
                "gates" if has_gates else "op",
            )
        )
    if phase.op == "restart" and _parallel_restart(serial, phase.strategy, phase.batch):
        out.append(("allow_parallel_restart", "", "strategy"))  # refused in _phase already
    return out


def _parallel_restart(serial_roles: list[str], strategy: str, batch: int) -> bool:
    """Would this restart phase restart several HBRs / Canisters at once?"""
    return bool(serial_roles) and (strategy in ("parallel", "all_or_nothing") or batch > 1)


def _phase(ctx: _Ctx, m: _Map, fld: str, allow_parallel: bool) -> Phase:
    ctx.mapping(m, fld, m.line, PHASE_KEYS)

    def bad(key: str, message: str, hint: str | None = None) -> InputError:
        """An error at this phase's `key`: its line and field, like every playbook error."""
        return ctx.error(message, m.key_line(key), f"{fld}.{key}", hint)

    op = ctx.choice(m, "op", f"{fld}.op", OPS, None)
    if op is None:
        raise ctx.error(f"'op' is required; one of {', '.join(OPS)}", m.line, f"{fld}.op")
    name = ctx.string(m, "name", f"{fld}.name", default=op) or op
    strategy = ctx.choice(
        m,
        "strategy",
        f"{fld}.strategy",
        STRATEGIES,
        "controller" if op == "certificate" else "parallel",
    )
    assert strategy is not None
    if (op == "certificate") != (strategy == "controller"):
        raise bad(
            "strategy",
            "the certificate op runs once on the controller (strategy: controller)"
            " and only it does",
        )
    roles: tuple[str, ...]
    if "roles" in m:
        raw_roles = m["roles"]
        if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
            raise bad("roles", "expected a list of roles, e.g. [hbr]")
        for r in raw_roles:
            if r not in ROLES:
                raise bad("roles", f"unknown role '{r}'; expected one of {', '.join(ROLES)}")
            if r == "pca":
                raise bad(
                    "roles",
                    "role pca is never contacted over WinRM (not affected by inter-process TLS)",
                )
            if r == "rtv" and op in TLS_ONLY_OPS:
                raise bad("roles", f"role rtv is import only: never {op}")
        if op == "certificate" and raw_roles:
            raise bad("roles", "the certificate op runs on the controller: no roles")
        if op != "certificate" and not raw_roles:
            raise bad("roles", "expected at least one role")
        roles = tuple(dict.fromkeys(raw_roles))
    else:
        roles = DEFAULT_ROLES[op]
    if "batch" in m and strategy != "rolling":
        raise bad("batch", "batch only applies to strategy rolling")
    batch = (
        ctx.integer(m, "batch", f"{fld}.batch", 1, low=1, high=10000, what="a number of hosts") or 1
    )
    serial = [r for r in roles if r in SERIAL_RESTART_ROLES]
    if op == "restart" and not allow_parallel and _parallel_restart(serial, strategy, batch):
        where = ("batch", batch) if strategy == "rolling" else ("strategy", strategy)
        raise bad(
            where[0],
            f"{where[0]} {where[1]} would restart several {'/'.join(serial)} servers at once "
            "(data loss: the vendor says one at a time)",
            "use strategy: rolling with batch: 1, or set "
            "allow_parallel_restart: true at the top of the playbook if you accept the risk",
        )
    gates: tuple[str, ...] = ()
    if "gates" in m:
        raw_gates = m["gates"]
        if op != "restart":
            raise bad("gates", "gates only apply to the restart op")
        if not isinstance(raw_gates, list):
            raise bad("gates", "expected a list of gates")
        for g in raw_gates:
            if g not in GATES:
                raise bad("gates", f"unknown gate '{g}'; expected some of {', '.join(GATES)}")
        gates = tuple(dict.fromkeys(raw_gates))
    on_failure = ctx.choice(m, "on_failure", f"{fld}.on_failure", ON_FAILURE, "halt") or "halt"
    compensate = ctx.string(m, "compensate", f"{fld}.compensate")
    if compensate is not None:
        if strategy != "all_or_nothing":
            raise bad("compensate", "compensate only applies to strategy all_or_nothing")
        if COMPENSATE.get(op) != compensate:
            expected = COMPENSATE.get(op)
            raise bad(
                "compensate",
                f"'{compensate}' does not undo {op}"
                + (f" (expected {expected})" if expected else f": {op} has no compensating op"),
            )
    elif strategy == "all_or_nothing":
        if op not in COMPENSATE:
            raise bad(
                "strategy",
                f"all_or_nothing needs an op that can be undone (enable or disable), not {op}",
            )
        compensate = COMPENSATE[op]
    return Phase(
        name=name,
        op=op,
        roles=roles,
        strategy=strategy,
        batch=batch,
        gates=gates,
        on_failure=on_failure,
        compensate=compensate,
        line=m.line,
    )
