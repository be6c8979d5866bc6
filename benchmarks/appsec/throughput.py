"""wrk against a hello-world FastAPI app under uvicorn, without and with cloudward's ASGI middleware
(block mode), on 127.0.0.1; reports requests/s and the ratio (goal: at least 90%).

Usage: .venv/bin/python benchmarks/appsec/throughput.py [--seconds 10] [--connections 32]
Peers: benchmarks/appsec/setup (wrk).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import machine, today, write_section
from tests.appsec.servers import start_fastapi


def rps(url: str, seconds: int, connections: int, threads: int) -> float:
    done = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url], capture_output=True,
                          text=True, check=True)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if not match:
        raise RuntimeError(f"wrk output without Requests/sec:\n{done.stdout}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: run benchmarks/appsec/setup")
    results: dict[str, list[float]] = {"bare": [], "protected": []}
    for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
        for name in ("bare", "protected"):
            service = start_fastapi(protect=(name == "protected"), app="tests.appsec.apps.hello_app:app")
            try:
                rps(f"{service.url}/", 2, args.connections, args.threads)  # warm-up
                results[name].append(rps(f"{service.url}/", args.seconds, args.connections, args.threads))
            finally:
                service.stop()
    bare = max(results["bare"])
    protected = max(results["protected"])
    ratio = protected / bare
    import uvicorn

    body = (f"## Application security: request throughput\n\n"
            f"{today()} · {machine()} · uvicorn {uvicorn.__version__} (one worker, h11), "
            f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, best of {args.rounds} alternating rounds, "
            f"`GET /` of a hello-world FastAPI app (`tests/appsec/apps/hello_app.py`).\n\n"
            f"| app | requests/s (best) | all rounds |\n|---|---:|---|\n"
            f"| bare FastAPI | {bare:,.0f} | {', '.join(f'{v:,.0f}' for v in results['bare'])} |\n"
            f"| with `cloudward.appsec.ASGIMiddleware(mode=\"block\")` | {protected:,.0f} | "
            f"{', '.join(f'{v:,.0f}' for v in results['protected'])} |\n\n"
            f"Ratio: **{ratio:.1%}** of the bare app's requests/s (goal: at least 90%).\n")
    write_section("appsec-throughput", body)
    print(body)


if __name__ == "__main__":
    main()
