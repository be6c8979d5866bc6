"""wrk against a hello-world FastAPI app under uvicorn, without and with cloudward's ASGI middleware
(block mode), on 127.0.0.1; reports requests/s and the ratio (goal: at least 90%).

Two request mixes: wrk's default (`GET /` with only a Host header, the same request every time: the
middleware recognises a request head it already judged clean and passes it on), and a varied mix
(a wrk Lua script: a browser's headers and a query string that differs on every request, so every
request's query values are judged afresh; only the repeated header values hit the per-value cache).

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


def rps(url: str, seconds: int, connections: int, threads: int, script: Path | None = None) -> float:
    pin = ["taskset", "-c", "1"] if PIN else []
    extra = ["-s", str(script)] if script is not None else []
    done = subprocess.run([*pin, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", *extra, url],
                          capture_output=True, text=True, check=True)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if not match:
        raise RuntimeError(f"wrk output without Requests/sec:\n{done.stdout}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: run benchmarks/appsec/setup")
    results: dict[tuple[str, str], list[float]] = {(m, n): [] for m in MIXES for n in ("bare", "protected")}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "varied.lua"
        script.write_text(VARIED)
        for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
            for name in ("bare", "protected"):
                service = start_fastapi(protect=(name == "protected"), app="tests.appsec.apps.hello_app:app")
                if PIN and service.pid is not None:
                    os.sched_setaffinity(service.pid, {0})
                try:
                    for mix in MIXES:
                        lua = script if mix == "varied" else None
                        rps(f"{service.url}/", 2, args.connections, args.threads, lua)  # warm-up
                        results[(mix, name)].append(rps(f"{service.url}/", args.seconds, args.connections,
                                                        args.threads, lua))
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
                 f"repeated request, **{ratios['varied']:.1%}** for the varied one. The repeated request is "
                 "passed without re-judging once its head (method, target, every header) was judged clean; "
                 "the varied mix judges every request's query values afresh.\n")
    body = "\n".join(lines)
    write_section("appsec-throughput", body)
    print(body)


if __name__ == "__main__":
    main()
