"""What one run knows while it runs: the fleet, the facts read at preflight, the PFX, which hosts
this run changed, and one WinRM connection per host.

Why a context object: actions are small functions (engine/actions.py) that need shared state
(the PFX made at the certificate step is pushed by the next phase; the services running at
preflight are the ones the restart brings back), and keeping it in one place makes the rules
about it visible: facts are refreshed only by the action that changed a host, and connections
are reused across phases (one shell per host, opened once).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import PureWindowsPath
from typing import TYPE_CHECKING, Any

from tealeaf_fleet.engine.peers import PeerState
from tealeaf_fleet.errors import FleetError

if TYPE_CHECKING:
    from tealeaf_fleet.certs import Pfx
    from tealeaf_fleet.engine.events import EventBus
    from tealeaf_fleet.engine.runner import Runner
    from tealeaf_fleet.inventory import Fleet, Host
    from tealeaf_fleet.secrets import Secret

Probe = Callable[..., Any]


class RunContext:
    """Shared state of one run; thread-safe where several hosts touch it at once."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        expect_tls: bool,
        bus: EventBus,
        stop: threading.Event | None = None,
        probe: Probe | None = None,
        connect: Callable[[Host], Any] | None = None,
        forks: int = 10,
    ) -> None:
        self.fleet = fleet
        self.expect_tls = expect_tls
        self.bus = bus
        self.stop = stop or threading.Event()
        self.forks = forks
        self._probe = probe
        self._connect = connect
        self.facts: dict[str, dict[str, Any]] = {}  # raw facts per host (preflight, refreshed)
        self._down_with_tls: dict[str, list[str]] = {}  # see down_with_tls
        self.blockers: dict[str, list[str]] = {}
        self.warnings: dict[str, list[str]] = {}
        self.warned_codes: set[str] = set()
        self.workstation_problems: dict[str, str] = {}  # RTV host -> why its phases are skipped
        self.pfx: Pfx | None = None
        self.pfx_bytes: bytes | None = None
        self.pfx_password: Secret | None = None
        self.changed: dict[str, set[str]] = {}  # host -> ops that changed it in this run
        self.step_ids: dict[tuple[str, str], int] = {}
        self.runner: Runner | None = None
        self.tool_cache: dict[str, dict[str, bytes]] = {}  # build -> file name -> bytes
        self.verify_status: dict[str, Any] = {}  # verify phase -> its FleetStatus
        self.peer_state = PeerState()  # rolling groups: gates passed, prefetched peer reads
        self.approved_plan: str | None = None  # the plan file the run was approved with
        self.force_restart = False  # restart even hosts whose gates pass (troubleshoot reboot)
        # a rotation (the plan's `rotation`): preflight records, per TLS host, the certificate
        # its TMS port presents, and `after_preflight` judges the fleet as a whole
        self.rotation = False
        # the run writes the vendor prerequisites (a preflight blocks what would stop them)
        self.writes_prerequisites = False
        self.serving: dict[str, str | None] = {}
        self._conns: dict[str, Any] = {}
        self._reboots: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.cache_lock = threading.Lock()  # guards tool_cache fills and the verify gather

    # --- wiring -----------------------------------------------------------------------------

    def attach(self, runner: Runner) -> None:
        self.runner = runner
        self.record(
            "plan", {"approved_plan": self.approved_plan, "digest": runner.plan.get("digest")}
        )

    @property
    def recording(self) -> bool:
        """Whether evidence is kept: only a run with a journal (not unit tests, the bench)."""
        runner = self.runner
        return runner is not None and runner.journal is not None and runner.run_id is not None

    def record(self, kind: str, data: dict[str, Any], *, host: str | None = None) -> None:
        """Keep evidence for `fleet report` in the journal (engine/evidence.py)."""
        if self.recording:
            assert self.runner is not None and self.runner.run_id is not None
            self.runner.journal.record(self.runner.run_id, kind, data, host=host)

    def host(self, name: str) -> Host:
        return self.fleet.hosts[name]

    def connection(self, host: Host) -> Any:
        """The host's WinRM connection, opened on first use and reused by every later phase.
        A host's steps never run concurrently, which keeps each connection thread-confined."""
        with self._lock:
            conn = self._conns.get(host.name)
        if conn is not None:
            return conn
        if self._connect is not None:
            conn = self._connect(host)
        else:
            from tealeaf_fleet.transport import Connection

            password = (
                None if host.winrm.transport == "certificate" else self.fleet.winrm_password(host)
            )
            conn = Connection(host, password)
        with self._lock:
            self._conns[host.name] = conn
        return conn

    def drop_connection(self, host: Host) -> None:
        """Forget a connection that a reboot or a failure made useless."""
        with self._lock:
            conn = self._conns.pop(host.name, None)
        if conn is not None:
            with contextlib.suppress(FleetError):  # the host went away: nothing to close
                conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(FleetError):  # best effort: the outcome is decided
                conn.close()

    def probe(self, address: str, port: int, timeout_s: float = 5.0) -> Any:
        if self._probe is not None:
            return self._probe(address, port, timeout_s=timeout_s)
        from tealeaf_fleet import tlsprobe

        return tlsprobe.handshake(address, port, timeout_s=timeout_s)

    def probe_tls12(self, address: str, port: int, timeout_s: float = 5.0) -> Any:
        """A TLS 1.2-only handshake (`tlsprobe.tls12_active`); a run given its own prober
        (tests, the bench) uses that one."""
        if self._probe is not None:
            return self._probe(address, port, timeout_s=timeout_s)
        from tealeaf_fleet import tlsprobe

        return tlsprobe.tls12_active(address, port, timeout_s=timeout_s)

    # --- what the actions share -------------------------------------------------------------

    def after_preflight(self) -> dict[str, list[str]]:
        """Fleet-wide preflight rules, once every host passed its own (the runner asks):
        host (or "controller") -> blocker messages; empty when the run may go on."""
        if not self.rotation:
            return {}
        from datetime import datetime, timezone

        from tealeaf_fleet.ops import checks

        installed = self._installed()
        pfx = self.pfx
        self._warn_unarchived(pfx.sha256 if pfx is not None else None)
        findings = checks.rotation_fleet_blockers(
            installed,
            self.serving,
            new_sha256=pfx.sha256 if pfx is not None else None,
            not_after=pfx.certificate.not_valid_after_utc.replace(tzinfo=None)
            if pfx is not None
            else None,
            now=datetime.now(timezone.utc).replace(tzinfo=None),
        )
        out: dict[str, list[str]] = {}
        for f in findings:
            for name in f.hosts:
                out.setdefault(name, []).append(f.message)
        return out

    def _installed(self) -> dict[str, str | None]:
        """Host -> fingerprint of its tealeaf.crt, as preflight read it."""
        return {
            h.name: ((self.facts.get(h.name) or {}).get("security") or {}).get("cert_sha256")
            for h in self.fleet.windows_hosts()
        }

    def fleet_fingerprints(self) -> list[str]:
        """Every fingerprint preflight found installed or presented: what a rotation replaces
        (the archive records them with the run, so status counts them as the fleet's own)."""
        seen = [*self._installed().values(), *self.serving.values()]
        return sorted({sha for sha in seen if sha})

    def _warn_unarchived(self, new_sha256: str | None) -> None:
        """A pair the fleet runs that the archive does not hold (installed before this tool kept
        one, or by hand): the way back needs its PFX, so say so before anything changes."""
        from tealeaf_fleet import certarchive
        from tealeaf_fleet.ops import checks

        runner = self.runner
        if runner is None or runner.journal is None:
            return
        archived = {e.sha256 for e in certarchive.entries(runner.journal.state_dir)}
        missing = [s for s in self.fleet_fingerprints() if s not in archived and s != new_sha256]
        if missing:
            names = ", ".join(checks.short_sha(s) for s in missing)
            self.bus.emit(
                "message",
                phase="preflight",
                message=f"warning (installed_pair_not_archived): the pair the fleet runs now "
                f"({names}) is not in the archive ({certarchive.FOLDER}/ in the state folder): "
                "keep its PFX and password, or there is no way back to it after this rotation",
            )

    def rolling_order(self, hosts: list[str]) -> list[str]:
        """The order a rolling group restarts in: the plan's, except in a rollback, where a
        host found down with EnableTLS=1 (its rollout restart failed) comes first: restarting
        another host of its group while it is down would leave nobody doing their share."""
        down = [h for h in hosts if self.down_with_tls(h)]
        return down + [h for h in hosts if h not in down]

    def install_dir(self, host: Host) -> str:
        """Inventory override first, else what facts discovered (services, registry)."""
        found = (self.facts.get(host.name) or {}).get("install_dir")
        chosen = host.install_dir or self.fleet.install_dir or found
        if not chosen:
            raise FleetError(
                "the Tealeaf install folder is unknown",
                host=host.name,
                hint="set tealeaf.install_dir in the inventory",
            )
        return str(chosen)

    def remote_pfx_path(self, host: Host) -> str:
        """`<install>\\Tools\\<pfx name>`: where the vendor procedure puts the PFX."""
        return str(
            PureWindowsPath(self.install_dir(host)) / "Tools" / self.fleet.certificate.path.name
        )

    def mark_changed(self, host: str, op: str) -> None:
        with self._lock:
            self.changed.setdefault(host, set()).add(op)

    def changed_ops(self, host: str) -> set[str]:
        with self._lock:
            return set(self.changed.get(host, ()))

    def record_reboot_needed(self, host: str, since: str, areas: list[str], boot: str) -> None:
        """Journal that `host` changed values that take effect at boot (at host time
        `since`, in the boot that began at UTC `boot`, "" unknown); kept in memory too for
        runs without a journal (tests, the bench)."""
        self._add_reboot_record(
            host, {"since": since, "areas": list(areas), "boot": boot or "", "rebooted": False}
        )

    def record_rebooted(self, host: str, since: str) -> None:
        """Journal that this tool rebooted `host` (`Journal.rebooted`)."""
        self._add_reboot_record(host, {"since": since, "areas": [], "boot": "", "rebooted": True})

    def _add_reboot_record(self, host: str, record: dict[str, Any]) -> None:
        record["run"] = None
        runner = self.runner
        if runner is not None and runner.journal is not None:
            if record["rebooted"]:
                runner.journal.rebooted(runner.run_id, host, record["since"])
            else:
                runner.journal.reboot_needed(
                    runner.run_id, host, record["since"], record["areas"], record["boot"]
                )
            record["run"] = runner.run_id
        with self._lock:
            self._reboots.setdefault(host, []).append(record)

    def reboot_records(self, host: str) -> list[dict[str, Any]]:
        """Every change of this tool on `host` that needed a reboot: the journal's (earlier
        runs and this one), else this run's own."""
        runner = self.runner
        if runner is not None and runner.journal is not None:
            return runner.journal.reboot_records().get(host, [])
        with self._lock:
            return list(self._reboots.get(host, []))

    def set_facts(self, host: str, facts: dict[str, Any]) -> None:
        from tealeaf_fleet.ops.checks import down_for_rollback

        with self._lock:
            if not self.expect_tls and host not in self._down_with_tls:
                # the first read of the run (preflight) decides: later reads follow the disable
                self._down_with_tls[host] = down_for_rollback(facts)
            self.facts[host] = facts

    def down_with_tls(self, host: str) -> list[str]:
        """A rollback: the automatic-start TeaLeaf services the run's first read of the host
        found stopped with EnableTLS=1 (its rollout restart failed there): its restart starts
        them, the host first of its rolling group."""
        with self._lock:
            return list(self._down_with_tls.get(host) or [])

    def note(self, phase: str, host: str, detail: dict[str, Any]) -> None:
        """Attach resume data to the running step in the journal."""
        runner = self.runner
        step_id = self.step_ids.get((phase, host))
        if runner is not None and runner.journal is not None and step_id is not None:
            runner.journal.note(step_id, detail)

    def first_note(self, phase: str, host: str, action: str) -> dict[str, Any] | None:
        """What an earlier, unfinished attempt of this step recorded (see Journal)."""
        runner = self.runner
        if runner is None or runner.journal is None or runner.run_id is None:
            return None
        return runner.journal.first_detail(
            runner.plan.get("digest"), phase, host, action, before_run=runner.run_id
        )
