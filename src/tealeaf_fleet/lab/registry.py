"""A simulated HKLM hive persisted as `hosts/NAME/registry.json` (key path -> name -> value).

Windows compares key paths and value names case-insensitively but keeps the case they were
created with; so does this model. Key paths are stored in PowerShell's provider form
(`HKLM:\\SOFTWARE\\...`); `HKLM\\`, `HKEY_LOCAL_MACHINE\\` and `Registry::` spellings are
accepted. DWORDs are JSON integers, strings JSON strings: the file's shape stays the one
docs/architecture.md "Lab files (fixed shapes)" fixes, and the kind is implied by the JSON type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tealeaf_fleet.lab.events import write_json_atomic
from tealeaf_fleet.lab.hosterror import HostError

TEALEAF_KEY = r"HKLM:\SOFTWARE\Wow6432Node\TeaLeaf Technology"
SECURITY_KEY = TEALEAF_KEY + r"\security"
SCHANNEL_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL"
TLS12_SERVER_KEY = SCHANNEL_KEY + r"\Protocols\TLS 1.2\Server"
TLS12_CLIENT_KEY = SCHANNEL_KEY + r"\Protocols\TLS 1.2\Client"
NDP_KEY = r"HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP"  # .NET Framework setup keys
FIPS_KEY = r"HKLM:\SYSTEM\CurrentControlSet\Control\Lsa\FipsAlgorithmPolicy"

_PREFIXES = (
    ("registry::hkey_local_machine\\", "HKLM:\\"),
    ("microsoft.powershell.core\\registry::hkey_local_machine\\", "HKLM:\\"),
    ("hkey_local_machine\\", "HKLM:\\"),
    ("hklm:\\", "HKLM:\\"),
    ("hklm\\", "HKLM:\\"),
)


class RegistryError(HostError):
    """A key path outside HKLM or a value that does not fit its kind."""


def normalize_key(key: str) -> str:
    """Canonical `HKLM:\\A\\B` form of a key path (case kept, separators unified)."""
    text = key.replace("/", "\\").strip()
    while "\\\\" in text:
        text = text.replace("\\\\", "\\")
    text = text.rstrip("\\")
    low = text.lower()
    for prefix, canon in _PREFIXES:
        if low.startswith(prefix):
            return canon + text[len(prefix) :]
        if low + "\\" == prefix:
            return canon.rstrip("\\")
    raise RegistryError(f"Cannot find path '{key}' because it is not an HKLM registry path.")


def coerce(value: Any, kind: str) -> int | str:
    """A value as the registry would store it for `kind` (DWord or String)."""
    k = kind.lower()
    if k == "dword":
        try:
            number = int(str(value).strip(), 0) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise RegistryError(f"The value '{value}' is not a valid DWORD.") from None
        if not 0 <= number <= 0xFFFFFFFF:
            raise RegistryError(f"The value '{value}' is out of range for a DWORD.")
        return number
    if k in ("string", "expandstring"):
        return str(value)
    raise RegistryError(f"Unsupported registry value kind '{kind}' (DWord or String).")


class Registry:
    """Thread-safe hive; every change is persisted at once and reported through `on_change`."""

    def __init__(self, path: Path, on_change: Callable[[str, str, Any], None]) -> None:
        self.path = path
        self._on_change = on_change
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, Any]] = {}

    # -- lookup helpers ------------------------------------------------------------------
    def _find_key(self, key: str) -> str | None:
        canon = normalize_key(key).lower()
        for existing in self._data:
            if existing.lower() == canon:
                return existing
        return None

    @staticmethod
    def _find_name(values: dict[str, Any], name: str) -> str | None:
        low = name.lower()
        for existing in values:
            if existing.lower() == low:
                return existing
        return None

    # -- API -------------------------------------------------------------------------------
    def get(self, key: str, name: str) -> Any:
        with self._lock:
            found = self._find_key(key)
            if found is None:
                return None
            values = self._data[found]
            vname = self._find_name(values, name)
            return None if vname is None else values[vname]

    def set(self, key: str, name: str, value: Any, kind: str = "DWord") -> int | str:
        """Create the key if needed and set the value; returns the stored value."""
        stored = coerce(value, kind)
        with self._lock:
            found = self._find_key(key) or normalize_key(key)
            values = self._data.setdefault(found, {})
            vname = self._find_name(values, name) or name
            values[vname] = stored
            self._save()
        self._on_change(found, vname, stored)
        return stored

    def delete(self, key: str, name: str | None = None) -> bool:
        """Delete one value, or (name None) the key with its subkeys. True when it existed."""
        with self._lock:
            found = self._find_key(key)
            if name is None:
                canon = normalize_key(key).lower()
                doomed = [
                    k
                    for k in self._data
                    if k.lower() == canon or k.lower().startswith(canon + "\\")
                ]
                for k in doomed:
                    del self._data[k]
                if doomed:
                    self._save()
                removed = bool(doomed)
                label = found or normalize_key(key)
            else:
                if found is None:
                    return False
                vname = self._find_name(self._data[found], name)
                if vname is None:
                    return False
                del self._data[found][vname]
                self._save()
                removed, label = True, found
        if removed:
            self._on_change(label, name or "", None)
        return removed

    def key_exists(self, key: str) -> bool:
        """Test-Path of a key: it exists when it holds values or is the parent of one that
        does (the hive stores only keys with values, so parents are implied)."""
        canon = normalize_key(key).lower()
        with self._lock:
            return any(k.lower() == canon or k.lower().startswith(canon + "\\") for k in self._data)

    def value_names(self, key: str) -> list[str]:
        """RegistryKey.GetValueNames(): the names as created, never the values ([] if absent)."""
        with self._lock:
            found = self._find_key(key)
            return list(self._data[found]) if found is not None else []

    def subkey_names(self, key: str) -> list[str]:
        """RegistryKey.GetSubKeyNames(): the direct children's names, as created."""
        canon = normalize_key(key).lower() + "\\"
        with self._lock:
            children = {
                k[len(canon) :].split("\\")[0] for k in self._data if k.lower().startswith(canon)
            }
        return sorted(children, key=str.lower)

    def load(self, data: dict[str, dict[str, Any]]) -> None:
        """Replace the whole hive (lab creation); no events."""
        with self._lock:
            self._data = {normalize_key(k): dict(v) for k, v in data.items()}
            self._save()

    def _save(self) -> None:
        write_json_atomic(self.path, self._data)
