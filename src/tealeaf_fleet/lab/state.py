"""`fleet lab state`: what each simulated host looks like, read from the lab's files only.

Reading files (not asking the running lab) means it works while the lab runs, after it stopped,
and from another process, and it shows exactly what a test or an operator would find on disk.
Stdlib only (the certificate fingerprint is the SHA-256 of the first PEM block's DER), so the
command stays fast.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.lab.host import map_windows_path
from tealeaf_fleet.lab.hosterror import HostError
from tealeaf_fleet.lab.models import DATA_SERVICE_LOG_LIMIT, startup_blocks_in
from tealeaf_fleet.lab.registry import TEALEAF_KEY
from tealeaf_fleet.lab.tlstool import SECURITY_DIR
from tealeaf_fleet.safeio import MAX_INPUT_BYTES, read_regular_file

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def first_cert_sha256(pem: bytes) -> str | None:
    """Lowercase hex SHA-256 of the first certificate's DER in a PEM file, or None."""
    match = _PEM_CERT.search(pem)
    if not match:
        return None
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except binascii.Error:
        return None
    return hashlib.sha256(der).hexdigest()


def data_service_from_log(logs_dir: Path | None) -> dict[str, Any]:
    """Mode and port of the newest startup block, by the facts op's rule: TLDataService*.log
    files (dated and live naming), newest first by modification time, the first one holding a
    block (at most DATA_SERVICE_LOG_LIMIT files); all None without one."""
    none = {"mode": None, "port": None, "started_at": None}
    if not logs_dir or not logs_dir.is_dir():
        return none
    logs = sorted(
        (
            p
            for p in logs_dir.iterdir()
            if p.is_file() and fnmatch.fnmatch(p.name.lower(), "tldataservice*.log")
        ),
        key=lambda p: (p.stat().st_mtime_ns, p.name.upper()),
        reverse=True,
    )
    for path in logs[:DATA_SERVICE_LOG_LIMIT]:
        blocks = startup_blocks_in(path.read_text(encoding="utf-8", errors="replace"), str(path))
        if blocks:
            return {key: blocks[-1][key] for key in none}
    return none


def _reg_get(registry: dict[str, dict[str, Any]], key: str, name: str) -> Any:
    for k, values in registry.items():
        if k.lower() == key.lower():
            for n, v in values.items():
                if n.lower() == name.lower():
                    return v
    return None


def host_state(lab_dir: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One host's summary (PCA hosts: role only, `simulated: false`)."""
    out: dict[str, Any] = {"name": name, "role": entry.get("role")}
    if not entry.get("dir"):
        return {**out, "simulated": False}
    root = lab_dir / entry["dir"]
    fs = root / "fs"
    registry = json.loads((root / "registry.json").read_text(encoding="utf-8"))
    services = json.loads((root / "services.json").read_text(encoding="utf-8"))
    faults = json.loads((root / "faults.json").read_text(encoding="utf-8") or "{}")
    install = entry.get("install_dir") or _reg_get(registry, TEALEAF_KEY, "InstallDir")
    crt = map_windows_path(fs, SECURITY_DIR + r"\tealeaf.crt")
    tealeaf = [
        s
        for s in services
        if str(s.get("name", "")).lower().startswith("tealeaf")
        or str(s.get("display_name", "")).lower().startswith("tealeaf")
    ]
    try:
        logs_dir = map_windows_path(fs, str(install) + r"\Logs") if install else None
    except HostError:
        logs_dir = None
    return {
        **out,
        "simulated": True,
        "os": entry.get("os"),
        "build": _reg_get(registry, TEALEAF_KEY, "Version"),
        "enable_tls": _reg_get(registry, TEALEAF_KEY, "EnableTLS"),
        "cert_sha256": first_cert_sha256(crt.read_bytes()) if crt.is_file() else None,
        "services_running": sum(1 for s in tealeaf if s.get("state") == "Running"),
        "services_total": len(tealeaf),
        "data_service": data_service_from_log(logs_dir),
        "faults": sorted(faults) if isinstance(faults, dict) else [],
    }


def lab_state(lab_dir: str | Path) -> dict[str, Any]:
    """The whole lab: `{"dir", "pid", "inventory", "hosts": [host_state...]}`."""
    root = Path(lab_dir)
    path = root / "lab.json"
    if not path.exists() and (root.is_dir() or not root.exists()):
        raise InputError(
            "no lab here (lab.json is missing)",
            file=path,
            field="--dir",
            hint="start one with `fleet lab up --dir DIR`",
        )
    data = read_regular_file(path, MAX_INPUT_BYTES, "lab.json", field="--dir")
    try:
        lab = json.loads(data)
    except ValueError as exc:
        raise InputError(f"lab.json is not valid JSON: {exc}", file=path) from None
    entries = lab.get("hosts") if isinstance(lab, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise InputError(
            "lab.json is not a lab's: expected an object whose 'hosts' maps names to objects",
            file=path,
        )
    hosts = [host_state(root, name, entry) for name, entry in entries.items()]
    return {
        "dir": str(root),
        "pid": lab.get("pid"),
        "inventory": str(root / lab.get("inventory", "inventory.yaml")),
        "hosts": hosts,
    }


def render_text(state: dict[str, Any]) -> str:
    """A fixed-width table, one line per host."""
    rows = [("HOST", "ROLE", "OS", "ENABLETLS", "CERT", "SERVICES", "DATA SERVICE", "FAULTS")]
    for h in state["hosts"]:
        if not h.get("simulated"):
            rows.append((h["name"], h["role"], "-", "-", "-", "-", "-", "not contacted"))
            continue
        ds = h["data_service"]
        rows.append(
            (
                h["name"],
                h["role"],
                h["os"] or "-",
                "absent" if h["enable_tls"] is None else str(h["enable_tls"]),
                (h["cert_sha256"] or "-")[:16],
                f"{h['services_running']}/{h['services_total']}",
                f"{ds['mode']}:{ds['port']}" if ds["mode"] else "-",
                ",".join(h["faults"]) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
