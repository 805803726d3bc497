"""The prerequisites as data: which typed registry writes a host still needs (prerequisites.py),
the inventory's `prerequisites:` settings, the reboot op's safety rules, reboot-pending
judgement, the read-back check, and the plan and ticket built from them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tealeaf_fleet.cli.render import render
from tealeaf_fleet.engine.actions import _read_back_problem
from tealeaf_fleet.errors import InputError
from tealeaf_fleet.ops import checks
from tealeaf_fleet.plan import build_plan
from tealeaf_fleet.playbooks import load_playbook
from tealeaf_fleet.prerequisites import (
    DUMMY_CERT_PASSWORD,
    needed_writes,
    reboot_areas,
)
from test_checks import R2, FakeHost, healthy
from test_plan import make_fleet

SCHANNEL = checks.SCHANNEL_KEY
TLS12 = checks.TLS12_KEY
TEALEAF = checks.TEALEAF_KEY
HOSTS = {"portal01": "portal", "hbr01": "hbr", "can01": "canister", "rtv01": "rtv"}


def absent(facts: dict) -> dict:
    """The facts of a host where Windows ships without the TealeafStatus values."""
    facts["dotnet"] = {k: None for k in facts["dotnet"]}
    facts["winhttp"] = {"native": None, "wow6432": None}
    return facts


def r2(**overrides) -> dict:
    return absent(healthy(**{"os.version": R2["os.version"], "ps_version": "2.0", **overrides}))


def written(writes) -> set[tuple[str, str, str, object]]:
    return {(w.key, w.name, w.kind, w.value) for w in writes}


@pytest.fixture
def fleet(tmp_path: Path):
    return make_fleet(tmp_path, HOSTS)


def test_2008r2_hbr_gets_schannel_status_report_and_the_placeholder(fleet) -> None:
    host = fleet.hosts["hbr01"]
    writes = needed_writes(fleet, host, r2(tls_cert_password_present=False))
    got = written(writes)
    assert {
        (SCHANNEL, "SendTrustedIssuerList", "DWord", 0),
        (TLS12 + "\\Server", "Enabled", "DWord", 1),
        (TLS12 + "\\Server", "DisabledByDefault", "DWord", 0),
        (TLS12 + "\\Client", "Enabled", "DWord", 1),
        (TLS12 + "\\Client", "DisabledByDefault", "DWord", 0),
        (TEALEAF + "\\security", "TLSCertPassword", "String", DUMMY_CERT_PASSWORD),
    } <= got
    for key in checks.DOTNET_KEYS.values():  # both versions, both registry views
        assert (key, "SchUseStrongCrypto", "DWord", 1) in got
        assert (key, "SystemDefaultTlsVersions", "DWord", 1) in got
    for key in checks.WINHTTP_KEYS.values():
        assert (key, "DefaultSecureProtocols", "DWord", 0xA80) in got
    assert len(got) == 5 + 1 + 8 + 2  # nothing outside the listed keys
    assert reboot_areas(writes) == ["schannel", "dotnet", "winhttp"]
    assert "password" not in DUMMY_CERT_PASSWORD.replace("not-a-password", "")
    placeholder = [w for w in writes if w.name == "TLSCertPassword"]
    assert [w.create_only for w in placeholder] == [True]  # never over an existing value
    assert not any(w.create_only for w in writes if w.name != "TLSCertPassword")


def test_no_placeholder_beside_an_imported_pair(fleet) -> None:
    """With tealeaf.crt and tealeaf.p12 in place, TLSCertPassword is the pair's key: absent,
    the import is broken, and a placeholder would not mend it; nothing is written there."""
    imported = r2(
        tls_cert_password_present=False,
        **{
            "security.cert_sha256": "ab" * 32,
            "security.files": {
                "tealeaf.crt": {"size": 900},
                "tealeaf.p12": {"size": 2000},
                "server.tls.xml": None,
            },
        },
    )
    writes = needed_writes(fleet, fleet.hosts["hbr01"], imported)
    assert writes and not [w for w in writes if w.name == "TLSCertPassword"]


def test_2016_canister_needs_no_schannel_and_no_placeholder(fleet) -> None:
    writes = needed_writes(fleet, fleet.hosts["can01"], absent(healthy()))
    assert {w.area for w in writes} == {"dotnet", "winhttp"}
    assert needed_writes(fleet, fleet.hosts["can01"], healthy()) == []  # all in place
    assert needed_writes(fleet, fleet.hosts["rtv01"], r2()) == []  # no TealeafStatus on RTV


def test_winhttp_with_tls12_is_left_as_set_and_text_is_replaced(fleet) -> None:
    host = fleet.hosts["can01"]
    kept = needed_writes(fleet, host, healthy(**{"winhttp.native": 0xA00}))
    assert kept == []
    replaced = needed_writes(
        fleet, host, healthy(**{"winhttp.native": 0x2A0, "dotnet.v4_strong_crypto": None})
    )
    assert written(replaced) == {
        (checks.WINHTTP_KEYS["native"], "DefaultSecureProtocols", "DWord", 0xA80),
        (checks.DOTNET_KEYS["v4"], "SchUseStrongCrypto", "DWord", 1),
    }
    text = needed_writes(
        fleet, host, healthy(**{"dotnet.v2_strong_crypto": {"text": "yes", "kind": "String"}})
    )
    assert [w.name for w in text] == ["SchUseStrongCrypto"]
    assert text[0].shown().endswith("= 1 (DWORD), was a REG_SZ holding 'yes'")


def test_enable_tls_preset_without_a_pair_is_set_to_0_without_a_reboot(fleet) -> None:
    host = fleet.hosts["can01"]
    writes = needed_writes(fleet, host, healthy(enable_tls=1))
    assert written(writes) == {(TEALEAF, "EnableTLS", "DWord", 0)}
    assert reboot_areas(writes) == []
    paired = healthy(
        enable_tls=1,
        **{
            "security.cert_sha256": "ab" * 32,
            "security.files.tealeaf.p12": {"size": 1, "sha256": "x"},
        },
    )
    assert needed_writes(fleet, host, paired) == []  # a live TLS configuration is kept


def test_status_report_hosts_and_the_vendor_winhttp_value(tmp_path: Path) -> None:
    fleet = make_fleet(
        tmp_path,
        HOSTS,
        "prerequisites: {status_report_hosts: [portal01], winhttp_protocols: 0xAA0}",
    )
    assert fleet.prerequisites.status_report_hosts == ("portal01",)
    assert any("SSL 3.0" in w for w in fleet.warnings)
    portal = needed_writes(fleet, fleet.hosts["portal01"], absent(healthy()))
    assert {w.value for w in portal if w.area == "winhttp"} == {0xAA0}
    assert needed_writes(fleet, fleet.hosts["can01"], absent(healthy())) == []


@pytest.mark.parametrize(
    ("extra", "field", "fragment"),
    [
        ("prerequisites: {winhttp_protocols: 0x800}", "winhttp_protocols", "0xA80"),
        ("prerequisites: {winhttp_protocols: true}", "winhttp_protocols", "0xA80"),
        ("prerequisites: {status_report_hosts: [nope]}", "status_report_hosts", "not a host"),
        ("prerequisites: {status_report_hosts: [rtv01]}", "status_report_hosts", "role rtv"),
        ("prerequisites: {reboot: 'no'}", "reboot", "true or false"),
        ("prerequisites: {reboots: false}", "reboots", "unknown key"),
    ],
)
def test_bad_prerequisite_settings_name_file_line_field(
    tmp_path: Path, extra: str, field: str, fragment: str
) -> None:
    with pytest.raises(InputError) as info:
        make_fleet(tmp_path, HOSTS, extra)
    assert info.value.line == 3 and field in (info.value.field or "")
    assert fragment in str(info.value)


def test_reboot_phases_follow_the_restart_rules(tmp_path: Path) -> None:
    base = "name: x\nexpect_tls: false\nphases:\n  - {op: preflight}\n"
    parallel = tmp_path / "parallel.yaml"
    parallel.write_text(base + "  - {op: reboot, roles: [hbr], strategy: parallel}\n")
    with pytest.raises(InputError, match="several hbr servers at once"):
        load_playbook(parallel)
    ungated = tmp_path / "ungated.yaml"
    ungated.write_text(base + "  - {op: reboot, roles: [canister], strategy: rolling}\n")
    with pytest.raises(InputError, match="reboot of canister servers without the gates"):
        load_playbook(ungated)
    rtv = tmp_path / "rtv.yaml"
    rtv.write_text(base + "  - {op: prerequisites, roles: [rtv]}\n")
    with pytest.raises(InputError, match="import only"):
        load_playbook(rtv)
    packaged = load_playbook("prerequisites")
    assert packaged.opt_ins == {} and not packaged.expect_tls
    reboots = [p for p in packaged.phases if p.op == "reboot"]
    assert [(p.roles, p.strategy, p.batch) for p in reboots[:2]] == [
        (("hbr",), "rolling", 1),
        (("canister",), "rolling", 1),
    ]


def test_pending_reboot_is_judged_against_the_last_boot() -> None:
    records = [{"since": "2026-11-27T11:00:00", "areas": ["schannel", "dotnet"], "run": 4}]
    before = r2(**{"boot": {"last_boot": "2026-11-20T08:00:00"}})
    after = r2(**{"boot": {"last_boot": "2026-11-27T11:05:00"}})
    assert checks.pending_reboot_since(before, records) == (
        "2026-11-27T11:00:00",
        ["dotnet", "schannel"],
    )
    assert checks.pending_reboot_since(after, records) is None
    unknown = r2()
    unknown.pop("boot", None)
    assert checks.pending_reboot_since(unknown, records) is not None  # pessimistic
    blocking = checks.reboot_findings("hbr01", before, records, block=True)
    assert [(f.severity, f.code) for f in blocking] == [("blocker", "reboot_pending")]
    assert "reboot pending since 2026-11-27T11:00:00" in blocking[0].message
    on_2016 = absent(healthy(boot={"last_boot": "2026-11-20T08:00:00"}))
    soft = checks.reboot_findings("can01", on_2016, records, block=True)
    assert [f.severity for f in soft] == ["warning"]  # SCHANNEL blocks on 2008 R2 only
    host = FakeHost()
    found = checks.preflight_blockers(
        host, before, pfx_sha256=None, expect_tls=False, reboot_records=records
    )
    assert ("warning", "reboot_pending") in {(f.severity, f.code) for f in found}


def test_pending_follows_the_boot_in_utc_across_a_dst_change() -> None:
    """A change at 02:30 local in the hour that repeats when DST ends; the host reboots at the
    second 02:10 (UTC one hour later). Host-local text compares say the boot (02:10) is
    before the change (02:30): pending for ever. The boot recorded in UTC tells the truth:
    not pending after that reboot, pending before it however the clock moved (a second of
    jitter in LastBootUpTime included)."""
    record = {
        "since": "2026-10-25T02:30:00",
        "areas": ["schannel"],
        "run": 1,
        "boot": "2026-10-20T06:00:00",
        "rebooted": False,
    }
    rebooted = r2(boot={"last_boot": "2026-10-25T02:10:00", "last_boot_utc": "2026-10-25T01:10:00"})
    assert checks.pending_reboot_since(rebooted, [record]) is None
    legacy = {k: v for k, v in record.items() if k not in ("boot", "rebooted")}
    assert checks.pending_reboot_since(rebooted, [legacy]) is not None  # the old, wrong reading
    same_boot = r2(
        boot={"last_boot": "2026-10-20T07:00:01", "last_boot_utc": "2026-10-20T06:00:01"}
    )
    assert checks.pending_reboot_since(same_boot, [record]) == ("2026-10-25T02:30:00", ["schannel"])


def test_a_change_in_an_unknown_boot_waits_for_a_reboot_by_this_tool() -> None:
    """No LastBootUpTime when the change was made: pending whatever the host says now, until
    a later record of a reboot by this tool; a change after that reboot is pending again."""
    changed = {"since": "t1", "areas": ["dotnet"], "run": 1, "boot": "", "rebooted": False}
    reboot = {"since": "t2", "areas": [], "run": 2, "boot": "", "rebooted": True}
    later = dict(changed, since="t3", areas=["winhttp"])
    facts = r2(boot={"last_boot": "2030-01-01T00:00:00", "last_boot_utc": "2030-01-01T00:00:00"})
    assert checks.pending_reboot_since(facts, [changed]) == ("t1", ["dotnet"])
    assert checks.pending_reboot_since(facts, [changed, reboot]) is None
    assert checks.pending_reboot_since(facts, [changed, reboot, later]) == ("t3", ["winhttp"])
    known = dict(changed, boot="2030-01-01T00:00:30")  # a boot too close to tell apart
    assert checks.pending_reboot_since(facts, [known]) is not None
    assert checks.pending_reboot_since(facts, [known, reboot]) is None  # this tool rebooted it


def test_read_back_checks_type_then_value() -> None:
    dword = SimpleNamespace(kind="DWord", value=0xA80)
    text = SimpleNamespace(kind="String", value=DUMMY_CERT_PASSWORD)
    assert _read_back_problem(SimpleNamespace(kind="DWord", value=0xA80), dword) is None
    assert "read back a String" in _read_back_problem(
        SimpleNamespace(kind="DWord", value=1), SimpleNamespace(kind="String", value="1")
    )
    assert "could not read its registry type back" in _read_back_problem(
        SimpleNamespace(kind="DWord", value=1), SimpleNamespace(kind=None, value=1)
    )
    assert "read back 2" in _read_back_problem(
        SimpleNamespace(kind="DWord", value=1), SimpleNamespace(kind="DWord", value=2)
    )
    # a DWORD comes back as a signed Int32: 0xFFFFFFFF reads as -1
    assert (
        _read_back_problem(
            SimpleNamespace(kind="DWord", value=0xFFFFFFFF), SimpleNamespace(kind="DWord", value=-1)
        )
        is None
    )
    assert (
        _read_back_problem(SimpleNamespace(kind="String", value=DUMMY_CERT_PASSWORD), text) is None
    )


def test_plan_lists_each_hosts_own_findings_and_the_prechecks(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, HOSTS)
    facts = {
        "portal01": r2(),  # 2008 R2 without the TLS 1.2 keys
        "hbr01": healthy(tls_cert_password_present=False),
        "can01": absent(healthy(hostname="CAN01")),
    }
    plan = build_plan(load_playbook("rollout"), fleet, facts)
    assert plan.preflight["checked"] and plan.preflight["blocked"]
    by_host: dict[str, set[str]] = {}
    for f in plan.preflight["findings"]:
        by_host.setdefault(f["hosts"][0], set()).add(f["code"])
    assert {"schannel_tls12_server", "send_trusted_issuer_list"} <= by_host["portal01"]
    assert "schannel_tls12_server" not in by_host.get("can01", set())
    portal_text = [f["message"] for f in plan.preflight["findings"] if f["hosts"] == ["portal01"]]
    can_text = [f["message"] for f in plan.preflight["findings"] if f["hosts"] == ["can01"]]
    assert portal_text != can_text  # each host's own text, never one per code
    rows = {r["host"]: r for r in plan.prechecks}
    assert rows["portal01"]["reboot"] and rows["portal01"]["needed"]
    assert rows["hbr01"]["needed"] == [
        f"{TEALEAF}\\security\\TLSCertPassword = a placeholder string (REG_SZ), was absent"
    ]
    assert not rows["hbr01"]["reboot"]
    assert "rtv01" not in rows  # RTV runs no TealeafStatus and needs no prerequisite
    ticket = render(plan, "markdown")
    assert "## Preflight findings" in ticket and "**BLOCKED" in ticket
    assert "## Pre-check: vendor prerequisites" in ticket
    assert "0xA80 (TLS 1.0, 1.1, 1.2), not the vendor's 0xAA0" in ticket
    assert "Services an operator stopped stay stopped" in ticket
    assert "generated by the tool" in ticket and "HBRs restart (or reboot) one at a time" in ticket


def test_prerequisites_plan_skips_what_is_in_place(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, HOSTS)
    facts = {"portal01": r2(), "hbr01": healthy(), "can01": healthy(enable_tls=1)}
    plan = build_plan(load_playbook("prerequisites"), fleet, facts)
    skips = {(p.name, s.host): s.skip_reason for p in plan.phases for s in p.steps}
    assert skips[("registry", "portal01")] is None
    assert skips[("reboot_rest", "portal01")] is None  # its writes need a boot
    assert skips[("registry", "hbr01")] == "nothing to do: every prerequisite value is in place"
    assert skips[("reboot_hbr", "hbr01")].startswith("nothing to do")
    assert skips[("registry", "can01")] is None  # EnableTLS=1 without a pair -> 0
    assert skips[("reboot_canister", "can01")].startswith("nothing to do")  # no boot needed
    assert not plan.preflight["blocked"]  # prerequisites fixes what a rollout is blocked by


def test_status_report_warning_only_where_tealeafstatus_runs(tmp_path: Path) -> None:
    """The rollout's `status_report_tls` warning follows `status_report_hosts` too."""
    fleet = make_fleet(tmp_path, HOSTS, "prerequisites: {status_report_hosts: [portal01]}")
    facts = {name: absent(healthy()) for name in ("portal01", "hbr01", "can01")}
    plan = build_plan(load_playbook("rollout"), fleet, facts)
    warned = {f["hosts"][0] for f in plan.preflight["findings"] if f["code"] == "status_report_tls"}
    assert warned == {"portal01"}
