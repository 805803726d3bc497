"""Table-driven tests of ops/checks.py: facts dicts in, findings and verdicts out.

`healthy()` builds a facts dict (docs/architecture.md shape) of a host that is ready for a
rollout and has nothing wrong; each case applies overrides and states the codes it expects.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest

from tealeaf_fleet.inventory import Host, WinRMSettings
from tealeaf_fleet.ops import checks
from tealeaf_fleet.ops.checks import BLOCKER, INFO, WARNING, Done, Needed

PFX = "ab" * 32
OTHER = "cd" * 32
THIRD = "ef" * 32
DELETE = object()


_WINRM = WinRMSettings(
    scheme="https",
    port=5986,
    transport="ntlm",
    username="svc",
    password_env=None,
    password_file=None,
    ca_bundle=None,
)


def FakeHost(name: str = "hbr01", role: str = "hbr", data_service_port: int = 23000) -> Host:
    """A real inventory.Host; only name, role and ports matter to the checks."""
    return Host(
        name=name, address="127.0.0.1", role=role, winrm=_WINRM, data_service_port=data_service_port
    )


def healthy(**overrides: Any) -> dict[str, Any]:
    """A valid facts dict of a healthy 2016 server, TLS off, no certificate yet.

    Overrides are dotted paths, passed as `**{"security.cert_sha256": ...}`.
    """
    facts: dict[str, Any] = {
        "hostname": "HBR01",
        "now": "2026-11-27T11:14:59",
        "os": {"version": "10.0.14393", "caption": "Microsoft Windows Server 2016 Standard"},
        "ps_version": "5.1",
        "install_dir": "D:\\Tealeaf",
        "install_dir_source": "service",
        "tools": {"tlstool": True, "openssl": True},
        "tealeaf_build": "9.0.2.1351",
        "tealeaf_build_source": "registry",
        "enable_tls": 0,
        "tls_cert_password_present": True,
        "security": {
            "dir": "C:\\ProgramData\\IBM\\Tealeaf\\security",
            "files": {"tealeaf.crt": None, "tealeaf.p12": None, "server.tls.xml": None},
            "cert_sha256": None,
            "cert_subject": None,
            "cert_not_after": None,
        },
        "services": [
            {
                "name": "TeaLeafTMS",
                "display_name": "TeaLeaf Management Server",
                "state": "Running",
                "start_mode": "Auto",
                "path": '"D:\\Tealeaf\\bin\\TMS.exe"',
            },
            {
                "name": "TeaLeafDataService",
                "display_name": "TeaLeaf Data Service",
                "state": "Running",
                "start_mode": "Auto",
                "path": "D:\\Tealeaf\\bin\\DS.exe",
            },
        ],
        "iis": {"present": False, "state": None},
        "data_service": {
            "mode": "plain",
            "port": 23000,
            "started_at": "2026-11-27T10:00:00",
            "log": "D:\\Tealeaf\\Logs\\TLDataService_20261127.log",
        },
        "schannel": {
            "tls12_server_enabled": None,
            "tls12_server_disabled_by_default": None,
            "tls12_client_enabled": None,
            "tls12_client_disabled_by_default": None,
            "send_trusted_issuer_list": None,
        },
        "dotnet": {
            "v2_strong_crypto": 1,
            "v4_strong_crypto": 1,
            "v2_system_default_tls": 1,
            "v4_system_default_tls": 1,
            "wow6432_v2_strong_crypto": 1,
            "wow6432_v4_strong_crypto": 1,
            "wow6432_v2_system_default_tls": 1,
            "wow6432_v4_system_default_tls": 1,
        },
        "winhttp": {"native": 0xA80, "wow6432": 0xA80},
        "fips": {
            "policy_enabled": False,
            "hash_provider": "SHA256CryptoServiceProvider",
            "hash_error": None,
        },
    }
    return apply(facts, overrides)


def apply(facts: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted paths ('security.cert_sha256') in a copy; DELETE removes the key."""
    out = copy.deepcopy(facts)
    for path, value in overrides.items():
        node = out
        if path.startswith("security.files."):  # file names contain dots
            parents, last = ["security", "files"], path[len("security.files.") :]
        else:
            *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return out


# What facts report for a registry value that is not a number (Get-FleetRegistryNumber).
TRUE_TEXT = {"text": "true", "kind": "String"}
EMPTY_TEXT = {"text": "", "kind": "String"}
LOCKED = (
    "The process cannot access the file 'C:\\ProgramData\\IBM\\Tealeaf\\security\\tealeaf.p12' "
    "because it is being used by another process."
)
FIPS_REFUSAL = (
    "This implementation is not part of the Windows Platform FIPS validated cryptographic "
    "algorithms."
)


def with_service_state(state: str, name: str = "TeaLeafTMS") -> dict[str, Any]:
    """healthy() with one TeaLeaf service in `state` (ServiceController spelling)."""
    facts = healthy()
    for service in facts["services"]:
        if service["name"] == name:
            service["state"] = state
    return facts


def imported(
    sha: str = PFX, enabled: bool = False, mode: str = "plain", **extra: Any
) -> dict[str, Any]:
    """Facts of a host that imported `sha` (and enabled TLS, and restarted in `mode`)."""
    files = {
        "tealeaf.crt": {"size": 1200, "sha256": "11" * 32},
        "tealeaf.p12": {"size": 2400, "sha256": "22" * 32},
        "server.tls.xml": {"size": 300, "sha256": "33" * 32} if enabled else None,
    }
    return healthy(
        **{
            "security.files": files,
            "security.cert_sha256": sha,
            "security.cert_subject": "CN=IBM Tealeaf CX",
            "security.cert_not_after": "2028-11-27T11:14:59",
            "enable_tls": 1 if enabled else 0,
            "data_service.mode": mode,
            **extra,
        }
    )


R2 = {"os.version": "6.1.7601", "ps_version": "2.0"}
# A Data Service log folder with no startup block (or no log at all).
NO_BLOCK = {"mode": None, "port": None, "started_at": None, "log": None, "newest_log": None}
TMS_ONLY = [
    {
        "name": "TeaLeafTMS",
        "display_name": "TeaLeaf Management Server",
        "state": "Running",
        "start_mode": "Auto",
        "path": '"D:\\Tealeaf\\bin\\TMS.exe"',
    }
]
R2_KEYS_OK = {
    **R2,
    "schannel": {
        "tls12_server_enabled": 1,
        "tls12_server_disabled_by_default": 0,
        "tls12_client_enabled": 1,
        "tls12_client_disabled_by_default": 0,
        "send_trusted_issuer_list": 0,
    },
}


def codes(findings: list[checks.Finding], severity: str | None = None) -> set[str]:
    return {f.code for f in findings if severity is None or f.severity == severity}


# --- preflight ---------------------------------------------------------------------------------

PREFLIGHT_CASES = [
    # id, host, facts overrides, pfx, expect_tls, expected blocker codes, expected other codes,
    # words every message of the first expected code must contain
    ("healthy", FakeHost(), {}, None, True, set(), set(), ()),
    (
        "no_install_dir",
        FakeHost(),
        {"install_dir": None, "tools.tlstool": False},
        None,
        True,
        {"install_dir_not_found"},
        set(),
        ("InstallDir", "install_dir"),
    ),
    (
        "no_tlstool",
        FakeHost(),
        {"tools.tlstool": False},
        None,
        True,
        {"tlstool_missing"},
        set(),
        ("D:\\Tealeaf\\Tools\\TLSTool.exe",),
    ),
    (
        "rtv_without_tlstool_is_fine",
        FakeHost("ws01", "rtv"),
        {"tools.tlstool": False, "services": []},
        None,
        True,
        set(),
        {"tlstool_will_be_copied"},
        ("TLSTool.exe",),
    ),
    (
        "old_build",
        FakeHost(),
        {"tealeaf_build": "9.0.2.999"},
        None,
        True,
        {"build_too_old"},
        set(),
        ("9.0.2.999", "9.0.2.1351"),
    ),
    (
        "older_major_with_more_digits",
        FakeHost(),
        {"tealeaf_build": "8.8.0.9049"},
        None,
        True,
        {"build_too_old"},
        set(),
        ("8.8.0.9049",),
    ),
    ("newer_build", FakeHost(), {"tealeaf_build": "9.0.2.5210"}, None, True, set(), set(), ()),
    ("newer_short_build", FakeHost(), {"tealeaf_build": "10.1"}, None, True, set(), set(), ()),
    (
        "unknown_build",
        FakeHost(),
        {"tealeaf_build": None},
        None,
        True,
        {"build_unknown"},
        set(),
        ("Version", "9.0.2.1351"),
    ),
    (
        "garbage_build",
        FakeHost(),
        {"tealeaf_build": "FP6"},
        None,
        True,
        {"build_unknown"},
        set(),
        ("'FP6'",),
    ),
    (
        "rtv_unknown_build_warns",
        FakeHost("ws01", "rtv"),
        {"tealeaf_build": None, "services": []},
        None,
        True,
        set(),
        {"build_unknown"},
        (),
    ),
    (
        "enable_tls_preset_no_pfx",
        FakeHost(),
        {"enable_tls": 1},
        None,
        True,
        {"enable_tls_preset"},
        set(),
        # no pair imported: the vendor's fix is EnableTLS=0, which the prerequisites make
        ("EnableTLS", "--playbook prerequisites", "do not restart"),
    ),
    (
        "enable_tls_preset_no_pfx_with_a_pair",
        FakeHost(),
        {
            "enable_tls": 1,
            "security.cert_sha256": OTHER,
            "security.files.tealeaf.p12": {"size": 2, "sha256": "y"},
        },
        None,
        True,
        {"enable_tls_preset"},
        set(),
        ("EnableTLS", "fleet rollback", "certificate.source: file"),
    ),
    (
        "enable_tls_preset_other_cert",
        FakeHost(),
        {"enable_tls": 1, "security.cert_sha256": OTHER},
        PFX,
        True,
        {"enable_tls_preset"},
        set(),
        ("tealeaf.crt", OTHER[:12], PFX[:12]),
    ),
    (
        "enable_tls_resume_ours",
        FakeHost(),
        {"enable_tls": 1, "security.cert_sha256": PFX},
        PFX,
        True,
        set(),
        {"resume_enabled"},
        (),
    ),
    (
        "enable_tls_odd_value",
        FakeHost(),
        {"enable_tls": 2},
        PFX,
        True,
        {"enable_tls_unexpected"},
        set(),
        ("EnableTLS", "2"),
    ),
    ("enable_tls_absent_ok", FakeHost(), {"enable_tls": None}, None, True, set(), set(), ()),
    (
        "data_service_23443",
        FakeHost(),
        {"data_service.port": 23443},
        None,
        True,
        {"data_service_23443"},
        set(),
        ("23443", "23000"),
    ),
    (
        "data_service_port_unknown",
        FakeHost(),
        {"data_service": NO_BLOCK},
        None,
        True,
        set(),
        {"data_service_port_unknown"},
        ("port unknown", "D:\\Tealeaf\\Logs", "there is none", "23443"),
    ),
    (
        "data_service_port_unknown_names_the_newest_log",
        FakeHost(),
        {"data_service": {**NO_BLOCK, "newest_log": "D:\\Tealeaf\\Logs\\TLDataService.log"}},
        None,
        True,
        set(),
        {"data_service_port_unknown"},
        ("the newest is D:\\Tealeaf\\Logs\\TLDataService.log",),
    ),
    (
        "no_data_service_no_port_warning",
        FakeHost(),
        {"services": TMS_ONLY, "data_service": NO_BLOCK},
        None,
        True,
        set(),
        set(),
        (),
    ),
    (
        "data_service_log_without_a_recognised_service",
        FakeHost(),
        {"services": TMS_ONLY},
        None,
        True,
        set(),
        {"data_service_not_recognised"},
        ("TLDataService_20261127.log", "log gate", "will not run"),
    ),
    (
        "data_service_port_mismatch",
        FakeHost(),
        {"data_service.port": 23001},
        None,
        True,
        set(),
        {"data_service_port_mismatch"},
        ("23001", "data_service_port"),
    ),
    (
        "r2_without_keys",
        FakeHost(),
        R2,
        None,
        True,
        {"schannel_tls12_server", "send_trusted_issuer_list"},
        {"status_report_tls", "powershell_2"},
        ("TLS 1.2\\Server\\Enabled", "TLS 1.2\\Server\\DisabledByDefault", "reboot"),
    ),
    (
        "r2_disabled_by_default_1",
        FakeHost(),
        {**R2_KEYS_OK, "schannel.tls12_server_disabled_by_default": 1},
        None,
        True,
        {"schannel_tls12_server"},
        {"powershell_2"},
        ("DisabledByDefault = 0",),
    ),
    (
        "r2_enabled_ffffffff_counts",
        FakeHost(),
        {**R2_KEYS_OK, "schannel.tls12_server_enabled": 0xFFFFFFFF},
        None,
        True,
        set(),
        {"powershell_2"},
        (),
    ),
    ("r2_keys_ok", FakeHost(), R2_KEYS_OK, None, True, set(), {"powershell_2"}, ()),
    (
        "r2_issuer_list_1",
        FakeHost(),
        {**R2_KEYS_OK, "schannel.send_trusted_issuer_list": 1},
        None,
        True,
        {"send_trusted_issuer_list"},
        {"powershell_2"},
        ("SendTrustedIssuerList",),
    ),
    (
        "2012r2_needs_no_schannel_keys",
        FakeHost(),
        {"os.version": "6.3.9600"},
        None,
        True,
        set(),
        set(),
        (),
    ),
    (
        "no_services",
        FakeHost(),
        {"services": []},
        None,
        True,
        {"no_tealeaf_services"},
        set(),
        ("TeaLeaf",),
    ),
    (
        "hbr_without_tls_cert_password",
        FakeHost(),
        {"tls_cert_password_present": False},
        None,
        True,
        set(),
        {"tls_cert_password_absent"},
        ("TLSCertPassword",),
    ),
    (
        "canister_without_tls_cert_password_is_fine",
        FakeHost("can01", "canister"),
        {"tls_cert_password_present": False},
        None,
        True,
        set(),
        set(),
        (),
    ),
    (
        "status_report_settings_missing",
        FakeHost(),
        {"dotnet.v4_strong_crypto": None, "winhttp.wow6432": 0x80},
        None,
        True,
        set(),
        {"status_report_tls"},
        ("v4.0.30319: SchUseStrongCrypto = 1", "Wow6432Node\\Microsoft", "0xA80", "0xAA0"),
    ),
    (
        "status_report_wow6432_dotnet_missing",
        FakeHost(),
        {"dotnet.wow6432_v4_strong_crypto": None, "dotnet.wow6432_v2_system_default_tls": 0},
        None,
        True,
        set(),
        {"status_report_tls"},
        (
            "Wow6432Node\\Microsoft\\.NETFramework\\v4.0.30319: SchUseStrongCrypto = 1",
            "Wow6432Node\\Microsoft\\.NETFramework\\v2.0.50727: SystemDefaultTlsVersions = 1",
        ),
    ),
    (
        "status_report_value_not_a_number",
        FakeHost(),
        {"dotnet.v4_strong_crypto": {"text": "1x", "kind": "String"}},
        None,
        True,
        set(),
        {"status_report_tls"},
        ("SchUseStrongCrypto = 1 (now a REG_SZ holding '1x')",),
    ),
    (
        "r2_server_enabled_as_text",
        FakeHost(),
        {**R2_KEYS_OK, "schannel.tls12_server_enabled": {"text": "yes", "kind": "String"}},
        None,
        True,
        {"schannel_tls12_server"},
        {"powershell_2"},
        ("Server\\Enabled = 1 (DWORD) (now a REG_SZ holding 'yes')",),
    ),
    (
        "enable_tls_string",
        FakeHost(),
        {"enable_tls": TRUE_TEXT},
        PFX,
        True,
        {"enable_tls_not_numeric"},
        set(),
        ("EnableTLS", "a REG_SZ holding 'true'", "DWORD, 0 or 1"),
    ),
    (
        "enable_tls_empty_string",
        FakeHost(),
        {"enable_tls": EMPTY_TEXT},
        None,
        True,
        {"enable_tls_not_numeric"},
        set(),
        ("an empty REG_SZ",),
    ),
    (
        "enable_tls_binary",
        FakeHost(),
        {"enable_tls": {"text": "1 0 0 0", "kind": "Binary"}},
        None,
        True,
        {"enable_tls_not_numeric"},
        set(),
        ("a REG_BINARY holding '1 0 0 0'",),
    ),
    (
        "rollback_rewrites_a_string_enable_tls",  # TLSTool.exe disable writes the DWORD 0
        FakeHost(),
        {"enable_tls": TRUE_TEXT},
        None,
        False,
        set(),
        set(),
        (),
    ),
    (
        "build_from_file_version",
        FakeHost(),
        {"tealeaf_build": "9.0.2.1351", "tealeaf_build_source": "file_version"},
        None,
        True,
        set(),
        set(),
        (),
    ),
    (
        "build_from_neither_source",
        FakeHost(),
        {"tealeaf_build": None, "tealeaf_build_source": None},
        None,
        True,
        {"build_unknown"},
        set(),
        ("Version is absent", "file version"),
    ),
    (
        "garbage_file_version",
        FakeHost(),
        {"tealeaf_build": "x.y", "tealeaf_build_source": "file_version"},
        None,
        True,
        {"build_unknown"},
        set(),
        ("file version reads 'x.y'",),
    ),
    (
        "security_file_locked",
        FakeHost(),
        {"security.files.tealeaf.p12": {"error": LOCKED}},
        None,
        True,
        set(),
        {"security_file_unreadable"},
        ("tealeaf.p12 cannot be read", "being used by another process"),
    ),
    (
        "security_file_locked_on_rollback",
        FakeHost(),
        {"security.files.tealeaf.crt": {"error": "Access to the path is denied."}},
        None,
        False,
        set(),
        {"security_file_unreadable"},
        ("tealeaf.crt", "denied"),
    ),
    (
        "fips_policy_with_a_working_hash",
        FakeHost(),
        {"fips.policy_enabled": True},
        None,
        True,
        set(),
        set(),
        (),
    ),
    (
        "fips_without_a_working_hash",
        FakeHost(),
        {"fips": {"policy_enabled": True, "hash_provider": None, "hash_error": FIPS_REFUSAL}},
        None,
        True,
        {"sha256_unavailable"},
        set(),
        ("FIPS validated", ".NET Framework 3.5"),
    ),
    # rollback: only what disabling needs
    (
        "rollback_ignores_enable_tls_and_build",
        FakeHost(),
        {"enable_tls": 1, "tealeaf_build": "9.0.2.1", "data_service.port": 23443, **R2},
        None,
        False,
        set(),
        {"powershell_2"},
        (),
    ),
    (
        "rollback_needs_tlstool",
        FakeHost(),
        {"tools.tlstool": False},
        None,
        False,
        {"tlstool_missing"},
        set(),
        (),
    ),
]


PENDING_CASES = [
    # id, facts, expect_tls, words: a TeaLeaf service still pending when preflight judges
    ("start_pending", with_service_state("StartPending"), True, ("TeaLeafTMS (StartPending)",)),
    ("stop_pending", with_service_state("StopPending"), True, ("TeaLeafTMS (StopPending)",)),
    ("continue_pending_rollback", with_service_state("ContinuePending"), False, ("Continue",)),
]


@pytest.mark.parametrize(
    "facts,expect_tls,words", [pytest.param(*case[1:], id=case[0]) for case in PENDING_CASES]
)
def test_preflight_blocks_a_service_still_pending(facts, expect_tls, words):
    findings = checks.preflight_blockers(FakeHost(), facts, pfx_sha256=None, expect_tls=expect_tls)
    assert codes(findings, BLOCKER) == {"service_pending"}
    message = " ".join(f.message for f in findings if f.code == "service_pending")
    for word in words + ("health_timeout_s",):
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "host,overrides,pfx,expect_tls,blockers,others,words",
    [pytest.param(*case[1:], id=case[0]) for case in PREFLIGHT_CASES],
)
def test_preflight(host, overrides, pfx, expect_tls, blockers, others, words):
    findings = checks.preflight_blockers(
        host, healthy(**overrides), pfx_sha256=pfx, expect_tls=expect_tls
    )
    assert codes(findings, BLOCKER) == blockers
    assert codes(findings) - codes(findings, BLOCKER) == others
    assert all(f.hosts == (host.name,) for f in findings)
    if words:  # named in the blockers' messages, or (when none) in the other findings'
        wanted = blockers or others
        message = " | ".join(f.message for f in findings if f.code in wanted)
        for word in words:
            assert word in message, (word, message)


def test_severities_are_known_values():
    findings = checks.preflight_blockers(
        FakeHost(),
        healthy(**R2, enable_tls=1, tealeaf_build=None, tls_cert_password_present=False),
        pfx_sha256=None,
        expect_tls=True,
    )
    assert {f.severity for f in findings} <= {BLOCKER, WARNING, INFO}
    assert checks.has_blockers(findings)
    assert not checks.has_blockers([f for f in findings if f.severity != BLOCKER])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("9.0.2.1351", True),
        ("9.0.2.1350", False),
        ("9.0.2.10000", True),
        ("9.0.10.1", True),
        ("9.1", True),
        ("9.0.2", False),
        ("9.0.2.1351 FP6", True),
        ("", None),
        (None, None),
        ("v9", None),
        (9021351, None),
    ],
)
def test_build_comparison_is_numeric(text, expected):
    assert checks.build_at_least(text) is expected


# --- step_status -------------------------------------------------------------------------------

STEP_CASES = [
    # id, host, facts, op, pfx, expect_tls, changed_at, done?, words in reason
    ("push_no_pfx_yet", FakeHost(), healthy(), "push_pfx", None, True, None, False, ()),
    (
        "push_file_info_other",
        FakeHost(),
        healthy(
            files={"D:\\Tealeaf\\Tools\\TCXcert.pfx": {"exists": True, "size": 9, "sha256": OTHER}}
        ),
        "push_pfx",
        PFX,
        True,
        None,
        False,
        (),
    ),
    ("push_no_file_info", FakeHost(), healthy(), "push_pfx", PFX, True, None, False, ()),
    (
        "push_already_imported",
        FakeHost(),
        imported(),
        "push_pfx",
        PFX,
        True,
        None,
        True,
        ("imported",),
    ),
    ("import_fresh", FakeHost(), healthy(), "import", PFX, True, None, False, ("tealeaf.crt",)),
    ("import_done", FakeHost(), imported(), "import", PFX, True, None, True, ("tealeaf.p12",)),
    (
        "import_other_cert",
        FakeHost(),
        imported(OTHER),
        "import",
        PFX,
        True,
        None,
        False,
        (OTHER[:12],),
    ),
    (
        "import_p12_missing",
        FakeHost(),
        imported(**{"security.files.tealeaf.p12": None}),
        "import",
        PFX,
        True,
        None,
        False,
        ("tealeaf.p12",),
    ),
    (
        "import_rtv_counts_too",
        FakeHost("ws01", "rtv"),
        imported(),
        "import",
        PFX,
        True,
        None,
        True,
        (),
    ),
    ("enable_fresh", FakeHost(), imported(), "enable", PFX, True, None, False, ("EnableTLS",)),
    (
        "enable_done",
        FakeHost(),
        imported(enabled=True),
        "enable",
        PFX,
        True,
        None,
        True,
        ("server.tls.xml",),
    ),
    (
        "enable_without_xml",
        FakeHost(),
        imported(enabled=True, **{"security.files.server.tls.xml": None}),
        "enable",
        PFX,
        True,
        None,
        False,
        ("server.tls.xml",),
    ),
    (
        "enable_rtv_never",
        FakeHost("ws01", "rtv"),
        imported(),
        "enable",
        PFX,
        True,
        None,
        True,
        ("rtv",),
    ),
    ("disable_needed", FakeHost(), imported(enabled=True), "disable", PFX, False, None, False, ()),
    ("disable_done", FakeHost(), imported(), "disable", PFX, False, None, True, ("0",)),
    (
        "enable_over_a_string",
        FakeHost(),
        imported(enable_tls=TRUE_TEXT),
        "enable",
        PFX,
        True,
        None,
        False,
        ("a REG_SZ holding 'true'",),
    ),
    (
        "disable_over_a_string",
        FakeHost(),
        healthy(enable_tls=TRUE_TEXT),
        "disable",
        None,
        False,
        None,
        False,
        ("a REG_SZ holding 'true'",),
    ),
    (
        "restart_with_a_string_enable_tls",
        FakeHost(),
        healthy(enable_tls=EMPTY_TEXT),
        "restart",
        None,
        False,
        None,
        False,
        ("an empty REG_SZ",),
    ),
    (
        "disable_absent",
        FakeHost(),
        healthy(enable_tls=None),
        "disable",
        None,
        False,
        None,
        True,
        ("absent",),
    ),
    # facts without the key prove nothing (the planner used to guard this on its own)
    (
        "disable_unknown",
        FakeHost(),
        healthy(enable_tls=DELETE),
        "disable",
        None,
        False,
        None,
        False,
        ("unknown",),
    ),
    (
        "disable_odd_value",
        FakeHost(),
        healthy(enable_tls=2),
        "disable",
        None,
        False,
        None,
        False,
        ("2",),
    ),
    (
        "restart_plain_wanted_tls",
        FakeHost(),
        imported(enabled=True),
        "restart",
        PFX,
        True,
        None,
        False,
        ("plain",),
    ),
    (
        "restart_tls_done",
        FakeHost(),
        imported(enabled=True, mode="tls"),
        "restart",
        PFX,
        True,
        None,
        True,
        ("tls",),
    ),
    (
        "restart_tls_but_before_change",
        FakeHost(),
        imported(enabled=True, mode="tls"),
        "restart",
        PFX,
        True,
        "2026-11-27T10:30:00",
        False,
        ("2026-11-27T10:30:00",),
    ),
    (
        "restart_tls_after_change",
        FakeHost(),
        imported(enabled=True, mode="tls"),
        "restart",
        PFX,
        True,
        "2026-11-27T09:30:00",
        True,
        (),
    ),
    (
        "restart_rollback_done",
        FakeHost(),
        imported(),
        "restart",
        PFX,
        False,
        None,
        True,
        ("plain",),
    ),
    # the Data Service's mode matches, EnableTLS does not: the enable/disable and a restart
    # after it are still to come
    (
        "restart_tls_but_registry_off",
        FakeHost(),
        imported(mode="tls"),
        "restart",
        PFX,
        True,
        None,
        False,
        ("EnableTLS is 0", "enable"),
    ),
    (
        "restart_plain_but_registry_on",
        FakeHost(),
        imported(enabled=True),
        "restart",
        PFX,
        False,
        None,
        False,
        ("EnableTLS is 1", "disable"),
    ),
    (
        "restart_registry_unknown",
        FakeHost(),
        healthy(enable_tls=DELETE),
        "restart",
        None,
        False,
        None,
        False,
        ("unknown",),
    ),
    (
        "restart_rollback_absent_done",
        FakeHost(),
        healthy(enable_tls=None),
        "restart",
        None,
        False,
        None,
        True,
        ("absent", "plain"),
    ),
    (
        "restart_no_log",
        FakeHost(),
        healthy(**{"data_service.mode": None}),
        "restart",
        None,
        False,
        None,
        False,
        ("log",),
    ),
    ("restart_rtv", FakeHost("ws01", "rtv"), healthy(), "restart", PFX, True, None, True, ()),
    (
        "push_tools_rtv_missing",
        FakeHost("ws01", "rtv"),
        healthy(**{"tools.openssl": False}),
        "push_tools",
        PFX,
        True,
        None,
        False,
        ("openssl.exe",),
    ),
    (
        "push_tools_rtv_present",
        FakeHost("ws01", "rtv"),
        healthy(),
        "push_tools",
        PFX,
        True,
        None,
        True,
        (),
    ),
    (
        "push_tools_server",
        FakeHost(),
        healthy(**{"tools.tlstool": False}),
        "push_tools",
        PFX,
        True,
        None,
        True,
        ("RTV",),
    ),
    (
        "verify_always_runs",
        FakeHost(),
        imported(enabled=True, mode="tls"),
        "verify",
        PFX,
        True,
        None,
        False,
        (),
    ),
]


@pytest.mark.parametrize(
    "host,facts,op,pfx,expect_tls,changed_at,done,words",
    [pytest.param(*case[1:], id=case[0]) for case in STEP_CASES],
)
def test_step_status(host, facts, op, pfx, expect_tls, changed_at, done, words):
    verdict = checks.step_status(
        host, facts, op, pfx_sha256=pfx, expect_tls=expect_tls, changed_at=changed_at
    )
    assert isinstance(verdict, Done if done else Needed)
    assert verdict.done is done
    assert verdict.reason
    for word in words:
        assert word in verdict.reason, (word, verdict.reason)


def test_step_status_rejects_unknown_op():
    with pytest.raises(ValueError, match="unknown op"):
        checks.step_status(FakeHost(), healthy(), "reformat", pfx_sha256=None, expect_tls=True)


# --- fleet drift -------------------------------------------------------------------------------

ROLES = {"portal01": "portal", "hbr01": "hbr", "hbr02": "hbr", "can01": "canister", "ws01": "rtv"}

DRIFT_CASES = [
    # id, facts by host, pfx, expected {code: hosts}, words in the first expected code's message
    ("fresh_fleet_off", {n: healthy() for n in ROLES}, None, {}, ()),
    (
        "all_enabled_same_cert",
        {**{n: imported(enabled=True, mode="tls") for n in ROLES}, "ws01": imported()},
        PFX,
        {},
        (),
    ),
    ("imported_everywhere_not_enabled", {n: imported() for n in ROLES}, PFX, {}, ()),
    (
        "outlier_vs_pfx",
        {**{n: imported() for n in ROLES}, "hbr02": imported(OTHER)},
        PFX,
        {"cert_mismatch": ("hbr02",)},
        ("tealeaf.crt", OTHER[:12], PFX[:12], "the PFX"),
    ),
    (
        "outlier_vs_majority",
        {**{n: imported() for n in ROLES}, "can01": imported(OTHER)},
        None,
        {"cert_mismatch": ("can01",)},
        ("majority", OTHER[:12]),
    ),
    (
        "no_majority",
        {"hbr01": imported(PFX), "hbr02": imported(OTHER)},
        None,
        {"cert_mismatch": ("hbr01", "hbr02")},
        ("no majority", PFX[:12], OTHER[:12]),
    ),
    (
        "rtv_with_other_cert_is_drift",
        {**{n: imported() for n in ROLES}, "ws01": imported(THIRD)},
        None,
        {"cert_mismatch": ("ws01",)},
        (),
    ),
    (
        "mixed_enable",
        {**{n: imported() for n in ROLES}, "hbr01": imported(enabled=True, mode="tls")},
        PFX,
        {"enable_tls_mixed": ("can01", "hbr01", "hbr02", "portal01")},
        ("EnableTLS", "hbr01"),
    ),
    (
        "rtv_never_enabled_is_not_mixed",
        {**{n: imported(enabled=True, mode="tls") for n in ROLES}, "ws01": imported()},
        PFX,
        {},
        (),
    ),
    (
        "enabled_without_files",
        {
            **{n: imported(enabled=True, mode="tls") for n in ROLES if n != "ws01"},
            "hbr02": imported(enabled=True, mode="tls", **{"security.files.tealeaf.p12": None}),
        },
        PFX,
        {"cert_files_missing": ("hbr02",)},
        ("tealeaf.p12", "C:\\ProgramData"),
    ),
    (
        "enabled_not_restarted",
        {n: imported(enabled=True, mode="plain") for n in ("hbr01", "can01")},
        PFX,
        {"data_service_mode": ("can01", "hbr01")},
        ("Data Service", "restart"),
    ),
    (
        "disabled_but_tls_mode",
        {"hbr01": imported(mode="tls"), "can01": imported()},
        PFX,
        {"data_service_mode": ("hbr01",)},
        ("TLS Port",),
    ),
    (
        "stopped_auto_service",
        {
            "hbr01": healthy(
                **{
                    "services": [
                        {"name": "TeaLeafTMS", "state": "Stopped", "start_mode": "Auto"},
                        {"name": "TeaLeafRS", "state": "Stopped", "start_mode": "Manual"},
                    ]
                }
            )
        },
        None,
        {"service_stopped": ("hbr01",)},
        ("TeaLeafTMS",),
    ),
    (
        "enable_tls_string",
        {"hbr01": healthy(enable_tls=TRUE_TEXT), "can01": healthy()},
        None,
        {"enable_tls_not_numeric": ("hbr01",)},
        ("EnableTLS", "a REG_SZ holding 'true'", "0 or 1"),
    ),
    (
        "security_file_locked",
        {"hbr01": imported(**{"security.files.tealeaf.p12": {"error": LOCKED}})},
        PFX,
        {"security_file_unreadable": ("hbr01",)},
        ("tealeaf.p12", "being used by another process"),
    ),
    (
        "start_pending_auto_service",
        {"hbr01": with_service_state("StartPending")},
        None,
        {"service_stopped": ("hbr01",)},
        ("TeaLeafTMS (StartPending)",),
    ),
    (
        "data_service_without_startup_block",
        {"hbr01": healthy(data_service=NO_BLOCK)},
        None,
        {"data_service_unknown": ("hbr01",)},
        ("TLDataService*.log",),
    ),
    (
        "no_data_service_no_mode_to_know",
        {"hbr01": healthy(services=TMS_ONLY, data_service=NO_BLOCK)},
        None,
        {},
        (),
    ),
    (
        "expiring_cert",
        {"hbr01": imported(**{"security.cert_not_after": "2026-12-10T00:00:00"})},
        PFX,
        {"cert_expiring": ("hbr01",)},
        ("2026-12-10",),
    ),
    (
        "builds_differ",
        {"hbr01": healthy(), "can01": healthy(tealeaf_build="9.0.2.1400")},
        None,
        {"build_mismatch": ("can01", "hbr01")},
        ("9.0.2.1400",),
    ),
]


@pytest.mark.parametrize(
    "facts_by_host,pfx,expected,words",
    [pytest.param(*case[1:], id=case[0]) for case in DRIFT_CASES],
)
def test_fleet_drift(facts_by_host, pfx, expected, words):
    findings = checks.fleet_drift(facts_by_host, pfx_sha256=pfx, roles=ROLES)
    got: dict[str, set[str]] = {}
    for f in findings:
        got.setdefault(f.code, set()).update(f.hosts)
    assert got == {code: set(hosts) for code, hosts in expected.items()}
    if words:
        first = sorted(expected)[0]
        message = " ".join(f.message for f in findings if f.code == first)
        for word in words:
            assert word in message, (word, message)


def test_drift_severity_separates_inconsistency_from_advice():
    stopped = healthy(
        **{"services": [{"name": "TeaLeafTMS", "state": "Stopped", "start_mode": "Auto"}]}
    )
    advice = checks.fleet_drift({"hbr01": stopped}, pfx_sha256=None, roles=ROLES)
    assert advice and not checks.has_blockers(advice)
    broken = checks.fleet_drift(
        {"hbr01": imported(enabled=True), "hbr02": imported()}, pfx_sha256=PFX, roles=ROLES
    )
    assert checks.has_blockers(broken)


@pytest.mark.parametrize(
    "service,expected",
    [
        ({"name": "TLDS", "path": '"D:\\Tea leaf\\bin\\TLDataService.exe" -svc'}, True),
        ({"name": "x", "path": "D:\\Program Files\\Tealeaf\\bin\\tldataservice.EXE"}, True),
        ({"name": "TeaLeafDataService", "display_name": "", "path": ""}, True),
        ({"name": "TLSvc", "display_name": "TeaLeaf Data Service", "path": "D:\\x.exe"}, True),
        ({"name": "TeaLeafTMS", "display_name": "TeaLeaf Management Server"}, False),
        ({"name": "TeaLeafDataServiceMonitor", "path": "D:\\bin\\NotTLDataService.exe"}, False),
    ],
)
def test_the_data_service_is_known_by_its_executable_or_its_name(service, expected):
    from tealeaf_fleet.ops.facts import HostFacts, is_data_service

    assert is_data_service(service) is expected
    assert HostFacts("h", {"services": [service]}).has_data_service is expected


def test_finding_to_dict_round_trips_fields():
    finding = checks.Finding(BLOCKER, "x", "fix y", ("h1",))
    assert finding.to_dict() == {
        "severity": BLOCKER,
        "code": "x",
        "message": "fix y",
        "hosts": ["h1"],
    }
    assert finding.host == "h1"
    assert checks.Finding(WARNING, "x", "m", ("a", "b")).host is None


@pytest.mark.parametrize(
    "shas,expected",
    [
        ([], None),
        ([None, None], None),
        ([PFX, PFX, OTHER], PFX),
        ([PFX, OTHER], None),
        ([OTHER, None, None], OTHER),
    ],
)
def test_majority_fingerprint(shas, expected):
    facts = {f"h{i}": healthy(**{"security.cert_sha256": sha}) for i, sha in enumerate(shas)}
    assert checks.majority_fingerprint(facts) == expected


def test_status_report_warning_names_client_keys_only_on_2008r2():
    def message(**overrides):
        findings = checks.preflight_blockers(
            FakeHost(), healthy(**overrides), pfx_sha256=None, expect_tls=True
        )
        return " ".join(f.message for f in findings if f.code == "status_report_tls")

    assert message() == ""  # healthy() has .NET and WinHTTP set
    assert "TLS 1.2\\Client: Enabled = 1, DisabledByDefault = 0" in message(**R2)
    assert "Client" not in message(**{"dotnet.v2_strong_crypto": 0})


@pytest.mark.parametrize(
    "role,severity", [("hbr", BLOCKER), ("canister", BLOCKER), ("portal", WARNING)]
)
@pytest.mark.parametrize("expect_tls", [True, False])
def test_preflight_names_a_stopped_automatic_service(role, severity, expect_tls):
    """An Auto TeaLeaf service found stopped: a warning naming it, a blocker on the roles that
    restart one at a time (another one's restart would leave its share to nobody)."""
    facts = with_service_state("Stopped", "TeaLeafDataService")
    findings = checks.preflight_blockers(
        FakeHost(role=role), facts, pfx_sha256=None, expect_tls=expect_tls
    )
    found = [f for f in findings if f.code == "service_stopped"]
    assert [f.severity for f in found] == [severity]
    assert "TeaLeafDataService" in found[0].message
    assert ("--limit" in found[0].message) == (severity == BLOCKER)


def test_preflight_leaves_a_stopped_manual_service_alone():
    facts = with_service_state("Stopped", "TeaLeafDataService")
    for service in facts["services"]:
        service["start_mode"] = "Manual"
    findings = checks.preflight_blockers(FakeHost(), facts, pfx_sha256=None, expect_tls=True)
    assert "service_stopped" not in codes(findings)


def test_push_pfx_compares_file_hashes_never_the_certificate_fingerprint():
    """The PFX's file hash and its certificate's fingerprint are different numbers: a file
    whose hash equals the fingerprint is not the PFX, one whose hash equals the file hash is."""
    path = "D:\\Tealeaf\\Tools\\TCXcert.pfx"
    file_hash = "fe" * 32
    fingerprint_only = healthy(files={path: {"exists": True, "size": 9, "sha256": PFX}})
    verdict = checks.step_status(
        FakeHost(),
        fingerprint_only,
        "push_pfx",
        pfx_sha256=PFX,
        expect_tls=True,
        pfx_file_sha256=file_hash,
    )
    assert not verdict.done and "file hash" in verdict.reason
    copied = healthy(files={path: {"exists": True, "size": 9, "sha256": file_hash}})
    verdict = checks.step_status(
        FakeHost(),
        copied,
        "push_pfx",
        pfx_sha256=PFX,
        expect_tls=True,
        pfx_file_sha256=file_hash,
    )
    assert verdict.done and "file hash fefefefefefe" in verdict.reason
    assert "SHA-256" not in verdict.reason


# --- rotation -------------------------------------------------------------------------------

TLS_ON = {
    "enable_tls": 1,
    "security.files.tealeaf.crt": {"size": 1, "sha256": "x"},
    "security.files.tealeaf.p12": {"size": 1, "sha256": "y"},
    "security.files.server.tls.xml": {"size": 1, "sha256": "z"},
    "security.cert_sha256": OTHER,
    "data_service.mode": "tls",
}

ROTATION_CASES = [
    # (id, overrides, blockers, words)
    ("tls-on-old-pair", TLS_ON, set(), ()),
    ("tls-on-new-pair-already", {**TLS_ON, "security.cert_sha256": PFX}, set(), ()),
    ("tls-off", {}, {"rotation_tls_off"}, ("EnableTLS is 0", "fleet rollout")),
    (
        "xml-missing",
        {**TLS_ON, "security.files.server.tls.xml": None},
        {"rotation_tls_off"},
        ("server.tls.xml is missing",),
    ),
    ("ds-plain", {**TLS_ON, "data_service.mode": "plain"}, {"rotation_tls_off"}, ("plain mode",)),
    ("enable-tls-text", {**TLS_ON, "enable_tls": TRUE_TEXT}, {"enable_tls_not_numeric"}, ()),
]


@pytest.mark.parametrize(
    "overrides,blockers,words", [pytest.param(*c[1:], id=c[0]) for c in ROTATION_CASES]
)
def test_rotation_preflight_needs_tls_on(overrides, blockers, words):
    findings = checks.preflight_blockers(
        FakeHost(), healthy(**overrides), pfx_sha256=PFX, expect_tls=True, rotation=True
    )
    assert codes(findings, BLOCKER) == blockers
    message = " ".join(f.message for f in findings)
    for word in words:
        assert word in message
    # the same facts with TLS on block a rollout (EnableTLS already 1 with another pair)
    if overrides.get("security.cert_sha256") == OTHER and overrides.get("enable_tls") == 1:
        rollout = checks.preflight_blockers(
            FakeHost(), healthy(**overrides), pfx_sha256=PFX, expect_tls=True
        )
        assert "enable_tls_preset" in codes(rollout, BLOCKER)


def test_rotation_preflight_on_an_rtv_workstation_asks_nothing_of_tls():
    findings = checks.preflight_blockers(
        FakeHost("rtv01", "rtv"), healthy(), pfx_sha256=PFX, expect_tls=True, rotation=True
    )
    assert codes(findings, BLOCKER) == set()


NOW = datetime(2026, 12, 1, 12, 0)


@pytest.mark.parametrize(
    "installed,serving,new,not_after,expected",
    [
        pytest.param(
            {"a": OTHER, "b": OTHER},
            {"a": OTHER},
            PFX,
            NOW + timedelta(days=400),
            set(),
            id="fresh-rotation",
        ),
        pytest.param(
            {"a": PFX, "b": PFX},
            {"a": OTHER},
            PFX,
            NOW + timedelta(days=400),
            set(),
            id="halted-after-import-resumes",
        ),
        pytest.param(
            {"a": PFX, "b": OTHER},
            {"a": PFX},
            PFX,
            NOW + timedelta(days=400),
            set(),
            id="half-imported-resumes",
        ),
        pytest.param(
            {"a": PFX, "b": PFX},
            {"a": PFX},
            PFX,
            NOW + timedelta(days=400),
            {"rotation_nothing_to_do"},
            id="nothing-to-do",
        ),
        pytest.param(
            {"a": OTHER}, {"a": OTHER}, None, None, {"rotation_no_pair"}, id="no-new-pair"
        ),
        pytest.param(
            {"a": OTHER},
            {"a": OTHER},
            PFX,
            NOW + timedelta(days=29),
            {"rotation_pair_expiring"},
            id="expires-in-29-days",
        ),
        pytest.param(
            {"a": OTHER},
            {"a": OTHER},
            PFX,
            NOW - timedelta(days=1),
            {"rotation_pair_expiring"},
            id="expired",
        ),
        pytest.param(
            {"a": OTHER},
            {"a": OTHER},
            PFX,
            NOW + timedelta(days=31),
            set(),
            id="expires-in-31-days",
        ),
    ],
)
def test_rotation_fleet_blockers(installed, serving, new, not_after, expected):
    findings = checks.rotation_fleet_blockers(
        installed, serving, new_sha256=new, not_after=not_after, now=NOW
    )
    assert codes(findings, BLOCKER) == expected
    assert all(f.hosts == ("controller",) for f in findings)
