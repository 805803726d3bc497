"""A Secret never shows its value; sources fail with input errors naming where."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest

from tealeaf_fleet import secrets
from tealeaf_fleet.errors import InputError

VALUE = "Sekr1t-Value-4242"


def test_secret_never_renders():
    s = secrets.Secret(VALUE, source="env X")
    rendered = [
        str(s),
        repr(s),
        f"{s}",
        f"{s!r}",
        "%s" % (s,),  # noqa: UP031 - the %-path must mask too
        "{}".format(s),  # noqa: UP032 - str.format must mask too
        str([s]),
        str({"k": s}),
    ]
    for text in rendered:
        assert VALUE not in text
    assert s.reveal() == VALUE
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_secret_in_a_log_record_is_masked(caplog):
    s = secrets.Secret(VALUE)
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("password is %s", s)
    assert VALUE not in caplog.text


def test_redact_replaces_known_values():
    secrets.Secret(VALUE)
    assert secrets.redact(f"cmd {VALUE} done") == f"cmd {secrets.MASK} done"


def test_redact_finds_the_json_escaped_form():
    tricky = 'Back\\slash"Quote\u00e9-77'
    secrets.Secret(tricky)
    document = json.dumps({"message": f"import failed for {tricky}"})
    assert tricky not in json.loads(secrets.redact(document))["message"]
    assert secrets.MASK in json.loads(secrets.redact(document))["message"]


def test_from_env(monkeypatch):
    monkeypatch.setenv("FLEET_T_PW", VALUE)
    assert secrets.from_env("FLEET_T_PW").reveal() == VALUE
    monkeypatch.delenv("FLEET_T_PW")
    with pytest.raises(InputError) as err:
        secrets.from_env("FLEET_T_PW", file="inv.yaml", line=7, field="winrm.password_env")
    assert str(err.value).startswith("inv.yaml:7: winrm.password_env: ")
    assert "FLEET_T_PW" in str(err.value)


def test_from_file_checks_mode(tmp_path):
    p = tmp_path / "pw.txt"
    p.write_text(VALUE + "\n")
    os.chmod(p, 0o644)
    with pytest.raises(InputError) as err:
        secrets.from_file(p)
    assert "readable by group or others" in str(err.value)
    assert VALUE not in str(err.value)
    os.chmod(p, 0o600)
    assert secrets.from_file(p).reveal() == VALUE
    with pytest.raises(InputError):
        secrets.from_file(tmp_path / "missing.txt")


def test_prompt_refuses_without_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(InputError):
        secrets.prompt("PFX password")
