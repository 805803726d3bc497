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
import contextlib
import fnmatch
import ntpath
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.lab.faults import RESTART_MUTEX
from tealeaf_fleet.lab.hosterror import AccessDenied, HostError
from tealeaf_fleet.lab.registry import (
    FIPS_KEY,
    NDP_KEY,
    SCHANNEL_KEY,
    SECURITY_KEY,
    TEALEAF_KEY,
    TLS12_CLIENT_KEY,
    TLS12_SERVER_KEY,
)
from tealeaf_fleet.lab.runner import OpFailed
from tealeaf_fleet.lab.tlstool import SECURITY_DIR
from tealeaf_fleet.ops import protocol
from tealeaf_fleet.secrets import MASK

if TYPE_CHECKING:
    from tealeaf_fleet.lab.host import LabHost

DOTNET = r"HKLM:\SOFTWARE\Microsoft\.NETFramework"
DOTNET_WOW6432 = r"HKLM:\SOFTWARE\Wow6432Node\Microsoft\.NETFramework"
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
    if not right:
        return left
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


SYSTEM_CORE_SHA256 = "SHA256CryptoServiceProvider"


def _new_sha256(host: LabHost) -> tuple[str, Any]:
    """New-FleetSha256: (class name, hasher). The CAPI class when System.Core loads, else
    whatever [SHA256]::Create() gives; the host says whether its constructor works (FIPS)."""
    name = SYSTEM_CORE_SHA256 if host.load_assembly("System.Core") else host.sha256_create_class()
    return name, host.create_hash(name)


def _sha256(host: LabHost, data: bytes) -> str:
    """Get-FleetHash / Get-FleetSha256: lowercase hex SHA-256 with the host's hash class."""
    _, hasher = _new_sha256(host)
    hasher.update(data)
    return hasher.hexdigest()


def _file_summary(host: LabHost, path: str) -> dict[str, Any] | None:
    if not _file_exists(host, path):
        return None
    data = host.read_file(path)
    return {"size": len(data), "sha256": _sha256(host, data)}


def _dword(value: Any) -> Any:
    """Get-ItemProperty returns a DWORD as a signed Int32."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0x7FFFFFFF:
        return value - 0x100000000
    return value


def _reg(host: LabHost, key: str, name: str) -> Any:
    return _dword(host.reg_get(key, name))


# [int]::TryParse with NumberStyles.Integer: white space around, one sign, ASCII digits.
_INT_TEXT = re.compile(r"^[\t\n\v\f\r ]*[+-]?[0-9]+[\t\n\v\f\r ]*$")


def _reg_number(host: LabHost, key: str, name: str) -> Any:
    """Get-FleetRegistryNumber: int, None when absent, or {text, kind} when not a number."""
    value = _reg(host, key, name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    text = str(value)
    if isinstance(value, str) and _INT_TEXT.match(text):
        number = int(text.strip("\t\n\v\f\r "))
        if -(2**31) <= number < 2**31:
            return number
    return {"text": text, "kind": host.reg_kind(key, name)}


DATA_SERVICE_LOG_LIMIT = 31  # $FleetDataServiceLogLimit
DATA_SERVICE_LOG_BUDGET = 64 * 1024 * 1024  # $FleetDataServiceLogBudget


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
        spent = 0
        for i, log in enumerate(walked):
            spent += host.file_size(log) or 0
            if i > 0 and spent > (host.file_size(logs[0]) or 0) + DATA_SERVICE_LOG_BUDGET:
                break
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
            current = {
                "mode": None,
                "port": None,
                "started_at": start.group(1),
                "log": log,
                "line": None,
            }
            blocks.append(current)
            continue
        port = PORT_RE.search(line)
        if current is not None and current["mode"] is None and port:
            current["mode"] = "tls" if port.group(1) else "plain"
            current["port"] = int(port.group(2))
            current["line"] = line
    return blocks


def _argument(text: str) -> str:
    """ConvertTo-FleetArgument: quoted when empty or holding a space, tab, newline, vertical
    tab or double quote; backslashes doubled before a quote (plus one for an embedded quote)."""
    if text and not re.search(r'[ \t\n\v"]', text):
        return text
    out = ['"']
    slashes = 0
    for ch in text:
        if ch == "\\":
            slashes += 1
            continue
        if ch == '"':
            out.append("\\" * (2 * slashes + 1))
        elif slashes:
            out.append("\\" * slashes)
        slashes = 0
        out.append(ch)
    out.append("\\" * (2 * slashes) + '"')
    return "".join(out)


def _invoke_native(
    host: LabHost, exe: str, args: list[str], cwd: str, timeout_s: int
) -> dict[str, Any]:
    """Invoke-FleetNative: {exit_code (None: never started), output}; past the deadline the
    process tree is killed and the op stops."""
    try:
        process = host.start_native(exe, " ".join(_argument(a) for a in args), cwd=cwd)
    except HostError as exc:
        return {"exit_code": None, "output": str(exc)}
    if not process.wait(timeout_s):
        process.kill_tree()
        raise OpFailed(
            f"{ntpath.basename(exe)} did not finish within {timeout_s} s (waiting for input?): "
            "it was killed with the processes it started"
        )
    return {"exit_code": process.exit_code, "output": process.output}


def _timeout(params: dict[str, str], default: int) -> int:
    """`$timeout = DEFAULT; if ($TimeoutS) { $timeout = [int]$TimeoutS }`."""
    text = params.get("TimeoutS", "")
    return _int(text, "TimeoutS") if text else default


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
    try:
        sha256: str | None = _sha256(host, der)
    except HostError:
        sha256 = None
    info: dict[str, Any] = {
        "cert_sha256": sha256,
        "cert_subject": None,
        "cert_not_after": None,
        "cert_not_after_utc": None,
    }
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return info
    info["cert_subject"] = ", ".join(rdn.rfc4514_string() for rdn in reversed(cert.subject.rdns))
    info["cert_not_after"] = cert.not_valid_after_utc.astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    info["cert_not_after_utc"] = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S")
    return info


def _service_state(wmi_state: str) -> str:
    """Get-ServiceState in facts.ps1: Win32_Service's "Start Pending" -> "StartPending"."""
    return wmi_state.replace(" ", "")


def _file_build(host: LabHost, services: list[dict[str, Any]]) -> str | None:
    """Get-FileBuild in facts.ps1: the first TeaLeaf service exe's FileVersion."""
    for service in services:
        exe = _exe_path(service["path"])
        if not exe or not _file_exists(host, exe):
            continue
        version = host.file_version(exe)
        if version:
            return re.sub(r"\s*,\s*", ".", version).strip()
    return None


def _build(host: LabHost, services: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(build, source): registry `Version`, else a service executable's file version."""
    value = _reg(host, TEALEAF_KEY, "Version")
    if value is not None and str(value):
        return str(value), "registry"
    build = _file_build(host, services)
    return build, ("file_version" if build else None)


def _security(host: LabHost) -> dict[str, Any]:
    """The security folder: per-file summaries (an unreadable file carries its error) and the
    certificate of tealeaf.crt."""
    files: dict[str, Any] = {}
    for name in ("tealeaf.crt", "tealeaf.p12", "server.tls.xml"):
        try:
            files[name] = _file_summary(host, _combine(SECURITY_DIR, name))
        except HostError as exc:
            files[name] = {"error": str(exc)}
    security: dict[str, Any] = {
        "dir": SECURITY_DIR,
        "files": files,
        "cert_sha256": None,
        "cert_subject": None,
        "cert_not_after": None,
        "cert_not_after_utc": None,
    }
    crt = _combine(SECURITY_DIR, "tealeaf.crt")
    if _file_exists(host, crt):
        with contextlib.suppress(HostError):  # files["tealeaf.crt"] carries the error
            security.update(_certificate(host, crt))
    return security


def _fips(host: LabHost) -> dict[str, Any]:
    """The FIPS policy value and the SHA-256 class the host hashes with."""
    value = _reg_number(host, FIPS_KEY, "Enabled")
    fips: dict[str, Any] = {
        "policy_enabled": value != 0 if isinstance(value, int) else None,
        "hash_provider": None,
        "hash_error": None,
    }
    try:
        fips["hash_provider"] = _new_sha256(host)[0]
    except HostError as exc:
        fips["hash_error"] = str(exc)
    return fips


def facts(host: LabHost, params: dict[str, str]) -> dict:
    install_dir = params.get("InstallDir", "")
    since = params.get("Since", "")
    services: list[dict[str, Any]] = []
    discovered = None
    iis: dict[str, Any] = {"present": False, "state": None}
    for svc in sorted(host.services(), key=lambda s: s.name.lower()):
        if svc.name.lower() == "w3svc":
            iis = {"present": True, "state": _service_state(svc.state)}
        if fnmatch.fnmatch(svc.name.lower(), "tealeaf*") or fnmatch.fnmatch(
            svc.display_name.lower(), "tealeaf*"
        ):
            services.append(
                {
                    "name": svc.name,
                    "display_name": svc.display_name,
                    "state": _service_state(svc.state),
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
    build, build_source = _build(host, services)
    security = _security(host)
    computer = host.reg_get(
        r"HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName", "ComputerName"
    )
    wow64 = _powershell_32bit(host)

    def native(key: str, name: str) -> Any:
        """A 64-bit-view value; unreadable (None) from a 32-bit PowerShell (WOW64)."""
        return None if wow64 else _reg_number(host, key, name)

    return {
        "hostname": str(computer or host.name.upper()),
        "now": host.now_local(),
        "utc_now": host.now_utc().strftime("%Y-%m-%dT%H:%M:%S"),
        "os": {"version": host.os_version, "caption": host.os_caption},
        "ps_version": host.ps_version,
        "install_dir": install_dir or None,
        "install_dir_source": source,
        "tools": tools,
        "tealeaf_build": build,
        "tealeaf_build_source": build_source,
        "enable_tls": _reg_number(host, TEALEAF_KEY, "EnableTLS"),
        # GetValueNames() -contains: presence by name, as facts.ps1 reads it, never the value.
        "tls_cert_password_present": any(
            n.lower() == "tlscertpassword" for n in host.registry.value_names(SECURITY_KEY)
        ),
        "security": security,
        "services": services,
        "iis": iis,
        "data_service": _data_service_mode(host, install_dir or "", since),
        "schannel": {
            "tls12_server_enabled": _reg_number(host, TLS12_SERVER_KEY, "Enabled"),
            "tls12_server_disabled_by_default": _reg_number(
                host, TLS12_SERVER_KEY, "DisabledByDefault"
            ),
            "tls12_client_enabled": _reg_number(host, TLS12_CLIENT_KEY, "Enabled"),
            "tls12_client_disabled_by_default": _reg_number(
                host, TLS12_CLIENT_KEY, "DisabledByDefault"
            ),
            "send_trusted_issuer_list": _reg_number(host, SCHANNEL_KEY, "SendTrustedIssuerList"),
        },
        "dotnet": {
            "v2_strong_crypto": native(DOTNET + r"\v2.0.50727", "SchUseStrongCrypto"),
            "v4_strong_crypto": native(DOTNET + r"\v4.0.30319", "SchUseStrongCrypto"),
            "v2_system_default_tls": native(DOTNET + r"\v2.0.50727", "SystemDefaultTlsVersions"),
            "v4_system_default_tls": native(DOTNET + r"\v4.0.30319", "SystemDefaultTlsVersions"),
            **_dotnet_wow6432(host),
        },
        "winhttp": {
            "native": native("HKLM:\\SOFTWARE\\" + WINHTTP, "DefaultSecureProtocols"),
            "wow6432": _reg_number(
                host, "HKLM:\\SOFTWARE\\Wow6432Node\\" + WINHTTP, "DefaultSecureProtocols"
            ),
        },
        "fips": _fips(host),
        "wow64_process": wow64,
        "boot": {
            "last_boot": host.last_boot().astimezone().strftime("%Y-%m-%dT%H:%M:%S"),
            "last_boot_utc": host.last_boot().strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "pending_reboot": _check_pending_reboot(host),
        "port_23443_files": (
            None
            if params.get("PortSearch") == "0"
            else port_mentions(host, install_dir or None, "23443")
        ),
    }


# facts.ps1's $FleetConfigExtensions: the configuration files searched for a port.
CONFIG_EXTENSIONS = (".config", ".xml", ".ini", ".cfg", ".properties", ".json", ".tlcfg")


def port_mentions(host: LabHost, root: str | None, port: str) -> list[str]:
    """Find-FleetPortMentions: configuration files under `root` (Logs left out) whose text
    holds `port` as a whole number; same bounds as the script (4000 files, 1 MiB, 20 named,
    500 folders and 20000 entries listed; the lab has no reparse points to skip)."""
    found: list[str] = []
    if not root or not host.is_dir(root):
        return found
    pattern = re.compile(rf"(?<![0-9]){port}(?![0-9])")
    folders, looked, listed, entries = [root], 0, 0, 0
    while folders and looked < 4000 and len(found) < 20 and listed < 500 and entries < 20000:
        folder = folders.pop(0)
        listed += 1
        try:
            names = host.listdir(folder)
        except HostError:
            continue
        entries += len(names)
        paths = [f"{folder}\\{name}" for name in names]
        folders.extend(p for p in paths if host.is_dir(p) and ntpath.basename(p) != "Logs")
        for path in (p for p in paths if not host.is_dir(p)):
            if ntpath.splitext(path)[1].lower() not in CONFIG_EXTENSIONS:
                continue
            looked += 1
            try:
                if (host.file_size(path) or 0) > 1048576:
                    continue
                text = host.read_file(path).decode("utf-8", "replace")
            except HostError:
                continue
            if pattern.search(text):
                found.append(path)
            if len(found) >= 20:
                break
    return found


def _dotnet_wow6432(host: LabHost) -> dict[str, Any]:
    """The .NET strong-crypto values in the 32-bit view (Tealeaf is a 32-bit program)."""
    out = {}
    for ver, folder in (("v2", "v2.0.50727"), ("v4", "v4.0.30319")):
        key = DOTNET_WOW6432 + "\\" + folder
        out[f"wow6432_{ver}_strong_crypto"] = _reg_number(host, key, "SchUseStrongCrypto")
        out[f"wow6432_{ver}_system_default_tls"] = _reg_number(
            host, key, "SystemDefaultTlsVersions"
        )
    return out


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
        if _dir_exists(host, path):
            raise OpFailed(f"cannot upload to {path} because it is a folder")
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
    actual = _sha256(host, host.read_file(part_path))
    expected = params.get("Sha256", "")
    if actual != expected.lower():
        host.delete_file(part_path)
        raise OpFailed(
            f"SHA-256 mismatch for {path} after upload: expected {expected}, got {actual}"
        )
    if _file_exists(host, path):
        _swap_in(host, part_path, path)
    else:
        host.move_file(part_path, path)
    return {
        "path": path,
        "part": index,
        "complete": True,
        "size": host.file_size(path),
        "sha256": actual,
    }


def _swap_in(host: LabHost, part_path: str, path: str) -> None:
    """put_file.ps1's swap: clear PATH's ReadOnly attribute, File.Replace (never delete, then
    move); when the replace fails with PATH gone, finish with a move."""
    try:
        if host.is_read_only(path):
            host.set_read_only(path, False)
        host.replace_file(part_path, path)
    except HostError as exc:
        if _file_exists(host, path):
            host.delete_file(part_path)
            raise OpFailed(f"cannot replace {path} with the uploaded file: {exc}") from None
        host.move_file(part_path, path)


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
        "sha256": _sha256(host, data),
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
    if re.search(r'[\s"&|<>^%!]', password):
        raise OpFailed(
            "the password has a space, a double quote or a character cmd.exe interprets "
            "(& | < > ^ % !), which TLSTool.exe cannot pass on: re-export the PFX with another "
            "password (letters and digits are always safe)",
            2,
        )
    timeout = _timeout(params, 240)
    if verb.lower() in ("create", "import") and (not pfx or not password):
        raise OpFailed(f"TLSTool {verb} needs a PFX path and a password", 2)
    name = ""
    if pfx:
        prefix = tools.replace("/", "\\").rstrip("\\") + "\\"
        given = pfx.replace("/", "\\")
        if given.lower().startswith(prefix.lower()):
            name = given[len(prefix) :]
        if not name or "\\" in name:
            raise OpFailed(
                f"the PFX must be in {tools} (TLSTool.exe gets it by file name), not at {pfx}", 2
            )
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise OpFailed(
                f"the PFX file name '{name}' may hold only letters, digits, '.', '-' and "
                "'_': TLSTool.exe hands it to openssl.exe unquoted",
                2,
            )
    if verb.lower() == "create":
        args = ["create", "-site", name, password]
    elif verb.lower() == "import":
        args = ["import", name, password]
    elif verb.lower() in ("enable", "disable"):
        args = [verb]
    else:
        raise OpFailed(f"unknown TLSTool verb '{verb}'", 2)
    run = _invoke_native(host, exe, args, tools, timeout)
    text = run["output"]
    if password:
        text = text.replace(password, MASK)
    if run["exit_code"] is None:
        raise OpFailed("TLSTool.exe did not run: " + text)
    return {"verb": verb, "exit_code": run["exit_code"], "output": text}


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


def _wait_state(
    host: LabHost, names: list[str], state: str, deadline: float, failed: str = ""
) -> list[str]:
    """Wait-Status: the names not in `state` by the deadline (polled like the script); a name
    found in `failed` ends the wait for it at once."""
    while True:
        states = {n: host.service(n).state for n in names}
        late = [n for n in names if states[n] != state]
        if all(states[n] == failed for n in late) or time.monotonic() >= deadline:
            return late
        time.sleep(0.05)


def _wave(host: LabHost, pending: list[str], dependents: bool) -> list[str]:
    """Get-Wave: pending services none of whose related (pending) services is pending."""
    infos = {s.name.lower(): s for s in host.service_controllers()}
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


def _stopped_dependencies(host: LabHost, name: str, named: set[str]) -> list[str]:
    """Get-StoppedDependencies: the stopped services not named that starting `name` would make
    the service manager start (walking down through stopped dependencies)."""
    found: list[str] = []
    seen: set[str] = set()
    queue = list(host.service(name).depends_on)
    while queue:
        dependency = host.service(queue.pop(0))
        if dependency.name.lower() in seen:
            continue
        seen.add(dependency.name.lower())
        if dependency.state != "Stopped":
            continue
        if dependency.name.lower() not in named:
            found.append(dependency.name)
        queue.extend(dependency.depends_on)
    return found


RESTART_CONTENTION = "another restart of TeaLeaf services is still running on this host"


def restart_services(host: LabHost, params: dict[str, str]) -> dict:
    try:
        timeout_s = float(params.get("TimeoutS", "") or 0)
    except ValueError:
        raise OpFailed(
            f'Cannot convert value "{params.get("TimeoutS")}" to type "System.Double".'
        ) from None
    deadline = time.monotonic() + timeout_s
    clock = time.monotonic()
    try:
        lock = host.open_mutex(RESTART_MUTEX)  # one restart per host at a time
    except AccessDenied:
        raise OpFailed(
            f"{RESTART_CONTENTION} (another account holds its lock, {RESTART_MUTEX})"
        ) from None
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise OpFailed(RESTART_CONTENTION)
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
        infos = {s.name.lower(): s for s in host.service_controllers()}
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
        to_start, starting = [], []
        for name in wave:
            if host.service(name).state == "Stopped":
                unnamed = _stopped_dependencies(host, name, named)
                if unnamed:
                    problems.append(
                        f"{name} not started: it needs stopped service(s) not in the list: "
                        + ", ".join(unnamed)
                    )
                    continue
                to_start.append(name)
            starting.append(name)
        _run_parallel(to_start, host.start_service, deadline, problems, "start")
        _wait_state(host, starting, "Running", deadline, "Stopped")
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
    result: dict[str, Any] = {
        "started_at": started_at,
        "elapsed_s": time.monotonic() - clock,
        "services": services,
    }
    if params.get("IisResetS", ""):  # iisreset.exe after the services, as the op does
        run = iisreset(host, {"TimeoutS": params["IisResetS"]})
        if run["exit_code"] != 0:
            raise OpFailed(f"iisreset exited {run['exit_code']}: {run['output']}")
        result["iisreset"] = run
    install_dir = params.get("InstallDir", "")
    if install_dir:  # what the gates read first, in the same powershell.exe
        every = host.service_controllers()  # ServiceController spellings
        states = [
            {"name": s.name, "display_name": s.display_name, "state": s.state}
            for s in every
            if s.name.lower().startswith("tealeaf") or s.display_name.lower().startswith("tealeaf")
        ]
        w3svc = next((s for s in every if s.name == "W3SVC"), None)
        result["after"] = {
            "services": states,
            "iis": {"present": w3svc is not None, "state": w3svc.state if w3svc else None},
            "data_service": _data_service_mode(host, install_dir, started_at),
        }
    return result


def iisreset(host: LabHost, params: dict[str, str]) -> dict:
    timeout = _timeout(params, 240)
    exe = _combine(SYSTEM32, "iisreset.exe")
    if not _file_exists(host, exe):
        raise OpFailed(f"iisreset.exe not found at {exe} - is IIS installed?")
    run = _invoke_native(host, exe, [], SYSTEM32, timeout)
    if run["exit_code"] is None:
        raise OpFailed("iisreset.exe did not run: " + run["output"])
    return {"exit_code": run["exit_code"], "output": run["output"]}


def status_tool(host: LabHost, params: dict[str, str]) -> dict:
    timeout = _timeout(params, 120)
    text = params.get("OutputLimit", "")
    limit = _int(text, "OutputLimit") if text else 16000
    install_dir = params.get("InstallDir", "")
    found = None
    if install_dir:
        for sub in ("bin", "", "Tools"):
            candidate = _combine(_combine(install_dir, sub), "TealeafStatus.exe")
            if _file_exists(host, candidate):
                found = candidate
                break
    if found is None:
        return {"present": False, "path": None, "exit_code": None, "output": "", "cut": False}
    run = _invoke_native(host, found, ["-verbose"], ntpath.dirname(found), timeout)
    if run["exit_code"] is None:
        raise OpFailed("TealeafStatus.exe did not run: " + run["output"])
    output = str(run["output"])
    cut = len(output) > limit
    if cut:
        output = output[len(output) - limit :]
    return {
        "present": True,
        "path": found,
        "exit_code": run["exit_code"],
        "output": output,
        "cut": cut,
    }


SHUTDOWN_ARGS = [
    "/r",
    "/f",
    "/t",
    "",
    "/d",
    "p:4:1",
    "/c",
    "tealeaf-fleet: restart after a TLS change",
]


def reboot(host: LabHost, params: dict[str, str]) -> dict:
    delay = _int(params.get("DelayS", ""), "DelayS") if params.get("DelayS") else 5
    timeout = _timeout(params, 60)
    limit = max(1, timeout // 3)
    now = host.now_local()
    exe = _combine(SYSTEM32, "shutdown.exe")
    shutdown_args = list(SHUTDOWN_ARGS)
    shutdown_args[3] = str(delay)

    def invoke_shutdown(switches: list[str]) -> dict[str, Any]:
        run = _invoke_native(host, exe, switches, SYSTEM32, limit)
        if run["exit_code"] is None:
            raise OpFailed("shutdown.exe did not run: " + run["output"])
        run["scheduled_already"] = run["exit_code"] == 1190 or "(1190)" in run["output"]
        return run

    replaced = False
    note = None
    run = invoke_shutdown(shutdown_args)
    if run["scheduled_already"]:
        abort = invoke_shutdown(["/a"])
        run = invoke_shutdown(shutdown_args)
        if run["scheduled_already"]:
            note = (
                "a shutdown scheduled by someone else could not be aborted (shutdown.exe /a: "
                + abort["output"].strip()
                + "); the host restarts when that one is due"
            )
        elif abort["exit_code"] == 0:
            replaced = True
    if note is None and run["exit_code"] != 0:
        raise OpFailed(f"shutdown.exe failed with exit code {run['exit_code']}: " + run["output"])
    return {"scheduled": True, "now": now, "replaced_scheduled": replaced, "note": note}


def clear_ssl_cache(host: LabHost, params: dict[str, str]) -> dict:
    if params.get("Target", ""):
        raise OpFailed("only the whole cache can be emptied (Target must be empty)", 2)
    host.ssl_empty_cache()
    return {"cleared": True, "at": host.now_local()}


def set_registry(host: LabHost, params: dict[str, str]) -> dict:
    key = params.get("Key", "")
    name = params.get("Name", "")
    kind = params.get("Type", "")
    value = params.get("Value", "")
    if not key.startswith("HKLM:\\"):
        raise OpFailed(f"only HKLM:\\ keys are supported, not '{key}'", 2)
    # set_registry.ps1 refuses SOFTWARE keys in a 32-bit PowerShell on 64-bit Windows (WOW64
    # redirection: the write would land in Wow6432Node); fault `powershell_32bit`
    sub = key[len("HKLM:\\") :]
    native_view = sub.upper().startswith("SOFTWARE\\") and not re.match(
        r"(?i)^SOFTWARE\\Wow6432Node(\\|$)", sub
    )
    if native_view and _powershell_32bit(host):
        raise OpFailed(
            f"32-bit PowerShell on 64-bit Windows: '{key}' would be redirected to the WOW64 "
            "view; run the op from the 64-bit powershell.exe",
            1,
        )
    previous = None
    if params.get("CreateOnly") == "1":  # GetValueNames: presence by name, the value unread
        if any(n.lower() == name.lower() for n in host.registry.value_names(key)):
            raise OpFailed(f"'{key}\\{name}' exists already: left as it is (create only)", 1)
    else:
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
        stored = "DWord"
    elif kind.lower() == "string":
        data, stored = value, "String"
    else:
        raise OpFailed(f"unsupported registry type '{kind}' (DWord or String)", 2)
    host.check_registry_write(key)  # CreateSubKey: the key's ACL may refuse this account
    host.reg_set(key, name, data, stored)
    return {
        "key": key,
        "name": name,
        "previous": previous,
        "value": _reg(host, key, name),
        "kind": host.reg_kind(key, name),
    }


def data_service_log(host: LabHost, params: dict[str, str]) -> dict:
    return _data_service_mode(host, params.get("InstallDir", ""), params.get("Since", ""))


def _read_lines(host: LabHost, path: str) -> list[str]:
    """StreamReader.ReadLine over a whole file: only \\r\\n, \\n or \\r end a line
    (learn.microsoft.com/dotnet/api/system.io.streamreader.readline); no last empty line."""
    lines = LINE_END_RE.split(host.read_file(path).decode("utf-8", "replace"))
    return lines[:-1] if lines and lines[-1] == "" else lines


LINE_END_RE = re.compile(r"\r\n|\r|\n")
SUPPORT_BLOCK_LINES = 64  # $blockLineCap


class _SupportFile:
    """One log file's kept lines in support_logs.ps1: the recent lines (a queue trimmed from
    its oldest end while reading) and the startup blocks (their own list, whole oldest blocks
    dropped first), each line with its number so the two merge back in file order."""

    def __init__(self) -> None:
        self.recent: deque[tuple[int, str]] = deque()
        self.recent_bytes = 0
        self.blocks: list[list[tuple[int, str]]] = []
        self.block_bytes = 0

    def merged(self) -> list[str]:
        lines = [line for block in self.blocks for line in block] + list(self.recent)
        return [text for _, text in sorted(lines)]


def _support_data_service(
    host: LabHost, log_dir: str, cut_text: str, limit: int
) -> tuple[list[dict[str, Any]], bool, int]:
    """The Data Service part of support_logs.ps1: (files, cut, bytes kept)."""
    reserve = limit // 4
    recent_limit = limit - reserve
    files: list[dict[str, Any]] = []
    used = block_used = read = 0
    cut = have_block = False
    logs = _data_service_logs(host, log_dir)[:DATA_SERVICE_LOG_LIMIT]
    for i, log in enumerate(logs):
        older = host.last_write_time(log) < cut_text
        size = host.file_size(log) or 0
        if i > 0:
            if have_block and (cut or older):
                break
            if read + size > (host.file_size(logs[0]) or 0) + DATA_SERVICE_LOG_BUDGET:
                cut = cut or not older
                break
        read += size
        kept = _SupportFile()
        in_block = follow = False
        for n, line in enumerate(_read_lines(host, log), 1):
            if SUPPORT_START_RE.search(line):
                in_block = True
                kept.blocks.append([])
            if in_block:
                kept.blocks[-1].append((n, line))
                kept.block_bytes += len(line) + 1
                if SUPPORT_END_RE.search(line) or len(kept.blocks[-1]) >= SUPPORT_BLOCK_LINES:
                    in_block = False
                while block_used + kept.block_bytes > reserve and (
                    len(kept.blocks) > 1 or (have_block and kept.blocks)
                ):
                    dropped = kept.blocks.pop(0)
                    kept.block_bytes -= sum(len(t) + 1 for _, t in dropped)
                    in_block = in_block and bool(kept.blocks)
                    cut = True
                follow = False
                continue
            stamp = SUPPORT_STAMP_RE.match(line)
            if stamp:
                follow = stamp.group(1) >= cut_text
            if not follow:
                continue
            kept.recent.append((n, line))
            kept.recent_bytes += len(line) + 1
            while kept.recent and used + kept.recent_bytes > recent_limit:
                kept.recent_bytes -= len(kept.recent.popleft()[1]) + 1
                cut = True
        used += kept.recent_bytes
        block_used += kept.block_bytes
        have_block = have_block or bool(kept.blocks)
        lines = kept.merged()
        if lines:
            files.append({"path": log, "lines": lines})
    return files, cut, used + block_used


def support_logs(host: LabHost, params: dict[str, str]) -> dict:
    limit = _int(params["MaxBytes"], "MaxBytes") if params.get("MaxBytes") else 1048576
    max_events = _int(params["MaxEvents"], "MaxEvents") if params.get("MaxEvents") else 200
    since = params.get("Since", "")
    if since:
        if not TIME_RE.match(since):
            raise OpFailed("Since must look like yyyy-MM-ddTHH:mm:ss", 2)
        cut_text = since
    else:
        text = params.get("SinceMinutes", "")
        minutes = _int(text, "SinceMinutes") if text else 1440
        now = datetime.strptime(host.now_local(), "%Y-%m-%dT%H:%M:%S")  # (Get-Date), the host's
        cut_text = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")
    files: list[dict[str, Any]] = []
    cut, used = False, 0
    install_dir = params.get("InstallDir", "")
    log_dir = _combine(install_dir, "Logs") if install_dir else ""
    if log_dir and _dir_exists(host, log_dir):
        files, cut, used = _support_data_service(host, log_dir, cut_text, limit)
    entries: list[dict[str, Any]] = []
    events_cut = False
    for entry in reversed(host.application_events()):
        if entry["time"] < cut_text:
            break
        message = str(entry["message"])
        if "tealeaf" not in entry["source"].lower() and "tealeaf" not in message.lower():
            continue
        if len(entries) >= max_events:
            events_cut = True
            break
        entries.append({**entry, "message": message[:4000]})
    return {
        "since": cut_text,
        "now": host.now_local(),
        "data_service": {"files": files, "cut": cut, "bytes": used},
        "events": {"entries": entries, "cut": events_cut, "error": None},
    }


SUPPORT_START_RE = re.compile(r"Service\.Start\s+INFO\s+Starting HTTP Server", re.I)
SUPPORT_END_RE = re.compile(r"Service\.Start\s+INFO\s+HTTP Server Started", re.I)
SUPPORT_STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


# --------------------------------------------------------------------- check.ps1 ---

SESSION_MANAGER_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager"
CBS_REBOOT_PENDING_KEY = (
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending"
)
WU_REBOOT_REQUIRED_KEY = (
    r"HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired"
)
NDP_SUBKEYS = ("v2.0.50727", "v3.0", "v3.5", "v4\\Client", "v4\\Full")
NEWEST_LOGS = 20
# [IO.Directory]::GetFiles(dir, 'TLDataService*.log'): a three-letter extension in a pattern
# also matches longer extensions that start with it (learn.microsoft.com, Directory.GetFiles
# remarks), so 'TLDataService_1.log_old' is listed too.
CHECK_LOG_RE = re.compile(r"^tldataservice[^\\]*\.log[^.]*$", re.I)
# The WinRS shell's console code page is the one the client asked for at shell creation
# (WINRS_CODEPAGE); the lab's wire does not hand shell options to the host, and our transport
# always asks for 65001, so the lab answers that. Only a real host proves it (`fleet check`).
LAB_SHELL_CODEPAGE = 65001
# $PSVersionTable.CLRVersion: PowerShell 2.0 runs on CLR 2, 3.0 and later on CLR 4.
CLR_OF_PS = {"2": "2.0.50727.5420"}
CLR_4 = "4.0.30319.42000"


def _utc_text(moment: datetime) -> str:
    """ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'") of a UTC time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _check_shell(host: LabHost) -> dict[str, Any]:
    """Get-ShellFacts. The lab's one account is a local administrator (WinRM's default
    requirement) unless the fault `not_admin` makes it a member of Remote Management Users
    only; its hosts are 64-bit and run 64-bit powershell.exe (System32) unless the fault
    `powershell_32bit` gives the session the 32-bit one."""
    return {
        "host_name": "ConsoleHost",
        "output_codepage": LAB_SHELL_CODEPAGE,
        "input_codepage": LAB_SHELL_CODEPAGE,
        "process_bits": 32 if _powershell_32bit(host) else 64,
        "os_64bit": True,
        "account": host.username,
        "admin": not host.faults().get("not_admin"),
        "error": None,
    }


def _powershell_32bit(host: LabHost) -> bool:
    """Fault `powershell_32bit`: the WinRM session runs the 32-bit powershell.exe (SysWOW64,
    e.g. the Microsoft.PowerShell32 endpoint), whose HKLM\\SOFTWARE is the Wow6432Node view."""
    return bool(host.faults().get("powershell_32bit"))


def _check_dotnet(host: LabHost) -> list[dict[str, Any]]:
    """Get-DotNetSetup: the NDP keys that exist, in the script's order."""
    found = []
    for sub in NDP_SUBKEYS:
        key = f"{NDP_KEY}\\{sub}"
        if host.registry.key_exists(key):
            found.append(
                {
                    "key": sub,
                    "install": _reg(host, key, "Install"),
                    "version": _reg(host, key, "Version"),
                    "sp": _reg(host, key, "SP"),
                    "release": _reg(host, key, "Release"),
                }
            )
    return found


def _check_boot(host: LabHost) -> dict[str, Any]:
    boot = host.last_boot()
    return {
        "caption": host.os_caption,
        "version": host.os_version,
        "last_boot": boot.astimezone().strftime("%Y-%m-%dT%H:%M:%S"),
        "last_boot_utc": _utc_text(boot),
    }


def _check_pending_reboot(host: LabHost) -> dict[str, Any]:
    renames = host.reg_get(SESSION_MANAGER_KEY, "PendingFileRenameOperations")
    count = 0 if renames is None else (len(renames) if isinstance(renames, list) else 1)
    return {
        "cbs_reboot_pending": host.registry.key_exists(CBS_REBOOT_PENDING_KEY),
        "wu_reboot_required": host.registry.key_exists(WU_REBOOT_REQUIRED_KEY),
        "file_rename_entries": count,
    }


def _check_registry_names(host: LabHost) -> dict[str, Any]:
    """Get-TealeafRegistryNames: value and subkey names only, never a value."""
    names: dict[str, Any] = {"key": TEALEAF_KEY, "exists": False, "value_names": [], "subkeys": []}
    if host.registry.key_exists(TEALEAF_KEY):
        names["exists"] = True
        names["value_names"] = sorted(host.registry.value_names(TEALEAF_KEY), key=str.lower)
        names["subkeys"] = host.registry.subkey_names(TEALEAF_KEY)
    return names


def _check_tools(host: LabHost, folder: str | None) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for exe in ("TLSTool.exe", "openssl.exe"):
        entry: dict[str, Any] = {
            "path": None,
            "exists": False,
            "size": None,
            "file_version": None,
            "product_version": None,
        }
        if folder:
            path = _combine(folder, exe)
            entry["path"] = path
            if _file_exists(host, path):
                version = host.file_version(path)
                entry.update(
                    exists=True,
                    size=host.file_size(path),
                    file_version=version,
                    product_version=version,
                )
        tools[exe] = entry
    return tools


def _check_logs(host: LabHost, folder: str | None) -> dict[str, Any]:
    """Get-DataServiceLogs: newest first by LastWriteTime, at most NEWEST_LOGS of them."""
    logs: dict[str, Any] = {"dir": folder, "exists": False, "count": 0, "newest": []}
    if not folder or not _dir_exists(host, folder):
        return logs
    logs["exists"] = True
    files = [
        host.path(_combine(folder, name))
        for name in host.listdir(folder)
        if CHECK_LOG_RE.match(name) and _file_exists(host, _combine(folder, name))
    ]
    logs["count"] = len(files)
    newest = sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:NEWEST_LOGS]
    logs["newest"] = [
        {
            "name": p.name,
            "size": p.stat().st_size,
            "last_write": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(p.stat().st_mtime)),
        }
        for p in newest
    ]
    return logs


def _random_file_name() -> str:
    """[IO.Path]::GetRandomFileName(): eight random characters, a dot, three more."""
    alphabet = "abcdefghijklmnopqrstuvwxyz012345"
    pick = "".join(secrets.choice(alphabet) for _ in range(11))
    return f"{pick[:8]}.{pick[8:]}"


def _check_writable(host: LabHost, folder: str | None, text: str) -> dict[str, Any]:
    """Test-Writable: write, hash (as put_file does), delete; report what happened."""
    probe: dict[str, Any] = {
        "dir": folder,
        "path": None,
        "size": None,
        "written": False,
        "sha256": None,
        "hash_error": None,
        "error": None,
        "left_behind": False,
    }
    if not folder:
        probe["error"] = "no install folder"
        return probe
    path = _combine(folder, f"tealeaf-fleet-check-{_random_file_name()}.tmp")
    data = text.encode("utf-8")
    probe.update(path=path, size=len(data))
    try:
        host.write_file(path, data, make_parents=False)
        probe["written"] = True
    except HostError as exc:
        probe["error"] = str(exc)
    if probe["written"]:
        try:  # the script catches a hash failure (FIPS, no working class) into hash_error
            probe["sha256"] = _sha256(host, host.read_file(path))
        except HostError as exc:
            probe["hash_error"] = str(exc)
    if _file_exists(host, path):
        host.delete_file(path)
    probe["left_behind"] = _file_exists(host, path)
    return probe


def _check_mutex(host: LabHost, name: str) -> dict[str, Any]:
    """Test-RestartMutex: a named mutex exists while a restart op holds it: OpenExisting finds
    it then (created False), else it is created; another account's mutex is access denied."""
    try:
        lock = host.open_mutex(name)
    except HostError as exc:
        return {"name": name, "created": None, "error": str(exc)}
    return {"name": name, "created": not lock.locked(), "error": None}


def _check_disk(host: LabHost) -> dict[str, Any]:
    drive = "C:"
    free, total = host.disk_space(drive)
    return {"drive": drive, "free_bytes": free, "total_bytes": total, "error": None}


def check(host: LabHost, params: dict[str, str]) -> dict:
    sentinel = params.get("Sentinel", "")
    install_dir = params.get("InstallDir", "")
    tools_dir = log_dir = probe_dir = None
    if install_dir:
        tools_dir = _combine(install_dir, "Tools")
        log_dir = _combine(install_dir, "Logs")
        probe_dir = tools_dir if _dir_exists(host, tools_dir) else install_dir
    ps = host.ps_version
    result: dict[str, Any] = {
        "sentinel": sentinel,
        # the runner ran this model only because stdin carried check.ps1 byte for byte
        "script_chars": len(protocol.script_text("check")),
        "shell": _check_shell(host),
        "powershell": {
            "version": ps,
            "clr": CLR_OF_PS.get(ps.split(".")[0], CLR_4),
            # a Constrained Language host never gets this far: the bootstrap stops first
            "language_mode": "FullLanguage",
        },
        "dotnet": _check_dotnet(host),
        "fips_policy": _reg(host, FIPS_KEY, "Enabled"),
        "os": _check_boot(host),
        "pending_reboot": _check_pending_reboot(host),
        "registry": _check_registry_names(host),
        "tools": _check_tools(host, tools_dir),
        "logs": _check_logs(host, log_dir),
        "write_probe": _check_writable(host, probe_dir, sentinel),
        "mutex": _check_mutex(host, params.get("MutexName", "")),
        "disk": _check_disk(host),
    }
    result["utc_now"] = _utc_text(host.now_utc())
    return result


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
    "check": check,
    "status_tool": status_tool,
    "clear_ssl_cache": clear_ssl_cache,
    "support_logs": support_logs,
}
