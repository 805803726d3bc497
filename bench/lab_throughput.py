"""Throughput of the lab's WinRM wire layer: 50 hosts' servers in one process.

Starts a child process holding N hosts' `WinRMServer`s (https + basic and http + ntlm with
message encryption, each host on its own ports), then drives it from this process with T client
threads (pywinrm `Protocol`, one per thread and host, kept open like tealeaf-fleet's transport):
each operation is open shell + run `hostname` + receive + cleanup + close shell on a random host.
Prints requests/second as counted by the servers and the server process's CPU use (% of one
core, from /proc), per transport.

    .venv/bin/python bench/lab_throughput.py --hosts 50 --threads 8 --ops 400

Timings belong here, not in tests. The clients run in this process, so on a small machine they
may be the bottleneck; the server CPU figure says how much headroom the lab has.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

USER = "BENCH\\fleet"
PASSWORD = "Bench-Passw0rd"


class BenchHost:
    """A minimal ShellHost: generic commands only, requests counted."""

    def __init__(self, name: str, counter: list[int], lock: threading.Lock) -> None:
        self.name = name
        self.username = USER
        self._counter = counter
        self._lock = lock

    def password(self) -> str:
        return PASSWORD

    def faults(self) -> dict[str, Any]:
        return {}

    def consume_flaky(self) -> bool:
        return False

    def is_down(self) -> bool:
        return False

    def record(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self._counter[0] += 1

    def wants_stdin(self, command: str, args: list[str]) -> bool:
        return False

    def run_command(self, command: str, args: list[str], stdin: bytes):
        from tealeaf_fleet.lab.api import CommandResult
        from tealeaf_fleet.lab.generic import run_generic

        return run_generic(self.name, self.username, command, args) or CommandResult(1)


def serve(n_hosts: int, workdir: Path) -> None:
    """Child process: start the servers, print their URLs, serve until stdin closes.

    Commands on stdin: `count` prints the request count and CPU seconds so far; EOF stops.
    """
    from tealeaf_fleet.lab import ntlm_users
    from tealeaf_fleet.lab.httpserver import WinRMServer
    from tealeaf_fleet.lab.tlsca import LabCA

    started = time.monotonic()
    ca = LabCA.create(workdir / "ca")
    ntlm_users.register(USER, PASSWORD)
    counter, lock = [0], threading.Lock()
    servers = []
    endpoints: dict[str, list[str]] = {"basic": [], "ntlm": []}
    for i in range(n_hosts):
        host = BenchHost(f"BENCH{i:02d}", counter, lock)
        https = WinRMServer(host, scheme="https", ssl_context=ca.server_context(host.name))
        http = WinRMServer(host, scheme="http")
        servers += [https.start(), http.start()]
        endpoints["basic"].append(https.url)
        endpoints["ntlm"].append(http.url)
    print(
        json.dumps(
            {
                "ca": str(ca.ca_file),
                "endpoints": endpoints,
                "startup_s": round(time.monotonic() - started, 3),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if line.strip() == "count":
            t = os.times()
            with lock:
                print(json.dumps({"requests": counter[0], "cpu_s": t.user + t.system}), flush=True)
    for s in servers:
        s.stop(timeout_s=2)


def one_operation(proto) -> None:
    shell = proto.open_shell()
    cid = proto.run_command(shell, "hostname")
    done = False
    while not done:
        _, _, rc, done = proto.get_command_output_raw(shell, cid)
    proto.cleanup_command(shell, cid)
    proto.close_shell(shell, close_session=False)
    if rc != 0:
        raise RuntimeError(f"hostname exited {rc}")


def drive(child: subprocess.Popen, info: dict, transport: str, threads: int, ops: int) -> dict:
    from winrm.protocol import Protocol

    urls = info["endpoints"][transport]
    local = threading.local()

    def proto_for(url: str) -> Protocol:
        cache = getattr(local, "protos", None)
        if cache is None:
            cache = local.protos = {}
        if url not in cache:
            kw: dict[str, Any] = {"proxy": None}
            if transport == "basic":
                kw.update(transport="basic", ca_trust_path=info["ca"])
            else:
                kw.update(transport="ntlm", ca_trust_path=None)
            cache[url] = Protocol(url, username=USER, password=PASSWORD, **kw)
        return cache[url]

    def work(_: int) -> None:
        one_operation(proto_for(random.choice(urls)))

    def sample() -> dict:
        child.stdin.write("count\n")
        child.stdin.flush()
        return json.loads(child.stdout.readline())

    before = sample()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(ops)))
    wall = time.monotonic() - t0
    after = sample()
    requests = after["requests"] - before["requests"]
    return {
        "transport": transport,
        "ops": ops,
        "threads": threads,
        "wall_s": round(wall, 2),
        "ops_per_s": round(ops / wall, 1),
        "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "server_cpu_pct": round(100 * (after["cpu_s"] - before["cpu_s"]) / wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--transport", choices=["basic", "ntlm", "both"], default="both")
    ap.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.hosts, Path(args.serve))
        return 0
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", tmp, "--hosts", str(args.hosts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            info = json.loads(child.stdout.readline())
            print(
                f"{args.hosts} hosts x 2 servers started in {info['startup_s']} s (pid {child.pid})"
            )
            for transport in ["basic", "ntlm"] if args.transport == "both" else [args.transport]:
                print(json.dumps(drive(child, info, transport, args.threads, args.ops)))
        finally:
            child.stdin.close()
            child.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
