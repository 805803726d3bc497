"""`fleet lab up|state` and the `Lab` orchestrator, through the real stack: a subprocess lab,
pywinrm over https with the lab CA and over http + NTLM, the op bootstrap on stdin, real files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tealeaf_fleet.lab.fleet import Lab, names_for, parse_topology
from tealeaf_fleet.ops import protocol

FLEET = [sys.executable, "-m", "tealeaf_fleet"]


def run_op(
    url: str, username: str, password: str, ca: Path | None, op: str, params: dict
) -> tuple[int, str, str]:
    """One op as the transport sends it: bootstrap command line, framed script on stdin."""
    from winrm.protocol import Protocol

    if url.startswith("https"):
        security = {
            "transport": "basic",
            "server_cert_validation": "validate",
            "ca_trust_path": str(ca),
        }
    else:
        security = {"transport": "ntlm", "message_encryption": "always"}
    p = Protocol(endpoint=url, username=username, password=password, **security)
    shell = p.open_shell(codepage=65001)
    try:
        cmd, args = protocol.command_line()
        cid = p.run_command(shell, cmd, args, console_mode_stdin=False)  # pipe: stdin ends
        p.send_command_input(shell, cid, protocol.build_stdin(op, params), end=True)
        out, err, code = p.get_command_output(shell, cid)
        p.cleanup_command(shell, cid)
    finally:
        p.close_shell(shell)
    return code, out.decode("utf-8"), err.decode("utf-8")


def wait_file(path: Path, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"lab exited early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("lab.json did not appear")
        time.sleep(0.1)


@pytest.fixture
def lab_process(tmp_path: Path):
    lab_dir = tmp_path / "lab"
    proc = subprocess.Popen(
        [
            *FLEET,
            "lab",
            "up",
            "--dir",
            str(lab_dir),
            "--topology",
            "portal=1,hbr=1,canister=1,pca=1,rtv=1",
            "--restart-s",
            "0.2",
            "--log-style",
            "live",  # TLDataService.log: `fleet lab state` and facts must read it
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_file(lab_dir / "lab.json", proc)
        yield lab_dir, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_lab_up_serves_winrm_writes_files_and_stops_on_sigterm(lab_process) -> None:
    import winrm

    from tealeaf_fleet.inventory import load_fleet

    lab_dir, proc = lab_process
    lab = json.loads((lab_dir / "lab.json").read_text())
    assert lab["pid"] == proc.pid
    assert set(lab["hosts"]) == {"portal01", "hbr01", "can01", "pca01", "rtv01"}
    assert lab["hosts"]["pca01"]["https"] is None  # never contacted: no endpoint
    assert lab["log_style"] == lab["hosts"]["hbr01"]["log_style"] == "live"
    assert (lab_dir / "hosts/hbr01/fs/D/Tealeaf/Logs/TLDataService.log").is_file()
    for name in ("portal01", "hbr01", "can01", "rtv01"):
        entry = lab["hosts"][name]
        assert entry["https"].startswith("https://127.0.0.1:")
        assert entry["http"].startswith("http://127.0.0.1:")
        for f in ("registry.json", "services.json", "faults.json", "fs"):
            assert (lab_dir / entry["dir"] / f).exists()
        assert json.loads((lab_dir / entry["dir"] / "faults.json").read_text()) == {}
    for secret_file in (lab["password_file"], lab["pfx_password_file"]):
        assert stat.S_IMODE((lab_dir / secret_file).stat().st_mode) == 0o600
    fleet = load_fleet(lab_dir / "inventory.yaml")  # a valid inventory, every path inside DIR
    assert fleet.hosts["hbr01"].winrm.port == int(
        lab["hosts"]["hbr01"]["https"].split(":")[2].split("/")[0]
    )
    assert fleet.hosts["hbr01"].data_service_port == lab["hosts"]["hbr01"]["data_service_port"]
    assert fleet.hosts["pca01"].role == "pca"
    assert fleet.certificate.source == "generate"
    password = (lab_dir / lab["password_file"]).read_text().strip()
    ca = lab_dir / lab["ca_file"]

    session = winrm.Session(
        lab["hosts"]["hbr01"]["https"],
        auth=(lab["username"], password),
        transport="basic",
        server_cert_validation="validate",
        ca_trust_path=str(ca),
    )
    res = session.run_cmd("hostname")
    assert (res.status_code, res.std_out) == (0, b"HBR01\r\n")
    ntlm = winrm.Session(
        lab["hosts"]["can01"]["http"], auth=(lab["username"], password), transport="ntlm"
    )
    assert ntlm.run_cmd("hostname").std_out == b"CAN01\r\n"

    pytest.importorskip("tealeaf_fleet.lab.models")
    code, out, err = run_op(
        lab["hosts"]["portal01"]["https"],
        lab["username"],
        password,
        ca,
        "facts",
        {"InstallDir": "", "Since": ""},
    )
    assert code == 0, err
    facts = protocol.parse_result(out)
    assert facts["install_dir"].lower() == r"d:\tealeaf"
    assert facts["data_service"]["mode"] == "plain"
    assert facts["data_service"]["log"] == facts["data_service"]["newest_log"]
    assert facts["data_service"]["newest_log"].endswith("\\Logs\\TLDataService.log")
    assert any(s["name"] == "TeaLeafTMS" for s in facts["services"])

    state = subprocess.run(
        [*FLEET, "lab", "state", "--dir", str(lab_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert state.returncode == 0, state.stderr
    hosts = {h["name"]: h for h in json.loads(state.stdout)["hosts"]}
    assert hosts["hbr01"]["enable_tls"] is None
    assert hosts["hbr01"]["data_service"]["mode"] == "plain"
    assert hosts["hbr01"]["services_running"] == hosts["hbr01"]["services_total"] > 0
    assert hosts["pca01"]["simulated"] is False

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert str(lab_dir / "inventory.yaml") in lines[0]
    for name in lab["hosts"]:
        assert any(line.split()[:1] == [name] for line in lines)
    assert lines[-1] == "lab stopped"
    text = subprocess.run(
        [*FLEET, "lab", "state", "--dir", str(lab_dir)], capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0 and "hbr01" in text.stdout and "plain:" in text.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--topology", "web=1"],
        ["--topology", "hbr=x"],
        ["--restart-s", "-1"],
        ["--os", "2003"],
        ["--os", "2016,nohost=2019"],
        ["--build", "hbr01="],
        ["--install-dir", "Tealeaf"],
        ["--log-style", "rolling"],
    ],
)
def test_lab_up_bad_flags_exit_2_with_one_line(tmp_path: Path, argv: list[str]) -> None:
    res = subprocess.run(
        [*FLEET, "lab", "up", "--dir", str(tmp_path / "x"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x" / "lab.json").exists()


def test_lab_state_without_a_lab_is_input_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [*FLEET, "lab", "state", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "lab.json" in res.stderr


def test_lab_dir_reuses_a_previous_lab_and_keeps_every_other_file(tmp_path: Path) -> None:
    """A previous lab's folder is taken again: the lab's own files are replaced (a new WinRM
    password), anything else stays, and a rollout's TCXcert.pfx keeps the PFX password that
    opens it; the folders holding keys are 0700. (Folders that hold no lab are refused:
    tests/data/hostile/labdir.yaml.)"""
    folder = tmp_path / "lab"
    with Lab.start(folder, topology={"hbr": 1}, restart_s=0.2, ntlm=False) as lab:
        first_password = lab.winrm_password()
        pfx_password = lab.pfx_password_file.read_text()
        for sub in (folder, folder / "hosts", folder / "ca"):
            assert stat.S_IMODE(sub.stat().st_mode) == 0o700, sub
        assert not (folder / ".fleet-lab-starting").exists()
    (folder / "notes.txt").write_text("mine")
    (folder / ".tealeaf-fleet").mkdir()  # a rollout's journal: not the lab's to delete
    (folder / "TCXcert.pfx").write_bytes(b"made by a rollout, with the lab's PFX password")
    with Lab.start(folder, topology={"hbr": 1}, restart_s=0.2, ntlm=False) as lab:
        assert lab.winrm_password() != first_password
        assert lab.pfx_password_file.read_text() == pfx_password
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / ".tealeaf-fleet").is_dir()
    assert (folder / "TCXcert.pfx").read_bytes().startswith(b"made by a rollout")
    (folder / "TCXcert.pfx").unlink()
    with Lab.start(folder, topology={"hbr": 1}, restart_s=0.2, ntlm=False) as lab:
        assert lab.pfx_password_file.read_text() != pfx_password  # no PFX: a fresh password


def test_lab_dir_after_a_start_that_never_finished(tmp_path: Path) -> None:
    """No lab.json yet (it is written last), but the start marker says the folder is a lab's."""
    folder = tmp_path / "lab"
    (folder / "hosts" / "hbr01").mkdir(parents=True)
    (folder / "hosts" / "hbr01" / "half.txt").write_text("from the killed start")
    (folder / ".fleet-lab-starting").touch()
    with Lab.start(folder, topology={"hbr": 1}, restart_s=0.2, ntlm=False) as lab:
        assert set(lab.hosts) == {"hbr01"}
    assert not (folder / "hosts" / "hbr01" / "half.txt").exists()


def test_lab_dir_symlinks_of_a_previous_lab_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "lab.json").write_text('{"pid": 0, "hosts": {}}')
    (folder / "hosts").symlink_to(outside)
    (folder / "inventory.yaml").symlink_to(outside / "keep.txt")
    with Lab.start(folder, topology={"hbr": 1}, restart_s=0.2, ntlm=False):
        assert not (folder / "hosts").is_symlink()
    assert (outside / "keep.txt").read_text() == "keep"


def test_topology_names() -> None:
    topo = parse_topology("portal=1,hbr=2,canister=3,report=1,other=1,pca=1,rtv=1")
    assert [n for n, _ in names_for(topo)] == [
        "portal01",
        "hbr01",
        "hbr02",
        "can01",
        "can02",
        "can03",
        "rpt01",
        "oth01",
        "pca01",
        "rtv01",
    ]


def test_tls_rollout_by_ops_over_winrm_then_state_and_no_password_in_lab(tmp_path: Path) -> None:
    """Import + enable + restart on one host through the packaged ops over https, then the
    Data Service serves the PFX's certificate, `lab state` shows it, and no file in the lab
    (other than the password file itself) contains the PFX password."""
    pytest.importorskip("tealeaf_fleet.lab.models")
    from tealeaf_fleet import certs, tlsprobe
    from tealeaf_fleet.secrets import Secret

    with Lab.start(
        tmp_path / "lab", topology={"hbr": 1, "pca": 1}, restart_s=0.2, os="2008r2"
    ) as lab:
        pfx_pw = lab.pfx_password_file.read_text().strip()
        pfx_bytes = certs.generate_pfx(Secret(pfx_pw))
        pfx_sha = certs.load_pfx(pfx_bytes, Secret(pfx_pw)).sha256
        host = lab.host("hbr01")
        host.write_file(r"D:\Tealeaf\Tools\TCXcert.pfx", pfx_bytes)
        url, user, pw = lab.url("hbr01"), lab.username, lab.winrm_password()
        before = tlsprobe.handshake("127.0.0.1", host.data_service_port)
        assert before.kind == "plain"
        for verb, extra in (
            ("import", {"PfxPath": r"D:\Tealeaf\Tools\TCXcert.pfx", "Password": pfx_pw}),
            ("enable", {"PfxPath": "", "Password": ""}),
        ):
            code, out, err = run_op(
                url,
                user,
                pw,
                lab.ca_file,
                "tlstool",
                {"InstallDir": r"D:\Tealeaf", "Verb": verb, **extra},
            )
            assert code == 0, err
            result = protocol.parse_result(out)
            assert result["exit_code"] == 0, result
            assert pfx_pw not in out
        running = [
            s.name
            for s in host.services()
            if s.state == "Running" and s.name.lower().startswith("tealeaf")
        ]
        code, out, err = run_op(
            url, user, pw, lab.ca_file, "restart_services", {"Names": running, "TimeoutS": 30}
        )
        assert code == 0, err
        after = tlsprobe.handshake("127.0.0.1", host.data_service_port)
        assert after.kind == "tls" and after.sha256 == pfx_sha
        tms = tlsprobe.handshake("127.0.0.1", host.tms_port)
        assert tms.sha256 == pfx_sha

        from tealeaf_fleet.lab.state import lab_state

        hbr = {h["name"]: h for h in lab_state(lab.dir)["hosts"]}["hbr01"]
        assert hbr["enable_tls"] == 1 and hbr["cert_sha256"] == pfx_sha
        assert hbr["data_service"]["mode"] == "tls"
        assert hbr["data_service"]["port"] == host.data_service_port

    leaks = [
        str(p)
        for p in lab.dir.rglob("*")
        if p.is_file() and p != lab.pfx_password_file and pfx_pw.encode() in p.read_bytes()
    ]
    assert leaks == []
    events = [json.loads(line) for line in (lab.dir / "events.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in events} >= {"service", "registry", "file", "tlstool", "request"}
    assert [e["verb"] for e in events if e["kind"] == "tlstool"] == ["import", "enable"]


def test_from_inventory_mirrors_hosts_roles_and_install_dir(tmp_path: Path) -> None:
    inv = tmp_path / "real.yaml"
    inv.write_text(
        "tealeaf: {install_dir: 'E:\\TL'}\n"
        "hosts:\n"
        "  tlportal: {address: portal.corp.example, role: portal}\n"
        "  tlhbr-a: {address: 10.0.0.1, role: hbr}\n"
        "  pca-x: {address: 10.0.0.9, role: pca}\n"
    )
    with Lab.start(tmp_path / "lab", from_inventory=inv, restart_s=0.2, ntlm=False) as lab:
        assert lab.roles == {"tlportal": "portal", "tlhbr-a": "hbr", "pca-x": "pca"}
        assert lab.host("tlhbr-a").install_dir == r"E:\TL"
        assert lab.host("tlhbr-a").exists(r"E:\TL\Tools\TLSTool.exe")
        assert lab.url("tlhbr-a", "http") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  a: {role: mainframe}\n")
    from tealeaf_fleet.errors import InputError

    with pytest.raises(InputError, match="role"):
        Lab.start(tmp_path / "lab2", from_inventory=bad)


@pytest.mark.slow
def test_fifty_host_lab_starts_and_answers(tmp_path: Path) -> None:
    import winrm

    topo = {"portal": 1, "hbr": 10, "canister": 30, "report": 2, "other": 2, "pca": 1, "rtv": 4}
    with Lab.start(tmp_path / "lab", topology=topo, restart_s=0.2) as lab:
        assert len(lab.roles) == 50
        data = json.loads(lab.lab_json.read_text())
        ports = [
            h[k] for h in data["hosts"].values() for k in ("data_service_port", "tms_port") if h[k]
        ]
        urls = [h[k] for h in data["hosts"].values() for k in ("https", "http") if h[k]]
        assert len(set(ports)) == len(ports) and len(set(urls)) == len(urls)
        last = sorted(lab.hosts)[-1]
        s = winrm.Session(
            lab.url(last),
            auth=(lab.username, lab.winrm_password()),
            transport="basic",
            server_cert_validation="validate",
            ca_trust_path=str(lab.ca_file),
        )
        assert s.run_cmd("hostname").std_out == last.upper().encode() + b"\r\n"
    assert os.path.exists(lab.lab_json)


def test_per_host_os_build_and_initial_faults(tmp_path: Path) -> None:
    with Lab.start(
        tmp_path / "lab",
        topology={"hbr": 2},
        restart_s=0.2,
        ntlm=False,
        os={"*": "2019", "hbr02": "2008r2"},
        build={"hbr02": "9.0.2.1223"},
        faults={"hbr01": {"data_service_23443": True}},
    ) as lab:
        assert (lab.host("hbr01").os_version, lab.host("hbr02").ps_version) == ("10.0.17763", "2.0")
        assert (lab.host("hbr01").build, lab.host("hbr02").build) == ("9.0.2.1351", "9.0.2.1223")
        from tealeaf_fleet.lab.state import lab_state

        hosts = {h["name"]: h for h in lab_state(lab.dir)["hosts"]}
        assert hosts["hbr01"]["data_service"]["port"] == 23443
        assert hosts["hbr01"]["faults"] == ["data_service_23443"]
        assert hosts["hbr02"]["build"] == "9.0.2.1223"
