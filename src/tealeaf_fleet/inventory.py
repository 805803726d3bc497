"""Inventory YAML -> typed `Fleet` / `Host` (docs/architecture.md, "Inventory model").

Why this module is strict: the inventory drives changes on production servers, so a typo must
stop the run before anything is contacted, and the operator must be told exactly where it is.
Every error is an `InputError` naming file, line and field (a dotted path such as
`hosts.hbr01.winrm.port`) and saying what was expected. PyYAML silently keeps the last of two
duplicate keys, so the document is composed into nodes first and converted here, which lets us
reject duplicates and remember the line of every key.

Secrets: `password_file` is read (through `secrets.from_file`, which refuses files readable by
group or others) while loading, because a missing or exposed password file is a mistake in the
inventory itself. `password_env` is resolved lazily, only by the commands that need the secret
(`Fleet.winrm_password`, `Fleet.pfx_password`): `fleet plan` must work on a change-board machine
where the variables are not set.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.secrets import Secret, from_env, from_file

ROLES = ("portal", "hbr", "canister", "report", "other", "rtv", "pca")
TLS_ROLES = ("portal", "hbr", "canister", "report", "other")  # import + enable + restart
WINDOWS_ROLES = TLS_ROLES + ("rtv",)  # contacted over WinRM

SCHEMES = ("https", "http")
TRANSPORTS = ("ntlm", "kerberos", "credssp", "basic", "certificate")
# Transports that wrap every message in their own encryption, so plain http is still private.
ENCRYPTING_TRANSPORTS = ("ntlm", "kerberos", "credssp")
CERT_SOURCES = ("generate", "tlstool", "file")
RESTART_MODES = ("services", "reboot")
DEFAULT_PORTS = {"https": 5986, "http": 5985}

TOP_KEYS = ("tealeaf", "winrm", "certificate", "rollout", "hosts")
TEALEAF_KEYS = ("install_dir",)
WINRM_KEYS = (
    "scheme",
    "port",
    "transport",
    "username",
    "password_env",
    "password_file",
    "ca_bundle",
    "validate_certs",
    "allow_unencrypted",
    "cert_pem",
    "cert_key_pem",
    "path",
    "read_timeout_s",
    "operation_timeout_s",
)
CERT_KEYS = ("source", "path", "password_env", "password_file")
ROLLOUT_KEYS = ("restart", "health_timeout_s", "soak_s", "verify_handshake")
HOST_KEYS = (
    "address",
    "role",
    "winrm",
    "data_service_port",
    "tms_port",
    "install_dir",
    "pca_build",
)

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Drive path (D:\Tealeaf) or UNC path (\\server\share); the tool never guesses a relative one.
_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:\\|\\\\[^\\]+\\)")
_ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")


# --------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class WinRMSettings:
    """How to reach one host. Paths are already resolved against the inventory folder."""

    scheme: str
    port: int
    transport: str
    username: str | None
    password_env: str | None
    password_file: Path | None
    ca_bundle: Path | None
    validate_certs: bool = True
    allow_unencrypted: bool = False
    cert_pem: Path | None = None
    cert_key_pem: Path | None = None
    path: str = "/wsman"
    read_timeout_s: int = 30
    operation_timeout_s: int = 20

    def endpoint(self, address: str) -> str:
        """The WS-Management URL (an IPv6 literal gets the brackets a URL needs)."""
        if ":" in address and not address.startswith("["):
            address = f"[{address}]"
        return f"{self.scheme}://{address}:{self.port}{self.path}"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str
    winrm: WinRMSettings
    data_service_port: int = 23000
    tms_port: int = 20000
    install_dir: str | None = None
    pca_build: str | None = None
    line: int = 0

    @property
    def is_windows(self) -> bool:
        """Contacted over WinRM (everything but the Linux PCA)."""
        return self.role in WINDOWS_ROLES

    @property
    def manages_tls(self) -> bool:
        """Imports, enables and restarts (RTV only imports)."""
        return self.role in TLS_ROLES


@dataclass(frozen=True)
class CertificateSettings:
    source: str
    path: Path
    password_env: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class RolloutSettings:
    restart: str = "services"
    health_timeout_s: int = 600
    soak_s: int = 30
    verify_handshake: bool = True


@dataclass(frozen=True)
class Fleet:
    """A loaded inventory. `normalized` is the canonical, secret-free content for digests."""

    path: Path
    install_dir: str | None
    hosts: dict[str, Host]
    certificate: CertificateSettings
    rollout: RolloutSettings
    normalized: dict
    warnings: list[str]
    # field path -> line, so lazily raised errors still point at the inventory
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _file_secrets: dict[str, Secret] = field(default_factory=dict, repr=False, compare=False)

    def windows_hosts(self) -> list[Host]:
        """Hosts contacted over WinRM, in inventory order."""
        return [h for h in self.hosts.values() if h.is_windows]

    def _field(self, host: Host | None, key: str, section: str = "winrm") -> str:
        """The dotted field a host's setting came from (its own override, else the default)."""
        if host is not None:
            own = f"hosts.{host.name}.{section}.{key}"
            if own in self.lines:
                return own
        return f"{section}.{key}"

    def _resolve(
        self, env: str | None, pfile: Path | None, field_prefix: Callable[[str], str], what: str
    ) -> Secret:
        if pfile is not None:
            cached = self._file_secrets.get(str(pfile))
            if cached is not None:
                return cached
            fld = field_prefix("password_file")
            secret = from_file(pfile, file=self.path, line=self.lines.get(fld), field=fld)
            self._file_secrets[str(pfile)] = secret
            return secret
        if env is not None:
            fld = field_prefix("password_env")
            return from_env(env, file=self.path, line=self.lines.get(fld), field=fld)
        fld = field_prefix("password_env")
        raise InputError(
            f"no password source for {what}: set password_env or password_file",
            file=self.path,
            line=self.lines.get(fld.rsplit(".", 1)[0]),
            field=fld,
        )

    def winrm_password(self, host: Host) -> Secret:
        """The WinRM password for `host`, read now; InputError naming the inventory if unset."""
        return self._resolve(
            host.winrm.password_env,
            host.winrm.password_file,
            lambda k: self._field(host, k),
            f"WinRM on {host.name}",
        )

    def require_files(self, host: Host) -> None:
        """Before connecting to `host`: its CA bundle / client certificate files must exist."""
        for key in ("ca_bundle", "cert_pem", "cert_key_pem"):
            p = getattr(host.winrm, key)
            if p is not None and not p.is_file():
                fld = self._field(host, key)
                raise InputError(
                    f"file {p} does not exist", file=self.path, line=self.lines.get(fld), field=fld
                )

    def pfx_password(self) -> Secret:
        """The PFX password, read now; InputError naming the inventory if unset."""
        return self._resolve(
            self.certificate.password_env,
            self.certificate.password_file,
            lambda k: f"certificate.{k}",
            "the certificate",
        )


# --------------------------------------------------------------------------------------------
# YAML with lines and without duplicate keys


class _Map(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int = 0
    lines: dict

    def key_line(self, key: str) -> int:
        return self.lines.get(key, self.line)


def _compose(text: str, file: Path) -> Any:
    """Parse YAML into Python values, `_Map` for mappings; duplicate keys are errors."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "not valid YAML"
            raise InputError(
                f"YAML syntax error: {problem}", file=file, line=mark.line + 1 if mark else None
            ) from None
        except yaml.YAMLError as exc:
            raise InputError(f"YAML error: {exc}", file=file) from None
        if node is None:
            return None
        return _convert(loader, node, "", file)
    finally:
        loader.dispose()


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: str, file: Path) -> Any:
    if isinstance(node, yaml.MappingNode):
        # Keys written in this mapping; the rest come from merge keys (<<: *anchor), which an
        # explicit key may override (that is what merge keys are for), unlike a duplicate.
        explicit = {id(k) for k, _v in node.value if k.tag != "tag:yaml.org,2002:merge"}
        merged: set[str] = set()
        try:
            loader.flatten_mapping(node)  # YAML merge keys (<<)
        except yaml.MarkedYAMLError as exc:
            raise InputError(
                f"YAML error: {exc.problem}",
                file=file,
                line=node.start_mark.line + 1,
                field=path or None,
            ) from None
        out = _Map()
        out.line = node.start_mark.line + 1
        out.lines = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError(
                    "a key must be a plain name", file=file, line=key_line, field=path or None
                )
            key = loader.construct_object(key_node, deep=True)
            key = str(key) if not isinstance(key, str) else key
            sub = f"{path}.{key}" if path else key
            if key in out and key in merged:
                if id(key_node) in explicit:
                    merged.discard(key)
            elif key in out:
                raise InputError(
                    f"duplicate key '{key}' (first at line {out.lines[key]}); remove one of them",
                    file=file,
                    line=key_line,
                    field=sub,
                )
            elif id(key_node) not in explicit:
                merged.add(key)
            out.lines[key] = key_line
            out[key] = _convert(loader, value_node, sub, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, f"{path}[{i}]", file) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise InputError(
            f"cannot read value: {exc.problem}",
            file=file,
            line=node.start_mark.line + 1,
            field=path or None,
        ) from None


# --------------------------------------------------------------------------------------------
# validation helpers


class _Ctx:
    """Where we are in the file; builds errors that name file, line and field."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.lines: dict[str, int] = {}

    def error(self, msg: str, line: int | None, fld: str, hint: str | None = None) -> InputError:
        return InputError(msg, file=self.file, line=line, field=fld or None, hint=hint)

    def mapping(self, value: Any, fld: str, line: int, allowed: tuple[str, ...]) -> _Map:
        """Check `value` is a mapping with only `allowed` keys; records each key's line."""
        if value is None:
            value = _Map()
            value.line, value.lines = line, {}
        if not isinstance(value, _Map):
            raise self.error(
                f"expected a mapping of {', '.join(allowed)}, got {_kind(value)}", line, fld
            )
        for key in value:
            sub = f"{fld}.{key}" if fld else key
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else None
                raise self.error(
                    f"unknown key '{key}'; expected one of {', '.join(allowed)}",
                    value.key_line(key),
                    sub,
                    hint,
                )
            self.lines[sub] = value.key_line(key)
        return value

    def string(
        self, m: _Map, key: str, fld: str, *, required: bool = False, default: str | None = None
    ) -> str | None:
        if key not in m or m[key] is None:
            if required:
                raise self.error(f"'{key}' is required", m.line, fld)
            return default
        value = m[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                f"expected a non-empty string, got {_kind(value)}", m.key_line(key), fld
            )
        return value.strip()

    def choice(
        self, m: _Map, key: str, fld: str, choices: tuple[str, ...], default: str | None
    ) -> str | None:
        value = self.string(m, key, fld, default=default)
        if value is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
            raise self.error(
                f"'{value}' is not one of {', '.join(choices)}",
                m.key_line(key),
                fld,
                f"did you mean '{close[0]}'?" if close else None,
            )
        return value

    def integer(
        self,
        m: _Map,
        key: str,
        fld: str,
        default: int | None,
        *,
        low: int,
        high: int,
        what: str = "an integer",
    ) -> int | None:
        if key not in m or m[key] is None:
            return default
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(
                f"expected {what} ({low}-{high}), got {_kind(value)}", m.key_line(key), fld
            )
        if not low <= value <= high:
            raise self.error(
                f"{value} is out of range: expected {what} ({low}-{high})", m.key_line(key), fld
            )
        return value

    def port(self, m: _Map, key: str, fld: str, default: int | None) -> int | None:
        return self.integer(m, key, fld, default, low=1, high=65535, what="a TCP port")

    def boolean(self, m: _Map, key: str, fld: str, default: bool) -> bool:
        if key not in m or m[key] is None:
            return default
        value = m[key]
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {_kind(value)}", m.key_line(key), fld)
        return value

    def env_name(self, m: _Map, key: str, fld: str) -> str | None:
        value = self.string(m, key, fld)
        if value is not None and not _ENV_NAME.match(value):
            raise self.error(  # not echoed: a value that is no name may be the password itself
                "this is not an environment variable name (letters, digits, underscore); give "
                "the name of the variable that holds the password, not the password",
                m.key_line(key),
                fld,
            )
        return value

    def path(
        self,
        m: _Map,
        key: str,
        fld: str,
        base: Path,
        *,
        must_exist: bool = False,
        required: bool = False,
    ) -> Path | None:
        value = self.string(m, key, fld, required=required)
        if value is None:
            return None
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = base / p
        if must_exist and not p.is_file():
            raise self.error(f"file {p} does not exist", m.key_line(key), fld)
        return p

    def windows_dir(self, m: _Map, key: str, fld: str) -> str | None:
        value = self.string(m, key, fld)
        if value is not None and not _WINDOWS_ABS.match(value):
            raise self.error(
                f"'{value}' is not an absolute Windows path (expected e.g. 'D:\\Tealeaf')",
                m.key_line(key),
                fld,
            )
        return value.rstrip("\\") if value is not None and len(value) > 3 else value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ('{value}')"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# sections


def _winrm(ctx: _Ctx, m: _Map, fld: str, base: Path, defaults: dict[str, Any]) -> dict[str, Any]:
    """Read the keys present in one `winrm:` mapping over `defaults` (a dict of settings)."""
    out = dict(defaults)
    f = lambda k: f"{fld}.{k}"  # noqa: E731 - short and local
    if "scheme" in m:
        out["scheme"] = ctx.choice(m, "scheme", f("scheme"), SCHEMES, None)
    if "port" in m:
        out["port"] = ctx.port(m, "port", f("port"), None)
    if "transport" in m:
        out["transport"] = ctx.choice(m, "transport", f("transport"), TRANSPORTS, None)
    if "username" in m:
        out["username"] = ctx.string(m, "username", f("username"))
    if "password_env" in m:
        out["password_env"] = ctx.env_name(m, "password_env", f("password_env"))
        out["password_file"] = None if "password_file" not in m else out["password_file"]
    if "password_file" in m:
        if "password_env" in m:
            raise ctx.error(
                "give password_env or password_file, not both",
                m.key_line("password_file"),
                f("password_file"),
            )
        out["password_file"] = ctx.path(m, "password_file", f("password_file"), base)
        out["password_env"] = None
    # Existence is checked by `Fleet.require_files` when a command connects: `fleet plan` must
    # work on a change-board machine that has the inventory but not the CA bundle.
    for key in ("ca_bundle", "cert_pem", "cert_key_pem"):
        if key in m:
            out[key] = ctx.path(m, key, f(key), base)
    for key in ("validate_certs", "allow_unencrypted"):
        if key in m:
            out[key] = ctx.boolean(m, key, f(key), out[key])
    if "path" in m:
        value = ctx.string(m, "path", f("path"))
        if value is not None and not value.startswith("/"):
            raise ctx.error(
                f"'{value}' must start with '/' (e.g. /wsman)", m.key_line("path"), f("path")
            )
        out["path"] = value or "/wsman"
    for key in ("read_timeout_s", "operation_timeout_s"):
        if key in m:
            out[key] = ctx.integer(m, key, f(key), out[key], low=1, high=3600, what="seconds")
    return out


def _check_winrm(
    ctx: _Ctx,
    s: dict[str, Any],
    fld: str,
    lines: dict[str, int],
    owner_line: int,
    *,
    contacted: bool = True,
) -> WinRMSettings:
    """Cross-field rules, checked on a host's effective settings (only for hosts that are
    contacted over WinRM: a PCA entry must not fail for want of a username it never uses)."""

    def where(key: str) -> tuple[int, str]:
        # the host's own override when it has one, else the fleet default
        own = f"{fld}.{key}"
        if own in lines:
            return lines[own], own
        if f"winrm.{key}" in lines:
            return lines[f"winrm.{key}"], f"winrm.{key}"
        return owner_line, own

    if contacted:
        _check_transport(ctx, s, where)
    if s["operation_timeout_s"] >= s["read_timeout_s"]:
        line, f = where("operation_timeout_s")
        raise ctx.error(
            f"operation_timeout_s ({s['operation_timeout_s']}) must be below "
            f"read_timeout_s ({s['read_timeout_s']})",
            line,
            f,
        )
    port = s["port"] if s["port"] is not None else DEFAULT_PORTS[s["scheme"]]
    return WinRMSettings(**{**s, "port": port})  # `s` holds exactly WinRMSettings' fields


def _check_transport(ctx: _Ctx, s: dict[str, Any], where: Callable[[str], tuple[int, str]]) -> None:
    """Scheme, transport and credentials fit together (a host contacted over WinRM)."""
    if s["scheme"] == "http" and s["transport"] not in ENCRYPTING_TRANSPORTS:
        if s["transport"] == "certificate":
            line, f = where("transport")
            raise ctx.error("transport certificate needs scheme https", line, f)
        if not s["allow_unencrypted"]:
            line, f = where("scheme")
            raise ctx.error(
                f"http with transport {s['transport']} would send the password and every "
                "command unencrypted",
                line,
                f,
                "use https, or ntlm/kerberos/credssp (they encrypt messages), or set "
                "allow_unencrypted: true if you really mean it",
            )
    if s["transport"] == "certificate":
        for key in ("cert_pem", "cert_key_pem"):
            if s[key] is None:
                line, f = where(key)
                raise ctx.error(f"transport certificate needs {key}", line, f)
    elif s["transport"] in ("ntlm", "basic", "credssp") and not s["username"]:
        line, f = where("username")
        raise ctx.error(
            f"transport {s['transport']} needs a username", line, f, "e.g. 'CORP\\svc-tealeaf'"
        )


_WINRM_DEFAULTS: dict[str, Any] = {
    "scheme": "https",
    "port": None,
    "transport": "ntlm",
    "username": None,
    "password_env": None,
    "password_file": None,
    "ca_bundle": None,
    "validate_certs": True,
    "allow_unencrypted": False,
    "cert_pem": None,
    "cert_key_pem": None,
    "path": "/wsman",
    "read_timeout_s": 30,
    "operation_timeout_s": 20,
}


def _raw(m: _Map | None) -> dict:
    """The mapping as written (plain dicts), for the normalized form."""
    if m is None:
        return {}
    return {k: (_raw(v) if isinstance(v, _Map) else v) for k, v in m.items()}


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate an inventory. Raises `InputError` naming file:line:field."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"inventory {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"inventory {file} cannot be read: {exc}") from None
    base = file.resolve().parent
    ctx = _Ctx(file)
    doc = _compose(text, file)
    if doc is None:
        raise ctx.error("the inventory is empty; it needs at least 'hosts:'", 1, "hosts")
    top = ctx.mapping(doc, "", 1, TOP_KEYS)

    tealeaf = ctx.mapping(top.get("tealeaf"), "tealeaf", top.key_line("tealeaf"), TEALEAF_KEYS)
    install_dir = ctx.windows_dir(tealeaf, "install_dir", "tealeaf.install_dir")

    winrm_map = ctx.mapping(top.get("winrm"), "winrm", top.key_line("winrm"), WINRM_KEYS)
    winrm_defaults = _winrm(ctx, winrm_map, "winrm", base, _WINRM_DEFAULTS)

    cert_map = ctx.mapping(
        top.get("certificate"), "certificate", top.key_line("certificate"), CERT_KEYS
    )
    source = ctx.choice(cert_map, "source", "certificate.source", CERT_SOURCES, "generate")
    cert_path = ctx.path(cert_map, "path", "certificate.path", base) or base / "TCXcert.pfx"
    if source == "file" and not cert_path.is_file():
        raise ctx.error(
            f"certificate file {cert_path} does not exist (source: file)",
            cert_map.key_line("path"),
            "certificate.path",
        )
    if "password_env" in cert_map and "password_file" in cert_map:
        raise ctx.error(
            "give password_env or password_file, not both",
            cert_map.key_line("password_file"),
            "certificate.password_file",
        )
    certificate = CertificateSettings(
        source=source or "generate",
        path=cert_path,
        password_env=ctx.env_name(cert_map, "password_env", "certificate.password_env"),
        password_file=ctx.path(cert_map, "password_file", "certificate.password_file", base),
    )

    roll_map = ctx.mapping(top.get("rollout"), "rollout", top.key_line("rollout"), ROLLOUT_KEYS)
    rollout = RolloutSettings(
        restart=ctx.choice(roll_map, "restart", "rollout.restart", RESTART_MODES, "services")
        or "services",
        health_timeout_s=ctx.integer(
            roll_map,
            "health_timeout_s",
            "rollout.health_timeout_s",
            600,
            low=1,
            high=86400,
            what="seconds",
        )
        or 600,
        soak_s=ctx.integer(
            roll_map, "soak_s", "rollout.soak_s", 30, low=0, high=86400, what="seconds"
        )
        or 0,
        verify_handshake=ctx.boolean(
            roll_map, "verify_handshake", "rollout.verify_handshake", True
        ),
    )

    if "hosts" not in top or not top["hosts"]:
        raise ctx.error(
            "no hosts: the inventory needs at least one host",
            top.key_line("hosts") if "hosts" in top else top.line,
            "hosts",
        )
    hosts_map = top["hosts"]
    if not isinstance(hosts_map, _Map):
        raise ctx.error(
            f"expected a mapping of host name to settings, got {_kind(hosts_map)}",
            top.key_line("hosts"),
            "hosts",
        )
    hosts: dict[str, Host] = {}
    seen_lower: dict[str, str] = {}
    # The lab runs every host on 127.0.0.1 with its own WinRM port, so two hosts are the same
    # machine only when address AND WinRM port match; the address alone would reject the lab.
    seen_endpoints: dict[tuple[str, int], str] = {}
    warnings: list[str] = []
    if not winrm_defaults["validate_certs"]:
        warnings.append(
            f"{file}:{ctx.lines.get('winrm.validate_certs')}: winrm.validate_certs"
            " is false: the servers' WinRM certificates are NOT checked "
            "(a man in the middle could read the passwords)"
        )
    for name, entry in hosts_map.items():
        fld = f"hosts.{name}"
        line = hosts_map.key_line(name)
        if not _HOST_NAME.match(name):
            raise ctx.error(
                f"'{name}' is not a valid host name (letters, digits, '.', '-', "
                "'_'; up to 63 characters)",
                line,
                fld,
            )
        if name.lower() in seen_lower:
            raise ctx.error(
                f"host name '{name}' duplicates '{seen_lower[name.lower()]}' "
                "(host names are case-insensitive)",
                line,
                fld,
            )
        seen_lower[name.lower()] = name
        if entry is None:
            raise ctx.error("host has no settings: expected {address: ..., role: ...}", line, fld)
        h = ctx.mapping(entry, fld, line, HOST_KEYS)
        h.line = line
        role = ctx.string(h, "role", f"{fld}.role")
        if role is None:
            raise ctx.error(
                f"host has no role; expected one of {', '.join(ROLES)}", line, f"{fld}.role"
            )
        if role not in ROLES:
            close = difflib.get_close_matches(role, ROLES, n=1, cutoff=0.6)
            raise ctx.error(
                f"unknown role '{role}'; expected one of {', '.join(ROLES)}",
                h.key_line("role"),
                f"{fld}.role",
                f"did you mean '{close[0]}'?" if close else None,
            )
        address = ctx.string(h, "address", f"{fld}.address", required=True)
        assert address is not None
        if not _ADDRESS.match(address):
            raise ctx.error(
                f"'{address}' is not a host name or IP address",
                h.key_line("address"),
                f"{fld}.address",
            )
        pca_build = h.get("pca_build")
        if pca_build is not None:
            if role != "pca":
                raise ctx.error(
                    "pca_build only applies to role pca",
                    h.key_line("pca_build"),
                    f"{fld}.pca_build",
                )
            if isinstance(pca_build, bool) or not isinstance(pca_build, (str, int)):
                raise ctx.error(
                    f"expected a build such as '3682-24', got {_kind(pca_build)}",
                    h.key_line("pca_build"),
                    f"{fld}.pca_build",
                )
            pca_build = str(pca_build)
        host_winrm = ctx.mapping(h.get("winrm"), f"{fld}.winrm", h.key_line("winrm"), WINRM_KEYS)
        settings = _winrm(ctx, host_winrm, f"{fld}.winrm", base, winrm_defaults)
        winrm = _check_winrm(
            ctx, settings, f"{fld}.winrm", ctx.lines, line, contacted=role in WINDOWS_ROLES
        )
        if not winrm.validate_certs and winrm_defaults["validate_certs"]:
            warnings.append(
                f"{file}:{ctx.lines.get(f'{fld}.winrm.validate_certs')}: "
                f"{fld}.winrm.validate_certs is false: {name}'s WinRM certificate "
                "is NOT checked"
            )
        host = Host(
            name=name,
            address=address,
            role=role,
            winrm=winrm,
            data_service_port=ctx.port(h, "data_service_port", f"{fld}.data_service_port", 23000)
            or 23000,
            tms_port=ctx.port(h, "tms_port", f"{fld}.tms_port", 20000) or 20000,
            install_dir=ctx.windows_dir(h, "install_dir", f"{fld}.install_dir"),
            pca_build=pca_build,
            line=line,
        )
        if host.is_windows:
            endpoint = (address.lower(), winrm.port)
            if endpoint in seen_endpoints:
                raise ctx.error(
                    f"{address}:{winrm.port} is already host "
                    f"'{seen_endpoints[endpoint]}' (same address and WinRM port)",
                    h.key_line("address"),
                    f"{fld}.address",
                )
            seen_endpoints[endpoint] = name
        hosts[name] = host

    fleet = Fleet(
        path=file,
        install_dir=install_dir,
        hosts=hosts,
        certificate=certificate,
        rollout=rollout,
        normalized={},
        warnings=warnings,
        lines=dict(ctx.lines),
    )
    fleet.normalized.update(_normalize(fleet, base))
    # Read password files now: a missing or exposed one is an inventory mistake (see top).
    if certificate.password_file is not None:
        fleet.pfx_password()
    for host in fleet.windows_hosts():
        if host.winrm.password_file is not None:
            fleet.winrm_password(host)
    return fleet


def _rel(p: Path | None, base: Path) -> str | None:
    """A path for the digest: relative to the inventory folder when inside it, so moving the
    whole folder (inventory + PFX + CA) does not change the plan's digest."""
    if p is None:
        return None
    try:
        return p.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(p)


def _normalize(fleet: Fleet, base: Path) -> dict:
    """Canonical, secret-free content: what the plan digest covers (effective values)."""
    hosts = {}
    for h in fleet.hosts.values():
        w = h.winrm
        hosts[h.name] = {
            "address": h.address,
            "role": h.role,
            "data_service_port": h.data_service_port,
            "tms_port": h.tms_port,
            "install_dir": h.install_dir or fleet.install_dir,
            "pca_build": h.pca_build,
            "winrm": {
                "scheme": w.scheme,
                "port": w.port,
                "transport": w.transport,
                "username": w.username,
                "password_env": w.password_env,
                "password_file": _rel(w.password_file, base),
                "ca_bundle": _rel(w.ca_bundle, base),
                "validate_certs": w.validate_certs,
                "allow_unencrypted": w.allow_unencrypted,
                "cert_pem": _rel(w.cert_pem, base),
                "cert_key_pem": _rel(w.cert_key_pem, base),
                "path": w.path,
                "read_timeout_s": w.read_timeout_s,
                "operation_timeout_s": w.operation_timeout_s,
            },
        }
    c, r = fleet.certificate, fleet.rollout
    return {
        "tealeaf": {"install_dir": fleet.install_dir},
        "certificate": {
            "source": c.source,
            "path": _rel(c.path, base),
            "password_env": c.password_env,
            "password_file": _rel(c.password_file, base),
        },
        "rollout": {
            "restart": r.restart,
            "health_timeout_s": r.health_timeout_s,
            "soak_s": r.soak_s,
            "verify_handshake": r.verify_handshake,
        },
        "hosts": hosts,
    }
