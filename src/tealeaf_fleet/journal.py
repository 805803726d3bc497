"""The run journal: what every rollout/rollback did, written at every transition.

Why SQLite (stdlib, WAL): the journal must survive a controller killed with SIGKILL in the middle
of a rolling restart, because the rerun reads it to know which hosts were already restarted and
passed their gates. Every write is its own committed transaction (autocommit); WAL with
`synchronous=NORMAL` loses nothing when only the process dies.

Files in the state folder (`.tealeaf-fleet/` next to the inventory, or `--state-dir`):
- `journal.sqlite` (+ WAL files): tables `runs` and `steps`, and `evidence` (what `fleet report`
  shows that the steps do not hold: each host's state before and after, every gate verdict, the
  warnings and findings, as JSON per row; added with `CREATE TABLE IF NOT EXISTS`, so an older
  journal gains it on first open and its older runs simply have no evidence);
- `lock`: one active run per state folder. Held with `fcntl.flock` (on Windows `msvcrt.locking`,
  see procutil.py) for the life of the process (the system drops it when the process dies,
  however it dies) and carrying the holder's pid, so
  a second run is refused naming that pid, and a lock left by a dead process is taken over with
  a message;
- `run-<id>.log`: one plain-text log per run, every line passed through `redact()`.

One run per fleet, not per state folder: a run also locks every host it contacts, one lock file
per host (address and WinRM port, normalised: `host_key`) in a folder every run of this
controller shares (`lock_dir()`: `$TEALEAF_FLEET_LOCK_DIR`, else `~/.cache/tealeaf-fleet/locks`,
0700; on Windows `%LOCALAPPDATA%/tealeaf-fleet/locks`), with the same lock / pid / take-over
rules, taken in sorted order. So a second rollout
against any of the same hosts is refused whatever `--state-dir` it was given, naming the host,
the holder's pid and its state folder. The limit: the locks are local files, so they guard
against runs of the same user account on one controller; two controllers (or two accounts with
other home folders), or one host listed under two names, are not detected.

Nothing secret is ever stored: messages go through `redact()` before they are written.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import json
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tealeaf_fleet.errors import ConcurrentRunError, InputError
from tealeaf_fleet.procutil import on_windows, pid_alive, read_at, try_lock, write_at
from tealeaf_fleet.safeio import O_BINARY
from tealeaf_fleet.secrets import redact

try:  # POSIX controllers: a host lock file is removed on release (see HostLock.release)
    import fcntl
except ImportError:  # Windows controller: an open file cannot be removed; it is emptied
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
# columns `reboots` gained after schema 1 (added to older journals when opened)
REBOOT_COLUMNS = {"boot": "TEXT", "rebooted": "INTEGER NOT NULL DEFAULT 0"}
STATE_DIR_NAME = ".tealeaf-fleet"
DONE_OUTCOMES = ("ok", "changed", "skipped")
STEP_OUTCOMES = ("ok", "changed", "skipped", "failed")
# Run outcomes: "ok", "failed" (a step or gate failed: halted), "blocked" (preflight: nothing
# changed), "interrupted" (Ctrl-C or SIGTERM), "crashed" (an unexpected error: a bug; details in
# the crash log); NULL while running or when the controller died.
RUN_OUTCOMES = ("ok", "failed", "blocked", "interrupted", "crashed")
LOCK_DIR_ENV = "TEALEAF_FLEET_LOCK_DIR"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    user TEXT,
    controller TEXT,
    pid INTEGER,
    inventory_path TEXT,
    inventory_digest TEXT,
    playbook TEXT,
    plan_digest TEXT,
    tool_version TEXT,
    started REAL NOT NULL,
    finished REAL,
    outcome TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs(id),
    phase TEXT NOT NULL,
    host TEXT NOT NULL,
    action TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    outcome TEXT,
    message TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run);
CREATE TABLE IF NOT EXISTS reboots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER REFERENCES runs(id),
    host TEXT NOT NULL,
    since TEXT NOT NULL,
    areas TEXT NOT NULL,
    recorded REAL NOT NULL,
    boot TEXT,
    rebooted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs(id),
    host TEXT,
    kind TEXT NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_run ON evidence(run);
"""


def default_state_dir(inventory_path: str | Path) -> Path:
    """`.tealeaf-fleet/` in the inventory's folder: the state belongs to the estate it describes."""
    return Path(inventory_path).resolve().parent / STATE_DIR_NAME


@dataclass(frozen=True)
class RunRecord:
    id: int
    command: str
    user: str | None
    controller: str | None
    pid: int | None
    inventory_path: str | None
    inventory_digest: str | None
    playbook: str | None
    plan_digest: str | None
    tool_version: str | None
    started: float
    finished: float | None
    outcome: str | None
    message: str | None

    @property
    def state(self) -> str:
        """The outcome, or `running` / `crashed` for a run that never finished."""
        if self.outcome:
            return self.outcome
        return "running" if self.pid and pid_alive(self.pid) else "crashed"

    def to_json(self) -> dict:
        data = dict(self.__dict__)
        data["state"] = self.state
        return data


@dataclass(frozen=True)
class StepRecord:
    id: int
    run: int
    phase: str
    host: str
    action: str
    started: float
    finished: float | None
    outcome: str | None
    message: str | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EvidenceRecord:
    """One piece of evidence of a run (`Journal.record`): `kind` says what `data` holds."""

    id: int
    run: int
    host: str | None
    kind: str
    ts: float
    data: dict


class RunLock:
    """One lock file: the state folder's (one active run per folder) or a host's (one run per
    host, see `HostLocks`). `acquire()` raises ConcurrentRunError while another live process
    holds it; `takeover` says whose dead lock was taken over (or None). `host` names the host a
    host lock guards; such a lock file is removed on a clean release (the folder is shared by
    every fleet this controller ever ran against)."""

    def __init__(self, path: Path, *, host: str | None = None, state_dir: Path | None = None):
        self.path = path
        self.host = host
        self.state_dir = state_dir
        self._fd: int | None = None
        self.takeover: str | None = None
        self.previous: dict | None = None

    def acquire(self, *, command: str) -> None:
        for _ in range(10):  # a holder that released (and removed the file) in between: again
            fd = self._open()
            try:
                previous = self._read(fd)
                taken = try_lock(fd)
                if taken is False:
                    raise self._refusal(previous)
                if taken is None and previous and pid_alive(int(previous.get("pid", 0))):
                    raise self._refusal(previous)  # pragma: no cover - no lock call at all
            except BaseException:
                os.close(fd)
                raise
            if self._still_linked(fd):
                break
            os.close(fd)
        else:  # pragma: no cover - ten releases in a row between open and flock
            raise ConcurrentRunError(f"cannot take {self.path}: its holders keep changing")
        self.previous = previous
        if previous and previous.get("pid") and previous.get("pid") != os.getpid():
            self.takeover = (
                f"took over the lock left by pid {previous.get('pid')} "
                f"({previous.get('command', '?')}, run {previous.get('run', '?')}), "
                "which is no longer running"
            )
        self._fd = fd
        self._write(
            {
                "pid": os.getpid(),
                "command": command,
                "run": None,
                "started": time.time(),
                "controller": socket.gethostname(),
                "state_dir": str(self.state_dir) if self.state_dir else None,
                "host": self.host,
            }
        )

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | O_BINARY | getattr(os, "O_NOFOLLOW", 0)
        hint = f"set {LOCK_DIR_ENV} to a folder of your own" if self.host else None
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise InputError(
                f"lock file {self.path} cannot be opened: {exc.strerror}", hint=hint
            ) from None
        # The lock file is written (pid, command): a FIFO would block, and a hard link planted
        # in a shared folder would make us overwrite the file it points at.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            what = "is not a regular file" if not stat.S_ISREG(info.st_mode) else "has other links"
            raise InputError(f"lock file {self.path} {what}; remove it", hint=hint)
        return fd

    def _still_linked(self, fd: int) -> bool:
        """Whether the file we locked is still the one at `path` (a releasing holder removes
        its host lock file; locking the removed file would guard nothing)."""
        if fcntl is None or self.host is None:
            return True
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def set_run(self, run_id: int) -> None:
        """Record the run id in the lock so a refused second run can name it."""
        if self._fd is None:
            return
        data = self._read(self._fd) or {}
        data["run"] = run_id
        self._write(data)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # a clean release leaves nothing to "take over"
        if self.host is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # still holding it: no one else has this file locked
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def _write(self, data: dict) -> None:
        assert self._fd is not None
        raw = json.dumps(data).encode()
        os.ftruncate(self._fd, 0)
        write_at(self._fd, raw, 0)
        os.fsync(self._fd)

    @staticmethod
    def _read(fd: int) -> dict | None:
        raw = read_at(fd, 4096, 0)
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _refusal(self, holder: dict | None) -> ConcurrentRunError:
        holder = holder or {}
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("command"):
            who += f" ({holder['command']}"
            who += f", run {holder['run']})" if holder.get("run") else ")"
        if self.host is None:
            return ConcurrentRunError(
                f"another run holds {self.path}: {who} is still running",
                hint="wait for it to finish, or stop it; two runs against one inventory are "
                "refused",
            )
        return ConcurrentRunError(
            f"another run is working on {self.host}: {who} is still running, with state "
            f"folder {holder.get('state_dir') or '?'}",
            hint="wait for it to finish, or stop it; two runs against the same hosts are "
            "refused, whatever their state folders",
        )


def lock_dir() -> Path:
    """The host locks' folder, shared by every run of this user on this controller."""
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        return Path(override)
    local = os.environ.get("LOCALAPPDATA") if on_windows() else None
    if local:  # where Windows keeps per-user, per-machine application data
        return Path(local) / "tealeaf-fleet" / "locks"
    return Path.home() / ".cache" / "tealeaf-fleet" / "locks"


def host_key(address: str, port: int) -> str:
    """A host's lock name: the address normalised (case, a trailing dot, IPv6 brackets and
    spellings) and the WinRM port, as a file name. The lab runs every host on 127.0.0.1, so the
    port is part of the key (as it is of the inventory's "same machine" rule)."""
    text = address.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    with contextlib.suppress(ValueError):
        text = ipaddress.ip_address(text).compressed
    safe = "".join(
        c if c.isascii() and (c.isalnum() or c in ".-") else f"%{ord(c):02x}" for c in text
    )
    return f"{safe}_{int(port)}.lock"


class HostLocks:
    """One run per host: the lock of every host a run contacts (see the module docstring).
    Taken in sorted order, all or none: a refusal releases what was taken."""

    def __init__(self, hosts: Iterable[tuple[str, str, int]], state_dir: Path) -> None:
        """hosts: (name, address, WinRM port) of each host the run contacts."""
        self.folder = lock_dir()
        self.state_dir = state_dir
        by_key = {
            host_key(address, port): f"{name} ({address}:{port})" for name, address, port in hosts
        }
        self.locks = [
            RunLock(self.folder / key, host=label, state_dir=state_dir)
            for key, label in sorted(by_key.items())
        ]
        self.takeover: str | None = None

    def acquire(self, *, command: str) -> None:
        if not self.locks:
            return
        self._make_folder()
        _room_for_files(len(self.locks))
        taken: list[RunLock] = []
        try:
            for lock in self.locks:
                lock.acquire(command=command)
                taken.append(lock)
        except BaseException:
            for lock in taken:
                lock.release()
            raise
        dead = {}
        for lock in taken:
            if lock.takeover and lock.previous:
                dead.setdefault(lock.previous.get("pid"), (lock.previous, []))[1].append(lock.host)
        if dead:
            self.takeover = "; ".join(
                f"took over the host locks of {_names(hosts)} left by pid {pid} "
                f"({prev.get('command', '?')}, run {prev.get('run', '?')}, state folder "
                f"{prev.get('state_dir') or '?'}), which is no longer running"
                for pid, (prev, hosts) in dead.items()
            )

    def set_run(self, run_id: int) -> None:
        for lock in self.locks:
            lock.set_run(run_id)

    def release(self) -> None:
        for lock in self.locks:
            lock.release()

    def _make_folder(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.environ.get(LOCK_DIR_ENV):
                os.chmod(self.folder, 0o700)
            mode = self.folder.stat().st_mode
        except OSError as exc:
            raise InputError(
                f"lock folder {self.folder} cannot be created: {exc.strerror}",
                hint=f"set {LOCK_DIR_ENV} to a folder of your own",
            ) from None
        # A team may share a group-writable folder (so runs of several accounts see each
        # other's locks); a world-writable one lets anyone plant or remove a lock.
        if os.name == "posix" and mode & stat.S_IWOTH:
            raise InputError(
                f"lock folder {self.folder} is writable by every account; "
                "make it private (chmod o-w) or set another",
                field=LOCK_DIR_ENV,
            )


def _names(hosts: list[str | None]) -> str:
    names = [h.split(" ")[0] for h in hosts if h]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _room_for_files(count: int) -> None:
    """Raise the soft open-files limit towards the hard one when a run holds one lock file per
    host: a 1,000-host fleet would otherwise hit the usual soft limit of 1,024."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows controller
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 512  # connections, the journal, the logs
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Journal:
    """The SQLite journal of one state folder. Thread-safe: the engine writes from its worker
    threads through one connection guarded by a lock."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(
                f"state folder {self.state_dir} cannot be created: {exc.strerror}",
                hint="use --state-dir DIR",
            ) from None
        self.path = self.state_dir / "journal.sqlite"
        self._lock = threading.Lock()
        try:  # a file that is no SQLite database (or a folder) is bad input, not a crash
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._add_reboot_columns()
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"journal {self.path} cannot be opened: {exc}",
                hint="it is not a journal this tool wrote: move it aside, or use --state-dir",
            ) from None
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
        )
        self._run_lock: RunLock | None = None
        self._host_locks: HostLocks | None = None
        self._logs: dict[int, object] = {}

    def _add_reboot_columns(self) -> None:
        """Journals from before the boot-time comparison lack `reboots.boot` and `rebooted`:
        add them (their rows keep boot NULL, judged the old way by
        `ops.checks.pending_reboot_since`)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(reboots)")}
        for column, kind in REBOOT_COLUMNS.items():
            if column not in columns:
                self._db.execute(f"ALTER TABLE reboots ADD COLUMN {column} {kind}")

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self.release()
        with self._lock:
            for fh in self._logs.values():
                fh.close()  # type: ignore[attr-defined]
            self._logs.clear()
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire(self, *, command: str, hosts: Iterable[tuple[str, str, int]] = ()) -> str | None:
        """Take the state folder's run lock, then the lock of each host in `hosts` ((name,
        address, WinRM port) of each host the run contacts); returns the take-over message(s),
        if any. All or none: a refused host lock releases the folder's lock too."""
        lock = RunLock(self.state_dir / "lock")
        lock.acquire(command=command)
        host_locks = HostLocks(hosts, self.state_dir.resolve())
        try:
            host_locks.acquire(command=command)
        except BaseException:
            lock.release()
            raise
        self._run_lock, self._host_locks = lock, host_locks
        messages = [m for m in (lock.takeover, host_locks.takeover) if m]
        return "; ".join(messages) or None

    def release(self) -> None:
        if self._host_locks is not None:
            self._host_locks.release()
            self._host_locks = None
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    # --- writes -------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        command: str,
        inventory_path: str | Path | None = None,
        inventory_digest: str | None = None,
        playbook: str | None = None,
        plan_digest: str | None = None,
        tool_version: str | None = None,
    ) -> int:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            user = str(os.getuid()) if hasattr(os, "getuid") else None
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs(command, user, controller, pid, inventory_path,"
                " inventory_digest, playbook, plan_digest, tool_version, started)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    command,
                    user,
                    socket.gethostname(),
                    os.getpid(),
                    str(inventory_path) if inventory_path else None,
                    inventory_digest,
                    playbook,
                    plan_digest,
                    tool_version,
                    time.time(),
                ),
            )
            run_id = int(cur.lastrowid)
        for lock in (self._run_lock, self._host_locks):
            if lock is not None:
                lock.set_run(run_id)
        self.log(run_id, f"run {run_id} started: {command} {inventory_path or ''}".rstrip())
        return run_id

    def finish_run(self, run_id: int, outcome: str, message: str | None = None) -> None:
        if outcome not in RUN_OUTCOMES:
            raise ValueError(f"unknown run outcome {outcome!r}")
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished=?, outcome=?, message=? WHERE id=?",
                (time.time(), outcome, _clean(message), run_id),
            )
        self.log(run_id, f"run {run_id} finished: {outcome}" + (f": {message}" if message else ""))

    def step_started(self, run_id: int, phase: str, host: str, action: str) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO steps(run, phase, host, action, started) VALUES (?,?,?,?,?)",
                (run_id, phase, host, action, time.time()),
            )
            step_id = int(cur.lastrowid)
        self.log(run_id, f"{phase} {host} {action}: started")
        return step_id

    def step_finished(self, step_id: int, outcome: str, message: str | None = None) -> None:
        if outcome not in STEP_OUTCOMES:
            raise ValueError(f"unknown step outcome {outcome!r}")
        with self._lock:
            self._db.execute(
                "UPDATE steps SET finished=?, outcome=?, message=? WHERE id=?",
                (time.time(), outcome, _clean(message), step_id),
            )
            row = self._db.execute(
                "SELECT run, phase, host, action FROM steps WHERE id=?", (step_id,)
            ).fetchone()
        if row:
            self.log(
                row[0],
                f"{row[1]} {row[2]} {row[3]}: {outcome}" + (f": {message}" if message else ""),
            )

    def note(self, step_id: int, detail: dict) -> None:
        """Attach facts a later resume needs to a step (JSON; e.g. the services that were
        running before a restart, which a half-failed restart leaves stopped). No secrets."""
        with self._lock:
            self._db.execute(
                "UPDATE steps SET detail=? WHERE id=?",
                (_clean(json.dumps(detail, sort_keys=True)), step_id),
            )

    def first_detail(
        self, plan_digest: str, phase: str, host: str, action: str, *, before_run: int | None = None
    ) -> dict | None:
        """The oldest `note()` of this step in the runs being resumed: what was true before
        the first attempt."""
        chain = self.resume_chain(plan_digest, before_run=before_run)
        if not chain:
            return None
        marks = ",".join("?" * len(chain))
        with self._lock:
            row = self._db.execute(
                f"SELECT detail FROM steps WHERE run IN ({marks}) AND phase=? AND host=?"
                " AND action=? AND detail IS NOT NULL ORDER BY id LIMIT 1",
                (*chain, phase, host, action),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def reboot_needed(
        self, run_id: int | None, host: str, since: str, areas: list[str], boot: str = ""
    ) -> None:
        """Record that this tool changed values on `host` that take effect at boot (`areas`:
        schannel, dotnet, winhttp), at host-local time `since` (shown to people), in the
        boot that started at `boot` (the host's LastBootUpTime in UTC; "" when unknown). The
        reboot is pending while the host still runs that boot (`ops.checks.
        pending_reboot_since`), so a reboot by anyone clears it and nothing here needs
        deleting; a record with an unknown boot waits for a reboot by this tool
        (`rebooted`)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO reboots(run, host, since, areas, recorded, boot, rebooted)"
                " VALUES (?,?,?,?,?,?,0)",
                (run_id, host, _clean(since), ",".join(areas), time.time(), boot or ""),
            )

    def rebooted(self, run_id: int | None, host: str, since: str) -> None:
        """Record that this tool rebooted `host` (scheduled at host-local `since`): no earlier
        record of it is pending any more, whatever the boot times say."""
        with self._lock:
            self._db.execute(
                "INSERT INTO reboots(run, host, since, areas, recorded, boot, rebooted)"
                " VALUES (?,?,?,'',?,'',1)",
                (run_id, host, _clean(since), time.time()),
            )

    def reboot_records(self) -> dict[str, list[dict]]:
        """host -> [{"since", "areas", "run", "boot", "rebooted"}], oldest first: every change
        that needed a reboot, and every reboot by this tool (status and preflight compare
        them with the host's last boot). `boot` is None on rows from older journals."""
        with self._lock:
            rows = self._db.execute(
                "SELECT host, since, areas, run, boot, rebooted FROM reboots ORDER BY id"
            ).fetchall()
        out: dict[str, list[dict]] = {}
        for host, since, areas, run, boot, rebooted in rows:
            out.setdefault(host, []).append(
                {
                    "since": since,
                    "areas": [a for a in areas.split(",") if a],
                    "run": run,
                    "boot": boot,
                    "rebooted": bool(rebooted),
                }
            )
        return out

    def unfinished_import(self, host: str, *, before_run: int) -> str | None:
        """The fingerprint an import on `host` started to install (its `importing` note) and
        that no later import on that host finished, looking at every run before `before_run`
        whatever its plan: editing the inventory after a halted rotation (a new plan digest)
        must not make a half-done import look finished. None when the host's newest import
        step finished (ok, changed or skipped) or never left a note."""
        with self._lock:
            rows = self._db.execute(
                "SELECT outcome, detail FROM steps WHERE host=? AND action='import' AND run<?"
                " ORDER BY id DESC",
                (host, before_run),
            ).fetchall()
        for outcome, detail in rows:
            if outcome in DONE_OUTCOMES:
                return None
            try:
                note = json.loads(detail) if detail else {}
            except ValueError:
                note = {}
            if isinstance(note, dict) and isinstance(note.get("importing"), str):
                return note["importing"]
        return None

    def record(self, run_id: int, kind: str, data: dict, *, host: str | None = None) -> None:
        """Keep one piece of evidence for `fleet report` (engine/evidence.py says which kinds).
        The JSON text is redacted like every other message: no secret is ever stored."""
        text = _clean(json.dumps(data, sort_keys=True, default=str)) or "{}"
        with self._lock:
            self._db.execute(
                "INSERT INTO evidence(run, host, kind, ts, data) VALUES (?,?,?,?,?)",
                (run_id, host, kind, time.time(), text),
            )

    def evidence(self, run_id: int, kind: str | None = None) -> list[EvidenceRecord]:
        """A run's evidence in the order it was recorded (optionally of one kind)."""
        query = "SELECT id, run, host, kind, ts, data FROM evidence WHERE run=?"
        args: tuple = (run_id,)
        if kind is not None:
            query += " AND kind=?"
            args = (run_id, kind)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        out = []
        for id_, run, host, kind_, ts, data in rows:
            try:
                parsed = json.loads(data)
            except ValueError:  # redaction never breaks JSON, but a hand-edited row may
                parsed = {"text": data}
            out.append(EvidenceRecord(id_, run, host, kind_, ts, parsed))
        return out

    def log(self, run_id: int, line: str) -> None:
        """Append one line to the run's log file (redacted, timestamped)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        text = f"{stamp}Z {_clean(line)}\n"
        with self._lock:
            fh = self._logs.get(run_id)
            if fh is None:
                path = self.log_path(run_id)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                fh = self._logs[run_id] = os.fdopen(fd, "a", encoding="utf-8")
            fh.write(text)  # type: ignore[attr-defined]
            fh.flush()  # type: ignore[attr-defined]

    def log_path(self, run_id: int) -> Path:
        return self.state_dir / f"run-{run_id}.log"

    # --- queries ------------------------------------------------------------------------------

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """The latest runs, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [RunRecord(*row) for row in rows]

    def run(self, run_id: int) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id=?", (run_id,)
            ).fetchone()
        return RunRecord(*row) if row else None

    def steps(self, run_id: int) -> list[StepRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE run=? ORDER BY id", (run_id,)
            ).fetchall()
        return [StepRecord(*row) for row in rows]

    def resume_chain(self, plan_digest: str, *, before_run: int | None = None) -> list[int]:
        """The runs a new run of `plan_digest` continues: walking back from the newest, every
        unfinished / halted / interrupted run of this plan, stopping at one that finished ok
        (nothing left to resume) or at a run of another plan that got past preflight (it changed
        the fleet, e.g. a rollback, so older steps no longer describe it)."""
        query = f"SELECT {_RUN_COLUMNS} FROM runs"
        args: tuple = ()
        if before_run is not None:
            query += " WHERE id < ?"
            args = (before_run,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC", args).fetchall()
        chain: list[int] = []
        for record in (RunRecord(*row) for row in rows):
            if record.plan_digest != plan_digest:
                if record.outcome == "blocked":
                    continue  # refused at preflight: changed nothing
                break
            if record.outcome == "ok":
                break
            chain.append(record.id)
        return chain

    def done_steps(
        self, plan_digest: str, *, before_run: int | None = None
    ) -> dict[tuple[str, str, str], int]:
        """(phase, host, action) -> run id, for every step that finished ok / changed / skipped
        in the runs this one resumes (see `resume_chain`)."""
        chain = self.resume_chain(plan_digest, before_run=before_run)
        if not chain:
            return {}
        marks = ",".join("?" * len(chain))
        with self._lock:
            rows = self._db.execute(
                f"SELECT phase, host, action, run FROM steps WHERE run IN ({marks})"
                f" AND outcome IN ({','.join('?' * len(DONE_OUTCOMES))}) ORDER BY id",
                (*chain, *DONE_OUTCOMES),
            ).fetchall()
        return {(phase, host, action): run for phase, host, action, run in rows}


_RUN_COLUMNS = (
    "id, command, user, controller, pid, inventory_path, inventory_digest, playbook,"
    " plan_digest, tool_version, started, finished, outcome, message"
)
_STEP_COLUMNS = "id, run, phase, host, action, started, finished, outcome, message"


def reboot_records_at(state_dir: str | Path) -> dict[str, list[dict]]:
    """`Journal.reboot_records` of the journal in `state_dir`, or {} when there is none yet
    (read-only commands never create a state folder)."""
    if not (Path(state_dir) / "journal.sqlite").is_file():
        return {}
    with Journal(state_dir) as journal:
        return journal.reboot_records()


def run_columns() -> str:
    """The `runs` columns in RunRecord's order, for readers that open the file themselves
    (status reads it read-only)."""
    return _RUN_COLUMNS


def _clean(text: str | None) -> str | None:
    return redact(text) if text else text
