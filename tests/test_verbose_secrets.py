"""`fleet -v` turns on DEBUG logging for the libraries too (urllib3, pywinrm), which helps
diagnose a host; but pyspnego logs every NTLM message at DEBUG, and the AUTHENTICATE message
carries the NTLMv2 response: an offline-crackable form of the WinRM password. A real `fleet -v
status` (or `fleet -v check`) over NTLM to the lab must show the wire log and none of that.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys

import pytest

from tealeaf_fleet.lab.fleet import Lab

pytestmark = pytest.mark.timeout(120)
# base64 of "NTLMSSP\0" + message type 3 (AUTHENTICATE), as pyspnego logs it
NTLM_AUTHENTICATE_B64 = base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00").decode()[:14]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab.start(tmp_path_factory.mktemp("lab"), topology={"hbr": 1}, restart_s=0.2)
    yield lab
    lab.stop()


@pytest.mark.parametrize("command", ["status", "check"])
def test_verbose_ntlm_run_logs_no_ntlm_messages(lab, tmp_path, command):
    text = lab.inventory.read_text(encoding="utf-8")
    assert "transport: basic" in text
    inventory = lab.inventory.with_name("inventory-ntlm.yaml")
    inventory.write_text(text.replace("transport: basic", "transport: ntlm"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "tealeaf_fleet", "-v", command, str(inventory)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert "DEBUG urllib3" in proc.stderr, output[-2000:]  # -v is on, the run went over the wire
    assert "hbr01" in proc.stdout, output[-2000:]
    assert "NTLM step" not in output
    assert NTLM_AUTHENTICATE_B64 not in output
    password = (lab.dir / "winrm-password.txt").read_text(encoding="utf-8").strip()
    assert password not in output


def test_without_verbose_the_auth_loggers_stay_at_warning(tmp_path):
    """Quieting them under -v must not make them louder without it."""
    code = (
        "import logging, sys\n"
        "from tealeaf_fleet.cli.main import main\n"
        "main(['status', sys.argv[1] + '/none.yaml'])\n"
        "print(logging.getLogger('spnego._ntlm').getEffectiveLevel())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip().splitlines()[-1] == str(logging.WARNING), proc.stdout + proc.stderr
