"""tlsprobe.handshake against real servers started here on 127.0.0.1, port 0."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tealeaf_fleet import certs, tlsprobe
from tealeaf_fleet.secrets import Secret


class Server:
    """A loopback listener whose accepted connections go to `serve(conn)` in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(5)
            with conn:
                try:
                    self.serve(conn)
                except (OSError, ssl.SSLError) as exc:  # the client may hang up: expected
                    self.errors.append(exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module")
def pfx_files(tmp_path_factory) -> tuple[certs.Pfx, Path, Path]:
    d = tmp_path_factory.mktemp("probe")
    pfx = certs.load_pfx(certs.generate_pfx(Secret("Pr0beTest")), Secret("Pr0beTest"))
    cert, key = d / "cert.pem", d / "key.pem"
    cert.write_bytes(pfx.cert_pem())
    certs.write_private_file(key, pfx.key_pem())
    return pfx, cert, key


@pytest.fixture
def start() -> Iterator[Callable[[Callable[[socket.socket], None]], Server]]:
    servers: list[Server] = []

    def _start(serve: Callable[[socket.socket], None]) -> Server:
        s = Server(serve)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.close()


def tls_server(
    cert: Path,
    key: Path,
    *,
    max_version: ssl.TLSVersion | None = None,
    require_client_cert: bool = False,
) -> Callable[[socket.socket], None]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if max_version is not None:
        ctx.maximum_version = max_version
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cert)

    def serve(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # hold until the client closes

    return serve


def test_tls_server_shows_the_pfx_certificate(pfx_files, start):
    pfx, cert, key = pfx_files
    srv = start(tls_server(cert, key))
    r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=5)
    assert r.kind == "tls" and r.is_tls, r
    assert r.sha256 == pfx.sha256
    assert r.subject == "CN=IBM Tealeaf CX"
    assert r.protocol in ("TLSv1.2", "TLSv1.3")
    assert r.error is None and r.port == srv.port and r.address == "127.0.0.1"


def test_tls12_only_server_records_tls12(pfx_files, start):
    pfx, cert, key = pfx_files
    srv = start(tls_server(cert, key, max_version=ssl.TLSVersion.TLSv1_2))
    r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=5)
    assert r.kind == "tls" and r.protocol == "TLSv1.2" and r.sha256 == pfx.sha256


def test_server_that_refuses_us_with_an_alert_is_tls_without_certificate(pfx_files, start):
    _, cert, key = pfx_files
    srv = start(tls_server(cert, key, max_version=ssl.TLSVersion.TLSv1_2, require_client_cert=True))
    r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=5)
    assert r.kind == "tls" and not r.is_tls and r.sha256 is None
    assert r.error and "alert" in r.error.lower()
    # presenting the shared certificate as client certificate (mutual TLS) gets through
    r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=5, client_cert=(cert, key))
    assert r.kind == "tls" and r.is_tls and r.sha256 == pfx_files[0].sha256


def test_plain_http_server_is_plain(start):
    def serve(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    srv = start(serve)
    r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=5)
    assert r.kind == "plain" and r.sha256 is None and r.protocol is None
    assert r.error and r.error.startswith("not a TLS server")


def test_server_that_closes_at_once_is_plain(start):
    srv = start(lambda conn: None)  # accept, then close: EOF during the handshake
    r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=5)
    assert r.kind == "plain", r


def test_silent_server_is_plain_after_the_timeout(start):
    release = threading.Event()
    srv = start(lambda conn: release.wait(5))
    try:
        r = tlsprobe.handshake("127.0.0.1", srv.port, timeout_s=0.5)
    finally:
        release.set()
    assert r.kind == "plain" and "timed out" in (r.error or ""), r


def test_closed_port_is_unreachable():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = tlsprobe.handshake("127.0.0.1", port, timeout_s=2)
    assert r.kind == "unreachable" and r.error == "connection refused", r
    assert r.sha256 is None


def test_tls12_active_offers_tls12_alone(pfx_files, start):
    """`tls12_active` negotiates TLS 1.2 even with a server that would take TLS 1.3."""
    pfx, cert, key = pfx_files
    srv = start(tls_server(cert, key))
    r = tlsprobe.tls12_active("127.0.0.1", srv.port, timeout_s=5)
    assert r.is_tls and r.protocol == "TLSv1.2" and r.sha256 == pfx.sha256


def test_tls12_active_fails_where_the_server_lacks_tls12(pfx_files, start):
    """A server offering TLS 1.0/1.1 only (2008 R2 booted without the TLS 1.2 keys, as the lab
    models it): the TLS 1.2-only handshake does not complete."""
    from tealeaf_fleet.lab.dataservice import without_tls12

    _pfx, cert, key = pfx_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    without_tls12(ctx)

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(ssl.SSLError, OSError), ctx.wrap_socket(conn, server_side=True):
            pass

    srv = start(serve)
    r = tlsprobe.tls12_active("127.0.0.1", srv.port, timeout_s=5)
    assert not r.is_tls and r.kind in ("tls", "plain"), r
