"""`fleet check`'s rules, without a network: answers come from the lab's own models of `facts`
and `check` run against one simulated host (so their shape is what the ops really return),
then each test bends one fact and expects the verdict, evidence and advice that says so."""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from tealeaf_fleet import check_rules as rules
from tealeaf_fleet.check import FleetCheck, HostCheck
from tealeaf_fleet.check_rules import FAIL, OK, UNKNOWN, WARN, HostAnswers, evaluate_host
from tealeaf_fleet.errors import (
    AuthenticationFailed,
    HostUnreachable,
    RemoteScriptError,
    RemoteTimeout,
)
from tealeaf_fleet.inventory import Host, WinRMSettings
from tealeaf_fleet.lab import models
from tealeaf_fleet.lab.dataservice import free_port
from tealeaf_fleet.lab.events import EventLog
from tealeaf_fleet.lab.host import HostConfig, LabHost
from tealeaf_fleet.ops import protocol

WINRM = WinRMSettings(
    scheme="https",
    port=5986,
    transport="ntlm",
    username="LAB\\fleet-admin",
    password_env=None,
    password_file=None,
    ca_bundle=None,
)


def inventory_host(role: str = "canister", port: int = 23000, **winrm) -> Host:
    return Host(
        name="can01",
        address="10.0.0.5",
        role=role,
        winrm=dataclasses.replace(WINRM, **winrm),
        data_service_port=port,
    )


def lab_host(root, *, port: int = 0, **timings) -> LabHost:
    """A started simulated 2008 R2 canister (no WinRM endpoint: the models are called directly)."""
    root.mkdir(parents=True, exist_ok=True)
    password = root / "pw.txt"
    password.write_text("not-used\n", encoding="utf-8")
    host = LabHost(
        root / "can01",
        HostConfig(name="can01", role="canister", os="2008r2", data_service_port=port),
        events=EventLog(root / "events.jsonl"),
        username="LAB\\fleet-admin",
        password_file=password,
        **timings,
    )
    host.create()
    host.start()
    return host


def model_answers(host: LabHost) -> tuple[dict, dict]:
    """(facts, check) as the lab's models answer them for `host`."""
    facts = models.facts(host, {"InstallDir": "", "Since": ""})
    params = {
        "Sentinel": rules.SENTINEL,
        "InstallDir": facts["install_dir"],
        "MutexName": rules.RESTART_MUTEX,
    }
    return facts, models.check(host, params)


@pytest.fixture(scope="module")
def lab_answers(tmp_path_factory):
    """(facts, check, data service port) of a healthy 2008 R2 canister, by the lab's models."""
    port = free_port()
    host = lab_host(tmp_path_factory.mktemp("checkrules"), port=port)
    try:
        facts, check = model_answers(host)
    finally:
        host.shutdown()
    return facts, check, port


def answers(lab_answers, *, skew_s: float = 0.0, **changes) -> HostAnswers:
    """Healthy answers (deep copies), the controller's clock `skew_s` behind the host's."""
    facts, check, _ = copy.deepcopy(lab_answers)
    host_utc = datetime.strptime(check["utc_now"], "%Y-%m-%dT%H:%M:%S.%fZ")
    middle = host_utc.replace(tzinfo=timezone.utc).timestamp() - skew_s
    base = HostAnswers(
        facts=facts,
        check=check,
        logged_in=True,
        sent_at=middle - 0.2,
        received_at=middle + 0.2,
        stdin_bytes=len(protocol.build_stdin("check", {"Sentinel": rules.SENTINEL})),
    )
    return dataclasses.replace(base, **changes)


def line(lab_answers, mechanism: str, a: HostAnswers | None = None, **host_kw) -> rules.Line:
    host = inventory_host(port=lab_answers[2], **host_kw)
    lines = evaluate_host(host, a or answers(lab_answers))
    return next(x for x in lines if x.mechanism == mechanism)


def test_a_healthy_host_proves_every_mechanism(lab_answers):
    lines = evaluate_host(inventory_host(port=lab_answers[2]), answers(lab_answers))
    assert [x.mechanism for x in lines] == [name for name, _ in rules.MECHANISMS]
    assert {x.mechanism: x.verdict for x in lines if x.verdict != OK} == {}
    assert all(x.evidence for x in lines)


def test_lab_check_model_asks_the_host(tmp_path):
    """File versions, the log listing's GetFiles pattern and the boot time come from the host."""
    host = lab_host(tmp_path, restart_s=0.05, reboot_s=0.05)
    logs = host.install_dir + "\\Logs\\"
    host.write_file(logs + "TLDataService_20261101.log_old", b"old\r\n")  # '*.log' matches
    host.write_file(logs + "TLDataService.cfg", b"x")
    booted = host.last_boot()
    _, check = model_answers(host)
    assert check["tools"]["TLSTool.exe"]["file_version"] == "9.0.2.1351"
    names = {e["name"] for e in check["logs"]["newest"]}
    assert "TLDataService_20261101.log_old" in names and "TLDataService.cfg" not in names
    assert check["os"]["last_boot_utc"] == models._utc_text(booted)
    host.reboot(delay_s=0)
    for _ in range(200):  # bounded: the simulated reboot takes reboot_s
        if host.last_boot() > booted:
            break
        time.sleep(0.05)
    assert host.last_boot() > booted
    assert model_answers(host)[1]["os"]["last_boot_utc"] != check["os"]["last_boot_utc"]


def test_the_sentinel_has_everything_a_shell_would_mangle():
    for piece in ("'", '"', "$(", "`", "\n", "\u00e9", "\u65e5"):
        assert piece in rules.SENTINEL


def test_restart_mutex_name_is_restart_services_own():
    assert f"'{rules.RESTART_MUTEX}'" in protocol.script_text("restart_services")


def test_unreachable_host_fails_login_and_leaves_the_rest_unknown(lab_answers):
    error = HostUnreachable("cannot connect to https://x", host="can01", hint="open port 5986")
    lines = evaluate_host(inventory_host(), HostAnswers(facts=error))
    assert (lines[0].mechanism, lines[0].verdict) == ("login", FAIL)
    assert "cannot connect" in lines[0].evidence and lines[0].action == "open port 5986"
    assert {x.verdict for x in lines[1:]} == {UNKNOWN} and len(lines) == len(rules.MECHANISMS)
    assert "no WinRM shell" in lines[1].evidence


def test_refused_login_says_so(lab_answers):
    error = AuthenticationFailed("x rejected the credentials", host="can01", hint="check username")
    lines = evaluate_host(inventory_host(), HostAnswers(facts=error))
    assert lines[0].verdict == FAIL and "rejected" in lines[0].evidence
    assert "login was refused" in lines[-1].evidence


@pytest.mark.parametrize(
    ("winrm", "verdict", "text"),
    [
        ({}, OK, "certificate checked"),
        ({"username": "LAB\\{0}odd"}, OK, "ntlm as LAB\\{0}odd"),  # braces are just text
        ({"validate_certs": False}, WARN, "NOT checked"),
        ({"scheme": "http"}, OK, "ntlm message encryption"),
        ({"scheme": "http", "transport": "basic", "allow_unencrypted": True}, WARN, "WITHOUT"),
    ],
)
def test_login_names_the_channel(lab_answers, winrm, verdict, text):
    got = line(lab_answers, "login", **winrm)
    assert got.verdict == verdict and text in got.evidence


def test_shell_code_page_bitness_and_administrator(lab_answers):
    a = answers(lab_answers)
    a.check["shell"]["output_codepage"] = 437
    assert line(lab_answers, "shell", a).verdict == WARN
    a = answers(lab_answers)
    a.check["shell"].update(process_bits=32, os_64bit=True)
    assert "32-bit" in line(lab_answers, "shell", a).action
    a = answers(lab_answers)
    a.check["shell"]["admin"] = False
    got = line(lab_answers, "shell", a)
    assert got.verdict == FAIL and "NOT an administrator" in got.evidence


def test_an_altered_sentinel_fails_framing_and_names_the_character(lab_answers):
    a = answers(lab_answers)
    a.check["sentinel"] = rules.SENTINEL.replace("\u00e9", "?")
    got = line(lab_answers, "stdin_framing", a)
    assert got.verdict == FAIL and "U+00E9" in got.evidence


def test_end_of_file(lab_answers):
    assert "all" in line(lab_answers, "stdin_eof").evidence
    a = answers(lab_answers)
    a.check["script_chars"] = 100
    assert line(lab_answers, "stdin_eof", a).verdict == FAIL
    hung = RemoteTimeout("check did not finish before its deadline", host="can01")
    got = line(lab_answers, "stdin_eof", answers(lab_answers, check=hung))
    assert got.verdict == FAIL and "end of file" in got.action
    # the check op answered: a facts op that ran out of time is not an end-of-file problem
    slow_facts = RemoteTimeout("facts did not finish before its deadline", host="can01")
    assert line(lab_answers, "stdin_eof", answers(lab_answers, facts=slow_facts)).verdict == OK
    # one trailing newline less (stdin joined from lines) still counts as the whole script
    a = answers(lab_answers)
    a.check["script_chars"] = len(protocol.script_text("check").rstrip("\n"))
    assert line(lab_answers, "stdin_eof", a).verdict == OK


def test_constrained_language(lab_answers):
    a = answers(lab_answers)
    a.check["powershell"]["language_mode"] = "ConstrainedLanguage"
    assert line(lab_answers, "powershell", a).verdict == FAIL
    stopped = RemoteScriptError(
        "this host runs PowerShell in ConstrainedLanguage mode", op="facts", exit_code_remote=1
    )
    a = answers(lab_answers, facts=stopped, check=stopped)
    lines = {x.mechanism: x for x in evaluate_host(inventory_host(), a)}
    assert lines["login"].verdict == OK
    assert lines["powershell"].verdict == FAIL and "Constrained" in lines["powershell"].action
    assert lines["services"].verdict == UNKNOWN and "facts op failed" in lines["services"].evidence


def test_dotnet_versions_by_release(lab_answers):
    assert "2.0.50727" in line(lab_answers, "dotnet").evidence
    a = answers(lab_answers)
    a.check["dotnet"] = [{"key": "v4\\Full", "install": 1, "release": 461808}]
    assert "4.7.2 (Release 461808)" in line(lab_answers, "dotnet", a).evidence
    a.check["dotnet"] = []
    assert line(lab_answers, "dotnet", a).verdict == WARN


def test_fips(lab_answers):
    assert line(lab_answers, "fips").verdict == OK
    a = answers(lab_answers)
    a.check["write_probe"].update(sha256=None, hash_error="not FIPS validated")
    assert line(lab_answers, "fips", a).verdict == FAIL
    a = answers(lab_answers)
    a.check["write_probe"]["sha256"] = "00" * 32
    assert line(lab_answers, "fips", a).verdict == FAIL
    a = answers(lab_answers)
    a.facts["fips"] = {"policy_enabled": True, "hash_provider": "SHA256CryptoServiceProvider"}
    got = line(lab_answers, "fips", a)
    assert got.verdict == OK and "ON" in got.evidence and "SHA256Crypto" in got.evidence
    a = answers(lab_answers)
    a.check.update(fips_policy=1)
    a.facts["fips"] = {"policy_enabled": True, "hash_provider": None}
    a.check["write_probe"].update(written=False, sha256=None, error="disk full")
    assert line(lab_answers, "fips", a).verdict == WARN  # CLR 2 without .NET 3.5


def test_pending_reboot_warns(lab_answers):
    assert "pending reboot: none" in line(lab_answers, "os").evidence
    a = answers(lab_answers)
    a.check["pending_reboot"].update(cbs_reboot_pending=True, file_rename_entries=4)
    got = line(lab_answers, "os", a)
    assert got.verdict == WARN and "RebootPending" in got.evidence and "4 Pending" in got.evidence


def test_install_folder_and_build(lab_answers):
    assert "executable path" in line(lab_answers, "install_dir").evidence
    a = answers(lab_answers)
    a.facts.update(install_dir=None, install_dir_source=None)
    assert "install_dir" in line(lab_answers, "install_dir", a).action
    assert "Version" in line(lab_answers, "tealeaf_build").evidence
    a = answers(lab_answers)
    a.facts["tealeaf_build"] = None
    a.check["registry"]["value_names"] = ["InstallDir", "ProductVersion"]
    got = line(lab_answers, "tealeaf_build", a)
    assert got.verdict == FAIL and "ProductVersion" in got.evidence
    rtv = evaluate_host(inventory_host(role="rtv"), a)
    assert next(x for x in rtv if x.mechanism == "tealeaf_build").verdict == WARN
    a.facts.update(tealeaf_build="9.0.2.1100")
    assert line(lab_answers, "tealeaf_build", a).verdict == FAIL
    a.facts.update(tealeaf_build="9.0.2.1351", tealeaf_build_source="file_version")
    assert "file version" in line(lab_answers, "tealeaf_build", a).evidence


def test_tools_missing_fails_a_server_not_a_workstation(lab_answers):
    a = answers(lab_answers)
    a.check["tools"]["openssl.exe"]["exists"] = False
    assert line(lab_answers, "tools", a).verdict == FAIL
    rtv = evaluate_host(inventory_host(role="rtv"), a)
    assert next(x for x in rtv if x.mechanism == "tools").verdict == OK


@pytest.mark.parametrize("state", ["Start Pending", "StartPending"])
def test_a_pending_service_warns(lab_answers, state):
    a = answers(lab_answers)
    a.facts["services"][0]["state"] = state
    assert line(lab_answers, "services", a).verdict == WARN


def test_data_service_log(lab_answers):
    assert line(lab_answers, "data_service_log").verdict == OK
    a = answers(lab_answers)
    a.check["logs"].update(count=0, newest=[])
    assert line(lab_answers, "data_service_log", a).verdict == FAIL
    a = answers(lab_answers)
    a.facts["data_service"].update(mode=None, port=None)
    assert line(lab_answers, "data_service_log", a).verdict == WARN
    a = answers(lab_answers)
    a.facts["data_service"]["port"] = 23443
    got = line(lab_answers, "data_service_log", a)
    assert got.verdict == WARN and "23000" in got.action
    a = answers(lab_answers)
    a.facts["services"] = [s for s in a.facts["services"] if "DataService" not in s["name"]]
    assert "no Data Service" in line(lab_answers, "data_service_log", a).evidence


def test_write_probe(lab_answers):
    assert "deleted" in line(lab_answers, "tools_writable").evidence
    a = answers(lab_answers)
    a.check["write_probe"].update(written=False, error="Access to the path is denied.")
    assert line(lab_answers, "tools_writable", a).verdict == FAIL
    a = answers(lab_answers)
    a.check["write_probe"].update(left_behind=True, error="in use")
    assert "by hand" in line(lab_answers, "tools_writable", a).action


def test_restart_mutex(lab_answers):
    a = answers(lab_answers)
    a.check["mutex"]["created"] = False
    assert line(lab_answers, "restart_mutex", a).verdict == WARN
    a.check["mutex"]["error"] = "Access to the path 'Global\\x' is denied."
    assert line(lab_answers, "restart_mutex", a).verdict == FAIL


@pytest.mark.parametrize(
    ("skew_s", "verdict"),
    [(0.0, OK), (rules.SKEW_WARN_S - 1, OK), (-rules.SKEW_WARN_S - 5, WARN), (400.0, FAIL)],
)
def test_clock_skew_thresholds(lab_answers, skew_s, verdict):
    got = line(lab_answers, "clock_skew", answers(lab_answers, skew_s=skew_s))
    assert got.verdict == verdict
    assert ("ahead" if skew_s >= 0 else "behind") in got.evidence


@pytest.mark.parametrize(
    ("free", "verdict"),
    [(rules.DISK_WARN_BYTES, OK), (rules.DISK_WARN_BYTES - 1, WARN), (0, FAIL)],
)
def test_disk_thresholds(lab_answers, free, verdict):
    a = answers(lab_answers)
    a.check["disk"]["free_bytes"] = free
    assert line(lab_answers, "disk", a).verdict == verdict


def test_the_skew_limit_is_the_certificate_backdating():
    assert timedelta(seconds=rules.SKEW_FAIL_S) == rules.certs.CLOCK_SKEW


def _fleet(*hosts: HostCheck) -> FleetCheck:
    return FleetCheck(list(hosts), inventory="inv.yaml", started_at="x", elapsed_s=1.0)


def test_exit_code_allows_warnings_not_failures_or_unknowns():
    ok, warn = rules.Line("disk", OK, "e"), rules.Line("disk", WARN, "e", "do")
    fail, unknown = rules.Line("disk", FAIL, "e", "do"), rules.Line("disk", UNKNOWN, "e")
    row = lambda *lines: HostCheck("h", "hbr", "a", True, list(lines))  # noqa: E731
    pca = HostCheck("p", "pca", "a", False)
    assert _fleet(row(ok, warn), pca).exit_code == 0
    assert _fleet(row(ok), row(fail)).exit_code == 1
    assert _fleet(row(ok, unknown)).exit_code == 1
    assert re.search(r"NOT proven on h$", _fleet(row(unknown)).summary())
    assert "every mechanism works (warnings on h)" in _fleet(row(warn)).summary()
