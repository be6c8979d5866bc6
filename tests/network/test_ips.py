"""`network ips` inline on a real NFQUEUE: in a network namespace the test creates (its own loopback,
nothing else), iptables sends the traffic of a real redis-server through cloudward. Normal commands
get their answers; the TeamTNT `CONFIG SET dir` never reaches the server (its `dir` is unchanged) and
is reported as dropped; with --alert-only the same command passes and is reported."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

CLOUDWARD = Path(sys.executable).parent / "cloudward"
PORT = 6379  # the namespace's own loopback: nothing else listens there


def in_ns(ns: str, *argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kwargs)


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """A namespace with lo up, redis-server on its 127.0.0.1:6379, and both directions of that port
    queued to an NFQUEUE number of its own (--queue-bypass: nothing waits before the IPS binds)."""
    ns = f"cw-ips-{secrets.token_hex(4)}"
    queue = 1000 + secrets.randbelow(60000)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    redis = None
    try:
        in_ns(ns, "ip", "link", "set", "lo", "up", check=True)
        for direction in ("--dport", "--sport"):
            in_ns(ns, "iptables", "-A", "INPUT", "-p", "tcp", direction, str(PORT), "-j", "NFQUEUE",
                  "--queue-num", str(queue), "--queue-bypass", check=True)
        data = tmp_path / "redis"
        data.mkdir()
        redis = subprocess.Popen(["ip", "netns", "exec", ns, "redis-server", "--port", str(PORT), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(data),
                                  "--enable-protected-configs", "yes"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while in_ns(ns, "redis-cli", "-p", str(PORT), "PING").stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start in the namespace"
            time.sleep(0.05)
        yield ns, queue, data
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def start_ips(ns: str, queue: int, report: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(report.parent / "data")}
    process = subprocess.Popen(["ip", "netns", "exec", ns, str(CLOUDWARD), "network", "ips", "--queue", str(queue),
                                "--no-store", "--format", "json", "--output", str(report), *extra],
                               stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    for line in process.stderr:  # judging from here on: the queue is bound
        if line.startswith("ips: judging"):
            process.lines = []  # type: ignore[attr-defined]
            threading.Thread(target=_drain, args=(process,), daemon=True).start()  # keep the pipe flowing
            return process
    raise AssertionError(f"the IPS did not start (exit {process.wait(10)})")


def _drain(process: subprocess.Popen[str]) -> None:
    process.lines.extend(process.stderr or [])  # type: ignore[attr-defined]


def stop_ips(process: subprocess.Popen[str], report: Path) -> dict:
    process.send_signal(signal.SIGTERM)
    code = process.wait(30)
    time.sleep(0.2)
    assert code == 0, "".join(process.lines)  # type: ignore[attr-defined]
    return json.loads(report.read_text())


def redis_cli(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    """redis-cli in the namespace; a command whose packets are dropped hangs, so it is cut at 4 s."""
    return in_ns(ns, "timeout", "4", "redis-cli", "-p", str(PORT), *args)


def test_the_attack_is_dropped_and_normal_commands_pass(namespace: tuple[str, int, Path], tmp_path: Path):
    ns, queue, data = namespace
    report = tmp_path / "ips.json"
    ips = start_ips(ns, queue, report)
    try:
        assert redis_cli(ns, "SET", "k", "v").stdout.strip() == "OK"
        assert redis_cli(ns, "GET", "k").stdout.strip() == "v"
        attack = redis_cli(ns, "CONFIG", "SET", "dir", "/root/.ssh")
        assert attack.returncode == 124 and "OK" not in attack.stdout  # never answered: its packet was dropped
        assert redis_cli(ns, "GET", "k").stdout.strip() == "v"  # a new connection is judged afresh
    finally:
        result = stop_ips(ips, report)
    assert in_ns(ns, "redis-cli", "-p", str(PORT), "CONFIG", "GET", "dir").stdout.split() == ["dir", str(data)]
    dropped = [f for f in result["findings"] if f["rule_id"].startswith("network.sig.redis_config_set_dir")]
    assert dropped and all(f["evidence"]["ips"].startswith("dropped") for f in dropped)
    assert result["scan"]["stats"]["ips"]["dropped"] >= 1 and result["scan"]["stats"]["ips"]["dropped_flows"] == 1
    assert not [f for f in result["findings"] if f["rule_id"] not in {d["rule_id"] for d in dropped}]


def test_alert_only_lets_the_attack_through_and_reports_it(namespace: tuple[str, int, Path], tmp_path: Path):
    ns, queue, data = namespace
    target = data / "elsewhere"
    target.mkdir()
    report = tmp_path / "ips.json"
    ips = start_ips(ns, queue, report, "--alert-only")
    try:
        assert redis_cli(ns, "CONFIG", "SET", "dir", str(target)).stdout.strip() == "OK"
    finally:
        result = stop_ips(ips, report)
    assert in_ns(ns, "redis-cli", "-p", str(PORT), "CONFIG", "GET", "dir").stdout.split() == ["dir", str(target)]
    alerted = [f for f in result["findings"] if f["rule_id"] == "network.sig.redis_config_set_dir"]
    assert alerted and alerted[0]["evidence"]["ips"] == "alerted (passed)"
    assert result["scan"]["stats"]["ips"]["dropped"] == 0


def test_without_the_capability_it_says_so():
    """A queue nobody may bind (a user without CAP_NET_ADMIN): a usage error naming the queue."""
    done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all",
                           str(CLOUDWARD), "network", "ips", "--queue", "7", "--no-store"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CLOUDWARD_DATA_DIR": "/nonexistent/data", "HOME": "/nonexistent",
                               "CLOUDWARD_CONFIG": "/nonexistent/cloudward.toml"})
    assert done.returncode == 2 and "--queue 7: cannot bind the queue" in done.stderr, done.stderr
