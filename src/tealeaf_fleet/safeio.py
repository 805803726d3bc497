"""Reading and writing the files an operator names, without hanging or destroying anything.

Why a module of its own: every file the tool is pointed at (inventory, playbook, password files,
PFX, CA bundle, approved plan, `--out`, `--scripts`) may turn out to be something else than a
small regular file: a FIFO (reading it waits for a writer forever), a device (`/dev/zero` never
ends; replacing `/dev/null` as root breaks the machine), a folder, a symlink, a sparse file of
many gigabytes, bytes that are not UTF-8. Each reader and writer must treat them the same way
and say so in one line, so they all go through here.

- `read_regular_file` opens with O_NONBLOCK (a FIFO cannot block the open), checks with fstat
  that it holds a regular file before reading a byte, and reads at most `limit` bytes.
- `write_file` writes to what the path is: a regular file (or a symlink to one, or nothing yet)
  is replaced atomically (temporary file + rename, so a reader never sees half a plan); a
  character device or a FIFO is written through, never replaced; anything else is refused.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from tealeaf_fleet.errors import InputError

# Windows opens os.open()'s files in text mode unless told otherwise (CRLF turned into LF, a
# 0x1A byte read as the end of the file): every raw open of this tool ORs this in.
# docs.python.org/3/library/os.html#os.O_BINARY
O_BINARY = getattr(os, "O_BINARY", 0)

# One limit for every small input file (password files, PFX, CA bundles, approved plans): each
# is a few KiB in real life, and a 1,000-host plan is about 2 MiB.
MAX_INPUT_BYTES = 16 * 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... for a stat mode; 'a regular file' otherwise."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a regular file ('does not exist', 'is a folder', ...), or
    None when it is one. For checks at load time, before anything is opened."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    return None if stat.S_ISREG(mode) else f"is {kind_of(mode)}, not a regular file"


def _size_text(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


def read_regular_file(
    path: str | Path,
    limit: int = MAX_INPUT_BYTES,
    what: str = "file",
    *,
    check: Callable[[os.stat_result], None] | None = None,
    file: str | Path | None = None,
    line: int | None = None,
    field: str | None = None,
    tail: bool = False,
) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; else InputError. With
    `tail`, a larger file is not refused: only its last `limit` bytes are read (a log's end).

    `what` names the file in messages ("password file", "PFX", ...); `file`, `line` and `field`
    locate the setting that named it (an inventory key). `check` sees the open file's stat
    before anything is read (e.g. to refuse a password file others can read).
    """

    def error(problem: str, hint: str | None = None) -> InputError:
        return InputError(f"{what} {path} {problem}", file=file, line=line, field=field, hint=hint)

    problem = file_problem(path)  # refuse a device before opening it (opening may act)
    if problem is not None:
        raise error(problem)
    flags = os.O_RDONLY | O_BINARY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # what was opened, not what the name pointed at a moment before
        if not stat.S_ISREG(st.st_mode):
            raise error(f"is {kind_of(st.st_mode)}, not a regular file")
        if st.st_size > limit and not tail:
            raise error(f"is larger than {_size_text(limit)} ({st.st_size} bytes)")
        if check is not None:
            check(st)
        if tail and st.st_size > limit:
            os.lseek(fd, st.st_size - limit, os.SEEK_SET)
        chunks: list[bytes] = []
        size = 0
        cap = limit if tail else limit + 1  # one byte more tells a file that grew meanwhile
        while size < cap:
            chunk = os.read(fd, min(1 << 20, cap - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:  # it grew while we read
        raise error(f"is larger than {_size_text(limit)}")
    return b"".join(chunks)


def decode_utf8(
    data: bytes,
    path: str | Path,
    what: str = "file",
    *,
    file: str | Path | None = None,
    line: int | None = None,
    field: str | None = None,
) -> str:
    """`data` as UTF-8 (a BOM is dropped); InputError naming the first bad byte, never the
    content (it may be a password)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {path} is not UTF-8 text (bad byte at offset {exc.start})",
            file=file,
            line=line,
            field=field,
        ) from None


def read_text(path: str | Path, limit: int = MAX_INPUT_BYTES, what: str = "file") -> str:
    """`read_regular_file` + `decode_utf8`: a small UTF-8 text file, or InputError."""
    return decode_utf8(read_regular_file(path, limit, what), path, what)


# --------------------------------------------------------------------------------------------
# writing


def write_file(
    path: str | Path,
    data: bytes,
    *,
    field: str = "--out",
    mode: int | None = None,
    through: bool = True,
) -> None:
    """Write `data` to `path` according to what `path` is (see the module docstring).

    `mode`: the new file's permissions (None: an existing file keeps its own, a new one gets
    0666 less the umask). `through=False` refuses devices and FIFOs instead of writing into
    them (for private keys, which must land in a file of mode `mode`).
    """
    target = Path(path)
    try:
        st = os.stat(target)  # follows symlinks: what the path finally names
    except FileNotFoundError:
        st = None  # nothing there yet, or a symlink to nothing (the target gets created)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror}", field=field) from None
    if st is None or stat.S_ISREG(st.st_mode):
        real = Path(os.path.realpath(target))  # a symlink stays a symlink; its target changes
        keep = stat.S_IMODE(st.st_mode) if st is not None else None
        _replace(real, data, mode if mode is not None else keep, field, shown=target)
        return
    if through and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        _write_through(target, data, st.st_mode, field)
        return
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{target} is a folder; give a file name", field=field)
    raise InputError(
        f"refusing to write to {target}: it is {kind_of(st.st_mode)}, not a regular file",
        field=field,
    )


def _replace(real: Path, data: bytes, mode: int | None, field: str, *, shown: Path) -> None:
    """Atomically replace (or create) the regular file `real`."""
    folder = real.parent
    if not folder.is_dir():
        raise InputError(f"folder {folder} does not exist", field=field)
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # mkstemp's 0600 would surprise whoever reads a plan
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {shown}: {exc.strerror}", field=field) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {shown}: {exc.strerror}", field=field) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_through(target: Path, data: bytes, st_mode: int, field: str) -> None:
    """Write into a character device or FIFO as it is (no truncation, no rename). A FIFO is
    opened without blocking: nobody reading it is an error, not a hang."""
    fifo = stat.S_ISFIFO(st_mode)
    flags = os.O_WRONLY | O_BINARY | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_NONBLOCK", 0) if fifo else 0
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if fifo and exc.errno == errno.ENXIO:
            raise InputError(
                f"cannot write {target}: it is a FIFO and nothing reads from it", field=field
            ) from None
        raise InputError(f"cannot write {target}: {exc.strerror}", field=field) from None
    try:
        if fifo:
            os.set_blocking(fd, True)  # a reader is there: let it take its time
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror}", field=field) from None
    finally:
        os.close(fd)
