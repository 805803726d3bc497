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

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.safeio import decode_utf8, file_problem, read_regular_file
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

TOP_KEYS = ("tealeaf", "winrm", "certificate", "rollout", "prerequisites", "hosts")
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
ROLLOUT_KEYS = ("restart", "health_timeout_s", "soak_s", "verify_handshake", "restart_s")
PREREQUISITE_KEYS = ("status_report_hosts", "winhttp_protocols", "reboot")
# WinHTTP DefaultSecureProtocols the `prerequisites` playbook may write: 0xA80 (TLS 1.0-1.2,
# the default) or the vendor's literal 0xAA0 (which also turns SSL 3.0 back on).
WINHTTP_SAFE = 0xA80
WINHTTP_VENDOR = 0xAA0
WINHTTP_CHOICES = (WINHTTP_SAFE, WINHTTP_VENDOR)
HOST_KEYS = (
    "address",
    "role",
    "winrm",
    "data_service_port",
    "tms_port",
    "search_port",
    "install_dir",
    "pca_build",
)

# Patterns are applied with fullmatch: `$` would also match before a trailing newline, and a
# host name "hbr01\n" would pass.
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Drive path (D:\Tealeaf) or UNC path (\\server\share); the tool never guesses a relative one.
_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:\\|\\\\[^\\]+\\)")
# Characters Windows refuses in a path, and control characters (a newline in a path would
# show as two lines in the plan and reach the server as one): never in install_dir.
_WINDOWS_BAD = re.compile(r'[\x00-\x1f\x7f<>"|?*]')
# DNS name or IPv4 address; IPv6 literals are checked by `ipaddress` (see `_address`).
_ADDRESS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?")
_HOST_PORT = re.compile(r"(.+):([0-9]+)")
# Control characters: never in a string (`_CONTROL` spares tab and newline, for text that may
# span lines), never at all in a one-line value such as a path or a user name.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_ANY = re.compile(r"[\x00-\x1f\x7f]")


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
    search_port: int = 19000  # the Search Server's, checked on Canisters

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
    # role -> seconds one restart (or reboot) of a host of that role takes: the plan's window
    restart_s: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PrerequisiteSettings:
    """`prerequisites:`: what the `prerequisites` playbook writes. `status_report_hosts` None
    means every Tealeaf Windows server (the TealeafStatus settings go where TealeafStatus
    runs); `reboot` false stops after the writes and leaves the reboots to the operator."""

    status_report_hosts: tuple[str, ...] | None = None
    winhttp_protocols: int = WINHTTP_SAFE
    reboot: bool = True


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
    prerequisites: PrerequisiteSettings = field(default_factory=PrerequisiteSettings)
    # field path -> line, so lazily raised errors still point at the inventory
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _file_secrets: dict[str, Secret] = field(default_factory=dict, repr=False, compare=False)

    def windows_hosts(self) -> list[Host]:
        """Hosts contacted over WinRM, in inventory order."""
        return [h for h in self.hosts.values() if h.is_windows]

    def only(self, names: Collection[str]) -> Fleet:
        """The same inventory with only these hosts (inventory order kept): what `--limit`
        selects, and what a phase's verify reads. Its normalized content (so the inventory
        digest) covers only them, so a plan of a subset never passes for one of the whole."""
        keep = {n: h for n, h in self.hosts.items() if n in names}
        normalized = dict(self.normalized)
        if isinstance(normalized.get("hosts"), dict):
            normalized["hosts"] = {n: v for n, v in normalized["hosts"].items() if n in keep}
        return dataclasses.replace(self, hosts=keep, normalized=normalized)

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
        """Before connecting to `host`: its CA bundle / client certificate files must be
        regular files (a missing one is an inventory mistake, not a network error to retry)."""
        for key in ("ca_bundle", "cert_pem", "cert_key_pem"):
            p = getattr(host.winrm, key)
            problem = file_problem(p) if p is not None else None
            if problem is not None:
                fld = self._field(host, key)
                raise InputError(
                    f"file {p} {problem}", file=self.path, line=self.lines.get(fld), field=fld
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


# Budget for YAML aliases and merge keys: an alias repeats a whole subtree, so nine lines of
# nested aliases ("billion laughs") expand to 10^9 values. A 1,000-host inventory has about
# 15,000 values, a packaged playbook about 60; the budget leaves room for estates far larger.
YAML_MAX_VALUES = 500_000
YAML_MAX_DEPTH = 64
# An inventory of 20,000 hosts is about 2 MiB; PyYAML reads about 0.3 MB/s.
YAML_MAX_BYTES = 2 * 1024 * 1024
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_STR_TAG = "tag:yaml.org,2002:str"


def read_yaml_text(path: Path, what: str) -> str:
    """The text of an inventory or playbook: a regular UTF-8 file of at most YAML_MAX_BYTES
    (a FIFO or a device is refused, never waited on), else InputError naming it."""
    return decode_utf8(read_regular_file(path, YAML_MAX_BYTES, what), path, what)


def _compose(text: str, file: Path) -> Any:
    """Parse YAML into Python values, `_Map` for mappings; duplicate keys are errors, and so
    are aliases that expand past the budget or contain themselves, nesting deeper than
    YAML_MAX_DEPTH, tags on keys and tagged values that cannot be built."""
    try:  # PyYAML checks the characters of the text as soon as the loader is made
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "not valid YAML"
            raise InputError(
                f"YAML syntax error: {problem}", file=file, line=mark.line + 1 if mark else None
            ) from None
        except RecursionError:  # PyYAML composes nested collections recursively
            raise InputError(
                f"YAML nested too deeply (more than {YAML_MAX_DEPTH} levels)",
                file=file,
                line=loader.get_mark().line + 1,
            ) from None
        except yaml.reader.ReaderError as exc:  # a bad character past the first chunk
            raise _reader_error(exc, text, file) from None
        except yaml.YAMLError as exc:
            raise InputError(f"YAML error: {exc}", file=file) from None
        if node is None:
            return None
        _Expansion(file).measure(node, "")
        return _convert(loader, node, "", file)
    finally:
        loader.dispose()


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: Path) -> InputError:
    """A character YAML does not allow (a NUL, a control character) at its line."""
    line = text.count("\n", 0, exc.position) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return InputError(
        f"YAML cannot contain the control character U+{char:04X} (offset {exc.position})",
        file=file,
        line=line,
    )


class _Expansion:
    """Walks the composed node graph once (each node measured once, so this is linear in the
    file) to refuse, before anything is expanded, a document that would expand past
    YAML_MAX_VALUES values or YAML_MAX_DEPTH levels, or that contains itself."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.sizes: dict[int, int] = {}  # id(node) -> values once expanded
        self.depths: dict[int, int] = {}  # id(node) -> levels below it, once expanded
        self.active: set[int] = set()  # nodes on the current path (a cycle comes back to one)

    def error(self, message: str, node: yaml.Node, path: str) -> InputError:
        return _node_error(message, node, path, self.file)

    def measure(self, node: yaml.Node, path: str, level: int = 0) -> int:
        """Values under `node` once expanded; InputError past a limit. `level` is how deep
        `node` sits: checked on the way down, so the walk itself never recurses deeply."""
        key = id(node)
        if key in self.sizes:
            if level + self.depths[key] > YAML_MAX_DEPTH:
                raise self._too_deep(node, path)
            return self.sizes[key]
        if key in self.active:
            raise self.error("recursive YAML alias: a value contains itself", node, path)
        if level > YAML_MAX_DEPTH:
            raise self._too_deep(node, path)
        self.active.add(key)
        size, depth = 1, 0
        for child, sub in self._children(node, path):
            size += self.measure(child, sub, level + 1)
            depth = max(depth, self.depths[id(child)] + 1)
            if size > YAML_MAX_VALUES:
                raise self.error(
                    f"the YAML expands to more than {YAML_MAX_VALUES:,} values (aliases or "
                    "merge keys repeating the same content): refused",
                    node,
                    path,
                )
        self.active.discard(key)
        self.sizes[key], self.depths[key] = size, depth
        return size

    def _too_deep(self, node: yaml.Node, path: str) -> InputError:
        return self.error(f"YAML nested too deeply (more than {YAML_MAX_DEPTH} levels)", node, path)

    @staticmethod
    def _children(node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        if isinstance(node, yaml.SequenceNode):
            return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if not isinstance(node, yaml.MappingNode):
            return []
        out: list[tuple[yaml.Node, str]] = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            sub = f"{path}.{name}" if path else str(name)
            # a merge key's value is expanded into this mapping: measured like a child
            out += [(key_node, sub), (value_node, sub)]
        return out


def _tag_text(tag: str) -> str:
    """A tag as written in YAML (`!!int`, not `tag:yaml.org,2002:int`)."""
    return tag.replace("tag:yaml.org,2002:", "!!")


def _key_tag_ok(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    """True when a key scalar carries no explicit tag (`!!binary`, `!!int`, `!x` ...): its tag
    is the one YAML gives plain or quoted text of that value."""
    if node.tag == _MERGE_TAG:
        return True
    implicit = (
        _STR_TAG if node.style else loader.resolve(yaml.ScalarNode, node.value, (True, False))
    )
    return node.tag == implicit


def _node_error(
    message: str, node: yaml.Node, path: str, file: Path, hint: str | None = None
) -> InputError:
    """An error at `node`'s line, naming the field `path` (the document itself when empty)."""
    return InputError(
        message, file=file, line=node.start_mark.line + 1, field=path or None, hint=hint
    )


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: str, file: Path) -> Any:
    """One scalar, built by PyYAML's safe constructor; a tag it cannot build (`!!int abc`,
    `!!timestamp 2020-13-45`, an unknown `!tag`, a 5,000-digit number) is a file:line error."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        reason = exc.problem
    except (ValueError, TypeError, OverflowError) as exc:  # what the scalar constructors raise
        reason = f"{_tag_text(node.tag)}: {str(exc).split(';')[0][:120]}"
    raise _node_error(f"cannot read value: {reason}", node, path, file)


def _key(loader: yaml.SafeLoader, node: yaml.Node, path: str, file: Path) -> str:
    """A mapping key: a plain or quoted name. Tags, collections and non-text scalars (`12`,
    `~`, `yes`) are refused: a key names a host or a setting, and `~:` must not become a host
    called 'None'."""
    if not isinstance(node, yaml.ScalarNode):
        raise _node_error("a key must be a plain name", node, path, file)
    if not _key_tag_ok(loader, node):
        raise _node_error(
            f"a key must be a plain name, not a tagged value ({_tag_text(node.tag)})",
            node,
            path,
            file,
        )
    key = _construct(loader, node, path, file)
    if not isinstance(key, str):
        raise _node_error(
            f"a key must be a name, got {_kind(key)}",
            node,
            path,
            file,
            hint=f"quote it if you mean the name: '{node.value}'",
        )
    return key


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: str, file: Path) -> Any:
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        raise _node_error(
            f"YAML tag {_tag_text(node.tag)} is not allowed here: give a plain mapping or list",
            node,
            path,
            file,
        )
    if isinstance(node, yaml.MappingNode):
        # Keys written in this mapping; the rest come from merge keys (<<: *anchor), which an
        # explicit key may override (that is what merge keys are for), unlike a duplicate.
        explicit = {id(k) for k, _v in node.value if k.tag != _MERGE_TAG}
        merged: set[str] = set()
        try:
            loader.flatten_mapping(node)  # YAML merge keys (<<)
        except yaml.MarkedYAMLError as exc:
            raise _node_error(f"YAML error: {exc.problem}", node, path, file) from None
        out = _Map()
        out.line = node.start_mark.line + 1
        out.lines = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = _key(loader, key_node, path, file)
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
    return _construct(loader, node, path, file)


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
        self,
        m: _Map,
        key: str,
        fld: str,
        *,
        required: bool = False,
        default: str | None = None,
        one_line: bool = False,
    ) -> str | None:
        """A non-empty string, stripped. Control characters are refused (a NUL would crash the
        file system calls, an escape sequence would rewrite the operator's screen); newlines
        and tabs only where text may span lines (`one_line=False`: descriptions, names shown
        escaped). The value is not echoed: it may be a password pasted in the wrong key."""
        if key not in m or m[key] is None:
            if required:
                raise self.error(f"'{key}' is required", m.line, fld)
            return default
        value = m[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                f"expected a non-empty string, got {_kind(value)}", m.key_line(key), fld
            )
        value = value.strip()
        bad = (_CONTROL_ANY if one_line else _CONTROL).search(value)
        if bad:
            raise self.error(
                f"holds the control character U+{ord(bad.group()):04X} at offset {bad.start()}",
                m.key_line(key),
                fld,
            )
        return value

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
        if value is not None and not _ENV_NAME.fullmatch(value):
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
        value = self.string(m, key, fld, required=required, one_line=True)
        if value is None:
            return None
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # ~user of a user this machine does not know
            raise self.error(
                f"cannot expand '{value}': no such user", m.key_line(key), fld
            ) from None
        if not p.is_absolute():
            p = base / p
        if len(str(p)) > 4095 or any(len(part.encode()) > 255 for part in p.parts):
            # what Linux and Windows file systems take; longer ones fail in every stat()
            raise self.error("path is too long for a file system", m.key_line(key), fld)
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
        if value is not None and _WINDOWS_BAD.search(value):
            raise self.error(
                f"{value!r} holds a character Windows does not allow in a path "
                '(control characters, < > " | ? *)',
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


def _address(ctx: _Ctx, h: _Map, fld: str) -> str:
    """A host's address: a DNS name, an IPv4 address or an IPv6 literal (`::1` or `[::1]`,
    kept without brackets: `WinRMSettings.endpoint` adds them). `host:5986` is refused: the
    port belongs in winrm.port, and pasted into a URL it would be read as an IPv6 address."""
    address = ctx.string(h, "address", fld, required=True)
    assert address is not None
    line = h.key_line("address")
    inner = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    if ":" in inner:
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            pass
    elif inner == address and _ADDRESS.fullmatch(address):
        return address
    port = _HOST_PORT.fullmatch(address)
    if port and (_ADDRESS.fullmatch(port.group(1)) or port.group(1).startswith("[")):
        raise ctx.error(
            f"{address!r} holds a port: give the address alone",
            line,
            fld,
            f"address: {port.group(1).strip('[]')} with winrm: {{port: {port.group(2)}}}",
        )
    raise ctx.error(
        f"{address!r} is not a host name, an IPv4 address or an IPv6 address", line, fld
    )


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
        out["username"] = ctx.string(m, "username", f("username"), one_line=True)
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
        value = ctx.string(m, "path", f("path"), one_line=True)
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
    text = read_yaml_text(file, "inventory")
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
    # `generate` creates the file when it is missing; whatever is there must be a regular file
    # (a FIFO there would hang every command that opens the PFX, a device would be "read").
    cert_problem = file_problem(cert_path)
    if cert_problem and (source == "file" or os.path.lexists(cert_path)):
        raise ctx.error(
            f"certificate file {cert_path} {cert_problem} (source: {source})",
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
        restart_s=_restart_times(ctx, roll_map),
    )

    pre_map = ctx.mapping(
        top.get("prerequisites"), "prerequisites", top.key_line("prerequisites"), PREREQUISITE_KEYS
    )
    winhttp = _winhttp_protocols(ctx, pre_map)
    if winhttp == WINHTTP_VENDOR:
        warnings_early = [
            f"{file}:{ctx.lines.get('prerequisites.winhttp_protocols')}: "
            "prerequisites.winhttp_protocols is 0xAA0 (the vendor's literal value): it turns "
            "SSL 3.0 back on for WinHTTP clients; 0xA80 (TLS 1.0-1.2) is the safer value"
        ]
    else:
        warnings_early = []

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
    warnings: list[str] = list(warnings_early)
    if not winrm_defaults["validate_certs"]:
        warnings.append(
            f"{file}:{ctx.lines.get('winrm.validate_certs')}: winrm.validate_certs"
            " is false: the servers' WinRM certificates are NOT checked "
            "(a man in the middle could read the passwords)"
        )
    for name, entry in hosts_map.items():
        fld = f"hosts.{name}"
        line = hosts_map.key_line(name)
        if not _HOST_NAME.fullmatch(name):
            raise ctx.error(  # repr: a newline or control character shows as written
                f"{name!r} is not a valid host name (letters, digits, '.', '-', "
                "'_'; up to 63 characters)",
                line,
                fld if name.isprintable() else "hosts",  # the message stays one line
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
        address = _address(ctx, h, f"{fld}.address")
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
            search_port=ctx.port(h, "search_port", f"{fld}.search_port", 19000) or 19000,
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

    prerequisites = PrerequisiteSettings(
        status_report_hosts=_status_report_hosts(ctx, pre_map, hosts),
        winhttp_protocols=winhttp,
        reboot=ctx.boolean(pre_map, "reboot", "prerequisites.reboot", True),
    )
    fleet = Fleet(
        path=file,
        install_dir=install_dir,
        hosts=hosts,
        certificate=certificate,
        rollout=rollout,
        normalized={},
        warnings=warnings,
        prerequisites=prerequisites,
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


def _winhttp_protocols(ctx: _Ctx, m: _Map) -> int:
    """`prerequisites.winhttp_protocols`: 0xA80 (default) or 0xAA0, as a number (YAML reads
    `0xAA0` as one) or as the text "0xAA0"."""
    fld = "prerequisites.winhttp_protocols"
    if "winhttp_protocols" not in m or m["winhttp_protocols"] is None:
        return WINHTTP_SAFE
    value = m["winhttp_protocols"]
    if isinstance(value, str) and re.fullmatch(r"0[xX][0-9A-Fa-f]{1,8}", value.strip()):
        value = int(value.strip(), 16)
    if isinstance(value, bool) or value not in WINHTTP_CHOICES:
        raise ctx.error(
            f"expected 0xA80 (TLS 1.0-1.2) or 0xAA0 (the vendor's value, SSL 3.0 too), got "
            f"{value!r}",
            m.key_line("winhttp_protocols"),
            fld,
        )
    return int(value)


def _status_report_hosts(ctx: _Ctx, m: _Map, hosts: dict[str, Host]) -> tuple[str, ...] | None:
    """`prerequisites.status_report_hosts`: names of inventory hosts with a TLS role."""
    fld = "prerequisites.status_report_hosts"
    if "status_report_hosts" not in m or m["status_report_hosts"] is None:
        return None
    value = m["status_report_hosts"]
    line = m.key_line("status_report_hosts")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.error(f"expected a list of host names, got {_kind(value)}", line, fld)
    for name in value:
        host = hosts.get(name)
        if host is None:
            raise ctx.error(f"'{name}' is not a host of this inventory", line, fld)
        if not host.manages_tls:
            raise ctx.error(
                f"'{name}' has role {host.role}: TealeafStatus runs on Tealeaf servers only",
                line,
                fld,
            )
    return tuple(dict.fromkeys(value))


def _rel(p: Path | None, base: Path) -> str | None:
    """A path for the digest: relative to the inventory folder when inside it, so moving the
    whole folder (inventory + PFX + CA) does not change the plan's digest."""
    if p is None:
        return None
    try:
        return p.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(p)


def _restart_times(ctx: _Ctx, roll_map: _Map) -> dict[str, int]:
    """`rollout.restart_s`: {role: seconds} for the roles that restart (the plan's window)."""
    if "restart_s" not in roll_map:
        return {}
    times = ctx.mapping(
        roll_map["restart_s"], "rollout.restart_s", roll_map.key_line("restart_s"), TLS_ROLES
    )
    out: dict[str, int] = {}
    for role in TLS_ROLES:
        value = ctx.integer(
            times, role, f"rollout.restart_s.{role}", None, low=1, high=86400, what="seconds"
        )
        if value is not None:
            out[role] = value
    return out


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
            "search_port": h.search_port,
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
            # only when set, so that inventories without it keep their digest
            **({"restart_s": dict(sorted(r.restart_s.items()))} if r.restart_s else {}),
        },
        "prerequisites": {
            "status_report_hosts": (
                None
                if fleet.prerequisites.status_report_hosts is None
                else list(fleet.prerequisites.status_report_hosts)
            ),
            "winhttp_protocols": fleet.prerequisites.winhttp_protocols,
            "reboot": fleet.prerequisites.reboot,
        },
        "hosts": hosts,
    }
