"""Emulation of the vendor's `TLSTool.exe` (docs/vendor-procedure.md "TLSTool commands"),
with its console semantics.

    TLSTool.exe create -site FILE PASSWORD   writes a self-signed PKCS#12 (certs.generate_pfx)
    TLSTool.exe import FILE PASSWORD         checks the password (certs.load_pfx), writes
        C:\\ProgramData\\IBM\\Tealeaf\\security\\tealeaf.crt (PEM cert + PEM key) and
        tealeaf.p12, and registry `...\\TeaLeaf Technology\\security\\TLSCertPassword`
    TLSTool.exe enable                       refuses without an imported pair; EnableTLS=1 and
                                             server.tls.xml
    TLSTool.exe disable                      EnableTLS=0

The password never reaches the output, an event or a file: tealeaf.p12 is re-encrypted with a
random per-host value, and that value is what TLSCertPassword holds (an opaque token, as the
real tool stores something only Tealeaf's services can use). FILE is relative to the working
folder. Exit codes: 0 ok, 1 usage or refused, 2 file not found, 3 wrong password or not a
PKCS#12, 4 the operation failed on this host (fault, disk full).

TLSTool bundles openssl.exe and, pessimistically, hands it FILE as given and `pass:PASSWORD`
on a command line it does not quote, through cmd.exe (the vendor runs it from Tools with a bare
file name and demands "standard ASCII characters and no spaces" in the password). So a FILE
with whitespace or parentheses reaches openssl cut at the first one (file not found, or a
usage error for create), and a password with a cmd metacharacter (& | < > ^ % !) is split,
redirected or expanded before openssl sees it (a wrong password for import, a failed export for
create).
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from tealeaf_fleet.lab.hosterror import HostError
from tealeaf_fleet.lab.registry import SECURITY_KEY, TEALEAF_KEY

if TYPE_CHECKING:
    from tealeaf_fleet.lab.host import LabHost

SECURITY_DIR = r"C:\ProgramData\IBM\Tealeaf\security"
USAGE = (
    "Usage:\r\n"
    "  TLSTool.exe create -site <file.pfx> <password>\r\n"
    "  TLSTool.exe import <file.pfx> <password>\r\n"
    "  TLSTool.exe enable\r\n"
    "  TLSTool.exe disable\r\n"
)
SERVER_TLS_XML = """<?xml version="1.0" encoding="utf-8"?>
<TLSConfiguration>
  <Enabled>true</Enabled>
  <Protocol>TLSv1.2</Protocol>
  <Certificate>{dir}\\tealeaf.crt</Certificate>
  <KeyStore>{dir}\\tealeaf.p12</KeyStore>
</TLSConfiguration>
"""


OPENSSL_SPLITS = re.compile(r"[\s()]")  # where an unquoted file argument breaks apart
CMD_METACHARACTERS = re.compile(r"[&|<>^%!]")


def _openssl_mangles_file(file: str) -> str | None:
    """What openssl.exe gets instead of `file` on an unquoted command line, or None."""
    if not OPENSSL_SPLITS.search(file):
        return None
    return OPENSSL_SPLITS.split(file, maxsplit=1)[0]


def _resolve(cwd: str, file: str) -> str:
    if len(file) >= 2 and file[1] == ":" or file.startswith("\\"):
        return file
    return cwd.rstrip("\\") + "\\" + file


def _password_ok(password: str) -> str | None:
    if not password:
        return "Error: a password is required.\r\n"
    if not password.isascii() or any(c.isspace() for c in password):
        return "Error: the password must consist of ASCII characters only, without spaces.\r\n"
    return None


def run(host: LabHost, args: list[str], cwd: str) -> tuple[int, str]:
    """Run one TLSTool command on `host`; returns (exit code, output). Records a `tlstool`
    event with the verb and exit code only."""
    verb = args[0].lower() if args else ""
    try:
        code, out = _dispatch(host, verb, args[1:], cwd)
    except HostError as exc:
        code, out = 4, f"Error: {exc}\r\n"
    host.record("tlstool", verb=verb or None, exit=code)
    return code, out


def _dispatch(host: LabHost, verb: str, rest: list[str], cwd: str) -> tuple[int, str]:
    if verb == "create":
        if len(rest) != 3 or rest[0].lower() != "-site":
            return 1, USAGE
        if _openssl_mangles_file(rest[1]) is not None:
            return (
                4,
                "Error: openssl.exe pkcs12 -export failed (exit code 1): "
                "Use -help for summary.\r\n",
            )
        if CMD_METACHARACTERS.search(rest[2]):
            return 4, "Error: openssl.exe pkcs12 -export failed (exit code 1).\r\n"
        return _create(host, _resolve(cwd, rest[1]), rest[2])
    if verb == "import":
        if len(rest) != 2:
            return 1, USAGE
        cut = _openssl_mangles_file(rest[0])
        if cut is not None:
            return 2, (
                f"Error: openssl.exe pkcs12 failed (exit code 1): Can't open {cut} for "
                "reading, No such file or directory\r\n"
            )
        if CMD_METACHARACTERS.search(rest[1]):
            return 3, (
                "Error: openssl.exe pkcs12 failed (exit code 1): Mac verify error: invalid "
                "password?\r\n"
            )
        return _import(host, _resolve(cwd, rest[0]), rest[1])
    if verb == "enable" and not rest:
        return _enable(host)
    if verb == "disable" and not rest:
        host.reg_set(TEALEAF_KEY, "EnableTLS", 0, "DWord")
        return 0, (
            "TLS disabled (EnableTLS = 0).\r\n"
            "Restart all TeaLeaf services for the change to take effect.\r\n"
        )
    return 1, USAGE


def _create(host: LabHost, target: str, password: str) -> tuple[int, str]:
    from tealeaf_fleet import certs
    from tealeaf_fleet.secrets import Secret

    problem = _password_ok(password)
    if problem:
        return 1, problem
    data = certs.generate_pfx(Secret(password))
    host.write_file(target, data, make_parents=False)
    return 0, (
        f"Creating a self-signed certificate pair for IBM Tealeaf CX...\r\n"
        f"Certificate pair written to {target}\r\n"
    )


def _import(host: LabHost, source: str, password: str) -> tuple[int, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from tealeaf_fleet import certs
    from tealeaf_fleet.errors import CertificateError
    from tealeaf_fleet.secrets import Secret

    problem = _password_ok(password)
    if problem:
        return 1, problem
    if not host.path(source).is_file():
        return 2, (f"Error: cannot open '{source}': The system cannot find the file specified.\r\n")
    data = host.read_file(source)
    try:
        pfx = certs.load_pfx(data, Secret(password), name=source)
    except CertificateError:
        return 3, (
            f"Error: cannot read '{source}': the specified network password is not "
            "correct, or the file is not a PKCS#12 certificate pair.\r\n"
        )
    if host.faults().get("import_fails"):
        return 4, "Error: import failed: Access is denied.\r\n"
    token = secrets.token_urlsafe(24)
    pem = pfx.certificate.public_bytes(serialization.Encoding.PEM) + pfx.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    p12 = pkcs12.serialize_key_and_certificates(
        b"tealeaf",
        pfx.private_key,
        pfx.certificate,
        None,
        serialization.BestAvailableEncryption(token.encode()),
    )
    host.mkdir(SECURITY_DIR)
    host.write_file(SECURITY_DIR + r"\tealeaf.crt", pem)
    host.write_file(SECURITY_DIR + r"\tealeaf.p12", p12)
    host.reg_set(SECURITY_KEY, "TLSCertPassword", token, "String")
    return 0, (
        f"Importing certificate pair from {source}...\r\n"
        f"Certificate written to {SECURITY_DIR}\\tealeaf.crt\r\n"
        f"Key store written to {SECURITY_DIR}\\tealeaf.p12\r\n"
        "Import complete.\r\n"
    )


def _enable(host: LabHost) -> tuple[int, str]:
    imported = (
        host.exists(SECURITY_DIR + r"\tealeaf.crt")
        and host.exists(SECURITY_DIR + r"\tealeaf.p12")
        and host.reg_get(SECURITY_KEY, "TLSCertPassword") is not None
    )
    if not imported:
        return 1, (
            "Error: no certificate pair has been imported on this server.\r\n"
            "Run 'TLSTool.exe import <file.pfx> <password>' first.\r\n"
        )
    if host.faults().get("enable_fails"):
        return 4, "Error: cannot update the registry: Access is denied.\r\n"
    host.write_file(
        SECURITY_DIR + r"\server.tls.xml",
        SERVER_TLS_XML.format(dir=SECURITY_DIR).replace("\n", "\r\n").encode("ascii"),
    )
    host.reg_set(TEALEAF_KEY, "EnableTLS", 1, "DWord")
    return 0, (
        "TLS enabled (EnableTLS = 1).\r\n"
        "Restart all TeaLeaf services for the change to take effect.\r\n"
    )
