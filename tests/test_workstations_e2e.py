"""RTV workstations never hold up the server change, end to end (real CLI, real WinRM to the
lab, real handshakes): an unreachable workstation is a preflight warning, every server still
ends with TLS on and handshakes right, and the run ends exit 1 naming the workstation with the
`--limit` command that finishes it once it answers again.
"""

from __future__ import annotations

import json
import time

import pytest

from test_rollout_e2e import (  # the e2e helpers: one lab per test, the real CLI
    assert_no_secret,
    changes,
    fleet,
    lock_dir,  # noqa: F401 (autouse fixture: one lock folder per module)
    module_lock_dir,  # noqa: F401
    set_fault,
    start_lab,
    status_json,
    tls_hosts,
)

pytestmark = pytest.mark.slow


def test_an_unreachable_rtv_leaves_the_servers_done_and_names_the_way_to_finish_it(tmp_path):
    with start_lab(tmp_path / "lab") as lab:
        set_fault(lab, "rtv01", {"unreachable": True})
        t0 = time.time()
        out = fleet("rollout", str(lab.inventory), "--yes", "--json")
        assert out.returncode == 1, out.stderr
        stream = [json.loads(line) for line in out.stdout.splitlines()]
        finished = stream[-1]
        assert finished["type"] == "run_finished" and finished["result"] == "failed"
        assert list(finished["workstations"]) == ["rtv01"]
        assert "cannot read facts" in finished["workstations"]["rtv01"]
        assert "--limit rtv01" in finished["hint"]
        preflight = [
            e for e in stream if e["type"] == "step_finished" and e.get("phase") == "preflight"
        ]
        assert {e["outcome"] for e in preflight} == {"ok"}  # a warning, not a blocker
        # every server carries TLS and answers with it
        status = status_json(lab)
        for name in tls_hosts(lab):
            row = next(h for h in status["hosts"] if h["name"] == name)
            assert row["facts"]["enable_tls"] == 1, name
            assert row["handshakes"]["data_service"]["kind"] == "tls", name
        assert not [e for e in changes(lab, t0) if e["host"] == "rtv01"]
        # the RTV phases came after every server restart
        order = [e["phase"] for e in stream if e["type"] == "phase_started"]
        assert order.index("rtv_import") > order.index("restart_rest")

        human = fleet("rollout", str(lab.inventory), "--yes")
        assert human.returncode == 1
        assert "RTV workstations not finished" in human.stderr
        assert "rtv01: preflight: cannot read facts" in human.stderr
        flowed = "".join(human.stderr.split())  # the console wraps long lines
        assert f"fleetrollout{lab.inventory}--limitrtv01" in flowed
        assert_no_secret(lab, out.stdout, out.stderr, human.stdout, human.stderr)
