"""The Portal's `TealeafStatus -verbose` in `fleet status` and the rollout's verify, end to end:
the real CLI, pywinrm to the lab, the lab's emulation of the tool (which fails with TLS on until
the status-report registry values are set and the host rebooted), and the report's evidence."""

from __future__ import annotations

import json
import time

import pytest

from tealeaf_fleet.inventory import load_fleet
from tealeaf_fleet.ops import status_tool
from tealeaf_fleet.status import status_tool_findings
from tealeaf_fleet.transport import Connection
from test_rollout_e2e import assert_no_secret, fleet, start_lab

pytestmark = pytest.mark.slow

NETFX = "HKLM:\\SOFTWARE\\Microsoft\\.NETFramework\\"
NETFX_WOW = "HKLM:\\SOFTWARE\\Wow6432Node\\Microsoft\\.NETFramework\\"
SCHANNEL_TLS12 = (
    "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.2\\"
)
WINHTTP = "Microsoft\\Windows\\CurrentVersion\\Internet Settings\\WinHttp"
# The vendor's "Generate the status report with TLS enabled" values (both registry views)
STATUS_REPORT_VALUES = [
    *(
        (root + version, name, 1)
        for root in (NETFX, NETFX_WOW)
        for version in ("v2.0.50727", "v4.0.30319")
        for name in ("SchUseStrongCrypto", "SystemDefaultTlsVersions")
    ),
    ("HKLM:\\SOFTWARE\\" + WINHTTP, "DefaultSecureProtocols", 0xA80),
    ("HKLM:\\SOFTWARE\\Wow6432Node\\" + WINHTTP, "DefaultSecureProtocols", 0xA80),
    *(
        (SCHANNEL_TLS12 + side, name, value)
        for side in ("Client", "Server")
        for name, value in (("Enabled", 1), ("DisabledByDefault", 0))
    ),
]


def status(lab) -> dict:
    out = fleet("status", str(lab.inventory), "--json")
    assert out.returncode in (0, 1), out.stderr
    assert_no_secret(lab, out.stdout, out.stderr)
    return json.loads(out.stdout)


def portal_tool(doc: dict) -> dict:
    return next(h for h in doc["hosts"] if h["role"] == "portal")["status_tool"]


def codes(doc: dict) -> list[str]:
    return [f["code"] for f in doc["findings"]]


def wait_rebooted(lab, name: str, booted_before, timeout_s: float = 60) -> None:
    """Until the host has booted again and its automatic services run."""
    host = lab.host(name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [s.state for s in host.service_controllers() if s.start_mode == "Auto"]
        again = host.last_boot() > booted_before and not host.is_down()
        if again and states and all(s == "Running" for s in states):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not come back within {timeout_s}s")


def test_status_tool_fails_with_tls_until_the_settings_and_a_reboot(tmp_path, monkeypatch):
    monkeypatch.setenv("TEALEAF_FLEET_LOCK_DIR", str(tmp_path / "locks"))
    with start_lab(tmp_path / "lab", topology={"portal": 1, "hbr": 1}) as lab:
        doc = status(lab)
        tool = portal_tool(doc)  # TLS off: the report runs
        assert tool["present"] and tool["exit_code"] == 0 and "Status report" in tool["output"]
        assert tool["path"].endswith("\\TealeafStatus.exe")
        assert "status_tool_failed" not in codes(doc)
        assert next(h for h in doc["hosts"] if h["role"] == "hbr")["status_tool"] is None

        out = fleet("rollout", str(lab.inventory), "--yes")
        assert out.returncode == 0, out.stderr[-3000:]  # a warning, not a blocker
        doc = status(lab)
        tool = portal_tool(doc)
        assert tool["exit_code"] == 1 and "unexpected error occurred on a send" in tool["output"]
        warning = next(f for f in doc["findings"] if f["code"] == "status_tool_failed")
        assert warning["severity"] == "warning" and warning["hosts"] == ["portal01"]
        assert "--playbook prerequisites" in warning["message"]
        assert doc["consistent"] is True

        # the report keeps the verify phase's run of the tool, output included
        report = fleet("report", str(lab.inventory), "--format", "markdown")
        assert report.returncode == 0, report.stderr
        line = next(ln for ln in report.stdout.splitlines() if "TealeafStatus -verbose" in ln)
        assert "exit 1 (FAILED, see the prerequisites playbook)" in line
        assert "status_tool_failed" in report.stdout

        portal = lab.host("portal01")
        for key, name, value in STATUS_REPORT_VALUES:  # what the prerequisites playbook writes
            portal.reg_set(key, name, value)
        assert portal_tool(status(lab))["exit_code"] == 1  # read at boot: not yet

        booted = portal.last_boot()
        portal.reboot(0.1)
        wait_rebooted(lab, "portal01", booted)
        doc = status(lab)
        assert portal_tool(doc)["exit_code"] == 0
        assert "status_tool_failed" not in codes(doc)


def test_a_hung_status_tool_is_killed_and_reported(tmp_path):
    with start_lab(tmp_path / "lab", topology={"portal": 1}) as lab:
        lab.host("portal01").set_faults({"native_hangs": {"exe": "TealeafStatus.exe"}})
        inventory = load_fleet(lab.inventory)
        host = inventory.hosts["portal01"]
        with Connection(host, inventory.winrm_password(host)) as conn:
            result = status_tool.run(conn, "D:\\Tealeaf", timeout_s=12)
        assert result.present and result.exit_code is None
        assert "did not finish within" in (result.error or "")
        (finding,) = status_tool_findings("portal01", result.to_dict())
        assert finding.severity == "warning" and "did not finish" in finding.message
        events = [json.loads(line) for line in (lab.dir / "events.jsonl").read_text().splitlines()]
        killed = [e for e in events if e.get("kind") == "process" and e.get("exit") == "killed"]
        assert [e["exe"] for e in killed] == ["TealeafStatus.exe"]


@pytest.mark.parametrize(
    "tool,warned",
    [
        (None, False),
        ({"present": False, "exit_code": None, "output": ""}, False),
        ({"present": None, "error": "unreachable"}, False),
        ({"present": True, "exit_code": 0, "output": "Status report generated."}, False),
        ({"present": True, "exit_code": 3, "output": "a\nERROR: boom\nb"}, True),
    ],
)
def test_only_a_run_that_failed_warns(tool, warned):
    found = status_tool_findings("portal01", tool)
    assert bool(found) is warned
    if warned:
        assert "exited 3: ERROR: boom" in found[0].message
