"""`fleet cert create|inspect`: make the shared Tealeaf PFX on the controller, or check a PFX
(ours, TLSTool's, or one the organisation's CA issued) against Tealeaf's requirements before a
change window, rather than finding out on the first server that cannot import it.

`certs` (and so `cryptography`) is imported inside the handlers to keep `fleet --help` fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tealeaf_fleet.cli.common import bounded_int, colon_fp
from tealeaf_fleet.errors import InputError

# 100 years: a certificate must end before the year 9999 that X.509 dates can hold.
MAX_DAYS = 36_500

if TYPE_CHECKING:
    from tealeaf_fleet.certs import Report
    from tealeaf_fleet.secrets import Secret


def register(sub: argparse._SubParsersAction) -> None:
    cert = sub.add_parser(
        "cert",
        help="create or inspect the Tealeaf PKCS#12 certificate",
        description="Create or inspect the PKCS#12 file Tealeaf imports.",
    )
    cs = cert.add_subparsers(dest="cert_command", metavar="SUBCOMMAND", parser_class=type(cert))
    cs.required = True

    create = cs.add_parser(
        "create",
        help="generate a key and self-signed certificate as a PFX",
        description='Generate an RSA key and a self-signed certificate (CN "IBM Tealeaf CX", '
        "serverAuth+clientAuth) as PKCS#12. Without a password source: asks twice "
        "on a terminal, else generates one and writes it to OUT.password (0600).",
    )
    create.add_argument("--out", required=True, metavar="PATH", help="the PFX file to write")
    _password_args(create)
    create.add_argument(
        "--days",
        type=bounded_int(1, MAX_DAYS),
        default=730,
        help=f"validity in days (1-{MAX_DAYS}, default 730)",
    )
    create.add_argument("--key-size", type=int, choices=(2048, 3072, 4096), default=2048)
    create.add_argument(
        "--encryption",
        choices=("compat", "aes256"),
        default="compat",
        help="compat (default): PBE-SHA1-3DES + SHA-1 MAC, importable on "
        "Windows Server 2008 R2..2022; aes256: newer Windows only",
    )
    create.add_argument("--force", action="store_true", help="replace an existing file")
    create.set_defaults(handler=run_create)

    inspect = cs.add_parser(
        "inspect",
        help="show a PFX and check it against Tealeaf's requirements",
        description="Show a PFX's certificate and protection, then a pass/warn/fail verdict. "
        "Exit 0 fit, 1 not fit, 2 unusable input. Without a password source: "
        "PATH.password when it exists, else asks on a terminal.",
    )
    inspect.add_argument("path", metavar="PATH")
    _password_args(inspect)
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.set_defaults(handler=run_inspect)


def _password_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-env", metavar="VAR", help="read the PFX password from $VAR")
    g.add_argument(
        "--password-file", metavar="FILE", help="read the PFX password from FILE (mode 0600)"
    )


def _given_password(args: argparse.Namespace) -> Secret | None:
    from tealeaf_fleet import secrets

    if args.password_env:
        return secrets.from_env(args.password_env, field="--password-env")
    if args.password_file:
        return secrets.from_file(args.password_file, field="--password-file")
    return None


# --- create ----------------------------------------------------------------------------------


def run_create(args: argparse.Namespace) -> int:
    from tealeaf_fleet import certs, secrets

    out = Path(args.out)
    if not out.name or out.is_dir():
        what = f"{out} is a folder; " if args.out else ""
        raise InputError(f"{what}give a file name", field="--out")
    pw_file = out.with_name(out.name + ".password")
    if not out.parent.is_dir():
        raise InputError(f"folder {out.parent} does not exist", field="--out")
    if out.exists() and not args.force:
        raise InputError(f"{out} already exists", field="--out", hint="use --force to replace it")
    password = _given_password(args)
    generated = False
    if password is None:
        if sys.stdin.isatty():
            password = secrets.prompt("PFX password", confirm=True)
        else:
            if pw_file.exists() and not args.force:
                raise InputError(f"{pw_file} already exists", hint="use --force to replace it")
            password = certs.generate_password()
            generated = True
    # generate_pfx refuses a password TLSTool.exe cannot use, before anything is written
    data = certs.generate_pfx(
        password, days=args.days, key_size=args.key_size, encryption=args.encryption
    )
    if generated:
        certs.write_private_file(
            pw_file, (password.reveal() + "\n").encode("ascii"), force=args.force
        )
    try:
        certs.write_private_file(out, data, force=args.force)
    except BaseException:
        if generated:
            pw_file.unlink(missing_ok=True)  # a password for a PFX that was never written
        raise
    pfx = certs.load_pfx(data, password, name=str(out))
    print(f"created {out} (mode 0600)")
    print(f"  subject     {pfx.certificate.subject.rfc4514_string()}")
    print(f"  key         RSA {args.key_size} bits")
    print(f"  valid until {pfx.certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    print(f"  fingerprint {colon_fp(pfx.sha256)} (certificate, SHA-256)")
    print(f"  protection  {pfx.encryption}, MAC {pfx.mac}")
    if generated:
        print(
            f"password generated and written to {pw_file} (mode 0600); "
            "keep it with the PFX, it is needed to import it"
        )
    return 0


# --- inspect ---------------------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    from tealeaf_fleet import certs, secrets
    from tealeaf_fleet.safeio import MAX_INPUT_BYTES, read_regular_file

    path = Path(args.path)
    data = read_regular_file(path, MAX_INPUT_BYTES, "PFX")
    password = _given_password(args)
    if password is None:
        beside = path.with_name(path.name + ".password")
        if beside.exists():
            password = secrets.from_file(beside)
            print(f"using the password in {beside}", file=sys.stderr)
        else:
            password = secrets.prompt(f"password for {path}")
    report = certs.inspect_pfx(data, password, name=str(path))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _render(report)
    return report.exit_code


def _render(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console(highlight=False, soft_wrap=True, emoji=False)  # fingerprints hold ":AB:"
    d = report.details
    p12 = d["pkcs12"]
    rows: list[tuple[str, str]] = [("file", report.file)]
    if "subject" in d:
        rows += [
            ("subject", d["subject"]),
            ("issuer", d["issuer"]),
            ("serial", d["serial"]),
            ("valid", f"{d['not_before']} .. {d['not_after']} ({d['days_left']} days left)"),
            ("key", f"{d['key_type']} {d['key_size']} bits"),
            ("signature", d["signature_algorithm"]),
            ("key usage", ", ".join(d["key_usage"]) if d["key_usage"] is not None else "(none)"),
            (
                "ext. key usage",
                ", ".join(d["extended_key_usage"])
                if d["extended_key_usage"] is not None
                else "(none: any)",
            ),
            ("sha256", colon_fp(d["sha256"])),
            ("sha1", colon_fp(d["sha1"])),
        ]
    rows += [
        ("friendly name", d["friendly_name"] or "(none)"),
        ("private key", "present" if d["has_private_key"] else "absent"),
        ("key protection", ", ".join(p12["key_encryption"]) or "(no key bag)"),
        ("cert protection", ", ".join(p12["cert_encryption"]) or "(not encrypted)"),
        ("MAC", f"{p12['mac']}, {p12['mac_iterations']} iterations" if p12["mac"] else "(none)"),
    ]
    for c in d["chain"]:
        rows.append(
            ("chain", f"{c['subject']} (issuer {c['issuer']}, sha256 {c['sha256'][:16]}...)")
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        con.print(f"{key:<{width}}  {escape(str(value))}")
    con.print()
    style = {"pass": "green", "warn": "yellow", "fail": "bold red"}
    for c in report.checks:
        con.print(f"[{style[c.status]}]{c.status:<4}[/]  {c.name:<12} {escape(c.reason)}")
    con.print()
    if report.fit:
        con.print("[green]verdict: fit for Tealeaf[/]")
    else:
        con.print("[bold red]verdict: NOT fit for Tealeaf[/]")
