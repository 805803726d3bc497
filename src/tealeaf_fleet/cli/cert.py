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

from tealeaf_fleet.cli.common import add_inventory_argument, bounded_int, colon_fp
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

    export = cs.add_parser(
        "export",
        help="write a PFX's certificate and key as PEM (the PCA hand-off)",
        description="Write the certificate and the private key of a PFX as PEM files, for a "
        "PCA administrator to install the same pair for pipeline encryption (PCA build "
        "3682-24 or later; the tool never contacts a PCA). The key is encrypted with the "
        "PFX's own password (PKCS#8, AES-256) unless --no-key-password. Without a password "
        "source: PATH.password when it exists, else asks on a terminal.",
    )
    export.add_argument("path", metavar="PATH", help="the PFX (the inventory's certificate)")
    export.add_argument("--pem", action="store_true", required=True, help="write PEM files")
    _password_args(export)
    export.add_argument(
        "--cert-out", metavar="FILE", help="certificate PEM (default: PATH without .pfx + .crt.pem)"
    )
    export.add_argument(
        "--key-out", metavar="FILE", help="private key PEM (default: PATH without .pfx + .key.pem)"
    )
    export.add_argument(
        "--no-key-password",
        action="store_true",
        help="write the key unencrypted (mode 0600, with a warning): only for a PCA that "
        "cannot read an encrypted key",
    )
    export.add_argument("--force", action="store_true", help="replace existing files")
    export.set_defaults(handler=run_export)

    history = cs.add_parser(
        "history",
        help="list every certificate pair this fleet has used (the state folder's archive)",
        description="List the pairs kept in the state folder's archive (certificates/, mode "
        "0600, named by fingerprint): validity and the runs that used each. Go back to one "
        "with `fleet rollout INVENTORY --playbook rotate --certificate-from-archive "
        "FINGERPRINT`. The archive keeps no password.",
    )
    add_inventory_argument(history)
    history.add_argument(
        "--state-dir", metavar="DIR", help="default: .tealeaf-fleet/ next to the inventory"
    )
    history.add_argument("--json", action="store_true", help="print one JSON document")
    history.set_defaults(handler=run_history)


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


# --- export ----------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from tealeaf_fleet import certs
    from tealeaf_fleet.safeio import MAX_INPUT_BYTES, read_regular_file, write_file

    path = Path(args.path)
    data = read_regular_file(path, MAX_INPUT_BYTES, "PFX")
    password = _pfx_password(args, path)
    pfx = certs.load_pfx(data, password, name=str(path))
    stem = path.with_suffix("") if path.suffix.lower() in (".pfx", ".p12") else path
    cert_out = Path(args.cert_out) if args.cert_out else Path(f"{stem}.crt.pem")
    key_out = Path(args.key_out) if args.key_out else Path(f"{stem}.key.pem")
    for target, flag in ((cert_out, "--cert-out"), (key_out, "--key-out")):
        if target.exists() and not args.force:
            raise InputError(f"{target} already exists", field=flag, hint="use --force")
    if cert_out.resolve() == key_out.resolve():
        raise InputError("--cert-out and --key-out name the same file", field="--key-out")
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if args.no_key_password
        else serialization.BestAvailableEncryption(password.reveal().encode("utf-8"))
    )
    key_pem = pfx.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in pfx.additional_certs)
    certs.write_private_file(key_out, key_pem, force=args.force, field="--key-out")
    write_file(cert_out, pfx.cert_pem() + chain, field="--cert-out", mode=0o644)
    print(
        f"certificate {cert_out} (fingerprint {colon_fp(pfx.sha256)}, valid until "
        f"{pfx.certificate.not_valid_after_utc:%Y-%m-%d} UTC)"
    )
    if args.no_key_password:
        print(f"private key {key_out} (mode 0600, NOT encrypted)")
        print(
            f"fleet: warning: {key_out} holds the private key unencrypted: anyone who can read "
            "it can impersonate every Tealeaf server of this fleet; hand it over on a secure "
            "channel and delete it here",
            file=sys.stderr,
        )
    else:
        print(f"private key {key_out} (mode 0600, PKCS#8 encrypted with the PFX's password)")
    print(
        "hand both to the PCA administrator: pipeline encryption with this pair needs PCA "
        "build 3682-24 or later; this tool never contacts the PCA"
    )
    return 0


def _pfx_password(args: argparse.Namespace, path: Path) -> Secret:
    """--password-env / --password-file, else PATH.password beside the PFX, else a prompt."""
    from tealeaf_fleet import secrets

    password = _given_password(args)
    if password is not None:
        return password
    beside = path.with_name(path.name + ".password")
    if beside.exists():
        found = secrets.from_file(beside)  # a FIFO or folder there: refused before any line
        print(f"using the password in {beside}", file=sys.stderr)
        return found
    return secrets.prompt(f"password for {path}")


# --- history ---------------------------------------------------------------------------------


def run_history(args: argparse.Namespace) -> int:
    from tealeaf_fleet import certarchive
    from tealeaf_fleet.cli.common import load_fleet_or_exit
    from tealeaf_fleet.journal import default_state_dir

    fleet = load_fleet_or_exit(args.inventory)
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir(fleet.path)
    found = certarchive.entries(state_dir)
    outcomes = _run_outcomes(state_dir)
    rows = []
    for entry in found:
        data = entry.to_dict()
        for run in data["runs"]:
            run["outcome"] = outcomes.get(run.get("run"))
        rows.append(data)
    if args.json:
        print(json.dumps({"archive": str(certarchive.folder(state_dir)), "certificates": rows}))
        return 0
    if not rows:
        print(
            f"no certificate archived in {certarchive.folder(state_dir)} yet (a run's "
            "certificate step archives the pair it uses)"
        )
        return 0
    print(f"archive: {certarchive.folder(state_dir)}")
    for row in rows:
        runs = ", ".join(
            f"run {r.get('run')} {r.get('command')}"
            + (f" --playbook {r.get('playbook')}" if r.get("playbook") else "")
            + f" ({r.get('outcome') or 'unknown'})"
            for r in row["runs"]
        )
        print(f"\n{colon_fp(row['sha256'])}")
        print(f"  subject   {row['subject']}")
        print(
            f"  valid     {row['not_before']} .. {row['not_after']} UTC "
            f"({row['days_left']} days left)"
        )
        print(f"  file      {row['pfx_path']} (first used as {row['source']})")
        print(f"  used by   {runs or 'no run recorded'}")
    return 0


def _run_outcomes(state_dir: Path) -> dict[int, str]:
    """Run id -> state (ok, failed, running, ...) from the journal, when there is one."""
    from tealeaf_fleet.journal import Journal

    if not (state_dir / "journal.sqlite").is_file():
        return {}
    with Journal(state_dir) as journal:
        return {r.id: r.state for r in journal.runs(limit=10_000)}


# --- inspect ---------------------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    from tealeaf_fleet import certs
    from tealeaf_fleet.safeio import MAX_INPUT_BYTES, read_regular_file

    path = Path(args.path)
    data = read_regular_file(path, MAX_INPUT_BYTES, "PFX")
    password = _pfx_password(args, path)
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
            ("fingerprint", colon_fp(d["sha256"])),  # the certificate's SHA-256, as everywhere
            ("thumbprint", colon_fp(d["sha1"])),  # its SHA-1, as Windows' certificate store shows
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
            ("chain", f"{c['subject']} (issuer {c['issuer']}, fingerprint {c['sha256'][:16]}...)")
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
