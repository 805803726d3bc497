"""Certificate rotation end to end through the real stack, on ONE lab shared by the steps of
this module, in order (each step starts from where the previous left the fleet): rollout with
pair A; `rotate` to pair B; back to A from the archive; a rotation halted by a fault resumes;
`fleet status --expiry-days` with a short-lived pair. pywinrm over HTTPS to the lab, real TLS
handshakes to every Data Service and TMS port, real files, real SQLite.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from tealeaf_fleet.lab.fleet import Lab
from test_rollout_e2e import (
    events,
    fleet,
    restart_windows,
    start_lab,
    status_json,
    tls_hosts,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOPOLOGY = {"portal": 1, "hbr": 2, "canister": 2, "rtv": 1, "pca": 1}
SECURITY = "fs/C/ProgramData/IBM/Tealeaf/security"


@pytest.fixture(scope="module")
def lock_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("host-locks")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, lock_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("TEALEAF_FLEET_LOCK_DIR", str(lock_dir))
    try:
        with start_lab(tmp_path_factory.mktemp("rotlab") / "lab", topology=TOPOLOGY) as lab:
            yield lab
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Every stdout/stderr of the module's commands: searched for secrets at the end."""
    return []


def run(outputs: list[str], *args: str, **kw):
    result = fleet(*args, **kw)
    outputs.extend([result.stdout, result.stderr])
    return result


def point_inventory_at(lab: Lab, pfx: Path) -> None:
    """certificate: source file, the given PFX and its `.password` file beside it."""
    text = lab.inventory.read_text(encoding="utf-8")
    head, rest = text.split("certificate:\n", 1)
    _, tail = rest.split("rollout:\n", 1)
    block = (
        "certificate:\n  source: file\n"
        f"  path: {pfx}\n  password_file: {pfx.with_name(pfx.name + '.password')}\n"
    )
    lab.inventory.write_text(head + block + "rollout:\n" + tail, encoding="utf-8")


def crt_fingerprint(lab: Lab, host: str) -> str:
    """SHA-256 of the first certificate in the host's tealeaf.crt, read from the lab's disk."""
    from tealeaf_fleet.certs import fingerprint

    pem = (lab.dir / "hosts" / host / SECURITY / "tealeaf.crt").read_bytes()
    return fingerprint(x509.load_pem_x509_certificate(pem))


def presented(port: int) -> str:
    """The certificate a real TLS handshake to 127.0.0.1:port presents (SHA-256 hex)."""
    import hashlib
    import socket

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def enable_tls(lab: Lab, host: str):
    data = json.loads((lab.dir / "hosts" / host / "registry.json").read_text())
    return data.get("HKLM:\\SOFTWARE\\Wow6432Node\\TeaLeaf Technology", {}).get("EnableTLS")


def serial_restarts_do_not_overlap(lab: Lab, since: float) -> None:
    windows = restart_windows(lab, since)
    serial = [n for n, r in lab.roles.items() if r in ("hbr", "canister")]
    spans = sorted(windows[n] for n in serial)
    assert len(spans) == len(serial), windows
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start
    hbr_end = max(windows[n][1] for n, r in lab.roles.items() if r == "hbr")
    can_start = min(windows[n][0] for n, r in lab.roles.items() if r == "canister")
    assert hbr_end <= can_start


def assert_fleet_on(lab: Lab, sha: str) -> None:
    """tealeaf.crt is `sha` on every Windows host, EnableTLS 1 on every server, and real
    handshakes on every Data Service and TMS port present `sha`."""
    for name, role in lab.roles.items():
        if role == "pca":
            continue
        assert crt_fingerprint(lab, name) == sha, name
    for name in tls_hosts(lab):
        assert enable_tls(lab, name) == 1, name
        host = lab.hosts[name]
        assert presented(host.data_service_port) == sha, name
        assert presented(host.tms_port) == sha, name


def test_rollout_a_then_rotate_to_b(lab, outputs, tmp_path_factory):
    out = run(outputs, "rollout", str(lab.inventory), "--yes")
    assert out.returncode == 0, out.stderr
    a = status_json(lab)["reference"]["sha256"]
    assert_fleet_on(lab, a)

    b_pfx = lab.dir / "pairB.pfx"
    made = run(outputs, "cert", "create", "--out", str(b_pfx))
    assert made.returncode == 0, made.stderr
    point_inventory_at(lab, b_pfx)
    t0 = time.time()
    rotated = run(outputs, "rollout", str(lab.inventory), "--playbook", "rotate", "--yes", "--json")
    assert rotated.returncode == 0, rotated.stderr + rotated.stdout[-3000:]
    stream = [json.loads(line) for line in rotated.stdout.splitlines()]
    b = status_json(lab)["reference"]["sha256"]
    assert b != a
    assert_fleet_on(lab, b)
    serial_restarts_do_not_overlap(lab, t0)
    # TLS never went off: no enable or disable ran, EnableTLS was never written
    later = events(lab, t0)
    assert not [e for e in later if e["kind"] == "tlstool" and e["verb"] != "import"]
    assert not [e for e in later if e["kind"] == "registry" and e.get("name") == "EnableTLS"]
    shakes = [e for e in stream if e["type"] == "gate" and e.get("gate") == "handshake"]
    assert {e["host"] for e in shakes} == set(tls_hosts(lab))
    assert all(e["outcome"] == "ok" for e in shakes)


def test_rotate_back_to_a_from_the_archive(lab, outputs):
    state = lab.dir / ".tealeaf-fleet"
    history = run(outputs, "cert", "history", str(lab.inventory), "--json")
    assert history.returncode == 0, history.stderr
    listed = json.loads(history.stdout)["certificates"]
    a, b = listed[0]["sha256"], listed[1]["sha256"]
    assert len(listed) == 2 and crt_fingerprint(lab, "hbr01") == b
    assert listed[0]["runs"][0]["command"] == "rollout" and listed[0]["runs"][0]["outcome"] == "ok"
    assert listed[1]["runs"][0]["playbook"] == "rotate"
    for sha in (a, b):
        for suffix in (".pfx", ".json"):
            path = state / "certificates" / f"{sha}{suffix}"
            assert path.stat().st_mode & 0o777 == 0o600, path
    human = run(outputs, "cert", "history", str(lab.inventory))
    assert human.returncode == 0 and "days left" in human.stdout and "rotate" in human.stdout

    # the archive keeps no password: going back needs it from a password source
    no_password = run(
        outputs,
        "rollout",
        str(lab.inventory),
        "--playbook",
        "rotate",
        "--yes",
        "--certificate-from-archive",
        a[:16],
    )
    assert no_password.returncode == 2, no_password.stderr
    assert "--certificate-password" in no_password.stderr
    t0 = time.time()
    back = run(
        outputs,
        "rollout",
        str(lab.inventory),
        "--playbook",
        "rotate",
        "--yes",
        "--certificate-from-archive",
        a[:16],
        "--certificate-password-file",
        str(lab.pfx_password_file),
    )
    assert back.returncode == 0, back.stderr
    assert_fleet_on(lab, a)
    serial_restarts_do_not_overlap(lab, t0)
