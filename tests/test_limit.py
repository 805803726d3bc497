"""`--limit` (limit.py): which hosts a pattern list selects, that a typo is an error and not an
empty change, that a limited plan covers (and digests) only its hosts, and when a limited run
would leave TLS on part of the fleet only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tealeaf_fleet import limit
from tealeaf_fleet.errors import InputError, PreflightError
from tealeaf_fleet.plan import build_plan
from tealeaf_fleet.playbooks import load_playbook
from test_plan import ESTATE, FP, make_fleet


@pytest.fixture
def fleet(tmp_path: Path):
    return make_fleet(tmp_path, ESTATE)


@pytest.mark.parametrize(
    "text,names",
    [
        ("rtv01", ["rtv01"]),
        ("RTV01", ["rtv01"]),
        ("can0*", ["can01", "can02", "can03"]),
        ("hbr", ["hbr01", "hbr02"]),  # a role
        ("hbr0[2],report", ["hbr02", "report01"]),
        ("canister,!can02", ["can01", "can03"]),
        ("!pca*,!rtv", ["portal01", "hbr01", "hbr02", "can01", "can02", "can03", "report01"]),
        (" rtv01 , hbr01 ", ["hbr01", "rtv01"]),  # inventory order, spaces ignored
    ],
)
def test_patterns_select_names_and_roles_like_ansible(fleet, text, names):
    assert limit.selected_names(fleet, text) == names
    assert list(limit.select(fleet, text).hosts) == names


@pytest.mark.parametrize(
    "text,words",
    [
        ("rtv99", "'rtv99' matches no host name or role"),
        ("hbr01,", "empty pattern"),
        ("", "empty pattern"),
        ("hbr01,!hbr01", "leaves no host"),
    ],
)
def test_a_pattern_that_selects_nothing_is_bad_input(fleet, text, words):
    with pytest.raises(InputError) as caught:
        limit.selected_names(fleet, text)
    assert words in caught.value.message and caught.value.field == "--limit"


def test_a_limited_plan_covers_and_digests_only_its_hosts(fleet):
    whole = build_plan(load_playbook("rollout"), fleet)
    part = build_plan(load_playbook("rollout"), limit.select(fleet, "rtv01"))
    assert [h.name for h in part.hosts] == ["rtv01"]
    assert {s.host for p in part.phases for s in p.steps} <= {"rtv01", "controller"}
    assert part.inventory["digest"] != whole.inventory["digest"]
    assert part.digest != whole.digest
    again = build_plan(load_playbook("rollout"), limit.select(fleet, "rtv*"))
    assert again.digest == part.digest  # the same selection, however it is spelled


def test_left_out_servers_only_when_the_playbook_switches_tls(fleet):
    rollout, prepare = load_playbook("rollout"), load_playbook("prepare")
    some = limit.select(fleet, "hbr01")
    assert limit.left_out_servers(fleet, some, rollout) == [
        "portal01",
        "hbr02",
        "can01",
        "can02",
        "can03",
        "report01",
    ]
    assert limit.left_out_servers(fleet, some, prepare) == []  # imports only: no switch
    assert limit.left_out_servers(fleet, limit.select(fleet, "rtv01"), rollout) == []
    assert limit.left_out_servers(fleet, fleet, rollout) == []


def facts(enable_tls, cert=FP, mode=None):
    mode = mode or ("tls" if enable_tls == 1 else "plain")
    return {
        "enable_tls": enable_tls,
        "security": {"cert_sha256": cert},
        "data_service": {"mode": mode},
    }


def test_partial_enable_is_refused_unless_the_rest_already_has_tls(fleet):
    some = limit.select(fleet, "hbr01")
    rest = limit.left_out_servers(fleet, some, load_playbook("rollout"))
    ready = {name: facts(1) for name in rest}

    def reader(values):
        return lambda sub: {n: values[n] for n in sub.hosts}

    limit.check_partial_tls(
        fleet, some, load_playbook("rollout"), read_facts=reader(ready), pfx_sha256=FP
    )  # every other server already on TLS with the fleet's certificate: allowed
    not_ready = dict(ready, can02=facts(0), report01="HostUnreachable: no answer")
    not_ready["can03"] = facts(1, cert="cd" * 32)
    not_ready["hbr02"] = facts(1, mode="plain")  # EnableTLS set, never restarted since
    with pytest.raises(PreflightError) as caught:
        limit.check_partial_tls(
            fleet, some, load_playbook("rollout"), read_facts=reader(not_ready), pfx_sha256=FP
        )
    blockers = caught.value.blockers
    assert sorted(blockers) == ["can02", "can03", "hbr02", "report01"]
    assert "Data Service still runs plain" in blockers["hbr02"][0]
    assert "TLS cannot be enabled on part of a Tealeaf fleet" in caught.value.message
    assert "can02: left out by --limit with EnableTLS off" in caught.value.message
    assert "certificate" in blockers["can03"][0] and "HostUnreachable" in blockers["report01"][0]
    # a rollback of part of the fleet needs the rest already off
    off = {name: facts(0) for name in rest}
    limit.check_partial_tls(
        fleet, some, load_playbook("rollback"), read_facts=reader(off), pfx_sha256=None
    )
    with pytest.raises(PreflightError, match="cannot be disabled on part of a Tealeaf fleet"):
        limit.check_partial_tls(
            fleet, some, load_playbook("rollback"), read_facts=reader(ready), pfx_sha256=None
        )


@pytest.mark.parametrize("command", ["plan", "rollout", "rollback", "status", "check"])
def test_every_command_takes_limit_and_a_typo_is_one_line_exit_2(tmp_path, command):
    import subprocess
    import sys

    make_fleet(tmp_path, ESTATE)
    argv = [sys.executable, "-m", "tealeaf_fleet", command, str(tmp_path / "inv.yaml")]
    proc = subprocess.run(
        [*argv, "--limit", "hbr9*"], capture_output=True, text=True, timeout=60, input=""
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fleet: error: --limit: 'hbr9*' matches no host name or role")
    assert "Traceback" not in proc.stderr
