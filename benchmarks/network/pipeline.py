"""Throughput of the capture side alone: reading a pcap, decoding the lower layers, and the whole
pipeline (flows, reassembly, protocol parsers, `Inspectable`s) without any rule, on a synthetic
capture from benchmarks/network/traffic.py. The signature benchmark (benchmarks/network/pcap_inspect.py)
adds the rules and the peers (tshark, ngrep); this one shows what is left for them.

Each stage is run `--rounds` times; the best CPU time (process time, which the other jobs on a
shared machine disturb less than the wall clock) and its wall clock are reported.

Usage: .venv/bin/python benchmarks/network/pipeline.py [--size-mb 300] [--rounds 3] [--write]
"""

from __future__ import annotations

import sys
from pathlib import Path

# the repository root, not this folder, on sys.path: a sibling script never shadows a standard module
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import dpkt  # noqa: E402
from benchmarks._common import machine, today, write_section  # noqa: E402
from benchmarks.network.traffic import write_capture  # noqa: E402

from cloudward.network.capture import read_capture  # noqa: E402
from cloudward.network.layers import decode  # noqa: E402
from cloudward.network.pipeline import Stats, inspectables  # noqa: E402


def read_only(path: Path) -> int:
    return sum(1 for _ in read_capture(path))


def read_and_decode(path: Path) -> int:
    count = 0
    for packet in read_capture(path):
        decode(packet.linktype, packet.frame)
        count += 1
    return count


def dpkt_objects(path: Path) -> int:
    """The comparison that decided layers.py: dpkt's reader and full Ethernet/IP/TCP objects."""
    count = 0
    with path.open("rb") as handle:
        for _ts, frame in dpkt.pcap.Reader(handle):
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                _ = ip.data.data
            count += 1
    return count


def whole_pipeline(path: Path) -> int:
    stats = Stats()
    for _ in inspectables(read_capture(path), stats=stats):
        pass
    return stats.packets


def half_pipeline(path: Path) -> int:
    """What each of two processes does with `shard=(i, 2)`: read and decode everything, inspect half."""
    stats = Stats()
    for _ in inspectables(read_capture(path), stats=stats, shard=(0, 2)):
        pass
    return stats.packets


def measure(stage: Callable[[Path], int], path: Path, rounds: int) -> tuple[float, float, int]:
    best_cpu, best_wall, packets = float("inf"), float("inf"), 0
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        packets = stage(path)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if cpu < best_cpu:
            best_cpu, best_wall = cpu, wall
    return best_cpu, best_wall, packets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capture", type=Path, help="an existing capture instead of a synthetic one")
    parser.add_argument("--write", action="store_true", help="write the section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudward-bench-") as tmp:
        path = args.capture or Path(tmp) / "synthetic.pcap"
        if args.capture is None:
            write_capture(path, int(args.size_mb * 2**20))
        size = os.path.getsize(path)
        stages = [("read the file (the ceiling)", read_only), ("read + decode link/IP/TCP (struct)", read_and_decode),
                  ("read + decode with dpkt objects", dpkt_objects), ("whole pipeline, no rules", whole_pipeline),
                  ("whole pipeline, one shard of two", half_pipeline)]
        rows = []
        for name, stage in stages:
            cpu, wall, packets = measure(stage, path, args.rounds)
            rows.append((name, cpu, wall, packets))
            print(f"{name:38s} {packets / cpu:10,.0f} packets/s {size / cpu / 2**20:8.1f} MiB/s "
                  f"{size * 8 / cpu / 1e6:8.0f} Mbit/s  (cpu {cpu:.2f}s, wall {wall:.2f}s)")
    if args.write:
        lines = [
            f"## Network capture side: pipeline throughput ({today()})", "",
            f"Machine: {machine()}. Capture: {size / 2**20:.0f} MiB, {rows[0][3]:,} packets"
            + (f" ({args.capture.name})." if args.capture else " of synthetic traffic from "
               "`benchmarks/network/traffic.py` (HTTP, Redis, stratum, TLS, SSH, IRC, DNS, an unknown protocol; "
               "64 interleaved conversations, 1448-byte segments)."),
            f"Best of {args.rounds} rounds by CPU time (the machine is shared: load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores during the run; wall clock in brackets). No "
            "rules: the signature benchmark adds them and the peers.", "",
            "| stage | packets/s | MiB/s | Mbit/s | CPU s (wall s) |", "|---|---:|---:|---:|---:|",
        ]
        for name, cpu, wall, packets in rows:
            lines.append(f"| {name} | {packets / cpu:,.0f} | {size / cpu / 2**20:.1f} | "
                         f"{size * 8 / cpu / 1e6:,.0f} | {cpu:.2f} ({wall:.2f}) |")
        lines += ["", "Command: `.venv/bin/python benchmarks/network/pipeline.py --write`."]
        write_section("network-pipeline", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
