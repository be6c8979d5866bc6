"""The cost of `cloudward network protect docker` in front of a Docker Engine API: podman's
Docker-compatible service on loopback TCP, asked directly and through the proxy in one run.

- wrk on `GET /_ping` and `GET /containers/json?all=1` (five containers listed; `/version` is no use:
  podman takes a second to answer it) with the same token header both ways (the engine ignores it):
  requests/s, the ratio, p50/p99 latency, and the proxy's own CPU time per request (from /proc, so
  it holds even when other work shares the machine);
- the API calls `docker create`/`inspect`/`rm` make (create, inspect, remove a container) over one
  kept-alive connection, timed per sequence;
- the real docker CLI doing `create`, `inspect`, `rm` as three processes, timed per sequence.

Usage: .venv/bin/python benchmarks/network/docker_proxy.py [--seconds 8] [--connections 8] [--rounds 3]
Peers: benchmarks/network/setup (wrk; the docker CLI comes with the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# the repository root, not this folder, on sys.path: a sibling script never shadows a standard module
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

import httpx  # noqa: E402
from benchmarks._common import ROOT, machine, today, write_section  # noqa: E402
from tests.harness.services import free_port, start_podman_api  # noqa: E402
from tests.network.test_docker_proxy import build_cw_image  # noqa: E402

TOKEN = "bench-token-0123456789abcdef0123"
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None  # wrk on CPU 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    pin = ["taskset", "-c", "1"] if PIN else []
    done = subprocess.run([*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H",
                           f"Authorization: Bearer {TOKEN}", url], capture_output=True, text=True, check=True)
    out = done.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def latency(pct: str) -> float:
        match = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        if not match:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{out}")
        return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if not rps or not count:
        raise RuntimeError(f"wrk output without a rate:\n{out}")
    return {"rps": float(rps.group(1)), "requests": int(count.group(1)), "p50": latency("50"), "p99": latency("99")}


def api_sequence(client: httpx.Client, image: str) -> float:
    """Seconds for create + inspect + remove over one kept-alive connection."""
    began = time.perf_counter()
    ident = client.post("/v1.41/containers/create", json={"Image": image, "Cmd": ["/cw"]}).json()["Id"]
    assert client.get(f"/v1.41/containers/{ident}/json").status_code == 200
    assert client.delete(f"/v1.41/containers/{ident}").status_code == 204
    return time.perf_counter() - began


def cli_sequence(env: dict[str, str], image: str) -> float:
    """Seconds for `docker create`, `docker inspect`, `docker rm` (three CLI processes)."""
    name = f"bench-{time.monotonic_ns()}"
    began = time.perf_counter()
    for args in (["create", "--name", name, image, "/cw"], ["inspect", name], ["rm", name]):
        subprocess.run(["docker", *args], env=env, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - began


def interleaved(rounds: int, direct: Callable[[], float], proxied: Callable[[], float]) -> tuple[float, float]:
    """Medians of both, measured turn about (who goes first alternates too: the engine is still
    cleaning up after the previous remove when the next create arrives), so a change in the
    machine's load hits both alike."""
    times: dict[str, list[float]] = {"direct": [], "proxy": []}
    for index in range(rounds):
        order = (("direct", direct), ("proxy", proxied)) if index % 2 else (("proxy", proxied), ("direct", direct))
        for name, run in order:
            times[name].append(run())
    return statistics.median(times["direct"]), statistics.median(times["proxy"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=20)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    for tool in ("wrk", "docker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run benchmarks/network/setup")
    work = Path(tempfile.mkdtemp(prefix="cw-docker-bench-"))
    (work / "token").write_text(TOKEN)
    rootfs = build_cw_image(work)
    with start_podman_api() as engine:
        direct = f"http://{engine.host}:{engine.port}"
        with httpx.Client(base_url=direct, timeout=60, trust_env=False) as client:
            loaded = client.post("/images/create", params={"fromSrc": "-"}, content=rootfs.read_bytes())
            client.post(f"/images/{loaded.json()['id']}/tag", params={"repo": "bench/cw", "tag": "1"})
            image = "docker.io/bench/cw:1"
            for index in range(5):
                client.post("/containers/create", params={"name": f"listed-{index}"},
                            json={"Image": image, "Cmd": ["/cw"]})
        port = free_port()
        log = work / "proxy.log"
        cloudward = str(Path(sys.executable).with_name("cloudward"))
        with open(log, "wb") as handle:
            proxy = subprocess.Popen([cloudward, "network", "protect", "docker", "--listen", f"127.0.0.1:{port}",
                                      "--upstream", f"tcp://{engine.host}:{engine.port}", "--token-file",
                                      str(work / "token")], stderr=handle, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while "listening on" not in log.read_text():
                if proxy.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the proxy did not start:\n{log.read_text()}")
                time.sleep(0.05)
            through = f"http://127.0.0.1:{port}"
            rows = []
            for path in ("/_ping", "/containers/json?all=1"):
                runs: dict[str, list[dict[str, float]]] = {"direct": [], "proxy": []}
                cpu_per_request = []
                for _ in range(args.rounds):
                    runs["direct"].append(wrk(direct + path, args.seconds, args.connections))
                    before = cpu_seconds(proxy.pid)
                    result = wrk(through + path, args.seconds, args.connections)
                    cpu_per_request.append((cpu_seconds(proxy.pid) - before) / max(result["requests"], 1))
                    runs["proxy"].append(result)
                best = {k: max(v, key=lambda r: r["rps"]) for k, v in runs.items()}
                rows.append((path, best["direct"], best["proxy"], statistics.median(cpu_per_request)))
                print(f"{path}: direct {best['direct']['rps']:.0f} req/s, proxy {best['proxy']['rps']:.0f} req/s "
                      f"({best['proxy']['rps'] / best['direct']['rps']:.1%}); proxy CPU "
                      f"{statistics.median(cpu_per_request) * 1e6:.0f} us/request", flush=True)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=direct, headers=auth, timeout=60, trust_env=False) as to_engine, \
                    httpx.Client(base_url=through, headers=auth, timeout=60, trust_env=False) as to_proxy:
                api_direct, api_proxy = interleaved(args.sequences, lambda: api_sequence(to_engine, image),
                                                    lambda: api_sequence(to_proxy, image))
            print(f"API create/inspect/remove: direct {api_direct * 1000:.1f} ms, proxy {api_proxy * 1000:.1f} ms",
                  flush=True)
            config = work / "docker-config"
            config.mkdir()
            (config / "config.json").write_text(json.dumps({"HttpHeaders": {"Authorization": f"Bearer {TOKEN}"}}))
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
            cli_rounds = max(3, args.sequences // 2)
            engine_env = {**base_env, "DOCKER_HOST": f"tcp://{engine.host}:{engine.port}", "DOCKER_CONFIG": str(config)}
            proxy_env = {**base_env, "DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_CONFIG": str(config)}
            cli_direct, cli_proxy = interleaved(cli_rounds, lambda: cli_sequence(engine_env, image),
                                                lambda: cli_sequence(proxy_env, image))
            print(f"docker CLI create/inspect/rm: direct {cli_direct * 1000:.0f} ms, proxy {cli_proxy * 1000:.0f} ms",
                  flush=True)
        finally:
            proxy.terminate()
            proxy.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "## Network: `network protect docker` (Docker Engine API proxy)",
        "",
        f"{today()}, {machine()}. Engine: {version} (`podman system service` on loopback TCP, vfs storage, runc). "
        f"wrk: 1 thread, {args.connections} connections, {args.seconds} s, best of {args.rounds} rounds"
        f"{', pinned to CPU 1' if PIN else ''}; the proxy logs every decision to a file as in production. "
        f"Load average when the run began and ended: {load_before:.1f} / {os.getloadavg()[0]:.1f} (other work "
        "on the machine lengthens the proxy's extra hop more than the engine's direct answer). "
        "Run: `.venv/bin/python benchmarks/network/docker_proxy.py` (peers: `benchmarks/network/setup`).",
        "",
        "| request | direct req/s | through proxy req/s | ratio | p50 direct / proxy | p99 direct / proxy | "
        "proxy CPU per request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path, d, p, cpu in rows:
        lines.append(f"| `GET {path}` | {d['rps']:.0f} | {p['rps']:.0f} | {p['rps'] / d['rps']:.1%} | "
                     f"{d['p50']:.2f} / {p['p50']:.2f} ms | {d['p99']:.2f} / {p['p99']:.2f} ms | {cpu * 1e6:.0f} µs |")
    lines += [
        "",
        "| sequence | direct | through proxy | added |",
        "| --- | ---: | ---: | ---: |",
        f"| API calls: create + inspect + remove, one connection (median of {args.sequences}, turn about) | "
        f"{api_direct * 1000:.1f} ms | {api_proxy * 1000:.1f} ms | {(api_proxy - api_direct) * 1000:+.1f} ms |",
        f"| docker CLI: `create`, `inspect`, `rm` (three processes, median of {cli_rounds}, turn about) | "
        f"{cli_direct * 1000:.0f} ms | {cli_proxy * 1000:.0f} ms | {(cli_proxy - cli_direct) * 1000:+.0f} ms |",
        "",
        "What it costs: every request is parsed by h11 twice (the client's and the engine's answer) and "
        "re-serialised, its target canonicalised and judged, and a create body read whole and judged as JSON: "
        f"{rows[0][3] * 1e6:.0f} µs of the proxy's CPU for a `/_ping`, which the engine itself answers in well under "
        "a millisecond, so a flood of pings runs at a fraction of the engine's rate. Calls that touch containers "
        f"hide most of it: {(api_proxy - api_direct) * 1000:+.1f} ms ({api_proxy / api_direct - 1:+.0%}) on an API "
        f"create/inspect/remove, {(cli_proxy - cli_direct) * 1000:+.0f} ms ({cli_proxy / cli_direct - 1:+.0%}) on "
        "three docker CLI runs, each of which also opens its connections anew. The per-run medians move by several "
        "milliseconds between runs on a busy machine; the CPU per request is the steadier figure.",
    ]
    write_section("network-docker-proxy", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
