"""Listeners that really answer on loopback: the Data Service and the TMS.

The Data Service reads EnableTLS and `tealeaf.p12` when it starts: TLS 1.2 with that pair when
enabled, plain TCP otherwise (accept, read, answer something HTTP-ish, close), and it writes the
vendor's start-up lines to `<install>\\Logs\\TLDataService_<yyyymmdd>.log`. The TMS always
speaks TLS: with its own legacy certificate while EnableTLS is not 1, with the imported pair
once enabled and restarted. A stopped service has its port closed (connection refused).

The port is reserved for the lab's whole life: while the service is stopped the socket stays
bound but does not listen, so the kernel refuses connections and no other process can take it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from tealeaf_fleet.safeio import O_BINARY

READ_TIMEOUT_S = 2.0
HANDSHAKE_TIMEOUT_S = 5.0
LEGACY_TMS_CN = "TeaLeaf TMS legacy"


def _reserve(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def free_port() -> int:
    """A currently free loopback port (the lab then reserves it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """One TCP port that a simulated service opens on start and closes on stop."""

    def __init__(
        self, port: int, banner: str, *, refuse_tls: Callable[[], bool] | None = None
    ) -> None:
        self.port = port
        self.banner = banner
        self.refuse_tls = refuse_tls  # asked at each handshake: True refuses it with an alert
        self._lock = threading.Lock()
        self._sock: socket.socket | None = _reserve(port)
        self._listening = False
        self._thread: threading.Thread | None = None
        self.tls = False

    @property
    def listening(self) -> bool:
        return self._listening

    def open(self, context: ssl.SSLContext | None) -> None:
        """Start listening, plainly (context None) or with TLS."""
        with self._lock:
            if self._listening:
                return
            if self._sock is None:
                self._sock = _reserve(self.port)
            self._sock.listen(64)
            self._listening = True
            self.tls = context is not None
            if context is not None and self.refuse_tls is not None:
                refuse = self.refuse_tls
                # called on every ClientHello (SNI or not): an alert code aborts the handshake
                context.sni_callback = lambda *_: (
                    ssl.ALERT_DESCRIPTION_INTERNAL_ERROR if refuse() else None
                )
            sock = self._sock
            self._thread = threading.Thread(
                target=self._accept_loop,
                args=(sock, context),
                name=f"listener-{self.port}",
                daemon=True,
            )
            self._thread.start()

    def close(self, *, final: bool = False) -> None:
        """Stop listening; keep the port reserved unless `final` (lab shutdown)."""
        with self._lock:
            sock, thread = self._sock, self._thread
            was_listening = self._listening
            self._listening = False
            self._sock = None
            self._thread = None
        if sock is not None:
            if was_listening:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            sock.close()
        if thread is not None:
            thread.join(timeout=5)
        if not final:
            with self._lock:
                if self._sock is None:
                    self._sock = _reserve(self.port)

    def _accept_loop(self, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, context), daemon=True).start()

    def _serve(self, conn: socket.socket, context: ssl.SSLContext | None) -> None:
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            stream: socket.socket = conn
            if context is not None:
                stream = context.wrap_socket(conn, server_side=True)
            stream.settimeout(READ_TIMEOUT_S)
            data = b""
            with contextlib.suppress(TimeoutError, socket.timeout):
                # keep reading only what looks like an HTTP request; a TLS ClientHello or
                # other bytes get their answer at once (no wait for a timeout)
                while (
                    b"\r\n\r\n" not in data
                    and len(data) < 65536
                    and (not data or data[:1].isalpha())
                ):
                    chunk = stream.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            body = f"{self.banner}\r\n".encode("ascii")
            stream.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
                + body
            )
        except (OSError, ssl.SSLError):
            pass  # a client that hangs up or fails the handshake: nothing to tell anyone
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def server_context(
    cert_pem: bytes, key_pem_encrypted: bytes, key_password: bytes, scratch_dir: Path
) -> ssl.SSLContext:
    """A TLS 1.2-only server context. `ssl` loads chains from files only, so the PEM goes to a
    private scratch file (key still encrypted with a throw-away password) and is removed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    scratch_dir.mkdir(parents=True, exist_ok=True)
    path = scratch_dir / f"chain-{secrets.token_hex(8)}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(cert_pem + b"\n" + key_pem_encrypted)
        ctx.load_cert_chain(str(path), password=key_password)
    finally:
        path.unlink(missing_ok=True)
    return ctx


def without_tls12(ctx: ssl.SSLContext) -> None:
    """Offer TLS 1.0/1.1 only, as SCHANNEL does on 2008 R2 booted without the TLS 1.2 server
    keys (a TLS 1.2 client's handshake then fails). Python deprecates naming these versions;
    modelling an old server is exactly what they are for here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.minimum_version = ssl.TLSVersion.TLSv1


def context_from_objects(certificate, private_key, scratch_dir: Path) -> ssl.SSLContext:
    """Server context from cryptography objects (key re-encrypted with a random password)."""
    from cryptography.hazmat.primitives import serialization

    password = secrets.token_hex(16).encode("ascii")
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    return server_context(cert_pem, key_pem, password, scratch_dir)


def legacy_tms_pem(path: Path) -> tuple[object, object]:
    """The host's own legacy TMS certificate (ECDSA P-256: fast to make for 50 hosts), created
    once and kept in the host's lab-private folder. Returns (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tealeaf_fleet.certs import certificate_builder, write_private_file

    if path.exists():
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
        key = serialization.load_pem_private_key(data, password=None)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LEGACY_TMS_CN)])
    cert = certificate_builder(name, name, key.public_key(), days=3650).sign(key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem, force=True)
    return cert, key
