"""`--certificate-from-archive FINGERPRINT` and its password flags, shared by `fleet rollout`
(and rollback, which ignores nothing: any playbook may use the archived pair) and `fleet plan`,
so an approved plan and its run name the same pair.

The archive never holds a password (certarchive): it comes from an environment variable or a
0600 file, like every other password of the tool, and is checked against the archived PFX
before any host is contacted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tealeaf_fleet.errors import CertificateError, InputError

if TYPE_CHECKING:
    from tealeaf_fleet.inventory import Fleet


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--certificate-from-archive",
        metavar="FINGERPRINT",
        help="use the pair this fleet used before, from the state folder's archive "
        "(`fleet cert history` lists them), instead of the inventory's certificate",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--certificate-password-env",
        metavar="VAR",
        help="with --certificate-from-archive: read that pair's password from $VAR",
    )
    g.add_argument(
        "--certificate-password-file",
        metavar="FILE",
        help="with --certificate-from-archive: read that pair's password from FILE (mode 0600)",
    )


def apply(args: argparse.Namespace, fleet: Fleet) -> Fleet:
    """The fleet as the command should see it: unchanged without --certificate-from-archive,
    else pointed at the archived pair (its password read and checked now)."""
    from tealeaf_fleet import certarchive, certs, secrets
    from tealeaf_fleet.journal import default_state_dir

    given = args.certificate_password_env or args.certificate_password_file
    if not args.certificate_from_archive:
        if given:
            raise InputError(
                "a certificate password flag only applies with --certificate-from-archive",
                field="--certificate-password-env"
                if args.certificate_password_env
                else "--certificate-password-file",
            )
        return fleet
    state_dir = Path(args.state_dir) if getattr(args, "state_dir", None) else None
    entry = certarchive.find(
        state_dir or default_state_dir(fleet.path), args.certificate_from_archive
    )
    if args.certificate_password_env:
        password = secrets.from_env(
            args.certificate_password_env, field="--certificate-password-env"
        )
    elif args.certificate_password_file:
        password = secrets.from_file(
            args.certificate_password_file, field="--certificate-password-file"
        )
    else:
        raise InputError(
            "the archive keeps no password: give the archived pair's password",
            field="--certificate-from-archive",
            hint="--certificate-password-env VAR or --certificate-password-file FILE",
        )
    flag = (
        "--certificate-password-env"
        if args.certificate_password_env
        else "--certificate-password-file"
    )
    try:
        certs.load_pfx(entry.pfx_path.read_bytes(), password, name=str(entry.pfx_path))
    except CertificateError as exc:  # most likely the password: name the flag that gave it
        raise CertificateError(
            exc.message,
            field=flag,
            hint=exc.hint or f"the password this pair had when it was archived ({password.source})",
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot read {entry.pfx_path}: {exc.strerror}", field="--certificate-from-archive"
        ) from None
    return certarchive.fleet_with_archived(fleet, entry, password)
