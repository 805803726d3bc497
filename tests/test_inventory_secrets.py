"""A password pasted where the inventory wants a variable name (`password_env: <the password>`,
an easy slip) must not be echoed back: the error goes to terminals and CI logs."""

from __future__ import annotations

import pytest

from tealeaf_fleet.errors import InputError
from tealeaf_fleet.inventory import load_fleet

PASSWORD = "Xq7;$w'`Tz9-Rk2#Lm4Vp"


@pytest.mark.parametrize("section", ["winrm", "certificate"])
def test_password_in_password_env_is_not_echoed(tmp_path, section):
    winrm = "winrm:\n  scheme: https\n  transport: basic\n  username: admin\n"
    cert = "certificate:\n  source: generate\n  path: TCXcert.pfx\n"
    quoted = PASSWORD.replace("'", "''")  # YAML single-quoted scalar
    pasted = f"  password_env: '{quoted}'\n"
    text = (winrm + pasted + cert) if section == "winrm" else (winrm + cert + pasted)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(text + "hosts:\n  hbr01: {address: 127.0.0.1, role: hbr}\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_fleet(inv)
    message = str(info.value)
    assert f"{section}.password_env" in message  # still says where
    assert PASSWORD not in message
