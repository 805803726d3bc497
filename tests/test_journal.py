"""The run journal on real SQLite files: runs, steps, resume queries, the lock, the run log."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from tealeaf_fleet.errors import ConcurrentRunError, InputError
from tealeaf_fleet.journal import (
    LOCK_DIR_ENV,
    Journal,
    default_state_dir,
    host_key,
    lock_dir,
    pid_alive,
)
from tealeaf_fleet.secrets import Secret


def test_runs_and_steps_are_on_disk(tmp_path):
    with Journal(tmp_path) as journal:
        run = journal.start_run(
            command="rollout",
            inventory_path="/x/inv.yaml",
            inventory_digest="i1",
            playbook="rollout",
            plan_digest="p1",
        )
        step = journal.step_started(run, "import", "hbr01", "import")
        journal.step_finished(step, "changed", "imported certificate ab12")
        journal.finish_run(run, "ok")
    # Read back with a separate, plain sqlite3 connection: the data really is in the file.
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT command, playbook, plan_digest, outcome FROM runs").fetchall()
    assert rows == [("rollout", "rollout", "p1", "ok")]
    steps = db.execute("SELECT phase, host, action, outcome, message FROM steps").fetchall()
    assert steps == [("import", "hbr01", "import", "changed", "imported certificate ab12")]


def test_every_transition_is_committed_at_once(tmp_path):
    journal = Journal(tmp_path)
    run = journal.start_run(command="rollout", plan_digest="p1")
    journal.step_started(run, "restart hbr", "hbr01", "restart")
    # Another connection sees the running step before anything is closed (a SIGKILL now keeps it).
    other = sqlite3.connect(tmp_path / "journal.sqlite")
    assert other.execute("SELECT host, outcome FROM steps").fetchall() == [("hbr01", None)]
    assert other.execute("SELECT outcome FROM runs").fetchall() == [(None,)]
    journal.close()


def test_history_queries(tmp_path):
    with Journal(tmp_path) as journal:
        first = journal.start_run(command="rollout", plan_digest="p1")
        journal.finish_run(first, "failed", "gate failed on hbr02")
        second = journal.start_run(command="rollback", plan_digest="p2")
        journal.finish_run(second, "ok")
        runs = journal.runs()
        assert [r.id for r in runs] == [second, first]
        assert journal.run(first).message == "gate failed on hbr02"
        assert journal.run(first).state == "failed"
        assert journal.run(999) is None


def test_unfinished_run_of_a_dead_process_reads_as_crashed(tmp_path):
    with Journal(tmp_path) as journal:
        run = journal.start_run(command="rollout", plan_digest="p1")
        assert journal.run(run).state == "running"  # our own pid lives
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        pid = int(dead.stdout)
        assert not pid_alive(pid)
        db = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None)
        db.execute("UPDATE runs SET pid=? WHERE id=?", (pid, run))
        assert journal.run(run).state == "crashed"


def _run_with_steps(journal, digest, outcome, steps):
    run = journal.start_run(command="rollout", plan_digest=digest)
    for phase, host, action, step_outcome in steps:
        step = journal.step_started(run, phase, host, action)
        journal.step_finished(step, step_outcome)
    if outcome:
        journal.finish_run(run, outcome)
    return run


def test_resume_collects_the_chain_of_halted_runs(tmp_path):
    with Journal(tmp_path) as journal:
        old_ok = _run_with_steps(journal, "p1", "ok", [("restart hbr", "hbr09", "restart", "ok")])
        r1 = _run_with_steps(
            journal,
            "p1",
            "failed",
            [
                ("restart hbr", "hbr01", "restart", "changed"),
                ("restart hbr", "hbr02", "restart", "failed"),
            ],
        )
        r2 = _run_with_steps(
            journal,
            "p1",
            None,
            [  # controller killed: never finished
                ("restart hbr", "hbr02", "restart", "changed"),
                ("restart canister", "can01", "restart", "skipped"),
            ],
        )
        done = journal.done_steps("p1")
        assert done == {
            ("restart hbr", "hbr01", "restart"): r1,
            ("restart hbr", "hbr02", "restart"): r2,
            ("restart canister", "can01", "restart"): r2,
        }
        assert ("restart hbr", "hbr09", "restart") not in done  # before a run that finished ok
        assert old_ok < r1
        # A run started now does not count its own (future) steps.
        r3 = journal.start_run(command="rollout", plan_digest="p1")
        assert journal.done_steps("p1", before_run=r3) == done
        assert journal.resume_chain("p1", before_run=r3) == [r2, r1]


def test_first_detail_is_what_was_true_before_the_first_attempt(tmp_path):
    with Journal(tmp_path) as journal:
        r1 = journal.start_run(command="rollout", plan_digest="p1")
        step = journal.step_started(r1, "restart canister", "can02", "restart")
        journal.note(step, {"running": ["TeaLeafA", "TeaLeafB"]})
        journal.step_finished(step, "failed", "TeaLeafB did not start")
        journal.finish_run(r1, "failed")
        r2 = journal.start_run(command="rollout", plan_digest="p1")
        step = journal.step_started(r2, "restart canister", "can02", "restart")
        journal.note(step, {"running": ["TeaLeafA"]})  # B is stopped now: its own failure
        assert journal.first_detail(
            "p1", "restart canister", "can02", "restart", before_run=r2 + 1
        ) == {"running": ["TeaLeafA", "TeaLeafB"]}
        assert journal.first_detail("p1", "restart canister", "can01", "restart") is None


def test_resume_stops_at_another_plan_that_changed_the_fleet(tmp_path):
    with Journal(tmp_path) as journal:
        _run_with_steps(journal, "rollout", "failed", [("restart hbr", "hbr01", "restart", "ok")])
        b1 = _run_with_steps(
            journal, "rollback", "failed", [("disable", "hbr01", "disable", "changed")]
        )
        assert journal.done_steps("rollout") == {}
        # ...but a run of another plan refused at preflight changed nothing and is looked past.
        b2 = _run_with_steps(journal, "rollback", "failed", [])
        _run_with_steps(journal, "rollout", "blocked", [])
        assert journal.resume_chain("rollback") == [b2, b1]
        assert journal.done_steps("rollback") == {("disable", "hbr01", "disable"): b1}


def test_bad_outcomes_are_refused(tmp_path):
    with Journal(tmp_path) as journal:
        run = journal.start_run(command="rollout")
        with pytest.raises(ValueError):
            journal.finish_run(run, "great")
        step = journal.step_started(run, "p", "h", "a")
        with pytest.raises(ValueError):
            journal.step_finished(step, "done")


def test_no_secret_in_journal_or_run_log(tmp_path):
    secret = Secret("Journal-S3cret-77", source="test")
    with Journal(tmp_path) as journal:
        run = journal.start_run(command="rollout")
        step = journal.step_started(run, "import", "hbr01", "import")
        journal.step_finished(
            step, "failed", f"TLSTool import TCXcert.pfx {secret.reveal()} failed"
        )
        journal.finish_run(run, "failed", f"halted: password {secret.reveal()}")
        journal.log(run, f"line with {secret.reveal()}")
        log_text = journal.log_path(run).read_text()
    assert "TLSTool import TCXcert.pfx ****** failed" in log_text
    for path in tmp_path.iterdir():
        assert b"Journal-S3cret-77" not in path.read_bytes(), path


def test_default_state_dir_is_next_to_the_inventory(tmp_path):
    inv = tmp_path / "estate" / "inventory.yaml"
    assert default_state_dir(inv) == (tmp_path / "estate" / ".tealeaf-fleet").resolve()


HOLDER = textwrap.dedent("""
    import sys, time
    from tealeaf_fleet.journal import Journal
    j = Journal(sys.argv[1])
    j.acquire(command="rollout")
    run = j.start_run(command="rollout")
    print(run, flush=True)
    sys.stdin.read()   # hold the lock until the test closes stdin
    j.close()          # a clean exit releases it
""")


def start_holder(state_dir):
    """A second process holding the state folder's lock; returns it and the run it started."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return holder, int(holder.stdout.readline())


def test_a_lock_held_by_a_live_process_is_refused(tmp_path):
    holder, run = start_holder(tmp_path)
    try:
        with Journal(tmp_path) as journal:
            with pytest.raises(ConcurrentRunError) as info:
                journal.acquire(command="rollback")
            assert f"pid {holder.pid}" in str(info.value)
            assert f"run {run}" in str(info.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    # Once the holder exited cleanly, the lock is free and nothing is "taken over".
    with Journal(tmp_path) as journal:
        assert journal.acquire(command="rollback") is None


def test_a_dead_processs_lock_is_taken_over(tmp_path):
    holder, run = start_holder(tmp_path)
    holder.kill()  # SIGKILL: no clean release, the pid stays in the lock file
    holder.wait(timeout=20)
    holder.stdin.close()
    holder.stdout.close()
    assert json.loads((tmp_path / "lock").read_text())["pid"] == holder.pid
    with Journal(tmp_path) as journal:
        message = journal.acquire(command="rollout")
        assert message is not None
        assert f"pid {holder.pid}" in message and f"run {run}" in message
        assert "no longer running" in message
        # And now we hold it: a second acquirer in this process is refused too.
        with Journal(tmp_path) as other, pytest.raises(ConcurrentRunError):
            other.acquire(command="rollout")


# --- host locks: one run per fleet, whatever the state folder --------------------------------

LAB_HOSTS = [("hbr01", "127.0.0.1", 5986), ("can01", "127.0.0.1", 5987)]


@pytest.fixture
def host_lock_dir(tmp_path, monkeypatch):
    folder = tmp_path / "locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(folder))
    return folder


def test_a_second_run_on_the_same_hosts_is_refused_whatever_its_state_folder(
    tmp_path, host_lock_dir
):
    with Journal(tmp_path / "a") as first:
        assert first.acquire(command="rollout", hosts=LAB_HOSTS) is None
        run = first.start_run(command="rollout")
        with Journal(tmp_path / "b") as second:
            # the same machine spelled otherwise: only can01's endpoint is shared
            with pytest.raises(ConcurrentRunError) as info:
                second.acquire(
                    command="rollback",
                    hosts=[("other", "10.0.0.9", 5986), ("CAN-1", "127.0.0.1", 5987)],
                )
            text = str(info.value)
            assert "CAN-1 (127.0.0.1:5987)" in text and f"pid {os.getpid()}" in text
            assert f"run {run}" in text and str((tmp_path / "a").resolve()) in text
            # all or none: nothing of the refused run is left held
            assert second.acquire(command="status", hosts=[("x", "10.0.0.9", 5986)]) is None
    assert list(host_lock_dir.iterdir()) == []  # clean releases remove the host lock files


def test_labs_on_one_address_with_other_ports_do_not_collide(tmp_path, host_lock_dir):
    with Journal(tmp_path / "a") as first, Journal(tmp_path / "b") as second:
        first.acquire(command="rollout", hosts=LAB_HOSTS)
        second.acquire(command="rollout", hosts=[("hbr01", "127.0.0.1", 6986)])
        assert sorted(p.name for p in host_lock_dir.iterdir()) == [
            "127.0.0.1_5986.lock",
            "127.0.0.1_5987.lock",
            "127.0.0.1_6986.lock",
        ]


@pytest.mark.parametrize(
    "a,b",
    [
        (("HBR01.corp.example.", 5986), ("hbr01.corp.example", 5986)),
        (("[::1]", 5986), ("0:0::1", 5986)),
        (("FE80::1", 5985), ("fe80:0:0::1", 5985)),
    ],
)
def test_host_key_normalises_the_address(a, b):
    assert host_key(*a) == host_key(*b)
    assert "/" not in host_key("a/../../b", 1) and host_key("a/../../b", 1).endswith("_1.lock")


def test_the_default_lock_folder_is_private_and_shared(tmp_path, monkeypatch):
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with Journal(tmp_path / "a") as journal:
        journal.acquire(command="rollout", hosts=LAB_HOSTS)
        folder = tmp_path / "home" / ".cache" / "tealeaf-fleet" / "locks"
        assert folder == lock_dir()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert len(list(folder.iterdir())) == 2


HOST_HOLDER = textwrap.dedent("""
    import sys
    from tealeaf_fleet.journal import Journal
    j = Journal(sys.argv[1])
    j.acquire(command="rollout", hosts=[("hbr01", "127.0.0.1", 5986)])
    print(j.start_run(command="rollout"), flush=True)
    sys.stdin.read()
""")


def test_a_dead_runs_host_locks_are_taken_over_naming_it(tmp_path, host_lock_dir):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOST_HOLDER, str(tmp_path / "a")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    run = int(holder.stdout.readline())
    with Journal(tmp_path / "b") as journal:
        with pytest.raises(ConcurrentRunError, match=rf"on h \(127.0.0.1:5986\): pid {holder.pid}"):
            journal.acquire(command="rollout", hosts=[("h", "127.0.0.1", 5986)])
        holder.kill()
        holder.wait(timeout=20)
        holder.stdin.close()
        holder.stdout.close()
        message = journal.acquire(command="rollout", hosts=[("h", "127.0.0.1", 5986)])
        assert message is not None and "took over the host locks of h " in message
        assert f"pid {holder.pid}" in message and f"run {run}" in message
        assert str((tmp_path / "a").resolve()) in message


def test_crashed_is_a_run_outcome_history_shows(tmp_path, capsys):
    from tealeaf_fleet.cli.main import main

    with Journal(tmp_path) as journal:
        run = journal.start_run(command="rollout", plan_digest="p1")
        journal.finish_run(run, "crashed", "crashed: unexpected KeyError")
        assert journal.run(run).state == "crashed"
        assert journal.resume_chain("p1") == [run]  # a crashed run is resumed like a halt
    assert main(["history", str(tmp_path / "inv.yaml"), "--state-dir", str(tmp_path)]) == 0
    assert "crashed" in capsys.readouterr().out


def test_a_planted_lock_file_is_refused_not_written(tmp_path, host_lock_dir):
    """A hard link or a FIFO at a host lock's path (the folder may be shared) is refused with
    the file named: the run would otherwise write its pid into the linked file, or block."""
    host_lock_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.link(victim, host_lock_dir / "127.0.0.1_5986.lock")
    links = "127.0.0.1_5986.lock has other links"
    with Journal(tmp_path / "a") as journal, pytest.raises(InputError, match=links):
        journal.acquire(command="rollout", hosts=LAB_HOSTS)
    assert victim.read_text() == "precious\n"
    (host_lock_dir / "127.0.0.1_5986.lock").unlink()
    os.mkfifo(host_lock_dir / "127.0.0.1_5986.lock")
    not_regular = "is not a regular file"
    with Journal(tmp_path / "b") as journal, pytest.raises(InputError, match=not_regular):
        journal.acquire(command="rollout", hosts=LAB_HOSTS)


def test_a_world_writable_lock_folder_is_refused(tmp_path, host_lock_dir):
    host_lock_dir.mkdir()
    os.chmod(host_lock_dir, 0o777)
    everyone = "writable by every account"
    with Journal(tmp_path / "a") as journal, pytest.raises(InputError, match=everyone):
        journal.acquire(command="rollout", hosts=LAB_HOSTS)
    os.chmod(host_lock_dir, 0o770)  # a team's group-shared folder is accepted
    with Journal(tmp_path / "b") as journal:
        journal.acquire(command="rollout", hosts=LAB_HOSTS)


def test_reboot_records_of_an_older_journal_stay_readable(tmp_path):
    """A journal from before the boot-time comparison (no `reboots.boot`/`rebooted`): opening
    it adds the columns, its rows read with boot None (judged the old way), and new records
    carry the boot they were made in, and the reboots this tool made."""
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.execute(
        "CREATE TABLE reboots (id INTEGER PRIMARY KEY AUTOINCREMENT, run INTEGER, host TEXT NOT"
        " NULL, since TEXT NOT NULL, areas TEXT NOT NULL, recorded REAL NOT NULL)"
    )
    db.execute(
        "INSERT INTO reboots(run, host, since, areas, recorded)"
        " VALUES (1, 'hbr01', '2026-11-27T11:00:00', 'schannel', 0)"
    )
    db.commit()
    db.close()
    with Journal(tmp_path) as journal:
        journal.reboot_needed(2, "hbr01", "2026-11-28T09:00:00", ["dotnet"], "2026-11-20T08:00:00")
        journal.rebooted(2, "hbr01", "2026-11-28T09:05:00")
        records = journal.reboot_records()["hbr01"]
    assert [(r["since"], r["areas"], r["boot"], r["rebooted"]) for r in records] == [
        ("2026-11-27T11:00:00", ["schannel"], None, False),
        ("2026-11-28T09:00:00", ["dotnet"], "2026-11-20T08:00:00", False),
        ("2026-11-28T09:05:00", [], "", True),
    ]
