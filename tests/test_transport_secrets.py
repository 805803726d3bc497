"""Text from a host that reaches an error message is redacted before it is cut short: cut first
and a password straddling the cut leaves its tail in the message, where redact() no longer sees
the whole value."""

from __future__ import annotations

import os

import pytest

from tealeaf_fleet.errors import ProtocolFault
from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.secrets import Secret
from tealeaf_fleet.transport import Connection

PASSWORD = "Xq7;$w'`Tz9Rk2#Lm4Vp"


@pytest.fixture
def conn(tmp_path):
    pw = tmp_path / "pw.txt"
    pw.write_text("winrm-" + PASSWORD + "\n", encoding="utf-8")
    os.chmod(pw, 0o600)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "winrm:\n  scheme: https\n  transport: basic\n  username: admin\n"
        f"  password_file: {pw}\n"
        "hosts:\n  hbr01: {address: 127.0.0.1, role: hbr}\n",
        encoding="utf-8",
    )
    fleet = load_fleet(inv)
    host = fleet.hosts["hbr01"]
    return Connection(host, fleet.winrm_password(host))


@pytest.mark.parametrize("cut", [1, 5, 12])
def test_no_result_message_never_shows_part_of_a_password(conn, cut):
    Secret(PASSWORD)  # known to redact(), as every password the run read is
    # the host echoed the password; the last 300 characters start `cut` characters into it
    stderr = ("error: " + PASSWORD + "x" * (300 - (len(PASSWORD) - cut))).encode()
    with pytest.raises(ProtocolFault) as info:
        conn._result("tlstool", b"no marker here", stderr, 0)
    message = str(info.value)
    assert PASSWORD[cut:] not in message
    assert "*" in message  # the mask, or what is left of it after the cut
