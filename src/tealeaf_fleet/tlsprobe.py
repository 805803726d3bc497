"""A TLS handshake from the controller to a Tealeaf port: is it TLS, and with which certificate?

Why no validation: the Tealeaf certificate's CN ("IBM Tealeaf CX") is not a host name and it is
self-signed; peers pin the certificate itself. So the probe accepts any certificate and reports
its SHA-256, and the caller compares that with the PFX's (`certs.Pfx.sha256`). TLS 1.2 is the
minimum because that is what Tealeaf speaks; the negotiated version is recorded.

Outcomes (`ProbeResult.kind`):
- "tls": the handshake completed (`sha256`, `subject`, `protocol` set), or the peer answered
  with a TLS alert (a TLS server that refused us: `sha256` None, `error` says why);
- "plain": TCP accepted but no TLS server behind it (garbage, EOF, reset or silence);
- "unreachable": refused, timed out, no route, unknown name.
Ordinary network failures never raise.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one handshake; see the module docstring for `kind`."""

    kind: str  # "tls" | "plain" | "unreachable"
    address: str
    port: int
    sha256: str | None = None  # lowercase hex SHA-256 of the peer certificate's DER
    subject: str | None = None  # RFC 4514, e.g. "CN=IBM Tealeaf CX"
    protocol: str | None = None  # e.g. "TLSv1.2"
    error: str | None = None

    @property
    def is_tls(self) -> bool:
        return self.kind == "tls" and self.sha256 is not None


def _subject(der: bytes) -> str | None:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


def _context(
    client_cert: tuple[str | Path, str | Path] | None, *, tls12_only: bool = False
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the CN is not a host name: the certificate is pinned
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls12_only:  # nothing but TLS 1.2 may complete: the proof that SCHANNEL has it on
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return ctx


def _is_alert(exc: ssl.SSLError) -> bool:
    """True when the peer sent a TLS alert, i.e. it speaks TLS but refused the handshake."""
    reason = (exc.reason or "").upper()
    return "ALERT" in reason


def handshake(
    address: str,
    port: int,
    *,
    timeout_s: float = 5.0,
    client_cert: tuple[str | Path, str | Path] | None = None,
    tls12_only: bool = False,
) -> ProbeResult:
    """Connect to `address:port`, handshake, and report what answered (never raises for an
    ordinary network failure; `timeout_s` bounds the connect and the handshake each).

    `client_cert` (certificate PEM, key PEM) is presented when the server asks for one: a
    Tealeaf peer that demands mutual TLS otherwise refuses the handshake with an alert (kind
    "tls", no sha256). A bad `client_cert` file is the caller's error and does raise.
    `tls12_only` offers TLS 1.2 and nothing else: the handshake completes only where the
    server's TLS stack has TLS 1.2 on now (`tls12_active`).
    """
    ctx = _context(client_cert, tls12_only=tls12_only)
    try:
        sock = socket.create_connection((address, port), timeout=timeout_s)
    except (TimeoutError, OSError) as exc:
        return ProbeResult("unreachable", address, port, error=_describe(exc))
    try:
        with ctx.wrap_socket(sock, server_hostname=None) as tls:
            der = tls.getpeercert(binary_form=True)
            protocol = tls.version()
    except ssl.SSLError as exc:
        if _is_alert(exc):
            return ProbeResult("tls", address, port, error=f"TLS alert from the peer: {exc.reason}")
        return ProbeResult("plain", address, port, error=f"not a TLS server: {_describe(exc)}")
    except (TimeoutError, OSError) as exc:  # EOF, reset, silence: TCP answered, TLS did not
        return ProbeResult("plain", address, port, error=f"not a TLS server: {_describe(exc)}")
    finally:
        sock.close()
    if not der:
        return ProbeResult(
            "tls", address, port, protocol=protocol, error="the server sent no certificate"
        )
    return ProbeResult(
        "tls",
        address,
        port,
        sha256=hashlib.sha256(der).hexdigest(),
        subject=_subject(der),
        protocol=protocol,
    )


def tls12_active(address: str, port: int, *, timeout_s: float = 5.0) -> ProbeResult:
    """A TLS 1.2-only handshake: on Windows Server 2008 R2, SCHANNEL reads its TLS 1.2 keys at
    boot, so registry values set since the last boot do not show whether TLS 1.2 is on; a
    handshake that completes (`is_tls`) does."""
    return handshake(address, port, timeout_s=timeout_s, tls12_only=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text
