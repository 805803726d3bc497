"""The lab's own certificate authority and the WinRM servers' certificates.

The lab's https endpoints must be verifiable like real ones (clients keep validation on and trust
`ca.pem`), so the lab signs a server certificate for 127.0.0.1 / localhost with its own CA
instead of serving self-signed certificates that would train users to switch validation off.

Keys are ECDSA P-256: generating one takes about a millisecond, so every host can have its own
certificate (`server_context(host_name)`) and a 50-host lab still starts at once; callers that
prefer one certificate for all hosts pass the same name every time (contexts are cached by name).
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from pathlib import Path

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"


class LabCA:
    """A CA living in one folder: `ca.pem`, `ca-key.pem`, and `server-NAME.{pem,key}`."""

    def __init__(self, directory: Path, key, cert) -> None:
        self.directory = directory
        self._key = key
        self._cert = cert
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    @property
    def ca_file(self) -> Path:
        """The PEM file clients trust (`ca_bundle` in the lab's inventory)."""
        return self.directory / CA_FILE

    @classmethod
    def create(
        cls, directory: str | Path, *, common_name: str = "tealeaf-fleet lab CA", days: int = 365
    ) -> LabCA:
        """Make a new CA in `directory` (created if missing), writing ca.pem and ca-key.pem."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        from tealeaf_fleet.certs import certificate_builder, write_private_file

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            certificate_builder(name, name, key.public_key(), days=days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        (folder / CA_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private_file(
            folder / CA_KEY_FILE,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            force=True,
        )
        return cls(folder, key, cert)

    @classmethod
    def load(cls, directory: str | Path) -> LabCA:
        """Reopen a CA made by `create` (e.g. when a lab restarts in the same folder)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        folder = Path(directory)
        cert = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / CA_KEY_FILE).read_bytes(), None)
        return cls(folder, key, cert)

    def issue_server_cert(self, name: str, *, days: int = 365) -> tuple[Path, Path]:
        """Sign a server certificate for 127.0.0.1, localhost and `name`; (cert, key) paths.

        The certificate file holds the leaf and the CA, so clients get the whole chain.
        """
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        from tealeaf_fleet.certs import certificate_builder, write_private_file

        key = ec.generate_private_key(ec.SECP256R1())
        dns = ["localhost"]
        if name and name.lower() != "localhost" and _is_dns_label(name):
            dns.append(name.lower())
        san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        cert = (
            certificate_builder(subject, self._cert.subject, key.public_key(), days=days)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "server"
        cert_path = self.directory / f"server-{safe}.pem"
        key_path = self.directory / f"server-{safe}.key"
        cert_path.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + self._cert.public_bytes(serialization.Encoding.PEM)
        )
        write_private_file(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            force=True,
        )
        return cert_path, key_path

    def server_context(self, name: str = "lab") -> ssl.SSLContext:
        """A TLS 1.2+ server context with `name`'s certificate (issued on first use, cached)."""
        with self._lock:
            ctx = self._contexts.get(name)
            if ctx is None:
                cert_path, key_path = self.issue_server_cert(name)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(cert_path, key_path)
                self._contexts[name] = ctx
            return ctx


def _is_dns_label(name: str) -> bool:
    return all(part and all(c.isalnum() or c == "-" for c in part) for part in name.split("."))
