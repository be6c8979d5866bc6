"""Distributed exposure scans: the speed-up of 2 `cloudward worker`s over 1 on a 1,024-target scan.

Everything runs on this machine, on loopback: redis-server (the broker) and PostgreSQL (the store)
from the test harness, a lab of real services spread over 127.78.0.0/22 (open and password
redis, sshd with and without passwords, PostgreSQL trust) on their well-known ports, and the
rest of the 1,024 addresses closed. Each worker runs with the same concurrency (`--concurrency 1`
by default: one chunk at a time, one core's worth of work). A scan is
`cloudward exposure scan 127.78.0.0/22 -p teamtnt --timeout 1 --distributed` (64 hosts per
chunk: 16 chunks), timed end to end from the command line (submission, planning, chunks,
merges, report). Two labs:

- quick: only closed ports and real services, which answer in milliseconds on loopback. A chunk
  is CPU work (connects, probes, rule evaluation) plus its merge into the store.
- slow: the same plus one silent service per chunk (accepts on 8080, never answers), like the
  slow or stalled services of real networks: a chunk then mostly waits (its identification
  budget is 3 x --timeout).

Prints the wall time of a local scan, of 1 worker and of 2 workers (median of --repeat runs),
the ratio 1 worker / 2 workers against the 1.7x goal, the summed chunk times from the workers'
logs, and checks that every distributed run found the same findings (by fingerprint) as the local
scan. Writes the `server-workers` section of docs/BENCHMARKS.md.

    .venv/bin/python benchmarks/server/workers.py [--repeat 3] [--concurrency 1] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, measure, today, write_section  # noqa: E402
from tests.harness.services import (  # noqa: E402
    Service,
    ServicePool,
    start_postgres,
    start_process,
    start_redis,
    start_sshd,
)

CIDR = "127.78.0.0/22"
GOAL = 1.7
CHUNK_HOSTS = 64
SLOW_PORT = 8080
CHUNK_LINE = re.compile(r"chunk \d+/\d+: .*; scan ([0-9.]+)s, merge ([0-9.]+)s")
STAMP = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")


def start_lab(pool: ServicePool) -> list[str]:
    """Real services at addresses spread over the /22 (so over several chunks)."""
    started = []
    for address in ("127.78.0.10", "127.78.1.70", "127.78.2.130", "127.78.3.190"):
        pool.start(start_redis, address, port=6379)
        started.append(f"{address}:6379 redis without auth")
    for address in ("127.78.0.140", "127.78.2.20"):
        pool.start(start_redis, address, port=6379, password="bench-secret-not-real")
        started.append(f"{address}:6379 redis with requirepass")
    for address, password in (("127.78.0.80", True), ("127.78.1.200", True), ("127.78.2.250", False),
                              ("127.78.3.60", False)):
        pool.start(start_sshd, address, port=22, password_auth=password)
        started.append(f"{address}:22 sshd {'with password auth' if password else 'keys only'}")
    pool.start(start_postgres, "127.78.1.5", port=5432, auth="trust")
    started.append("127.78.1.5:5432 postgres trust")
    return started


@contextmanager
def silent_services(addresses: list[str], port: int) -> Iterator[None]:
    """Listeners that accept and never say a word (a stalled service), on an event loop thread."""
    loop = asyncio.new_event_loop()
    servers: list[asyncio.Server] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the scanner gives up and closes
        finally:
            writer.close()

    async def open_all() -> None:
        for address in addresses:
            servers.append(await asyncio.start_server(hold, address, port))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(open_all(), loop).result(30)
    try:
        yield
    finally:
        async def close_all() -> None:
            for server in servers:
                server.close()

        asyncio.run_coroutine_threadsafe(close_all(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def start_worker(pool: ServicePool, name: str, env: dict[str, str], concurrency: int) -> Service:
    def argv(service: Service) -> list[str]:
        return [sys.executable, "-m", "cloudward", "worker", "--concurrency", str(concurrency), "--name", name]

    return pool.start(start_process, f"worker-{name}", argv, env=env, timeout=60,
                      ready=lambda s: " ready." in s.log_tail(200))


def scan_argv(report: Path, distributed: bool) -> list[str]:
    argv = [sys.executable, "-m", "cloudward", "exposure", "scan", CIDR, "-p", "teamtnt", "--timeout", "1",
            "--format", "json", "--output", str(report)]
    return [*argv, "--distributed"] if distributed else argv


def fingerprints(report: Path) -> set[str]:
    return {f["fingerprint"] for f in json.loads(report.read_text())["findings"]}


def log_sizes(workers: list[Service]) -> list[int]:
    return [w.log_path.stat().st_size for w in workers]


def worker_phase(workers: list[Service], offsets: list[int]) -> float:
    """Seconds from the job reaching a worker to the last chunk's end, from the logs written since
    `offsets`: the distributed part of a run, without the command line's own start and report."""
    stamps: list[tuple[str, datetime]] = []
    for worker, offset in zip(workers, offsets, strict=True):
        with worker.log_path.open("rb") as handle:
            handle.seek(offset)
            for line in handle.read().decode(errors="replace").splitlines():
                found = STAMP.match(line)
                if found and ("received" in line or "succeeded" in line):
                    stamps.append((line, datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")))
    began = min(t for line, t in stamps if "run_job" in line and "received" in line)
    ended = max(t for line, t in stamps if "scan_chunk" in line and "succeeded" in line)
    return (ended - began).total_seconds()


def chunk_seconds(workers: list[Service]) -> tuple[float, float, int]:
    """(summed scan seconds, summed merge seconds, chunks) from the workers' logs so far."""
    scan = merge = 0.0
    count = 0
    for worker in workers:
        for match in CHUNK_LINE.finditer(worker.log_path.read_text(errors="replace")):
            scan += float(match.group(1))
            merge += float(match.group(2))
            count += 1
    return scan, merge, count


def run_lab(label: str, env: dict[str, str], out: Path, repeat: int, concurrency: int) -> dict[str, Any]:
    local_times: list[float] = []
    for n in range(repeat):
        report = out / f"{label}-local-{n}.json"
        m = measure(scan_argv(report, distributed=False), env=env)
        if m.returncode not in (0, 1):
            raise SystemExit(f"local scan failed ({m.returncode}): {m.stderr[-2000:]}")
        local_times.append(m.seconds)
    truth = fingerprints(out / f"{label}-local-0.json")
    row: dict[str, Any] = {"lab": label, "local": statistics.median(local_times), "findings": len(truth)}
    for count in (1, 2):
        with ServicePool() as pool:
            workers = [start_worker(pool, f"bench{i}", env, concurrency) for i in range(count)]
            times, phases = [], []
            for n in range(repeat):
                report = out / f"{label}-{count}w-{n}.json"
                offsets = log_sizes(workers)
                m = measure(scan_argv(report, distributed=True), env=env)
                phases.append(worker_phase(workers, offsets))
                if m.returncode not in (0, 1):
                    raise SystemExit(f"distributed scan failed ({m.returncode}): {m.stderr[-2000:]}")
                if fingerprints(report) != truth:
                    raise SystemExit(f"{label}, {count} worker(s): findings differ from the local scan")
                times.append(m.seconds)
            scan, merge, chunks = chunk_seconds(workers)
        row[f"{count}w"] = statistics.median(times)
        row[f"{count}w_phase"] = statistics.median(phases)
        row[f"{count}w_scan"] = scan / max(1, chunks)
        row[f"{count}w_merge"] = merge / max(1, chunks)
        print(f"{label}: {count} worker(s) {row[f'{count}w']:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}), "
              f"on the workers {row[f'{count}w_phase']:.2f} s; per chunk: scan {row[f'{count}w_scan']:.3f} s, "
              f"merge {row[f'{count}w_merge']:.3f} s", flush=True)
    row["speedup"] = row["1w"] / row["2w"]
    row["phase_speedup"] = row["1w_phase"] / row["2w_phase"]
    print(f"{label}: local {row['local']:.2f} s; speed-up 2 workers / 1 = {row['speedup']:.2f}x end to end, "
          f"{row['phase_speedup']:.2f}x on the workers (goal {GOAL}x)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from tests.store._support import fresh_database

    rows = []
    with ServicePool() as pool, tempfile.TemporaryDirectory(prefix="cw-bench-workers-") as tmp:
        out = Path(tmp)
        broker = pool.start(start_redis)
        postgres = pool.start(start_postgres)
        lab = start_lab(pool)
        with fresh_database(postgres.dsn, postgres.sqlalchemy_url) as url:
            env = {"CLOUDWARD_DB_URL": url, "CLOUDWARD_BROKER_URL": str(broker.url),
                   "CLOUDWARD_DATA_DIR": str(out / "data"), "CLOUDWARD_WORKER_CHUNK_HOSTS": str(CHUNK_HOSTS)}
            rows.append(run_lab("quick", env, out, args.repeat, args.concurrency))
            silent = [f"127.78.{k // 4}.{(k % 4) * 64 + 33}" for k in range(16)]  # one per 64-host chunk
            with silent_services(silent, SLOW_PORT):
                rows.append(run_lab("slow", env, out, args.repeat, args.concurrency))
    body = render(rows, lab, args.repeat, args.concurrency)
    print(body)
    if not args.no_write:
        write_section("server-workers", body)


def render(rows: list[dict[str, Any]], lab: list[str], repeat: int, concurrency: int) -> str:
    lines = [
        "## Distributed exposure scans: 1 worker vs 2",
        "",
        f"Measured {today()} on {machine()}. `python benchmarks/server/workers.py` "
        f"(median of {repeat} runs each).",
        "",
        f"`cloudward exposure scan {CIDR} -p teamtnt --timeout 1 --distributed` (1,024 targets x 14 ports, "
        f"{CHUNK_HOSTS} hosts a chunk = 16 chunks), timed from the command line to its report; every worker "
        f"`--concurrency {concurrency}`; broker redis-server, store PostgreSQL 15, all on this machine. "
        f"Lab: {len(lab)} real services ({', '.join(sorted({s.split(' ', 1)[1] for s in lab}))}), the other "
        "addresses closed; the slow lab adds one silent listener (accepts on 8080, never answers) per chunk. "
        "Every distributed run found the same findings, by fingerprint, as the local scan.",
        "",
        "| lab | local scan (s) | 1 worker (s) | 2 workers (s) | speed-up | of which on the workers: 1 / 2 (s) "
        "| speed-up there | per chunk: scan / merge (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(f"| {row['lab']} | {row['local']:.2f} | {row['1w']:.2f} | {row['2w']:.2f} | "
                     f"**{row['speedup']:.2f}x** | {row['1w_phase']:.2f} / {row['2w_phase']:.2f} | "
                     f"{row['phase_speedup']:.2f}x | {row['2w_scan']:.3f} / {row['2w_merge']:.3f} |")
    quick, slow = rows[0], rows[-1]
    lines += [
        "",
        f"Goal: at least {GOAL}x with 2 workers. \"On the workers\" runs from the job's message reaching a worker "
        "to the end of the last chunk (from the workers' logs): the distributed part, without the command "
        "line's own start (Python, SQLAlchemy and Celery imports, the store's schema check, about a second) "
        "and report, which are the same with 1 or 2 workers.",
        "",
        "What dominates: on loopback a closed port refuses at once, so the quick lab is CPU work, and little "
        f"of it: {16 * (quick['1w_scan'] + quick['1w_merge']):.1f} s of chunks in all with one worker, against "
        "about a second of fixed cost in the command line that a second worker cannot shorten. Two workers "
        "also share this machine's 2 cores with PostgreSQL, redis-server and the command line, so each chunk's "
        f"own work grows ({quick['1w_scan']:.3f} -> {quick['2w_scan']:.3f} s scanning, {quick['1w_merge']:.3f} "
        f"-> {quick['2w_merge']:.3f} s merging, merges queue on the scan's lock): the quick lab gains "
        f"{quick['phase_speedup']:.2f}x on the workers and {quick['speedup']:.2f}x end to end. The slow lab is "
        "what real networks look like (services that answer late or not at all): "
        f"a chunk waits about {slow['1w_scan']:.1f} s for its silent service, two workers wait side by side, and "
        f"the speed-up is {slow['phase_speedup']:.2f}x on the workers, {slow['speedup']:.2f}x end to end. "
        "A local scan overlaps every wait in one event loop (64 identifications at once), which is why it "
        "beats one worker that takes one chunk at a time: workers pay off when one machine's sockets, "
        "bandwidth or CPU are the limit, and each worker can take several chunks at once (`--concurrency`).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
