"""Generate, load, inspect and validate the PKCS#12 file Tealeaf shares across its servers.

Why the details matter: every Tealeaf server imports the same PFX with `TLSTool.exe import`, and
Windows Server 2008 R2 .. 2016 (before 1709) cannot import AES/PBES2-protected PFX files (it says
"the specified network password is not correct"). So we write PBE-SHA1-3DES with a SHA-1 MAC by
default (`compat`), and `inspect_pfx` reads the protection back with `pkcs12info` (cryptography
does not expose it). Peers pin the certificate itself (its CN "IBM Tealeaf CX" is no host name),
so its SHA-256 fingerprint is the fleet-wide identity: `Pfx.sha256` / `fingerprint()`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import secrets as _random
import string
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tealeaf_fleet import pkcs12info
from tealeaf_fleet.errors import CertificateError, InputError
from tealeaf_fleet.safeio import MAX_INPUT_BYTES, O_BINARY, read_regular_file, write_file
from tealeaf_fleet.secrets import Secret

TEALEAF_CN = "IBM Tealeaf CX"
ENCRYPTIONS = ("compat", "aes256")
KEY_SIZES = (2048, 3072, 4096)
DEFAULT_DAYS = 730
WARN_DAYS = 30
KDF_ROUNDS = 2048  # OpenSSL's default; Windows 2008 R2 imports it
# Windows versions that cannot import a PFX protected with PBES2/AES (see module docstring).
OLD_WINDOWS = "Windows Server 2008 R2, 2012, 2012 R2 and 2016 before build 1709"

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
_KU_FIELDS = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


class CertificateNotCreated(CertificateError):
    """`certificate.source: generate` and the file does not exist yet (a dry run asked with
    `create=False`). A separate class so that plan/dry-run code can catch exactly this."""


@dataclass(frozen=True)
class Pfx:
    """A PFX that opened with its password and holds a key with its matching certificate."""

    certificate: x509.Certificate
    private_key: Any
    additional_certs: list[x509.Certificate]
    sha256: str  # lowercase hex SHA-256 of the certificate's DER: the fleet-wide id
    encryption: str  # key bag protection, e.g. "pbeWithSHA1And3-KeyTripleDES-CBC"
    mac: str | None  # e.g. "sha1"; None when the file has no MAC
    cert_encryption: list[str] = field(default_factory=list)
    mac_iterations: int | None = None
    friendly_name: str | None = None

    def cert_pem(self) -> bytes:
        """The certificate as PEM (what TLSTool writes to tealeaf.crt, first block)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for `ssl.load_cert_chain`. Secret
        material: write it only to 0600 files, never log it."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class Check:
    """One line of the verdict. `fatal` marks failures that make the file unusable input
    (no key, key matching no certificate): `fleet cert inspect` then exits 2, not 1."""

    name: str
    status: str  # "pass" | "warn" | "fail"
    reason: str
    fatal: bool = False


@dataclass
class Report:
    """What `fleet cert inspect` shows: `details` (JSON-ready) and the verdict `checks`."""

    file: str
    details: dict[str, Any]
    checks: list[Check]

    @property
    def fit(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        if any(c.status == "fail" and c.fatal for c in self.checks):
            return 2
        return 0 if self.fit else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            **self.details,
            "checks": [
                {"name": c.name, "status": c.status, "reason": c.reason} for c in self.checks
            ],
            "fit": self.fit,
        }


# --- small helpers ---------------------------------------------------------------------------


def fingerprint(cert: x509.Certificate, algorithm: str = "sha256") -> str:
    """Lowercase hex digest of the certificate's DER, no separators."""
    algo = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()
    return cert.fingerprint(algo).hex()


CMD_METACHARACTERS = "&|<>^%!"
PASSWORD_ADVICE = "re-export the PFX with another password (letters and digits are always safe)"
PASSWORD_RULE = "printable ASCII without space, double quote or & | < > ^ % !"


def check_password(secret: Secret) -> list[str]:
    """Problems that stop TLSTool.exe from using this password; empty when fine.

    The vendor demands ASCII with no spaces. The password is an argument of TLSTool.exe,
    which hands it to its bundled openssl.exe (`pass:<password>`), very likely on a command
    line it does not quote, perhaps through cmd.exe: a double quote, whitespace or a cmd
    metacharacter (& | < > ^ % !) would split, redirect or expand it there. Messages never
    contain the password.
    """
    value = secret.reveal()
    problems: list[str] = []
    if not value:
        return ["the password is empty"]
    if any(ord(ch) > 126 for ch in value):
        problems.append("the password has non-ASCII characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problems.append("the password has control characters")
    if " " in value:
        problems.append("the password has a space")
    if '"' in value:
        problems.append("the password has a double quote")
    if any(ch in CMD_METACHARACTERS for ch in value):
        problems.append(
            "the password has a character cmd.exe interprets (one of & | < > ^ % !), "
            "which TLSTool.exe cannot pass on to openssl.exe intact"
        )
    return problems


def generate_password(length: int = 24) -> Secret:
    """A strong password of letters and digits (fit for TLSTool and any shell)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        value = "".join(_random.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in value)
            and any(c.isupper() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return Secret(value, source="generated")


def write_private_file(
    path: str | Path, data: bytes, *, force: bool = False, field: str = "--out"
) -> None:
    """Write `data` to `path` with mode 0600; refuse to replace an existing file unless `force`.

    Without `force` the file is created with O_EXCL, so two processes can never both write it
    (the "never generate twice" rule). With `force` a regular file (or a symlink's regular
    target) is written beside and renamed over; a device, FIFO or folder is refused, never
    replaced (as root, `--out /dev/null --force` must not turn /dev/null into a key file).
    """
    p = Path(path)
    if force:
        write_file(p, data, field=field, mode=0o600, through=False)
        return
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o600)
    except FileExistsError:
        raise InputError(
            f"{p} already exists", field=field, hint="use --force to replace it"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot write {p}: {exc.strerror}", field=field) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- generate --------------------------------------------------------------------------------

CLOCK_SKEW = dt.timedelta(minutes=5)


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: Any,
    *,
    days: int,
    now: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    """What every certificate this tool signs (the fleet's PFX, the lab's CA and WinRM
    listeners) has in common: subject, issuer, public key, a random serial, valid from
    `CLOCK_SKEW` ago (a server's clock may run behind the controller's) for `days` days.
    Callers add their extensions and sign."""
    now = now or _utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def generate_pfx(
    password: Secret,
    *,
    days: int = DEFAULT_DAYS,
    key_size: int = 2048,
    encryption: str = "compat",
    friendly_name: str = TEALEAF_CN,
) -> bytes:
    """A new RSA key and self-signed certificate fit for Tealeaf, as PKCS#12 bytes.

    Subject CN "IBM Tealeaf CX", SHA-256, CA:FALSE, digitalSignature+keyEncipherment,
    serverAuth+clientAuth, random serial; valid from 5 minutes ago (clock skew between the
    controller and the servers) for `days` days.
    """
    if encryption not in ENCRYPTIONS:
        raise InputError(
            f"unknown PFX encryption {encryption!r}", hint="use one of: " + ", ".join(ENCRYPTIONS)
        )
    if key_size not in KEY_SIZES:
        raise InputError(f"key size {key_size} is not one of {KEY_SIZES}")
    if days < 1:
        raise InputError(f"validity of {days} days: must be at least 1")
    problems = check_password(password)
    if problems:
        raise InputError(
            "; ".join(problems) + " (TLSTool.exe cannot use it)",
            hint="choose another password (letters and digits are always safe)",
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TEALEAF_CN)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        certificate_builder(name, name, key.public_key(), days=days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(KDF_ROUNDS)
    if encryption == "compat":
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
            hashes.SHA1()
        )
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(
            hashes.SHA256()
        )
    algo = builder.build(password.reveal().encode("utf-8"))
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"), key, cert, None, algo
    )


# --- load ------------------------------------------------------------------------------------


def _not_pkcs12(data: bytes, name: str, reason: str) -> CertificateError:
    """Say what the file looks like instead, with the command that would fix it."""
    hint = (
        "convert it: openssl pkcs12 -export -in cert.pem -inkey key.pem -out TCXcert.pfx "
        "-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1"
    )
    head = data[:200].lstrip()
    if head.startswith(b"-----BEGIN "):
        label = head[11:].split(b"-----", 1)[0].decode("ascii", "replace")
        return CertificateError(f"{name} is PEM ({label}), not PKCS#12", hint=hint)
    if not data:
        return CertificateError(f"{name} is empty, not PKCS#12")
    try:
        decoded = base64.b64decode(data, validate=False)
        if decoded and len(decoded) > 64:
            pkcs12info.read_info(decoded)
            return CertificateError(
                f"{name} is base64 text of a PKCS#12 file, not the file",
                hint=f"decode it: base64 -d {name} > TCXcert.pfx",
            )
    except (binascii.Error, ValueError):
        pass
    try:
        x509.load_der_x509_certificate(data)
        return CertificateError(
            f"{name} is a DER certificate without its key, not PKCS#12", hint=hint
        )
    except ValueError:
        pass
    try:
        serialization.load_der_private_key(data, password=None)
        return CertificateError(
            f"{name} is a DER private key without its certificate, not PKCS#12", hint=hint
        )
    except (ValueError, TypeError):
        pass
    return CertificateError(f"{name} is not a PKCS#12 file ({reason})")


def read_structure(data: bytes, *, name: str = "PFX") -> pkcs12info.Pkcs12Info:
    """The PFX's protection and layout, or CertificateError when it is not PKCS#12."""
    try:
        return pkcs12info.read_info(data)
    except pkcs12info.NotPkcs12 as exc:
        raise _not_pkcs12(data, name, str(exc)) from None


def _spki(key_or_cert: Any) -> bytes:
    pub = key_or_cert.public_key()
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class _Opened:
    info: pkcs12info.Pkcs12Info
    key: Any
    certs: list[x509.Certificate]
    match: x509.Certificate | None
    friendly_name: str | None


def _open(data: bytes, password: Secret, name: str) -> _Opened:
    """Decrypt the PFX; CertificateError only for unusable input (not PKCS#12, wrong password).
    No key / no matching certificate are left for the caller to judge."""
    info = read_structure(data, name=name)
    try:
        p12 = pkcs12.load_pkcs12(data, password.reveal().encode("utf-8"))
    except ValueError:
        raise CertificateError(
            f"the password does not open {name}",
            hint=f"check the password source ({password.source or 'given'}); a "
            "damaged file fails the same way",
        ) from None
    certs: list[x509.Certificate] = []
    friendly = None
    if p12.cert is not None:
        certs.append(p12.cert.certificate)
        if p12.cert.friendly_name:
            friendly = p12.cert.friendly_name.decode("utf-8", "replace")
    certs.extend(c.certificate for c in p12.additional_certs)
    match = None
    if p12.key is not None:
        want = _spki(p12.key)
        match = next((c for c in certs if _spki(c) == want), None)
    return _Opened(info, p12.key, certs, match, friendly)


def load_pfx(data: bytes, password: Secret, *, name: str = "PFX") -> Pfx:
    """Open a PFX: it must decrypt with `password` and hold a private key plus the certificate
    that matches it (other certificates become `additional_certs`). CertificateError
    otherwise, with a reason that names `name` and never the password."""
    op = _open(data, password, name)
    if op.key is None:
        raise CertificateError(
            f"{name} holds no private key",
            hint="export the certificate together with its private key",
        )
    if not op.certs:
        raise CertificateError(f"{name} holds a private key but no certificate")
    if op.match is None:
        raise CertificateError(
            f"{name} holds {len(op.certs)} certificate(s) and none matches its private key"
        )
    chain = [c for c in op.certs if c is not op.match]
    key_enc = op.info.key_encryption[0] if op.info.key_encryption else "unknown"
    return Pfx(
        certificate=op.match,
        private_key=op.key,
        additional_certs=chain,
        sha256=fingerprint(op.match),
        encryption=key_enc,
        mac=op.info.mac,
        cert_encryption=list(op.info.cert_encryption),
        mac_iterations=op.info.mac_iterations,
        friendly_name=op.friendly_name,
    )


# --- inspect and validate --------------------------------------------------------------------


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_desc(key: Any) -> tuple[str, int | None]:
    """("RSA", 2048), ("EC secp256r1", 256), ... for a public or private key."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RSA", key.key_size
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {key.curve.name}", key.curve.key_size
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return "DSA", key.key_size
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519", 256
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "Ed448", 456
    return type(key).__name__, None


def _ext(cert: x509.Certificate, cls: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> list[str] | None:
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        return None
    names = [label for attr, label in _KU_FIELDS if getattr(ku, attr)]
    if ku.key_agreement:
        names += [
            label
            for attr, label in (
                ("encipher_only", "encipherOnly"),
                ("decipher_only", "decipherOnly"),
            )
            if getattr(ku, attr)
        ]
    return names


def _eku(cert: x509.Certificate) -> list[str] | None:
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return None
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku]


def _sig_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", None) or oid.dotted_string


def _cn(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _cert_summary(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_after": _iso(cert.not_valid_after_utc),
        "sha256": fingerprint(cert),
    }


def _checks(
    cert: x509.Certificate | None,
    key: Any,
    n_certs: int,
    matched: bool,
    algorithms: list[str],
    mac: str | None,
    password: Secret,
    now: dt.datetime,
) -> list[Check]:
    """Tealeaf's requirements (docs/vendor-procedure.md "Certificate requirements";
    docs/windows.md "PKCS#12 files every server can import"), one Check each, in the order an
    operator fixes them."""
    out: list[Check] = []
    if cert is not None:
        cns = _cn(cert)
        if cns == [TEALEAF_CN]:
            out.append(Check("subject", "pass", f'subject CN is "{TEALEAF_CN}"'))
        else:
            shown = ", ".join(f'"{c}"' for c in cns) or "missing"
            out.append(
                Check("subject", "fail", f'subject CN is {shown}; Tealeaf requires "{TEALEAF_CN}"')
            )
    if key is None:
        out.append(Check("private key", "fail", "the file holds no private key", fatal=True))
    elif not matched:
        out.append(
            Check(
                "private key",
                "fail",
                f"none of the {n_certs} certificate(s) matches the private key",
                fatal=True,
            )
        )
    else:
        out.append(Check("private key", "pass", "present and matches the certificate"))
    if cert is None:
        out.append(Check("certificate", "fail", "the file holds no certificate", fatal=True))
    else:
        ekus = _eku(cert)
        if ekus is None:
            out.append(
                Check("usage", "pass", "no extended key usage: fit for TLS server and client")
            )
        elif "anyExtendedKeyUsage" in ekus or {"serverAuth", "clientAuth"} <= set(ekus):
            out.append(Check("usage", "pass", "extended key usage allows TLS server and client"))
        else:
            missing = [e for e in ("serverAuth", "clientAuth") if e not in ekus]
            out.append(
                Check(
                    "usage",
                    "fail",
                    "extended key usage lacks "
                    + " and ".join(missing)
                    + " (Tealeaf uses it as TLS server and client)",
                )
            )
        kus = _key_usage(cert)
        if kus is not None:
            lacking = [k for k in ("digitalSignature", "keyEncipherment") if k not in kus]
            if len(lacking) == 2:
                out.append(
                    Check(
                        "key usage",
                        "fail",
                        "key usage lacks digitalSignature and "
                        "keyEncipherment: no TLS handshake works",
                    )
                )
            elif lacking:
                out.append(
                    Check(
                        "key usage",
                        "warn",
                        f"key usage lacks {lacking[0]}: some TLS 1.2 cipher suites will fail",
                    )
                )
        kind, size = _key_desc(cert.public_key())
        if kind != "RSA":
            out.append(
                Check("key", "fail", f"{kind} key; Tealeaf requires RSA of 2048 bits or more")
            )
        elif (size or 0) < 2048:
            out.append(Check("key", "fail", f"RSA {size} bits; Tealeaf requires 2048 or more"))
        else:
            out.append(Check("key", "pass", f"RSA {size} bits"))
        sig = _sig_name(cert)
        if "md5" in sig.lower() or "sha1" in sig.lower():
            out.append(Check("signature", "warn", f"{sig}: a SHA-256 signature is expected"))
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        days_left = (na - now).total_seconds() / 86400
        if now < nb:
            out.append(Check("validity", "fail", f"not valid before {_iso(nb)}"))
        elif now > na:
            out.append(Check("validity", "fail", f"expired on {_iso(na)}"))
        elif days_left < WARN_DAYS:
            out.append(
                Check(
                    "validity",
                    "warn",
                    f"expires on {_iso(na)}, in {int(days_left)} "
                    f"day(s): renew it before rolling out",
                )
            )
        else:
            out.append(
                Check("validity", "pass", f"valid until {_iso(na)} ({int(days_left)} days left)")
            )
    out.append(_encryption_check(algorithms, mac))
    problems = check_password(password)
    if problems:
        out.append(
            Check(
                "password",
                "fail",
                "; ".join(problems) + f" (Tealeaf needs {PASSWORD_RULE}): {PASSWORD_ADVICE}",
            )
        )
    else:
        out.append(Check("password", "pass", PASSWORD_RULE))
    return out


def _encryption_check(algorithms: list[str], mac: str | None) -> Check:
    shown = ", ".join(algorithms) or "none"
    aes = [a for a in algorithms if a.startswith("PBES2")]
    if aes:
        return Check(
            "encryption",
            "warn",
            f'{shown}: {OLD_WINDOWS} cannot import it ("the specified network '
            'password is not correct"); recreate with --encryption compat',
        )
    if "none" in algorithms:
        return Check("encryption", "warn", f"{shown}: the private key is not encrypted")
    unknown = [a for a in algorithms if a not in pkcs12info.LEGACY_PBE]
    if unknown:
        return Check("encryption", "warn", f"{shown}: unknown to older Windows")
    if mac is None:
        return Check("encryption", "warn", f"{shown}: the file has no integrity MAC")
    if mac != "sha1":
        return Check(
            "encryption",
            "warn",
            f"{shown}, MAC {mac}: {OLD_WINDOWS} may not verify a MAC other than SHA-1",
        )
    return Check(
        "encryption", "pass", f"{shown}, MAC {mac}: importable on Windows Server 2008 R2 and later"
    )


def validate_pfx(pfx: Pfx, password: Secret, *, now: dt.datetime | None = None) -> list[Check]:
    """The verdict for a loaded PFX (what `certificate_for` enforces: no "fail")."""
    algorithms: list[str] = []
    for a in [pfx.encryption, *pfx.cert_encryption]:
        if a not in algorithms:
            algorithms.append(a)
    return _checks(
        pfx.certificate,
        pfx.private_key,
        1 + len(pfx.additional_certs),
        True,
        algorithms,
        pfx.mac,
        password,
        now or _utcnow(),
    )


def inspect_pfx(
    data: bytes, password: Secret, *, name: str = "PFX", now: dt.datetime | None = None
) -> Report:
    """Everything `fleet cert inspect` shows, and the verdict.

    Raises CertificateError only when the file cannot be read at all (not PKCS#12, wrong
    password); a missing key or a key matching no certificate is reported as a fatal check.
    """
    now = now or _utcnow()
    op = _open(data, password, name)
    cert = op.match or (op.certs[0] if op.certs else None)
    details: dict[str, Any] = {}
    if cert is not None:
        kind, size = _key_desc(cert.public_key())
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        details.update(
            {
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "serial": format(cert.serial_number, "x"),
                "not_before": _iso(nb),
                "not_after": _iso(na),
                "days_left": int((na - now).total_seconds() // 86400),
                "key_type": kind,
                "key_size": size,
                "signature_algorithm": _sig_name(cert),
                "key_usage": _key_usage(cert),
                "extended_key_usage": _eku(cert),
                "sha256": fingerprint(cert),
                "sha1": fingerprint(cert, "sha1"),
            }
        )
    details.update(
        {
            "friendly_name": op.friendly_name,
            "has_private_key": op.key is not None,
            "pkcs12": {
                "key_encryption": op.info.key_encryption,
                "cert_encryption": op.info.cert_encryption,
                "mac": op.info.mac,
                "mac_iterations": op.info.mac_iterations,
                "kdf_prf": op.info.kdf_prf,
            },
            "chain": [_cert_summary(c) for c in op.certs if c is not cert],
        }
    )
    checks = _checks(
        cert,
        op.key,
        len(op.certs),
        op.match is not None,
        op.info.algorithms,
        op.info.mac,
        password,
        now,
    )
    return Report(file=name, details=details, checks=checks)


# --- the engine's entry point ----------------------------------------------------------------


class _CertificateSettings(Protocol):
    source: str
    path: Path


class _FleetLike(Protocol):
    """The part of `inventory.Fleet` this module uses (docs/architecture.md)."""

    @property
    def certificate(self) -> _CertificateSettings: ...

    def pfx_password(self) -> Secret: ...


def certificate_for(fleet: _FleetLike, *, create: bool) -> tuple[Pfx, bytes]:
    """The fleet's PFX, loaded and validated: `(pfx, file bytes)`.

    `source: generate` creates the file at `certificate.path` only when it does not exist
    (exclusively, so never twice, even with two runs racing), and only with `create=True`;
    otherwise it raises CertificateNotCreated. `source: file` loads the given file. Either way
    a file that fails a Tealeaf requirement raises CertificateError with every reason.
    `source: tlstool` is the engine's business (TLSTool creates the file on a server).
    """
    settings = fleet.certificate
    path = Path(settings.path)
    if settings.source == "tlstool":
        raise CertificateError(
            "certificate.source tlstool: the file is created by TLSTool.exe "
            "on a server, not on the controller"
        )
    if settings.source not in ("generate", "file"):
        raise CertificateError(f"unknown certificate.source {settings.source!r}")
    password = fleet.pfx_password()
    if settings.source == "generate" and not path.exists():
        if not create:
            raise CertificateNotCreated(
                f"{path} does not exist yet: the rollout generates it once, at its certificate step"
            )
        data = generate_pfx(password)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole beside the target, then hard-linked into place: the link appears
        # atomically with the full content, and fails when another run linked its file first
        # (an O_EXCL create would let that other run read a half-written file).
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_BINARY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another run created it a moment ago: use that one, never a second one
        finally:
            tmp.unlink()
    if not os.path.lexists(path):
        raise CertificateError(
            f"{path} does not exist", hint="set certificate.path, or use source: generate"
        )
    data = read_regular_file(path, MAX_INPUT_BYTES, "PFX", field="certificate.path")
    pfx = load_pfx(data, password, name=str(path))
    fails = [c.reason for c in validate_pfx(pfx, password) if c.status == "fail"]
    if fails:
        raise CertificateError(
            f"{path} is not fit for Tealeaf: " + "; ".join(fails), hint=f"fleet cert inspect {path}"
        )
    return pfx, data
