"""One WinRM connection per host: runs packaged ops over one long-lived shell.

Why `winrm.protocol.Protocol` and not `Session.run_ps`: run_ps pastes the script into the
command line (8191-char limit, secrets visible in the process list) and opens a new shell,
TCP connection and login per call. Here a host gets one shell (opened lazily with code page
65001 so non-ASCII survives), reused across ops; each op is `powershell.exe -EncodedCommand
<bootstrap>` with the script and its parameters on stdin (`ops/protocol.py`), started with a
pipe-mode stdin so that it sees end-of-file. A short op on an open shell costs four requests:
Command, Send, Receive, Signal. A shell dropped after a connection-level failure is not just
forgotten: once the host answers again, its command is signalled and the shell closed.

Failures become `errors.RemoteError` subclasses with the host and a hint. Retries (tenacity,
exponential backoff with a cap, bounded by the op's deadline) happen only for transient
failures, and an op that changes state is never re-sent once its script may have started:
a timeout or a reset after the stdin went out leaves the caller to look at the host again.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import ssl
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from tealeaf_fleet.errors import (
    AuthenticationFailed,
    HostUnreachable,
    InputError,
    ProtocolFault,
    RemoteError,
    RemoteScriptError,
    RemoteTimeout,
)
from tealeaf_fleet.ops import protocol
from tealeaf_fleet.ops.protocol import ParamValue
from tealeaf_fleet.secrets import Secret, redact

if TYPE_CHECKING:
    from winrm.protocol import Protocol

    from tealeaf_fleet.inventory import Host

log = logging.getLogger(__name__)

T = TypeVar("T")

ENCRYPTING_TRANSPORTS = ("ntlm", "kerberos", "credssp")
TRANSPORTS = ENCRYPTING_TRANSPORTS + ("basic", "certificate")
# WSManFault codes that mean "this shell can take no more commands": open a new shell.
CODE_QUOTA_MAX_OPERATIONS = 2150859174
CODE_QUOTA_MAX_COMMANDS = 2150859173
CODE_INVALID_SELECTORS = 2150858843  # the shell is gone (idle timeout, service restart)
REOPEN_CODES = (CODE_QUOTA_MAX_OPERATIONS, CODE_QUOTA_MAX_COMMANDS, CODE_INVALID_SELECTORS)
# stdin goes in pieces so that no Send exceeds Server 2008 R2's default 150 KB envelope.
STDIN_PIECE = 96 * 1024
RETRY_WAIT_CAP_S = 8.0  # exponential backoff 0.5, 1, 2, 4, 8, 8 ... seconds
CLIXML_NS = "{http://schemas.microsoft.com/powershell/2004/04}"


@dataclass
class _Failure:
    """Why an attempt failed, and whether the op's script may already have run."""

    error: RemoteError
    maybe_ran: bool


class _AttemptFailed(Exception):
    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.error.message)
        self.failure = failure


def decode_clixml(data: bytes) -> str:
    """Readable text of PowerShell's CLIXML stderr (`#< CLIXML` + <Objs>), or the text itself
    (without the byte order mark CLR 2's Console.Error starts with in a 65001 shell)."""
    text = data.decode("utf-8", "replace").replace("\ufeff", "")
    start = text.find("#< CLIXML")
    if start < 0:
        return text.strip()
    body = text[start + len("#< CLIXML") :].strip()
    lines: list[str] = []
    try:
        root = ET.fromstring(body)
        for node in root.iter(f"{CLIXML_NS}S"):
            if node.get("S") == "Error" and node.text:
                lines.append(node.text)
    except ET.ParseError:
        lines = re.findall(r'<S S="Error">(.*?)</S>', body, flags=re.S)
    decoded = re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), "".join(lines))
    return decoded.strip() or body


def _system_trust() -> str | None:
    """The CA bundle for https without an inventory `ca_bundle`: the one requests is told to
    use (REQUESTS_CA_BUNDLE), else the system's OpenSSL bundle, else None (certifi's)."""
    env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if env:
        return env
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and os.path.isfile(cafile) else None


@functools.cache
def _wire_errors() -> tuple[type[BaseException], ...]:
    """Everything requests and pywinrm raise for a failed call (they share no base class)."""
    import requests
    from winrm.exceptions import WinRMError, WinRMOperationTimeoutError, WinRMTransportError

    return (
        requests.exceptions.RequestException,
        WinRMError,
        WinRMTransportError,
        WinRMOperationTimeoutError,
        OSError,
        AssertionError,
        ET.ParseError,
    )


def _script_param_names(op: str) -> set[str]:
    """Parameter names the op script declares (its `param(...)` block)."""
    text = protocol.script_text(op)
    match = re.search(r"^param\((.*?)\)\s*$", text, flags=re.M | re.S)
    return set(re.findall(r"\$(\w+)", match.group(1))) if match else set()


class Connection:
    """A WinRM connection to one host; thread-confined (one per host per worker thread)."""

    def __init__(
        self,
        host: Host,
        password: Secret | None,
        *,
        connect_timeout_s: float = 10,
        retries: int = 3,
    ) -> None:
        self.host = host
        self.name = host.name
        self._password = password
        self._connect_timeout_s = connect_timeout_s
        self._retries = retries
        self._protocol: Protocol | None = None
        self._shell_id: str | None = None
        self._command_id: str | None = None  # the op's command while it runs
        # (shell, command or None) dropped after connection-level failures, to close once the
        # host answers again
        self._abandoned: list[tuple[str, str | None]] = []
        self.shells_opened = 0  # for tests and diagnostics
        self._check_settings()

    # -- configuration ------------------------------------------------------------------

    def _check_settings(self) -> None:
        """Refuse settings that would send a password in clear or hang forever."""
        s = self.host.winrm
        where = f"hosts.{self.host.name}.winrm"
        if s.transport not in TRANSPORTS:
            raise InputError(
                f"unknown WinRM transport {s.transport!r}",
                field=f"{where}.transport",
                line=self.host.line or None,
            )
        if (
            s.scheme == "http"
            and s.transport not in ENCRYPTING_TRANSPORTS
            and not s.allow_unencrypted
        ):
            raise InputError(
                f"{s.transport} over http sends credentials and data unencrypted",
                field=f"{where}.scheme",
                line=self.host.line or None,
                hint="use https, or ntlm/kerberos/credssp (message encryption), or set "
                "allow_unencrypted: true on a lab network only",
            )
        if s.read_timeout_s <= s.operation_timeout_s:
            raise InputError(
                "read_timeout_s must exceed operation_timeout_s",
                field=f"{where}.read_timeout_s",
                line=self.host.line or None,
            )
        if s.transport == "certificate" and not (s.cert_pem and s.cert_key_pem):
            raise InputError(
                "transport certificate needs cert_pem and cert_key_pem",
                field=f"{where}.cert_pem",
                line=self.host.line or None,
            )

    def _make_protocol(self) -> Protocol:
        from winrm.protocol import Protocol

        s = self.host.winrm
        kwargs: dict[str, Any] = {
            "endpoint": s.endpoint(self.host.address),
            "transport": s.transport,
            "username": s.username,
            "password": self._password.reveal() if self._password else None,
            "read_timeout_sec": s.read_timeout_s,
            "operation_timeout_sec": s.operation_timeout_s,
        }
        if s.scheme == "https":
            if s.validate_certs:
                kwargs["server_cert_validation"] = "validate"
                kwargs["ca_trust_path"] = str(s.ca_bundle) if s.ca_bundle else _system_trust()
            else:
                msg = (
                    f"{self.host.name}: WinRM server certificate validation is OFF "
                    "(validate_certs: false): anyone on the path can read the credentials"
                )
                log.warning(msg)
                warnings.warn(msg, stacklevel=3)
                kwargs["server_cert_validation"] = "ignore"
        else:
            kwargs["ca_trust_path"] = None  # no TLS: no trust store to consult
        if s.transport in ENCRYPTING_TRANSPORTS:
            kwargs["message_encryption"] = "always" if s.scheme == "http" else "auto"
        else:
            kwargs["message_encryption"] = "never" if s.scheme == "http" else "auto"
        if s.transport == "certificate":
            kwargs["cert_pem"] = str(s.cert_pem)
            kwargs["cert_key_pem"] = str(s.cert_key_pem)
        if s.transport == "kerberos":
            kwargs["kerberos_hostname_override"] = None
        try:
            proto = Protocol(**kwargs)
        except (*_wire_errors(), ValueError) as exc:
            raise self._classify(exc) from None
        # requests takes (connect, read): a dead host fails in connect_timeout_s, not 30 s.
        proto.transport.read_timeout_sec = (self._connect_timeout_s, s.read_timeout_s)
        return proto

    # -- public API -----------------------------------------------------------------------

    def run_op(
        self, op: str, params: Mapping[str, ParamValue], *, timeout_s: float, read_only: bool
    ) -> dict:
        """Run packaged op `op` with `params`; its JSON result (a dict).

        `timeout_s` bounds the whole call including retries. `read_only` ops are retried on any
        transient failure; others only while their script cannot have started yet.
        """
        declared = _script_param_names(op)
        unknown = set(params) - declared
        if unknown:
            raise ValueError(f"op {op} has no parameter(s) {sorted(unknown)}")
        stdin = protocol.build_stdin(op, params)
        deadline = time.monotonic() + timeout_s

        def worth_retrying(exc: BaseException) -> bool:
            if not isinstance(exc, _AttemptFailed):
                return False
            failure = exc.failure
            return failure.error.transient and (read_only or not failure.maybe_ran)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: %s failed (attempt %d): %s; retrying in %.1fs",
                self.name,
                op,
                state.attempt_number,
                redact(str(exc)),
                state.upcoming_sleep,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self._retries + 1) | stop_before_delay(timeout_s),
            wait=wait_exponential(multiplier=0.5, max=RETRY_WAIT_CAP_S),
            retry=retry_if_exception(worth_retrying),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, op, stdin, deadline)
        except _AttemptFailed as failed:
            failure = failed.failure
            err = failure.error
            if failure.maybe_ran and not read_only and err.transient:
                err.hint = (
                    (err.hint or "") + "; the op may have run on the host: check its "
                    "state before running it again"
                ).lstrip("; ")
            raise err from None

    def probe(self, timeout_s: float = 10.0) -> bool:
        """Whether the host answers a trivial read-only op right now: one attempt, no retries,
        on a fresh shell (a reboot kills the old one; if it did not, the old one is closed
        once the host answers, like any abandoned shell), closed again when the host answered:
        polls would otherwise pile shells up towards WinRS's MaxShellsPerUser. Wrong
        credentials still raise."""
        self._forget_shell()
        stdin = protocol.build_stdin("file_info", {"Paths": ""})
        try:
            self._attempt("file_info", stdin, time.monotonic() + timeout_s)
        except _AttemptFailed as failed:
            if isinstance(failed.failure.error, AuthenticationFailed):
                raise failed.failure.error from None
            return False
        except RemoteScriptError:
            pass  # it answered
        self.close()
        return True

    def close(self) -> None:
        """Close the shell (best effort) and the HTTP session."""
        proto, shell = self._protocol, self._shell_id
        self._shell_id = None
        self._protocol = None
        if self._abandoned:  # the last chance to end what a lost connection left running
            if proto is None:
                proto = self._make_protocol()
            self._close_abandoned(proto)
            self._abandoned = []  # not answered even now: the shells' idle timeout ends them
        if proto is None:
            return
        if shell is not None:
            try:
                proto.close_shell(shell)
            except _wire_errors() as exc:  # best effort: the shell idles out anyway
                log.debug("%s: closing shell failed: %s", self.name, redact(str(exc)))
        proto.transport.close_session()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one attempt ----------------------------------------------------------------------

    def _call(self, fn: Callable[[], T], *, maybe_ran: bool) -> T:
        """Run one pywinrm call; failures become _AttemptFailed with a classified error."""
        try:
            return fn()
        except _wire_errors() as exc:
            self._fail(exc, maybe_ran=maybe_ran)

    def _fail(self, exc: BaseException, *, maybe_ran: bool) -> NoReturn:
        error = self._classify(exc)
        if isinstance(error, (HostUnreachable, RemoteTimeout)) or (
            isinstance(error, ProtocolFault) and error.code is None
        ):
            self._forget_shell()
        raise _AttemptFailed(_Failure(error, maybe_ran)) from None

    def _forget_shell(self) -> None:
        """After a connection-level failure: start over with a new session and shell. The old
        shell (and the command running in it) may live on at the host: it is remembered and
        closed once the host answers again (`_close_abandoned`)."""
        if self._shell_id is not None:
            self._abandoned.append((self._shell_id, self._command_id))
        if self._protocol is not None:
            self._protocol.transport.close_session()
        self._protocol = None
        self._shell_id = None

    def _ensure_shell(self) -> tuple[Protocol, str]:
        if self._protocol is None:
            self._protocol = self._make_protocol()
        proto = self._protocol
        if self._shell_id is None:
            self._shell_id = self._call(
                lambda: proto.open_shell(codepage=65001, noprofile=True), maybe_ran=False
            )
            self.shells_opened += 1
            self._close_abandoned(proto)
        return proto, self._shell_id

    def _close_abandoned(self, proto: Protocol) -> None:
        """The host answers again: terminate each abandoned command and close its shell, so a
        powershell.exe (or a TLSTool.exe under it) cut off from us does not run on until the
        shell's idle timeout. Ansible does the same for every command and shell it leaves
        (lib/ansible/plugins/connection/winrm.py: `cleanup_command` in `_winrm_exec`'s finally,
        `close_shell` in `close()`). Best effort: one Signal and one Delete per shell, no
        retries; a fault (already gone) is skipped; a failed connection ends this round and
        keeps the shells not yet closed for the next time the host answers (or `close()`).
        Never raises: the op that found the host back must not fail on its predecessor's
        leftovers."""
        from winrm.exceptions import WSManFaultError

        abandoned, self._abandoned = self._abandoned, []
        for i, (shell, command) in enumerate(abandoned):
            calls: list[Callable[[], object]] = []
            if command is not None:
                calls.append(functools.partial(proto.cleanup_command, shell, command))
            calls.append(functools.partial(proto.close_shell, shell, close_session=False))
            for call in calls:
                try:
                    call()
                except WSManFaultError as exc:  # the command or shell is already gone
                    log.debug("%s: abandoned shell: %s", self.name, redact(str(exc)))
                except _wire_errors() as exc:  # no answer after all: try again later
                    log.debug("%s: abandoned shell left: %s", self.name, redact(str(exc)))
                    self._abandoned = abandoned[i:] + self._abandoned
                    return

    def _start_command(self) -> tuple[Protocol, str, str]:
        """run_command on the shell; reopen once when the shell is spent or gone."""
        command, args = protocol.command_line()
        for reopen in (False, True):
            proto, shell = self._ensure_shell()
            try:
                # Pipe-mode stdin (WINRS_CONSOLEMODE_STDIN=FALSE), since the bootstrap reads
                # stdin to its end: a console-mode stdin (pywinrm's default) may never reach
                # end-of-file. Ansible streams stdin the same way: plugins/connection/winrm.py
                # `_winrm_exec` passes `console_mode_stdin=(stdin_iterator is None)`.
                command_id = proto.run_command(shell, command, args, console_mode_stdin=False)
                return proto, shell, command_id
            except _wire_errors() as exc:
                code = getattr(exc, "wsman_fault_code", None)
                if code in REOPEN_CODES and not reopen:
                    log.info(
                        "%s: shell spent or gone (fault %s): opening a new one", self.name, code
                    )
                    self._close_shell_quietly(proto, shell)
                    continue
                self._fail(exc, maybe_ran=False)
        raise AssertionError("unreachable")

    def _close_shell_quietly(self, proto: Protocol, shell: str) -> None:
        self._shell_id = None
        try:
            proto.close_shell(shell, close_session=False)
        except _wire_errors() as exc:  # the old shell may already be gone
            log.debug("%s: closing old shell: %s", self.name, redact(str(exc)))

    def _attempt(self, op: str, stdin: bytes, deadline: float) -> dict:
        proto, shell, command_id = self._start_command()
        self._command_id = command_id
        try:
            return self._run(op, stdin, deadline, proto, shell, command_id)
        finally:
            self._command_id = None

    def _run(
        self, op: str, stdin: bytes, deadline: float, proto: Protocol, shell: str, command_id: str
    ) -> dict:
        """Feed the started command its stdin and collect its answer."""
        from winrm.exceptions import WinRMOperationTimeoutError

        try:
            pieces = [stdin[i : i + STDIN_PIECE] for i in range(0, len(stdin), STDIN_PIECE)]
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                self._send(proto, shell, command_id, piece, last)
            out: list[bytes] = []
            err: list[bytes] = []
            receive_failures = 0
            while True:
                if time.monotonic() >= deadline:
                    raise _AttemptFailed(
                        _Failure(
                            RemoteTimeout(
                                f"{op} did not finish before its deadline",
                                host=self.name,
                                hint="the host may be slow or hung; see its event log",
                            ),
                            maybe_ran=True,
                        )
                    )
                try:
                    stdout, stderr, exit_code, done = proto.get_command_output_raw(
                        shell, command_id
                    )
                except WinRMOperationTimeoutError:
                    continue  # no output yet within OperationTimeout: poll again
                except _wire_errors() as exc:  # a Receive is safe to repeat
                    error = self._classify(exc)
                    receive_failures += 1
                    if not error.transient or receive_failures > self._retries:
                        self._fail(exc, maybe_ran=True)
                    time.sleep(min(0.5 * 2 ** (receive_failures - 1), 4.0))
                    continue
                out.append(stdout)
                err.append(stderr)
                if done:
                    break
        except _AttemptFailed:
            self._cleanup(proto, shell, command_id)
            raise
        self._cleanup(proto, shell, command_id)
        return self._result(op, b"".join(out), b"".join(err), exit_code)

    def _send(self, proto: Protocol, shell: str, command_id: str, piece: bytes, last: bool) -> None:
        try:
            proto.send_command_input(shell, command_id, piece, end=last)
        except _wire_errors() as exc:
            from winrm.exceptions import WSManFaultError

            # A fault answer means the Send was refused; a reset may mean it arrived.
            self._fail(exc, maybe_ran=not isinstance(exc, WSManFaultError))

    def _cleanup(self, proto: Protocol, shell: str, command_id: str) -> None:
        if self._shell_id != shell:
            return  # dropped after a connection failure: _close_abandoned signals it
        try:
            proto.cleanup_command(shell, command_id)
        except _wire_errors() as exc:  # the command is done; a lost Signal is harmless
            log.debug("%s: cleanup_command: %s", self.name, redact(str(exc)))

    def _result(self, op: str, stdout: bytes, stderr: bytes, exit_code: int) -> dict:
        text = stdout.decode("utf-8", "replace")
        if exit_code != 0:
            message = redact(decode_clixml(stderr)) or f"{op} exited with code {exit_code}"
            mode = protocol.language_mode_refused(message)
            if mode is not None:
                raise self._language_mode_error(op, mode, exit_code)
            raise RemoteScriptError(
                message,
                op=op,
                exit_code_remote=exit_code,
                host=self.name,
                hint=f"the remote {op} script failed (exit {exit_code})",
            )
        try:
            result = protocol.parse_result(text)
        except ValueError as exc:
            snippet = redact(decode_clixml(stderr) or text)[-300:]  # redact, then cut
            raise ProtocolFault(
                f"{op} returned no readable result ({exc}): {snippet}",
                code="no-result",
                host=self.name,
                hint="is powershell.exe on the host Windows PowerShell 2.0+?",
            ) from None
        if not isinstance(result, dict):
            raise ProtocolFault(
                f"{op} returned {type(result).__name__}, not an object",
                code="no-result",
                host=self.name,
            )
        return result

    def _language_mode_error(self, op: str, mode: str, exit_code: int) -> RemoteScriptError:
        """The bootstrap refused to run: PowerShell on the host is not in FullLanguage mode."""
        return RemoteScriptError(
            f"PowerShell on this host runs in {mode} mode (Constrained Language Mode, enforced "
            f"by an AppLocker or WDAC policy): tealeaf-fleet's {op} op cannot run",
            op=op,
            exit_code_remote=exit_code,
            host=self.name,
            hint="tealeaf-fleet needs FullLanguage mode: have the AppLocker/WDAC policy "
            "allow-list powershell.exe for this account (a policy exception), or run from an "
            "endpoint where PowerShell runs in FullLanguage; "
            "$ExecutionContext.SessionState.LanguageMode on the host shows the mode",
        )

    # -- error classification -------------------------------------------------------------

    def _classify(self, exc: BaseException) -> RemoteError:
        """Map a requests / pywinrm exception to our error tree, without secrets."""
        import requests
        from winrm.exceptions import (
            AuthenticationError,
            WinRMError,
            WinRMOperationTimeoutError,
            WinRMTransportError,
            WSManFaultError,
        )

        s = self.host.winrm
        endpoint = s.endpoint(self.host.address)
        detail = redact(str(exc))[:300]
        if isinstance(exc, RemoteError):
            return exc
        if isinstance(exc, requests.exceptions.SSLError):
            error: RemoteError = HostUnreachable(
                f"TLS handshake with {endpoint} failed: {detail}",
                host=self.name,
                hint="check ca_bundle (the CA that signed the WinRM listener's certificate) "
                "and that the address matches the certificate",
            )
            error.transient = False
            return error
        if isinstance(
            exc, (requests.exceptions.ConnectionError, requests.exceptions.ConnectTimeout)
        ):
            return HostUnreachable(
                f"cannot connect to {endpoint}: {type(exc).__name__}",
                host=self.name,
                hint=f"check the address, that port {s.port} is open in the firewall and "
                "that a WinRM listener runs (winrm enumerate winrm/config/listener)",
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return RemoteTimeout(
                f"no answer from {endpoint} within {s.read_timeout_s}s",
                host=self.name,
                hint="the host or WinRM service is overloaded",
            )
        if isinstance(exc, WinRMOperationTimeoutError):
            return RemoteTimeout(f"WinRM operation timed out at {endpoint}", host=self.name)
        if isinstance(exc, AuthenticationError):
            return AuthenticationFailed(
                f"{endpoint} rejected the credentials of {s.username!r} ({s.transport})",
                host=self.name,
                hint="check username, the password source, the transport the listener allows "
                "and that the account may use WinRM (Remote Management Users / admin)",
            )
        if isinstance(exc, (WSManFaultError, WinRMTransportError)) and exc.code == 401:
            return AuthenticationFailed(
                f"{endpoint} answered 401",
                host=self.name,
                hint="check username and password source",
            )
        if isinstance(exc, WSManFaultError):
            code = exc.wsman_fault_code
            reason = redact(exc.reason or "")[:300]
            if code is None and int(exc.code or 500) >= 500:
                return ProtocolFault(
                    f"WinRM fault from {endpoint}: {reason}",
                    host=self.name,
                    hint="a transient server error; retried",
                )
            return ProtocolFault(
                f"WinRM fault {code} from {endpoint}: {reason}",
                code=str(code if code is not None else exc.code),
                host=self.name,
                hint="see the WinRM service's event log",
            )
        if isinstance(exc, WinRMTransportError):
            if int(exc.code) >= 500:
                return ProtocolFault(f"HTTP {exc.code} from {endpoint}", host=self.name)
            return ProtocolFault(
                f"HTTP {exc.code} from {endpoint}",
                code=f"http-{exc.code}",
                host=self.name,
                hint=f"is {s.path} the WinRM path?",
            )
        if isinstance(exc, (WinRMError, ValueError)):
            return ProtocolFault(
                f"WinRM client error for {endpoint}: {detail}",
                code="client",
                host=self.name,
                hint="check the winrm settings of this host",
            )
        if isinstance(exc, (AssertionError, ET.ParseError)):
            return ProtocolFault(
                f"malformed WinRM answer from {endpoint}: {detail}",
                code="malformed",
                host=self.name,
                hint="is this endpoint a WinRM service?",
            )
        if isinstance(exc, OSError):
            return HostUnreachable(
                f"network error talking to {endpoint}: {detail}",
                host=self.name,
                hint="check the address and port",
            )
        raise exc
