"""`fleet rollout` / `fleet rollback` in process, without a lab: what the CLI does before and
around the engine (approved plan files it refuses, usage errors, a crash), with the engine's
actions replaced where a run is needed."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

from tealeaf_fleet.cli.main import main
from tealeaf_fleet.engine import actions as engine_actions
from tealeaf_fleet.journal import Journal

ROOT = Path(__file__).parents[1]


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEALEAF_WINRM_PASSWORD", "Kx9-rollout-winrm-2718")
    monkeypatch.setenv("TEALEAF_PFX_PASSWORD", "Kx9rolloutpfx3141")
    monkeypatch.setenv("TEALEAF_FLEET_LOCK_DIR", str(tmp_path / "locks"))
    inv = tmp_path / "inventory.yaml"
    shutil.copy(ROOT / "inventory.example.yaml", inv)
    # The example names a CA bundle beside it; commands that connect require the file to exist.
    (tmp_path / "corp-ca.pem").write_text("placeholder: these tests never open a connection\n")
    return inv


class Result(NamedTuple):
    code: int
    err: list[str]  # stderr lines
    out: str


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> Result:
    """main() as the console script calls it; a usage error's SystemExit counts as its code."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.err.splitlines(), captured.out)


def plan_json(inventory: Path, capsys: pytest.CaptureFixture) -> dict:
    assert main(["plan", str(inventory), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("command", ["rollout", "rollback"])
def test_malformed_approved_plans_are_one_line_exit_2(inventory, tmp_path, capsys, command):
    good = json.dumps(plan_json(inventory, capsys))
    wrong_type = json.loads(good)
    wrong_type["phases"][0]["batch"] = "one"
    files = {
        "truncated.json": good[: len(good) // 3],
        "wrong_type.json": json.dumps(wrong_type),
        "not_json.json": "approved by the board",
        "empty.json": "",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as fh:
        fh.truncate(16 * 1024 * 1024 + 1)
    os.mkfifo(tmp_path / "fifo.json")
    for name in [*files, "huge.json", "fifo.json", "missing.json"]:
        path = tmp_path / name
        code, err, _ = run_cli(
            capsys, command, str(inventory), "--approved-plan", str(path), "--yes"
        )
        assert code == 2, (name, err)
        assert len(err) == 1 and err[0].startswith("fleet: error: "), (name, err)
        assert str(path) in err[0], (name, err)


def test_approved_plan_runs_the_rebuilt_plan_not_the_file(inventory, tmp_path, capsys, monkeypatch):
    """Even a file that passes the checks is never what runs: the engine gets the plan rebuilt
    from the inventory and playbook (here the file's only difference is a path)."""
    plan = plan_json(inventory, capsys)
    plan["inventory"]["path"] = "/elsewhere/inventory.yaml"  # presentation only: accepted
    approved = tmp_path / "approved.json"
    approved.write_text(json.dumps(plan))
    seen = {}

    def fake_run_plan(fleet, plan, **kw):
        seen["plan"] = plan
        return 0

    from tealeaf_fleet.cli import rollout

    monkeypatch.setattr(rollout, "run_plan", fake_run_plan)
    code, err, _ = run_cli(
        capsys, "rollout", str(inventory), "--approved-plan", str(approved), "--yes"
    )
    assert code == 0, err
    assert seen["plan"].inventory["path"] == str(inventory)
    assert seen["plan"].digest == plan["digest"]


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout"],
        ["rollout", "INV", "--forks", "0"],
        ["rollout", "INV", "--no-such-flag"],
        ["rollback", "INV", "--forks", "ten"],
        ["plan", "INV", "--format", "yaml"],
        ["history", "INV", "notanumber"],
        ["launch"],
        ["--bogus"],
    ],
)
def test_usage_errors_are_one_line_and_a_hint(inventory, capsys, argv) -> None:
    code, err, _ = run_cli(capsys, *(str(inventory) if a == "INV" else a for a in argv))
    assert code == 2
    assert err[0].startswith("fleet: error: "), err
    assert len(err) == 2 and re.fullmatch(r"usage: see `fleet( \w+)? --help`", err[1]), err


def test_an_unexpected_exception_is_journaled_crashed_with_a_crash_log(
    inventory, tmp_path, capsys, monkeypatch
):
    """A bug inside the run: exit 1, one line naming the crash log (which has the traceback),
    and the journal (and `fleet history`) say `crashed`, never `ok`."""

    def preflight(ctx, phase, host):
        raise RuntimeError("injected bug")

    monkeypatch.setitem(engine_actions.ACTIONS, "preflight", preflight)
    state = tmp_path / "state"
    code, err, _ = run_cli(capsys, "rollout", str(inventory), "--yes", "--state-dir", str(state))
    assert code == 1
    line = next(x for x in err if "unexpected failure" in x)
    crash_log = Path(line.rsplit("details in ", 1)[1])
    try:
        assert "RuntimeError: injected bug" in crash_log.read_text()
    finally:
        crash_log.unlink()
    with Journal(state) as journal:
        record = journal.runs()[0]
    assert record.outcome == "crashed" and "RuntimeError" in record.message
    history = run_cli(capsys, "history", str(inventory), "--state-dir", str(state), "--json")
    assert history.code == 0
    assert json.loads(history.out)["runs"][0]["state"] == "crashed"
    # the lock folder is clean: the crash released every host lock
    assert list((tmp_path / "locks").glob("*.lock")) == []


def _drop_preflight(plan: dict) -> None:
    plan["phases"] = [p for p in plan["phases"] if p["op"] != "preflight"]


def _contact_the_pca(plan: dict) -> None:
    pca = next(h for h in plan["hosts"] if h["role"] == "pca")
    pca.update(contacted=True, reason=None)


def _hbr_restarts_in_parallel(plan: dict) -> None:
    next(p for p in plan["phases"] if p["name"] == "restart_hbr")["strategy"] = "parallel"


@pytest.mark.parametrize(
    "tamper,where",
    [
        (_hbr_restarts_in_parallel, "phases[5].strategy: approved 'parallel', rebuilt 'rolling'"),
        (_drop_preflight, "phases[0].name: approved 'certificate', rebuilt 'preflight'"),
        (_contact_the_pca, "hosts[7].contacted: approved True, rebuilt False"),
    ],
    ids=["hbr-parallel", "no-preflight", "pca-contacted"],
)
@pytest.mark.parametrize("redigest", [False, True], ids=["digests-kept", "digest-recomputed"])
def test_an_edited_approved_plan_is_refused_naming_the_first_difference(
    inventory, tmp_path, capsys, monkeypatch, tamper, where, redigest
):
    """The issue's three edits (digests left intact, or the plan digest recomputed over the
    edited body): exit 4, one line naming the first difference; nothing is run."""
    from tealeaf_fleet.cli import rollout
    from tealeaf_fleet.plan import plan_digest

    plan = plan_json(inventory, capsys)
    tamper(plan)
    if redigest:
        plan["digest"] = plan_digest(plan)
    approved = tmp_path / "approved.json"
    approved.write_text(json.dumps(plan))
    monkeypatch.setattr(rollout, "run_plan", lambda *a, **kw: pytest.fail("the plan ran"))
    for mode in ("--yes", "--dry-run"):
        code, err, out = run_cli(
            capsys, "rollout", str(inventory), "--approved-plan", str(approved), mode
        )
        assert code == 4, err
        assert len(err) == 1 and f"first difference at {where}" in err[0], err
        assert out == ""


def test_a_signal_during_an_emit_does_not_wait_for_the_bus(monkeypatch):
    """The signal handler runs on the main thread between two bytecodes, possibly inside an
    emit that holds the bus's lock: it must only set `stop`, the announcement comes later
    from another thread, once the lock is free."""
    import signal
    import threading

    from tealeaf_fleet.cli import rollout as cli_rollout
    from tealeaf_fleet.engine.events import EventBus, Recorder

    bus = EventBus()
    recorder = Recorder()
    bus.subscribe(recorder)
    stop = threading.Event()
    seen: list[int] = []
    with cli_rollout._interrupt_sets(stop, bus, seen):
        handler = signal.getsignal(signal.SIGTERM)
        with bus._lock:  # as if the main thread were inside bus.emit when SIGTERM arrived
            handler(signal.SIGTERM, None)  # would deadlock if it emitted here
            assert stop.is_set() and seen == [signal.SIGTERM]
            assert recorder.events == []
        for _ in range(200):  # bounded: the announcer emits once the lock is free
            if recorder.events:
                break
            threading.Event().wait(0.01)
    assert [e.message.split(":")[0] for e in recorder.events] == ["SIGTERM"]


def test_an_approved_rotation_plan_binds_the_new_pair_without_facts(inventory, capsys):
    """A rotation plan made without --facts still names the pair it installs: the same PFX
    path holding another pair afterwards makes the approved plan stale (exit 4), while the
    unchanged file runs (dry run, exit 0)."""
    from tealeaf_fleet import certs
    from tealeaf_fleet.secrets import Secret

    password = Secret(os.environ["TEALEAF_PFX_PASSWORD"], source="test")
    pfx_path = inventory.parent / "TCXcert.pfx"
    pfx_path.write_bytes(certs.generate_pfx(password, days=400))
    approved = inventory.parent / "plan.json"
    code, err, _ = run_cli(
        capsys, "plan", str(inventory), "--playbook", "rotate", "--out", str(approved)
    )
    assert code == 0, err
    dry = ("rollout", str(inventory), "--playbook", "rotate", "--approved-plan", str(approved))
    # --no-facts: the example's hosts do not exist; the binding is judged offline
    code, err, _ = run_cli(capsys, *dry, "--dry-run", "--no-facts")
    assert code == 0, err

    pfx_path.write_bytes(certs.generate_pfx(password, days=400))  # pair C at B's path
    code, err, out = run_cli(capsys, *dry, "--dry-run", "--no-facts")
    assert code == 4, err
    assert len(err) == 1 and "new_pair_sha256" in err[0], err
    assert out == ""


def test_a_wrong_archived_pair_password_names_its_flag(inventory, capsys, monkeypatch):
    """Going back with the wrong password for the archived pair: exit 2, one line naming the
    password flag that gave it (not the inventory's certificate.password), never the value."""
    from tealeaf_fleet import certarchive, certs
    from tealeaf_fleet.journal import default_state_dir
    from tealeaf_fleet.secrets import Secret

    right = Secret("Kx9archivedpair2024", source="test")
    data = certs.generate_pfx(right, days=400)
    pfx = certs.load_pfx(data, right)
    certarchive.archive(
        default_state_dir(inventory),
        pfx,
        data,
        source="old.pfx",
        run_id=1,
        command="rollout",
        playbook="rollout",
    )
    monkeypatch.setenv("OLD_PAIR_PW", "Kx9wrongpassword77")
    code, err, out = run_cli(
        capsys,
        "rollout",
        str(inventory),
        "--playbook",
        "rotate",
        "--dry-run",
        "--certificate-from-archive",
        pfx.sha256[:12],
        "--certificate-password-env",
        "OLD_PAIR_PW",
    )
    assert code == 2, err
    assert len(err) == 1 and "--certificate-password-env:" in err[0], err
    assert "env OLD_PAIR_PW" in err[0]
    assert "Kx9wrongpassword77" not in err[0] + out and out == ""
