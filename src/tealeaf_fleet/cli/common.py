"""Helpers every command shares: the INVENTORY argument, loading it with one-line errors,
warnings, consoles and writing output files.

Why here: each command (plan, rollout, status, ...) must treat the inventory and its warnings
the same way, so an operator sees the same message whatever they ran. Kept light (no rich at
import time) so that `fleet --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.secrets import redact

if TYPE_CHECKING:
    from rich.console import Console

    from tealeaf_fleet.inventory import Fleet


def add_inventory_argument(parser: argparse.ArgumentParser) -> None:
    """The positional INVENTORY every fleet-wide command takes."""
    parser.add_argument(
        "inventory", metavar="INVENTORY", help="inventory YAML (see inventory.example.yaml)"
    )


def load_fleet_or_exit(path: str | Path) -> Fleet:
    """Load the inventory and print its warnings.

    Bad input raises `InputError`, which the dispatcher (`cli.main`) prints as the one line
    `fleet: error: FILE:LINE: FIELD: message` and turns into exit 2, without a traceback.
    """
    from tealeaf_fleet.inventory import load_fleet  # PyYAML: not needed for `fleet --help`

    fleet = load_fleet(path)
    print_warnings(fleet)
    return fleet


def print_warnings(fleet: Fleet) -> None:
    """Print the inventory's warnings (e.g. validate_certs: false) on stderr, on every run."""
    for warning in fleet.warnings:
        print(f"fleet: warning: {redact(warning)}", file=sys.stderr)


# Width for output that is not a terminal (pipes, CI logs, `| tee`): rich would fall back to 80
# columns and wrap every table into many-line cells; 120 keeps one host on one line and still
# fits a CI log pane. `COLUMNS` (what `stty`/shells export) wins when set.
PIPE_WIDTH = 120


def output_width(environ: dict[str, str] | None = None) -> int:
    """The width for non-terminal output: `COLUMNS` when it is a sane number, else PIPE_WIDTH."""
    text = (os.environ if environ is None else environ).get("COLUMNS", "").strip()
    if text.isdigit() and 40 <= int(text) <= 1000:
        return int(text)
    return PIPE_WIDTH


def console(*, stderr: bool = False) -> Console:
    """A rich Console on stdout (results) or stderr (progress, so stdout stays parseable).

    On a terminal rich measures the window; elsewhere it would assume 80 columns, so the
    width comes from `output_width()` instead.
    """
    from rich.console import Console

    # emoji=False: a fingerprint such as "D8:AB:EE" must not turn into "D8🆎EE".
    out = Console(stderr=stderr, highlight=False, emoji=False)
    if not out.is_terminal:
        out.width = output_width()
    return out


def write_output(text: str, out: str | Path | None) -> None:
    """Write `text` to the file `out` (atomically), or to stdout when `out` is None or '-'."""
    text = redact(text)
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        return
    target = Path(out)
    folder = check_output_path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would surprise whoever reads the plan
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {target}: {exc.strerror}", field="--out") from None


def check_output_path(target: Path) -> Path:
    """The folder `--out FILE` will be written in; InputError when FILE is a folder or its
    folder does not exist. Commands that work for minutes call it before they start."""
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name", field="--out")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"folder {folder} does not exist", field="--out")
    return folder


def colon_fp(fp: str) -> str:
    """Fingerprints are stored without separators; humans compare them with colons.

    Why shared: the plan, `fleet cert` and `fleet status` must print a fingerprint the same way
    so that an operator can compare them by eye.
    """
    return ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()


def positive_int(text: str) -> int:
    """argparse `type=` for counts such as --forks and --days: a whole number, at least 1.

    Why shared: every command must reject `0`, `-3` or `ten` with the same one-line message.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
