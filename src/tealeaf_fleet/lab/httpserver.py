"""One lab host's WinRM HTTP(S) endpoint: transport, authentication, faults, encryption.

`WinRMServer` listens on 127.0.0.1, one thread per TCP connection, HTTP/1.1 keep-alive (NTLM
authenticates a connection, not a request). Per request, in this order:
1. `host.is_down()`: close the connection without an answer (a rebooting / unreachable host);
2. `faults()`: `slow` and the server's `latency_ms` sleep first;
3. authentication: https + Basic, or Negotiate/NTLM (http with message encryption; also https),
   401 with `WWW-Authenticate` otherwise, and for every request while `auth_fails` is set;
4. decryption (multipart/encrypted, one unwrap per request);
5. `flaky` (via `host.consume_flaky()`): a 500 SOAP fault with no WSManFault code;
6. `host.record("request", action=..., shell=..., command=..., console_mode_stdin=...)`
   (`wsman.request_fields`), then the shell operation (`wsman.ShellService`);
7. the answer, encrypted when the request was (faults included: the NTLM sealing state is a
   sequence, so every request gets exactly one wrapped answer, in order).
Auth-only legs (challenge/response, pywinrm's and pypsrp's empty-body POST) are recorded with
action "auth".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import http.server
import logging
import socket
import socketserver
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from tealeaf_fleet.lab import wsman
from tealeaf_fleet.lab.api import ShellHost

log = logging.getLogger(__name__)

SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
ENC_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENC_CONTENT_TYPE = f'multipart/encrypted;protocol="{ENC_PROTOCOL}";boundary="Encrypted Boundary"'
BOUNDARY = b"--Encrypted Boundary"
OCTET_HEADER = b"\tContent-Type: application/octet-stream\r\n"
BASIC_CHALLENGE = 'Basic realm="WSMAN"'
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0  # a keep-alive connection idle this long is closed
DRAIN_LIMIT = 64 * 1024 * 1024  # an over-size body up to this is read and dropped before a 413


class _AuthRejected(Exception):
    """Answer 401 (the connection's security context, if any, is dropped)."""


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = SOAP_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


class _Connection:
    """Per-TCP-connection authentication state (NTLM/Negotiate binds the connection)."""

    def __init__(self) -> None:
        self.ctx: Any = None  # spnego acceptor context
        self.word = "Negotiate"  # the scheme word the client used; echoed back
        self.authenticated = False  # ctx complete and the principal is the host's user


def _user_matches(expected: str, given: str) -> bool:
    """Case-insensitive; `DOMAIN\\user` matches `user` when only one side names a domain."""
    e, g = expected.lower(), given.lower()
    if e == g:
        return True
    if ("\\" in e) != ("\\" in g):
        return e.rsplit("\\", 1)[-1] == g.rsplit("\\", 1)[-1]
    return False


def _split_encrypted(body: bytes) -> list[tuple[int, bytes, bytes]]:
    """multipart/encrypted body -> [(plain length, signature header, sealed data)]."""
    parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
    out = []
    if len(parts) % 2:
        raise ValueError("odd number of MIME parts")
    for i in range(0, len(parts), 2):
        head, payload = parts[i], parts[i + 1]
        if b"Length=" not in head:
            raise ValueError("no OriginalContent Length")
        length = int(head.split(b"Length=", 1)[1].split(b"\r\n", 1)[0].strip())
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY + b"--\r\n")]
        if payload.startswith(OCTET_HEADER):
            payload = payload[len(OCTET_HEADER) :]
        if len(payload) < 4:
            raise ValueError("short encrypted payload")
        sig_len = struct.unpack("<I", payload[:4])[0]
        out.append((length, payload[4 : 4 + sig_len], payload[4 + sig_len :]))
    return out


def _wrap(ctx: Any, plain: bytes) -> bytes:
    res = ctx.wrap_winrm(plain)
    return (
        BOUNDARY
        + b"\r\n"
        + f"\tContent-Type: {ENC_PROTOCOL}\r\n".encode("ascii")
        + f"\tOriginalContent: type={SOAP_CONTENT_TYPE};Length={len(plain)}\r\n".encode("ascii")
        + BOUNDARY
        + b"\r\n"
        + OCTET_HEADER
        + struct.pack("<I", len(res.header))
        + res.header
        + res.data
        + BOUNDARY
        + b"--\r\n"
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.conn_state = _Connection()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.server.owner._serve(self)

    def end_headers_with(self, body: bytes) -> None:
        """end_headers() that sends headers and body in one write (one TLS record, one
        segment for small answers)."""
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def _not_allowed(self) -> None:
        self.send_response(405)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "0")
        self.send_header("Allow", "POST")
        self.end_headers()

    do_GET = do_PUT = do_DELETE = do_HEAD = _not_allowed  # noqa: N815


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins with a bound instead
    allow_reuse_address = False

    def __init__(self, addr: tuple[str, int], owner: WinRMServer) -> None:
        self.owner = owner
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            daemon=True,
            name=f"lab-http-{self.owner.host.name}",
        )
        with self.owner._lock:
            self.owner._threads.add(t)
        t.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.owner._lock:
                self.owner._threads.discard(threading.current_thread())

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = request
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle plus the
        # client's delayed ACK stalls every response by ~40 ms.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = self.owner.ssl_context
        if ctx is not None:
            request.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                sock = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake failed from %s: %s", client_address, exc)
                return
        with self.owner._lock:
            self.owner._conns.add(sock)
        try:
            self.RequestHandlerClass(sock, client_address, self)
        finally:
            with self.owner._lock:
                self.owner._conns.discard(sock)
            if sock is not request:
                sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class WinRMServer:
    """A WinRM endpoint for one simulated host, on 127.0.0.1 (loopback only)."""

    def __init__(
        self,
        host: ShellHost,
        *,
        scheme: str = "https",
        bind: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        latency_ms: int = 0,
        receive_timeout_s: float = 1.0,
        max_commands_per_shell: int = 1000,
        max_receive_bytes: int = wsman.MAX_RECEIVE_BYTES,
        max_envelope_kb: int = 500,
    ) -> None:
        if scheme not in ("https", "http"):
            raise ValueError(f"scheme must be https or http, not {scheme!r}")
        if scheme == "https" and ssl_context is None:
            raise ValueError("an https WinRMServer needs an ssl_context (tlsca.LabCA)")
        if not bind.startswith("127."):
            raise ValueError("the lab listens on loopback (127.0.0.0/8) only")
        self.host = host
        self.scheme = scheme
        self.bind = bind
        self.ssl_context = ssl_context if scheme == "https" else None
        self.latency_ms = latency_ms
        # MaxEnvelopeSizekb: 500 on Windows Server 2012 and later, 150 on 2008 R2. The limit is
        # on the SOAP envelope; the HTTP body of an encrypted message is a little larger.
        self.max_envelope_bytes = max_envelope_kb * 1024 + 4096
        self._requested_port = port
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._conns: set[Any] = set()
        self._httpd: _HTTPServer | None = None
        self._loop: threading.Thread | None = None
        self.shells = wsman.ShellService(
            host,
            receive_timeout_s=receive_timeout_s,
            max_commands_per_shell=max_commands_per_shell,
            max_receive_bytes=max_receive_bytes,
        )

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("WinRMServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/wsman"

    def start(self) -> WinRMServer:
        """Bind and serve in a background thread; returns self (port is known from here on)."""
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.bind, self._requested_port), self)
        self.shells.endpoint = self.url
        self._loop = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.5},
            daemon=True,
            name=f"lab-listen-{self.host.name}",
        )
        self._loop.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, cut open connections, join connection threads (bounded)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        deadline = time.monotonic() + timeout_s
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for sock in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        for t in threads + ([self._loop] if self._loop else []):
            t.join(max(0.0, deadline - time.monotonic()))
        self.shells.join_workers(max(0.0, min(1.0, deadline - time.monotonic())))

    def __enter__(self) -> WinRMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request ------------------------------------------------------------------------

    def _serve(self, h: _Handler) -> None:
        host = self.host
        if host.is_down():
            h.close_connection = True
            return
        faults = host.faults() or {}
        delay_ms = self.latency_ms
        slow = faults.get("slow")
        if isinstance(slow, dict):
            delay_ms += int(slow.get("ms", 0) or 0)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            h.close_connection = True
            self._send(
                h, _Answer(411, content_type="text/plain", headers=(("Connection", "close"),))
            )
            return
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > self.max_envelope_bytes:
            # Windows answers an over-size message (MaxEnvelopeSizekb) with HTTP 413. The body
            # is drained (bounded) so the client reads the answer instead of a broken pipe,
            # and the connection is closed: its NTLM sealing sequence is now out of step.
            h.close_connection = True
            left = min(length, DRAIN_LIMIT)
            while left > 0:
                chunk = h.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            host.record("request", action="too_large", status=413)
            self._send(
                h, _Answer(413, content_type="text/plain", headers=(("Connection", "close"),))
            )
            return
        body = h.rfile.read(length) if length > 0 else b""
        conn: _Connection = h.conn_state
        try:
            answer = self._answer(h, conn, faults, body)
        except _AuthRejected:
            conn.ctx, conn.authenticated = None, False
            host.record("request", action="auth", status=401)
            answer = _Answer(401, headers=self._challenges())
        self._send(h, answer)

    def _challenges(self) -> tuple[tuple[str, str], ...]:
        if self.scheme == "https":
            return (("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", BASIC_CHALLENGE))
        return (("WWW-Authenticate", "Negotiate"),)

    def _answer(
        self, h: _Handler, conn: _Connection, faults: dict[str, Any], body: bytes
    ) -> _Answer:
        word, _, token = (h.headers.get("Authorization") or "").strip().partition(" ")
        final_token: bytes | None = None
        if word.lower() == "basic":
            self._check_basic(token, faults)
        elif word.lower() in ("negotiate", "ntlm"):
            done, final_token = self._step_negotiate(conn, word, token, faults)
            if not done:
                self.host.record("request", action="auth", status=401)
                challenge = f"{word} {base64.b64encode(final_token or b'').decode()}"
                return _Answer(401, headers=(("WWW-Authenticate", challenge),))
        elif not conn.authenticated or faults.get("auth_fails"):
            raise _AuthRejected()
        extra = ()
        if final_token:
            extra = (("WWW-Authenticate", f"{conn.word} {base64.b64encode(final_token).decode()}"),)

        if not body:  # the clients' empty POST that sets up the security context
            self.host.record("request", action="auth", status=200)
            return _Answer(200, headers=extra)

        encrypted = (h.headers.get("Content-Type") or "").lower().startswith("multipart/encrypted")
        if encrypted:
            if not conn.authenticated:
                raise _AuthRejected()
            try:
                plain = b"".join(self._unwrap(conn, body))
            except ValueError as exc:
                log.debug("bad encrypted body: %s", exc)
                raise _AuthRejected() from None
        elif self.scheme == "http":
            # No unencrypted traffic over http (AllowUnencrypted=false, the Windows default).
            raise _AuthRejected()
        else:
            plain = body

        status, soap = self._soap(plain, faults)
        if encrypted:
            return _Answer(status, _wrap(conn.ctx, soap), ENC_CONTENT_TYPE, extra)
        return _Answer(status, soap, SOAP_CONTENT_TYPE, extra)

    def _check_basic(self, token: str, faults: dict[str, Any]) -> None:
        if self.scheme != "https":
            raise _AuthRejected()  # the password would cross the wire in clear
        try:
            user, _, password = (
                base64.b64decode(token, validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise _AuthRejected() from None
        ok = _user_matches(self.host.username, user) and hmac.compare_digest(
            password.encode("utf-8"), self.host.password().encode("utf-8")
        )
        if not ok or faults.get("auth_fails"):
            raise _AuthRejected()

    def _step_negotiate(
        self, conn: _Connection, word: str, token: str, faults: dict[str, Any]
    ) -> tuple[bool, bytes | None]:
        """One leg of NTLM / SPNEGO; (complete, token to send back)."""
        import spnego
        from spnego.exceptions import SpnegoError

        try:
            in_token = base64.b64decode(token, validate=True)
        except binascii.Error:
            raise _AuthRejected() from None
        if conn.ctx is None or conn.ctx.complete:
            conn.ctx = spnego.server(
                protocol="negotiate", options=spnego.NegotiateOptions.use_negotiate
            )
            conn.word = word
            conn.authenticated = False
        try:
            out = conn.ctx.step(in_token)
        except SpnegoError as exc:
            log.debug("%s: NTLM authentication failed: %s", self.host.name, exc)
            raise _AuthRejected() from None
        if not conn.ctx.complete:
            return False, out
        principal = conn.ctx.client_principal or ""
        if not _user_matches(self.host.username, principal) or faults.get("auth_fails"):
            raise _AuthRejected()
        conn.authenticated = True
        return True, out

    def _unwrap(self, conn: _Connection, body: bytes) -> list[bytes]:
        from spnego.exceptions import SpnegoError

        out = []
        for length, header, data in _split_encrypted(body):
            try:
                plain = conn.ctx.unwrap_winrm(header, data)
            except SpnegoError as exc:
                raise ValueError(f"unwrap failed: {exc}") from None
            if len(plain) != length:
                raise ValueError("decrypted length differs from OriginalContent Length")
            out.append(plain)
        return out

    def _soap(self, plain: bytes, faults: dict[str, Any]) -> tuple[int, bytes]:
        """Parse, apply `flaky`, record, dispatch; (HTTP status, SOAP envelope)."""
        try:
            req = wsman.parse_request(plain)
        except wsman.WsmanFault as fault:
            self.host.record("request", action="invalid", status=500)
            return 500, wsman.fault_xml(fault, None)
        if faults.get("flaky") and self.host.consume_flaky():
            self.host.record("request", action=req.name, status=500, fault="flaky")
            return 500, wsman.fault_xml(wsman.flaky_fault(), req.message_id)
        self.host.record("request", action=req.name, **wsman.request_fields(req))
        try:
            return 200, self.shells.handle(req)
        except wsman.WsmanFault as fault:
            return 500, wsman.fault_xml(fault, req.message_id)

    def _send(self, h: _Handler, answer: _Answer) -> None:
        h.send_response(answer.status)
        h.send_header("Content-Type", answer.content_type)
        h.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            h.send_header(name, value)
        h.end_headers_with(answer.body)
