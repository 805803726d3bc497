"""`fleet` entry point: builds the argparse tree from the command modules and maps errors to
exit codes (docs/architecture.md "Exit codes"). Command modules import heavy libraries inside
their handlers only, so `fleet --help` stays fast.

Each module in COMMAND_MODULES defines `register(subparsers)`, which adds its sub-parser and sets
`handler=<callable(args) -> int>` with `set_defaults`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from tealeaf_fleet import __version__
from tealeaf_fleet.errors import FleetError, InputError
from tealeaf_fleet.secrets import redact

COMMAND_MODULES = (
    "plan",
    "rollout",
    "status",
    "check",
    "cert",
    "lab",
    "demo",
    "history",
    "report",
    "troubleshoot",
    "logs",
)

log = logging.getLogger("tealeaf_fleet")
# Loggers kept at INFO even under -v: pyspnego logs every NTLM message at DEBUG (the
# AUTHENTICATE message holds the NTLMv2 response, an offline-crackable form of the password),
# and pywinrm's vendored requests_kerberos logs the Authorization header (a Kerberos ticket).
QUIET_UNDER_VERBOSE = (
    "spnego",
    "requests_ntlm",
    "requests_credssp",
    "winrm.vendor.requests_kerberos",
)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line, `fleet: error: ...`, like every other input error
    (the README's promise), and one hint line: argparse's usage block would be a dozen lines
    before the error a script or an operator greps for."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("fleet").strip()
        text = redact(" ".join(message.split()))  # one line, whatever the user typed
        self.exit(
            2,
            f"fleet: error: {where + ': ' if where else ''}{text}\n"
            f"usage: see `{self.prog} --help`\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fleet",
        description="Enable, verify and roll back IBM Tealeaf CX inter-process TLS over WinRM.",
    )
    parser.add_argument("--version", action="version", version=f"tealeaf-fleet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tealeaf_fleet.cli.{name}").register(sub)
    return parser


def _crash_log(exc: BaseException) -> str:
    """Write the traceback of an unexpected failure to a file; return its path."""
    import tempfile

    with tempfile.NamedTemporaryFile(
        "w", prefix="tealeaf-fleet-crash-", suffix=".log", delete=False
    ) as fh:
        fh.write(redact("".join(traceback.format_exception(exc))))
        return fh.name


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:  # without -v they inherit WARNING; INFO would be a lower bar
        for name in QUIET_UNDER_VERBOSE:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as exc:  # a second Ctrl-C (130) or SIGTERM (143, `Terminated`)
        print("interrupted", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except InputError as exc:
        print(f"fleet: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except FleetError as exc:
        print(f"fleet: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - last resort: short message, details to a file
        path = _crash_log(exc)
        print(
            f"fleet: unexpected failure: {redact(type(exc).__name__)}; details in {path}",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
