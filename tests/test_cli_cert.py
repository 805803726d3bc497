"""`fleet cert create|inspect` end to end: real files, the real openssl CLI, exit codes, and no
password anywhere in what the commands print or write."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tealeaf_fleet.cli.main import main
from test_certs import PW, make_pfx, openssl  # helpers that drive the openssl CLI

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `fleet` entry point in a child process, stdin not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "tealeaf_fleet", *args],
        env=dict(os.environ, **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Run `fleet` in this process (faster); returns (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --- create ----------------------------------------------------------------------------------


def test_create_without_password_source_generates_one(tmp_path):
    out = tmp_path / "TCXcert.pfx"
    proc = fleet("cert", "create", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    pw_file = tmp_path / "TCXcert.pfx.password"
    assert mode(out) == 0o600 and mode(pw_file) == 0o600
    assert f"written to {pw_file}" in proc.stdout
    password = pw_file.read_text().strip()
    assert len(password) >= 20 and password.isalnum()
    assert password not in proc.stdout + proc.stderr
    assert password.encode() not in out.read_bytes()
    info = subprocess.run(
        ["openssl", "pkcs12", "-info", "-nokeys", "-in", str(out), "-passin", f"file:{pw_file}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert info.returncode == 0, info.stderr
    text = info.stdout + info.stderr
    assert "MAC: sha1" in text and "pbeWithSHA1And3-KeyTripleDES-CBC" in text
    assert "subject=CN = IBM Tealeaf CX" in text
    # and inspect finds the password file beside the PFX by itself
    again = fleet("cert", "inspect", str(out))
    assert again.returncode == 0, again.stderr
    assert "verdict: fit for Tealeaf" in again.stdout
    assert password not in again.stdout + again.stderr


def test_create_never_overwrites_without_force(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PFX_PW", PW)
    out = tmp_path / "a.pfx"
    code, _, _ = run(capsys, "cert", "create", "--out", str(out), "--password-env", "PFX_PW")
    assert code == 0 and not (tmp_path / "a.pfx.password").exists()
    first = out.read_bytes()
    code, _, err = run(capsys, "cert", "create", "--out", str(out), "--password-env", "PFX_PW")
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_bytes() == first
    code, stdout, _ = run(
        capsys, "cert", "create", "--out", str(out), "--password-env", "PFX_PW", "--force"
    )
    assert code == 0 and out.read_bytes() != first and mode(out) == 0o600
    assert "fingerprint" in stdout and PW not in stdout


def test_create_options_reach_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PFX_PW", PW)
    out = tmp_path / "b.pfx"
    code, _, _ = run(
        capsys,
        "cert",
        "create",
        "--out",
        str(out),
        "--password-env",
        "PFX_PW",
        "--key-size",
        "3072",
        "--days",
        "90",
        "--encryption",
        "aes256",
    )
    assert code == 0
    code, stdout, _ = run(capsys, "cert", "inspect", str(out), "--password-env", "PFX_PW", "--json")
    doc = json.loads(stdout)
    assert code == 0 and doc["fit"] is True
    assert doc["key_size"] == 3072 and 88 <= doc["days_left"] <= 90
    assert doc["pkcs12"]["key_encryption"] == ["PBES2/AES-256-CBC"]
    enc = next(c for c in doc["checks"] if c["name"] == "encryption")
    assert enc["status"] == "warn" and "2008 R2" in enc["reason"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({}, "PFX_PW is unset or empty"),
        ({"PFX_PW": ""}, "PFX_PW is unset or empty"),
        ({"PFX_PW": "with space"}, "the password has a space"),
        ({"PFX_PW": 'dq"uote'}, "double quote"),
    ],
)
def test_create_refuses_bad_password_sources(tmp_path, setup, message):
    env = {k: v for k, v in os.environ.items() if k != "PFX_PW"}
    env.update(setup)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tealeaf_fleet",
            "cert",
            "create",
            "--out",
            str(tmp_path / "x.pfx"),
            "--password-env",
            "PFX_PW",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.pfx").exists()
    if setup.get("PFX_PW"):
        assert setup["PFX_PW"] not in proc.stderr + proc.stdout


def test_create_refuses_a_readable_password_file(tmp_path, capsys):
    pw = tmp_path / "pw.txt"
    pw.write_text(PW)
    pw.chmod(0o644)
    code, _, err = run(
        capsys, "cert", "create", "--out", str(tmp_path / "x.pfx"), "--password-file", str(pw)
    )
    assert code == 2 and "readable by group or others" in err


def test_create_prompts_twice_on_a_terminal(tmp_path, capsys, monkeypatch):
    answers = iter([PW, PW])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    out = tmp_path / "p.pfx"
    code, stdout, _ = run(capsys, "cert", "create", "--out", str(out))
    assert code == 0 and out.exists() and not (tmp_path / "p.pfx.password").exists()
    assert next(answers, None) is None  # asked exactly twice
    info = openssl(
        "pkcs12", "-info", "-nokeys", "-passin", "env:OSSL_PW", "-in", "p.pfx", cwd=tmp_path
    )
    assert "MAC: sha1" in info.stdout + info.stderr

    answers = iter([PW, PW + "x"])
    code, _, err = run(capsys, "cert", "create", "--out", str(tmp_path / "q.pfx"))
    assert code == 2 and "differ" in err and not (tmp_path / "q.pfx").exists()


def test_create_bad_arguments_exit_2(tmp_path, capsys):
    for args in (["--key-size", "1024"], ["--days", "0"], ["--encryption", "rc2"]):
        with pytest.raises(SystemExit) as ei:
            main(["cert", "create", "--out", str(tmp_path / "x.pfx"), *args])
        assert ei.value.code == 2
    capsys.readouterr()
    code, _, err = run(capsys, "cert", "create", "--out", str(tmp_path / "nope" / "x.pfx"))
    assert code == 2 and "does not exist" in err


# --- inspect ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    good = make_pfx(d, "good")
    pem = d / "good" / "c.pem"
    return {
        "good": good,
        "wrong_cn": make_pfx(d, "wrong_cn", cn="portal01"),
        "aes": make_pfx(d, "aes", aes=True),
        "nokey": make_pfx(d, "nokey", nokeys=True),
        "pem": pem,
    }


@pytest.fixture
def pw_env(monkeypatch):
    monkeypatch.setenv("PFX_PW", PW)
    return ["--password-env", "PFX_PW"]


def test_inspect_fit_file(files, capsys, pw_env):
    code, out, _ = run(capsys, "cert", "inspect", str(files["good"]), *pw_env)
    assert code == 0
    for text in (
        "subject          CN=IBM Tealeaf CX",
        "RSA 2048 bits",
        "serverAuth, clientAuth",
        "pbeWithSHA1And3-KeyTripleDES-CBC",
        "sha1, 2048 iterations",
        "verdict: fit for Tealeaf",
        "fingerprint  ",  # one vocabulary: the certificate's SHA-256 is its fingerprint
        "thumbprint  ",
    ):
        assert text in out, text
    assert "fail" not in out and "sha256 " not in out  # (the signature says sha256WithRSA...)


def test_inspect_exit_codes(files, capsys, pw_env):
    code, out, _ = run(capsys, "cert", "inspect", str(files["wrong_cn"]), *pw_env)
    assert code == 1 and 'fail  subject      subject CN is "portal01"' in out
    assert "NOT fit" in out
    code, out, _ = run(capsys, "cert", "inspect", str(files["aes"]), *pw_env)
    assert code == 0 and "warn  encryption" in out and "Windows Server 2008 R2" in out
    code, out, _ = run(capsys, "cert", "inspect", str(files["nokey"]), *pw_env)
    assert code == 2 and "fail  private key  the file holds no private key" in out


def test_inspect_unusable_input_exits_2_with_one_line(files, tmp_path):
    env = {"PFX_PW": PW}
    cases = [
        (files["pem"], "is PEM (CERTIFICATE), not PKCS#12"),
        (tmp_path / "missing.pfx", "does not exist"),
    ]
    for path, message in cases:
        proc = fleet("cert", "inspect", str(path), "--password-env", "PFX_PW", env=env)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = fleet(
        "cert",
        "inspect",
        str(files["good"]),
        "--password-env",
        "PFX_PW",
        env={"PFX_PW": "Wr0ngOne"},
    )
    assert proc.returncode == 2
    assert f"the password does not open {files['good']}" in proc.stderr
    assert "Wr0ngOne" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    # no password source and no terminal to ask on
    proc = fleet("cert", "inspect", str(files["good"]))
    assert proc.returncode == 2 and "no password source" in proc.stderr


def test_inspect_json(files, capsys, pw_env):
    code, out, _ = run(capsys, "cert", "inspect", str(files["wrong_cn"]), *pw_env, "--json")
    doc = json.loads(out)
    assert code == 1 and doc["fit"] is False
    assert doc["subject"] == "CN=portal01"
    assert {c["name"]: c["status"] for c in doc["checks"]}["subject"] == "fail"
    assert len(doc["sha256"]) == 64 and doc["sha256"] == doc["sha256"].lower()


def test_password_never_appears_in_output_or_written_files(tmp_path, files):
    env = {"PFX_PW": PW}
    outputs = []
    for args in (
        ["cert", "create", "--out", str(tmp_path / "n.pfx"), "--password-env", "PFX_PW"],
        ["cert", "inspect", str(tmp_path / "n.pfx"), "--password-env", "PFX_PW"],
        ["cert", "inspect", str(tmp_path / "n.pfx"), "--password-env", "PFX_PW", "--json"],
        ["cert", "inspect", str(files["wrong_cn"]), "--password-env", "PFX_PW"],
        ["-v", "cert", "inspect", str(files["pem"]), "--password-env", "PFX_PW"],
        ["cert", "create", "--out", str(tmp_path / "n.pfx"), "--password-env", "PFX_PW"],
    ):
        proc = fleet(*args, env=env)
        outputs.append(proc.stdout + proc.stderr)
    assert any("verdict" in o for o in outputs)  # the commands really ran
    for text in outputs:
        assert PW not in text
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert PW.encode() not in p.read_bytes(), p


def test_cli_module_does_not_import_cryptography():
    code = (
        "import sys, tealeaf_fleet.cli.cert as c, argparse; "
        "p = argparse.ArgumentParser(); c.register(p.add_subparsers()); "
        "print('cryptography' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


# --- passwords TLSTool.exe cannot pass on ----------------------------------------------------

INVENTORY = Path(__file__).parent / "data" / "inventory" / "valid" / "anchors.yaml"
CMD_METACHARACTERS = ["&", "|", "<", ">", "^", "%", "!"]


@pytest.mark.parametrize("char", CMD_METACHARACTERS)
def test_rollout_refuses_a_pfx_password_cmd_would_mangle(tmp_path, capsys, monkeypatch, char):
    """TLSTool.exe hands the password to openssl.exe on a command line, perhaps through
    cmd.exe: a rollout refuses it before contacting any host, in one line naming the inventory
    and the field, and says to re-export the PFX."""
    inventory = tmp_path / "fleet.yaml"
    shutil.copy(INVENTORY, inventory)
    secret = f"Pfx{char}Secret9"
    monkeypatch.setenv("TLF_TEST_PFX_PW", secret)
    monkeypatch.setenv("TLF_TEST_WINRM_PW", "Winrm-Pw-1")
    code, out, err = run(capsys, "rollout", str(inventory), "--yes")
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("fleet: warning:")]
    assert len(lines) == 1, err  # the inventory's validate_certs warning aside
    assert f"{inventory}: certificate.password:" in lines[0]
    assert "character cmd.exe interprets" in lines[0]
    assert "re-export the PFX with another password (letters and digits are always safe)" in err
    assert secret not in out + err


@pytest.mark.parametrize("char", CMD_METACHARACTERS)
def test_create_refuses_a_password_cmd_would_mangle(tmp_path, capsys, monkeypatch, char):
    secret = f"Pfx{char}Secret9"
    monkeypatch.setenv("PFX_PW", secret)
    out = tmp_path / "x.pfx"
    code, stdout, err = run(capsys, "cert", "create", "--out", str(out), "--password-env", "PFX_PW")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "character cmd.exe interprets" in err and "letters and digits are always safe" in err
    assert secret not in stdout + err and not out.exists()


def test_rollout_refuses_a_pfx_name_tlstool_cannot_pass(tmp_path, capsys, monkeypatch):
    """TLSTool.exe gets the PFX by its bare name in Tools and hands it to openssl.exe
    unquoted: a name with a space or parentheses is refused before any host is contacted."""
    inventory = tmp_path / "fleet.yaml"
    text = INVENTORY.read_text(encoding="utf-8")
    inventory.write_text(text.replace("certificate:\n", "certificate:\n  path: my cert (1).pfx\n"))
    monkeypatch.setenv("TLF_TEST_PFX_PW", "Pfx1Secret9")
    monkeypatch.setenv("TLF_TEST_WINRM_PW", "Winrm-Pw-1")
    code, _, err = run(capsys, "rollout", str(inventory), "--yes")
    assert code == 2, err
    assert f"{inventory}: certificate.path: the PFX file name 'my cert (1).pfx'" in err


# --- export (the PCA hand-off) ------------------------------------------------------------------


def test_export_pem_encrypts_the_key_with_the_pfx_password(tmp_path):
    pfx = tmp_path / "TCXcert.pfx"
    made = fleet("cert", "create", "--out", str(pfx))
    assert made.returncode == 0, made.stderr
    password = (tmp_path / "TCXcert.pfx.password").read_text().strip()
    proc = fleet("cert", "export", str(pfx), "--pem")
    assert proc.returncode == 0, proc.stderr
    cert, key = tmp_path / "TCXcert.crt.pem", tmp_path / "TCXcert.key.pem"
    assert mode(key) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    assert password not in proc.stdout + proc.stderr + cert.read_text() + key.read_text()
    assert "3682-24" in proc.stdout
    assert "(fingerprint " in proc.stdout and "sha256" not in proc.stdout
    # openssl opens the key with the PFX's password, and it belongs to the certificate
    env = dict(os.environ, EXPORT_PW=password)
    pub_key = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-passin", "env:EXPORT_PW", "-pubout"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    pub_cert = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert pub_key == pub_cert
    wrong = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-passin", "pass:not-it"],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0
    again = fleet("cert", "export", str(pfx), "--pem")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_export_without_key_password_warns_and_keeps_the_key_private(tmp_path):
    pfx = tmp_path / "pair.pfx"
    assert fleet("cert", "create", "--out", str(pfx)).returncode == 0
    key = tmp_path / "out" / "k.pem"
    key.parent.mkdir()
    proc = fleet(
        "cert",
        "export",
        str(pfx),
        "--pem",
        "--no-key-password",
        "--key-out",
        str(key),
        "--cert-out",
        str(tmp_path / "out" / "c.pem"),
    )
    assert proc.returncode == 0, proc.stderr
    assert mode(key) == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes()
    assert "warning" in proc.stderr and "unencrypted" in proc.stderr
    plain = subprocess.run(["openssl", "pkey", "-in", str(key), "-noout"], capture_output=True)
    assert plain.returncode == 0


def test_export_needs_pem(tmp_path):
    proc = fleet("cert", "export", str(tmp_path / "x.pfx"))
    assert proc.returncode == 2 and "--pem" in proc.stderr
