"""The lab's model of every packaged op: what `ops/scripts/<op>.ps1` does, done against a
`LabHost` instead of Windows.

The runner (`lab/runner.py`) calls `MODELS[op](host, params)` only after checking that stdin
carried the packaged scripts byte for byte, so a model must follow its script step by step:
same parameter parsing, same discovery rules, same failure messages and exit codes, same result
shape (docs/architecture.md, "Remote ops"). Keep them in step when a script changes.
Failures raise `OpFailed` (the script's `Stop-FleetOp`); Windows errors the script would not
catch surface as `HostError` from the host, which the runner reports the same way.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import ntpath
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.lab.hosterror import HostError
from tealeaf_fleet.lab.registry import (
    SCHANNEL_KEY,
    SECURITY_KEY,
    TEALEAF_KEY,
    TLS12_CLIENT_KEY,
    TLS12_SERVER_KEY,
)
from tealeaf_fleet.lab.runner import OpFailed
from tealeaf_fleet.lab.tlstool import SECURITY_DIR
from tealeaf_fleet.secrets import MASK

if TYPE_CHECKING:
    from tealeaf_fleet.lab.host import LabHost

DOTNET = r"HKLM:\SOFTWARE\Microsoft\.NETFramework"
WINHTTP = r"Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp"
SYSTEM32 = r"C:\Windows\system32"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
START_RE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\s+Service\.Start\s+INFO\s+"
    r"Starting HTTP Server",
    re.I,
)
PORT_RE = re.compile(r"Service\.Start\s+INFO\s+(TLS )?Port:\s*(\d+)", re.I)

Model = Callable[["LabHost", dict[str, str]], dict]


# ------------------------------------------------------------------ common.ps1 helpers ---


def _int(text: str, name: str) -> int:
    """[int]$X: PowerShell converts numeric text and fails on anything else."""
    try:
        return int(float(text.strip())) if text.strip() else 0
    except ValueError:
        raise OpFailed(
            f'Cannot convert value "{text}" to type "System.Int32" ({name}). '
            'Error: "Input string was not in a correct format."'
        ) from None


def _split_list(text: str) -> list[str]:
    """Split-FleetList: lines joined with LF; CR trimmed; empty lines dropped."""
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r") != ""]


def _combine(left: str, right: str) -> str:
    """[IO.Path]::Combine for the cases the scripts use."""
    if not left:
        return right
    return left + right if left.endswith(("\\", "/", ":")) else left + "\\" + right


def _file_exists(host: LabHost, path: str) -> bool:
    """[IO.File]::Exists: False for folders and for paths Windows cannot even parse."""
    try:
        return host.path(path).is_file()
    except HostError:
        return False


def _dir_exists(host: LabHost, path: str) -> bool:
    try:
        return host.is_dir(path)
    except HostError:
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_summary(host: LabHost, path: str) -> dict[str, Any] | None:
    if not _file_exists(host, path):
        return None
    data = host.read_file(path)
    return {"size": len(data), "sha256": _sha256(data)}


def _dword(value: Any) -> Any:
    """Get-ItemProperty returns a DWORD as a signed Int32."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0x7FFFFFFF:
        return value - 0x100000000
    return value


def _reg(host: LabHost, key: str, name: str) -> Any:
    return _dword(host.reg_get(key, name))


DATA_SERVICE_LOG_LIMIT = 31  # $FleetDataServiceLogLimit


def _data_service_logs(host: LabHost, log_dir: str) -> list[str]:
    """Get-FleetDataServiceLogs: files named TLDataService*.log (both the dated and the live
    naming), newest first by LastWriteTimeUtc ticks, ties by upper-case name (ordinal); the
    time comes from the host, never from the name."""
    keyed = []
    for name in host.listdir(log_dir):
        path = _combine(log_dir, name)
        if fnmatch.fnmatch(name.lower(), "tldataservice*.log") and _file_exists(host, path):
            keyed.append((f"{host.last_write_time_utc(path):019d}|{name.upper()}", path))
    keyed.sort()
    return [path for _, path in reversed(keyed)]


def _data_service_mode(host: LabHost, install_dir: str, since: str) -> dict[str, Any]:
    """Get-FleetDataServiceMode."""
    none: dict[str, Any] = {
        "mode": None,
        "port": None,
        "started_at": None,
        "log": None,
        "newest_log": None,
    }
    if since and not TIME_RE.match(since):
        raise OpFailed("Since must look like yyyy-MM-ddTHH:mm:ss", 2)
    if not install_dir:
        return none
    log_dir = _combine(install_dir, "Logs")
    if not _dir_exists(host, log_dir):
        return none
    logs = _data_service_logs(host, log_dir)
    if not logs:
        return none
    none["newest_log"] = logs[0]
    walked = logs[:DATA_SERVICE_LOG_LIMIT]
    if since:
        for i in range(len(walked) - 1, -1, -1):
            log = walked[i]
            if i > 0 and host.last_write_time(log) < since:
                continue
            for block in _startup_blocks(host, log):
                if block["started_at"] >= since:
                    return {**block, "newest_log": logs[0]}
    else:
        for log in walked:
            blocks = _startup_blocks(host, log)
            if blocks:
                return {**blocks[-1], "newest_log": logs[0]}
    return none


def _startup_blocks(host: LabHost, log: str) -> list[dict[str, Any]]:
    """Read-FleetStartupBlocks."""
    return startup_blocks_in(host.read_file(log).decode("utf-8", "replace"), log)


def startup_blocks_in(text: str, log: str) -> list[dict[str, Any]]:
    """The startup blocks of one log's text, in file order: a `Starting HTTP Server` line, then
    the first `Port: N` / `TLS Port: N` after it (shared with `fleet lab state`)."""
    blocks: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        start = START_RE.match(line)
        if start:
            current = {"mode": None, "port": None, "started_at": start.group(1), "log": log}
            blocks.append(current)
            continue
        port = PORT_RE.search(line)
        if current is not None and current["mode"] is None and port:
            current["mode"] = "tls" if port.group(1) else "plain"
            current["port"] = int(port.group(2))
    return blocks


def _console_text(output: str) -> str:
    """What the scripts return for native output: each line followed by CRLF."""
    return "".join(line + "\r\n" for line in output.splitlines())


# ------------------------------------------------------------------------------ ops ---


def _exe_path(command_line: str) -> str | None:
    """Get-ExecutablePath in facts.ps1."""
    if not command_line:
        return None
    text = command_line.strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:] if end < 0 else text[1:end]
    exe = text.lower().find(".exe")
    if exe >= 0:
        return text[: exe + 4]
    return text.split(" ")[0]


def _find_install_dir(host: LabHost, exe_path: str | None) -> str | None:
    """Find-InstallDir in facts.ps1: walk up to the first folder with Tools\\TLSTool.exe."""
    if not exe_path:
        return None
    current: str | None = ntpath.dirname(exe_path)
    while current:
        if _file_exists(host, _combine(current, r"Tools\TLSTool.exe")):
            return current
        parent = ntpath.dirname(current)
        if parent == current:
            break
        current = parent
    return None


def _certificate(host: LabHost, crt_path: str) -> dict[str, Any]:
    from cryptography import x509

    raw = host.read_file(crt_path)
    der = raw
    pem = re.search(
        rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----", raw
    )
    if pem:
        der = base64.b64decode(re.sub(rb"\s", b"", pem.group(1)))
    info: dict[str, Any] = {
        "cert_sha256": _sha256(der),
        "cert_subject": None,
        "cert_not_after": None,
    }
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return info
    info["cert_subject"] = ", ".join(rdn.rfc4514_string() for rdn in reversed(cert.subject.rdns))
    info["cert_not_after"] = cert.not_valid_after_utc.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    return info


def facts(host: LabHost, params: dict[str, str]) -> dict:
    install_dir = params.get("InstallDir", "")
    since = params.get("Since", "")
    services: list[dict[str, Any]] = []
    discovered = None
    iis: dict[str, Any] = {"present": False, "state": None}
    for svc in sorted(host.services(), key=lambda s: s.name.lower()):
        if svc.name.lower() == "w3svc":
            iis = {"present": True, "state": svc.state}
        if fnmatch.fnmatch(svc.name.lower(), "tealeaf*") or fnmatch.fnmatch(
            svc.display_name.lower(), "tealeaf*"
        ):
            services.append(
                {
                    "name": svc.name,
                    "display_name": svc.display_name,
                    "state": svc.state,
                    "start_mode": svc.start_mode,
                    "path": svc.path,
                }
            )
            if discovered is None:
                discovered = _find_install_dir(host, _exe_path(svc.path))
    source = None
    if install_dir:
        source = "inventory"
    elif discovered:
        install_dir, source = discovered, "service"
    else:
        from_registry = host.reg_get(TEALEAF_KEY, "InstallDir")
        if from_registry:
            install_dir, source = str(from_registry), "registry"
    tools = {"tlstool": False, "openssl": False}
    if install_dir:
        tools["tlstool"] = _file_exists(host, _combine(install_dir, r"Tools\TLSTool.exe"))
        tools["openssl"] = _file_exists(host, _combine(install_dir, r"Tools\openssl.exe"))
    enable_tls = host.reg_get(TEALEAF_KEY, "EnableTLS")
    build = host.reg_get(TEALEAF_KEY, "Version")
    files = {
        name: _file_summary(host, _combine(SECURITY_DIR, name))
        for name in ("tealeaf.crt", "tealeaf.p12", "server.tls.xml")
    }
    security: dict[str, Any] = {
        "dir": SECURITY_DIR,
        "files": files,
        "cert_sha256": None,
        "cert_subject": None,
        "cert_not_after": None,
    }
    crt = _combine(SECURITY_DIR, "tealeaf.crt")
    if _file_exists(host, crt):
        security.update(_certificate(host, crt))
    computer = host.reg_get(
        r"HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName", "ComputerName"
    )
    return {
        "hostname": str(computer or host.name.upper()),
        "now": host.now_local(),
        "os": {"version": host.os_version, "caption": host.os_caption},
        "ps_version": host.ps_version,
        "install_dir": install_dir or None,
        "install_dir_source": source,
        "tools": tools,
        "tealeaf_build": str(build) if build is not None else None,
        "enable_tls": int(enable_tls) if enable_tls is not None else None,
        "tls_cert_password_present": host.reg_get(SECURITY_KEY, "TLSCertPassword") is not None,
        "security": security,
        "services": services,
        "iis": iis,
        "data_service": _data_service_mode(host, install_dir or "", since),
        "schannel": {
            "tls12_server_enabled": _reg(host, TLS12_SERVER_KEY, "Enabled"),
            "tls12_server_disabled_by_default": _reg(host, TLS12_SERVER_KEY, "DisabledByDefault"),
            "tls12_client_enabled": _reg(host, TLS12_CLIENT_KEY, "Enabled"),
            "tls12_client_disabled_by_default": _reg(host, TLS12_CLIENT_KEY, "DisabledByDefault"),
            "send_trusted_issuer_list": _reg(host, SCHANNEL_KEY, "SendTrustedIssuerList"),
        },
        "dotnet": {
            "v2_strong_crypto": _reg(host, DOTNET + r"\v2.0.50727", "SchUseStrongCrypto"),
            "v4_strong_crypto": _reg(host, DOTNET + r"\v4.0.30319", "SchUseStrongCrypto"),
            "v2_system_default_tls": _reg(
                host, DOTNET + r"\v2.0.50727", "SystemDefaultTlsVersions"
            ),
            "v4_system_default_tls": _reg(
                host, DOTNET + r"\v4.0.30319", "SystemDefaultTlsVersions"
            ),
        },
        "winhttp": {
            "native": _reg(host, "HKLM:\\SOFTWARE\\" + WINHTTP, "DefaultSecureProtocols"),
            "wow6432": _reg(
                host, "HKLM:\\SOFTWARE\\Wow6432Node\\" + WINHTTP, "DefaultSecureProtocols"
            ),
        },
    }


def file_info(host: LabHost, params: dict[str, str]) -> dict:
    files: dict[str, Any] = {}
    for path in _split_list(params.get("Paths", "")):
        summary = _file_summary(host, path)
        if summary is None:
            files[path] = {"exists": False, "size": None, "sha256": None}
        else:
            files[path] = {"exists": True, **summary}
    return {"files": files}


def put_file(host: LabHost, params: dict[str, str]) -> dict:
    path = params.get("Path", "")
    index = _int(params.get("Part", ""), "Part")
    count = _int(params.get("Parts", ""), "Parts")
    part_path = path + ".fleet-part"
    try:
        data = base64.b64decode(params.get("Data", ""), validate=True)
    except binascii.Error:
        raise OpFailed(
            'Exception calling "FromBase64String": "Invalid length for a Base-64 char array."'
        ) from None
    if index == 0:
        folder = ntpath.dirname(path)
        if folder and not _dir_exists(host, folder):
            host.mkdir(folder)
    elif not _file_exists(host, part_path):
        raise OpFailed(f"part file {part_path} is missing: upload part 0 first")
    try:
        if index == 0:
            host.write_file(part_path, data)
        else:
            host.append_file(part_path, data)
    except HostError as exc:
        host.delete_file(part_path)
        raise OpFailed(f"cannot write {part_path} (disk full?): {exc}") from None
    if index < count - 1:
        return {"path": path, "part": index, "complete": False}
    actual = _sha256(host.read_file(part_path))
    expected = params.get("Sha256", "")
    if actual != expected.lower():
        host.delete_file(part_path)
        raise OpFailed(
            f"SHA-256 mismatch for {path} after upload: expected {expected}, got {actual}"
        )
    if _file_exists(host, path):
        host.delete_file(path)
    host.move_file(part_path, path)
    return {
        "path": path,
        "part": index,
        "complete": True,
        "size": host.file_size(path),
        "sha256": actual,
    }


def get_file(host: LabHost, params: dict[str, str]) -> dict:
    path = params.get("Path", "")
    if not _file_exists(host, path):
        raise OpFailed(f"file not found: {path}")
    start = _int(params.get("Offset", ""), "Offset")
    want = _int(params.get("Length", ""), "Length")
    data = host.read_file(path)
    start = min(start, len(data))
    chunk = data[start : start + max(0, min(want, len(data) - start))]
    return {
        "path": path,
        "size": len(data),
        "offset": start,
        "data": base64.b64encode(chunk).decode("ascii"),
        "sha256": _sha256(data),
    }


def tlstool(host: LabHost, params: dict[str, str]) -> dict:
    install_dir = params.get("InstallDir", "")
    verb = params.get("Verb", "")
    pfx = params.get("PfxPath", "")
    password = params.get("Password", "")
    tools = _combine(install_dir, "Tools")
    exe = _combine(tools, "TLSTool.exe")
    if not _file_exists(host, exe):
        raise OpFailed(f"TLSTool.exe not found at {exe}")
    if '"' in password:
        raise OpFailed("the password contains a double quote, which TLSTool.exe cannot receive", 2)
    if verb.lower() in ("create", "import") and (not pfx or not password):
        raise OpFailed(f"TLSTool {verb} needs a PFX path and a password", 2)
    if verb.lower() == "create":
        args = ["create", "-site", pfx, password]
    elif verb.lower() == "import":
        args = ["import", pfx, password]
    elif verb.lower() in ("enable", "disable"):
        args = [verb]
    else:
        raise OpFailed(f"unknown TLSTool verb '{verb}'", 2)
    code, output = host.tlstool(args, cwd=tools)
    text = _console_text(output)
    if password:
        text = text.replace(password, MASK)
    return {"verb": verb, "exit_code": code, "output": text}


def _run_parallel(
    names: list[str], action: Callable[[str], None], deadline: float, problems: list[str], what: str
) -> None:
    """Issue `action` for every name at once (ServiceController.Stop/Start return at once and
    the script then polls); wait for all of them until the deadline."""
    lock = threading.Lock()

    def one(name: str) -> None:
        try:
            action(name)
        except HostError as exc:
            with lock:
                problems.append(f"{name} would not {what}: {exc}")

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def _wait_state(host: LabHost, names: list[str], state: str, deadline: float) -> list[str]:
    """Wait-Status: the names not in `state` by the deadline (polled like the script)."""
    while True:
        late = [n for n in names if host.service(n).state != state]
        if not late or time.monotonic() >= deadline:
            return late
        time.sleep(0.05)


def _wave(host: LabHost, pending: list[str], dependents: bool) -> list[str]:
    """Get-Wave: pending services none of whose related (pending) services is pending."""
    infos = {s.name.lower(): s for s in host.services()}
    wave = []
    for name in pending:
        if dependents:
            related = [
                s.name for s in infos.values() if name.lower() in {d.lower() for d in s.depends_on}
            ]
        else:
            related = list(infos[name.lower()].depends_on)
        blocked = any(
            r.lower() != name.lower() and r.lower() in {p.lower() for p in pending} for r in related
        )
        if not blocked:
            wave.append(name)
    return wave or list(pending)


_restart_locks: dict[str, threading.Lock] = {}
_restart_locks_guard = threading.Lock()


def _restart_lock(host: LabHost) -> threading.Lock:
    """The script's `Global\tealeaf-fleet-restart-services` mutex: one restart per host."""
    with _restart_locks_guard:
        return _restart_locks.setdefault(str(host.root), threading.Lock())


def restart_services(host: LabHost, params: dict[str, str]) -> dict:
    try:
        timeout_s = float(params.get("TimeoutS", "") or 0)
    except ValueError:
        raise OpFailed(
            f'Cannot convert value "{params.get("TimeoutS")}" to type "System.Double".'
        ) from None
    deadline = time.monotonic() + timeout_s
    clock = time.monotonic()
    lock = _restart_lock(host)
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise OpFailed("another restart of TeaLeaf services is still running on this host")
    try:
        return _restart_locked(host, params, deadline, clock)
    finally:
        lock.release()


def _restart_locked(host: LabHost, params: dict[str, str], deadline: float, clock: float) -> dict:
    started_at = host.now_local()
    names = _split_list(params.get("Names", ""))
    before: dict[str, str] = {}
    for name in names:
        try:
            before[name] = host.service(name).state
        except HostError as exc:
            raise OpFailed(f"service '{name}' does not exist or cannot be opened: {exc}") from None
    named = {n.lower() for n in names}
    problems: list[str] = []

    pending = list(names)
    while pending:
        wave = _wave(host, pending, dependents=True)
        infos = {s.name.lower(): s for s in host.services()}
        stopping = []
        for name in wave:
            blockers = [
                s.name
                for s in infos.values()
                if name.lower() in {d.lower() for d in s.depends_on}
                and s.state != "Stopped"
                and s.name.lower() not in named
            ]
            if blockers:
                problems.append(
                    f"{name} not stopped: running dependent(s) not in the list: "
                    + ", ".join(blockers)
                )
            else:
                stopping.append(name)
        _run_parallel(stopping, host.stop_service, deadline, problems, "stop")
        problems.extend(
            f"{n} did not stop in time" for n in _wait_state(host, stopping, "Stopped", deadline)
        )
        pending = [n for n in pending if n not in wave]

    pending = list(names)
    while pending:
        wave = _wave(host, pending, dependents=False)
        to_start = [n for n in wave if host.service(n).state == "Stopped"]
        _run_parallel(to_start, host.start_service, deadline, problems, "start")
        _wait_state(host, wave, "Running", deadline)
        pending = [n for n in pending if n not in wave]

    services = []
    not_running = []
    for name in names:
        after = host.service(name).state
        if after != "Running":
            not_running.append(f"{name} ({after})")
        services.append({"name": name, "before": before[name], "after": after})
    if not_running or problems:
        parts = []
        if not_running:
            parts.append("not Running by the deadline: " + ", ".join(not_running))
        parts.extend(problems)
        raise OpFailed("; ".join(parts))
    return {"started_at": started_at, "elapsed_s": time.monotonic() - clock, "services": services}


def iisreset(host: LabHost, params: dict[str, str]) -> dict:
    exe = _combine(SYSTEM32, "iisreset.exe")
    if not any(s.name.lower() == "w3svc" for s in host.services()):
        raise OpFailed(f"iisreset.exe not found at {exe} - is IIS installed?")
    code, output = host.iisreset()
    return {"exit_code": code, "output": _console_text(output)}


def reboot(host: LabHost, params: dict[str, str]) -> dict:
    delay = _int(params.get("DelayS", ""), "DelayS") if params.get("DelayS") else 5
    now = host.now_local()
    host.reboot(delay_s=float(delay))
    return {"scheduled": True, "now": now}


def set_registry(host: LabHost, params: dict[str, str]) -> dict:
    key = params.get("Key", "")
    name = params.get("Name", "")
    kind = params.get("Type", "")
    value = params.get("Value", "")
    if not key.startswith("HKLM:\\"):
        raise OpFailed(f"only HKLM:\\ keys are supported, not '{key}'", 2)
    previous = _reg(host, key, name)
    data: int | str
    if kind.lower() == "dword":
        hex_match = re.match(r"^0[xX]([0-9A-Fa-f]{1,8})$", value)
        if hex_match:
            data = int(hex_match.group(1), 16)
        elif re.match(r"^\d{1,10}$", value):
            data = int(value)
        else:
            raise OpFailed(f"'{value}' is not a DWORD (decimal or 0x hex)", 2)
        if data > 0xFFFFFFFF:
            raise OpFailed(f"'{value}' does not fit in a DWORD", 2)
        host.reg_set(key, name, data, "DWord")
    elif kind.lower() == "string":
        host.reg_set(key, name, value, "String")
    else:
        raise OpFailed(f"unsupported registry type '{kind}' (DWord or String)", 2)
    return {"key": key, "name": name, "previous": previous, "value": _reg(host, key, name)}


def data_service_log(host: LabHost, params: dict[str, str]) -> dict:
    return _data_service_mode(host, params.get("InstallDir", ""), params.get("Since", ""))


MODELS: dict[str, Model] = {
    "facts": facts,
    "file_info": file_info,
    "put_file": put_file,
    "get_file": get_file,
    "tlstool": tlstool,
    "restart_services": restart_services,
    "iisreset": iisreset,
    "reboot": reboot,
    "set_registry": set_registry,
    "data_service_log": data_service_log,
}
