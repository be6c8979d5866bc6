"""Port scans and sweeps (network/scans.py): real nmap scans on loopback, captured by tcpdump and
inspected, fire the scan rules; completed connections to as many ports, and scans below the
thresholds, do not. The detector's bounds and windows are checked directly."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.core.errors import RuleError
from cloudward.core.rules import parse_rule_documents
from cloudward.core.scan import ScanResult
from cloudward.network.inspect import InspectOptions, Totals, inspect_capture, prepare
from cloudward.network.scans import ScanDetector, builtin_rules, validate_rule
from tests.harness.services import free_port
from tests.network.capturing import capture_lo

ENGINE = prepare(InspectOptions())
QUIET = prepare(InspectOptions(scans=False))


def nmap(targets: list[str], ports: list[int]) -> None:
    """A TCP connect scan (what an unprivileged scanner does); no host discovery, no retries."""
    done = subprocess.run(["nmap", "-n", "-Pn", "-sT", "--max-retries", "0", "-T4",
                           "-p", ",".join(map(str, ports)), *targets], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def scan_findings(pcap: Path, engine=ENGINE) -> dict[str, list]:
    result, totals = ScanResult(kind="network_inspect"), Totals()
    inspect_capture(pcap, engine, result, totals)
    assert not result.errors
    out: dict[str, list] = {}
    for finding in result.findings:
        if finding.rule_id.startswith("network.scan."):
            out.setdefault(finding.rule_id, []).append(finding)
    return out


@pytest.fixture(scope="module")
def port_scan() -> Path:
    closed = [free_port() for _ in range(30)]  # nothing listens there: every attempt is refused
    with capture_lo(closed) as pcap:
        nmap(["127.0.0.1"], closed)
    return pcap


def test_a_port_scan_of_one_host_is_found(port_scan: Path):
    found = scan_findings(port_scan)
    assert list(found) == ["network.scan.port_scan"]
    (finding,) = found["network.scan.port_scan"]
    assert finding.location["source"] == "127.0.0.1" and finding.location["destination"] == "127.0.0.1"
    assert finding.evidence["failed_attempts"] == 20  # the threshold, reached once: one finding
    assert finding.attack == ["T1046", "T1595.001"] and "threat_map:reconnaissance" in finding.tags
    assert scan_findings(port_scan, QUIET) == {}  # --no-scans


def test_the_cli_reports_the_scan(port_scan: Path, tmp_path: Path):
    out = tmp_path / "report.json"
    done = CliRunner().invoke(app, ["network", "inspect", str(port_scan), "--format", "json", "--output", str(out),
                                    "--no-store"])
    assert done.exit_code == 0, done.output
    assert '"network.scan.port_scan"' in out.read_text()
    quiet = CliRunner().invoke(app, ["network", "inspect", str(port_scan), "--no-scans", "--format", "json",
                                     "--output", str(out), "--no-store"])
    assert quiet.exit_code == 0 and "network.scan." not in out.read_text()


def test_a_sweep_for_the_docker_api_port_is_found():
    hosts = [f"127.0.0.{i}" for i in range(2, 27)]  # 25 loopback addresses, none listening on 2375
    with capture_lo([2375]) as pcap:
        nmap(hosts, [2375])
    found = scan_findings(pcap)
    assert sorted(found) == ["network.scan.cloud_service_sweep", "network.scan.host_sweep"]
    (cloud,) = found["network.scan.cloud_service_sweep"]
    assert cloud.location["destination_port"] == 2375 and cloud.evidence["failed_attempts"] == 5
    assert cloud.severity.value == "high"
    (sweep,) = found["network.scan.host_sweep"]
    assert sweep.evidence["failed_attempts"] == 20 and len(sweep.evidence["hosts"]) == 12


@contextmanager
def listeners(count: int) -> Iterator[list[int]]:
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            server = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=8))
            ports.append(server.getsockname()[1])
        yield ports


def test_completed_connections_to_as_many_ports_are_not_a_scan():
    with listeners(30) as open_ports, capture_lo(open_ports) as pcap:
        for port in open_ports:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"hello\n")
    assert scan_findings(pcap) == {}


def test_scans_below_the_thresholds_are_not_reported():
    closed = [free_port() for _ in range(12)]
    hosts = [f"127.0.0.{i}" for i in range(30, 34)]  # 4 hosts: the Docker-port sweep needs 5
    with capture_lo([*closed, 2375]) as pcap:
        nmap(["127.0.0.1"], closed)
        nmap(hosts, [2375])
    assert scan_findings(pcap) == {}


# --- the detector itself ----------------------------------------------------------------------------------


def test_attempts_are_counted_in_the_window_they_started_in_even_when_they_end_late():
    detector = ScanDetector()
    for port in range(1, 20):  # the minute from 1200 s (port_scan's windows are fixed 60 s slices)
        detector.attempt("tcp", "10.0.0.9", "10.0.0.1", port, 1200.0 + port)
    detector.attempt("tcp", "10.0.0.9", "10.0.0.1", 99, 1270.0)  # the next window
    detector.attempt("tcp", "10.0.0.9", "10.0.0.1", 20, 1230.0)  # ended late, started in the first
    assert [a.rule.id for a in detector.alerts] == ["network.scan.port_scan"]
    assert detector.alerts[0].count == 20
    detector.attempt("tcp", "10.0.0.9", "10.0.0.1", 21, 1231.0)
    assert len(detector.alerts) == 1  # once per source and host


def test_each_rule_counts_in_windows_of_its_own_length():
    """25 ports, one every 15 s: never 20 in a minute (port_scan's window), though 20 in the 300 s the
    cloud-port sweep counts in; and 5 Docker-port hosts a minute apart do make that sweep."""
    detector = ScanDetector()
    for i in range(25):
        detector.attempt("tcp", "10.0.0.9", "10.0.0.1", 1000 + i, 3000.0 + 15 * i)
    assert detector.alerts == []
    for i in range(5):
        detector.attempt("tcp", "10.0.0.9", f"10.0.2.{i}", 2375, 3000.0 + 55 * i)
    assert [a.rule.id for a in detector.alerts] == ["network.scan.cloud_service_sweep"]


def test_udp_and_tcp_are_counted_apart_and_sources_apart():
    detector = ScanDetector()
    for port in range(1, 15):
        detector.attempt("tcp", "10.0.0.9", "10.0.0.1", port, 5.0)
        detector.attempt("udp", "10.0.0.9", "10.0.0.1", port, 5.0)
        detector.attempt("tcp", f"10.0.1.{port}", "10.0.0.1", port, 5.0)
    assert detector.alerts == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40), st.integers(1, 65535),
                          st.floats(0, 10_000, allow_nan=False)), max_size=400))
def test_memory_stays_bounded(attempts: list[tuple[int, int, int, float]]):
    detector = ScanDetector(max_sources=50, max_targets=30)
    for source, host, port, ts in attempts:
        detector.attempt("tcp", f"10.1.{source // 256}.{source % 256}", f"10.2.0.{host}", port, ts)
    assert len(detector._sources) <= 50
    for by_length in detector._sources.values():
        for windows in by_length.values():
            assert len(windows) <= 2 and all(w.size <= 30 for w in windows)
    keys = [(a.rule.id, a.source, a.host, a.port) for a in detector.alerts]
    assert len(keys) == len(set(keys))


def test_every_builtin_scan_rule_validates_and_bad_ones_are_refused():
    assert {r.id for r in builtin_rules()} == {"network.scan.port_scan", "network.scan.host_sweep",
                                                "network.scan.cloud_service_sweep"}
    base = ("id: network.scan.x\ntitle: a scan rule\nseverity: low\ncategory: network\n"
            "description: a test rule here\nremediation: nothing to do here\nmatch:\n  engine: scan\n")
    for body, message in [("  kind: diagonal\n  threshold: 3\n  window: 5\n", "match.kind"),
                          ("  kind: ports\n  threshold: 1\n  window: 5\n", "threshold"),
                          ("  kind: ports\n  threshold: 3\n  window: 0\n", "window"),
                          ("  kind: ports\n  threshold: 3\n  window: 5\n  ports: [22]\n", "only narrows"),
                          ("  kind: hosts\n  threshold: 3\n  window: 5\n  ports: [70000]\n", "port numbers"),
                          ("  kind: hosts\n  threshold: 3\n  window: 5\n  every: 2\n", "unknown keys")]:
        (rule,) = parse_rule_documents(base + body, "test")
        with pytest.raises(ValueError, match=message):
            validate_rule(rule)
    with pytest.raises(RuleError):
        parse_rule_documents("id: [", "test")


def test_a_live_scan_line_names_the_source_and_what_it_tried(capsys: pytest.CaptureFixture[str]):
    from cloudward.cli.network_inspect import _live_line
    from cloudward.core.finding import Target
    from cloudward.network.scans import scan_finding

    detector = ScanDetector()
    for port in range(1, 21):
        detector.attempt("tcp", "10.0.0.9", "10.0.0.1", port, 600.0 + port)
    _live_line(scan_finding(detector.alerts[0], Target(kind="interface", name="lo"), "live:lo"))
    line = capsys.readouterr().err
    assert "network.scan.port_scan" in line and "10.0.0.9 tried 20 TCP ports of 10.0.0.1" in line
    assert "None" not in line
