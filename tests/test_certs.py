"""certs.py and pkcs12info.py: generated files checked with the real `openssl` CLI, and
`inspect_pfx` checked against files that `openssl` itself made with each defect."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tealeaf_fleet import certs, pkcs12info
from tealeaf_fleet.errors import CertificateError, InputError
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.secrets import Secret

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")

PW = "Tl9kPx2Wq7Zr"  # what the tests protect files with; searched for in outputs below

CA_CNF = """[ ca ]
default_ca = local
[ local ]
dir = .
database = ./index.txt
new_certs_dir = .
serial = ./serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = copy
[ anything ]
commonName = supplied
"""


def openssl(
    *args: str, cwd: Path, password: str = PW, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run openssl with the password in $OSSL_PW only (never on the command line)."""
    env = dict(os.environ, OSSL_PW=password)
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {args[0]} failed: {proc.stderr}")
    return proc


def make_pfx(
    d: Path,
    name: str,
    *,
    cn: str = "IBM Tealeaf CX",
    bits: int = 2048,
    eku: str | None = "serverAuth,clientAuth",
    ku: str | None = "digitalSignature,keyEncipherment",
    days: int = 365,
    dates: tuple[str, str] | None = None,
    aes: bool = False,
    nokeys: bool = False,
    password: str = PW,
    chain: bool = False,
) -> Path:
    """A PFX made by openssl: a key and a self-signed certificate with the given defects.

    `dates` (start, end as YYYYMMDDHHMMSSZ) goes through `openssl ca -selfsign`, because
    OpenSSL 3.0's `req -x509` refuses past or explicit dates.
    """
    w = d / name
    w.mkdir()
    exts: list[str] = []
    if eku:
        exts += ["-addext", f"extendedKeyUsage={eku}"]
    if ku:
        exts += ["-addext", f"keyUsage={ku}"]
    if dates is None:
        openssl(
            "req",
            "-x509",
            "-newkey",
            f"rsa:{bits}",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-noenc",
            "-subj",
            f"/CN={cn}",
            "-days",
            str(days),
            *exts,
            cwd=w,
        )
    else:
        (w / "ca.cnf").write_text(CA_CNF)
        (w / "index.txt").write_text("")
        (w / "serial").write_text("1000\n")
        openssl(
            "req",
            "-new",
            "-newkey",
            f"rsa:{bits}",
            "-keyout",
            "k.pem",
            "-noenc",
            "-subj",
            f"/CN={cn}",
            *exts,
            "-out",
            "r.csr",
            cwd=w,
        )
        openssl(
            "ca",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            "k.pem",
            "-in",
            "r.csr",
            "-startdate",
            dates[0],
            "-enddate",
            dates[1],
            "-batch",
            "-notext",
            "-out",
            "c.pem",
            cwd=w,
        )
    args = [
        "pkcs12",
        "-export",
        "-in",
        "c.pem",
        "-out",
        "x.pfx",
        "-passout",
        "env:OSSL_PW",
        "-name",
        "test",
    ]
    if nokeys:
        args.append("-nokeys")
    else:
        args += ["-inkey", "k.pem"]
    if chain:
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-noenc",
            "-subj",
            "/CN=Example Issuing CA",
            "-days",
            "30",
            cwd=w,
        )
        args += ["-certfile", "ca.pem"]
    if not aes:
        args += ["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"]
    openssl(*args, cwd=w, password=password)
    return w / "x.pfx"


def checks_by_name(report: certs.Report) -> dict[str, certs.Check]:
    return {c.name: c for c in report.checks}


# --- generate --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, bytes]:
    d = tmp_path_factory.mktemp("gen")
    data = certs.generate_pfx(Secret(PW))
    p = d / "TCXcert.pfx"
    p.write_bytes(data)
    return p, data


def test_generated_pfx_is_compat_per_openssl(generated):
    path, _ = generated
    info = openssl(
        "pkcs12", "-info", "-nokeys", "-passin", "env:OSSL_PW", "-in", path.name, cwd=path.parent
    )
    out = info.stdout + info.stderr
    assert "MAC: sha1" in out
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC" in out
    assert "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC" in out
    assert "AES" not in out and "PBES2" not in out
    assert "friendlyName: IBM Tealeaf CX" in out


def test_generated_certificate_per_openssl_x509(generated):
    path, _ = generated
    pem = openssl(
        "pkcs12", "-nokeys", "-clcerts", "-passin", "env:OSSL_PW", "-in", path.name, cwd=path.parent
    ).stdout
    (path.parent / "cert.pem").write_text(pem)
    text = openssl("x509", "-in", "cert.pem", "-noout", "-text", cwd=path.parent).stdout
    assert "Subject: CN = IBM Tealeaf CX" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "CA:FALSE" in text
    assert "Digital Signature, Key Encipherment" in text
    assert "sha256WithRSAEncryption" in text
    assert "Public-Key: (2048 bit)" in text
    fp = openssl(
        "x509", "-in", "cert.pem", "-noout", "-fingerprint", "-sha256", cwd=path.parent
    ).stdout
    expected = fp.strip().split("=", 1)[1].replace(":", "").lower()
    pfx = certs.load_pfx(path.read_bytes(), Secret(PW))
    assert pfx.sha256 == expected == certs.fingerprint(pfx.certificate)
    # and the key in the file is the certificate's key (openssl checks the pair)
    key = openssl(
        "pkcs12", "-nocerts", "-noenc", "-passin", "env:OSSL_PW", "-in", path.name, cwd=path.parent
    ).stdout
    (path.parent / "key.pem").write_text(key)
    mod_k = openssl("rsa", "-in", "key.pem", "-noout", "-modulus", cwd=path.parent).stdout
    mod_c = openssl("x509", "-in", "cert.pem", "-noout", "-modulus", cwd=path.parent).stdout
    assert mod_k == mod_c


def test_generated_pfx_loads_with_its_protection(generated):
    _, data = generated
    pfx = certs.load_pfx(data, Secret(PW))
    assert pfx.encryption == "pbeWithSHA1And3-KeyTripleDES-CBC"
    assert pfx.cert_encryption == ["pbeWithSHA1And3-KeyTripleDES-CBC"]
    assert pfx.mac == "sha1"
    assert pfx.friendly_name == "IBM Tealeaf CX"
    assert pfx.additional_certs == []
    days = (pfx.certificate.not_valid_after_utc - pfx.certificate.not_valid_before_utc).days
    assert 729 <= days <= 731
    assert certs.validate_pfx(pfx, Secret(PW)) and all(
        c.status == "pass" for c in certs.validate_pfx(pfx, Secret(PW))
    )


def test_generate_aes_key_size_days_and_random_serials(tmp_path):
    data = certs.generate_pfx(Secret(PW), encryption="aes256", key_size=3072, days=10)
    (tmp_path / "a.pfx").write_bytes(data)
    out = openssl(
        "pkcs12", "-info", "-nokeys", "-passin", "env:OSSL_PW", "-in", "a.pfx", cwd=tmp_path
    )
    assert "AES-256-CBC" in out.stdout + out.stderr
    pfx = certs.load_pfx(data, Secret(PW))
    assert pfx.encryption == "PBES2/AES-256-CBC" and pfx.mac == "sha256"
    assert pfx.private_key.key_size == 3072
    assert (pfx.certificate.not_valid_after_utc - pfx.certificate.not_valid_before_utc).days in (
        10,
        9,
    )
    other = certs.load_pfx(certs.generate_pfx(Secret(PW), days=10), Secret(PW))
    assert other.certificate.serial_number != pfx.certificate.serial_number
    assert other.sha256 != pfx.sha256


@pytest.mark.parametrize("bad", ["", "has space", 'quo"te', "caf\u00e9", "tab\there"])
def test_generate_refuses_passwords_tlstool_cannot_use(bad):
    with pytest.raises(InputError) as ei:
        certs.generate_pfx(Secret(bad))
    if bad:
        assert bad not in str(ei.value)


def test_generate_refuses_bad_parameters():
    with pytest.raises(InputError):
        certs.generate_pfx(Secret(PW), encryption="rc4")
    with pytest.raises(InputError):
        certs.generate_pfx(Secret(PW), key_size=1024)
    with pytest.raises(InputError):
        certs.generate_pfx(Secret(PW), days=0)


CMD_METACHARACTERS = ["&", "|", "<", ">", "^", "%", "!"]


def test_check_password():
    assert certs.check_password(Secret("Abc123#$'()*+,-./:;=?@[]_`{}~")) == []
    assert certs.check_password(Secret("")) == ["the password is empty"]
    assert certs.check_password(Secret("a b")) == ["the password has a space"]
    assert certs.check_password(Secret('a"b')) == ["the password has a double quote"]
    assert certs.check_password(Secret("\u00e9t\u00e9")) == [
        "the password has non-ASCII characters"
    ]
    assert certs.check_password(Secret("a\nb")) == ["the password has control characters"]


@pytest.mark.parametrize("char", CMD_METACHARACTERS)
def test_check_password_refuses_what_cmd_interprets(char):
    """TLSTool.exe passes the password to openssl.exe (`pass:...`), perhaps through cmd.exe."""
    assert certs.check_password(Secret(f"Abc{char}123")) == [
        "the password has a character cmd.exe interprets (one of & | < > ^ % !), which "
        "TLSTool.exe cannot pass on to openssl.exe intact"
    ]
    with pytest.raises(InputError) as ei:
        certs.generate_pfx(Secret(f"Abc{char}123"))
    assert ei.value.exit_code == 2 and f"Abc{char}123" not in str(ei.value)


def test_inspect_of_a_pfx_with_such_a_password_says_to_re_export(tmp_path):
    path = make_pfx(tmp_path, "amp_pw", password="Abc&123")  # exported with openssl
    report = certs.inspect_pfx(path.read_bytes(), Secret("Abc&123"))
    check = checks_by_name(report)["password"]
    assert check.status == "fail" and "cmd.exe" in check.reason and report.exit_code == 1
    assert "re-export the PFX with another password" in check.reason
    assert "Abc&123" not in check.reason


def test_generate_password_is_strong_letters_and_digits():
    seen = set()
    for _ in range(20):
        value = certs.generate_password().reveal()
        assert len(value) == 24 and value.isalnum() and value.isascii()
        assert certs.check_password(Secret(value)) == []
        assert any(c.isdigit() for c in value) and any(c.isupper() for c in value)
        seen.add(value)
    assert len(seen) == 20


def test_write_private_file_mode_and_no_overwrite(tmp_path):
    p = tmp_path / "f.bin"
    certs.write_private_file(p, b"one")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    with pytest.raises(InputError, match="already exists"):
        certs.write_private_file(p, b"two")
    assert p.read_bytes() == b"one"
    certs.write_private_file(p, b"two", force=True)
    assert p.read_bytes() == b"two" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]


# --- load errors -----------------------------------------------------------------------------


def test_wrong_password_is_a_clear_error(generated):
    _, data = generated
    wrong = "Wr0ngPassw0rd"
    with pytest.raises(CertificateError) as ei:
        certs.load_pfx(data, Secret(wrong, source="env X"), name="TCXcert.pfx")
    assert "the password does not open TCXcert.pfx" in str(ei.value)
    assert wrong not in str(ei.value) and PW not in str(ei.value)
    assert ei.value.exit_code == 2


def test_not_pkcs12_says_what_it_is(generated, tmp_path):
    path, data = generated
    pfx = certs.load_pfx(data, Secret(PW))
    cert_pem = pfx.cert_pem()
    cert_der = pfx.certificate.public_bytes(serialization.Encoding.DER)
    key_der = pfx.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cases = {
        cert_pem: "is PEM (CERTIFICATE), not PKCS#12",
        pfx.key_pem(): "is PEM (PRIVATE KEY), not PKCS#12",
        cert_der: "is a DER certificate without its key",
        key_der: "is a DER private key without its certificate",
        base64.b64encode(data): "is base64 text of a PKCS#12 file",
        b"hello world, not a certificate at all": "is not a PKCS#12 file",
        b"": "is empty",
        data[:-40]: "is not a PKCS#12 file",
    }
    for blob, message in cases.items():
        with pytest.raises(CertificateError) as ei:
            certs.load_pfx(blob, Secret(PW), name="x.pfx")
        assert message in str(ei.value), (message, str(ei.value))
    # PEM and DER get the conversion command as hint
    with pytest.raises(CertificateError) as ei:
        certs.load_pfx(cert_pem, Secret(PW), name="x.pfx")
    assert "openssl pkcs12 -export" in (ei.value.hint or "")


def test_no_key_and_no_matching_key(tmp_path):
    nokey = make_pfx(tmp_path, "nokey", nokeys=True)
    with pytest.raises(CertificateError, match="holds no private key"):
        certs.load_pfx(nokey.read_bytes(), Secret(PW))
    # a key with two certificates of other keys (openssl refuses to write this; cryptography can)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    others = [_self_signed(f"other {i}") for i in range(2)]
    blob = pkcs12.serialize_key_and_certificates(
        b"x", key, None, others, serialization.BestAvailableEncryption(PW.encode())
    )
    with pytest.raises(CertificateError, match=r"holds 2 certificate\(s\) and none matches"):
        certs.load_pfx(blob, Secret(PW))
    keyonly = pkcs12.serialize_key_and_certificates(
        b"x", key, None, None, serialization.BestAvailableEncryption(PW.encode())
    )
    with pytest.raises(CertificateError, match="no certificate"):
        certs.load_pfx(keyonly, Secret(PW))


def _self_signed(cn: str) -> x509.Certificate:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(k, hashes.SHA256())
    )


def test_chain_is_kept_apart_from_the_matching_certificate(tmp_path):
    path = make_pfx(tmp_path, "chain", chain=True)
    pfx = certs.load_pfx(path.read_bytes(), Secret(PW))
    assert pfx.certificate.subject.rfc4514_string() == "CN=IBM Tealeaf CX"
    assert [c.subject.rfc4514_string() for c in pfx.additional_certs] == ["CN=Example Issuing CA"]
    report = certs.inspect_pfx(path.read_bytes(), Secret(PW))
    assert [c["subject"] for c in report.details["chain"]] == ["CN=Example Issuing CA"]
    assert report.fit


# --- inspect against openssl-made defects ----------------------------------------------------


@pytest.fixture(scope="module")
def defects(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("defects")
    now = dt.datetime.now(dt.timezone.utc)
    fmt = "%Y%m%d%H%M%SZ"
    return {
        "good": make_pfx(d, "good"),
        "wrong_cn": make_pfx(d, "wrong_cn", cn="tealeaf01.corp.example"),
        "server_only": make_pfx(d, "server_only", eku="serverAuth"),
        "no_eku": make_pfx(d, "no_eku", eku=None, ku=None),
        "rsa1024": make_pfx(d, "rsa1024", bits=1024),
        "expired": make_pfx(d, "expired", dates=("20200101000000Z", "20210101000000Z")),
        "future": make_pfx(
            d,
            "future",
            dates=(
                (now + dt.timedelta(days=3)).strftime(fmt),
                (now + dt.timedelta(days=400)).strftime(fmt),
            ),
        ),
        "soon": make_pfx(d, "soon", days=10),
        "aes": make_pfx(d, "aes", aes=True),
        "nokey": make_pfx(d, "nokey", nokeys=True),
        "space_pw": make_pfx(d, "space_pw", password="has space"),
    }


def test_inspect_good_openssl_file_is_fit(defects):
    report = certs.inspect_pfx(defects["good"].read_bytes(), Secret(PW), name="good.pfx")
    assert report.fit and report.exit_code == 0
    assert all(c.status == "pass" for c in report.checks), report.checks
    d = report.details
    assert d["subject"] == "CN=IBM Tealeaf CX" and d["issuer"] == "CN=IBM Tealeaf CX"
    assert d["key_type"] == "RSA" and d["key_size"] == 2048
    assert d["signature_algorithm"] == "sha256WithRSAEncryption"
    assert d["key_usage"] == ["digitalSignature", "keyEncipherment"]
    assert d["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert d["pkcs12"]["mac"] == "sha1"
    assert d["pkcs12"]["key_encryption"] == ["pbeWithSHA1And3-KeyTripleDES-CBC"]
    assert d["friendly_name"] == "test"
    assert 363 <= d["days_left"] <= 365
    fp = openssl(
        "x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha1", cwd=defects["good"].parent
    ).stdout
    assert d["sha1"] == fp.strip().split("=", 1)[1].replace(":", "").lower()


@pytest.mark.parametrize(
    ("case", "check", "status", "text"),
    [
        ("wrong_cn", "subject", "fail", '"tealeaf01.corp.example"'),
        ("server_only", "usage", "fail", "lacks clientAuth"),
        ("rsa1024", "key", "fail", "RSA 1024 bits"),
        ("expired", "validity", "fail", "expired on 2021-01-01T00:00:00Z"),
        ("future", "validity", "fail", "not valid before"),
        ("soon", "validity", "warn", "day(s)"),
        ("aes", "encryption", "warn", "Windows Server 2008 R2"),
        ("no_eku", "usage", "pass", "no extended key usage"),
    ],
)
def test_inspect_flags_each_openssl_defect(defects, case, check, status, text):
    report = certs.inspect_pfx(defects[case].read_bytes(), Secret(PW), name=f"{case}.pfx")
    c = checks_by_name(report)[check]
    assert c.status == status, c
    assert text in c.reason
    others = [x for x in report.checks if x.name != check]
    assert all(x.status == "pass" for x in others), others
    assert report.fit is (status != "fail")
    assert report.exit_code == (1 if status == "fail" else 0)


def test_inspect_no_key_is_fatal(defects):
    report = certs.inspect_pfx(defects["nokey"].read_bytes(), Secret(PW))
    c = checks_by_name(report)["private key"]
    assert c.status == "fail" and c.fatal and "no private key" in c.reason
    assert report.exit_code == 2
    assert report.details["subject"] == "CN=IBM Tealeaf CX"  # still shows the certificate


def test_inspect_password_with_space_fails_without_showing_it(defects):
    report = certs.inspect_pfx(defects["space_pw"].read_bytes(), Secret("has space"))
    c = checks_by_name(report)["password"]
    assert c.status == "fail" and "space" in c.reason and "has space" not in c.reason
    assert report.exit_code == 1


def test_inspect_aes_names_algorithms_like_openssl(defects):
    path = defects["aes"]
    report = certs.inspect_pfx(path.read_bytes(), Secret(PW))
    p12 = report.details["pkcs12"]
    out = openssl(
        "pkcs12", "-info", "-nokeys", "-passin", "env:OSSL_PW", "-in", path.name, cwd=path.parent
    )
    text = out.stdout + out.stderr
    assert f"MAC: {p12['mac']}" in text
    assert p12["key_encryption"] == ["PBES2/AES-256-CBC"] and "AES-256-CBC" in text
    assert p12["kdf_prf"] and all(f"PRF {prf}" in text for prf in p12["kdf_prf"])


def test_legacy_rc2_pfx_is_importable(tmp_path):
    good = make_pfx(tmp_path, "good")
    proc = openssl(
        "pkcs12",
        "-export",
        "-legacy",
        "-in",
        "c.pem",
        "-inkey",
        "k.pem",
        "-out",
        "legacy.pfx",
        "-passout",
        "env:OSSL_PW",
        cwd=good.parent,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip("openssl has no legacy provider here")
    report = certs.inspect_pfx((good.parent / "legacy.pfx").read_bytes(), Secret(PW))
    assert report.details["pkcs12"]["cert_encryption"] == ["pbeWithSHA1And40BitRC2-CBC"]
    assert checks_by_name(report)["encryption"].status == "pass"


# --- the DER walker on BER input -------------------------------------------------------------


def test_ber_indefinite_length_and_constructed_octets():
    # SEQUENCE (indefinite) { INTEGER 3, OCTET STRING (constructed) { "ab", "cd" } }
    blob = bytes.fromhex("30800201032480040261620402636400000000")
    node = pkcs12info.parse(blob)
    assert node.tag == 0x30 and len(node.children) == 2
    assert node.children[0].value == b"\x03"
    assert node.children[1].value == b"abcd"
    assert pkcs12info.decode_oid(bytes.fromhex("2a864886f70d010c0a0102")) == (
        pkcs12info.OID_SHROUDED_KEY_BAG
    )
    with pytest.raises(pkcs12info.NotPkcs12):
        pkcs12info.parse(bytes.fromhex("3005020103"))  # runs past the end


# --- certificate_for with a real inventory ---------------------------------------------------


def _inventory(d: Path, source: str, path: str = "TCXcert.pfx") -> Path:
    (d / "pfx.pw").write_text(PW + "\n")
    (d / "pfx.pw").chmod(0o600)
    inv = d / "inventory.yaml"
    inv.write_text(f"""\
winrm:
  scheme: https
  transport: basic
  username: lab
  password_file: pfx.pw
certificate:
  source: {source}
  path: {path}
  password_file: pfx.pw
hosts:
  hbr01: {{address: 127.0.0.1, role: hbr}}
""")
    return inv


def test_certificate_for_generates_once(tmp_path):
    fleet = load_fleet(_inventory(tmp_path, "generate"))
    with pytest.raises(certs.CertificateNotCreated):
        certs.certificate_for(fleet, create=False)
    assert not (tmp_path / "TCXcert.pfx").exists()
    pfx, data = certs.certificate_for(fleet, create=True)
    path = tmp_path / "TCXcert.pfx"
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, data2 = certs.certificate_for(fleet, create=True)
    assert again.sha256 == pfx.sha256 and data2 == data
    same, _ = certs.certificate_for(fleet, create=False)
    assert same.sha256 == pfx.sha256


def test_certificate_for_two_racing_runs_share_one_file(tmp_path):
    fleet = load_fleet(_inventory(tmp_path, "generate"))
    results: list[str] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait(timeout=10)
        results.append(certs.certificate_for(fleet, create=True)[0].sha256)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1]
    assert (
        certs.load_pfx((tmp_path / "TCXcert.pfx").read_bytes(), Secret(PW)).sha256 == (results[0])
    )


def test_certificate_for_file_source_validates(tmp_path, defects):
    shutil.copy(defects["wrong_cn"], tmp_path / "org.pfx")
    fleet = load_fleet(_inventory(tmp_path, "file", "org.pfx"))
    with pytest.raises(CertificateError, match="is not fit for Tealeaf: subject CN is"):
        certs.certificate_for(fleet, create=True)
    shutil.copy(defects["good"], tmp_path / "org.pfx")
    pfx, data = certs.certificate_for(fleet, create=True)
    assert data == defects["good"].read_bytes()
    assert pfx.certificate.subject.rfc4514_string() == "CN=IBM Tealeaf CX"
    (tmp_path / "org.pfx").unlink()
    with pytest.raises(CertificateError, match="does not exist"):
        certs.certificate_for(fleet, create=True)


def test_certificate_for_wrong_password_never_shows_it(tmp_path):
    (tmp_path / "TCXcert.pfx").write_bytes(certs.generate_pfx(Secret("0therPassw0rd")))
    fleet = load_fleet(_inventory(tmp_path, "generate"))
    with pytest.raises(CertificateError) as ei:
        certs.certificate_for(fleet, create=True)
    assert "the password does not open" in str(ei.value)
    assert PW not in str(ei.value) and "0therPassw0rd" not in str(ei.value)


def test_certificate_for_tlstool_is_the_engines(tmp_path):
    fleet = load_fleet(_inventory(tmp_path, "tlstool"))
    with pytest.raises(CertificateError, match="TLSTool"):
        certs.certificate_for(fleet, create=True)
