"""Exposure scan, side by side with nmap, on the same loopback /16.

Real services (redis with and without a password, sshd with and without password auth, etcd,
PostgreSQL trust and scram, podman's Docker API, Jupyter with and without a token, a registry) are
bound to well-known ports on addresses across 127.77.1.0/24; then cloudward and
`nmap -sT -sV --script redis-info,ssh-auth-methods` scan all of 127.77.0.0/16 with the `teamtnt`
port profile. Reported: wall clock, peak memory, and whether both found the same exposures.
Traffic stays on 127.0.0.0/8. Results go to docs/BENCHMARKS.md.

    python benchmarks/exposure/run.py [--cidr 127.77.0.0/16] [--no-nmap] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, measure, today, write_section
from tests.harness.services import (
    ServicePool,
    start_etcd,
    start_jupyter,
    start_podman_api,
    start_postgres,
    start_redis,
    start_registry,
    start_sshd,
)

TEAMTNT_PORTS = "22,2375,2376,2379,4040,5432,6379,6443,8080,8888,9200,10250,10255,27017"
NET = "127.77.1"


def start_services(pool: ServicePool) -> dict[str, str]:
    """Start the lab; returns endpoint -> what it is (the ground truth)."""
    truth: dict[str, str] = {}
    for i in range(10, 18):
        pool.start(start_redis, f"{NET}.{i}", port=6379)
        truth[f"{NET}.{i}:6379"] = "redis without auth"
    for i in range(20, 24):
        pool.start(start_redis, f"{NET}.{i}", port=6379, password="bench-secret-not-real")
        truth[f"{NET}.{i}:6379"] = "redis with requirepass"
    for i in range(30, 33):
        pool.start(start_sshd, f"{NET}.{i}", port=22, password_auth=True)
        truth[f"{NET}.{i}:22"] = "sshd with password auth"
    for i in range(33, 36):
        pool.start(start_sshd, f"{NET}.{i}", port=22, password_auth=False)
        truth[f"{NET}.{i}:22"] = "sshd keys only"
    for i in (40, 41):
        pool.start(start_etcd, f"{NET}.{i}", port=2379)
        truth[f"{NET}.{i}:2379"] = "etcd without client auth"
    pool.start(start_postgres, f"{NET}.50", port=5432, auth="trust")
    truth[f"{NET}.50:5432"] = "postgres trust"
    pool.start(start_postgres, f"{NET}.51", port=5432, auth="scram-sha-256")
    truth[f"{NET}.51:5432"] = "postgres scram"
    pool.start(start_podman_api, f"{NET}.60", port=2375)
    truth[f"{NET}.60:2375"] = "docker API (podman) without TLS"
    pool.start(start_jupyter, f"{NET}.70", port=8888, token="")
    truth[f"{NET}.70:8888"] = "jupyter without token"
    pool.start(start_jupyter, f"{NET}.71", port=8888)
    truth[f"{NET}.71:8888"] = "jupyter with token"
    pool.start(start_registry, f"{NET}.80", port=8080)
    truth[f"{NET}.80:8080"] = "docker registry"
    return truth


def run_cloudward(cidr: str, out: Path) -> tuple[float, float, dict[str, set[str]], dict[str, str]]:
    report = out / "cloudward.json"
    cli = str(ROOT / ".venv" / "bin" / "cloudward")
    m = measure([cli, "exposure", "scan", cidr, "-p", "teamtnt", "--format", "json", "-o", str(report),
                 "--no-store"])
    if m.returncode not in (0, 1):
        raise SystemExit(f"cloudward failed ({m.returncode}): {m.stderr[-2000:]}")
    doc = json.loads(report.read_text())
    exposures: dict[str, set[str]] = {}
    for f in doc["findings"]:
        exposures.setdefault(f["target"]["name"], set()).add(f["rule_id"])
    services = {i["endpoint"]: i["service"] for i in doc.get("inventory", [])}
    return m.seconds, m.peak_rss_mib, exposures, services


def run_nmap(cidr: str, out: Path) -> tuple[float, float, dict[str, set[str]], dict[str, str]]:
    xml = out / "nmap.xml"
    m = measure(["nmap", "-Pn", "-n", "-sT", "-sV", "-T4", "--script", "redis-info,ssh-auth-methods",
                 "-p", TEAMTNT_PORTS, cidr, "-oX", str(xml)])
    if m.returncode != 0:
        raise SystemExit(f"nmap failed ({m.returncode}): {m.stderr[-2000:]}")
    exposures: dict[str, set[str]] = {}
    services: dict[str, str] = {}
    for host in ET.parse(xml).getroot().iter("host"):
        addr = host.find("address").get("addr")
        for port in host.iter("port"):
            if port.find("state").get("state") != "open":
                continue
            endpoint = f"{addr}:{port.get('portid')}"
            svc = port.find("service")
            services[endpoint] = svc.get("name", "?") if svc is not None else "?"
            for script in port.iter("script"):
                output = script.get("output", "")
                if script.get("id") == "redis-info" and "Version" in output:
                    exposures.setdefault(endpoint, set()).add("redis.unauthenticated")
                if script.get("id") == "ssh-auth-methods" and "password" in output:
                    exposures.setdefault(endpoint, set()).add("ssh.password_authentication_enabled")
    return m.seconds, m.peak_rss_mib, exposures, services


def compare(truth: dict[str, str], cw: dict[str, set[str]], nm: dict[str, set[str]]) -> list[str]:
    rows = []
    for endpoint in sorted(set(truth) | set(cw) | set(nm)):
        a = ", ".join(sorted(cw.get(endpoint, ()))) or "-"
        b = ", ".join(sorted(nm.get(endpoint, ()))) or "-"
        rows.append(f"| {endpoint} | {truth.get(endpoint, '(not in the lab)')} | {a} | {b} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cidr", default="127.77.0.0/16")
    parser.add_argument("--no-nmap", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not args.cidr.startswith("127."):
        raise SystemExit("this benchmark only scans loopback (127.0.0.0/8)")
    out = Path(tempfile.mkdtemp(prefix="cloudward-bench-"))
    with ServicePool() as pool:
        truth = start_services(pool)
        print(f"lab: {len(truth)} services on {NET}.0/24; scanning {args.cidr}", file=sys.stderr)
        cw_s, cw_mem, cw_exp, cw_svc = run_cloudward(args.cidr, out)
        print(f"cloudward: {cw_s:.1f} s, {cw_mem:.0f} MiB, {sum(map(len, cw_exp.values()))} findings",
              file=sys.stderr)
        if args.no_nmap:
            return
        nm_s, nm_mem, nm_exp, nm_svc = run_nmap(args.cidr, out)
        print(f"nmap: {nm_s:.1f} s, {nm_mem:.0f} MiB", file=sys.stderr)
    shared = {"redis.unauthenticated", "ssh.password_authentication_enabled"}
    cw_shared = {(e, r) for e, rs in cw_exp.items() for r in rs if r in shared}
    nm_shared = {(e, r) for e, rs in nm_exp.items() for r in rs}
    missed_text = ", ".join(f"{e} {r}" for e, r in sorted(nm_shared - cw_shared)) or "none"
    lines = [
        f"## Exposure scan vs nmap ({today()})",
        "",
        f"Machine: {machine()}. `python benchmarks/exposure/run.py` (`make bench`).",
        "",
        f"Lab: {len(truth)} real services on {NET}.0/24 (well-known ports); both tools scan all of "
        f"`{args.cidr}` ({2 ** (32 - int(args.cidr.split('/')[1])):,} addresses) x the 14 `teamtnt` ports.",
        "nmap: `nmap -Pn -n -sT -sV -T4 --script redis-info,ssh-auth-methods -p <teamtnt> <cidr>`; "
        "cloudward: `cloudward exposure scan <cidr> -p teamtnt --format json --no-store`.",
        "",
        "| tool | wall clock | peak memory |",
        "|---|---:|---:|",
        f"| cloudward | {cw_s:.1f} s | {cw_mem:.0f} MiB |",
        f"| nmap 7.93 | {nm_s:.1f} s | {nm_mem:.0f} MiB |",
        f"| **ratio (nmap / cloudward)** | **{nm_s / cw_s:.1f}x** | |",
        "",
        f"Exposures both tools can report (unauthenticated Redis, SSH password auth): nmap {len(nm_shared)}, "
        f"cloudward {len(cw_shared)}; missed by cloudward: {missed_text}.",
        f"Open ports identified: nmap {len(nm_svc)}, cloudward {len(cw_svc)}.",
        "",
        "| endpoint | ground truth | cloudward findings | nmap (scripts) |",
        "|---|---|---|---|",
        *compare(truth, cw_exp, nm_exp),
        "",
        "cloudward's extra findings are exposures the nmap run has no script for (etcd, Docker API, "
        "PostgreSQL trust, Jupyter without token); each is a real, unauthenticated service in the lab.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("exposure", body)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
