"""The scanner end to end (discovery -> identification -> rules), cancellation, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cloudward.core.config import ExposureSettings
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.exposure import scanner
from cloudward.exposure.scanner import _Scan, host_target, json_safe, scan, scan_async
from cloudward.exposure.targets import Host, parse_targets
from tests.exposure.hostile_servers import HostileServers, ToyProbe, toy_rule

SETTINGS = ExposureSettings(probe_timeout=1.0, connect_timeout=0.5)
CLOUDWARD = Path(sys.executable).parent / "cloudward"


@pytest.fixture(scope="module")
def servers():
    with HostileServers() as hs:
        yield hs


class RecordingProgress:
    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.advanced = 0
        self.descriptions: list[str] = []

    def advance(self, amount: int = 1) -> None:
        self.advanced += amount

    def total(self, total: int | None) -> None:
        self.totals.append(total)

    def describe(self, text: str) -> None:
        self.descriptions.append(text)


# --- the scanner -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_findings_inventory_and_stats(servers):
    _, toy_port = servers.start("toy")
    _, silent_port = servers.start("silent")
    progress = RecordingProgress()
    result = asyncio.run(scan_async(["127.0.0.1"], f"{toy_port},{silent_port}", SETTINGS, [toy_rule()],
                                    progress, probes=[ToyProbe()]))
    assert result.status is ScanStatus.COMPLETED and result.finished is not None
    assert result.targets == ["127.0.0.1"]
    [finding] = result.findings
    assert finding.rule_id == "toy.open" and finding.target.name == f"127.0.0.1:{toy_port}"
    assert finding.evidence == {"service": "toy", "tls": False, "version": "1.0"}
    services = {entry["endpoint"]: entry["service"] for entry in result.inventory}
    assert services == {f"127.0.0.1:{toy_port}": "toy", f"127.0.0.1:{silent_port}": "unknown"}
    stats = result.stats
    assert stats["hosts"] == 1 and stats["ports_probed"] == 2 and stats["open"] == 2
    assert stats["identified"] == 1 and stats["unidentified"] == 1 and stats["duration"] > 0
    assert stats["ports"] == ",".join(str(p) for p in sorted((toy_port, silent_port)))
    assert progress.advanced == 2 + 2 and progress.totals[-1] == 4  # probes + identifications
    json.dumps(result.contract("test"))


@pytest.mark.timeout(60)
def test_host_names_are_kept_for_display(servers):
    _, toy_port = servers.start("toy")
    targets = parse_targets(["toy.test"], resolve=lambda name: ["127.0.0.1"])
    result = scan(targets, [toy_port], SETTINGS, [toy_rule()], probes=[ToyProbe()])
    assert result.targets == ["toy.test", "127.0.0.1"]
    assert result.stats["resolved"] == {"toy.test": ["127.0.0.1"]}
    [entry] = result.inventory
    assert entry["name"] == "toy.test" and entry["facts"]["hostname"] == "toy.test"
    [finding] = result.findings
    assert finding.target.name == f"127.0.0.1:{toy_port}" and finding.location["hostname"] == "toy.test"


@pytest.mark.timeout(60)
def test_many_loopback_hosts_in_one_scan(servers):
    ports = [servers.start("toy", f"127.0.8.{i}")[1] for i in (1, 2, 3)]
    result = scan(["127.0.8.0/29"], ports, SETTINGS, [toy_rule()], probes=[ToyProbe()])
    found = sorted(f.target.name for f in result.findings)
    assert found == sorted(f"127.0.8.{i}:{p}" for i, p in zip((1, 2, 3), ports, strict=True))
    assert result.stats["hosts"] == 8 and result.stats["hosts_up"] == 3
    assert result.stats["ports_probed"] == 8 * 3


def test_tarpit_selection_prefers_hint_ports():
    result = ScanResult(kind="exposure")
    with_progress = RecordingProgress()
    state = _Scan(result, ExposureSettings(), [], [ToyProbe()], with_progress, max_open_per_host=3,
                  identify_concurrency=1, bind_info=None)
    assert state._select(Host("127.0.0.9"), [1, 2, 3]) == [1, 2, 3]
    assert state._select(Host("127.0.0.9"), [5, 9, 6379, 22, 40000]) == [22, 6379, 5]
    [error] = result.errors
    assert error.target == "127.0.0.9" and error.stage == "discovery"
    assert "answered on 5 ports" in error.message
    # Host-level errors are spelled as the prefix of the host's endpoints, IPv6 included.
    assert host_target("::1") == "[::1]" and host_target("127.0.0.9") == "127.0.0.9"


def test_json_safe_bounds_and_converts():
    value: Any = {"b": b"\x00ab", "f": float("nan"), "s": "x" * 10_000, "t": (1, {2}), 3: None}
    safe = json_safe(value)
    json.dumps(safe)
    assert safe["b"] == "\\x00ab" and safe["f"] == "nan" and len(safe["s"]) == 4099
    assert safe["t"] == [1, [2]] and safe["3"] is None
    deep: Any = []
    for _ in range(50):
        deep = [deep]
    json.dumps(json_safe(deep))


def test_a_scanner_bug_fails_the_scan_but_keeps_the_result(monkeypatch):
    def broken_discover(*args, **kwargs):
        raise RuntimeError("discovery exploded")

    monkeypatch.setattr(scanner, "discover", broken_discover)
    result = scan(["127.0.0.1"], [1], SETTINGS, [toy_rule()], probes=[ToyProbe()])
    assert result.status is ScanStatus.FAILED
    assert result.errors[-1].stage == "scan" and "discovery exploded" in result.errors[-1].message


# --- cancellation ------------------------------------------------------------------------------

# Long timeouts: the slow toy keeps identification busy for a minute unless the scan is cancelled.
SLOW = ExposureSettings(probe_timeout=20.0, connect_timeout=0.5)


async def _wait_for_finding(result: ScanResult, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not result.findings:
        assert loop.time() < deadline, "no finding arrived"
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
def test_cancellation_keeps_findings_and_marks_the_scan_cancelled(servers):
    _, fast = servers.start("toy")
    _, slow = servers.start("slow_toy")

    async def main() -> ScanResult:
        result = ScanResult(kind="exposure")
        task = asyncio.create_task(scan_async(["127.0.0.1"], [fast, slow], SLOW, [toy_rule()],
                                              probes=[ToyProbe()], result=result))
        await _wait_for_finding(result)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return result

    result = asyncio.run(main())
    assert result.status is ScanStatus.CANCELLED and result.finished is not None
    assert [f.target.name for f in result.findings] == [f"127.0.0.1:{fast}"]
    assert result.stats["open"] == 2


@pytest.mark.timeout(60)
def test_ctrl_c_returns_the_partial_result(servers):
    # A shell running us in the background ignores SIGINT; a user's terminal does not.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c(servers)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c(servers) -> None:
    _, fast = servers.start("toy")
    _, slow = servers.start("slow_toy")
    result = ScanResult(kind="exposure")

    def interrupt_after_first_finding() -> None:
        for _ in range(1000):
            if result.findings:
                break
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_finding, daemon=True).start()
    returned = scan(["127.0.0.1"], [fast, slow], SLOW, [toy_rule()], probes=[ToyProbe()], result=result)
    assert returned is result and result.status is ScanStatus.CANCELLED
    assert [f.target.name for f in result.findings] == [f"127.0.0.1:{fast}"]


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "CLOUDWARD_DB_URL": "",
            "CLOUDWARD_CONFIG": str(tmp_path / "no-such-cloudward.toml"), "COLUMNS": "200"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLOUDWARD), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(("args", "fragment"), [
    (["127.0.0.300"], "target '127.0.0.300'"),
    (["127.0.0.0/8"], "--allow-large-range"),
    (["127.0.0.1", "-p", "0"], "outside 1-65535"),
    (["127.0.0.1", "--timeout", "-1"], "--timeout"),
    (["127.0.0.1", "--format", "xml"], "unknown format"),
    (["127.0.0.1", "--fail-on", "severe"], "unknown severity"),
    (["-iL", "/no/such/list.txt"], "target list not found"),
    ([], "no targets"),
])
def test_usage_errors_exit_2_before_scanning(env, args, fragment):
    done = cli(env, "exposure", "scan", *args, "--no-store")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert fragment in done.stderr


def test_max_hosts_and_the_override(env):
    refused = cli(env, "exposure", "scan", "127.0.9.0/30", "--max-hosts", "2", "-p", "1", "--no-store",
                  "--format", "json")
    assert refused.returncode == 2 and "more than --max-hosts 2" in refused.stderr
    allowed = cli(env, "exposure", "scan", "127.0.9.0/30", "--max-hosts", "2", "--allow-large-range",
                  "-p", "1", "--no-store", "--format", "json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["scan"]["stats"]["ports_probed"] == 4


@pytest.mark.timeout(120)
def test_scan_a_real_redis_report_store_and_gate(env, tmp_path, redis_server):
    listing = tmp_path / "targets.txt"
    listing.write_text(f"# the lab\n{redis_server.host}\n")
    report = tmp_path / "out" / "scan.json"
    done = cli(env, "exposure", "scan", "-iL", str(listing), "-p", str(redis_server.port),
               "-o", str(report), "--fail-on", "high")
    assert done.returncode == 1, done.stderr
    document = json.loads(report.read_text())
    assert document["schema"] == "cloudward/v1" and document["scan"]["status"] == "completed"
    rules = {f["rule_id"] for f in document["findings"]}
    assert "redis.unauthenticated" in rules
    assert document["inventory"][0]["service"] == "redis"

    stored = cli(env, "findings", "list", "--format", "json")
    assert stored.returncode == 0, stored.stderr
    assert "redis.unauthenticated" in {f["rule_id"] for f in json.loads(stored.stdout)["findings"]}

    sarif = tmp_path / "scan.sarif"
    clean = cli(env, "exposure", "scan", redis_server.host, "-p", str(redis_server.port), "-o", str(sarif),
                "--no-store")
    assert clean.returncode == 0, clean.stderr  # findings, but no --fail-on
    assert json.loads(sarif.read_text())["version"] == "2.1.0"
