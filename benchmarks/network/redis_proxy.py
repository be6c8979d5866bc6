"""redis-benchmark against a real redis-server directly and through `cloudward network protect redis`
(the real CLI, built-in policy), same commands; reports requests/s, the ratio to direct, and the p99
latency added. Goals (issue #8): at least 70% of direct throughput, under 1 ms added p99, judged on
redis-benchmark's own default workload (50 clients, one request at a time); the pipelined and
single-client rows are there to show where any extra hop costs more, with haproxy as the yardstick.

The proxy runs twice: as it starts by default (clients share two server connections while they send
keyspace commands, redis_shared.py) and with `shared_connections: 0` (a server connection per
client from the start, every byte relayed as it comes) — "own conns" in the tables.

A third path is a bare relay: the same event loop (uvloop when installed) copying bytes both ways
with no parsing and no judging. It is the floor any userspace proxy pays for the extra hop (two more
reads and writes per round trip, a third busy process on the machine), so proxy / relay is what the
RESP parsing and the policy cost on top of that hop. When haproxy is installed (benchmarks/network/setup),
a fourth path runs it in TCP mode with one thread: a relay written in C on epoll, the best case for any
extra hop, so its ratio to direct says what this machine leaves for a proxy of any kind.

Workloads: `-t set,get` with 50 clients one request at a time, the same pipelined 16 deep (`-P 16`),
and a single client (`-c 1`) for the latency one request adds when nothing else competes for the
CPU. Rounds alternate direct / relay / proxy so drift in the machine's load hits all three alike;
the medians are reported.

Two CPU layouts, both reported: *shared*, where all processes may run on any of the machine's CPUs, and
*pinned*, where redis-benchmark has CPU 1 to itself and redis-server and the relay or proxy share CPU 0 —
the deployment the proxy is made for (clients on other machines, the proxy beside the server) and
the layout of the appsec throughput benchmark. On two cores, the shared layout makes the proxy
compete with the load generator for CPU.

Usage: .venv/bin/python benchmarks/network/redis_proxy.py [--rounds 3] [--requests 100000] [--layout both|shared|pinned]
Peers: redis-benchmark (apt redis-tools, installed by scripts/setup); haproxy (benchmarks/network/setup).
"""
# ruff: noqa: E402  (sys.path is fixed before the other imports)

from __future__ import annotations

import os
import sys

# The imports below need only the repository root: this folder comes off sys.path, so a sibling
# script can never shadow a standard-library module.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import csv
import io
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import machine, today, write_section
from tests.harness.services import free_port, start_redis

CLOUDWARD = Path(sys.executable).parent / "cloudward"
RELAY = """
import asyncio, sys
try:
    import uvloop
    factory = uvloop.new_event_loop
except ImportError:
    factory = None
UP = ("127.0.0.1", int(sys.argv[2]))

class Up(asyncio.Protocol):
    def __init__(self, client): self.client = client
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.client.t.write(d)
    def connection_lost(self, e): self.client.t.close()

class Client(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.up, self.early = t, None, []
        asyncio.get_running_loop().create_task(self.connect())
    async def connect(self):
        _, self.up = await asyncio.get_running_loop().create_connection(lambda: Up(self), *UP)
        for d in self.early: self.up.t.write(d)
    def data_received(self, d):
        if self.up is None: self.early.append(d)
        else: self.up.t.write(d)
    def connection_lost(self, e):
        if self.up: self.up.t.close()

async def main():
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()

with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""
BUSY = " (other work was running on the machine: absolute figures are low and every figure is noisy)"
HAPROXY_CONFIG = """global
    maxconn 4096
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend redis_in
    bind 127.0.0.1:{listen}
    default_backend redis_out
backend redis_out
    server redis 127.0.0.1:{upstream}
"""
WORKLOADS = {
    "50 clients": ["-c", "50"],
    "50 clients, -P 16": ["-c", "50", "-P", "16"],
    "1 client": ["-c", "1"],
}


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers PING on 127.0.0.1:{port}")


SERVER_CPUS, CLIENT_CPUS = "0", "1"


def set_cpus(pids: list[int], cpus: str) -> None:
    """Every thread of each process onto `cpus` (taskset -a: the proxy has a reporter thread, redis its bio threads)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def bench(port: int, workload: list[str], requests: int, cpus: str | None = None) -> dict[str, dict[str, float]]:
    """{"SET": {"rps": ..., "p50": ..., "p99": ...}, "GET": {...}} from redis-benchmark --csv."""
    pin = ["taskset", "-c", cpus] if cpus else []
    done = subprocess.run([*pin, "redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(requests), "--csv",
                           *workload], capture_output=True, text=True, check=True, timeout=600)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if not rows or "p99_latency_ms" not in rows[0]:
        raise RuntimeError(f"redis-benchmark printed no latency percentiles:\n{done.stdout}{done.stderr}")
    return {row["test"]: {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]),
                          "p99": float(row["p99_latency_ms"])} for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100_000, help="per test without pipelining "
                        "(10x that with -P 16, a fifth of it with one client)")
    parser.add_argument("--layout", choices=("both", "shared", "pinned"), default="both")
    args = parser.parse_args()
    layouts = ("shared", "pinned") if args.layout == "both" else (args.layout,)
    if "pinned" in layouts and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("the pinned layout needs two CPUs")
    all_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    if shutil.which("redis-benchmark") is None:
        raise SystemExit("redis-benchmark is missing: run scripts/setup (apt redis-tools)")
    sizes = {"50 clients": args.requests, "50 clients, -P 16": args.requests * 10, "1 client": args.requests // 5}
    paths: tuple[str, ...] = ("direct", "relay", "proxy", "own")
    if shutil.which("haproxy"):
        paths += ("haproxy",)
    results: dict[tuple[str, str, str, str], list[dict[str, float]]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, start_redis() as redis:
        relay_port, proxy_port, own_port = free_port(), free_port(), free_port()
        relay = subprocess.Popen([sys.executable, "-c", RELAY, str(relay_port), str(redis.port)],
                                 start_new_session=True)
        env = {**os.environ, "CLOUDWARD_DATA_DIR": str(Path(tmp) / "data"), "CLOUDWARD_DB_URL": "",
               "CLOUDWARD_CONFIG": str(Path(tmp) / "none.toml")}
        proxy = subprocess.Popen([str(CLOUDWARD), "network", "protect", "redis", "--listen", f"127.0.0.1:{proxy_port}",
                                  "--upstream", f"127.0.0.1:{redis.port}", "--no-store"], env=env,
                                 stderr=open(Path(tmp) / "proxy.log", "w"), start_new_session=True)  # noqa: SIM115
        own_policy = Path(tmp) / "own-connections.yaml"
        own_policy.write_text("shared_connections: 0\n")
        own = subprocess.Popen([str(CLOUDWARD), "network", "protect", "redis", "--listen", f"127.0.0.1:{own_port}",
                                "--upstream", f"127.0.0.1:{redis.port}", "--no-store", "--policy", str(own_policy)],
                               env=env, stderr=subprocess.DEVNULL, start_new_session=True)
        helpers = [relay, proxy, own]
        ports = {"direct": redis.port, "relay": relay_port, "proxy": proxy_port, "own": own_port}
        if "haproxy" in paths:
            ports["haproxy"] = free_port()
            config = Path(tmp) / "haproxy.cfg"
            config.write_text(HAPROXY_CONFIG.format(listen=ports["haproxy"], upstream=redis.port))
            helpers.append(subprocess.Popen(["haproxy", "-db", "-f", str(config)], start_new_session=True,
                                            stderr=subprocess.DEVNULL))
        try:
            for port in ports.values():
                wait_port(port)
            for port in ports.values():  # warm-up
                bench(port, ["-c", "50", "-P", "16"], 20_000)
            server_side = [redis.pid or 0] + [process.pid for process in helpers]
            for round_ in range(args.rounds):
                for layout in layouts:
                    pinned = layout == "pinned"
                    set_cpus(server_side, SERVER_CPUS if pinned else all_cpus)
                    for name, workload in WORKLOADS.items():
                        for path in paths:
                            run = bench(ports[path], workload, sizes[name], CLIENT_CPUS if pinned else None)
                            for command, figures in run.items():
                                results.setdefault((layout, name, command, path), []).append(figures)
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for process in helpers:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
        proxy_log = (Path(tmp) / "proxy.log").read_text()
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    load = (load_before, os.getloadavg()[0])
    body = report(results, args, sizes, version, proxy_log, load, paths, layouts)
    write_section("network-redis-proxy", body)
    print(body)


def _median(values: list[dict[str, float]], key: str) -> float:
    return statistics.median(v[key] for v in values)


def report(results: dict[tuple[str, str, str, str], list[dict[str, float]]], args: argparse.Namespace,
           sizes: dict[str, int], version: str, proxy_log: str, load: tuple[float, float],
           paths: tuple[str, ...], layouts: tuple[str, ...]) -> str:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    haproxy = "haproxy" in paths
    lines = [f"## Network security: Redis proxy overhead\n\n"
             f"{today()} · {machine()} · redis-server {version} (no persistence) · redis-benchmark `-t set,get` "
             f"(3-byte values), medians of {args.rounds} alternating rounds · `cloudward network protect redis` "
             f"with the built-in policy, event loop {loop} · `benchmarks/network/redis_proxy.py`. "
             "Layouts: *shared* lets redis-server, the relay or proxy and redis-benchmark run on any CPU; "
             f"*pinned* gives redis-benchmark CPU {CLIENT_CPUS} to itself and puts redis-server and the relay or "
             f"proxy together on CPU {SERVER_CPUS} (clients elsewhere, the proxy beside its server). "
             f"1-minute load average {load[0]:.1f} before the run and {load[1]:.1f} after it"
             f"{BUSY if load[0] > 1.0 else ''}.\n"]
    for layout in layouts:
        lines += [f"\n**{layout}**\n",
                  "| workload | command | direct req/s | proxy req/s | proxy / direct | p99 direct | p99 proxy | "
                  "p99 added | own conns / direct | own conns p99 added | relay / direct |"
                  + (" haproxy / direct | haproxy p99 added |" if haproxy else ""),
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if haproxy else "")]
        verdict = []
        for name in WORKLOADS:
            for command in ("SET", "GET"):
                direct, relay, proxy, own = (results[(layout, name, command, p)]
                                             for p in ("direct", "relay", "proxy", "own"))
                d_rps, r_rps, p_rps, o_rps = (_median(x, "rps") for x in (direct, relay, proxy, own))
                d_p99, p_p99, o_p99 = _median(direct, "p99"), _median(proxy, "p99"), _median(own, "p99")
                row = (f"| {name} (-n {sizes[name]:,}) | {command} | {d_rps:,.0f} | {p_rps:,.0f} | "
                       f"**{p_rps / d_rps:.1%}** | {d_p99:.3f} ms | {p_p99:.3f} ms | **{p_p99 - d_p99:+.3f} ms** | "
                       f"{o_rps / d_rps:.1%} | {o_p99 - d_p99:+.3f} ms | {r_rps / d_rps:.1%} |")
                haproxy_share = 0.0
                if haproxy:
                    h = results[(layout, name, command, "haproxy")]
                    haproxy_share = _median(h, "rps") / d_rps
                    row += f" {haproxy_share:.1%} | {_median(h, 'p99') - d_p99:+.3f} ms |"
                lines.append(row)
                verdict.append((name, command, p_rps / d_rps, p_p99 - d_p99, haproxy_share))
        goal_rows = [v for v in verdict if v[0] == "50 clients"]
        met = [f"{v[1]} {v[2]:.0%}, {v[3]:+.2f} ms" for v in goal_rows if v[2] >= 0.70 and v[3] < 1.0]
        missed = [f"{v[1]} {v[2]:.0%}, {v[3]:+.2f} ms" for v in goal_rows if not (v[2] >= 0.70 and v[3] < 1.0)]
        lines.append("")
        lines.append(f"Goal ({layout}; redis-benchmark's default of 50 clients, one request at a time): at least 70% "
                     f"of direct throughput with under 1 ms added p99 — met for {len(met)} of {len(goal_rows)} "
                     f"commands{' (' + '; '.join(met) + ')' if met else ''}"
                     f"{'; missed: ' + '; '.join(missed) if missed else ''}. "
                     "Pipelined and single-client rows, where every extra hop costs most: proxy "
                     + ", ".join(f"{v[2]:.0%}" for v in verdict if v[0] != "50 clients")
                     + (" of direct; haproxy " + ", ".join(f"{v[4]:.0%}" for v in verdict if v[0] != "50 clients")
                        + "." if haproxy else " of direct."))
    last = [line for line in proxy_log.splitlines() if line.startswith("redis proxy stopped")]
    if last:
        lines.append(f"\nProxy summary at the end: `{last[-1]}`.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
