"""`fleet logs`: the support bundle, end to end against the lab (the CLI in a subprocess,
pywinrm, the lab's Data Service logs and Application event log, the journal's run logs), opened
with zipfile and searched for every secret."""

from __future__ import annotations

import json
import time
import zipfile

import pytest

from tealeaf_fleet.bundle import mask, parse_since
from tealeaf_fleet.errors import InputError
from test_rollout_e2e import fleet, secrets_of, start_lab

pytestmark = pytest.mark.slow

TOPOLOGY = {"portal": 1, "hbr": 1, "canister": 1}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("logs")
    os.environ["TEALEAF_FLEET_LOCK_DIR"] = str(folder / "locks")
    with start_lab(folder / "lab", topology=TOPOLOGY) as lab:
        out = fleet("rollout", str(lab.inventory), "--yes")
        assert out.returncode == 0, out.stderr[-3000:]
        winrm_pw, pfx_pw = secrets_of(lab)
        # a careless tool logged both passwords: the bundle must mask them
        lab.host("hbr01").write_event(
            "TeaLeaf Transport", "Warning", 7, f"retrying with password={pfx_pw} ({winrm_pw})"
        )
        log = newest_log(lab, "can01")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")  # the lab's hosts keep this machine's time
        with open(log, "a", encoding="ascii") as fh:
            fh.write(f"{stamp} Service.Config INFO pass:{pfx_pw}\r\n")
        yield lab
    os.environ.pop("TEALEAF_FLEET_LOCK_DIR", None)


def newest_log(lab, host: str):
    folder = lab.dir / "hosts" / host / "fs/D/Tealeaf/Logs"
    return max(folder.glob("TLDataService*.log"), key=lambda p: p.stat().st_mtime_ns)


def bundle(lab, tmp_path, *flags: str) -> tuple[dict[str, bytes], str]:
    target = tmp_path / "support.zip"
    out = fleet("logs", str(lab.inventory), "--out", str(target), *flags)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"support bundle written to {target}" in out.stderr
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}, out.stderr


def test_bundle_holds_logs_events_facts_and_run_logs_without_secrets(lab, tmp_path):
    files, stderr = bundle(lab, tmp_path)
    for host in lab.roles:
        if lab.roles[host] == "pca":
            continue
        assert json.loads(files[f"hosts/{host}/facts.json"])["hostname"]
        ds = files[f"hosts/{host}/data_service.log"].decode()
        assert "Starting HTTP Server" in ds and "TLS Port:" in ds  # the rollout's restart
        json.loads(files[f"hosts/{host}/application_events.json"])
    events = json.loads(files["hosts/hbr01/application_events.json"])["entries"]
    sources = {e["source"] for e in events}
    assert {"TeaLeaf Rules", "TeaLeaf Transport"} <= sources  # the vendor's known issue too
    assert any("unable to open key" in e["message"] for e in events)
    assert "controller/run-1.log" in files and "controller/runs.json" in files
    manifest = files["MANIFEST.txt"].decode()
    assert "since: the last 1440 minute(s)" in manifest and "cut:" not in manifest
    blob = b"\n".join(files.values())
    for secret in secrets_of(lab):
        assert secret.encode() not in blob and secret not in stderr
    assert b"password=******" in blob and b"pass:******" in blob


def test_each_host_is_bounded_and_startup_blocks_always_come(lab, tmp_path):
    log = newest_log(lab, "hbr01")
    with open(log, "a", encoding="ascii") as fh:
        for i in range(3000):
            fh.write(f"2099-01-01T00:00:00 Request INFO request {i:05d} served in 3 ms\r\n")
    files, stderr = bundle(lab, tmp_path, "--max-kb", "16", "--since", "2098-12-31T00:00")
    ds = files["hosts/hbr01/data_service.log"].decode()
    assert len(ds.encode()) < 17 * 1024
    assert "request 02999" in ds and "request 00000" not in ds  # the newest lines are kept
    assert "hbr01: collected; Data Service log cut at 16 KiB" in stderr
    assert "cut to stay within the bound: hbr01" in stderr
    assert "cut: Data Service log cut at 16 KiB" in files["MANIFEST.txt"].decode()
    # the host that was cut keeps its startup blocks (older than the 3000 new lines)
    assert "Starting HTTP Server" in ds and "TLS Port:" in ds
    # a time after every startup: no ordinary line, but the startup blocks all the same
    other = files["hosts/portal01/data_service.log"].decode()
    assert "Starting HTTP Server" in other and "TLS Port:" in other


def test_bad_since_is_one_input_error_line(lab, tmp_path):
    out = fleet(
        "logs", str(lab.inventory), "--since", "yesterday", "--out", str(tmp_path / "x.zip")
    )
    assert out.returncode == 2
    assert out.stderr.startswith("fleet: error: --since: 'yesterday' is neither")
    assert not (tmp_path / "x.zip").exists()


def test_since_and_mask_rules():
    assert parse_since("90m", now=10_000.0).minutes == 90
    assert parse_since("2d", now=0.0).controller == -2 * 86400
    assert parse_since("2026-12-01T08:00").text == "2026-12-01T08:00:00"
    assert parse_since(None).minutes == 1440
    assert parse_since("3650d", now=0.0).minutes == 3650 * 1440
    for bad in ("-3h", "2026-13-01T08:00", "now", "3651d", "87601h"):
        with pytest.raises(InputError):
            parse_since(bad)
    assert mask("pwd: hunter2; PASSWORD = x9") == "pwd: ******; PASSWORD = ******"
    assert mask('"tls_cert_password_present": true') == '"tls_cert_password_present": true'
    for written, masked in (
        ("TLSCertPassword=Sup3r", "TLSCertPassword=******"),
        ('"password": "Sup3r"', '"password": "******"'),
        ('password="Sup3r"', 'password="******"'),
        ('pass:"Sup3r x" next', 'pass:"******" next'),
        ("-password Sup3r -Force", "-password ****** -Force"),
        ("PfxPassword=Sup3r", "PfxPassword=******"),
        ("-Password 'Sup3r x'", "-Password '******'"),
    ):
        assert mask(written) == masked, written
    assert mask("passed: 3 tests") == "passed: 3 tests"


def test_the_manifest_says_when_the_pfx_password_was_not_loaded_for_masking(tmp_path):
    from tealeaf_fleet.bundle import manifest
    from tealeaf_fleet.cli.logs import _known_pfx_password
    from tealeaf_fleet.inventory import load_fleet

    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "winrm: {transport: ntlm, username: u, password_env: X}\n"
        "certificate: {source: generate, path: t.pfx, password_env: TF_TEST_NO_SUCH_VARIABLE}\n"
        "hosts:\n  hbr01: {address: a, role: hbr}\n",
        encoding="utf-8",
    )
    fleet_ = load_fleet(inv)
    note = _known_pfx_password(fleet_)
    assert note and "TF_TEST_NO_SUCH_VARIABLE" in note
    text = manifest(fleet_, parse_since(None), [], {}, pfx_note=note)
    assert "PFX password was not loaded for masking" in text


# --- the support_logs op's lab model (support_logs.ps1 mirrored), on one lab host -------------

BLOCK = (
    "{t} Service.Start INFO Starting HTTP Server\r\n"
    "{t} Service.Start INFO TLS Port: 23000\r\n"
    "{t} Service.Start INFO HTTP Server Started\r\n"
)


@pytest.fixture
def loghost(tmp_path):
    from test_lab_host import make_host

    h = make_host(tmp_path, listeners=False)
    folder = h.path(h.install_dir + r"\Logs")
    for old in folder.glob("*"):
        old.unlink()
    yield h, folder
    h.shutdown()


def write_log(folder, name: str, text: str, age_days: float = 0.0):
    import os

    path = folder / name
    path.write_bytes(text.encode("utf-8"))
    moment = time.time() - age_days * 86400
    os.utime(path, (moment, moment))
    return path


def support(h, **params) -> dict:
    from tealeaf_fleet.lab import models

    return models.support_logs(h, {"InstallDir": h.install_dir, **params})


def kept_lines(result: dict) -> list[str]:
    return [line for f in result["data_service"]["files"] for line in f["lines"]]


def test_a_cut_host_keeps_its_startup_block_and_stays_within_the_bound(loghost):
    h, folder = loghost
    lines = "".join(
        f"2099-01-01T00:00:00 Request INFO request {i:05d} served in 3 ms\r\n" for i in range(3000)
    )
    write_log(folder, "TLDataService_1.log", BLOCK.format(t="2026-11-30T10:00:00") + lines)
    result = support(h, Since="2098-12-31T00:00:00", MaxBytes="16384")
    kept = kept_lines(result)
    assert result["data_service"]["cut"] is True
    assert sum(len(line) + 1 for line in kept) <= 16384
    assert result["data_service"]["bytes"] <= 16384
    assert "2026-11-30T10:00:00 Service.Start INFO TLS Port: 23000" in kept
    assert kept[-1].endswith("request 02999 served in 3 ms")
    assert not any("request 00000" in line for line in kept)


def test_a_block_in_an_older_file_is_still_found_after_a_cut(loghost):
    h, folder = loghost
    lines = "".join(f"2099-01-01T00:00:00 Request INFO request {i:05d}\r\n" for i in range(3000))
    write_log(folder, "TLDataService_2.log", lines)
    write_log(folder, "TLDataService_1.log", BLOCK.format(t="2026-11-20T10:00:00"), age_days=3)
    kept = kept_lines(support(h, Since="2098-12-31T00:00:00", MaxBytes="16384"))
    assert "2026-11-20T10:00:00 Service.Start INFO TLS Port: 23000" in kept


def test_the_walk_stops_at_an_older_file_once_a_block_was_found(loghost, monkeypatch):
    from tealeaf_fleet.lab import models

    h, folder = loghost
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_log(folder, "TLDataService_3.log", f"{now} Request INFO fresh\r\n")
    write_log(folder, "TLDataService_2.log", BLOCK.format(t="2026-01-02T00:00:00"), age_days=2)
    write_log(folder, "TLDataService_1.log", BLOCK.format(t="2026-01-01T00:00:00"), age_days=3)
    read: list[str] = []
    real = models._read_lines
    monkeypatch.setattr(models, "_read_lines", lambda host, p: read.append(p) or real(host, p))
    kept = kept_lines(support(h, SinceMinutes="60"))
    assert [p.rsplit("\\", 1)[1] for p in read] == ["TLDataService_3.log", "TLDataService_2.log"]
    assert f"{now} Request INFO fresh" in kept and not any("2026-01-01" in x for x in kept)


def test_older_files_are_read_only_within_the_byte_budget(loghost, monkeypatch):
    from tealeaf_fleet.lab import models

    h, folder = loghost
    write_log(folder, "TLDataService_2.log", "2099-01-01T00:00:00 Request INFO fresh\r\n")
    write_log(folder, "TLDataService_1.log", BLOCK.format(t="2026-01-01T00:00:00"), age_days=1)
    monkeypatch.setattr(models, "DATA_SERVICE_LOG_BUDGET", 10)
    kept = kept_lines(support(h, Since="2098-12-31T00:00:00"))
    assert kept == ["2099-01-01T00:00:00 Request INFO fresh"]
    monkeypatch.setattr(models, "DATA_SERVICE_LOG_BUDGET", 10_000)
    assert "2026-01-01T00:00:00 Service.Start INFO TLS Port: 23000" in kept_lines(
        support(h, Since="2098-12-31T00:00:00")
    )


def test_unstamped_lines_after_a_kept_line_come_with_it(loghost):
    h, folder = loghost
    write_log(
        folder,
        "TLDataService_1.log",
        "2000-01-01T00:00:00 Old ERROR before\r\n   at Old.Frame()\r\n"
        "2099-01-01T00:00:00 Svc ERROR boom\r\n   at Foo.Bar()\r\n   at Foo.Baz()\r\n"
        "2099-01-01T00:00:01 Svc INFO page\x0cbreak and\u2028separator\r\n",
    )
    kept = kept_lines(support(h, Since="2098-12-31T00:00:00"))
    assert kept == [
        "2099-01-01T00:00:00 Svc ERROR boom",
        "   at Foo.Bar()",
        "   at Foo.Baz()",
        "2099-01-01T00:00:01 Svc INFO page\x0cbreak and\u2028separator",  # one ReadLine
    ]


def test_the_cut_off_comes_from_the_hosts_clock(loghost, monkeypatch):
    h, _ = loghost
    monkeypatch.setattr(h, "now_local", lambda: "2030-06-01T12:00:00")
    assert support(h, SinceMinutes="90")["since"] == "2030-06-01T10:30:00"


def test_a_huge_run_log_is_read_from_its_end_only(tmp_path):
    """A run log past any sane size (sparse here, 1 GiB and more): only its last
    RUN_LOG_LIMIT bytes are read (a whole read would refuse it, or fill memory)."""
    from tealeaf_fleet.bundle import RUN_LOG_LIMIT, controller_files
    from tealeaf_fleet.journal import Journal
    from tealeaf_fleet.safeio import read_regular_file

    state = tmp_path / "state"
    with Journal(state) as journal:
        run = journal.start_run(command="rollout")
        journal.finish_run(run, "ok")
    log = state / f"run-{run}.log"
    with open(log, "wb") as fh:
        fh.truncate((1 << 30) + 10)
        fh.seek(0, 2)
        fh.write(b"the last line\n")
    files = controller_files(state, parse_since(None))
    text = files[f"controller/run-{run}.log"]
    assert text.startswith("# CUT: only the last") and text.endswith("the last line\n")
    assert len(text.encode()) < RUN_LOG_LIMIT + 200
    assert read_regular_file(log, 5, "run log", tail=True) == b"line\n"
