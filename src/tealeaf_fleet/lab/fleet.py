"""`Lab`: a whole simulated Tealeaf fleet on 127.0.0.1, started from one call.

It picks free loopback ports for everything, makes the lab CA, one credentials file, the hosts
(lab/host.py) with their WinRM endpoints (lab/httpserver.py: https + basic with the lab CA, and
http + NTLM with message encryption), and writes, once everything answers, the files whose
shapes docs/architecture.md "Lab files (fixed shapes)" fixes: `lab.json` (last, so its presence
means "ready"), `inventory.yaml` (a complete, valid inventory: `fleet rollout
DIR/inventory.yaml --yes` needs no prompt and no environment variable), `events.jsonl` and
`hosts/NAME/...`.

PCA hosts are Linux appliances the tool never contacts: they appear in lab.json and the
inventory (role pca, an address) but get no host model and no endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.lab.events import EventLog, write_json_atomic
from tealeaf_fleet.lab.host import (
    DEFAULT_BUILD,
    DEFAULT_INSTALL_DIR,
    LOG_STYLES,
    OS_TABLE,
    HostConfig,
    LabHost,
)
from tealeaf_fleet.procutil import pid_alive

ROLE_ORDER = ("portal", "hbr", "canister", "report", "other", "pca", "rtv")
ROLE_PREFIX = {
    "portal": "portal",
    "hbr": "hbr",
    "canister": "can",
    "report": "rpt",
    "other": "oth",
    "pca": "pca",
    "rtv": "rtv",
}
DEFAULT_TOPOLOGY = {"portal": 1, "hbr": 2, "canister": 3, "pca": 1, "rtv": 1}
OS_CYCLE = ("2008r2", "2012r2", "2016", "2019")
USERNAME = "LAB\\fleet-admin"
PCA_BUILD = "3682-24"
MAX_HOSTS = 500
# What a previous lab in the same folder left behind (removed before a fresh start; nothing
# else in the folder is ever touched). TCXcert.pfx is not the lab's: a rollout made it, with
# the lab's PFX password, so that password file stays while the PFX is there (and still opens
# it: the new lab's rollout reuses the certificate).
_LAB_FILES = (
    "lab.json",
    "inventory.yaml",
    "events.jsonl",
    "winrm-password.txt",
    "pfx-password.txt",
)
_PFX = "TCXcert.pfx"
_LAB_DIRS = ("hosts", "ca")
# Written first into a folder a lab takes, removed once lab.json says the lab is ready: a start
# that never finished (killed, ports exhausted) still marks the folder as a lab's.
_STARTING = ".fleet-lab-starting"


def parse_topology(text: str) -> dict[str, int]:
    """`portal=1,hbr=2` -> {"portal": 1, "hbr": 2}; InputError naming the bad part."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, eq, count = part.partition("=")
        role = role.strip().lower()
        if not eq or role not in ROLE_PREFIX:
            raise InputError(
                f"bad topology entry '{part}': expected ROLE=N with ROLE one of "
                f"{', '.join(ROLE_ORDER)}",
                field="--topology",
            )
        try:
            n = int(count)
        except ValueError:
            raise InputError(
                f"bad count in '{part}': not a whole number", field="--topology"
            ) from None
        if n < 0:
            raise InputError(f"bad count in '{part}': negative", field="--topology")
        if n > MAX_HOSTS:
            raise InputError(f"bad count in '{part}': at most {MAX_HOSTS}", field="--topology")
        out[role] = n
    return out


def names_for(topology: dict[str, int]) -> list[tuple[str, str]]:
    """[(host name, role)] in role order: portal01, hbr01, hbr02, can01, ..., pca01, rtv01."""
    out = []
    for role in ROLE_ORDER:
        for i in range(1, topology.get(role, 0) + 1):
            out.append((f"{ROLE_PREFIX[role]}{i:02d}", role))
    return out


def hosts_from_inventory(path: Path) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Mirror a real inventory: [(name, role)] in its order, and per-host install folders
    (host's own or tealeaf.install_dir). Read as plain YAML: password files and CA bundles of
    the real estate need not exist on the rehearsal machine."""
    from tealeaf_fleet.inventory import _compose, read_yaml_text  # bounded, no YAML bombs

    doc = _compose(read_yaml_text(path, "inventory"), path)
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), dict) or not doc["hosts"]:
        raise InputError(
            "expected a mapping with a non-empty 'hosts' mapping", file=path, field="hosts"
        )
    default_dir = (
        (doc.get("tealeaf") or {}).get("install_dir")
        if isinstance(doc.get("tealeaf"), dict)
        else None
    )
    hosts, dirs = [], {}
    for name, entry in doc["hosts"].items():
        role = entry.get("role") if isinstance(entry, dict) else None
        if role not in ROLE_PREFIX:
            raise InputError(
                f"unknown or missing role {role!r}", file=path, field=f"hosts.{name}.role"
            )
        hosts.append((str(name), role))
        folder = entry.get("install_dir") or default_dir
        if isinstance(folder, str) and folder:
            dirs[str(name)] = folder
    return hosts, dirs


def previous_lab(folder: Path) -> dict[str, Any] | None:
    """The lab.json in `folder` when it is one a lab wrote (an object with a pid and hosts),
    else None. Read bounded: a FIFO or a huge file named lab.json is no lab."""
    from tealeaf_fleet.safeio import read_regular_file

    path = folder / "lab.json"
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_regular_file(path, 16 * 1024 * 1024, "lab.json"))
    except (InputError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("hosts"), dict) and "pid" in data:
        return data
    return None


def _remove_entry(path: Path) -> None:
    """Remove one of the lab's own files or folders; a symlink is removed, never followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Lab:
    """A running simulated fleet. Use `Lab.start(...)` (a context manager) and `.stop()`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.hosts: dict[str, LabHost] = {}
        self.roles: dict[str, str] = {}
        self.servers: dict[str, dict[str, Any]] = {}
        self.events: EventLog | None = None
        self.ca_file = directory / "ca" / "ca.pem"
        self.password_file = directory / "winrm-password.txt"
        self.pfx_password_file = directory / "pfx-password.txt"
        self.inventory = directory / "inventory.yaml"
        self.lab_json = directory / "lab.json"
        self.username = USERNAME
        self._stopped = False

    # ---------------------------------------------------------------------------- start
    @classmethod
    def start(
        cls,
        directory: str | Path,
        *,
        topology: dict[str, int] | None = None,
        from_inventory: str | Path | None = None,
        install_dir: str | None = None,
        latency_ms: int = 0,
        ps_startup_ms: int = 0,
        restart_s: float = 2.0,
        os: str | dict[str, str] = "mixed",
        ntlm: bool = True,
        build: str | dict[str, str] | None = None,
        faults: dict[str, dict[str, Any]] | None = None,
        reboot_s: float | None = None,
        http_inventory: bool = False,
        log_style: str | dict[str, str] = "dated",
    ) -> Lab:
        """Create and start a lab in `directory` (made if missing; a previous stopped lab's
        files there are replaced; a running one, or a non-empty folder that holds no lab, is
        refused: see `_prepare_dir`).

        `os`: one of 2008r2|2012r2|2016|2019|mixed for all, or {host: os} (others: the
        "*" entry, else mixed). `build`: Tealeaf build for all, or {host: build} (others: "*",
        else 9.0.2.1351); None: 9.0.2.1351 everywhere. `faults`: {host: faults.json content}
        in force from the first moment (e.g. data_service_23443 in the first startup block).
        `ntlm`: also serve http + NTLM endpoints; `http_inventory`: the inventory then uses
        them instead of https + basic. `log_style`: how the Data Service names its log, dated
        (TLDataService_<yyyymmdd>.log) or live (TLDataService.log, older days dated), for all
        or {host: style} (others: "*", else dated).
        """
        lab = cls(Path(directory).resolve())
        try:
            lab._start(
                topology=topology,
                from_inventory=from_inventory,
                install_dir=install_dir,
                latency_ms=latency_ms,
                ps_startup_ms=ps_startup_ms,
                restart_s=restart_s,
                os_choice=os,
                ntlm=ntlm,
                build=build,
                faults=faults or {},
                reboot_s=reboot_s,
                http_inventory=http_inventory,
                log_style=log_style,
            )
        except BaseException:
            lab.stop()
            raise
        return lab

    def _prepare_dir(self) -> None:
        """Make the folder the lab's: a missing or empty folder, or one holding a previous lab
        (its lab.json, or a start that never finished), whose files are replaced. Any other
        folder is refused (exit 2): `--dir ~/estate` must never cost the inventory, PFX and
        CA folder there. A running lab is refused too."""
        if os.path.lexists(self.dir) and not self.dir.is_dir():
            raise InputError(f"{self.dir} exists and is not a folder", field="--dir")
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            entries = sorted(child.name for child in self.dir.iterdir())
        except OSError as exc:
            raise InputError(f"cannot use {self.dir}: {exc.strerror}", field="--dir") from None
        previous = previous_lab(self.dir)
        if entries and previous is None and _STARTING not in entries:
            shown = ", ".join(entries[:5]) + (
                f" and {len(entries) - 5} more" if len(entries) > 5 else ""
            )
            raise InputError(
                f"{self.dir} is not empty and holds no lab (found {shown})",
                field="--dir",
                hint="give an empty or new folder, or the folder of a previous lab",
            )
        pid = (previous or {}).get("pid")
        if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
            raise InputError(
                f"a lab is already running in {self.dir} (pid {pid})",
                field="--dir",
                hint="stop it first, or use another --dir",
            )
        try:
            (self.dir / _STARTING).touch()
            keep = {self.pfx_password_file.name} if os.path.lexists(self.dir / _PFX) else set()
            for name in (*_LAB_FILES, *_LAB_DIRS):
                if name not in keep:
                    _remove_entry(self.dir / name)
        except OSError as exc:
            raise InputError(f"cannot use {self.dir}: {exc.strerror}", field="--dir") from None

    def _start(
        self,
        *,
        topology,
        from_inventory,
        install_dir,
        latency_ms,
        ps_startup_ms,
        restart_s,
        os_choice,
        ntlm,
        build,
        faults,
        reboot_s,
        http_inventory,
        log_style,
    ) -> None:
        from tealeaf_fleet.certs import write_private_file
        from tealeaf_fleet.lab import ntlm_users, tlsca
        from tealeaf_fleet.lab.dataservice import free_port
        from tealeaf_fleet.lab.httpserver import WinRMServer

        if restart_s < 0 or latency_ms < 0 or ps_startup_ms < 0:
            raise InputError("timings must not be negative")
        dirs: dict[str, str] = {}
        if from_inventory is not None:
            plan, dirs = hosts_from_inventory(Path(from_inventory))
        else:
            plan = names_for(DEFAULT_TOPOLOGY if topology is None else topology)
        if not plan:
            raise InputError("the topology has no hosts", field="--topology")
        if len(plan) > MAX_HOSTS:
            raise InputError(f"at most {MAX_HOSTS} hosts", field="--topology")
        os_map = dict(os_choice) if isinstance(os_choice, dict) else {}
        default_os = os_choice if isinstance(os_choice, str) else os_map.pop("*", "mixed")
        build_map = dict(build) if isinstance(build, dict) else {}
        default_build = build if isinstance(build, str) else build_map.pop("*", DEFAULT_BUILD)
        style_map = dict(log_style) if isinstance(log_style, dict) else {}
        default_style = log_style if isinstance(log_style, str) else style_map.pop("*", "dated")
        unknown = sorted((set(os_map) | set(build_map) | set(style_map)) - {n for n, _ in plan})
        if unknown:
            raise InputError(
                f"no host named {', '.join(unknown)} in this lab",
                field="--os/--build/--log-style",
            )
        for style in [default_style, *style_map.values()]:
            if style not in LOG_STYLES:
                raise InputError(
                    f"unknown log style '{style}': expected one of {', '.join(LOG_STYLES)}",
                    field="--log-style",
                )
        for value in [default_os, *os_map.values()]:
            if value != "mixed" and value not in OS_TABLE:
                raise InputError(
                    f"unknown OS '{value}': expected one of {', '.join(OS_TABLE)} or mixed",
                    field="--os",
                )
        self._prepare_dir()
        (self.dir / "hosts").mkdir(mode=0o700)  # private keys below: 0600 files, 0700 folders
        (self.dir / "ca").mkdir(mode=0o700)
        ca = tlsca.LabCA.create(self.dir / "ca")
        winrm_password = secrets.token_urlsafe(18)
        write_private_file(self.password_file, f"{winrm_password}\n".encode(), force=True)
        if not self.pfx_password_file.is_file():  # kept for a rollout's TCXcert.pfx
            pfx_password = secrets.token_urlsafe(15)
            write_private_file(self.pfx_password_file, f"{pfx_password}\n".encode(), force=True)
        if ntlm:
            ntlm_users.register(self.username, winrm_password)
        self.events = EventLog(self.dir / "events.jsonl")
        windows_index = 0
        for name, role in plan:
            self.roles[name] = role
            if role == "pca":
                continue
            chosen = os_map.get(name, default_os)
            if chosen == "mixed":
                chosen = OS_CYCLE[windows_index % len(OS_CYCLE)]
            windows_index += 1
            host_build = build_map.get(name, default_build)
            config = HostConfig(
                name=name,
                role=role,
                os=chosen,
                build=host_build,
                install_dir=install_dir or dirs.get(name) or DEFAULT_INSTALL_DIR,
                data_service_port=0 if role == "rtv" else free_port(),
                tms_port=0 if role == "rtv" else free_port(),
                search_port=free_port() if role == "canister" else 0,
                log_style=style_map.get(name, default_style),
            )
            host = LabHost(
                self.dir / "hosts" / name,
                config,
                events=self.events,
                username=self.username,
                password_file=self.password_file,
                restart_s=restart_s,
                ps_startup_ms=ps_startup_ms,
                reboot_s=reboot_s,
            )
            host.create(faults.get(name))
            host.start()
            self.hosts[name] = host
            https = WinRMServer(
                host, scheme="https", ssl_context=ca.server_context(name), latency_ms=latency_ms
            ).start()
            entry: dict[str, Any] = {"https": https}
            if ntlm:
                entry["http"] = WinRMServer(host, scheme="http", latency_ms=latency_ms).start()
            self.servers[name] = entry
        self._write_inventory(http_inventory and ntlm)
        self._write_lab_json(
            restart_s=restart_s,
            latency_ms=latency_ms,
            ps_startup_ms=ps_startup_ms,
            log_style=default_style,
        )
        (self.dir / _STARTING).unlink(missing_ok=True)
        for host in self.hosts.values():
            host.record("lab", state="ready")

    # ----------------------------------------------------------------------- files
    def url(self, name: str, scheme: str = "https") -> str | None:
        """The host's WinRM endpoint URL for `scheme`, None when it has none."""
        server = self.servers.get(name, {}).get(scheme)
        return server.url if server is not None else None

    def _write_lab_json(self, **settings: Any) -> None:
        hosts: dict[str, Any] = {}
        for name, role in self.roles.items():
            host = self.hosts.get(name)
            hosts[name] = {
                "role": role,
                "https": self.url(name, "https"),
                "http": self.url(name, "http"),
                "data_service_port": host.data_service_port or None if host else None,
                "tms_port": host.tms_port or None if host else None,
                "search_port": host.search_port or None if host else None,
                "dir": f"hosts/{name}" if host else None,
            }
            if host:
                hosts[name].update(
                    os=host.config.os,
                    build=host.config.build,
                    install_dir=host.install_dir,
                    log_style=host.config.log_style,
                )
        data = {
            "pid": os.getpid(),
            "ca_file": "ca/ca.pem",
            "username": self.username,
            "password_file": self.password_file.name,
            "pfx_password_file": self.pfx_password_file.name,
            "inventory": self.inventory.name,
            "events": "events.jsonl",
            "started": time.time(),
            **settings,
            "hosts": hosts,
        }
        write_json_atomic(self.lab_json, data)

    def _write_inventory(self, http: bool) -> None:
        lines = [
            "# Written by `fleet lab up`: a complete inventory for this simulated fleet.",
            "winrm:",
            f"  scheme: {'http' if http else 'https'}",
            f"  transport: {'ntlm' if http else 'basic'}",
            f"  username: {_yaml_str(self.username)}",
            f"  password_file: {self.password_file.name}",
        ]
        if not http:
            lines.append("  ca_bundle: ca/ca.pem")
        lines += [
            "certificate:",
            "  source: generate",
            f"  path: {_PFX}",
            f"  password_file: {self.pfx_password_file.name}",
            "rollout:",
            "  restart: services",
            "  health_timeout_s: 60",
            "  soak_s: 1",
            "  verify_handshake: true",
            "hosts:",
        ]
        for name, role in self.roles.items():
            host = self.hosts.get(name)
            if host is None:
                lines.append(
                    f"  {name}: {{address: 127.0.0.1, role: {role}, "
                    f"pca_build: {_yaml_str(PCA_BUILD)}}}"
                )
                continue
            port = self.servers[name]["http" if http else "https"].port
            entry = f"  {name}: {{address: 127.0.0.1, role: {role}, winrm: {{port: {port}}}"
            if host.data_service_port:
                entry += f", data_service_port: {host.data_service_port}"
            if host.tms_port:
                entry += f", tms_port: {host.tms_port}"
            if host.search_port:
                entry += f", search_port: {host.search_port}"
            lines.append(entry + "}")
        self.inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------------- access
    def host(self, name: str) -> LabHost:
        """The simulated host `name` (KeyError for unknown names and PCA hosts)."""
        return self.hosts[name]

    def winrm_password(self) -> str:
        """The lab's WinRM password (tests hand it to pywinrm)."""
        return self.password_file.read_text(encoding="utf-8").strip()

    # ------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every endpoint and listener (bounded waits); idempotent. Files stay for
        inspection (`fleet lab state`)."""
        if self._stopped:
            return
        self._stopped = True
        import threading

        # In parallel: each server's shutdown waits for its poll loop (up to half a second).
        stoppers = [
            threading.Thread(target=server.stop, kwargs={"timeout_s": 2.0}, daemon=True)
            for entry in self.servers.values()
            for server in entry.values()
        ]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=5.0)
        for host in self.hosts.values():
            host.shutdown()
        if self.events is not None:
            for name in self.hosts:
                self.events.record(name, "lab", state="stopped")
            self.events.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
