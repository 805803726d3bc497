"""The certificate archive (certarchive): written 0600 and named by fingerprint, one entry per
pair however many runs use it, found by a unique prefix, never holding the password; and the
fleet pointed at an archived pair plans with a digest of its own."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tealeaf_fleet import certarchive, certs
from tealeaf_fleet.errors import InputError
from tealeaf_fleet.secrets import Secret

PASSWORD = Secret("Archive-Pw-7731", source="test")


@pytest.fixture(scope="module")
def pairs() -> list[tuple[certs.Pfx, bytes]]:
    out = []
    for days in (400, 20):
        data = certs.generate_pfx(PASSWORD, days=days)
        out.append((certs.load_pfx(data, PASSWORD), data))
    return out


def test_archive_writes_private_files_named_by_fingerprint(tmp_path: Path, pairs) -> None:
    (pfx, data), (other, other_data) = pairs
    certarchive.archive(
        tmp_path, pfx, data, source="A.pfx", run_id=1, command="rollout", playbook="rollout"
    )
    certarchive.archive(
        tmp_path, pfx, data, source="A.pfx", run_id=3, command="rollout", playbook="rotate"
    )
    certarchive.archive(
        tmp_path, pfx, data, source="A.pfx", run_id=3, command="rollout", playbook="rotate"
    )
    certarchive.archive(
        tmp_path,
        other,
        other_data,
        source="B.pfx",
        run_id=2,
        command="rollout",
        playbook="rotate",
    )
    folder = tmp_path / "certificates"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{p.sha256}{s}" for p in (pfx, other) for s in (".pfx", ".json"))
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert PASSWORD.reveal().encode() not in path.read_bytes()
    assert (folder / f"{pfx.sha256}.pfx").read_bytes() == data  # the bytes as used
    entries = certarchive.entries(tmp_path)
    assert [e.sha256 for e in entries] == [pfx.sha256, other.sha256]
    assert [r["run"] for r in entries[0].runs] == [1, 3]  # a run is recorded once
    assert entries[1].days_left() in (19, 20)
    assert entries[0].not_after.startswith(str(pfx.certificate.not_valid_after_utc.year))


def test_find_by_prefix_and_clear_refusals(tmp_path: Path, pairs) -> None:
    (pfx, data), _ = pairs
    certarchive.archive(
        tmp_path, pfx, data, source="A.pfx", run_id=1, command="rollout", playbook=None
    )
    colons = ":".join(pfx.sha256[i : i + 2] for i in range(0, 16, 2))
    assert certarchive.find(tmp_path, colons.upper()).sha256 == pfx.sha256
    with pytest.raises(InputError, match="8 to 64 hex digits"):
        certarchive.find(tmp_path, "abc")
    with pytest.raises(InputError, match="no archived certificate 00000000"):
        certarchive.find(tmp_path, "00000000")


def test_a_damaged_entry_is_skipped(tmp_path: Path, pairs) -> None:
    (pfx, data), _ = pairs
    certarchive.archive(
        tmp_path, pfx, data, source="A.pfx", run_id=1, command="rollout", playbook=None
    )
    bad = tmp_path / "certificates" / ("0" * 64 + ".json")
    bad.write_text("{not json")
    (tmp_path / "certificates" / ("0" * 64 + ".pfx")).write_bytes(b"x")
    renamed = tmp_path / "certificates" / ("1" * 64 + ".json")
    renamed.write_text(json.dumps({"sha256": pfx.sha256}))  # its name is not its fingerprint
    (tmp_path / "certificates" / ("1" * 64 + ".pfx")).write_bytes(b"x")
    undated = tmp_path / "certificates" / ("2" * 64 + ".json")
    undated.write_text(json.dumps({"sha256": "2" * 64, "not_after": "soon"}))
    (tmp_path / "certificates" / ("2" * 64 + ".pfx")).write_bytes(b"x")
    assert [e.sha256 for e in certarchive.entries(tmp_path)] == [pfx.sha256]


def _run(journal, command: str, playbook: str, outcome: str, actions: tuple[str, ...] = ()):
    run_id = journal.start_run(command=command, playbook=playbook, plan_digest=playbook)
    for action in actions:
        journal.step_finished(journal.step_started(run_id, action, "host1", action), "changed")
    journal.finish_run(run_id, outcome)
    return run_id


def test_last_rotation_counts_the_replaced_pair_and_skips_runs_without_certificates(
    tmp_path: Path, pairs
) -> None:
    """The pair installed before the archive existed (never archived) is recorded as what the
    rotation replaces, so status counts it as the fleet's own; troubleshoot, status and
    prepare runs after a halted rotation do not make status forget it; a rollback does."""
    from tealeaf_fleet.journal import Journal

    (new, new_data), _ = pairs
    preexisting = "ab" * 32  # installed by hand before this tool archived anything
    with Journal(tmp_path) as journal:
        rotation = _run(journal, "rollout", "rotate", "failed", ("import",))
        certarchive.archive(
            tmp_path,
            new,
            new_data,
            source="B.pfx",
            run_id=rotation,
            command="rollout",
            playbook="rotate",
            rotation=True,
            replaces=[preexisting, new.sha256],
        )
        _run(journal, "troubleshoot", "troubleshoot", "ok", ("clear_ssl_cache",))
        _run(journal, "rollout", "status", "ok", ("status",))
        _run(journal, "rollout", "prepare", "ok", ("push_tools",))
    found = certarchive.last_rotation(tmp_path)
    assert found is not None and found.run == rotation and found.in_progress
    assert found.new_sha256 == new.sha256
    assert preexisting in found.known and new.sha256 in found.known
    record = certarchive.entries(tmp_path)[0].runs[0]
    assert record["replaces"] == [preexisting]  # the new pair is not what it replaces

    with Journal(tmp_path) as journal:
        _run(journal, "rollback", "rollback", "ok", ("disable", "restart"))
    assert certarchive.last_rotation(tmp_path) is None


def test_a_half_written_archive_pfx_is_rewritten_and_write_errors_are_input_errors(
    tmp_path: Path, pairs
) -> None:
    """A crash while the first archive wrote the PFX left a truncated file and no metadata:
    the next run writes it whole (beside and renamed over) and records the bytes' hash; an
    intact file stays. A state folder that cannot hold the archive is one InputError."""
    import hashlib

    (pfx, data), _ = pairs
    where = tmp_path / "state" / "certificates"
    where.mkdir(parents=True)
    (where / f"{pfx.sha256}.pfx").write_bytes(data[:20])
    entry = certarchive.archive(
        tmp_path / "state", pfx, data, source="A.pfx", run_id=1, command="rollout", playbook=None
    )
    assert entry.pfx_path.read_bytes() == data
    meta = json.loads(entry.pfx_path.with_suffix(".json").read_text())
    assert meta["pfx_bytes_sha256"] == hashlib.sha256(data).hexdigest()
    assert not [p for p in where.iterdir() if p.suffix not in (".pfx", ".json")]  # no temp left

    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "certificates").write_text("a file where the folder goes")
    with pytest.raises(InputError, match="cannot create"):
        certarchive.archive(
            tmp_path / "blocked", pfx, data, source="A.pfx", run_id=1, command="x", playbook=None
        )


def test_last_rotation_reads_the_journal_read_only_and_fails_soft(tmp_path: Path) -> None:
    """Status never creates, migrates or repairs a journal: a SQLite file of another tool is
    left byte for byte as it was, and a journal that cannot be read is RotationUnknown (status
    warns and goes on reading the hosts), not a crash."""
    import sqlite3

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "journal.sqlite")
    db.execute("CREATE TABLE other(x)")
    db.commit()
    db.close()
    before = (foreign / "journal.sqlite").read_bytes()
    with pytest.raises(certarchive.RotationUnknown, match="cannot be read"):
        certarchive.last_rotation(foreign)
    assert (foreign / "journal.sqlite").read_bytes() == before
    assert not (foreign / "certificates").exists()

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "journal.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(certarchive.RotationUnknown):
        certarchive.last_rotation(garbage)

    from tealeaf_fleet.status import rotation_unknown

    finding = rotation_unknown("journal x cannot be read: file is not a database")
    assert finding.severity == "warning" and finding.code == "rotation_unknown"
