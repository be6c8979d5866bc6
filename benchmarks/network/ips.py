"""What the inline IPS costs: redis-benchmark against a real redis-server in a network namespace of
this script's own, directly and with every packet of the Redis port sent through NFQUEUE to
`cloudward network ips` (all built-in signatures, dropping ones included); same commands, same
machine, alternating rounds. Reports requests/s, the ratio, the p99 latency added, and the packets
the IPS judged per second of its CPU time.

No peer IPS runs on this machine (Suricata's NFQUEUE mode is not packaged for it here), so the
comparison is against the same traffic without the IPS: the ceiling any inline IPS works under.

Usage: .venv/bin/python benchmarks/network/ips.py [--rounds 3] [--requests 50000]
Needs root (network namespaces, iptables, NFQUEUE).
"""
# ruff: noqa: E402  (sys.path is fixed before the other imports)

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import csv
import io
import json
import secrets
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import machine, today, write_section

CLOUDWARD = Path(sys.executable).parent / "cloudward"
PORT = 6379
WORKLOADS = {"50 clients, 3-byte values": ["-c", "50"], "50 clients, 4 KiB values": ["-c", "50", "-d", "4096"],
             "1 client": ["-c", "1"]}


def ns_run(ns: str, *argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kwargs)


def bench(ns: str, workload: list[str], requests: int) -> dict[str, dict[str, float]]:
    done = ns_run(ns, "redis-benchmark", "-p", str(PORT), "-t", "set,get", "-n", str(requests), "--csv", *workload,
                  check=True, timeout=600)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    return {r["test"]: {"rps": float(r["rps"]), "p99": float(r["p99_latency_ms"])} for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces, iptables and NFQUEUE")
    ns = f"cw-ips-bench-{secrets.token_hex(3)}"
    queue = 2000 + secrets.randbelow(50000)
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    load_before = os.getloadavg()[0]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    redis = ips = None
    try:
        ns_run(ns, "ip", "link", "set", "lo", "up", check=True)
        redis = subprocess.Popen(["ip", "netns", "exec", ns, "redis-server", "--port", str(PORT), "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL)
        while ns_run(ns, "redis-cli", "-p", str(PORT), "PING").stdout.strip() != "PONG":
            time.sleep(0.05)
        rules = [["-p", "tcp", "--dport", str(PORT)], ["-p", "tcp", "--sport", str(PORT)]]
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "ips.json"
            env = {**os.environ, "CLOUDWARD_DATA_DIR": str(Path(tmp) / "data")}
            ips = subprocess.Popen(["ip", "netns", "exec", ns, str(CLOUDWARD), "network", "ips", "--queue", str(queue),
                                    "--no-store", "--format", "json", "--output", str(report)],
                                   stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
            assert ips.stderr is not None
            for line in ips.stderr:
                if line.startswith("ips: judging"):
                    break
            drained: list[str] = []
            drainer = threading.Thread(target=lambda: drained.extend(ips.stderr or []), daemon=True)
            drainer.start()
            for _ in range(args.rounds):
                for path in ("direct", "ips"):
                    for rule in rules:
                        action = "-A" if path == "ips" else "-D"
                        ns_run(ns, "iptables", action, "INPUT", *rule, "-j", "NFQUEUE", "--queue-num", str(queue),
                               check=path == "ips")
                    for name, workload in WORKLOADS.items():
                        print(f"{path}: {name}", file=sys.stderr)
                        size = args.requests // 5 if name == "1 client" else args.requests
                        for command, figures in bench(ns, workload, size).items():
                            results.setdefault((name, command, path), []).append(figures)
                    for rule in rules:
                        ns_run(ns, "iptables", "-D", "INPUT", *rule, "-j", "NFQUEUE", "--queue-num", str(queue))
            cpu_before = _cpu_seconds(ips.pid)
            os.killpg(ips.pid, signal.SIGTERM)
            ips.wait(60)
            drainer.join(10)
            tail = "".join(drained)
            stats = json.loads(report.read_text())["scan"]["stats"]
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    load = (load_before, os.getloadavg()[0])
    body = report_section(results, args, stats, cpu_before, load, tail)
    write_section("network-ips", body)
    print(body)


def _cpu_seconds(pid: int) -> float:
    """CPU time of the IPS process tree (ip netns exec execs it: the pid is cloudward's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report_section(results: dict[tuple[str, str, str], list[dict[str, float]]], args: argparse.Namespace,
                   stats: dict, cpu: float, load: tuple[float, float], tail: str) -> str:
    ips = stats.get("ips", {})
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    lines = ["## Network security: inline IPS overhead\n",
             f"{today()} · {machine()} · redis-server {version} and redis-benchmark `-t set,get` in a network "
             f"namespace of the benchmark's own; *ips*: both directions of port {PORT} sent to NFQUEUE and judged by "
             "`cloudward network ips` (every built-in signature; dropping rules armed; nothing in this traffic "
             f"matches), medians of {args.rounds} alternating rounds · `benchmarks/network/ips.py`. "
             f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after.\n",
             "| workload | command | direct req/s | through the IPS req/s | ips / direct | p99 direct | p99 ips | "
             "p99 added |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in WORKLOADS:
        for command in ("SET", "GET"):
            direct, through = results[(name, command, "direct")], results[(name, command, "ips")]
            d, i = (statistics.median(x["rps"] for x in v) for v in (direct, through))
            dp, ip = (statistics.median(x["p99"] for x in v) for v in (direct, through))
            lines.append(f"| {name} | {command} | {d:,.0f} | {i:,.0f} | **{i / d:.1%}** | {dp:.3f} ms | "
                         f"{ip:.3f} ms | {ip - dp:+.3f} ms |")
    packets = ips.get("packets", 0)
    lines.append("")
    lines.append(f"The IPS judged {packets:,} packets ({ips.get('dropped', 0):,} dropped) in {cpu:.1f} s of CPU: "
                 f"{packets / cpu if cpu else 0:,.0f} packets per CPU-second, every one held by the kernel until "
                 "its verdict.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
