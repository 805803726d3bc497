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
from collections.abc import Callable
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


def add_forks_argument(parser: argparse.ArgumentParser, *, default: int, what: str) -> None:
    """`--forks N`: how many hosts a command works on at once (each a thread with a WinRM
    connection), bounded to 1..MAX_FORKS; `what` says what the hosts are doing."""
    parser.add_argument(
        "--forks",
        type=bounded_int(1, MAX_FORKS),
        default=default,
        metavar="N",
        help=f"hosts {what} at once (1-{MAX_FORKS}, default {default})",
    )


def load_fleet_or_exit(path: str | Path, *, connects: bool = False) -> Fleet:
    """Load the inventory and print its warnings.

    Bad input raises `InputError`, which the dispatcher (`cli.main`) prints as the one line
    `fleet: error: FILE:LINE: FIELD: message` and turns into exit 2, without a traceback.
    `connects`: the command will contact the Windows hosts, so their CA bundle and client
    certificate files must be there now (exit 2), not fail later as retried network errors.
    """
    from tealeaf_fleet.inventory import load_fleet  # PyYAML: not needed for `fleet --help`

    fleet = load_fleet(path)
    if connects:
        for host in fleet.windows_hosts():
            fleet.require_files(host)
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
    """Write `text` to the file `out`, or to stdout when `out` is None or '-'.

    A regular file is replaced atomically; a device or FIFO (`--out /dev/null`, `--out
    /dev/stdout`) is written through, never replaced (see `safeio.write_file`).
    """
    from tealeaf_fleet.safeio import write_file

    text = redact(text)
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        return
    write_file(out, text.encode("utf-8"), field="--out")


def check_output_path(target: Path, *, field: str = "--out") -> Path:
    """The folder `--out FILE` (or `field`) will be written in; InputError when FILE is a
    folder or its folder does not exist. Commands that work for minutes call it before they
    start."""
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name", field=field)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"folder {folder} does not exist", field=field)
    return folder


def colon_fp(fp: str) -> str:
    """Fingerprints are stored without separators; humans compare them with colons.

    Why shared: the plan, `fleet cert` and `fleet status` must print a fingerprint the same way
    so that an operator can compare them by eye.
    """
    return ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()


def whole_number(text: str, low: int, high: int) -> int:
    """`text` as a whole number from `low` to `high`, else argparse.ArgumentTypeError.

    Why bounds on every count: a negative `--limit`, a `--days` of a billion or a `--forks` of
    a million is never meant, and would end in a crash or a machine brought to its knees.
    """
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type=` accepting whole numbers from `low` to `high`."""

    def parse(text: str) -> int:
        return whole_number(text, low, high)

    parse.__name__ = f"whole number from {low} to {high}"  # what argparse names in errors
    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """An argparse `type=` accepting numbers (decimals too) from `low` to `high`; NaN and
    infinity are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # NaN compares false
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, not {text}")
        return value

    parse.__name__ = f"number from {low:g} to {high:g}"
    return parse


# Hosts worked on at once (`--forks`): each is a thread with a WinRM connection.
MAX_FORKS = 256
# Upper bound of `positive_int`: far above any real count, far below anything that hurts.
MAX_COUNT = 1_000_000


def positive_int(text: str) -> int:
    """argparse `type=` for counts such as --forks and --days: a whole number, at least 1 (and
    at most MAX_COUNT; commands with a tighter sane range use `bounded_int`).

    Why shared: every command must reject `0`, `-3` or `ten` with the same one-line message.
    """
    return whole_number(text, 1, MAX_COUNT)
