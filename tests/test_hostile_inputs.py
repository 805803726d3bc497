"""Hostile inputs, data-driven: every case of every `tests/data/hostile/*.yaml` file runs the real
CLI (`python -m tealeaf_fleet`) in a subprocess, under a timeout, in a folder of its own.

Why a data-driven suite: an attacker or a tired operator feeds the tool files and flags nobody
planned for (a FIFO as a password file, a YAML "billion laughs", `--out /dev/null` as root, a
folder of precious files as a lab folder). Each such input must end in one clear line and the
exit code the README promises, never a hang, a traceback, an "unexpected failure" or a file
destroyed. A case is a few lines of YAML, so a new finding becomes a regression test at once.

Case format (one list per file; keys other than name/argv/exit/first_line are optional):

    - name: short-unique-name                  # the pytest id
      argv: [plan, "{inventory}"]              # fleet arguments
      files: {"inv.yaml": "text", "pw.txt": {mode: 0o644, text: "x"}}
      env: {NAME: value}
      exit: 2
      first_line: "fleet: error:"              # substring of the first stderr line ("" = any)
      before: [[plan, "{inventory}", --out, "{tmp}/plan.json"]]   # run first, each must exit 0
      stdout_contains: ["text"]                # substrings of stdout
      stderr_contains: ["text"]                # substrings of stderr
      expect_files: {"null": {kind: chardev}, "t.txt": {text: "old"}, "x": {absent: true}}
      root_only: true                          # needs root (device nodes); skipped otherwise
      network: true                            # the case may try to connect (default: it may not)
      timeout: 20                              # seconds (default 20)
      why: "what went wrong before"            # for the reader only

`{tmp}` is the case's folder and `{inventory}` a valid offline inventory the runner writes there
(`inventory.yaml`, with its password files `winrm-password.txt` and `pfx-password.txt` and a CA
bundle `ca.pem`); a case's `files` are written after it and may replace any of them.
Substitution applies to argv, env values, `before`, file texts, symlink targets, file names,
`first_line`, `stdout_contains`, `stderr_contains` and `expect_files` names.

A file value is a string (its text, mode 0600) or a mapping: `text`, `hex` (bytes) or `parts`
(generated text: a list of [text, times] or [text, times, first], `{i}` the repetition's index
and `{p}` the one before, e.g. 5,000 nested brackets), `mode` (default 0600), `size` (a sparse
file of that many bytes), `kind`: file (default), dir, fifo, socket, symlink (with `target`) or
chardev (a copy of /dev/null made with mknod: root only); `absent: true` removes a default file.

Every case also asserts: no traceback, no "unexpected failure", no password of the default
files on any output and, unless `network: true`, no attempt to open a network connection (a
sitecustomize module turns every connect into a refusal and records it, so a case about "exit 2
before any connection" proves it).

Speed: the selected cases run in parallel in a module fixture (a few subprocesses at a time,
each under its timeout, so a hang costs its timeout once, not the suite's patience); each test
then checks one case's outcome. `-k NAME` runs only the chosen cases.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CASES_DIR = Path(__file__).resolve().parent / "data" / "hostile"
DEFAULT_TIMEOUT_S = 20
# Cases run at once: each is mostly an interpreter starting (about 0.3 s of CPU), so a few more
# workers than cores keep the cores busy while a case waits on its subprocess.
WORKERS = max(2, min(6, 2 * (os.cpu_count() or 1)))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

DEFAULT_INVENTORY = """\
winrm:
  scheme: https
  transport: basic
  username: 'LAB\\fleet-admin'
  password_file: winrm-password.txt
  ca_bundle: ca.pem
certificate:
  source: generate
  path: TCXcert.pfx
  password_file: pfx-password.txt
rollout: {restart: services, health_timeout_s: 60, soak_s: 1}
hosts:
  portal01: {address: 127.0.0.1, role: portal, winrm: {port: 45981}}
  hbr01: {address: 127.0.0.1, role: hbr, winrm: {port: 45982}}
  hbr02: {address: 127.0.0.1, role: hbr, winrm: {port: 45983}}
  can01: {address: 127.0.0.1, role: canister, winrm: {port: 45984}}
  pca01: {address: 127.0.0.1, role: pca}
  rtv01: {address: 127.0.0.1, role: rtv, winrm: {port: 45985}}
"""
DEFAULT_FILES: dict[str, Any] = {
    "inventory.yaml": DEFAULT_INVENTORY,
    "winrm-password.txt": "Hostile-winrm-pw-1\n",
    "pfx-password.txt": "HostilePfxPw2\n",
    "ca.pem": "-----BEGIN CERTIFICATE-----\nnot used offline\n-----END CERTIFICATE-----\n",
}
SECRETS = ("Hostile-winrm-pw-1", "HostilePfxPw2")

# Imported by every case's interpreter (PYTHONPATH): a connect attempt is recorded and refused,
# as a firewalled network would, so the case runs offline and fast whatever the code does.
SITECUSTOMIZE = """
import os, socket
_LOG = os.environ.get("HOSTILE_NET_LOG")
def _refuse(*args, **kwargs):
    if _LOG:
        with open(_LOG, "a") as fh:
            fh.write(repr(args[1:] if args and isinstance(args[0], socket.socket) else args))
            fh.write("\\n")
    raise ConnectionRefusedError(111, "refused by the hostile-input suite")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""

ALLOWED_KEYS = {
    "name",
    "argv",
    "files",
    "env",
    "exit",
    "first_line",
    "before",
    "stdout_contains",
    "stderr_contains",
    "expect_files",
    "root_only",
    "network",
    "timeout",
    "why",
}


def load_cases() -> list[dict[str, Any]]:
    """Every case of every case file, checked for shape (a typo in a case is a test error)."""
    cases: list[dict[str, Any]] = []
    names: set[str] = set()
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            unknown = set(case) - ALLOWED_KEYS
            assert not unknown, f"{path.name}: {case.get('name')}: unknown keys {unknown}"
            for key in ("name", "argv", "exit", "first_line"):
                assert key in case, f"{path.name}: {case.get('name')}: missing {key}"
            assert case["name"] not in names, f"duplicate case name {case['name']}"
            for key in ("files", "expect_files", "env"):
                bad = [k for k in case.get(key) or {} if not isinstance(k, str)]
                assert not bad, f"{path.name}: {case['name']}: {key}: quote {bad} (YAML read it)"
            names.add(case["name"])
            cases.append({**case, "_file": path.name})
    return cases


CASES = load_cases()


def test_the_suite_has_enough_cases() -> None:
    assert len(CASES) >= 80


def _sub(value: str, tmp: Path) -> str:
    return value.replace("{tmp}", str(tmp)).replace("{inventory}", str(tmp / "inventory.yaml"))


def _make(path: Path, spec: Any, tmp: Path) -> None:
    """Create one file of a case (see the module docstring for the spec)."""
    if isinstance(spec, str):
        spec = {"text": spec}
    kind = spec.get("kind", "file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.is_file():
        path.unlink()
    if spec.get("absent"):
        return  # a default file this case does without
    if kind == "dir":
        path.mkdir(exist_ok=True)
        path.chmod(_mode(spec.get("mode", 0o700)))
    elif kind == "fifo":
        os.mkfifo(path, _mode(spec.get("mode", 0o600)))
    elif kind == "symlink":
        os.symlink(_sub(spec["target"], tmp), path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:  # the socket file outlives the socket
            sock.bind(str(path))
    elif kind == "chardev":
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # like /dev/null
    elif kind == "file":
        if "size" in spec:
            with open(path, "wb") as fh:
                fh.truncate(int(spec["size"]))
        elif "parts" in spec:
            path.write_text(_parts(spec["parts"]), encoding="utf-8")
        elif "hex" in spec:
            path.write_bytes(bytes.fromhex(spec["hex"]))
        else:
            path.write_text(_sub(spec.get("text", ""), tmp), encoding="utf-8")
        path.chmod(_mode(spec.get("mode", 0o600)))
    else:
        raise AssertionError(f"unknown file kind {kind}")


def _mode(value: int | str) -> int:
    """A file mode: 0o644 arrives from YAML as the text '0o644', 0644 as the number 420."""
    return int(value, 0) if isinstance(value, str) else int(value)


def _parts(parts: list[list]) -> str:
    """Text built from [text, times] or [text, times, first] pieces: each piece repeated
    `times`, with `{i}` its index (from `first`, default 0) and `{p}` the index before."""
    out = []
    for piece in parts:
        text, times, first = (*piece, 0) if len(piece) == 2 else piece
        for i in range(first, first + times):
            out.append(text.replace("{i}", str(i)).replace("{p}", str(i - 1)))
    return "".join(out)


def _kind(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "absent"
    for kind, test in (
        ("symlink", stat.S_ISLNK),
        ("socket", stat.S_ISSOCK),
        ("chardev", stat.S_ISCHR),
        ("fifo", stat.S_ISFIFO),
        ("dir", stat.S_ISDIR),
        ("file", stat.S_ISREG),
    ):
        if test(mode):
            return kind
    return "other"


def _check_file(path: Path, want: dict[str, Any]) -> None:
    if want.get("absent"):
        assert not os.path.lexists(path), f"{path} should not exist"
        return
    if "kind" in want:
        assert _kind(path) == want["kind"], f"{path} is a {_kind(path)}, not a {want['kind']}"
    if "text" in want:
        assert path.read_text(encoding="utf-8") == want["text"], f"{path} changed"
    if "contains" in want:
        assert want["contains"] in path.read_text(encoding="utf-8"), f"{path}: content"
    if "mode" in want:
        assert stat.S_IMODE(os.stat(path).st_mode) == _mode(want["mode"]), f"{path}: mode"


def _env(case: dict[str, Any], tmp: Path, site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEALEAF_", "PYTEST_"))}
    env.update(
        COLUMNS="160",
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT / "src")]),
        HOSTILE_NET_LOG=str(tmp / ".network-attempts"),
        TEALEAF_FLEET_LOCK_DIR=str(tmp / ".locks"),  # a run's lock stays in the case's folder
    )
    env.update({k: _sub(str(v), tmp) for k, v in (case.get("env") or {}).items()})
    return env


def _fleet(argv: list[str], env: dict[str, str], tmp: Path, timeout: float):
    return subprocess.run(
        [sys.executable, "-m", "tealeaf_fleet", *argv],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def _prepare(case: dict[str, Any], tmp: Path) -> None:
    """The case's folder: the default inventory and its files, then the case's own files."""
    tmp.mkdir(parents=True)
    files = {**DEFAULT_FILES, **(case.get("files") or {})}
    for name, spec in files.items():
        _make(tmp / _sub(name, tmp), spec, tmp)


def _run_case(case: dict[str, Any], tmp: Path, site: Path) -> Outcome:
    """Prepare and run one case (its `before` commands first): what the test then checks."""
    try:
        _prepare(case, tmp)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # a broken case, not the tool
        return Outcome([], None, f"cannot prepare the case: {exc!r}")
    env = _env(case, tmp, site)
    timeout = case.get("timeout", DEFAULT_TIMEOUT_S)
    for argv in case.get("before") or []:
        pre = _fleet([_sub(str(a), tmp) for a in argv], env, tmp, timeout)
        if pre.returncode != 0:
            return Outcome(argv, None, f"before {argv}: exit {pre.returncode}: {pre.stderr}")
    argv = [_sub(str(a), tmp) for a in case["argv"]]
    try:
        return Outcome(argv, _fleet(argv, env, tmp, timeout), None)
    except subprocess.TimeoutExpired:
        return Outcome(argv, None, f"fleet {' '.join(argv)} did not finish within {timeout}s")


@dataclass
class Outcome:
    argv: list[str]
    proc: subprocess.CompletedProcess | None
    problem: str | None  # a hang or a failed `before`


def _selected(session: pytest.Session) -> list[dict[str, Any]]:
    """The cases pytest will run this session (all, or those `-k` / ids picked)."""
    out = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and item.originalname == "test_hostile_input":
            case = callspec.params["case"]
            if not (case.get("root_only") and not IS_ROOT):
                out.append(case)
    return out


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Every selected case, run in parallel (each in its own folder and subprocess): most of
    a case's time is the interpreter starting, and a hanging case only waits out its timeout
    in its own worker. The tests below then check one outcome each."""
    site = tmp_path_factory.mktemp("hostile-site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    root = tmp_path_factory.mktemp("hostile")
    cases = _selected(request.session)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {
            c["name"]: pool.submit(_run_case, c, root / f"case{i:03d}", site)
            for i, c in enumerate(cases)
        }
        return {
            name: (future.result(), root / f"case{i:03d}")
            for i, (name, future) in enumerate(futures.items())
        }


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_hostile_input(case: dict[str, Any], outcomes: dict[str, tuple[Outcome, Path]]) -> None:
    if case.get("root_only") and not IS_ROOT:
        pytest.skip("needs root (device nodes)")
    outcome, tmp = outcomes[case["name"]]
    if outcome.problem:
        pytest.fail(outcome.problem)
    proc = outcome.proc
    assert proc is not None
    where = (
        f"\n{case['_file']}: {case['name']}\nargv: {outcome.argv}\nexit: {proc.returncode}"
        f"\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout[:3000]}"
    )
    first = (proc.stderr.splitlines() or [""])[0]
    assert "Traceback" not in proc.stderr + proc.stdout, where
    assert "unexpected failure" not in proc.stderr + proc.stdout, where
    assert proc.returncode == case["exit"], where
    assert _sub(case["first_line"], tmp) in first, where
    for text in case.get("stdout_contains") or []:
        assert _sub(text, tmp) in proc.stdout, where
    for text in case.get("stderr_contains") or []:
        assert _sub(text, tmp) in proc.stderr, where
    for secret in SECRETS:
        assert secret not in proc.stderr + proc.stdout, where
    attempts = tmp / ".network-attempts"
    if not case.get("network"):
        assert not attempts.exists(), f"network attempts: {attempts.read_text()}{where}"
    for name, want in (case.get("expect_files") or {}).items():
        _check_file(tmp / _sub(name, tmp), want)
