"""`safeio`: reading only regular files (bounded, never blocking on a FIFO) and writing to what
a path is. The CLI-level cases (FIFOs, devices, symlinks as --out, password files, PFX files)
are in tests/data/hostile/*.yaml; these cover what a subprocess case cannot see."""

from __future__ import annotations

import os
import select
import stat
import threading
from pathlib import Path

import pytest

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.safeio import read_regular_file, write_file


def test_write_through_a_fifo_with_a_reader_keeps_the_fifo(tmp_path: Path) -> None:
    """`--out >(gzip > plan.gz)` or a named pipe someone reads: the data goes through."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    opened = threading.Event()

    def reader() -> None:
        # Open without blocking (so the test knows the reader is there), then wait until the
        # writer has written: a FIFO no writer ever opened reads as end of file at once.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        opened.set()
        select.select([fd], [], [], 10)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as fh:
            received.append(fh.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert opened.wait(10)
    data = b"x" * 200_000  # more than a pipe buffer: the writer must wait for the reader
    write_file(fifo, data)
    thread.join(10)
    assert received == [data]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_replacing_a_file_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    target.write_text("old")
    write_file(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_private_mode_replaces_a_symlinks_target_not_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.pfx"
    real.write_bytes(b"old")
    real.chmod(0o644)
    link = tmp_path / "link.pfx"
    link.symlink_to(real)
    write_file(link, b"key", mode=0o600, through=False)
    assert link.is_symlink() and real.read_bytes() == b"key"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_read_checks_the_open_file_before_reading(tmp_path: Path) -> None:
    """`check` sees the fstat of what was opened (a password file's mode), before any byte is
    read; the limit applies to the size found there."""
    path = tmp_path / "pw.txt"
    path.write_bytes(b"secret\n")
    seen: list[int] = []
    assert read_regular_file(path, 7, "password file", check=lambda st: seen.append(st.st_size))
    assert seen == [7]
    with pytest.raises(InputError, match="larger than 6 bytes"):
        read_regular_file(path, 6, "password file")
