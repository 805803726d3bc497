"""`procutil.pid_alive`: the one answer the journal lock and the lab give to "is the pid in
this file still running?"."""

from __future__ import annotations

import os
import subprocess
import sys

from tealeaf_fleet.procutil import pid_alive


def test_own_process_is_alive() -> None:
    assert pid_alive(os.getpid())


def test_reaped_child_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    assert not pid_alive(child.pid)


def test_zero_and_negative_pids_are_never_alive() -> None:
    # os.kill(0, 0) / os.kill(-1, 0) would succeed (our process group / every process we may
    # signal): a lab.json or lock file holding 0 must not read as "still running"
    assert not pid_alive(0)
    assert not pid_alive(-1)
