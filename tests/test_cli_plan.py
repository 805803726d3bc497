"""`fleet plan` end to end, in subprocesses: exit codes, one-line errors, output files, the
packaged scripts, no network connection, no secret in any output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "inventory.example.yaml"
SECRET_WINRM = "Kx9-cli-winrm-secret-2718"
SECRET_PFX = "Kx9-cli-pfx-secret-3141"

# Loaded through PYTHONPATH into every subprocess of the no-network test: any attempt to
# resolve a name or connect a socket ends the process loudly with exit code 99.
SITECUSTOMIZE = """
import os, socket, sys
def _refuse(*args, **kwargs):
    sys.stderr.write("NETWORK ATTEMPT %r\\n" % (args,))
    sys.stderr.flush()
    os._exit(99)
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def fleet(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "TEALEAF_WINRM_PASSWORD": SECRET_WINRM,
        "TEALEAF_PFX_PASSWORD": SECRET_PFX,
        "COLUMNS": "160",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "tealeaf_fleet", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "inventory.yaml"
    shutil.copy(EXAMPLE, inv)
    return inv


def test_plan_prints_a_table_by_default(inventory: Path) -> None:
    proc = fleet("plan", str(inventory))
    assert proc.returncode == 0, proc.stderr
    assert "restart_hbr (restart): rolling, one host at a time" in proc.stdout
    assert "Plan digest: " in proc.stdout
    assert proc.stderr == ""


def test_plan_json_to_file_and_formats(inventory: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = fleet("plan", str(inventory), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    data = json.loads(out.read_text())  # format chosen from the suffix
    assert data["format_version"] == 3 and data["playbook"]["name"] == "rollout"
    assert f"plan {data['digest'][:12]} written to {out}" in proc.stderr
    md = fleet("plan", str(inventory), "--playbook", "rollback", "--format", "markdown")
    assert md.returncode == 0 and md.stdout.startswith("# Change plan: rollback")
    same = fleet("plan", str(inventory), "--format", "json")
    assert json.loads(same.stdout)["digest"] == data["digest"]


def test_playbook_file(inventory: Path, tmp_path: Path) -> None:
    pb = tmp_path / "mine.yaml"
    pb.write_text("name: mine\nexpect_tls: true\nphases:\n  - {op: verify}\n")
    proc = fleet("plan", str(inventory), "--playbook", str(pb), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [p["op"] for p in json.loads(proc.stdout)["phases"]] == ["verify"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hosts:\n  a: {address: x, role: hbrr}\n", ":2: hosts.a.role: unknown role 'hbrr'"),
        ("hosts: [\n", ": YAML syntax error"),
        (
            "winrm: {username: u}\nhosts:\n  a: {address: x, role: hbr, tms_port: 0}\n",
            ":3: hosts.a.tms_port: 0 is out of range",
        ),
    ],
)
def test_bad_inventory_exits_2_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    inv = tmp_path / "bad.yaml"
    inv.write_text(text)
    proc = fleet("plan", str(inv))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"fleet: error: {inv}") and expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_playbook_and_missing_inventory_exit_2(inventory: Path, tmp_path: Path) -> None:
    proc = fleet("plan", str(inventory), "--playbook", "rollot")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "no packaged playbook 'rollot'" in proc.stderr
    proc = fleet("plan", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = fleet("plan", str(inventory), "--format", "xml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_out_into_missing_folder_is_input_error(inventory: Path, tmp_path: Path) -> None:
    proc = fleet("plan", str(inventory), "--out", str(tmp_path / "no" / "plan.json"))
    assert proc.returncode == 2 and "--out: folder" in proc.stderr


def test_validate_certs_false_warns_on_every_run(inventory: Path) -> None:
    inventory.write_text(
        inventory.read_text().replace("  # validate_certs: false ", "  validate_certs: false   ")
    )
    proc = fleet("plan", str(inventory), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "fleet: warning: " in proc.stderr and "validate_certs is false" in proc.stderr


def test_scripts_are_written_byte_for_byte(inventory: Path, tmp_path: Path) -> None:
    target = tmp_path / "scripts"
    proc = fleet("plan", str(inventory), "--format", "json", "--scripts", str(target))
    assert proc.returncode == 0, proc.stderr
    packaged = {
        e.name: e.read_bytes()
        for e in (resources.files("tealeaf_fleet.ops") / "scripts").iterdir()
        if e.name.endswith(".ps1")
    }
    written = {p.name: p.read_bytes() for p in target.iterdir()}
    assert written == packaged
    assert f"wrote {len(packaged)} scripts" in proc.stderr


def test_plan_opens_no_network_connection(inventory: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"PYTHONPATH": str(site)}
    # the guard works: a connection attempt in such a process exits 99
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 99 and "NETWORK ATTEMPT" in probe.stderr
    for fmt in ("table", "markdown", "json"):
        proc = fleet(
            "plan", str(inventory), "--format", fmt, "--scripts", str(tmp_path / "s"), env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert "NETWORK ATTEMPT" not in proc.stderr
    # --dry-run on the changing commands prints the same plan, and connects to nothing either
    for command in ("rollout", "rollback"):
        proc = fleet(command, str(inventory), "--dry-run", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "NETWORK ATTEMPT" not in proc.stderr
        assert "Plan digest" in proc.stdout


def test_no_secret_in_any_output(inventory: Path, tmp_path: Path) -> None:
    pw = tmp_path / "winrm.pw"
    pw.write_text("Kx9-cli-file-secret-1618\n")
    os.chmod(pw, 0o600)
    text = inventory.read_text().replace(
        "    winrm:                               # any winrm key may be overridden per host\n"
        "      port: 5986",
        "    winrm:\n      password_file: winrm.pw",
    )
    assert "winrm.pw" in text
    inventory.write_text(text)
    for playbook in ("rollout", "rollback", "prepare", "status"):
        for fmt in ("table", "markdown", "json"):
            out = tmp_path / f"{playbook}.{fmt}"
            for args in (("--out", str(out)), ()):
                proc = fleet("plan", str(inventory), "--playbook", playbook, "--format", fmt, *args)
                assert proc.returncode == 0, proc.stderr
                blob = proc.stdout + proc.stderr + (out.read_text() if out.exists() else "")
                for secret in (SECRET_WINRM, SECRET_PFX, "Kx9-cli-file-secret-1618"):
                    assert secret not in blob


def test_cli_modules_import_no_heavy_library() -> None:
    """What `fleet --help` loads of this command: no rich, PyYAML, pywinrm, cryptography."""
    code = (
        "import sys, tealeaf_fleet.cli.plan, tealeaf_fleet.cli.common; "
        "print(sorted(m for m in ('rich', 'yaml', 'winrm', 'cryptography') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_facts_against_a_lab_mark_done_steps(tmp_path: Path) -> None:
    """`--facts` over the real stack: pywinrm to the lab, the packaged facts script's model.
    A fresh lab has TLS off: the rollback has nothing to do, the rollout everything."""
    from tealeaf_fleet.lab.fleet import Lab

    lab = Lab.start(tmp_path / "lab", topology={"hbr": 2, "pca": 1})
    try:
        back = fleet(
            "plan",
            str(lab.inventory),
            "--facts",
            "--playbook",
            "rollback",
            "--format",
            "json",
            timeout=150,
        )
        forth = fleet("plan", str(lab.inventory), "--facts", "--format", "json", timeout=150)
    finally:
        lab.stop()
    assert back.returncode == 0, back.stderr
    assert forth.returncode == 0, forth.stderr
    rollback, rollout = json.loads(back.stdout), json.loads(forth.stdout)
    assert rollback["facts_digest"] is not None and rollout["facts_digest"] is not None

    def skips(plan: dict, phase: str) -> dict[str, str | None]:
        return {
            s["host"]: s["skip_reason"]
            for p in plan["phases"]
            if p["name"] == phase
            for s in p["steps"]
        }

    disable = skips(rollback, "disable")
    assert set(disable) == {"hbr01", "hbr02"}
    assert all(r and r.startswith("nothing to do: EnableTLS is ") for r in disable.values())
    assert all(r and "started in plain mode" in r for r in skips(rollback, "restart_hbr").values())
    assert skips(rollout, "enable") == {"hbr01": None, "hbr02": None}
    assert skips(rollout, "import") == {"hbr01": None, "hbr02": None}
    # the restart names the services the lab host really runs
    restart = next(s for p in rollout["phases"] if p["name"] == "restart_hbr" for s in p["steps"])
    assert "restart TeaLeaf" in restart["description"]


@pytest.mark.slow
def test_facts_with_an_unreachable_host_warn_and_keep_its_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One host drops every connection (lab fault `unreachable`): `fleet plan --facts` still
    plans (exit 0), warns naming the host and the error class with its hint, and plans that
    host's steps as if nothing were done, while the host that answered gets its skips. TLS is
    off on both, so the rollback's disable is skipped exactly where facts were read."""
    from tealeaf_fleet.cli.main import main
    from tealeaf_fleet.lab.fleet import Lab

    with Lab.start(tmp_path / "lab", topology={"hbr": 2}, restart_s=0.2) as lab:
        lab.host("hbr02").set_faults({"unreachable": True})
        code = main(
            ["plan", str(lab.inventory), "--facts", "--playbook", "rollback", "--format", "json"]
        )
        password = lab.winrm_password()
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("fleet: warning: hbr02:")]
    assert len(warnings) == 1, err
    assert "facts not read: HostUnreachable: cannot connect to" in warnings[0]
    assert "(hint: check the address" in warnings[0]
    assert "planned as if nothing were done there" in warnings[0]
    assert "hbr01" not in err
    assert password not in out + err
    plan = json.loads(out)
    assert plan["facts_digest"] is not None
    steps = {(p["name"], s["host"]): s["skip_reason"] for p in plan["phases"] for s in p["steps"]}
    for phase in ("preflight", "disable", "restart_hbr", "verify"):
        assert (phase, "hbr02") in steps and steps[(phase, "hbr02")] is None, phase
    assert steps[("disable", "hbr01")] == "nothing to do: EnableTLS is absent"
    assert steps[("restart_hbr", "hbr01")] is not None
