"""The rules of `fleet check`: one pure judge per remote mechanism a rollout relies on.

Input: what one host answered (`HostAnswers`: the `facts` result, the `check` result, or the
error that stopped each, plus what the controller knows: when it sent and received, whether a
shell opened). Output: one `Line` per mechanism, in `MECHANISMS` order, with a verdict
(ok | warn | fail | unknown), the evidence as read, and what to do when it is not ok. No I/O,
no clock: `tealeaf_fleet.check.gather` does the talking; these rules can be tested from dicts.

A verdict says whether the mechanism the rollout uses works on this host: `fail` means the
rollout would fail or be refused there (fix it first); `warn` means it works but something is
worth knowing before the window; `unknown` means it could not be measured (which is not proof).
Every text here may end up in a change ticket: it names the key, file, folder or setting.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from tealeaf_fleet import certs
from tealeaf_fleet.errors import (
    AuthenticationFailed,
    RemoteError,
    RemoteScriptError,
    RemoteTimeout,
)
from tealeaf_fleet.inventory import ENCRYPTING_TRANSPORTS, TLS_ROLES
from tealeaf_fleet.ops import checks, protocol
from tealeaf_fleet.ops.facts import data_service_names
from tealeaf_fleet.secrets import redact
from tealeaf_fleet.transport import STDIN_PIECE

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Host

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"
VERDICTS = (OK, WARN, FAIL, UNKNOWN)

# The parameter the check op echoes: everything a shell or a careless decoder would mangle
# (quotes, a subexpression, backticks, a newline, a semicolon, non-ASCII from three planes of
# use: Latin, currency, CJK). It is also what the op writes to its probe file, as UTF-8.
SENTINEL = (
    "tealeaf-fleet 'single' \"double\" $(Get-Date) `backtick`\n"
    "line 2; & | \u00e9t\u00e9 \u20ac \u65e5\u672c"
)
SENTINEL_SHA256 = hashlib.sha256(SENTINEL.encode("utf-8")).hexdigest()
# restart_services.ps1's mutex (a test keeps the two in step).
RESTART_MUTEX = r"Global\tealeaf-fleet-restart-services"
# transport.Connection opens every shell with this code page (open_shell(codepage=65001)).
SHELL_CODEPAGE = 65001

# Clock skew. A minute makes host times in the run log, the journal and the Data Service log
# hard to line up with the controller's when reading evidence. Five minutes is where things
# break: Kerberos refuses tickets beyond its default MaxClockSkew of 5 minutes, and a
# generated certificate is back-dated by certs.CLOCK_SKEW (5 minutes), so a host further behind
# sees it as not yet valid and its TLS handshakes fail.
SKEW_WARN_S = 60.0
SKEW_FAIL_S = certs.CLOCK_SKEW.total_seconds()
# Free space on the system drive. TLSTool writes C:\ProgramData\IBM\Tealeaf\security and the
# services write their logs as they start: below 100 MiB Windows and the services start
# failing writes, which would look like a failed TLS restart. Below 1 GiB a change window's
# worth of logs, event logs and updates may fill it.
DISK_FAIL_BYTES = 100 * 1024**2
DISK_WARN_BYTES = 1024**3
# Windows Server 2008 R2 (6.1) is the oldest server the scripts are written for.
OLDEST_OS = (6, 1)

MECHANISMS: tuple[tuple[str, str], ...] = (
    ("login", "login, transport and encryption"),
    ("shell", "shell, code page and account"),
    ("stdin_framing", "stdin framing round trip"),
    ("stdin_eof", "pipe-mode end of file"),
    ("powershell", "PowerShell version and language mode"),
    ("dotnet", ".NET Framework versions"),
    ("fips", "FIPS policy and SHA-256 provider"),
    ("os", "OS, last boot and pending reboot"),
    ("install_dir", "install folder"),
    ("tealeaf_build", "Tealeaf build"),
    ("tools", "TLSTool.exe and openssl.exe"),
    ("services", "TeaLeaf services"),
    ("data_service_log", "Data Service log"),
    ("tools_writable", "Tools folder writable"),
    ("restart_mutex", "restart mutex"),
    ("clock_skew", "clock skew"),
    ("disk", "free disk on the system drive"),
)
TITLES = dict(MECHANISMS)
# .NET 4.x: the lowest Release value of each version (learn.microsoft.com/dotnet/framework/
# install/how-to-determine-which-versions-are-installed), highest first.
DOTNET_RELEASES = (
    (533320, "4.8.1"),
    (528040, "4.8"),
    (461808, "4.7.2"),
    (461308, "4.7.1"),
    (460798, "4.7"),
    (394802, "4.6.2"),
    (394254, "4.6.1"),
    (393295, "4.6"),
    (379893, "4.5.2"),
    (378675, "4.5.1"),
    (378389, "4.5"),
)
INSTALL_SOURCES = {
    "inventory": "given by the inventory",
    "service": "found from a TeaLeaf service's executable path "
    r"(the first folder up with Tools\TLSTool.exe)",
    "registry": rf"read from the registry value {checks.TEALEAF_KEY}\InstallDir",
}
BUILD_SOURCES = {
    "registry": rf"registry value {checks.TEALEAF_KEY}\Version",
    "file_version": "file version of a TeaLeaf service executable",
}


@dataclass(frozen=True)
class Line:
    """One mechanism on one host: verdict, what was seen, what to do when it is not ok."""

    mechanism: str
    verdict: str
    evidence: str
    action: str = ""

    @property
    def title(self) -> str:
        return TITLES.get(self.mechanism, self.mechanism)

    def to_dict(self) -> dict[str, str]:
        return {
            "mechanism": self.mechanism,
            "title": self.title,
            "verdict": self.verdict,
            "evidence": redact(self.evidence),
            "action": redact(self.action),
        }


@dataclass
class HostAnswers:
    """What one host answered, and what the controller knows about the exchange."""

    facts: Mapping[str, Any] | RemoteError | None = None
    check: Mapping[str, Any] | RemoteError | None = None
    logged_in: bool = False  # a WinRM shell opened: the host answered and took the login
    sent_at: float | None = None  # controller epoch seconds: the check op's call started
    received_at: float | None = None  # ... and its answer was in
    stdin_bytes: int = 0  # what the check op's stdin weighed


Judge = Callable[["Host", HostAnswers], Line]
DataJudge = Callable[["Host", HostAnswers, Mapping[str, Any]], Line]  # + the op's answer


# --- small readers ------------------------------------------------------------------------------


def _facts(a: HostAnswers) -> Mapping[str, Any] | None:
    return a.facts if isinstance(a.facts, Mapping) else None


def _check(a: HostAnswers) -> Mapping[str, Any] | None:
    return a.check if isinstance(a.check, Mapping) else None


def _section(data: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    value = data.get(name) if data is not None else None
    return value if isinstance(value, Mapping) else {}


def error_text(error: object) -> str:
    """One redacted line for an op's error (the hint goes into the action instead)."""
    if isinstance(error, RemoteError):
        return redact(error.message) or type(error).__name__
    return redact(str(error))


def _not_measured(mechanism: str, a: HostAnswers, *ops: str) -> Line:
    """`unknown`, naming the op(s) whose answer was needed and why it is missing."""
    reasons = []
    for op in ops:
        error = a.facts if op == "facts" else a.check
        if isinstance(error, RemoteError):
            reasons.append(f"the {op} op failed: {error_text(error)}")
        elif error is None:
            reasons.append(f"the {op} op did not run")
    return Line(mechanism, UNKNOWN, "not measured: " + "; ".join(reasons))


def _needs(op: str) -> Callable[[DataJudge], Judge]:
    """A judge that reads one op's answer (passed as its third argument): without that answer
    its line is `unknown`, saying why. The mechanism is the judge's name after `judge_`."""

    def wrap(judge: DataJudge) -> Judge:
        mechanism = judge.__name__.removeprefix("judge_")

        @functools.wraps(judge)
        def run(host: Host, a: HostAnswers) -> Line:
            data = _facts(a) if op == "facts" else _check(a)
            if data is None:
                return _not_measured(mechanism, a, op)
            return judge(host, a, data)

        return run

    return wrap


def _tls_role(host: Host) -> bool:
    return host.role in TLS_ROLES


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "?"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _utc(text: Any) -> datetime | None:
    """The check op's `yyyy-MM-ddTHH:mm:ss.fffZ`."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _on(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value != 0


# --- the judges ---------------------------------------------------------------------------------


def judge_login(host: Host, a: HostAnswers) -> Line:
    s = host.winrm
    who = f"{s.transport} as {s.username}" if s.username else s.transport
    where = f"{s.endpoint(host.address)}, {who}"
    if not a.logged_in:
        error = a.facts if isinstance(a.facts, RemoteError) else a.check
        hint = error.hint if isinstance(error, RemoteError) and error.hint else ""
        return Line("login", FAIL, f"{where}: {error_text(error)}", hint or "see the error")
    answered = sum(isinstance(x, Mapping) for x in (a.facts, a.check))

    def evidence(channel: str) -> str:
        return f"{where}; {channel}; a shell opened and {answered} of 2 ops answered"

    if s.scheme == "https" and s.validate_certs:
        trust = f"ca_bundle {s.ca_bundle.name}" if s.ca_bundle else "the system's CAs"
        return Line("login", OK, evidence(f"TLS, listener certificate checked against {trust}"))
    if s.scheme == "https":
        return Line(
            "login",
            WARN,
            evidence("TLS, but the listener certificate is NOT checked (validate_certs: false)"),
            "put the CA of the WinRM listeners' certificates in ca_bundle and drop "
            "validate_certs: false, so nobody in the middle can take the password",
        )
    if s.transport in ENCRYPTING_TRANSPORTS:
        return Line("login", OK, evidence(f"http with {s.transport} message encryption"))
    return Line(
        "login",
        WARN,
        evidence("http WITHOUT encryption (allow_unencrypted: true)"),
        "use https, or ntlm/kerberos/credssp, which encrypt every message",
    )


@_needs("check")
def judge_shell(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    sh = _section(c, "shell")
    admin = sh.get("admin")
    code_page = sh.get("output_codepage")
    evidence = (
        f"{sh.get('account') or '?'} ({'an administrator' if admin else 'NOT an administrator'}), "
        f"{sh.get('host_name') or '?'}, {sh.get('process_bits') or '?'}-bit powershell.exe, "
        f"console code page {code_page} (input {sh.get('input_codepage')}); "
        f"the shell was opened asking for {SHELL_CODEPAGE}"
    )
    if sh.get("error"):
        evidence += f"; reading the code page failed: {redact(str(sh['error']))}"
    if admin is not True:
        return Line(
            "shell",
            FAIL,
            evidence,
            "use an account in the host's Administrators group: the rollout writes HKLM, "
            r"C:\ProgramData\IBM\Tealeaf\security and the Tools folder, and restarts services",
        )
    if sh.get("process_bits") == 32 and sh.get("os_64bit"):
        return Line(
            "shell",
            WARN,
            evidence,
            "a 32-bit powershell.exe sees the 32-bit registry view: check the WinRM shell's "
            r"configuration (it should start C:\Windows\System32\WindowsPowerShell)",
        )
    if code_page != SHELL_CODEPAGE:
        return Line(
            "shell",
            WARN,
            evidence,
            "none for the rollout (op framing is ASCII); non-ASCII in TLSTool output and "
            "error messages may arrive garbled",
        )
    return Line("shell", OK, evidence)


def _first_difference(sent: str, got: Any) -> str:
    if not isinstance(got, str):
        return f"expected a string, got {type(got).__name__}"
    for index, (x, y) in enumerate(zip(sent, got, strict=False)):
        if x != y:
            return f"character {index}: sent U+{ord(x):04X}, got U+{ord(y):04X}"
    return f"sent {len(sent)} characters, got {len(got)}"


@_needs("check")
def judge_stdin_framing(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    got = c.get("sentinel")
    if got == SENTINEL:
        return Line(
            "stdin_framing",
            OK,
            f"a {len(SENTINEL)}-character parameter with quotes, $(...), backticks, a newline "
            "and non-ASCII travelled base64 on stdin and came back identical",
        )
    return Line(
        "stdin_framing",
        FAIL,
        f"the parameter came back altered ({_first_difference(SENTINEL, got)})",
        "parameters (paths, passwords) would reach the scripts altered: do not run the "
        "rollout on this host; report its PowerShell version and code page",
    )


def judge_stdin_eof(host: Host, a: HostAnswers) -> Line:
    # Only the check op proves end of file: when it answered, stdin ended there, and a slow
    # facts op (a long log walk) is judged by its own lines, not blamed on stdin. The facts
    # op's timeout is the evidence only when the check op never ran.
    if isinstance(a.check, RemoteTimeout):
        hung: RemoteTimeout | None = a.check
    elif a.check is None and isinstance(a.facts, RemoteTimeout):
        hung = a.facts
    else:
        hung = None
    if hung is not None:
        return Line(
            "stdin_eof",
            FAIL,
            f"an op did not answer before its deadline ({error_text(hung)}): a command whose "
            "stdin never reaches end of file (console-mode stdin) hangs exactly so",
            "the transport starts commands with pipe-mode stdin (WINRS_CONSOLEMODE_STDIN="
            "FALSE), so this host does not deliver end of file even then: do not run the "
            "rollout here; report its PowerShell version",
        )
    c = _check(a)
    if c is None:
        return _not_measured("stdin_eof", a, "check")
    sends = max(1, math.ceil(a.stdin_bytes / STDIN_PIECE))
    # transport.Connection starts every command with console_mode_stdin=False (pipe mode)
    base = (
        f"{a.stdin_bytes} bytes of pipe-mode stdin in {sends} Send(s), the last marked End; "
        "the op could start only once the bootstrap had read to end of file"
    )
    text = protocol.script_text("check")
    got = c.get("script_chars")
    if not isinstance(got, int) or got <= 0:
        return Line("stdin_eof", OK, base + " (its own length is not measurable here)")
    if len(text.rstrip("\n")) <= got <= len(text):
        return Line("stdin_eof", OK, base + f", and all {got} characters of check.ps1 arrived")
    return Line(
        "stdin_eof",
        FAIL,
        base + f", but check.ps1 arrived with {got} of {len(text)} characters",
        "stdin is cut or altered on the way: report this host's PowerShell version",
    )


def _constrained(a: HostAnswers) -> RemoteScriptError | None:
    for error in (a.facts, a.check):
        if isinstance(error, RemoteScriptError) and re.search(
            r"constrained\s*language", error.message, re.I
        ):
            return error
    return None


def judge_powershell(host: Host, a: HostAnswers) -> Line:
    blocked = _constrained(a)
    if blocked is not None:
        return Line(
            "powershell",
            FAIL,
            f"the op stopped: {error_text(blocked)}",
            "Constrained Language Mode (AppLocker or WDAC policy) blocks the scripts: allow "
            "full language for the WinRM account's PowerShell on this host, or change it by hand",
        )
    c, f = _check(a), _facts(a)
    if c is None and f is None:
        return _not_measured("powershell", a, "facts", "check")
    ps = _section(c, "powershell")
    version = str(ps.get("version") or (f or {}).get("ps_version") or "?")
    mode = ps.get("language_mode")
    evidence = f"Windows PowerShell {version}"
    if ps.get("clr"):
        evidence += f" on CLR {ps['clr']}"
    evidence += f", {mode or 'language mode not read'}"
    major = re.match(r"(\d+)", version)
    if major and int(major.group(1)) < 2:
        return Line("powershell", FAIL, evidence, "install Windows PowerShell 2.0 or later")
    if mode and mode != "FullLanguage":
        return Line(
            "powershell",
            FAIL,
            evidence,
            "the scripts need FullLanguage: allow it for the WinRM account on this host",
        )
    return Line("powershell", OK, evidence)


def _dotnet_name(entry: Mapping[str, Any]) -> str:
    release = entry.get("release")
    if isinstance(release, int):
        name = next((v for floor, v in DOTNET_RELEASES if release >= floor), "4.0-4.5")
        return f"{name} (Release {release})"
    text = str(entry.get("version") or entry.get("key") or "?")
    if entry.get("sp") not in (None, 0):
        text += f" SP{entry['sp']}"
    return text


def _installed_dotnet(c: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries = c.get("dotnet") if isinstance(c.get("dotnet"), list) else []
    return [e for e in entries if isinstance(e, Mapping) and e.get("install") in (1, None)]


def _has_system_core(c: Mapping[str, Any]) -> bool:
    """System.Core (SHA256CryptoServiceProvider) loads: .NET 3.5 on CLR 2, or any CLR 4."""
    keys = {str(e.get("key")) for e in _installed_dotnet(c)}
    clr = str(_section(c, "powershell").get("clr") or "")
    return "v3.5" in keys or clr.startswith("4.")


@_needs("check")
def judge_dotnet(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    entries = _installed_dotnet(c)
    if not entries:
        return Line(
            "dotnet",
            WARN,
            r"no .NET Framework setup key under HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP",
            "check which .NET Framework this host runs (PowerShell needs 2.0 or 4.x)",
        )
    evidence = ".NET Framework " + "; ".join(_dotnet_name(e) for e in entries)
    if not _has_system_core(c):
        evidence += " (no 3.5: System.Core's FIPS-validated SHA-256 class is not available)"
    return Line("dotnet", OK, evidence)


@_needs("check")
def judge_fips(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    f = _facts(a)
    reported = _section(f, "fips")
    if "policy_enabled" in reported and reported.get("policy_enabled") is not None:
        policy: bool | None = bool(reported["policy_enabled"])
    else:
        policy = _on(c.get("fips_policy"))
    policy_text = "FIPS policy " + ("ON" if policy else "off")
    provider = reported.get("hash_provider")
    provider_text = f"SHA-256 by {provider}" if provider else "hash provider not reported by facts"
    probe = _section(c, "write_probe")
    action = (
        "every op that moves a file hashes it: under the FIPS policy the scripts need the "
        "FIPS-validated SHA256CryptoServiceProvider (System.Core: .NET 3.5 on PowerShell 2.0)"
    )
    if probe.get("hash_error"):
        return Line(
            "fips",
            FAIL,
            f"{policy_text}; hashing the probe file failed: {redact(str(probe['hash_error']))}",
            action,
        )
    if probe.get("sha256") == SENTINEL_SHA256:
        return Line(
            "fips",
            OK,
            f"{policy_text}; {provider_text}; the probe file's SHA-256 equals the controller's",
        )
    if probe.get("sha256"):
        return Line(
            "fips",
            FAIL,
            f"{policy_text}; the probe file's SHA-256 {checks.short_sha(probe['sha256'])} is not "
            f"the controller's {checks.short_sha(SENTINEL_SHA256)}",
            "hashes on this host disagree with the controller's: report it",
        )
    if policy and not _has_system_core(c):
        return Line(
            "fips",
            WARN,
            f"{policy_text} and no .NET 3.5 (System.Core); hashing was not tried (no probe file)",
            action,
        )
    return Line("fips", UNKNOWN, f"{policy_text}; hashing not tried: no probe file was written")


def _uptime(c: Mapping[str, Any]) -> str:
    boot, now = _utc(_section(c, "os").get("last_boot_utc")), _utc(c.get("utc_now"))
    if boot is None or now is None:
        return ""
    hours = (now - boot).total_seconds() / 3600
    return f" (up {hours / 24:.1f} days)" if hours >= 48 else f" (up {hours:.1f} hours)"


@_needs("check")
def judge_os(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    f = _facts(a)
    os_info = {**_section(f, "os"), **_section(c, "os")}
    version = str(os_info.get("version") or "")
    evidence = f"{os_info.get('caption') or '?'} ({version or '?'})"
    evidence += f"; last boot {os_info.get('last_boot') or '?'} host time{_uptime(c)}"
    pending = _section(c, "pending_reboot")
    flags = []
    if pending.get("cbs_reboot_pending"):
        flags.append("Component Based Servicing RebootPending")
    if pending.get("wu_reboot_required"):
        flags.append("WindowsUpdate RebootRequired")
    if pending.get("file_rename_entries"):
        flags.append(f"{pending['file_rename_entries']} PendingFileRenameOperations entries")
    evidence += "; pending reboot: " + (", ".join(flags) if flags else "none")
    numbers = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    if len(numbers) == 2 and numbers < OLDEST_OS:
        return Line(
            "os",
            WARN,
            evidence,
            "older than Windows Server 2008 R2: the scripts were written for 2008 R2 and later",
        )
    if flags:
        return Line(
            "os",
            WARN,
            evidence,
            "reboot before the change window: otherwise the rollout's restarts (or its reboot) "
            "run next to the pending servicing work, and registry changes wait for it",
        )
    return Line("os", OK, evidence)


@_needs("facts")
def judge_install_dir(host: Host, a: HostAnswers, f: Mapping[str, Any]) -> Line:
    folder, source = f.get("install_dir"), f.get("install_dir_source")
    if not folder:
        return Line(
            "install_dir",
            FAIL,
            r"not found: no TeaLeaf service's executable path leads to a folder with "
            rf"Tools\TLSTool.exe, and {checks.TEALEAF_KEY}\InstallDir is absent",
            f"set tealeaf.install_dir (or hosts.{host.name}.install_dir) in the inventory",
        )
    return Line("install_dir", OK, f"{folder} ({INSTALL_SOURCES.get(str(source), source)})")


def _registry_names(c: Mapping[str, Any] | None) -> str:
    reg = _section(c, "registry")
    if c is None:
        return "value names not read"
    if not reg.get("exists"):
        return f"{reg.get('key') or checks.TEALEAF_KEY} does not exist"
    values = ", ".join(str(v) or "(default)" for v in reg.get("value_names") or []) or "none"
    subkeys = ", ".join(str(v) for v in reg.get("subkeys") or []) or "none"
    return f"value names under TeaLeaf Technology: {values}; subkeys: {subkeys}"


@_needs("facts")
def judge_tealeaf_build(host: Host, a: HostAnswers, f: Mapping[str, Any]) -> Line:
    c = _check(a)
    build = f.get("tealeaf_build")
    names = _registry_names(c)
    if build is None:
        return Line(
            "tealeaf_build",
            FAIL if _tls_role(host) else WARN,
            f"not found ({names})",
            "preflight refuses a server whose build is unknown: check the installed fix pack "
            "(Programs and Features) and report the value names above",
        )
    source = f.get("tealeaf_build_source")
    where = BUILD_SOURCES.get(str(source)) if source else None
    if where is None:
        value_names = {str(v).lower() for v in _section(c, "registry").get("value_names") or []}
        where = BUILD_SOURCES["registry"] if "version" in value_names else "source not reported"
    evidence = f"{build} from {where}; {names}"
    verdict = checks.build_at_least(build)
    if verdict is None:
        return Line(
            "tealeaf_build",
            FAIL if _tls_role(host) else WARN,
            evidence + " (not a build number)",
            "preflight refuses a build it cannot read: check the installed fix pack",
        )
    if not verdict:
        return Line(
            "tealeaf_build",
            FAIL if _tls_role(host) else WARN,
            evidence,
            f"inter-process TLS needs {checks.MIN_BUILD_TEXT} (9.0.2 FP6) or later: install "
            "Fix Pack 6 or later first",
        )
    return Line("tealeaf_build", OK, evidence)


@_needs("check")
def judge_tools(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    tools = _section(c, "tools")
    parts, missing = [], []
    for exe in ("TLSTool.exe", "openssl.exe"):
        entry = _section(tools, exe)
        if entry.get("exists"):
            version = entry.get("file_version") or "no version resource"
            parts.append(f"{exe} {version} ({_size(entry.get('size'))})")
        else:
            missing.append(str(entry.get("path") or exe))
    if not any(_section(tools, exe).get("path") for exe in ("TLSTool.exe", "openssl.exe")):
        return Line("tools", UNKNOWN, "not looked for: no install folder")
    evidence = "; ".join(parts + [f"missing: {path}" for path in missing])
    if missing and _tls_role(host):
        return Line(
            "tools",
            FAIL,
            evidence,
            "TLSTool.exe and the openssl.exe it runs ship with Tealeaf 9.0.2 FP6 in Tools: "
            "install the fix pack, or point install_dir at the folder that holds them",
        )
    if missing:
        evidence += " (push_tools copies both from a server of the same build)"
    return Line("tools", OK, evidence)


def _services(f: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    services = f.get("services")
    return [s for s in services if isinstance(s, Mapping)] if isinstance(services, list) else []


@_needs("facts")
def judge_services(host: Host, a: HostAnswers, f: Mapping[str, Any]) -> Line:
    services = _services(f)
    if not services:
        if not _tls_role(host):
            return Line("services", OK, "none (an RTV workstation runs no TeaLeaf services)")
        return Line(
            "services",
            FAIL,
            "no service whose name or display name starts with TeaLeaf",
            "is Tealeaf installed on this host, and is its role in the inventory right?",
        )
    listed = ", ".join(
        f"{s.get('name')} {s.get('state')}"
        + (f" ({s.get('start_mode')})" if s.get("state") != "Running" else "")
        for s in services
    )
    evidence = f"{len(services)} TeaLeaf service(s): {listed}"
    pending = [str(s.get("name")) for s in services if "pending" in str(s.get("state")).lower()]
    if pending:
        return Line(
            "services",
            WARN,
            evidence,
            f"{', '.join(pending)} {'is' if len(pending) == 1 else 'are'} between states: let "
            "them settle (or find why they hang) before the window",
        )
    return Line("services", OK, evidence)


def _log_listing(logs: Mapping[str, Any]) -> str:
    newest = [e for e in logs.get("newest") or [] if isinstance(e, Mapping)]
    shown = ", ".join(
        f"{e.get('name')} ({_size(e.get('size'))}, {e.get('last_write')})" for e in newest[:3]
    )
    more = (
        f" and {logs['count'] - 3} more"
        if isinstance(logs.get("count"), int) and logs["count"] > 3
        else ""
    )
    count = logs.get("count", 0)
    return f"{count} TLDataService*.log in {logs.get('dir')}, newest first: {shown}{more}"


@_needs("facts")
def judge_data_service_log(host: Host, a: HostAnswers, f: Mapping[str, Any]) -> Line:
    c = _check(a)
    if not data_service_names(f):
        return Line("data_service_log", OK, "no Data Service among this host's services")
    logs = _section(c, "logs")
    if c is not None and not logs.get("count"):
        return Line(
            "data_service_log",
            FAIL,
            f"no TLDataService*.log in {logs.get('dir') or 'the install folder'}",
            "the restart gate reads the Data Service's startup block from that log: find where "
            "this Data Service logs, or the gate times out after every restart",
        )
    listing = _log_listing(logs) if c is not None else "log files not listed"
    ds = _section(f, "data_service")
    if not ds.get("mode"):
        return Line(
            "data_service_log",
            WARN,
            f"{listing}; no startup block found ('Service.Start INFO Starting HTTP Server' "
            "then 'Port:' or 'TLS Port:'): the service has run since before those lines",
            "nothing blocks the rollout (a restart writes a new block, which the gate reads), "
            "but the current port is unproven: check the Data Service's configured port",
        )
    evidence = (
        f"{listing}; newest startup block {ds.get('started_at')} in {ds.get('log')}: "
        f"{ds.get('mode')}, port {ds.get('port')}"
    )
    if ds.get("port") == checks.LEGACY_DATA_SERVICE_PORT:
        return Line(
            "data_service_log",
            WARN,
            evidence,
            f"preflight will refuse: set the Data Service back to 23000 (and the Search "
            f"Service configuration on Canisters and HBRs that points at "
            f"{checks.LEGACY_DATA_SERVICE_PORT}) before the window",
        )
    if isinstance(ds.get("port"), int) and ds["port"] != host.data_service_port:
        return Line(
            "data_service_log",
            WARN,
            evidence,
            f"the inventory says data_service_port {host.data_service_port}: correct it, the "
            "handshake gate probes the inventory's port",
        )
    return Line("data_service_log", OK, evidence)


@_needs("check")
def judge_tools_writable(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    probe = _section(c, "write_probe")
    folder = str(probe.get("dir") or "")
    if not folder:
        return Line("tools_writable", UNKNOWN, "not tried: no install folder")
    where = (
        ""
        if folder.lower().endswith("\\tools")
        else " (Tools does not exist yet: push_tools creates it)"
    )
    path = probe.get("path")
    if probe.get("left_behind"):
        return Line(
            "tools_writable",
            FAIL,
            f"{path} was written but could not be deleted: {redact(str(probe.get('error')))}",
            f"delete {path} by hand",
        )
    if not probe.get("written"):
        return Line(
            "tools_writable",
            FAIL,
            f"could not write {path}{where}: {redact(str(probe.get('error')))}",
            f"give the WinRM account write access to {folder} and free space there: the "
            "rollout puts the PFX in Tools",
        )
    return Line(
        "tools_writable",
        OK,
        f"wrote {probe.get('size')} bytes to {path}{where}, hashed and deleted them",
    )


@_needs("check")
def judge_restart_mutex(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    mutex = _section(c, "mutex")
    name = mutex.get("name") or RESTART_MUTEX
    if mutex.get("error"):
        return Line(
            "restart_mutex",
            FAIL,
            f"{name} cannot be created or opened: {redact(str(mutex['error']))}",
            "another account holds it (a restart started with other credentials?): wait for "
            "it to end or find its powershell.exe; the restart op would stop at this host",
        )
    if mutex.get("created") is False:
        return Line(
            "restart_mutex",
            WARN,
            f"{name} exists: a restart of TeaLeaf services is running on this host right now",
            "wait for that restart to end before the window",
        )
    return Line("restart_mutex", OK, f"{name} created and closed at once (not held)")


@_needs("check")
def judge_clock_skew(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    host_utc = _utc(c.get("utc_now"))
    if host_utc is None or a.sent_at is None or a.received_at is None:
        return Line("clock_skew", UNKNOWN, f"host time not readable: {c.get('utc_now')!r}")
    middle = (a.sent_at + a.received_at) / 2
    skew = host_utc.timestamp() - middle
    controller = datetime.fromtimestamp(middle, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    evidence = (
        f"host UTC {c.get('utc_now')}, controller {controller}Z at the middle of the call: "
        f"host {'ahead' if skew >= 0 else 'behind'} by {abs(skew):.1f}s "
        f"(+/- {(a.received_at - a.sent_at) / 2:.1f}s)"
    )
    action = "synchronise the host's clock (w32tm /resync) or the controller's"
    if abs(skew) > SKEW_FAIL_S:
        return Line(
            "clock_skew",
            FAIL,
            evidence,
            f"{action}: beyond {SKEW_FAIL_S:.0f}s Kerberos refuses tickets and a fresh "
            "certificate is not yet valid on a host that is behind",
        )
    if abs(skew) > SKEW_WARN_S:
        return Line("clock_skew", WARN, evidence, f"{action}: host and controller times differ")
    return Line("clock_skew", OK, evidence)


@_needs("check")
def judge_disk(host: Host, a: HostAnswers, c: Mapping[str, Any]) -> Line:
    disk = _section(c, "disk")
    free = disk.get("free_bytes")
    if disk.get("error") or not isinstance(free, int):
        return Line("disk", UNKNOWN, f"not read: {redact(str(disk.get('error')))}")
    evidence = f"{disk.get('drive')} {_size(free)} free of {_size(disk.get('total_bytes'))}"
    action = f"free space on the {disk.get('drive')} drive"
    if free < DISK_FAIL_BYTES:
        return Line(
            "disk",
            FAIL,
            evidence,
            f"{action}: below {_size(DISK_FAIL_BYTES)} TLSTool and the services' logs fail "
            "to write, which looks like a failed TLS restart",
        )
    if free < DISK_WARN_BYTES:
        return Line("disk", WARN, evidence, f"{action}: under {_size(DISK_WARN_BYTES)} left")
    return Line("disk", OK, evidence)


JUDGES: tuple[Judge, ...] = (
    judge_login,
    judge_shell,
    judge_stdin_framing,
    judge_stdin_eof,
    judge_powershell,
    judge_dotnet,
    judge_fips,
    judge_os,
    judge_install_dir,
    judge_tealeaf_build,
    judge_tools,
    judge_services,
    judge_data_service_log,
    judge_tools_writable,
    judge_restart_mutex,
    judge_clock_skew,
    judge_disk,
)


def evaluate_host(host: Host, answers: HostAnswers) -> list[Line]:
    """Every mechanism's line for one host. A host that could not be reached or logged in to:
    login fails and the rest is unknown, saying why."""
    if not answers.logged_in:
        error = answers.facts
        why = (
            "not measured: the login was refused"
            if isinstance(error, AuthenticationFailed)
            else "not measured: no WinRM shell could be opened on the host"
        )
        login = judge_login(host, answers)
        return [login] + [Line(name, UNKNOWN, why) for name, _ in MECHANISMS[1:]]
    return [judge(host, answers) for judge in JUDGES]


__all__ = [
    "FAIL",
    "HostAnswers",
    "JUDGES",
    "Line",
    "MECHANISMS",
    "OK",
    "RESTART_MUTEX",
    "SENTINEL",
    "UNKNOWN",
    "VERDICTS",
    "WARN",
    "evaluate_host",
]
