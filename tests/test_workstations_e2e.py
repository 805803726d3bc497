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
        # --limit first: TLS on one HBR only is refused (the rest is not on TLS), nothing changes
        t_refused = time.time()
        refused = fleet("rollout", str(lab.inventory), "--yes", "--limit", "hbr01")
        assert refused.returncode == 3, refused.stderr
        flowed = " ".join(refused.stderr.split())
        assert "TLS cannot be enabled on part of a Tealeaf fleet" in flowed, flowed
        assert "hbr02" in flowed and "can01" in flowed
        assert changes(lab, t_refused) == []
        dry = fleet("rollout", str(lab.inventory), "--dry-run", "--limit", "hbr01")
        assert dry.returncode == 3, dry.stderr  # the dry run says so too
        assert "TLS cannot be enabled on part" in " ".join(dry.stderr.split()), dry.stderr
        seen = json.loads(fleet("status", str(lab.inventory), "--json", "--limit", "can0*").stdout)
        assert [h["name"] for h in seen["hosts"]] == ["can01", "can02", "can03"]
        planned = fleet("plan", str(lab.inventory), "--format", "json", "--limit", "rtv")
        assert [h["name"] for h in json.loads(planned.stdout)["hosts"]] == ["rtv01"]

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

        # it answers again: the command from the hint finishes it, servers untouched
        set_fault(lab, "rtv01", {})
        t1 = time.time()
        finish = fleet("rollout", str(lab.inventory), "--yes", "--limit", "rtv01", "--json")
        assert finish.returncode == 0, finish.stderr
        assert {e["host"] for e in changes(lab, t1)} == {"rtv01"}
        rtv = next(h for h in status_json(lab)["hosts"] if h["name"] == "rtv01")
        server = next(h for h in status_json(lab)["hosts"] if h["name"] == "hbr01")
        rtv_cert = rtv["facts"]["security"]["cert_sha256"]
        assert rtv_cert and rtv_cert == server["facts"]["security"]["cert_sha256"]


def test_prepare_with_an_unreachable_rtv_imports_on_every_server(tmp_path):
    """`--playbook prepare`: the RTV phases come after the servers' there too; an unreachable
    workstation leaves every server with the pair imported, exit 1, and the finish command
    repeats the playbook."""
    topology = {"portal": 1, "hbr": 1, "canister": 1, "rtv": 1}
    with start_lab(tmp_path / "lab", topology=topology) as lab:
        set_fault(lab, "rtv01", {"unreachable": True})
        out = fleet("rollout", str(lab.inventory), "--playbook", "prepare", "--yes", "--json")
        assert out.returncode == 1, out.stderr
        finished = json.loads(out.stdout.splitlines()[-1])
        assert list(finished["workstations"]) == ["rtv01"]
        assert f"{lab.inventory} --limit rtv01 --playbook prepare" in finished["hint"]
        status = status_json(lab)
        shas = {
            h["name"]: h["facts"]["security"]["cert_sha256"]
            for h in status["hosts"]
            if h["name"] in tls_hosts(lab)
        }
        assert set(shas) == set(tls_hosts(lab)) and len(set(shas.values())) == 1
        assert None not in shas.values()
