"""`fleet status`: the pure evaluation (facts + handshakes -> FleetStatus) from tables, then the
whole command against the real lab (WinRM over HTTPS, real TLS listeners, real files)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tealeaf_fleet.errors import HostUnreachable
from tealeaf_fleet.inventory import Host, WinRMSettings
from tealeaf_fleet.status import Handshake, as_handshake, evaluate
from tealeaf_fleet.tlsprobe import ProbeResult

PFX = "ab" * 32
OTHER = "cd" * 32
LEGACY = "99" * 32

_WINRM = WinRMSettings(
    scheme="https",
    port=5986,
    transport="basic",
    username="lab",
    password_env=None,
    password_file=None,
    ca_bundle=None,
)


def host(name: str, role: str) -> Host:
    return Host(
        name=name,
        address="127.0.0.1",
        role=role,
        winrm=_WINRM,
        data_service_port=23000,
        tms_port=20000,
    )


HOSTS = [
    host("portal01", "portal"),
    host("hbr01", "hbr"),
    host("can01", "canister"),
    host("ws01", "rtv"),
    host("pca01", "pca"),
]


def facts(*, cert: str | None = None, enabled: bool = False, mode: str = "plain") -> dict:
    files = {
        "tealeaf.crt": {"size": 1, "sha256": "11" * 32} if cert else None,
        "tealeaf.p12": {"size": 1, "sha256": "22" * 32} if cert else None,
        "server.tls.xml": {"size": 1, "sha256": "33" * 32} if enabled else None,
    }
    return {
        "hostname": "X",
        "now": "2026-11-27T11:00:00",
        "os": {"version": "10.0.14393", "caption": "Microsoft Windows Server 2016"},
        "ps_version": "5.1",
        "install_dir": "D:\\Tealeaf",
        "tools": {"tlstool": True},
        "tealeaf_build": "9.0.2.1351",
        "enable_tls": 1 if enabled else 0,
        "security": {
            "dir": "C:\\ProgramData\\IBM\\Tealeaf\\security",
            "files": files,
            "cert_sha256": cert,
            "cert_not_after": "2028-11-27T11:00:00",
        },
        "services": [{"name": "TeaLeafTMS", "state": "Running", "start_mode": "Auto"}],
        "data_service": {"mode": mode, "port": 23000, "started_at": "2026-11-27T10:00:00"},
    }


def shakes(
    ds: str, tms: str = "tls", ds_sha: str | None = None, tms_sha: str | None = LEGACY
) -> dict[str, Handshake]:
    return {
        "data_service": Handshake(23000, ds, ds_sha if ds == "tls" else None),
        "tms": Handshake(20000, tms, tms_sha if tms == "tls" else None),
    }


OFF = {n: facts() for n in ("portal01", "hbr01", "can01", "ws01")}
OFF_SHAKES = {n: shakes("plain") for n in ("portal01", "hbr01", "can01")}
ON = {
    **{n: facts(cert=PFX, enabled=True, mode="tls") for n in ("portal01", "hbr01", "can01")},
    "ws01": facts(cert=PFX),
}
ON_SHAKES = {n: shakes("tls", ds_sha=PFX, tms_sha=PFX) for n in ("portal01", "hbr01", "can01")}


def changed(base: dict, name: str, value: Any) -> dict:
    out = copy.deepcopy(base)
    out[name] = value
    return out


def string_enable_tls(base: dict) -> dict:
    """Facts whose EnableTLS is the REG_SZ "true" (what facts report for a non-number)."""
    out = copy.deepcopy(base)
    out["enable_tls"] = {"text": "true", "kind": "String"}
    return out


def locked_p12(base: dict) -> dict:
    out = copy.deepcopy(base)
    out["security"]["files"]["tealeaf.p12"] = {
        "error": "The process cannot access the file 'C:\\ProgramData\\IBM\\Tealeaf\\"
        "security\\tealeaf.p12' because it is being used by another process."
    }
    return out


EVAL_CASES = [
    # id, results, handshakes, pfx, consistent, expected blocker codes -> hosts
    ("fresh_off", OFF, OFF_SHAKES, None, True, {}),
    ("all_on", ON, ON_SHAKES, PFX, True, {}),
    ("all_on_majority_reference", ON, ON_SHAKES, None, True, {}),
    (
        "one_enabled",
        changed(OFF, "hbr01", facts(cert=PFX, enabled=True, mode="tls")),
        changed(OFF_SHAKES, "hbr01", shakes("tls", ds_sha=PFX, tms_sha=PFX)),
        None,
        False,
        {"enable_tls_mixed": {"portal01", "hbr01", "can01"}},
    ),
    (
        "unreachable",
        changed(OFF, "can01", HostUnreachable("connection refused", host="can01")),
        OFF_SHAKES,
        None,
        False,
        {"host_unreachable": {"can01"}},
    ),
    (
        "no_facts_at_all",
        {k: v for k, v in OFF.items() if k != "ws01"},
        OFF_SHAKES,
        None,
        False,
        {"host_unreachable": {"ws01"}},
    ),
    (
        "enabled_but_ds_plain",
        ON,
        changed(ON_SHAKES, "can01", shakes("plain", tms_sha=PFX)),
        PFX,
        False,
        {"handshake_plain": {"can01"}},
    ),
    (
        "enabled_but_tms_legacy_cert",
        ON,
        changed(ON_SHAKES, "portal01", shakes("tls", ds_sha=PFX, tms_sha=LEGACY)),
        PFX,
        False,
        {"handshake_cert": {"portal01"}},
    ),
    (
        "disabled_but_ds_tls",
        OFF,
        changed(OFF_SHAKES, "hbr01", shakes("tls", ds_sha=PFX)),
        None,
        False,
        {"handshake_tls": {"hbr01"}},
    ),
    (
        "port_down",
        OFF,
        changed(OFF_SHAKES, "hbr01", shakes("unreachable")),
        None,
        False,
        {"handshake_unreachable": {"hbr01"}},
    ),
    (
        # nobody can tell whether TLS is on: a finding, and the handshakes are not judged
        "enable_tls_string",
        changed(OFF, "hbr01", string_enable_tls(facts())),
        changed(OFF_SHAKES, "hbr01", shakes("tls", ds_sha=PFX)),
        None,
        False,
        {"enable_tls_not_numeric": {"hbr01"}},
    ),
    (
        "locked_p12_is_no_blocker",
        changed(ON, "hbr01", locked_p12(ON["hbr01"])),
        ON_SHAKES,
        PFX,
        True,
        {},
    ),
    (
        "cert_outlier_vs_pfx",
        changed(ON, "hbr01", facts(cert=OTHER, enabled=True, mode="tls")),
        changed(ON_SHAKES, "hbr01", shakes("tls", ds_sha=OTHER, tms_sha=OTHER)),
        PFX,
        False,
        {"cert_mismatch": {"hbr01"}, "handshake_cert": {"hbr01"}},
    ),
]


@pytest.mark.parametrize(
    "results,handshakes,pfx,consistent,expected",
    [pytest.param(*c[1:], id=c[0]) for c in EVAL_CASES],
)
def test_evaluate(results, handshakes, pfx, consistent, expected):
    status = evaluate(HOSTS, results, handshakes, pfx_sha256=pfx)
    got: dict[str, set[str]] = {}
    for f in status.findings:
        if f.severity == "blocker":
            got.setdefault(f.code, set()).update(f.hosts)
    assert got == expected
    assert status.consistent is consistent
    assert [h.name for h in status.hosts] == [h.name for h in HOSTS]
    pca = status.host("pca01")
    assert not pca.contacted and "not contacted" in pca.note and pca.facts is None
    assert "import" in status.host("ws01").note
    doc = status.to_dict()
    assert doc["consistent"] is consistent
    assert {h["name"] for h in doc["hosts"]} == {h.name for h in HOSTS}


def test_unreachable_row_carries_the_error():
    results = changed(OFF, "can01", HostUnreachable("connection refused", host="can01"))
    row = evaluate(HOSTS, results, OFF_SHAKES, pfx_sha256=None).host("can01")
    assert row.facts is None and row.contacted
    assert "connection refused" in row.error


def _can(facts_: dict, search: str, sha: str | None, *, running: bool = True) -> tuple:
    """can01's results and handshakes with its Search Server answering `search`."""
    out = copy.deepcopy(facts_)
    out["services"].append({"name": "TLSearchServer", "state": "Running" if running else "Stopped"})
    return out, Handshake(19000, search, sha if search == "tls" else None)


@pytest.mark.parametrize(
    "base,base_shakes,search,sha,running,code",
    [
        pytest.param(ON, ON_SHAKES, "tls", PFX, True, None, id="enabled-tls-ours"),
        pytest.param(ON, ON_SHAKES, "plain", None, True, "handshake_plain", id="enabled-plain"),
        pytest.param(ON, ON_SHAKES, "tls", OTHER, True, "handshake_cert", id="enabled-foreign"),
        pytest.param(OFF, OFF_SHAKES, "plain", None, True, None, id="disabled-plain"),
        pytest.param(OFF, OFF_SHAKES, "tls", LEGACY, True, "handshake_tls", id="disabled-tls"),
        pytest.param(ON, ON_SHAKES, "unreachable", None, True, "handshake_unreachable", id="down"),
        pytest.param(ON, ON_SHAKES, "unreachable", None, False, None, id="service-stopped"),
    ],
)
def test_search_server_port_is_judged_like_the_data_service(
    base, base_shakes, search, sha, running, code
):
    can_facts, shake = _can(base["can01"], search, sha, running=running)
    results = changed(base, "can01", can_facts)
    handshakes = copy.deepcopy(base_shakes)
    handshakes["can01"]["search"] = shake
    status = evaluate(HOSTS, results, handshakes, pfx_sha256=PFX if base is ON else None)
    blockers = [f for f in status.findings if f.severity == "blocker"]
    assert [f.code for f in blockers] == ([code] if code else [])
    if code:
        assert blockers[0].hosts == ("can01",) and "Search Server port 19000" in blockers[0].message
    if not running:
        assert any(f.code == "search_not_running" for f in status.findings)


def test_search_port_is_probed_on_canisters_only():
    from tealeaf_fleet.status import ports_of

    assert ("search", 19000) in ports_of(host("can01", "canister"))
    for role in ("portal", "hbr", "report", "rtv", "pca"):
        assert all(which != "search" for which, _ in ports_of(host("x", role)))


def test_reference_is_pfx_else_majority():
    assert evaluate(HOSTS, ON, ON_SHAKES, pfx_sha256=OTHER).reference_source == "pfx"
    majority = evaluate(HOSTS, ON, ON_SHAKES, pfx_sha256=None)
    assert (majority.reference_sha256, majority.reference_source) == (PFX, "majority")
    assert evaluate(HOSTS, OFF, OFF_SHAKES, pfx_sha256=None).reference_source is None


@pytest.mark.parametrize(
    "result,kind,sha",
    [
        (ProbeResult("tls", "127.0.0.1", 1, sha256=PFX, protocol="TLSv1.2"), "tls", PFX),
        (ProbeResult("plain", "127.0.0.1", 1, error="not a TLS server"), "plain", None),
        (
            ProbeResult("unreachable", "127.0.0.1", 1, error="connection refused"),
            "unreachable",
            None,
        ),
    ],
)
def test_probe_results_normalise(result, kind, sha):
    shake = as_handshake(1, result)
    assert (shake.kind, shake.sha256, shake.port) == (kind, sha, 1)


# --- the whole command against the lab ---------------------------------------------------------
# One lab for the module, in the order fresh -> unreachable (cleared again) -> one host enabled.

LAB_TOPOLOGY = {"portal": 1, "hbr": 1, "canister": 1, "rtv": 1, "pca": 1}
TOOLS_PFX = "Tools\\TCXcert.pfx"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tealeaf_fleet.lab.fleet import Lab

    lab = Lab.start(tmp_path_factory.mktemp("statuslab"), topology=LAB_TOPOLOGY, restart_s=0.2)
    yield lab
    lab.stop()


def fleet_status(capsys, lab, *flags: str) -> tuple[int, str, str]:
    """`fleet status` in-process (the same main() as the console script); the output is checked
    for every lab secret on the way."""
    from tealeaf_fleet.cli.main import main

    code = main(["status", str(lab.inventory), "--forks", "4", *flags])
    out, err = capsys.readouterr()
    secrets = [lab.winrm_password(), lab.pfx_password_file.read_text(encoding="utf-8").strip()]
    for secret in secrets:
        assert secret not in out and secret not in err
    return code, out, err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fresh_lab_is_consistent(capsys, lab):
    code, out, err = fleet_status(capsys, lab)
    assert code == 0, out + err
    assert "NOT consistent" not in out and "consistent" in out
    for name in lab.roles:
        assert name in out
    assert "not contacted" in out  # the PCA row says so
    assert "import only" in out  # the RTV row says what was checked

    code, out, err = fleet_status(capsys, lab, "--json")
    assert code == 0
    doc = json.loads(out)  # stdout is exactly one JSON document
    assert doc["consistent"] is True
    rows = {h["name"]: h for h in doc["hosts"]}
    assert set(rows) == set(lab.roles)
    for name, role in lab.roles.items():
        row = rows[name]
        if role == "pca":
            assert row["contacted"] is False and row["facts"] is None
            continue
        assert row["facts"]["enable_tls"] in (0, None)
        if role == "rtv":
            assert row["handshakes"] == {}
        else:
            host = lab.host(name)
            assert row["handshakes"]["data_service"] == {
                "port": host.data_service_port,
                "kind": "plain",
                "sha256": None,
                "detail": row["handshakes"]["data_service"]["detail"],
            }
            assert row["handshakes"]["tms"]["kind"] == "tls"  # its own legacy certificate
            if role == "canister":  # the Search Server listens like the Data Service: plain
                assert row["handshakes"]["search"]["port"] == host.search_port
                assert row["handshakes"]["search"]["kind"] == "plain"
            else:
                assert "search" not in row["handshakes"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_unreachable_host_is_a_row_and_inconsistent(capsys, lab):
    lab.host("can01").set_faults({"unreachable": True})
    try:
        code, out, err = fleet_status(capsys, lab, "--json")
        assert code == 1
        doc = json.loads(out)
        row = next(h for h in doc["hosts"] if h["name"] == "can01")
        assert row["facts"] is None and row["error"]
        assert any(
            f["code"] == "host_unreachable" and f["hosts"] == ["can01"] for f in doc["findings"]
        )
        assert doc["consistent"] is False
        code, out, err = fleet_status(capsys, lab)
        assert code == 1
        assert "host_unreachable" in out and "NOT consistent" in out
    finally:
        lab.host("can01").set_faults({})


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_one_host_enabled_is_drift(capsys, lab):
    from tealeaf_fleet import certs
    from tealeaf_fleet.inventory import load_fleet
    from tealeaf_fleet.ops import facts as facts_op
    from tealeaf_fleet.ops import files, services, tlstool
    from tealeaf_fleet.transport import Connection

    fleet = load_fleet(lab.inventory)
    pfx, data = certs.certificate_for(fleet, create=True)  # TCXcert.pfx in the lab folder
    hbr = fleet.hosts["hbr01"]
    with Connection(hbr, fleet.winrm_password(hbr)) as conn:
        before = facts_op.gather(conn, hbr)
        install = before.install_dir
        files.put_file(conn, data, f"{install}\\{TOOLS_PFX}")
        for verb in ("import", "enable"):
            result = tlstool.run(
                conn,
                install,
                verb,
                f"{install}\\{TOOLS_PFX}",
                fleet.pfx_password() if verb == "import" else None,
            )
            assert result.ok, result.output
        services.restart(conn, before.running_services, timeout_s=30)

    code, out, err = fleet_status(capsys, lab, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["reference"] == {"sha256": pfx.sha256, "source": "pfx"}
    mixed = [f for f in doc["findings"] if f["code"] == "enable_tls_mixed"]
    assert mixed and "hbr01" in mixed[0]["hosts"] and "EnableTLS" in mixed[0]["message"]
    row = next(h for h in doc["hosts"] if h["name"] == "hbr01")
    assert row["facts"]["enable_tls"] == 1
    assert row["facts"]["security"]["cert_sha256"] == pfx.sha256
    assert row["handshakes"]["data_service"]["kind"] == "tls"
    assert row["handshakes"]["data_service"]["sha256"] == pfx.sha256
    assert row["handshakes"]["tms"]["sha256"] == pfx.sha256
    other = next(h for h in doc["hosts"] if h["name"] == "portal01")
    assert other["handshakes"]["data_service"]["kind"] == "plain"

    code, out, err = fleet_status(capsys, lab)
    assert code == 1
    assert "enable_tls_mixed" in out and "NOT consistent" in out
    assert pfx.sha256[:12] in out  # hbr01's certificate column


@pytest.mark.parametrize(
    "argv", [["status", "INV", "--forks", "0"], ["status", "INV", "--forks", "many"]]
)
def test_bad_forks_is_a_usage_error(argv, tmp_path, capsys):
    from tealeaf_fleet.cli.main import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "inv.yaml") if a == "INV" else a for a in argv])
    assert stop.value.code == 2
    assert "--forks" in capsys.readouterr().err


def test_bad_inventory_exits_2_naming_the_field(tmp_path, capsys):
    from tealeaf_fleet.cli.main import main

    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  hbr01: {address: 127.0.0.1, role: mainframe}\n")
    assert main(["status", str(inventory)]) == 2
    err = capsys.readouterr().err
    assert "inventory.yaml:2" in err and "role" in err


@pytest.mark.parametrize(
    "results,handshakes,pfx",
    [
        pytest.param(OFF, OFF_SHAKES, None, id="off"),
        pytest.param(ON, ON_SHAKES, PFX, id="on"),
        pytest.param(
            changed(ON, "hbr01", facts(cert=OTHER, enabled=True, mode="tls")),
            changed(ON_SHAKES, "hbr01", shakes("tls", ds_sha=OTHER, tms_sha=PFX)),
            PFX,
            id="one_cert_differs",
        ),
    ],
)
def test_table_is_one_line_per_host_at_120_columns(results, handshakes, pfx):
    """A pipe or CI log gets 120 columns: every host must stay on one line there."""
    from rich.console import Console

    from tealeaf_fleet.cli.status import render

    status = evaluate(HOSTS, results, handshakes, pfx_sha256=pfx)
    console = Console(width=120, record=True, color_system=None, force_terminal=False)
    render(console, status)
    lines = console.export_text().splitlines()
    for h in HOSTS:
        rows = [line for line in lines if line.startswith(h.name + " ")]
        assert len(rows) == 1, (h.name, lines)
        row = rows[0]
        index = lines.index(row)
        # the next line is another host or the end of the table, never a wrapped cell
        after = lines[index + 1]
        assert any(after.startswith(o.name + " ") for o in HOSTS) or not after.startswith(" ")
    if pfx:
        assert f"{pfx[:12]} " in next(line for line in lines if line.startswith("portal01"))
        assert "tls ours / tls ours" in next(line for line in lines if line.startswith("can01"))
    if results is not ON and pfx:  # the outlier is marked, the others are not
        assert f"{OTHER[:12]} !" in next(line for line in lines if line.startswith("hbr01 "))
        assert "!" not in next(line for line in lines if line.startswith("can01 "))


def test_odd_facts_show_in_the_table_and_as_findings():
    from rich.console import Console

    from tealeaf_fleet.cli.status import render

    results = changed(ON, "hbr01", string_enable_tls(ON["hbr01"]))
    results = changed(results, "can01", locked_p12(ON["can01"]))
    status = evaluate(HOSTS, results, ON_SHAKES, pfx_sha256=PFX)
    locked = [f for f in status.findings if f.code == "security_file_unreadable"]
    assert [(f.severity, f.hosts) for f in locked] == [("warning", ("can01",))]
    assert "tealeaf.p12" in locked[0].message and "another process" in locked[0].message
    console = Console(width=120, record=True, color_system=None, force_terminal=False)
    render(console, status)
    row = next(line for line in console.export_text().splitlines() if line.startswith("hbr01 "))
    assert "'true'" in row and "{" not in row


def test_days_left_count_in_utc_when_the_facts_have_it():
    """Facts of this tool carry the end and the clock in UTC as well: days left and the date
    shown follow UTC (a host whose zone or daylight-saving setting changed reads the same),
    while facts without them (an older tool) still count on the host clock."""
    from tealeaf_fleet.ops import checks

    host = json.loads(json.dumps(ON["hbr01"]))
    host["now"] = "2026-11-27T23:30:00"  # host-local: the zone moved the local clock
    host["security"]["cert_not_after"] = "2026-12-07T23:00:00"
    assert checks.cert_days_left(host) == 9
    host["utc_now"] = "2026-11-27T11:00:00"
    host["security"]["cert_not_after_utc"] = "2026-12-07T11:00:00"
    assert checks.cert_days_left(host) == 10
    status = evaluate(HOSTS, dict(ON, hbr01=host), ON_SHAKES, pfx_sha256=PFX, expiry_days=30)
    expiring = [f for f in status.findings if f.code == "cert_expiring"]
    assert expiring and "expires in 10 day(s), on 2026-12-07 (UTC)" in expiring[0].message
    row = next(h for h in status.hosts if h.name == "hbr01")
    assert row.expiry()["not_after_utc"] == "2026-12-07T11:00:00"


def test_the_table_shows_when_each_certificate_ends_not_only_how_soon():
    from rich.console import Console

    from tealeaf_fleet.cli.status import render

    results = dict(ON)
    results["hbr01"] = json.loads(json.dumps(ON["hbr01"]))
    results["hbr01"]["security"]["cert_not_after"] = "2027-01-10T08:00:00"
    status = evaluate(HOSTS, results, ON_SHAKES, pfx_sha256=PFX)
    console = Console(width=120, record=True, color_system=None, force_terminal=False)
    render(console, status)
    text = console.export_text()
    others = ", ".join(h.name for h in HOSTS if h.name != "hbr01" and h.name in ON)
    assert "certificate ends 2027-01-10 (host clock): hbr01\n" in text
    assert f"certificate ends 2028-11-27 (host clock): {others}\n" in text


def test_console_width_off_a_terminal(monkeypatch):
    from tealeaf_fleet.cli.common import PIPE_WIDTH, console, output_width

    assert output_width({}) == PIPE_WIDTH == 120
    assert output_width({"COLUMNS": "150"}) == 150
    assert output_width({"COLUMNS": "junk"}) == PIPE_WIDTH
    assert output_width({"COLUMNS": "3"}) == PIPE_WIDTH  # nobody reads a 3-column table
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == PIPE_WIDTH  # pytest's stdout is not a terminal: not 80
    monkeypatch.setenv("COLUMNS", "140")
    assert console(stderr=True).width == 140


def test_data_service_column_reports_a_missing_startup_only_where_a_data_service_runs():
    from tealeaf_fleet.cli.status import _data_service

    data_service = {"name": "TeaLeafDataService", "state": "Running"}
    no_block = {"mode": None, "port": None}
    assert _data_service("hbr", no_block, {"services": [data_service]}) == "no startup in log"
    assert _data_service("hbr", no_block, {"services": [{"name": "TeaLeafTMS"}]}) == "-"
    assert _data_service("hbr", {"mode": "tls", "port": 23000}, {"services": []}) == "tls :23000"


# --- rotation and expiry ------------------------------------------------------------------------

NEW = "ee" * 32
FOREIGN = "77" * 32


def rotation(state: str = "failed", new: str = NEW):
    from tealeaf_fleet.certarchive import Rotation

    return Rotation(new, 7, state, frozenset({PFX, new}))


def halfway(foreign: bool = False) -> tuple[dict, dict]:
    """The new pair imported everywhere; portal01 not restarted yet (presents the old one),
    or presenting a pair from outside the archive."""
    results = {
        **{n: facts(cert=NEW, enabled=True, mode="tls") for n in ("portal01", "hbr01", "can01")},
        "ws01": facts(cert=NEW),
    }
    old = FOREIGN if foreign else PFX
    handshakes = {n: shakes("tls", ds_sha=NEW, tms_sha=NEW) for n in ("hbr01", "can01")}
    handshakes["portal01"] = shakes("tls", ds_sha=old, tms_sha=old)
    return results, handshakes


def test_a_rotation_in_progress_is_one_warning_naming_who_runs_which_pair():
    results, handshakes = halfway()
    plain = evaluate(HOSTS, results, handshakes, pfx_sha256=NEW)
    assert "handshake_cert" in {f.code for f in plain.findings}  # without the journal's word
    status = evaluate(HOSTS, results, handshakes, pfx_sha256=NEW, rotation=rotation())
    codes = {f.code: f for f in status.findings}
    assert "handshake_cert" not in codes and "cert_mismatch" not in codes
    warning = codes["rotation_in_progress"]
    assert warning.severity == "warning" and warning.hosts == ("portal01",)
    assert f"old {PFX[:12]}: presented by portal01" in warning.message
    assert f"new {NEW[:12]}: installed on portal01, hbr01, can01, ws01" in warning.message
    assert status.consistent is True
    assert status.reference_source == "rotation"
    by_sha = {c["sha256"]: c for c in status.certificates()}
    assert by_sha[PFX] == {"sha256": PFX, "installed": [], "presented": ["portal01"]}
    assert status.to_dict()["rotation"]["in_progress"] is True


@pytest.mark.parametrize(
    ("state", "code"),
    [("failed", 1), ("crashed", 1), ("interrupted", 1), ("running", 0), ("ok", 0)],
)
def test_a_halted_rotation_makes_status_exit_1(state, code):
    """Two pairs in the fleet are expected during a rotation, but one that stopped (failed,
    crashed, interrupted) needs a rerun: a scheduler running `fleet status` must hear it."""
    results, handshakes = halfway()
    if state == "ok":
        results = {n: facts(cert=NEW, enabled=True, mode="tls") for n in ("portal01", "hbr01")}
        handshakes = {n: shakes("tls", ds_sha=NEW, tms_sha=NEW) for n in ("portal01", "hbr01")}
    hosts = HOSTS if state != "ok" else HOSTS[:2]
    status = evaluate(hosts, results, handshakes, pfx_sha256=NEW, rotation=rotation(state))
    assert status.consistent is True
    assert status.exit_code == code


def test_a_rotate_back_in_progress_names_the_archived_pair_in_its_rerun():
    """Going back to an archived pair: the rerun status suggests repeats the archive flags
    the rotation was started with (the archive records them), not a plain `--playbook rotate`
    that would rotate to the inventory's pair instead."""
    from tealeaf_fleet.certarchive import Rotation

    results, handshakes = halfway()
    flags = f" --certificate-from-archive {NEW[:16]} --certificate-password-env OLD_PW"
    back = Rotation(NEW, 7, "failed", frozenset({PFX, NEW}), flags)
    status = evaluate(HOSTS, results, handshakes, pfx_sha256=NEW, rotation=back)
    warning = {f.code: f for f in status.findings}["rotation_in_progress"]
    assert f"`fleet rollout INVENTORY --playbook rotate{flags}`" in warning.message


def test_a_pair_from_outside_the_archive_stays_a_blocker_during_a_rotation():
    results, handshakes = halfway(foreign=True)
    status = evaluate(HOSTS, results, handshakes, pfx_sha256=NEW, rotation=rotation())
    blockers = {f.code: f.hosts for f in status.findings if f.severity == "blocker"}
    assert blockers == {"handshake_cert": ("portal01",)}
    assert "rotation_in_progress" not in {f.code for f in status.findings}


def test_a_finished_rotation_is_the_reference_whatever_the_inventory_names():
    results = {n: facts(cert=NEW, enabled=True, mode="tls") for n in ("portal01", "hbr01")}
    shaken = {n: shakes("tls", ds_sha=NEW, tms_sha=NEW) for n in ("portal01", "hbr01")}
    status = evaluate(HOSTS[:2], results, shaken, pfx_sha256=OTHER, rotation=rotation("ok"))
    assert status.consistent and status.reference_sha256 == NEW
    assert not [f for f in status.findings if f.code == "rotation_in_progress"]


@pytest.mark.parametrize(
    "not_after,days,expiring",
    [
        ("2026-12-07T11:00:00", 30, ["hbr01"]),  # 10 days left
        ("2026-12-07T11:00:00", 10, []),
        ("2026-12-07T11:00:00", 11, ["hbr01"]),
        ("2026-11-20T11:00:00", 0, ["hbr01"]),  # ended
        ("2028-11-27T11:00:00", 30, []),
    ],
)
def test_expiry_days_watch(not_after, days, expiring):
    row = facts(cert=PFX, enabled=True, mode="tls")
    row["security"]["cert_not_after"] = not_after
    status = evaluate(
        HOSTS[1:2],
        {"hbr01": row},
        {"hbr01": ON_SHAKES["hbr01"]},
        pfx_sha256=PFX,
        expiry_days=days,
    )
    assert status.expiring == expiring
    doc = status.to_dict()
    assert doc["expiry_days"] == days and doc["expiring"] == expiring
    assert doc["hosts"][0]["expiry"]["not_after"] == not_after
    left = doc["hosts"][0]["expiry"]["days_left"]
    assert (left < days) == bool(expiring)
