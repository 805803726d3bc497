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
    secrets_of,
    set_fault,
    start_lab,
    status_json,
    tls_hosts,
)

# The steps share one lab and follow each other: one xdist worker runs them all, in order
# (`make test` distributes whole files: --dist loadfile).
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


@pytest.fixture(scope="module")
def pairs() -> dict[str, str]:
    """The fingerprints of the pairs the steps install, by letter, as they become known."""
    return {}


@pytest.fixture(scope="module")
def original_inventory(lab) -> str:
    return lab.inventory.read_text(encoding="utf-8")


def rotate(outputs: list[str], lab: Lab, *extra: str):
    return run(outputs, "rollout", str(lab.inventory), "--playbook", "rotate", "--yes", *extra)


def status(outputs: list[str], lab: Lab, *extra: str) -> tuple[int, dict]:
    result = run(outputs, "status", str(lab.inventory), "--json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


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


def test_expiry_watch_with_a_short_lived_pair_and_rotate_refused_with_tls_off(
    lab, outputs, pairs, original_inventory
):
    """TLS off: `prepare` imports a 10-day pair C everywhere (no enable, no restart); the
    expiry watch then finds it per host, and a rotation is refused (TLS is not on)."""
    c_pfx = lab.dir / "pairC.pfx"
    made = run(outputs, "cert", "create", "--days", "10", "--out", str(c_pfx))
    assert made.returncode == 0, made.stderr
    point_inventory_at(lab, c_pfx)
    from tealeaf_fleet import certs
    from tealeaf_fleet.secrets import Secret

    c_password = Secret((lab.dir / "pairC.pfx.password").read_text().strip(), source="test")
    c_cert = certs.load_pfx(c_pfx.read_bytes(), c_password).certificate
    c_end = c_cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S")
    prepared = run(outputs, "rollout", str(lab.inventory), "--playbook", "prepare", "--yes")
    assert prepared.returncode == 0, prepared.stderr
    windows = [n for n, r in lab.roles.items() if r != "pca"]
    code, doc = status(outputs, lab)  # default: 30 days
    assert code == 1
    assert doc["consistent"] is True and doc["expiry_days"] == 30
    assert doc["expiring"] == sorted(windows)
    expiring = [f for f in doc["findings"] if f["code"] == "cert_expiring"]
    assert {h for f in expiring for h in f["hosts"]} == set(windows)
    for row in doc["hosts"]:
        if row["name"] in windows:
            assert row["expiry"]["days_left"] in (9, 10), row["expiry"]
            assert row["expiry"]["not_after"]
            assert row["expiry"]["not_after_utc"] == c_end  # in UTC too: the pair's own end
    code, doc = status(outputs, lab, "--expiry-days", "5")
    assert code == 0 and doc["expiring"] == []
    assert not [f for f in doc["findings"] if f["code"] == "cert_expiring"]
    code, _ = status(outputs, lab, "--expiry-days", "11")
    assert code == 1
    human = run(outputs, "status", str(lab.inventory), "--expiry-days", "60")
    assert human.returncode == 1 and "ends within 60 days" in human.stdout

    t0 = time.time()
    refused = rotate(outputs, lab)
    assert refused.returncode == 3, refused.stderr
    assert "TLS is not on here" in refused.stderr and "fleet rollout" in refused.stderr
    assert not [e for e in events(lab, t0) if e["kind"] in ("file", "tlstool", "service")]
    lab.inventory.write_text(original_inventory, encoding="utf-8")


def test_rollout_a_then_rotate_to_b(lab, outputs, pairs):
    out = run(outputs, "rollout", str(lab.inventory), "--yes")
    assert out.returncode == 0, out.stderr
    a = pairs["A"] = status_json(lab)["reference"]["sha256"]
    assert_fleet_on(lab, a)

    # a pair that ends within 30 days is refused before anything changes
    point_inventory_at(lab, lab.dir / "pairC.pfx")
    t0 = time.time()
    short = rotate(outputs, lab)
    assert short.returncode == 3, short.stderr
    assert "expires on" in short.stderr and "30 more days" in short.stderr
    assert not [e for e in events(lab, t0) if e["kind"] in ("file", "tlstool", "service")]

    b_pfx = lab.dir / "pairB.pfx"
    made = run(outputs, "cert", "create", "--out", str(b_pfx))
    assert made.returncode == 0, made.stderr
    point_inventory_at(lab, b_pfx)
    planned = run(
        outputs,
        "plan",
        str(lab.inventory),
        "--playbook",
        "rotate",
        "--facts",
        "--format",
        "markdown",
    )
    assert planned.returncode == 0, planned.stderr
    assert "Certificate validity" in planned.stdout and a[:12] in planned.stdout
    assert "PCA hand-off" in planned.stdout and "pca01 (PCA build" in planned.stdout
    exported = run(outputs, "cert", "export", str(b_pfx), "--pem")  # for the PCA
    assert exported.returncode == 0, exported.stderr
    assert (lab.dir / "pairB.key.pem").stat().st_mode & 0o777 == 0o600
    t0 = time.time()
    rotated = rotate(outputs, lab, "--json")
    assert rotated.returncode == 0, rotated.stderr + rotated.stdout[-3000:]
    stream = [json.loads(line) for line in rotated.stdout.splitlines()]
    b = pairs["B"] = status_json(lab)["reference"]["sha256"]
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

    # the same pair again: nothing to rotate
    again = rotate(outputs, lab)
    assert again.returncode == 3 and "nothing to rotate" in again.stderr, again.stderr


def test_rotate_back_to_a_from_the_archive(lab, outputs, pairs):
    a, b = pairs["A"], pairs["B"]
    state = lab.dir / ".tealeaf-fleet"
    history = run(outputs, "cert", "history", str(lab.inventory), "--json")
    assert history.returncode == 0, history.stderr
    listed = {e["sha256"]: e for e in json.loads(history.stdout)["certificates"]}
    assert len(listed) == 3  # C (prepare), A (rollout), B (rotate)
    assert [(r["command"], r["playbook"], r["outcome"]) for r in listed[a]["runs"]] == [
        ("rollout", "rollout", "ok")
    ]
    assert [(r["playbook"], r["outcome"]) for r in listed[b]["runs"]] == [("rotate", "ok")]
    for sha in listed:
        for suffix in (".pfx", ".json"):
            path = state / "certificates" / f"{sha}{suffix}"
            assert path.stat().st_mode & 0o777 == 0o600, path
    human = run(outputs, "cert", "history", str(lab.inventory))
    assert human.returncode == 0 and "days left" in human.stdout and "rotate" in human.stdout

    # the archive keeps no password: going back needs it from a password source
    no_password = rotate(outputs, lab, "--certificate-from-archive", a[:16])
    assert no_password.returncode == 2, no_password.stderr
    assert "--certificate-password" in no_password.stderr
    t0 = time.time()
    back = rotate(
        outputs,
        lab,
        "--certificate-from-archive",
        a[:16],
        "--certificate-password-file",
        str(lab.pfx_password_file),
    )
    assert back.returncode == 0, back.stderr
    assert_fleet_on(lab, a)
    serial_restarts_do_not_overlap(lab, t0)
    # the inventory still names B, but the fleet's last change installed A
    code, doc = status(outputs, lab)
    assert code == 0, doc["findings"]
    assert doc["reference"] == {"sha256": a, "source": "rotation"}
    assert doc["rotation"]["in_progress"] is False


def test_a_halted_rotation_shows_in_status_and_resumes(lab, outputs, pairs):
    a, b = pairs["A"], pairs["B"]
    set_fault(lab, "can02", {"service_start_fails": True})
    t0 = time.time()
    halted = rotate(outputs, lab)
    assert halted.returncode == 1, halted.stderr
    assert "can02" in halted.stderr
    # the hint resumes the rotation (not the rollout) and names the way back
    said = "".join(halted.stderr.split())  # the console wraps long paths where it likes
    assert f"fleetrollout{lab.inventory}--playbookrotate`" in said
    assert "--certificate-from-archive" in said
    touched = restart_windows(lab, t0)
    assert {"hbr01", "hbr02", "can01", "can02"} <= set(touched)
    assert "portal01" not in touched

    code, doc = status(outputs, lab)
    assert code == 1  # a halted rotation needs a rerun: schedulers hear it
    assert doc["rotation"]["in_progress"] is True and doc["rotation"]["new_sha256"] == b
    codes = {f["code"] for f in doc["findings"]}
    assert "rotation_in_progress" in codes
    assert not codes & {"cert_mismatch", "handshake_cert"}
    certificates = {c["sha256"]: c for c in doc["certificates"]}
    assert set(certificates) == {a, b}  # two fingerprints, expected now
    assert "portal01" in certificates[a]["presented"]
    assert "hbr01" in certificates[b]["presented"]
    human = run(outputs, "status", str(lab.inventory))
    assert "rotation in progress" in human.stdout and "mismatch" not in human.stdout

    set_fault(lab, "can02", {})
    t1 = time.time()
    resumed = rotate(outputs, lab)
    assert resumed.returncode == 0, resumed.stderr
    touched = restart_windows(lab, t1)
    assert not {"hbr01", "hbr02", "can01"} & set(touched)  # passed before: not restarted
    assert {"can02", "portal01"} <= set(touched)
    assert_fleet_on(lab, b)
    code, doc = status(outputs, lab)
    assert code == 0 and doc["rotation"]["in_progress"] is False, doc["findings"]


def test_an_import_that_fails_part_way_is_redone_on_resume(lab, outputs, pairs):
    """can01's tealeaf.p12 is held by another process: TLSTool writes the new tealeaf.crt,
    then fails on tealeaf.p12. The rotation halts before any restart; the operator edits the
    inventory (a new plan digest); the rerun imports there again although tealeaf.crt already
    reads as the new pair, so the restarted services load the new pair from tealeaf.p12."""
    a, b = pairs["A"], pairs["B"]
    back = (
        "--certificate-from-archive",
        a,
        "--certificate-password-file",
        str(lab.pfx_password_file),
    )
    set_fault(lab, "can01", {"security_file_locked": True})
    t0 = time.time()
    halted = rotate(outputs, lab, *back)
    assert halted.returncode == 1, halted.stderr
    assert "halted in phase 'import' on can01" in halted.stderr
    assert "being used by another process" in halted.stderr
    words = halted.stderr.split()  # the resume hint points at the same archived pair
    assert (
        "--certificate-from-archive" in words
        and a[:16] in words[words.index("--certificate-from-archive") + 1]
    )
    assert "--certificate-password-file" in words
    assert crt_fingerprint(lab, "can01") == a  # half done: the crt is new, the p12 is not
    assert not [e for e in events(lab, t0) if e["kind"] in ("service", "iisreset")]
    for name in tls_hosts(lab):  # nothing restarted: every server still presents B
        assert presented(lab.hosts[name].tms_port) == b, name

    set_fault(lab, "can01", {})
    # The operator edits the inventory before the rerun: a new plan digest, so nothing of the
    # halted run is resumed, yet can01's half import must still be done again.
    text = lab.inventory.read_text(encoding="utf-8")
    assert "  soak_s: 0\n" in text
    lab.inventory.write_text(text.replace("  soak_s: 0\n", "  soak_s: 1\n"), encoding="utf-8")
    t1 = time.time()
    resumed = rotate(outputs, lab, *back)
    assert resumed.returncode == 0, resumed.stderr
    imports = [e for e in events(lab, t1) if e["kind"] == "tlstool" and e["verb"] == "import"]
    # the other servers finished before; the RTV workstation's import comes after every
    # server's restart (it never holds up the servers), so the halted run had not reached it
    assert [e["host"] for e in imports] == ["can01", "rtv01"]
    assert_fleet_on(lab, a)


def test_no_secret_in_any_output_or_file(lab, outputs):
    """Every command's output of this module, and every file of the state folder (journal,
    run logs, the archive's metadata and PFX copies), searched for every lab password."""
    found = list(outputs)
    files = [*(lab.dir / ".tealeaf-fleet").rglob("*"), *lab.dir.glob("pair*.pem")]
    assert len([p for p in files if p.suffix == ".pem"]) == 2
    for path in files:
        if path.is_file():
            found.append(path.read_bytes().decode("utf-8", "replace"))
    pairs_passwords = [
        (lab.dir / name).read_text().strip()
        for name in ("pairB.pfx.password", "pairC.pfx.password")
    ]
    secrets = [*secrets_of(lab), *pairs_passwords]
    assert all(secrets)
    leaks = [(i, s[:3]) for i, blob in enumerate(found) for s in secrets if s in blob]
    assert leaks == []
