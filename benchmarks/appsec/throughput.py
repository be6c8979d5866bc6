"""wrk against a hello-world FastAPI app under uvicorn, without and with cloudward's ASGI middleware
(block mode), on 127.0.0.1; reports requests/s and the ratio (goal: at least 90%).

Two request mixes: wrk's default (`GET /` with only a Host header, the same request every time: the
middleware recognises a request head it already judged clean and passes it on), and a varied mix
(a wrk Lua script: a browser's headers and a query string that differs on every request, so every
request's query values are judged afresh; only the repeated header values hit the per-value cache).

A third app measures the optional in-process CRS engine: the same middleware with policy `crs:` (CRS
v4 from ../shared/corpora/crs at paranoia level 1, run by libmodsecurity in the app). Its cost per
request is read two ways: from the requests/s (1/rps with the engine - 1/rps without) and by the CPU
time `CrsEngine.evaluate` alone takes in this process on the varied requests. `--no-crs-engine` leaves it out.

Usage: .venv/bin/python benchmarks/appsec/throughput.py [--seconds 10] [--connections 32] [--rounds 5]
Peers: benchmarks/appsec/setup (wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import machine, today, write_section
from tests.appsec.servers import start_fastapi

CRS = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "crs"

PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None  # server on CPU 0, wrk on CPU 1
VARIED = """
counter = 0
local headers = {
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
  ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
  ["Accept-Language"] = "en-GB,en;q=0.7",
  ["Cookie"] = "sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark"
}
request = function()
  counter = counter + 1
  return wrk.format("GET", "/?q=blue+shoes+" .. counter .. "&page=" .. (counter % 50) .. "&sort=price", headers)
end
"""
MIXES = {"same": "`GET /`, the same request every time",
         "varied": "`GET /?q=blue+shoes+N&page=N&sort=price` with browser headers and a cookie, N new each time"}


def __getattr__(name: str) -> object:
    """`crs_app`: the hello app with the middleware and its CRS engine (APPSEC_POLICY), built when uvicorn
    asks for it in the server's process (the app is started with APPSEC_PROTECT=0: hello_app stays bare)."""
    if name != "crs_app":
        raise AttributeError(name)
    from tests.appsec.apps.hello_app import inner

    from cloudward.appsec import ASGIMiddleware

    return ASGIMiddleware(inner, mode="block", policy=os.environ["APPSEC_POLICY"])


def engine_cost(count: int = 2000) -> float:
    """CPU microseconds `CrsEngine.evaluate` takes per request of the varied mix, in this thread (CPU time, so
    other processes on the machine do not inflate it)."""
    import time

    from cloudward.appsec.crs import crs_engine
    from cloudward.appsec.policy import CrsSettings
    from cloudward.appsec.request import HttpRequest

    engine = crs_engine(CrsSettings(rules=CRS, paranoia=1, threshold=5))
    headers = [("host", "127.0.0.1:8000"),  # as wrk sends them (VARIED)
               ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
               ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
               ("accept-language", "en-GB,en;q=0.7"),
               ("cookie", "sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark")]
    requests = [HttpRequest("GET", "/", f"q=blue+shoes+{n}&page={n % 50}&sort=price", headers) for n in range(count)]
    for request in requests[:200]:  # warm-up
        engine.evaluate(request)
    began = time.thread_time()
    for request in requests:
        engine.evaluate(request)
    return (time.thread_time() - began) / count * 1e6


def rps(url: str, seconds: int, connections: int, threads: int, script: Path | None = None) -> tuple[float, int]:
    """Requests/s and the number of requests wrk completed."""
    pin = ["taskset", "-c", "1"] if PIN else []
    extra = ["-s", str(script)] if script is not None else []
    done = subprocess.run([*pin, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", *extra, url],
                          capture_output=True, text=True, check=True)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    count = re.search(r"(\d+) requests in", done.stdout)
    if not match or not count:
        raise RuntimeError(f"wrk output without Requests/sec:\n{done.stdout}")
    return float(match.group(1)), int(count.group(1))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process_cost(count: int = 3000, rounds: int = 9) -> dict[str, tuple[float, float]]:
    """CPU microseconds per request of the hello app without and with the middleware, driven in this process
    (the ASGI callables called directly, no server), alternating rounds; medians. Steadier than requests/s on
    a shared machine, and the figure to compare changes by."""
    import asyncio
    import time

    from tests.appsec.apps.hello_app import inner

    from cloudward.appsec import ASGIMiddleware

    protected = ASGIMiddleware(inner, mode="block")
    agent = (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    browser = [(b"host", b"127.0.0.1:8000"), agent,
               (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
               (b"accept-language", b"en-GB,en;q=0.7"),
               (b"cookie", b"sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark")]

    def scope(mix: str, n: int) -> dict[str, object]:
        # new bytes objects for every request, as a server parsing each from the wire hands them over
        headers = [(bytes(bytearray(k)), bytes(bytearray(v))) for k, v in
                   (browser if mix == "varied" else [(b"host", b"127.0.0.1:8000")])]
        query = f"q=blue+shoes+{n}&page={n % 50}&sort=price".encode() if mix == "varied" else b""
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                "path": "/", "raw_path": bytes(bytearray(b"/")), "query_string": query, "root_path": "",
                "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    async def drive(app: object, mix: str, first: int, number: int) -> None:
        for n in range(first, first + number):
            await app(scope(mix, n), receive, send)  # type: ignore[operator]

    loop = asyncio.new_event_loop()
    samples: dict[tuple[str, str], list[float]] = {}
    first = 10**6
    for _ in range(rounds):
        for mix in MIXES:
            for name, app in (("bare", inner), ("protected", protected)):
                loop.run_until_complete(drive(app, mix, first, 300))
                first += 300
                began = time.process_time()
                loop.run_until_complete(drive(app, mix, first, count))
                first += count
                samples.setdefault((mix, name), []).append((time.process_time() - began) / count * 1e6)
    loop.close()
    return {mix: (statistics.median(samples[(mix, "bare")]),
                  statistics.median(p - b for p, b in zip(samples[(mix, "protected")], samples[(mix, "bare")],
                                                           strict=True)))
            for mix in MIXES}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-crs-engine", dest="crs_engine", action="store_false",
                        help="leave out the app with the in-process CRS engine (policy `crs:`)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: run benchmarks/appsec/setup")
    apps = ("bare", "protected", "crs") if args.crs_engine else ("bare", "protected")
    results: dict[tuple[str, str], list[float]] = {(m, n): [] for m in MIXES for n in apps}
    cpu: dict[tuple[str, str], list[float]] = {(m, n): [] for m in MIXES for n in apps}  # server µs per request
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "varied.lua"
        script.write_text(VARIED)
        policy = Path(tmp) / "crs-policy.yaml"
        policy.write_text(f"mode: block\ncrs:\n  rules: {CRS}\n  paranoia: 1\n  threshold: 5\n")
        for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
            for name in apps:
                if name == "crs":
                    service = start_fastapi(protect=False, policy=policy, app="benchmarks.appsec.throughput:crs_app")
                else:
                    service = start_fastapi(protect=(name == "protected"), app="tests.appsec.apps.hello_app:app")
                if PIN and service.pid is not None:
                    os.sched_setaffinity(service.pid, {0})
                try:
                    for mix in MIXES:
                        lua = script if mix == "varied" else None
                        rps(f"{service.url}/", 2, args.connections, args.threads, lua)  # warm-up
                        began = cpu_seconds(service.pid) if service.pid is not None else 0.0
                        rate, count = rps(f"{service.url}/", args.seconds, args.connections, args.threads, lua)
                        results[(mix, name)].append(rate)
                        if service.pid is not None:
                            cpu[(mix, name)].append((cpu_seconds(service.pid) - began) / count * 1e6)
                finally:
                    service.stop()
    import uvicorn

    lines = [f"## Application security: request throughput\n\n"
             f"{today()} · {machine()} · uvicorn {uvicorn.__version__} (one worker, h11), "
             f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, best of {args.rounds} alternating rounds"
             f"{' (server pinned to CPU 0, wrk to CPU 1)' if PIN else ''}, a hello-world FastAPI app "
             f"(`tests/appsec/apps/hello_app.py`), `benchmarks/appsec/throughput.py`.\n",
             "| requests | app | requests/s (best) | all rounds | ratio (best / best) | median per-round ratio |",
             "|---|---|---:|---|---:|---:|"]
    ratios = {}
    for mix, label in MIXES.items():
        bare, protected = results[(mix, "bare")], results[(mix, "protected")]
        ratio = max(protected) / max(bare)
        paired = statistics.median(p / b for p, b in zip(protected, bare, strict=True))
        ratios[mix] = ratio
        lines.append(f"| {label} | bare FastAPI | {max(bare):,.0f} | {', '.join(f'{v:,.0f}' for v in bare)} | | |")
        lines.append(f"| | with `cloudward.appsec.ASGIMiddleware(mode=\"block\")` | {max(protected):,.0f} | "
                     f"{', '.join(f'{v:,.0f}' for v in protected)} | **{ratio:.1%}** | {paired:.1%} |")
    lines.append(f"\nRatio (goal: at least 90% of the bare app's requests/s): **{ratios['same']:.1%}** for the "
                 f"repeated request, **{ratios['varied']:.1%}** for the varied one. A bodiless request whose path, "
                 "header list and query pieces are all known to be clean is passed without building and judging "
                 "it (the quiet path); in the varied mix only the new query value is judged, with the small "
                 "Hyperscan database of plain texts.\n")
    lines += ["Steadier measures of the same cost (requests/s swings with whatever else the machine runs): the "
              "server's CPU time per request during the measured runs (median of the rounds), and the hello app "
              "driven in one process without a server, with and without the middleware "
              "(`in_process_cost`: medians of alternating rounds).\n",
              "| requests | server CPU per request, bare | with the middleware | added | in-process, bare | "
              "added by the middleware in-process | ratio from CPU time |", "|---|---:|---:|---:|---:|---:|---:|"]
    alone = in_process_cost()
    for mix, label in MIXES.items():
        bare_cpu, protected_cpu = (statistics.median(cpu[(mix, n)]) if cpu[(mix, n)] else 0.0
                                   for n in ("bare", "protected"))
        lines.append(f"| {label} | {bare_cpu:,.0f} µs | {protected_cpu:,.0f} µs | {protected_cpu - bare_cpu:,.1f} µs | "
                     f"{alone[mix][0]:,.1f} µs | {alone[mix][1]:,.1f} µs | "
                     f"{bare_cpu / protected_cpu if protected_cpu else 0:.1%} |")
    lines.append("")
    if args.crs_engine:
        lines += crs_lines(results, args)
    body = "\n".join(lines)
    write_section("appsec-throughput", body)
    print(body)


def crs_lines(results: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> list[str]:
    """The rows of the app with the CRS engine, and what the engine costs per request."""
    from importlib.metadata import version

    lines = [f"With the optional in-process CRS engine (policy `crs: {{rules: ../shared/corpora/crs, paranoia: 1, "
             f"threshold: 5}}`, CRS v4 run by the libmodsecurity {version('libmodsecurity')} wheel in the app):\n",
             "| requests | app | requests/s (best) | all rounds | ratio to bare (best / best) | "
             "ratio to the middleware without CRS | CRS engine cost per request (from requests/s) |",
             "|---|---|---:|---|---:|---:|---:|"]
    for mix, label in MIXES.items():
        bare, protected, crs = (results[(mix, n)] for n in ("bare", "protected", "crs"))
        cost = (1 / max(crs) - 1 / max(protected)) * 1e6
        lines.append(f"| {label} | with `ASGIMiddleware(mode=\"block\", policy=<crs: PL1>)` | {max(crs):,.0f} | "
                     f"{', '.join(f'{v:,.0f}' for v in crs)} | **{max(crs) / max(bare):.1%}** | "
                     f"{max(crs) / max(protected):.1%} | {cost:,.0f} µs |")
    alone = engine_cost()
    lines.append(f"\n`CrsEngine.evaluate` alone (one ModSecurity transaction through phases 1 and 2, in this process, "
                 f"on 2,000 requests of the varied mix): **{alone:,.0f} µs** of CPU time per request. The repeated "
                 "request is judged once (CRS included) and then passed as a head already judged clean; every request "
                 "of the varied mix goes through the engine, which holds the event loop (and the GIL) while it runs. "
                 f"The machine's load average at the end of the run: {os.getloadavg()[0]:.1f} (1 min), "
                 f"{os.getloadavg()[2]:.1f} (15 min) on {os.cpu_count()} cores; anything above 2 means other work "
                 "shared the CPUs and every figure above is distorted.\n")
    return lines


if __name__ == "__main__":
    main()
