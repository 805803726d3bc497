"""Packaged playbooks: their phase order and vocabulary, strict loading, and that the wheel
ships them (so `--playbook rollout` works from an installed tool, not only from the repo)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import TLS_ROLES, WINDOWS_ROLES
from tealeaf_fleet.playbooks import builtin_dir, builtin_names, load_playbook

ROOT = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data" / "playbooks"
INVALID = sorted((DATA / "invalid").glob("*.yaml"))


def test_packaged_names() -> None:
    assert builtin_names() == [
        "prepare",
        "prerequisites",
        "rollback",
        "rollout",
        "rotate",
        "status",
    ]
    assert builtin_dir() == ROOT / "playbooks"  # editable install: the repo's folder


def _shape(name: str) -> list[tuple]:
    pb = load_playbook(name)
    return [
        (p.op, p.strategy, set(p.roles), p.batch if p.strategy == "rolling" else None)
        for p in pb.phases
    ]


def test_rollout_order_and_strategies() -> None:
    pb = load_playbook("rollout")
    assert pb.expect_tls is True and not pb.allow_parallel_restart
    assert _shape("rollout") == [
        ("preflight", "parallel", set(WINDOWS_ROLES), None),
        ("certificate", "controller", set(), None),
        ("push_pfx", "parallel", set(TLS_ROLES), None),
        ("import", "parallel", set(TLS_ROLES), None),
        ("enable", "all_or_nothing", set(TLS_ROLES), None),
        ("restart", "rolling", {"hbr"}, 1),
        ("restart", "rolling", {"canister"}, 1),
        ("restart", "parallel", {"portal", "report", "other"}, None),
        ("verify", "parallel", set(TLS_ROLES), None),
        # RTV workstations after every server: they never hold up the server change
        ("push_pfx", "parallel", {"rtv"}, None),
        ("push_tools", "parallel", {"rtv"}, None),
        ("import", "parallel", {"rtv"}, None),
        ("verify", "parallel", {"rtv"}, None),
    ]
    enable = next(p for p in pb.phases if p.op == "enable")
    assert enable.compensate == "disable"
    for p in pb.phases:
        assert p.on_failure == "halt"
        if p.op == "restart":
            assert p.gates == ("services", "iis", "data_service_log", "handshake", "soak")


def test_rollback_keeps_certificates_and_restarts_one_at_a_time() -> None:
    pb = load_playbook("rollback")
    assert pb.expect_tls is False
    assert _shape("rollback") == [
        ("preflight", "parallel", set(TLS_ROLES), None),
        ("disable", "parallel", set(TLS_ROLES), None),
        ("restart", "rolling", {"hbr"}, 1),
        ("restart", "rolling", {"canister"}, 1),
        ("restart", "parallel", {"portal", "report", "other"}, None),
        ("verify", "parallel", set(TLS_ROLES), None),
    ]
    assert not {"certificate", "push_pfx", "import"} & {p.op for p in pb.phases}


def test_prepare_never_enables_or_restarts() -> None:
    """Copy and import only; RTV workstations after every server, as in the rollout (an
    unreachable workstation never holds up the servers' prepare)."""
    assert _shape("prepare") == [
        ("preflight", "parallel", set(WINDOWS_ROLES), None),
        ("certificate", "controller", set(), None),
        ("push_pfx", "parallel", set(TLS_ROLES), None),
        ("import", "parallel", set(TLS_ROLES), None),
        ("push_pfx", "parallel", {"rtv"}, None),
        ("push_tools", "parallel", {"rtv"}, None),
        ("import", "parallel", {"rtv"}, None),
    ]


def test_rotate_is_the_rollout_without_enable() -> None:
    """The rotation keeps TLS on: every rollout phase but the enable, in the same order, with
    the same strategies and gates; and it says it is a rotation (which the digest covers)."""
    rotate, rollout = load_playbook("rotate"), load_playbook("rollout")
    assert rotate.rotation is True and rotate.expect_tls is True
    assert rollout.rotation is False
    assert [p.as_dict() for p in rotate.phases] == [
        p.as_dict() for p in rollout.phases if p.op != "enable"
    ]
    assert rotate.normalized["rotation"] is True
    assert "rotation" not in rollout.normalized  # the older playbooks' digests are unchanged


def test_status_is_read_only() -> None:
    assert [p.op for p in load_playbook("status").phases] == ["facts"]


def test_digest_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    a = load_playbook("rollout")
    copy = tmp_path / "mine.yaml"
    copy.write_text((ROOT / "playbooks" / "rollout.yaml").read_text())
    assert load_playbook(str(copy)).digest == a.digest  # the path is not part of it
    copy.write_text(copy.read_text().replace("one at a time", "one by one", 1))
    assert load_playbook(copy).digest != a.digest


def test_parallel_restart_needs_explicit_consent() -> None:
    pb = load_playbook(DATA / "parallel_ok.yaml")
    assert pb.allow_parallel_restart and pb.phases[0].batch == 2
    assert pb.opt_ins == {
        "allow_no_preflight": ("restart_hbr",),
        "allow_parallel_restart": ("restart_hbr",),
        "allow_ungated_restart": ("restart_hbr",),
    }


# Each safety rule a custom playbook may break only with its opt-in key: the phases that break
# it (YAML under `phases:`), the key, and the phases the playbook then records as relying on it.
# The refusals without the key are the `invalid/optin_*.yaml` files above.
OPT_IN_CASES = [
    (
        "partial_enable",
        "  - {op: preflight}\n  - {name: enable_all, op: enable, strategy: parallel}\n",
        "allow_partial_enable",
        ("enable_all",),
    ),
    (
        "enable_split_in_two",
        "  - {op: preflight}\n"
        "  - {name: enable_hbr, op: enable, roles: [hbr], strategy: all_or_nothing}\n"
        "  - {name: enable_rest, op: enable, roles: [portal, canister, report, other],"
        " strategy: all_or_nothing}\n",
        "allow_partial_enable",
        ("enable_rest",),
    ),
    (
        "enable_leaves_roles_out",
        "  - {op: preflight}\n"
        "  - {name: enable_some, op: enable, roles: [hbr, canister], strategy: all_or_nothing}\n",
        "allow_partial_enable",
        ("enable_some",),
    ),
    (
        "ungated_canister",
        "  - {op: preflight}\n"
        "  - {name: r, op: restart, roles: [canister], strategy: rolling, gates: [services]}\n",
        "allow_ungated_restart",
        ("r",),
    ),
    (
        "no_preflight",
        "  - {op: push_pfx}\n  - {op: import}\n",
        "allow_no_preflight",
        ("push_pfx", "import"),
    ),
    (
        "enable_expecting_plain",
        "  - {op: preflight}\n  - {op: enable, strategy: all_or_nothing}\n",
        "allow_enable_without_tls_checks",
        ("enable",),
    ),
]


@pytest.mark.parametrize(
    "phases,key,relying", [c[1:] for c in OPT_IN_CASES], ids=[c[0] for c in OPT_IN_CASES]
)
def test_a_broken_safety_rule_needs_its_opt_in(tmp_path: Path, phases, key, relying) -> None:
    expect_tls = "false" if key == "allow_enable_without_tls_checks" else "true"
    body = f"name: mine\nexpect_tls: {expect_tls}\nphases:\n{phases}"
    path = tmp_path / "mine.yaml"
    path.write_text(body)
    with pytest.raises(InputError, match=f"set {key}: true"):
        load_playbook(path)
    path.write_text(f"{key}: true\n{body}")
    pb = load_playbook(path)
    assert pb.opt_ins == {key: relying}
    assert pb.normalized[key] is True  # the digest covers the opt-in


def test_packaged_playbooks_need_no_opt_in() -> None:
    for name in builtin_names():
        assert load_playbook(name).opt_ins == {}, name


def test_unknown_name_lists_the_packaged_ones() -> None:
    names = "packaged: prepare, prerequisites, rollback, rollout, rotate, status"
    with pytest.raises(InputError, match=names):
        load_playbook("rollot")


def test_missing_file() -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_playbook("no/such/playbook.yaml")


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_playbook_names_file_line_field(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    line, fld, fragment = first[len("# expect: ") :].split(" ", 2)
    with pytest.raises(InputError) as info:
        load_playbook(path)
    assert str(info.value).startswith(f"{path}:{line}: {fld}: "), str(info.value)
    assert fragment in str(info.value)


@pytest.mark.timeout(600)
def test_wheel_ships_the_playbooks(tmp_path: Path) -> None:
    """Builds the wheel for real (hatchling from the package registry) and reads it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(tmp_path.glob("tealeaf_fleet-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        for name in builtin_names():
            member = f"tealeaf_fleet/playbooks/{name}.yaml"
            assert member in names
            assert zf.read(member) == (ROOT / "playbooks" / f"{name}.yaml").read_bytes()
        assert "tealeaf_fleet/playbooks.py" in names
