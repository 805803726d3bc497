"""Fingerprints reach the operator intact: rich must not read ":AB:" as an emoji code."""

from __future__ import annotations

import io
import re

from tealeaf_fleet import certs
from tealeaf_fleet.cli.common import console
from tealeaf_fleet.cli.main import main
from tealeaf_fleet.secrets import Secret


def test_console_prints_colon_pairs_verbatim(capsys) -> None:
    console().print("reference certificate: A0:3E:D8:AB:EE:FD")
    assert "D8:AB:EE" in capsys.readouterr().out


def _colons(hex_text: str) -> str:
    return ":".join(hex_text[i : i + 2] for i in range(0, len(hex_text), 2)).upper()


def test_cert_inspect_shows_a_fingerprint_holding_ab_intact(tmp_path, capsys, monkeypatch) -> None:
    """Make PFXs until rich's default emoji handling would mangle the SHA-256 (an 'AB' byte
    where its left-to-right `:code:` scan lands: about one fingerprint in sixteen), then check
    `fleet cert inspect` prints it unchanged."""
    from rich.console import Console

    def mangled_by_default(text: str) -> bool:
        probe = Console(file=io.StringIO(), width=200, highlight=False)
        probe.print(text)
        return text not in probe.file.getvalue()

    password = Secret("Inspect4Emoji7")
    for _ in range(300):
        data = certs.generate_pfx(password, key_size=2048)
        sha = certs.load_pfx(data, password).sha256
        if mangled_by_default(_colons(sha)):
            break
    else:
        raise AssertionError("no fingerprint that rich's emoji codes would mangle in 300 tries")
    pfx = tmp_path / "c.pfx"
    pfx.write_bytes(data)
    monkeypatch.setenv("FLEET_T_PFX_PW", password.reveal())
    code = main(["cert", "inspect", str(pfx), "--password-env", "FLEET_T_PFX_PW"])
    out = capsys.readouterr().out
    assert code == 0, out
    flat = re.sub(r"\s+", "", out)
    assert _colons(sha) in flat or sha in flat.lower()
    assert "\U0001f18e" not in out  # the AB emoji
