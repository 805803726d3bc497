"""The planner over several topologies: phase order, strategies, exclusions, skips from facts,
digests and the JSON form."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import Fleet, load_fleet
from tealeaf_fleet.ops.checks import DEFAULT_SECURITY_DIR
from tealeaf_fleet.plan import (
    CONTROLLER,
    PCA_REASON,
    PLAN_MAX_BYTES,
    RTV_REASON,
    Plan,
    build_plan,
    first_difference,
    plan_digest,
)
from tealeaf_fleet.playbooks import load_playbook

ROOT = Path(__file__).parents[1]
FP = "ab" * 32


def make_fleet(
    tmp_path: Path, hosts: dict[str, str], extra: str = "", name: str = "inv.yaml"
) -> Fleet:
    """hosts: name -> role (PCA gets a build when given as 'pca:BUILD')."""
    lines = [
        "winrm: {username: 'CORP\\svc', password_env: TLF_PLAN_PW}",
        "certificate: {path: TCXcert.pfx, password_env: TLF_PLAN_PFX}",
        extra,
        "hosts:",
    ]
    for i, (host, role) in enumerate(hosts.items()):
        build = ""
        if role.startswith("pca:"):
            role, build = "pca", f", pca_build: '{role.split(':', 1)[1]}'"
        lines.append(f"  {host}: {{address: 10.0.0.{i + 1}, role: {role}{build}}}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return load_fleet(path)


ESTATE = {
    "portal01": "portal",
    "hbr01": "hbr",
    "hbr02": "hbr",
    "can01": "canister",
    "can02": "canister",
    "can03": "canister",
    "report01": "report",
    "pca01": "pca:3682-24",
    "rtv01": "rtv",
}


def hosts_of(plan: Plan, phase: str) -> list[str]:
    return [s.host for s in plan.phase(phase).steps]


def test_rollout_over_a_full_estate(tmp_path: Path) -> None:
    plan = build_plan(load_playbook("rollout"), make_fleet(tmp_path, ESTATE))
    assert [p.name for p in plan.phases] == [
        "preflight",
        "certificate",
        "push_pfx",
        "import",
        "enable",
        "restart_hbr",
        "restart_canister",
        "restart_rest",
        "verify",
        "rtv_push_pfx",
        "push_tools",
        "rtv_import",
        "rtv_verify",
    ]
    windows = ["portal01", "hbr01", "hbr02", "can01", "can02", "can03", "report01", "rtv01"]
    tls = windows[:-1]
    assert hosts_of(plan, "preflight") == windows
    assert hosts_of(plan, "certificate") == [CONTROLLER]
    assert hosts_of(plan, "push_pfx") == tls  # RTV workstations: after the servers
    assert hosts_of(plan, "push_tools") == ["rtv01"]
    assert hosts_of(plan, "import") == tls
    for name in ("rtv_push_pfx", "rtv_import", "rtv_verify"):
        assert hosts_of(plan, name) == ["rtv01"]
    assert hosts_of(plan, "enable") == tls
    assert plan.phase("enable").strategy == "all_or_nothing"
    assert plan.phase("enable").compensate == "disable"
    assert hosts_of(plan, "restart_hbr") == ["hbr01", "hbr02"]
    assert (plan.phase("restart_hbr").strategy, plan.phase("restart_hbr").batch) == ("rolling", 1)
    assert hosts_of(plan, "restart_canister") == ["can01", "can02", "can03"]
    assert hosts_of(plan, "restart_rest") == ["portal01", "report01"]
    assert plan.phase("restart_rest").strategy == "parallel"
    assert hosts_of(plan, "verify") == tls
    # nothing is skipped without facts
    assert all(s.skip_reason is None for p in plan.phases for s in p.steps)
    # PCA: left out of every host phase, with the pipeline note
    pca = plan.host("pca01")
    assert not pca.contacted and pca.reason.startswith(PCA_REASON)
    assert "3682-24" in pca.reason and "can use the same PFX" in pca.reason
    for name in ("preflight", "push_pfx", "import", "enable", "restart_hbr", "verify"):
        assert [x.host for x in plan.phase(name).excluded if x.host == "pca01"] == ["pca01"]
    # RTV: import only; left out of enable and (once) of the restarts
    assert plan.host("rtv01").contacted and plan.host("rtv01").reason == RTV_REASON
    assert [(x.host, x.reason) for x in plan.phase("enable").excluded if x.host == "rtv01"] == [
        ("rtv01", RTV_REASON)
    ]
    assert "rtv01" in [x.host for x in plan.phase("restart_hbr").excluded]
    assert "rtv01" not in [x.host for x in plan.phase("restart_canister").excluded]
    # an HBR is not "excluded" from restarts because the canister phase does not take it
    assert "hbr01" not in [x.host for x in plan.phase("restart_canister").excluded]


def test_restart_steps_say_one_at_a_time_and_gates(tmp_path: Path) -> None:
    plan = build_plan(load_playbook("rollout"), make_fleet(tmp_path, ESTATE))
    step = plan.phase("restart_hbr").steps[0]
    assert "one at a time" in step.impact
    assert "TLS Port: 23000" in step.description and "soak 30s" in step.description
    portal = plan.phase("restart_rest").steps[0]
    assert "one at a time" not in portal.impact and "Portal" in portal.impact


def test_small_estate_has_empty_phases(tmp_path: Path) -> None:
    plan = build_plan(load_playbook("rollout"), make_fleet(tmp_path, {"all01": "other"}))
    assert hosts_of(plan, "restart_hbr") == [] and hosts_of(plan, "restart_canister") == []
    assert hosts_of(plan, "push_tools") == []
    assert hosts_of(plan, "restart_rest") == ["all01"]
    assert [(p.name, x.host, x.reason) for p in plan.phases for x in p.excluded] == [
        ("push_tools", "all01", "a Tealeaf server already has TLSTool.exe and openssl.exe")
    ]


def test_rollback_over_estate(tmp_path: Path) -> None:
    plan = build_plan(load_playbook("rollback"), make_fleet(tmp_path, ESTATE))
    assert [p.op for p in plan.phases] == [
        "preflight",
        "disable",
        "restart",
        "restart",
        "restart",
        "verify",
    ]
    assert plan.expect_tls is False
    assert "rtv01" not in hosts_of(plan, "disable")
    assert ("rtv01", RTV_REASON) in [(x.host, x.reason) for x in plan.phase("preflight").excluded]
    assert "'Port: 23000'" in plan.phase("restart_hbr").steps[0].description


def test_old_pca_build_gets_an_upgrade_note(tmp_path: Path) -> None:
    plan = build_plan(
        load_playbook("rollout"), make_fleet(tmp_path, {"p1": "portal", "pca01": "pca:3500-10"})
    )
    assert "needs PCA build 3682-24 or later, this one is 3500-10" in plan.host("pca01").reason


def test_reboot_mode(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"hbr01": "hbr"}, extra="rollout: {restart: reboot}")
    step = build_plan(load_playbook("rollout"), fleet).phase("restart_hbr").steps[0]
    assert step.description.startswith("reboot the server")


def facts_done(fp: str = FP) -> dict:
    return {
        "now": "2026-11-27T11:14:59",
        "enable_tls": 1,
        "tools": {"tlstool": True, "openssl": True},
        "security": {
            "cert_sha256": fp,
            "files": {
                "tealeaf.crt": {"size": 1, "sha256": "x"},
                "tealeaf.p12": {"size": 2, "sha256": "y"},
                "server.tls.xml": {"size": 3, "sha256": "z"},
            },
        },
        "services": [
            {"name": "TeaLeafTMS", "state": "Running"},
            {"name": "TeaLeafCaptureServer", "state": "Stopped"},
        ],
        "data_service": {"mode": "tls", "port": 23000, "started_at": "2026-11-27T10:00:00"},
    }


def facts_fresh() -> dict:
    return {
        "now": "2026-11-27T11:14:59",
        "enable_tls": None,
        "tools": {"tlstool": False, "openssl": False},
        "security": {"cert_sha256": None, "files": {"tealeaf.crt": None, "tealeaf.p12": None}},
        "services": [{"name": "TeaLeafTMS", "state": "Running"}],
        "data_service": {"mode": "plain", "port": 23000},
    }


def test_facts_turn_done_steps_into_skips(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"hbr01": "hbr", "hbr02": "hbr", "rtv01": "rtv"})
    facts = {"hbr01": facts_done(), "hbr02": facts_fresh(), "rtv01": facts_done()}
    plan = build_plan(load_playbook("rollout"), fleet, facts, FP.upper())
    assert plan.pfx_sha256 == FP

    def skip(phase: str, host: str) -> str | None:
        return next(s.skip_reason for s in plan.phase(phase).steps if s.host == host)

    # the reasons are checks.step_status's (the engine's rule), behind "nothing to do: "
    assert skip("import", "hbr01") == (
        f"nothing to do: {DEFAULT_SECURITY_DIR}\\tealeaf.crt and tealeaf.p12 carry the PFX's "
        f"certificate ({FP[:12]})"
    )
    assert (
        skip("push_pfx", "hbr01")
        == f"nothing to do: already imported (certificate fingerprint {FP[:12]}): no copy needed"
    )
    assert skip("enable", "hbr01") == (
        f"nothing to do: EnableTLS is 1 and {DEFAULT_SECURITY_DIR}\\server.tls.xml exists"
    )
    assert skip("restart_hbr", "hbr01") == (
        "nothing to do: EnableTLS is 1 and the Data Service "
        "started in tls mode at 2026-11-27T10:00:00"
    )
    assert skip("push_tools", "rtv01") == (
        "nothing to do: Tools\\TLSTool.exe and Tools\\openssl.exe are already there"
    )
    assert skip("rtv_import", "rtv01") is not None
    assert skip("rtv_push_pfx", "rtv01") is not None
    for phase in ("push_pfx", "import", "enable", "restart_hbr"):
        assert skip(phase, "hbr02") is None
    # with facts, the restart names the services that were running (and only those)
    desc = next(s.description for s in plan.phase("restart_hbr").steps if s.host == "hbr02")
    assert "restart TeaLeafTMS " in desc and "CaptureServer" not in desc
    # another certificate on the host: not skipped
    other = build_plan(load_playbook("rollout"), fleet, facts, "cd" * 32)
    assert next(s for s in other.phase("import").steps if s.host == "hbr01").skip_reason is None


def test_rollback_facts_skip_disable(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"hbr01": "hbr", "hbr02": "hbr"})
    plan = build_plan(
        load_playbook("rollback"), fleet, {"hbr01": facts_fresh(), "hbr02": facts_done()}
    )
    steps = {s.host: s.skip_reason for s in plan.phase("disable").steps}
    assert steps == {"hbr01": "nothing to do: EnableTLS is absent", "hbr02": None}
    restarts = {s.host: s.skip_reason for s in plan.phase("restart_hbr").steps}
    assert restarts["hbr01"] is not None and restarts["hbr02"] is None


def skips(plan: Plan, host: str) -> dict[str, str | None]:
    return {p.name: s.skip_reason for p in plan.phases for s in p.steps if s.host == host}


def with_(facts: dict, **changes: object) -> dict:
    """A copy of `facts` with top-level keys replaced (None deletes the key)."""
    out = json.loads(json.dumps(facts))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    "playbook, facts, phase, why",
    [
        # EnableTLS=1 alone is not "enabled": FP2's optional security features leave it too; the
        # vendor's `TLSTool.exe enable` also writes server.tls.xml (the old planner skipped here)
        (
            "rollout",
            with_(
                facts_done(),
                security={
                    "cert_sha256": FP,
                    "files": {
                        "tealeaf.crt": {"size": 1},
                        "tealeaf.p12": {"size": 2},
                        "server.tls.xml": None,
                    },
                },
            ),
            "enable",
            "server.tls.xml is missing",
        ),
        # Data Service in TLS mode but EnableTLS 0: the enable, then a restart, are still to come
        ("rollout", with_(facts_done(), enable_tls=0), "restart_hbr", "EnableTLS is 0"),
        # rollback: Data Service plain, EnableTLS still 1: the disable and a restart are to come
        (
            "rollback",
            with_(facts_done(), data_service={"mode": "plain", "port": 23000}),
            "restart_hbr",
            "EnableTLS is 1",
        ),
        # facts that do not show EnableTLS prove nothing about it
        ("rollback", with_(facts_fresh(), enable_tls=None), "disable", "unknown"),
        ("rollback", with_(facts_fresh(), enable_tls=None), "restart_hbr", "unknown"),
    ],
)
def test_done_needs_positive_evidence(
    tmp_path: Path, playbook: str, facts: dict, phase: str, why: str
) -> None:
    from tealeaf_fleet.ops.checks import step_status

    fleet = make_fleet(tmp_path, {"hbr01": "hbr"})
    plan = build_plan(load_playbook(playbook), fleet, {"hbr01": facts}, FP)
    assert skips(plan, "hbr01")[phase] is None
    op = plan.phase(phase).op
    verdict = step_status(
        fleet.hosts["hbr01"], facts, op, pfx_sha256=FP, expect_tls=plan.expect_tls
    )
    assert not verdict.done and why in verdict.reason


def test_restart_stays_planned_after_a_change_on_the_host(tmp_path: Path) -> None:
    """EnableTLS 1 and a TLS Data Service, but another certificate: the import will change the
    host, so its restart is planned (the engine restarts after its own changes)."""
    fleet = make_fleet(tmp_path, {"hbr01": "hbr", "hbr02": "hbr"})
    plan = build_plan(
        load_playbook("rollout"), fleet, {"hbr01": facts_done("cd" * 32), "hbr02": facts_done()}, FP
    )
    assert skips(plan, "hbr01")["import"] is None
    assert skips(plan, "hbr01")["restart_hbr"] is None
    assert skips(plan, "hbr02")["restart_hbr"] is not None


def test_empty_or_missing_facts_skip_nothing(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"hbr01": "hbr", "rtv01": "rtv"})
    for playbook in ("rollout", "rollback"):
        for facts in ({"hbr01": {}, "rtv01": {}}, {}):
            plan = build_plan(load_playbook(playbook), fleet, facts, FP)
            assert [(p.name, s.host) for p in plan.phases for s in p.steps if s.skip_reason] == []


def test_existing_pfx_is_never_generated_twice(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"hbr01": "hbr"})
    assert (
        build_plan(load_playbook("rollout"), fleet).phase("certificate").steps[0].skip_reason
        is None
    )
    (tmp_path / "TCXcert.pfx").write_bytes(b"x")
    step = build_plan(load_playbook("rollout"), fleet).phase("certificate").steps[0]
    assert "never generated twice" in step.skip_reason


def test_digests(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, ESTATE)
    rollout = load_playbook("rollout")
    a = build_plan(rollout, fleet)
    assert a.digest == build_plan(rollout, make_fleet(tmp_path, ESTATE, name="b.yaml")).digest
    assert a.facts_digest is None
    assert a.playbook == {"name": "rollout", "digest": rollout.digest}
    # inventory content, playbook, tool version and facts each change the digest
    changed = make_fleet(tmp_path, {**ESTATE, "can04": "canister"}, name="c.yaml")
    assert build_plan(rollout, changed).inventory["digest"] != a.inventory["digest"]
    assert build_plan(rollout, changed).digest != a.digest
    assert build_plan(load_playbook("rollback"), fleet).digest != a.digest
    assert build_plan(rollout, fleet, tool_version="9.9.9").digest != a.digest
    f1 = build_plan(rollout, fleet, {"hbr01": facts_fresh()}, FP)
    assert f1.facts_digest is not None and f1.digest != a.digest
    # `now` is not part of the facts digest; anything else is
    later = dict(facts_fresh(), now="2027-01-01T00:00:00")
    assert build_plan(rollout, fleet, {"hbr01": later}, FP).digest == f1.digest
    assert build_plan(rollout, fleet, {"hbr01": facts_done()}, FP).digest != f1.digest


def test_json_round_trip_and_shape(tmp_path: Path) -> None:
    plan = build_plan(
        load_playbook("rollout"), make_fleet(tmp_path, ESTATE), {"hbr01": facts_done()}, FP
    )
    text = plan.to_json()
    d = json.loads(text)
    assert list(d)[:6] == [
        "format_version",
        "tool_version",
        "playbook",
        "inventory",
        "facts_digest",
        "digest",
    ]
    assert d["format_version"] == 4
    # facts given: the preflight was judged (one host's facts only, no blocker there) and
    # every Tealeaf server has a pre-check row (known only where facts were read)
    assert d["preflight"]["checked"] is True
    assert {row["host"]: row["known"] for row in d["prechecks"]}["hbr01"] is True
    assert set(d["phases"][0]) >= {
        "name",
        "op",
        "strategy",
        "batch",
        "gates",
        "roles",
        "steps",
        "excluded",
    }
    assert set(d["phases"][0]["steps"][0]) == {
        "host",
        "action",
        "description",
        "impact",
        "skip_reason",
    }
    assert set(d["hosts"][0]) == {"name", "role", "address", "contacted", "reason"}
    assert Plan.from_json(text) == plan
    out = tmp_path / "plan.json"
    out.write_text(text)
    assert Plan.load(out) == plan


def test_bad_plan_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="invalid JSON"):
        Plan.from_json("{nope")
    with pytest.raises(InputError, match="format_version 1 is not supported"):
        Plan.from_json('{"format_version": 1}')
    with pytest.raises(InputError, match="format_version 3 is not supported"):
        Plan.from_json('{"format_version": 3}')  # a plan without the preflight judgement
    with pytest.raises(InputError, match="missing field 'tool_version'"):
        Plan.from_json('{"format_version": 4}')
    with pytest.raises(InputError, match="does not exist"):
        Plan.load(tmp_path / "none.json")


def _plan_json(tmp_path: Path) -> dict:
    return build_plan(load_playbook("rollout"), make_fleet(tmp_path, ESTATE)).to_dict()


def _set(d: dict, path: str, value: object) -> dict:
    """Set `a.b[2].c` in a copy of the plan's JSON dict."""
    import re as _re

    out = json.loads(json.dumps(d))
    node: object = out
    parts = _re.findall(r"[^.\[\]]+|\[\d+\]", path)
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]  # type: ignore[index]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value  # type: ignore[index]
    else:
        node[last] = value  # type: ignore[index]
    return out


# Malformed plan files: the path set to a value, and what the one-line error says.
MALFORMED = [
    ("phases[6].batch", "1", "phases[6].batch: expected a whole number, got text"),
    ("phases[6].batch", True, "phases[6].batch: expected a whole number, got true/false"),
    ("phases[6].batch", 1.5, "phases[6].batch: expected a whole number, got a number"),
    ("phases", {}, "phases: expected a list, got an object"),
    ("phases[0].steps[0]", [], "phases[0].steps[0]: expected an object, got a list"),
    ("hosts[0].contacted", "yes", "hosts[0].contacted: expected true or false, got text"),
    ("expect_tls", None, "expect_tls: expected true or false, got null"),
    ("facts_digest", 7, "facts_digest: expected text or null, got a number"),
    ("opt_ins", None, "opt_ins: expected a list, got null"),
    ("phases[1].steps[0].extra", 1, "phases[1].steps[0]: unexpected field 'extra'"),
    ("format_version", True, "format_version True is not supported"),
]


@pytest.mark.parametrize("path,value,message", MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_plan_is_one_input_error(tmp_path: Path, path, value, message) -> None:
    text = json.dumps(_set(_plan_json(tmp_path), path, value))
    with pytest.raises(InputError) as info:
        Plan.from_json(text, source="p.json")
    assert message in str(info.value)
    assert "\n" not in str(info.value) and str(info.value).startswith("p.json")


def test_plan_files_that_are_not_plans(tmp_path: Path) -> None:
    good = json.dumps(_plan_json(tmp_path))
    cases = {
        "truncated.json": (good[: len(good) // 2], "invalid JSON"),
        "deep.json": ("[" * 200_000 + "]" * 200_000, "JSON this tool does not read"),
        "digits.json": ('{"format_version": ' + "9" * 6000 + "}", "JSON this tool does not read"),
        "latin1.json": (None, "is not UTF-8 text"),
        "list.json": ("[1, 2]", "expected a JSON object"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b'{"description": "caf\xe9"}')
        else:
            path.write_text(text)
        with pytest.raises(InputError, match=message):
            Plan.load(path)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as fh:
        fh.truncate(PLAN_MAX_BYTES + 1)  # sparse: nothing is read past the limit
    with pytest.raises(InputError, match="larger than 16 MiB"):
        Plan.load(huge)
    with pytest.raises(InputError, match="a folder"):
        Plan.load(tmp_path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # nobody writes: reading it would wait forever
    with pytest.raises(InputError, match="not a regular file"):
        Plan.load(fifo)


def test_digest_covers_the_body_but_not_paths(tmp_path: Path) -> None:
    plan = _plan_json(tmp_path)
    assert plan_digest(plan) == plan["digest"]
    assert plan_digest(_set(plan, "phases[6].strategy", "parallel")) != plan["digest"]
    assert plan_digest(_set(plan, "phases[0].steps", [])) != plan["digest"]
    assert plan_digest(_set(plan, "hosts[1].address", "10.9.9.9")) != plan["digest"]
    assert (
        plan_digest(_set(plan, "opt_ins", [{"key": "k", "allows": "", "phases": []}]))
        != (plan["digest"])
    )
    # presentation: where the files are on this machine, and whether the PFX exists here yet
    assert plan_digest(_set(plan, "inventory.path", "/elsewhere/inv.yaml")) == plan["digest"]
    assert plan_digest(_set(plan, "certificate.path", "/elsewhere/x.pfx")) == plan["digest"]
    assert plan_digest(_set(plan, "phases[1].steps[0].skip_reason", "exists")) == plan["digest"]


def test_first_difference_names_the_place_and_both_values(tmp_path: Path) -> None:
    plan = _plan_json(tmp_path)
    assert first_difference(plan, json.loads(json.dumps(plan))) is None
    edited = _set(plan, "phases[6].strategy", "parallel")
    assert first_difference(edited, plan) == (
        "phases[6].strategy: approved 'parallel', rebuilt 'rolling'"
    )
    fewer = _set(plan, "phases", plan["phases"][:-1])
    assert first_difference(fewer, plan) == (
        "phases: approved 12 entries, rebuilt 13 (first extra: phases[12])"
    )
    assert first_difference(_set(plan, "hosts[0].contacted", 1), plan) == (
        "hosts[0].contacted: approved 1, rebuilt True"
    )
    long = _set(plan, "description", "x" * 500)
    assert len(first_difference(long, plan) or "") < 200


def test_opt_ins_are_in_the_plan(tmp_path: Path) -> None:
    playbook = load_playbook(ROOT / "tests" / "data" / "playbooks" / "parallel_ok.yaml")
    plan = build_plan(playbook, make_fleet(tmp_path, ESTATE))
    assert [o["key"] for o in plan.opt_ins] == [
        "allow_parallel_restart",
        "allow_ungated_restart",
        "allow_no_preflight",
    ]
    assert all(o["phases"] == ["restart_hbr"] and o["allows"] for o in plan.opt_ins)
    assert build_plan(load_playbook("rollout"), make_fleet(tmp_path, ESTATE)).opt_ins == []


def test_bad_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="64 hex digits"):
        build_plan(load_playbook("rollout"), make_fleet(tmp_path, ESTATE), None, "xyz")


def test_pca_hand_off_in_plans_that_install_a_pair(tmp_path: Path) -> None:
    from tealeaf_fleet.cli.render import render

    fleet = make_fleet(
        tmp_path,
        {"p1": "portal", "pca01": "pca:3682-24", "pca02": "pca:3500-10", "pca03": "pca"},
    )
    for name in ("rollout", "rotate"):
        plan = build_plan(load_playbook(name), fleet)
        handoff = {h["host"]: h for h in plan.pca_handoff}
        assert [h["pipeline_ready"] for h in plan.pca_handoff] == [True, False, None]
        assert handoff["pca02"]["build"] == "3500-10" and "upgrade" in handoff["pca02"]["step"]
        assert "no build declared" in handoff["pca03"]["step"]
        command = "`fleet cert export TCXcert.pfx --pem --password-env TLF_PLAN_PFX`"
        assert all(command in h["step"] for h in plan.pca_handoff)
        assert all("never contacted" in h["step"] for h in plan.pca_handoff)
        ticket = render(plan, "markdown")
        assert "## PCA hand-off" in ticket and "pca01 (PCA build 3682-24)" in ticket
        assert "PCA hand-off" in render(plan, "table")
        assert Plan.from_json(plan.to_json()).pca_handoff == plan.pca_handoff
    assert build_plan(load_playbook("rollback"), fleet).pca_handoff == []


def test_rotation_plan_shows_old_and_new_validity_outside_the_digest(tmp_path: Path) -> None:
    from tealeaf_fleet.cli.render import render

    fleet = make_fleet(tmp_path, {"hbr01": "hbr", "hbr02": "hbr"})
    old = "cd" * 32
    facts = {"hbr01": facts_done(old), "hbr02": facts_done(old)}
    facts["hbr01"]["security"]["cert_not_after"] = "2027-01-10T08:00:00"
    facts["hbr02"]["security"]["cert_not_after"] = "2027-01-10T08:00:00"
    new = {"sha256": FP, "not_before": "2026-12-01T00:00:00", "not_after": "2028-12-01T00:00:00"}
    plan = build_plan(load_playbook("rotate"), fleet, facts, FP, new_certificate=new)
    assert plan.rotation is True
    assert plan.validity == {
        "new": new,
        "installed": [
            {"sha256": old, "not_after": "2027-01-10T08:00:00", "hosts": ["hbr01", "hbr02"]}
        ],
    }
    ticket = render(plan, "markdown")
    assert "Certificate validity" in ticket
    assert f"new:       {FP[:12]}  valid 2026-12-01T00:00:00 .. 2028-12-01T00:00:00" in ticket
    assert f"installed: {old[:12]}  until 2027-01-10T08:00:00" in ticket
    assert "--certificate-from-archive" in ticket  # the way back
    ends = f"inter-process TLS stays ON; every Tealeaf server restarts onto pair {FP[:12]}"
    assert ends in ticket and "restarted)" not in ticket
    assert "keep the pair they loaded until their restart below" in ticket
    assert "used after enable and restart" not in ticket  # a rotation enables nothing
    # the dates are presentation only; the new pair's fingerprint is what the plan installs
    dated = dict(new, not_before="2026-11-30T00:00:00")
    same = build_plan(load_playbook("rotate"), fleet, facts, FP, new_certificate=dated)
    assert same.digest == plan.digest
    other = dict(new, sha256="ef" * 32)
    moved = build_plan(load_playbook("rotate"), fleet, facts, FP, new_certificate=other)
    assert moved.digest != plan.digest


def test_pca_hand_off_of_an_archived_pair_names_its_file_and_password_source(
    tmp_path: Path,
) -> None:
    """Going back to an archived pair: the hand-off exports that pair (its file in the state
    folder, relative to the inventory's folder) with the password flag the run was given."""
    from tealeaf_fleet import certarchive, certs
    from tealeaf_fleet.plan import export_command
    from tealeaf_fleet.secrets import Secret

    fleet = make_fleet(tmp_path, {"p1": "portal", "pca01": "pca:3682-24"})
    password = Secret("Kx9handoffpair55", source="env OLD_PW")
    data = certs.generate_pfx(password, days=400)
    pfx = certs.load_pfx(data, password)
    entry = certarchive.archive(
        tmp_path / ".tealeaf-fleet",
        pfx,
        data,
        source="old.pfx",
        run_id=1,
        command="rollout",
        playbook="rollout",
    )
    back = certarchive.fleet_with_archived(fleet, entry, password)
    expected = f"fleet cert export .tealeaf-fleet/certificates/{pfx.sha256}.pfx --pem"
    assert export_command(back) == expected + " --password-env OLD_PW"
    plan = build_plan(load_playbook("rotate"), back)
    assert f"`{expected} --password-env OLD_PW`" in plan.pca_handoff[0]["step"]
