"""The WS-Management remote shell (WinRS) protocol, server side, for the lab.

This module turns one decrypted SOAP request into one SOAP response: it knows envelopes, the six
shell operations and their faults, and keeps the shells and commands of one host. It knows
nothing of HTTP or authentication (`httpserver.py`) and nothing of Tealeaf (the `ShellHost`).

Wire facts (checked against pywinrm 0.5 and pypsrp 0.9): docs/windows.md "The WS-Management
wire". The points
that bite: namespaces are matched by URI because the two clients use different prefixes;
`RelatesTo` echoes the request's MessageID text exactly; a Receive with nothing to say before the
operation timeout is the `w:TimedOut` fault (the client simply asks again); a finished command's
Receive always carries `ExitCode`; faults travel with HTTP 500.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from tealeaf_fleet.lab.api import CommandResult, ShellHost

log = logging.getLogger(__name__)

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDR = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_MSWSMAN = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"

RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTION_CREATE = NS_TRANSFER + "/Create"
ACTION_DELETE = NS_TRANSFER + "/Delete"
ACTION_COMMAND = NS_SHELL + "/Command"
ACTION_SEND = NS_SHELL + "/Send"
ACTION_RECEIVE = NS_SHELL + "/Receive"
ACTION_SIGNAL = NS_SHELL + "/Signal"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

STATE_RUNNING = NS_SHELL + "/CommandState/Running"
STATE_DONE = NS_SHELL + "/CommandState/Done"

ACTION_NAMES = {
    ACTION_CREATE: "Create",
    ACTION_DELETE: "Delete",
    ACTION_COMMAND: "Command",
    ACTION_SEND: "Send",
    ACTION_RECEIVE: "Receive",
    ACTION_SIGNAL: "Signal",
}

# WSManFault codes real servers send (decimal, as they appear on the wire).
CODE_TIMED_OUT = 2150858793  # ERROR_WSMAN_OPERATION_TIMEDOUT
CODE_INVALID_SELECTORS = 2150858843  # ERROR_WSMAN_INVALID_SELECTORS (unknown shell/command)
CODE_QUOTA_MAX_OPERATIONS = 2150859174  # ERROR_WSMAN_QUOTA_MAX_OPERATIONS: clients reopen
EXIT_CTRL_C = 3221225786  # STATUS_CONTROL_C_EXIT as the unsigned DWORD WinRS reports

MAX_RECEIVE_BYTES = 64 * 1024  # output bytes per Receive response (before base64)


class WsmanFault(Exception):
    """A SOAP fault to send back (HTTP 500). `wsman_code` None means no WSManFault detail."""

    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code  # "s:Sender" | "s:Receiver"
        self.subcode = subcode  # e.g. "w:TimedOut" (prefixes as declared by `fault_xml`)
        self.reason = reason
        self.wsman_code = wsman_code


def timed_out() -> WsmanFault:
    return WsmanFault(
        "s:Receiver",
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time "
        "specified in OperationTimeout.",
        CODE_TIMED_OUT,
    )


def invalid_selectors(what: str) -> WsmanFault:
    return WsmanFault(
        "s:Sender",
        "w:InvalidSelectors",
        f"The request for the Windows Remote Shell with ShellId {what} failed "
        "because the shell was not found on the server. Possible causes are: the "
        "specified ShellId is incorrect or the shell no longer exists on the "
        "server. Provide the correct ShellId or create a new shell and retry the "
        "operation.",
        CODE_INVALID_SELECTORS,
    )


def flaky_fault() -> WsmanFault:
    """The injected transient failure: a 500 with no WSManFault code (worth a retry)."""
    return WsmanFault(
        "s:Receiver",
        "w:InternalError",
        "The WS-Management service encountered an internal error (lab fault injection: flaky).",
    )


# --- requests -------------------------------------------------------------------------------


@dataclass
class WsmanRequest:
    """The parts of a SOAP request the shell operations use."""

    action: str
    message_id: str
    resource_uri: str
    operation_timeout_s: float | None
    selectors: dict[str, str]
    options: dict[str, str]
    body: ET.Element | None  # the first child of s:Body, or None when the body is empty

    @property
    def name(self) -> str:
        """Create | Command | Send | Receive | Signal | Delete | the raw action URI."""
        return ACTION_NAMES.get(self.action, self.action)


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> float | None:
    """xs:duration as WS-Management uses it (`PT20S`, `PT60.000S`, `P0DT0H1M`) -> seconds."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT"):
        return None
    parts = match.groupdict()
    return (
        int(parts["d"] or 0) * 86400
        + int(parts["h"] or 0) * 3600
        + int(parts["m"] or 0) * 60
        + float(parts["s"] or 0)
    )


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def parse_request(data: bytes) -> WsmanRequest:
    """Parse a SOAP envelope; raise WsmanFault (s:Sender) for anything malformed."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WsmanFault(
            "s:Sender", "w:SchemaValidationError", f"The request is not well-formed XML: {exc}"
        ) from None
    if root.tag != f"{{{NS_SOAP}}}Envelope":
        raise WsmanFault(
            "s:Sender", "w:SchemaValidationError", "The request is not a SOAP 1.2 envelope."
        )
    header = root.find(f"{{{NS_SOAP}}}Header")
    body = root.find(f"{{{NS_SOAP}}}Body")
    if header is None:
        raise WsmanFault("s:Sender", "w:SchemaValidationError", "The request has no Header.")
    action = _text(header.find(f"{{{NS_ADDR}}}Action"))
    message_id = (header.findtext(f"{{{NS_ADDR}}}MessageID") or "").strip()
    if not action or not message_id:
        raise WsmanFault(
            "s:Sender",
            "a:MessageInformationHeaderRequired",
            "The request lacks an Action or MessageID header.",
        )
    timeout_text = _text(header.find(f"{{{NS_WSMAN}}}OperationTimeout"))
    selectors = {
        sel.get("Name", ""): (sel.text or "").strip()
        for sel in header.findall(f"{{{NS_WSMAN}}}SelectorSet/{{{NS_WSMAN}}}Selector")
    }
    options = {
        opt.get("Name", ""): (opt.text or "").strip()
        for opt in header.findall(f"{{{NS_WSMAN}}}OptionSet/{{{NS_WSMAN}}}Option")
    }
    first = next(iter(body), None) if body is not None else None
    return WsmanRequest(
        action=action,
        message_id=message_id,
        resource_uri=_text(header.find(f"{{{NS_WSMAN}}}ResourceURI")),
        operation_timeout_s=parse_duration(timeout_text) if timeout_text else None,
        selectors=selectors,
        options=options,
        body=first,
    )


def console_mode_stdin(req: WsmanRequest) -> bool:
    """Whether a Command asks for a console-mode stdin (option WINRS_CONSOLEMODE_STDIN TRUE).

    MS-WSMV 3.1.4.11: "The client-side mode for standard input is console if TRUE and pipe if
    FALSE ... the default implies pipe", so an absent option (pypsrp sends none) is pipe mode.
    """
    return req.options.get("WINRS_CONSOLEMODE_STDIN", "").strip().upper() == "TRUE"


def request_fields(req: WsmanRequest) -> dict[str, object]:
    """What a `request` event records about a shell operation besides its name: the shell and
    command it names, and for Command the stdin mode. Ids only, never a payload."""
    fields: dict[str, object] = {}
    if req.selectors.get("ShellId"):
        fields["shell"] = req.selectors["ShellId"].upper()
    body = req.body
    if body is not None:
        command_id = body.get("CommandId") or next(
            (child.get("CommandId") for child in body if child.get("CommandId")), None
        )
        if command_id:
            fields["command"] = command_id.upper()
    if req.action == ACTION_COMMAND:
        fields["console_mode_stdin"] = console_mode_stdin(req)
    return fields


def split_command_line(line: str) -> list[str]:
    """Split a Windows command line like CommandLineToArgvW (the MSVC runtime rules).

    Whitespace separates arguments outside double quotes; 2n backslashes before a quote give n
    backslashes and the quote toggles quoting; 2n+1 give n backslashes and a literal quote; `""`
    inside quotes is a literal quote; other backslashes are literal.
    """
    args: list[str] = []
    cur: list[str] = []
    in_token = False
    quoted = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            j = i
            while j < n and line[j] == "\\":
                j += 1
            count = j - i
            if j < n and line[j] == '"':
                cur.append("\\" * (count // 2))
                if count % 2:
                    cur.append('"')
                    i = j + 1
                else:
                    i = j  # the quote is handled below
            else:
                cur.append("\\" * count)
                i = j
            in_token = True
            continue
        if c == '"':
            in_token = True
            if quoted and i + 1 < n and line[i + 1] == '"':
                cur.append('"')
                i += 2
                continue
            quoted = not quoted
            i += 1
            continue
        if c in " \t\r\n" and not quoted:
            if in_token:
                args.append("".join(cur))
                cur, in_token = [], False
            i += 1
            continue
        cur.append(c)
        in_token = True
        i += 1
    if in_token:
        args.append("".join(cur))
    return args


# --- responses ------------------------------------------------------------------------------

_ENVELOPE_OPEN = (
    f'<s:Envelope xml:lang="en-US" xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDR}" '
    f'xmlns:x="{NS_TRANSFER}" xmlns:w="{NS_WSMAN}" xmlns:rsp="{NS_SHELL}" '
    f'xmlns:p="{NS_MSWSMAN}">'
)


def envelope(action: str, relates_to: str, body: str) -> bytes:
    """A response envelope whose RelatesTo is the request's MessageID, verbatim."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>' + _ENVELOPE_OPEN + "<s:Header>"
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode("utf-8")


def fault_xml(fault: WsmanFault, relates_to: str | None) -> bytes:
    """The SOAP fault envelope for `fault` (sent with HTTP 500)."""
    detail = ""
    if fault.wsman_code is not None:
        detail = (
            f'<s:Detail><f:WSManFault xmlns:f="{NS_FAULT}" Code="{fault.wsman_code}" '
            f'Machine="127.0.0.1"><f:Message>{escape(fault.reason)}</f:Message>'
            "</f:WSManFault></s:Detail>"
        )
    body = (
        f"<s:Fault><s:Code><s:Value>{fault.code}</s:Value><s:Subcode>"
        f"<s:Value>{fault.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text></s:Reason>'
        f"{detail}</s:Fault>"
    )
    if relates_to is None:
        relates_to = "uuid:00000000-0000-0000-0000-000000000000"
    return envelope(ACTION_FAULT, relates_to, body)


# --- shells and commands --------------------------------------------------------------------


@dataclass
class _Command:
    id: str
    command: str
    args: list[str]
    stdin: bytearray = field(default_factory=bytearray)
    console_mode: bool = False  # WINRS_CONSOLEMODE_STDIN TRUE: stdin never reaches its end
    started: bool = False
    done: bool = False
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    sent: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    cond: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class _Shell:
    id: str
    output_streams: list[str]
    commands: dict[str, _Command] = field(default_factory=dict)
    created: int = 0  # commands ever created: WinRS never gives quota back for a text shell


class ShellService:
    """All shells of one host and the six operations on them. Thread-safe.

    `handle(request)` returns the response envelope or raises WsmanFault; commands run in worker
    threads (`host.run_command`), so a Receive long-polls on the command's condition variable.
    """

    def __init__(
        self,
        host: ShellHost,
        *,
        receive_timeout_s: float = 1.0,
        max_commands_per_shell: int = 1000,
        max_receive_bytes: int = MAX_RECEIVE_BYTES,
        endpoint: str = "",
    ) -> None:
        self.host = host
        self.receive_timeout_s = receive_timeout_s
        self.max_commands_per_shell = max_commands_per_shell
        self.max_receive_bytes = max_receive_bytes
        self.endpoint = endpoint
        self._shells: dict[str, _Shell] = {}
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()

    # -- bookkeeping

    def join_workers(self, timeout_s: float) -> None:
        """Wait (bounded) for running commands; used by the server's stop()."""
        with self._lock:
            workers = list(self._workers)
        for t in workers:
            t.join(timeout_s)

    def _shell(self, req: WsmanRequest) -> _Shell:
        shell_id = req.selectors.get("ShellId", "")
        with self._lock:
            shell = self._shells.get(shell_id.upper())
        if shell is None:
            raise invalid_selectors(shell_id or "(none)")
        return shell

    def _shell_body(self, req: WsmanRequest, request: str, tag: str) -> tuple[_Shell, ET.Element]:
        """The shell a Command/Send/Receive/Signal request names, and its rsp:TAG body; the
        fault Windows sends when the body is missing or another element."""
        shell = self._shell(req)
        body = req.body
        if body is None or body.tag != f"{{{NS_SHELL}}}{tag}":
            raise WsmanFault(
                "s:Sender", "w:SchemaValidationError", f"The {request} request has no rsp:{tag}."
            )
        return shell, body

    def _command(self, shell: _Shell, command_id: str | None) -> _Command:
        with self._lock:
            if command_id:
                cmd = shell.commands.get(command_id.upper())
            else:  # a shell-level request: the newest command
                cmd = next(reversed(shell.commands.values()), None) if shell.commands else None
        if cmd is None:
            raise WsmanFault(
                "s:Sender",
                "w:InvalidSelectors",
                f"The command with CommandId {command_id} was not found in shell {shell.id}.",
                CODE_INVALID_SELECTORS,
            )
        return cmd

    # -- dispatch

    def handle(self, req: WsmanRequest) -> bytes:
        """Run one operation; the response envelope, or WsmanFault."""
        handler = {
            ACTION_CREATE: self._create,
            ACTION_DELETE: self._delete,
            ACTION_COMMAND: self._command_op,
            ACTION_SEND: self._send,
            ACTION_RECEIVE: self._receive,
            ACTION_SIGNAL: self._signal,
        }.get(req.action)
        if handler is None:
            raise WsmanFault(
                "s:Sender",
                "a:ActionNotSupported",
                f"The action {req.action} is not supported by this service.",
            )
        return handler(req)

    def _create(self, req: WsmanRequest) -> bytes:
        shell_el = req.body
        out_streams = "stdout stderr"
        in_streams = "stdin"
        if shell_el is not None and shell_el.tag == f"{{{NS_SHELL}}}Shell":
            out_streams = _text(shell_el.find(f"{{{NS_SHELL}}}OutputStreams")) or out_streams
            in_streams = _text(shell_el.find(f"{{{NS_SHELL}}}InputStreams")) or in_streams
        shell_id = str(uuid.uuid4()).upper()
        with self._lock:
            self._shells[shell_id] = _Shell(shell_id, out_streams.split())
        resource = req.resource_uri or RESOURCE_CMD
        body = (
            "<x:ResourceCreated>"
            f"<a:Address>{escape(self.endpoint or ANONYMOUS)}</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{escape(resource)}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            f'<rsp:Shell xmlns:rsp="{NS_SHELL}">'
            f"<rsp:ShellId>{shell_id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{escape(resource)}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(self.host.username)}</rsp:Owner>"
            "<rsp:ClientIP>127.0.0.1</rsp:ClientIP>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{escape(in_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{escape(out_streams)}</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
            "</rsp:Shell>"
        )
        return envelope(NS_TRANSFER + "/CreateResponse", req.message_id, body)

    def _delete(self, req: WsmanRequest) -> bytes:
        shell_id = req.selectors.get("ShellId", "")
        with self._lock:
            shell = self._shells.pop(shell_id.upper(), None)
        if shell is None:
            raise invalid_selectors(shell_id or "(none)")
        return envelope(NS_TRANSFER + "/DeleteResponse", req.message_id, "")

    def _command_op(self, req: WsmanRequest) -> bytes:
        shell, line = self._shell_body(req, "Command", "CommandLine")
        command_text = line.findtext(f"{{{NS_SHELL}}}Command") or ""
        # Windows joins Command and every Arguments element into one command line and the
        # program splits it again: pywinrm sends one joined Arguments, pypsrp one per
        # argument, and `Session.run_ps` puts everything into Command. Same result for all.
        pieces = [command_text] + [a.text or "" for a in line.findall(f"{{{NS_SHELL}}}Arguments")]
        tokens = split_command_line(" ".join(p for p in pieces if p))
        if not tokens:
            raise WsmanFault("s:Sender", "w:SchemaValidationError", "The command line is empty.")
        with self._lock:
            if shell.created >= self.max_commands_per_shell:
                raise WsmanFault(
                    "s:Receiver",
                    "w:InternalError",
                    "The WS-Management service cannot process the request. This user is allowed "
                    f"a maximum number of {self.max_commands_per_shell} concurrent operations, "
                    "which has been exceeded. Close existing operations for this user, or raise "
                    "the quota for this user.",
                    CODE_QUOTA_MAX_OPERATIONS,
                )
            shell.created += 1
            command_id = (line.get("CommandId") or str(uuid.uuid4())).upper()
            cmd = _Command(command_id, tokens[0], tokens[1:], console_mode=console_mode_stdin(req))
            shell.commands[command_id] = cmd
        if not self.host.wants_stdin(cmd.command, list(cmd.args)):
            self._start(cmd)
        body = (
            f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId>"
            "</rsp:CommandResponse>"
        )
        return envelope(NS_SHELL + "/CommandResponse", req.message_id, body)

    def _start(self, cmd: _Command) -> None:
        with cmd.cond:
            if cmd.started:
                return
            cmd.started = True
            stdin = bytes(cmd.stdin)
        worker = threading.Thread(
            target=self._run,
            args=(cmd, stdin),
            daemon=True,
            name=f"lab-cmd-{self.host.name}-{cmd.id[:8]}",
        )
        with self._lock:
            self._workers.add(worker)
        worker.start()

    def _run(self, cmd: _Command, stdin: bytes) -> None:
        try:
            result = self.host.run_command(cmd.command, list(cmd.args), stdin)
        except Exception:  # noqa: BLE001 - thread boundary: the client must still get an answer
            # A bug in the simulated host must not leave the client polling forever: report it
            # like Windows reports a crashed process, and keep the traceback in the log.
            log.exception("lab host %s: run_command(%s) failed", self.host.name, cmd.command)
            result = CommandResult(
                exit_code=1,
                stderr=b"lab: the simulated host failed to run this command (see the lab log)\r\n",
            )
        with cmd.cond:
            if not cmd.done:  # a ctrl_c may have ended it already
                cmd.exit_code = result.exit_code
                cmd.stdout = result.stdout
                cmd.stderr = result.stderr
                cmd.done = True
            cmd.cond.notify_all()
        with self._lock:
            self._workers.discard(threading.current_thread())

    def _send(self, req: WsmanRequest) -> bytes:
        shell, send = self._shell_body(req, "Send", "Send")
        for stream in send.findall(f"{{{NS_SHELL}}}Stream"):
            cmd = self._command(shell, stream.get("CommandId"))
            try:
                data = base64.b64decode((stream.text or "").strip(), validate=True)
            except ValueError:
                raise WsmanFault(
                    "s:Sender", "w:SchemaValidationError", "The Send stream is not valid base64."
                ) from None
            end = (stream.get("End") or "").strip().lower() in ("true", "1")
            with cmd.cond:
                if not cmd.started:
                    cmd.stdin.extend(data)
            # A console-mode stdin never reaches end-of-file (pessimistic reading of MS-WSMV's
            # "client-side mode ... console"; clients document that such a process waits for
            # more input, which is why Ansible's winrm.py sends stdin in pipe mode): a command
            # that reads stdin to its end never runs, until a Signal ends it.
            if end and not cmd.console_mode:
                self._start(cmd)
        return envelope(NS_SHELL + "/SendResponse", req.message_id, "<rsp:SendResponse/>")

    def _receive(self, req: WsmanRequest) -> bytes:
        shell, recv = self._shell_body(req, "Receive", "Receive")
        desired = recv.find(f"{{{NS_SHELL}}}DesiredStream")
        cmd = self._command(shell, desired.get("CommandId") if desired is not None else None)
        wanted = (_text(desired) or " ".join(shell.output_streams)).split()
        wait_s = self.receive_timeout_s
        if req.operation_timeout_s is not None:
            wait_s = min(wait_s, req.operation_timeout_s)
        with cmd.cond:
            if not cmd.cond.wait_for(lambda: cmd.done, timeout=wait_s):
                raise timed_out()
            return self._output(req, cmd, wanted)

    def _output(self, req: WsmanRequest, cmd: _Command, wanted: list[str]) -> bytes:
        """Next slice of the finished command's output (caller holds cmd.cond)."""
        budget = self.max_receive_bytes
        parts: list[str] = []
        complete = True
        for name in ("stdout", "stderr"):
            if name not in wanted:
                continue
            data = cmd.stdout if name == "stdout" else cmd.stderr
            start = cmd.sent[name]
            chunk = data[start : start + budget]
            cmd.sent[name] = start + len(chunk)
            budget -= len(chunk)
            if chunk:
                parts.append(
                    f'<rsp:Stream Name="{name}" CommandId="{cmd.id}">'
                    f"{base64.b64encode(chunk).decode('ascii')}</rsp:Stream>"
                )
            if cmd.sent[name] < len(data):
                complete = False
        if complete:
            for name in ("stdout", "stderr"):
                if name in wanted:
                    parts.append(
                        f'<rsp:Stream Name="{name}" CommandId="{cmd.id}" End="true"></rsp:Stream>'
                    )
            parts.append(
                f'<rsp:CommandState CommandId="{cmd.id}" State="{STATE_DONE}">'
                f"<rsp:ExitCode>{cmd.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId="{cmd.id}" State="{STATE_RUNNING}"/>')
        body = "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>"
        return envelope(NS_SHELL + "/ReceiveResponse", req.message_id, body)

    def _signal(self, req: WsmanRequest) -> bytes:
        shell, sig = self._shell_body(req, "Signal", "Signal")
        cmd = self._command(shell, sig.get("CommandId"))
        code = _text(sig.find(f"{{{NS_SHELL}}}Code")).rsplit("/", 1)[-1].lower()
        if code not in ("terminate", "ctrl_c", "ctrl_break"):
            raise WsmanFault(
                "s:Sender",
                "w:InvalidParameter",
                f"The signal code {quoteattr(code)} is not supported.",
            )
        with cmd.cond:
            if not cmd.done:
                # The worker may still be running host code; its result is dropped.
                cmd.done = True
                cmd.exit_code = EXIT_CTRL_C
                cmd.cond.notify_all()
        if code == "terminate":
            with self._lock:
                shell.commands.pop(cmd.id, None)
        body = "<rsp:SignalResponse/>"
        return envelope(NS_SHELL + "/SignalResponse", req.message_id, body)
