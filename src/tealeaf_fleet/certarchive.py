"""The certificate archive: every PFX a fleet has used, kept in its state folder.

Why: a rotation replaces the pair on every server, and the way back (the previous pair, e.g.
when a partner system still trusts only the old one) must not depend on someone having kept the
file. So each run's certificate step copies the PFX it uses into
`<state folder>/certificates/<sha256>.pfx` (mode 0600, the PFX bytes exactly as they were, so
still protected by their own password) beside `<sha256>.json` (mode 0600: subject, validity,
where it came from, and every run that used it). The archive never holds a password: going back
(`fleet rollout --playbook rotate --certificate-from-archive FINGERPRINT`) asks for it from the
same kinds of source as any password (an environment variable or a 0600 file).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.safeio import MAX_INPUT_BYTES, read_regular_file, write_file

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tealeaf_fleet.certs import Pfx
    from tealeaf_fleet.inventory import Fleet
    from tealeaf_fleet.secrets import Secret

FOLDER = "certificates"
META_MAX_BYTES = 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One archived pair: its fingerprint, validity, origin and the runs that used it."""

    sha256: str
    subject: str
    not_before: str
    not_after: str
    source: str  # the file name it had when a run first used it
    archived_at: str
    runs: list[dict[str, Any]]
    pfx_path: Path

    def days_left(self, now: float | None = None) -> int:
        """Whole days until `not_after` (negative once expired)."""
        end = datetime.fromisoformat(self.not_after).replace(tzinfo=timezone.utc)
        moment = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
        return int((end - moment).total_seconds() // 86400)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pfx_path"] = str(self.pfx_path)
        data["days_left"] = self.days_left()
        return data


def folder(state_dir: Path) -> Path:
    return Path(state_dir) / FOLDER


def archive(
    state_dir: Path,
    pfx: Pfx,
    data: bytes,
    *,
    source: str,
    run_id: int | None,
    command: str,
    playbook: str | None,
    rotation: bool = False,
    replaces: Iterable[str] = (),
    resume_flags: str = "",
) -> Entry:
    """Keep `data` (the PFX bytes) as `<sha256>.pfx` and add this run to `<sha256>.json`.

    The PFX file is written once (0600, never replaced: its bytes are the evidence of what was
    installed); the metadata is rewritten with the run appended. `replaces`: the fingerprints
    a rotation found installed or presented at its preflight (the pair installed before the
    archive existed among them), so status counts them as the fleet's own during it."""
    where = folder(state_dir)
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {where}: {exc.strerror}", field="state folder") from None
    pfx_path = where / f"{pfx.sha256}.pfx"
    meta_path = where / f"{pfx.sha256}.json"
    meta = _read_meta(meta_path) if meta_path.exists() else None
    kept = _keep_pfx(pfx_path, data, (meta or {}).get("pfx_bytes_sha256"))
    if meta is None:
        cert = pfx.certificate
        meta = {
            "sha256": pfx.sha256,
            "subject": cert.subject.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%S"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": source,
            "archived_at": _now(),
            "runs": [],
        }
    meta["pfx_bytes_sha256"] = kept
    runs = meta.setdefault("runs", [])
    if run_id is None or all(r.get("run") != run_id for r in runs):
        runs.append(
            {
                "run": run_id,
                "command": command,
                "playbook": playbook,
                "rotation": rotation,
                "replaces": sorted(set(replaces) - {pfx.sha256}),
                "resume_flags": resume_flags,
                "at": _now(),
            }
        )
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    write_file(meta_path, text.encode("utf-8"), field="state folder", mode=0o600, through=False)
    return _entry(meta, pfx_path)


def _keep_pfx(path: Path, data: bytes, recorded: str | None) -> str:
    """Make `path` hold an intact archived PFX; returns the SHA-256 of its bytes. A file whose
    bytes match `recorded` (the hash the metadata keeps) stays as it is: the evidence of what
    was installed first. A missing file, or one a crash left half-written (its hash not the
    recorded one, or no metadata yet), is written beside and renamed over, so no reader ever
    sees a partial PFX. An entry from before hashes were recorded keeps its file."""
    import hashlib

    try:
        current = path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", field="state folder") from None
    if current is not None:
        digest = hashlib.sha256(current).hexdigest()
        if digest == recorded or (recorded is None and path.with_suffix(".json").exists()):
            return digest
    write_file(path, data, field="state folder", mode=0o600, through=False)
    return hashlib.sha256(data).hexdigest()


def entries(state_dir: Path) -> list[Entry]:
    """Every archived pair, the one first archived first."""
    where = folder(state_dir)
    if not where.is_dir():
        return []
    out = []
    for meta_path in sorted(where.glob("*.json")):
        meta = _read_meta(meta_path)
        pfx_path = meta_path.with_suffix(".pfx")
        if meta is None or not pfx_path.is_file():
            continue
        out.append(_entry(meta, pfx_path))
    return sorted(out, key=lambda e: (e.archived_at, e.sha256))


def find(state_dir: Path, fingerprint: str) -> Entry:
    """The archived pair whose fingerprint is `fingerprint` (hex, colons allowed, a unique
    prefix of at least 8 digits will do); InputError naming what is there otherwise."""
    wanted = fingerprint.replace(":", "").strip().lower()
    field = "--certificate-from-archive"
    if not re.fullmatch(r"[0-9a-f]{8,64}", wanted):
        raise InputError(
            "expected a SHA-256 fingerprint (8 to 64 hex digits, colons allowed)", field=field
        )
    known = entries(state_dir)
    matches = [e for e in known if e.sha256.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        listing = ", ".join(e.sha256[:16] for e in known) or "none"
        raise InputError(
            f"no archived certificate {wanted[:16]} in {folder(state_dir)} (archived: {listing})",
            field=field,
            hint="`fleet cert history INVENTORY` lists them",
        )
    raise InputError(
        f"{wanted} matches {len(matches)} archived certificates: give more digits", field=field
    )


def fleet_with_archived(fleet: Fleet, entry: Entry, password: Secret) -> Fleet:
    """The fleet with its certificate pointed at the archived pair (`source: file`), the
    password already read (the caller took it from --certificate-password-env or -file). The
    inventory digest covers the archived fingerprint, so an approved plan names the pair."""
    from tealeaf_fleet.inventory import CertificateSettings

    # A password file source keeps its own name; an env source is re-read by Fleet on demand.
    source = password.source
    env = source[len("env ") :] if source.startswith("env ") else None
    pfile = Path(source[len("file ") :]) if source.startswith("file ") else None
    settings = CertificateSettings(
        source="file", path=entry.pfx_path, password_env=env, password_file=pfile
    )
    normalized = json.loads(json.dumps(fleet.normalized))
    normalized["certificate"] = {
        "source": "archive",
        "sha256": entry.sha256,
        "password_env": env,
        "password_file": str(pfile) if pfile else None,
    }
    secrets = dict(fleet._file_secrets)
    if pfile is not None:
        secrets[str(pfile)] = password
    return dataclasses.replace(
        fleet, certificate=settings, normalized=normalized, _file_secrets=secrets
    )


def rerun_flags(certificate: Mapping[str, Any]) -> str:
    """The flags that point a rerun at the same archived pair (`certificate` is the
    inventory's normalized certificate section): `--certificate-from-archive` and the password
    flag with its variable or file name (never the password). '' unless the run used one."""
    sha = certificate.get("sha256")
    if certificate.get("source") != "archive" or not isinstance(sha, str):
        return ""
    text = f" --certificate-from-archive {sha[:16]}"
    if certificate.get("password_env"):
        text += f" --certificate-password-env {certificate['password_env']}"
    elif certificate.get("password_file"):
        text += f" --certificate-password-file {shlex.quote(str(certificate['password_file']))}"
    return text


@dataclass(frozen=True)
class Rotation:
    """The newest change of the state folder that got past preflight, when it was a rotation:
    the pair it installs, its run, and whether that run finished ok."""

    new_sha256: str
    run: int
    state: str  # the run's state: ok, failed, interrupted, running, crashed
    known: frozenset[str]  # every fingerprint the archive holds (the fleet's own pairs)
    resume_flags: str = ""  # what the rerun adds: --certificate-from-archive ... (rerun_flags)

    @property
    def resume_command(self) -> str:
        """The command that finishes this rotation, INVENTORY standing for the inventory."""
        return f"fleet rollout INVENTORY --playbook rotate{self.resume_flags}"

    @property
    def in_progress(self) -> bool:
        return self.state != "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "new_sha256": self.new_sha256,
            "run": self.run,
            "state": self.state,
            "in_progress": self.in_progress,
        }


class RotationUnknown(Exception):
    """The journal could not be read: whether a rotation is under way is not known."""


def last_rotation(state_dir: Path) -> Rotation | None:
    """Rotation state from the journal and the archive. Walking back from the newest run that
    got past preflight: runs that neither used a certificate (no archive record: troubleshoot,
    status, prepare) nor turned TLS off are skipped; the first run the archive records decides
    (a Rotation when it was one, else None: the fleet's last change was a rollout); a run that
    disabled TLS (a rollback) means no rotation is under way.

    Read-only: status must not create, migrate or lock a journal. RotationUnknown when the
    journal exists but cannot be read (damaged, locked, from another tool)."""
    import sqlite3

    from tealeaf_fleet.journal import RunRecord, run_columns

    state_dir = Path(state_dir)
    path = state_dir / "journal.sqlite"
    if not path.is_file():
        return None
    known = entries(state_dir)
    by_run: dict[int, tuple[Entry, dict[str, Any]]] = {}
    ours = {e.sha256 for e in known}
    for entry in known:
        for record in entry.runs:
            if isinstance(record.get("run"), int):
                by_run[record["run"]] = (entry, record)
            ours.update(s for s in record.get("replaces") or () if isinstance(s, str))
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                f"SELECT {run_columns()} FROM runs WHERE outcome IS NULL OR outcome != 'blocked'"
                " ORDER BY id DESC LIMIT 200"
            ).fetchall()
            disabled = {
                r[0] for r in db.execute("SELECT DISTINCT run FROM steps WHERE action='disable'")
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise RotationUnknown(f"journal {path} cannot be read: {exc}") from None
    for run in (RunRecord(*row) for row in rows):
        if run.id in by_run:
            entry, record = by_run[run.id]
            if not record.get("rotation"):
                return None
            return Rotation(
                entry.sha256,
                run.id,
                run.state,
                frozenset(ours),
                str(record.get("resume_flags") or ""),
            )
        if run.id in disabled:
            return None
    return None


def _entry(meta: dict[str, Any], pfx_path: Path) -> Entry:
    return Entry(
        sha256=str(meta.get("sha256")),
        subject=str(meta.get("subject") or ""),
        not_before=str(meta.get("not_before") or ""),
        not_after=str(meta.get("not_after") or ""),
        source=str(meta.get("source") or ""),
        archived_at=str(meta.get("archived_at") or ""),
        runs=[r for r in meta.get("runs") or [] if isinstance(r, dict)],
        pfx_path=pfx_path,
    )


def _read_meta(path: Path) -> dict[str, Any] | None:
    """An archive entry's metadata; None for a file that is not one (skipped, not fatal)."""
    try:
        raw = read_regular_file(path, min(META_MAX_BYTES, MAX_INPUT_BYTES), "archive entry")
        meta = json.loads(raw.decode("utf-8"))
    except (InputError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or not _HEX.fullmatch(str(meta.get("sha256"))):
        return None
    if path.stem != meta["sha256"]:
        return None
    try:  # the validity is what history shows and days_left computes: it must read as a date
        for key in ("not_before", "not_after"):
            datetime.fromisoformat(str(meta.get(key)))
    except ValueError:
        return None
    return meta


def _now() -> str:
    """UTC with microseconds: entries archived within one second still sort in order."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
