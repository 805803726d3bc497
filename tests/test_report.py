"""`fleet report`: the evidence of a run, end to end through the real stack (the CLI in a
subprocess, pywinrm to the lab, real handshakes, the SQLite journal), and the "not checked" rule
on a journal that holds no evidence. The HTML is checked by parsing it with html.parser.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from tealeaf_fleet import tlsprobe
from tealeaf_fleet.certs import load_pfx
from tealeaf_fleet.journal import Journal
from tealeaf_fleet.report import htmlpage, markdown, model
from tealeaf_fleet.secrets import Secret
from test_rollout_e2e import assert_no_secret, fleet, secrets_of, start_lab

TOPOLOGY = {"portal": 1, "hbr": 1, "canister": 2}


class Page(HTMLParser):
    """The parts of a report page a test looks at: every tag with its attributes, the text,
    and the tables in order, each with the heading before it and its rows of cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.heading = ""
        self._in_heading = False
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_svg_text = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("h1", "h2", "h3"):
            self._in_heading, self.heading = True, ""
        elif tag == "table":
            self.tables.append((self.heading, []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3"):
            self._in_heading = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.heading += data
        if self._cell is not None:
            self._cell.append(data)

    def host_tables(self, host: str) -> list[list[list[str]]]:
        return [rows for heading, rows in self.tables if heading.startswith(f"{host} (")]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def colon(sha: str) -> str:
    return model.fingerprint(sha)


@pytest.fixture(scope="module")
def rolled_out(tmp_path_factory):
    """A lab rolled out once with an approved plan; the TMS certificates seen before it."""
    folder = tmp_path_factory.mktemp("report")
    import os

    os.environ["TEALEAF_FLEET_LOCK_DIR"] = str(folder / "locks")
    with start_lab(folder / "lab", topology=TOPOLOGY) as lab:
        fleet_hosts = json.loads((lab.dir / "lab.json").read_text())["hosts"]
        tms_before = {
            name: tlsprobe.handshake("127.0.0.1", h["tms_port"]).sha256
            for name, h in fleet_hosts.items()
            if h.get("tms_port")
        }
        plan_file = folder / "plan.json"
        made = fleet("plan", str(lab.inventory), "--format", "json", "--out", str(plan_file))
        assert made.returncode == 0, made.stderr
        out = fleet("rollout", str(lab.inventory), "--yes", "--approved-plan", str(plan_file))
        assert out.returncode == 0, out.stderr[-3000:]
        yield lab, tms_before, plan_file
    os.environ.pop("TEALEAF_FLEET_LOCK_DIR", None)


def test_html_report_names_every_host_fingerprint_gate_and_has_the_timeline(rolled_out, tmp_path):
    lab, tms_before, plan_file = rolled_out
    target = tmp_path / "change.html"
    out = fleet("report", str(lab.inventory), "--out", str(target))
    assert out.returncode == 0, out.stderr
    assert f"written to {target}" in out.stderr
    text = target.read_text(encoding="utf-8")
    page = parse(text)
    names = [t for t, _ in page.tags]
    # self-contained: no script, no stylesheet link, nothing fetched from anywhere
    assert "script" not in names and "link" not in names and "img" not in names
    assert not [a for _, attrs in page.tags for a in attrs if a in ("src", "href")]
    assert "style" in names and "svg" in names
    windows = [a for t, a in page.tags if t == "rect" and a.get("class") == "window"]
    assert len(windows) == len(TOPOLOGY) + 1  # one restart window per Tealeaf server
    body = "".join(page.text)
    pfx = load_pfx(
        (lab.dir / "TCXcert.pfx").read_bytes(),
        Secret(lab.pfx_password_file.read_text().strip(), source="test"),
    )
    summary = dict((row[0], row[1]) for row in page.tables[0][1])
    plan = json.loads(plan_file.read_text())
    assert summary["Plan digest"] == plan["digest"]
    assert summary["Approval"] == f"approved plan file {plan_file.resolve()}"
    assert summary["Outcome"] == "ok" and summary["Account"] not in ("", model.NOT_CHECKED)
    assert summary["Controller host"] not in ("", model.NOT_CHECKED)
    for host, legacy in tms_before.items():
        state, gates = page.host_tables(host)
        rows = {r[0]: r[1:] for r in state}
        assert rows["EnableTLS"] == ["absent", "1"]
        assert rows["Certificate"][1] == colon(pfx.sha256)
        tms = next(v for k, v in rows.items() if k.startswith("Handshake TMS"))
        assert tms[0] == f"TLS, peer certificate {colon(legacy)}"  # before: its own cert
        assert tms[1] == f"TLS, peer certificate {colon(pfx.sha256)}"
        ds = next(v for k, v in rows.items() if k.startswith("Handshake Data Service"))
        assert ds == ["plain (no TLS)", f"TLS, peer certificate {colon(pfx.sha256)}"]
        proof = rows["Data Service"][1]  # the log line itself, as the facts op read it
        assert re.match(r"tls: '\S+ Service\.Start INFO TLS Port: \d+' at ", proof)
        search = [v for k, v in rows.items() if k.startswith("Handshake Search Server")]
        if lab.roles[host] == "canister":  # the Search Server listens like the Data Service
            assert search == [["plain (no TLS)", f"TLS, peer certificate {colon(pfx.sha256)}"]]
        else:
            assert search == []
        passed = {g[0]: g[1] for g in gates[1:]}
        want = {"services", "data_service_log", "handshake"} | (
            {"iis"} if lab.roles[host] == "portal" else set()
        )
        assert set(passed) == want and set(passed.values()) == {"ok"}, (host, gates)
        assert host in body
    assert "Restart windows" in body
    for secret in secrets_of(lab):
        assert secret not in text


def test_markdown_report_and_no_secret_anywhere(rolled_out):
    lab, _, _ = rolled_out
    out = fleet("report", str(lab.inventory), "1", "--format", "markdown")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# Tealeaf TLS change report: run 1 (rollout)")
    for host in lab.roles:
        assert f"### {host} (" in out.stdout
    assert "| data_service_log | ok |" in out.stdout
    # the Data Service's proof is the log line itself, as the facts op read it
    proofs = [line for line in out.stdout.splitlines() if line.startswith("| Data Service |")]
    assert proofs and all("reconstructed" not in p for p in proofs)
    assert any(re.search(r"tls: '\S+ Service\.Start INFO TLS Port: \d+'", p) for p in proofs)
    # what ran, in journal order, the controller's certificate step included
    assert "| certificate | controller | certificate | changed |" in out.stdout
    steps = out.stdout.split("## Steps", 1)[1]
    assert steps.index("| preflight |") < steps.index("| certificate |") < steps.index("| verify |")
    assert_no_secret(lab, out.stdout, out.stderr)  # also the journal with its evidence table


def test_report_of_a_missing_run_or_journal_is_one_input_error_line(rolled_out, tmp_path):
    lab, _, _ = rolled_out
    out = fleet("report", str(lab.inventory), "99")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("fleet: error: ")
    assert "no run 99" in out.stderr
    out = fleet("report", str(lab.inventory), "--state-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "nothing has run yet" in out.stderr


def test_a_run_without_evidence_reads_not_checked_never_ok(tmp_path):
    """A run the journal holds no evidence for (a halted run, or one from an older version):
    every state cell says "not checked"; nothing is presented as passed."""
    from tealeaf_fleet.inventory import load_fleet

    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "winrm: {transport: ntlm, username: u, password_env: X, scheme: http,"
        " allow_unencrypted: true}\n"
        "certificate: {source: generate, path: c.pfx, password_env: Y}\n"
        "hosts:\n  can01: {address: 10.0.0.5, role: canister}\n",
        encoding="utf-8",
    )
    fleet_ = load_fleet(inv)
    with Journal(tmp_path / "state") as journal:
        run = journal.start_run(command="rollout", plan_digest="d" * 64)
        step = journal.step_started(run, "restart", "can01", "restart")
        journal.step_finished(step, "failed", "gate services did not pass")
        journal.finish_run(run, "failed", "halted")
        report = model.build(journal, fleet_.hosts.values())
    assert not report.has_evidence and report.windows[0].outcome == "failed"
    md = markdown.render(report)
    state = [line for line in md.splitlines() if line.startswith(("| EnableTLS", "| Certif"))]
    assert state and all(line.count("not checked") == 2 for line in state), state
    assert "Gates: not checked" in md and "| Approval | not checked |" in md
    page = parse(htmlpage.render(report))
    rows = {r[0]: r[1:] for r in page.host_tables("can01")[0]}
    assert rows["Data Service"] == ["not checked", "not checked"]
    assert rows["Handshakes"] == ["not checked", "not checked"]
    assert "ok" not in [c for r in rows.values() for c in r]
    assert [a for t, a in page.tags if t == "rect" and a.get("class") == "window"]


def test_journal_text_is_escaped_in_the_html(tmp_path):
    """Host-supplied messages are data: a gate message with markup stays text."""
    with Journal(tmp_path / "state") as journal:
        run = journal.start_run(command="rollout")
        journal.record(
            run,
            "gate",
            {"gate": "services", "outcome": "ok", "message": "<script>x</script>"},
            host="h<1>",
        )
        journal.finish_run(run, "ok")
        report = model.build(journal, [])
    page = parse(htmlpage.render(report))
    assert "script" not in [t for t, _ in page.tags]
    assert "<script>x</script>" in "".join(page.text)


@pytest.mark.slow
def test_a_resumed_rollout_reports_the_whole_change_from_its_first_run(tmp_path, monkeypatch):
    """Halted at can02 (its service does not start), then resumed: the report of the resuming
    run shows 'before' as the first run saw the fleet (TLS off), the gates the first run passed,
    and says which runs it covers."""
    monkeypatch.setenv("TEALEAF_FLEET_LOCK_DIR", str(tmp_path / "locks"))
    with start_lab(tmp_path / "lab", topology=TOPOLOGY) as lab:
        lab.host("can02").set_faults({"service_start_fails": True})
        halted = fleet("rollout", str(lab.inventory), "--yes")
        assert halted.returncode == 1, halted.stderr[-3000:]
        lab.host("can02").set_faults({})
        resumed = fleet("rollout", str(lab.inventory), "--yes")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        out = fleet("report", str(lab.inventory), "--format", "markdown")
        assert out.returncode == 0, out.stderr
    md = out.stdout
    assert md.splitlines()[0].endswith("run 2 (rollout)")
    covered = next(line for line in md.splitlines() if line.startswith("| Runs covered |"))
    assert "run 1 (failed" in covered and "run 2 (ok" in covered
    hosts = md.split("## Hosts", 1)[1].split("## Warnings", 1)[0].split("### ")[1:]
    assert len(hosts) == 4
    for section in hosts:
        enable = next(line for line in section.splitlines() if line.startswith("| EnableTLS |"))
        before, after = (cell.strip() for cell in enable.split("|")[2:4])
        assert (before, after) == ("absent", "1"), section  # before the change, after it
    hbr = next(s for s in hosts if s.startswith("hbr01 "))
    assert "| handshake | ok |" in hbr  # passed in run 1, before the halt
    assert "| run 1: restart_hbr | hbr01 | restart | changed |" in md


def test_secrets_are_masked_before_escaping_in_the_html(tmp_path):
    """A known secret holding &, < or a quote, and a written-out password in host text (the
    Portal's status tool output included) never reach the page: masking runs on each text
    before it is escaped, not on the escaped page."""
    from tealeaf_fleet.engine.evidence import host_state

    secret = Secret("Sup&r<S3cret>", source="test")
    with Journal(tmp_path / "state") as journal:
        run = journal.start_run(command="rollout")
        journal.record(
            run,
            "gate",
            {"gate": "services", "outcome": "ok", "message": "PfxPassword=Sup3rTool ok"},
            host="can01",
        )
        tool = {"present": True, "exit_code": 1, "output": 'ERROR "password": "Sup3rTool"'}
        after = host_state({"enable_tls": 1}, {}, tool)
        assert after["status_tool"]["output"] == 'ERROR "password": "******"'  # as recorded
        journal.record(run, "after", after, host="portal01")
        journal.finish_run(run, "ok")
        report = model.build(journal, [])
    # the known secret arrives where the journal does not redact: a host name
    report.hosts[0].name = f"can01 {secret.reveal()}"
    page = htmlpage.render(report)
    text = "".join(parse(page).text)
    assert "Sup&r<S3cret>" not in text and "Sup&amp;r&lt;S3cret&gt;" not in page
    assert "Sup3rTool" not in page and "PfxPassword=******" in text
    assert "Sup3rTool" not in markdown.render(report)


def test_a_port_line_without_the_logs_text_is_labelled_reconstructed():
    """Evidence from a facts op that returned mode and port but not the line (an older script
    version): the report rebuilds the line and says so."""
    from tealeaf_fleet.engine.evidence import host_state

    facts = {"data_service": {"mode": "tls", "port": 23000, "started_at": "t", "log": "x.log"}}
    text = model.data_service(host_state(facts, {}))
    assert text == "tls: 'TLS Port: 23000' (reconstructed from mode and port) at t in x.log"
    facts["data_service"]["line"] = "t Service.Start INFO TLS Port: 23000"
    assert model.data_service(host_state(facts, {})).startswith(
        "tls: 't Service.Start INFO TLS Port: 23000' at t"
    )
