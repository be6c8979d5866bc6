"""Every built-in signature against real loopback traffic: a capture that fires it, and a close
look-alike in the same capture that must not.

One capture serves every rule (signature_traffic.py): redis-cli sending the takeover sequence to a
real redis-server, httpx and the docker CLI talking to podman's Docker API, curl against a kubelet
and metadata stand-in, a stratum client at a listener on the pool port 3333, IRC registrations,
DNS queries and TLS ClientHellos. Scenarios are told apart by their own loopback addresses.
The shipped actor addresses cannot be reached from a test (traffic stays on 127.0.0.0/8), so the
address rule is proven with an IOC file naming a scenario address, which goes through the same
generation as the shipped ones (their own rules are checked on hand-made units in
test_signatures.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.core.scan import ScanResult
from cloudward.network.inspect import InspectOptions, Totals, inspect_capture, prepare
from cloudward.network.rulesets import builtin_sources
from cloudward.network.suricata import RuleParser
from tests.harness.services import LOOPBACK, Service, free_port
from tests.network import signature_traffic as traffic
from tests.network.capturing import capture_lo, dns_server, http_server, tls_server

pytestmark = pytest.mark.services

IOC_ADDRESS = "127.77.10.1"

# label -> (the attack scenario that must fire it, a close look-alike that must not).
# Labels: the sid of a hand-written rule; `rule_id:buffer` or `rule_id` for generated ones.
EXPECTED: dict[int | str, tuple[str, str]] = {
    1900001: ("127.77.1.1", "127.78.1.1"),
    1900002: ("127.77.1.1", "127.77.1.2"),
    1900003: ("127.77.1.3", "127.78.1.3"),
    1900004: ("127.77.1.4", "127.78.1.4"),
    1900005: ("127.77.1.5", "127.78.1.5"),
    1900006: ("127.77.1.6", "127.78.1.6"),
    1900007: ("127.77.1.7", "127.78.1.7"),
    1900008: ("127.77.1.8", "127.78.1.8"),
    1900010: ("127.77.2.1", "127.78.2.1"),
    1900011: ("127.77.2.3", "127.78.2.1"),
    1900012: ("127.77.2.4", "127.78.2.4"),
    1900013: ("127.77.2.5", "127.78.2.5"),
    1900014: ("127.77.2.6", "127.78.2.6"),
    1900020: ("127.77.3.1", "127.78.3.1"),
    1900021: ("127.77.3.2", "127.78.3.2"),
    1900030: ("127.77.4.1", "127.78.4.1"),
    1900031: ("127.77.4.1", "127.77.4.2"),
    1900032: ("127.77.4.3", "127.78.4.3"),
    1900040: ("127.77.5.1", "127.78.5.2"),
    1900041: ("127.77.5.2", "127.78.5.2"),
    1900042: ("127.77.5.2", "127.78.5.2"),
    1900060: ("127.77.6.1", "127.78.6.1"),
    1900061: ("127.77.6.1", "127.78.6.1"),
    1900062: ("127.77.6.2", "127.78.6.2"),
    1900063: ("127.77.6.3", "127.78.6.3"),
    1900070: ("127.77.6.4", "127.78.6.4"),
    1900071: ("127.77.6.5", "127.78.6.4"),
    1900080: ("127.77.7.1", "127.78.7.3"),
    1900081: ("127.77.7.2", "127.78.7.1"),
    1900082: ("127.77.6.6", "127.78.6.6"),
    1900083: ("127.77.6.7", "127.78.6.6"),
    1900084: ("127.77.8.1", "127.78.8.1"),
    1900085: ("127.77.8.2", "127.78.8.1"),
    1900090: ("127.77.7.3", "127.78.7.1"),
    1900091: ("127.77.8.3", "127.78.8.1"),
    1900100: ("127.77.9.2", "127.77.9.1"),
    1900101: ("127.77.9.1", "127.77.9.2"),
    "network.sig.pool_port": ("127.77.5.1", "127.77.5.3"),
    "network.sig.pool_domain:dns.query": ("127.77.7.5", "127.78.7.4"),
    "network.sig.pool_domain:tls.sni": ("127.77.8.5", "127.78.8.1"),
    "network.sig.ioc_domain:dns.query": ("127.77.7.4", "127.78.7.2"),
    "network.sig.ioc_domain:tls.sni": ("127.77.8.4", "127.78.8.1"),
    "network.sig.ioc_domain:http.host": ("127.77.6.1", "127.78.6.1"),
    "network.sig.ioc_address": (IOC_ADDRESS, "127.78.10.1"),
}
DOCKER_CLI = "127.77.2.2"  # `docker create --privileged -v /:/host --pid host`


def _scenario(location: dict[str, object]) -> str | None:
    for end in ("src", "dst"):
        value = str(location.get(end, ""))
        if value.startswith((traffic.ATTACK + ".", traffic.BENIGN + ".")):
            return value
    return None


def _label(finding) -> int | str:
    sid = finding.evidence["sid"]
    if sid < 1_901_000:
        return sid
    if finding.rule_id in ("network.sig.ioc_domain", "network.sig.pool_domain"):
        return f"{finding.rule_id}:{finding.evidence['buffer']}"
    return finding.rule_id


@pytest.fixture(scope="module")
def ioc_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iocs") / "iocs.yaml"
    path.write_text("indicators:\n"
                    f"  - {{kind: ip, value: {IOC_ADDRESS}, source: 'test: a scenario address', date: '2026-01-01'}}\n")
    return path


@pytest.fixture(scope="module")
def capture(podman_api: Service, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one capture of every scenario (real traffic on lo, written by tcpdump)."""
    out = tmp_path_factory.mktemp("capture") / "signatures.pcap"
    redis_port, relay_port, stratum_port, irc_port = (free_port() for _ in range(4))
    redis = traffic.start_scenario_redis(redis_port)
    try:
        pool_reply = b'{"id":1,"result":{"status":"OK"}}\n'
        with http_server() as web_port, dns_server() as dns_port, tls_server() as tls_port, \
                traffic.line_listener(traffic.address(traffic.ATTACK, 5, 1), 3333, pool_reply), \
                traffic.line_listener(LOOPBACK, stratum_port, pool_reply), \
                traffic.line_listener(traffic.address(traffic.ATTACK, 9, 1), 6667, b":irc.local 001 x :Welcome\r\n"), \
                traffic.line_listener(LOOPBACK, irc_port, b":irc.local 001 x :Welcome\r\n"), \
                traffic.relay(DOCKER_CLI, relay_port, (podman_api.host, podman_api.port)):
            ports = [redis_port, relay_port, stratum_port, irc_port, web_port, dns_port, tls_port, 3333, 6667,
                     podman_api.port]
            with capture_lo(ports, out):
                traffic.redis_traffic(redis_port)
                traffic.docker_traffic(podman_api.url or "", relay_port)
                traffic.web_traffic(web_port)
                traffic.stratum_traffic(3333, stratum_port)
                traffic.irc_traffic(6667, irc_port)
                traffic.dns_traffic(dns_port)
                traffic.tls_traffic(tls_port)
    finally:
        redis.stop()
    return out


@pytest.fixture(scope="module")
def inspected(capture: Path, ioc_file: Path) -> tuple[ScanResult, Totals]:
    engine = prepare(InspectOptions(ioc_files=[ioc_file]))
    result = ScanResult(kind="network_inspect")
    totals = Totals()
    inspect_capture(capture, engine, result, totals)
    return result, totals


@pytest.fixture(scope="module")
def fired(inspected: tuple[ScanResult, Totals]) -> dict[str, set[int | str]]:
    by_scenario: dict[str, set[int | str]] = defaultdict(set)
    for finding in inspected[0].findings:
        scenario = _scenario(finding.location)
        if scenario is not None:
            by_scenario[scenario].add(_label(finding))
    return by_scenario


def test_every_builtin_signature_has_an_attack_and_a_look_alike() -> None:
    parser = RuleParser()
    sids = {s.sid for source, text, _ in builtin_sources() for s in parser.parse_text(text, source).signatures}
    assert sids == {label for label in EXPECTED if isinstance(label, int)}
    generated = {"network.sig.pool_port", "network.sig.pool_domain", "network.sig.ioc_domain",
                 "network.sig.ioc_address"}
    assert generated == {str(label).split(":")[0] for label in EXPECTED if isinstance(label, str)}


@pytest.mark.parametrize("label", list(EXPECTED), ids=str)
def test_signature_fires_on_its_attack_and_not_on_its_look_alike(label: int | str,
                                                                 fired: dict[str, set[int | str]]) -> None:
    attack, look_alike = EXPECTED[label]
    assert label in fired[attack], f"{label} did not fire on {attack}: {sorted(map(str, fired[attack]))}"
    assert label not in fired[look_alike], f"{label} fired on the look-alike {look_alike}"


def test_benign_traffic_fires_nothing(inspected: tuple[ScanResult, Totals]) -> None:
    benign = [(f.rule_id, f.location) for f in inspected[0].findings
              if (_scenario(f.location) or "").startswith(traffic.BENIGN + ".")]
    assert benign == []
    scenarios = {_scenario(f.location) for f in inspected[0].findings}
    assert None not in scenarios  # nothing fired on traffic outside the scenarios


def test_docker_cli_create_privileged_host_root_pid_host(fired: dict[str, set[int | str]]) -> None:
    assert {1900010, 1900011, 1900012} <= fired[DOCKER_CLI]


def test_a_finding_is_located_at_its_flow(inspected: tuple[ScanResult, Totals], capture: Path) -> None:
    result, totals = inspected
    assert not result.errors
    assert totals.packets > 100 and totals.flows > 40 and totals.alerts == len(result.findings)
    finding = next(f for f in result.findings if f.evidence["sid"] == 1900002)
    assert finding.target.kind == "path" and finding.target.name == str(capture)
    location = finding.location
    assert location["proto"] == "tcp" and location["dst"] == "127.77.1.1" and location["direction"] == "to_server"
    assert location["packet"] > 0 and location["time"].startswith("20")
    assert finding.severity.value == "critical" and finding.attack == ["T1190", "T1053.003", "T1098.004"]
    assert finding.evidence["buffer"] == "redis.command" and "/root/.ssh/" in finding.evidence["match"]
    assert "SSH" in finding.description and finding.remediation
    # one finding per rule per flow: the fingerprint is stable and distinct per flow
    assert len({f.fingerprint for f in result.findings}) == len(result.findings)


def test_an_ioc_finding_names_its_indicator(inspected: tuple[ScanResult, Totals]) -> None:
    finding = next(f for f in inspected[0].findings if f.rule_id == "network.sig.ioc_domain"
                   and f.evidence["buffer"] == "dns.query")
    assert finding.evidence["indicator"]["value"] == "teamtnt.red"
    assert finding.evidence["indicator"]["source"] and finding.evidence["indicator"]["date"]


def test_cli_inspect_json_and_gate(capture: Path, ioc_file: Path, tmp_path: Path,
                                   inspected: tuple[ScanResult, Totals]) -> None:
    env = {"CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    runner = CliRunner()
    done = runner.invoke(app, ["network", "inspect", str(capture), "--iocs", str(ioc_file), "-f", "json",
                               "--no-store"], env=env)
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["schema"] == "cloudward/v1" and report["scan"]["kind"] == "network_inspect"
    assert len(report["findings"]) == len(inspected[0].findings)
    stats = report["scan"]["stats"]
    assert stats["rules"]["builtin"] > 100 and stats["packets"] == inspected[1].packets
    assert stats["dedup"] == "one alert per rule per flow"
    gated = runner.invoke(app, ["network", "inspect", str(capture), "-f", "sarif", "--fail-on", "critical",
                                "--no-store"], env=env)
    assert gated.exit_code == 1
    assert json.loads(gated.stdout)["version"] == "2.1.0"


def test_cli_inspect_unreadable_capture_fails(tmp_path: Path) -> None:
    bogus = tmp_path / "not.pcap"
    bogus.write_bytes(b"this is not a capture")
    done = CliRunner().invoke(app, ["network", "inspect", str(bogus), "-f", "json", "--no-store"],
                              env={"CLOUDWARD_DATA_DIR": str(tmp_path / "data")})
    assert done.exit_code == 3
    report = json.loads(done.stdout)
    assert report["scan"]["status"] == "failed"
    assert "not a pcap or pcapng file" in report["scan"]["errors"][0]["message"]


def test_monitor_sees_live_traffic(tmp_path: Path) -> None:
    """`network monitor -i lo` (AF_PACKET) alerts on a Redis attack sent while it listens."""
    port = free_port()
    redis = traffic.start_scenario_redis(port)
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    monitor = subprocess.Popen([str(Path(sys.executable).parent / "cloudward"), "network", "monitor", "-i", "lo",
                                "--duration", "4", "-f", "json", "--no-store"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    try:
        assert monitor.stderr is not None
        line = monitor.stderr.readline()  # printed once the capture socket is open: nothing sent after is missed
        assert b"monitoring lo" in line, line
        traffic.redis_cli(traffic.address(traffic.ATTACK, 1, 6), port, "MODULE", "LOAD", "/tmp/cloudward-live.so")
        out, err = monitor.communicate(timeout=30)
    finally:
        if monitor.poll() is None:
            monitor.kill()
        redis.stop()
    assert monitor.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["scan"]["kind"] == "network_monitor"
    hits = [f for f in report["findings"] if f["rule_id"] == "network.sig.redis_module_load"
            and f["location"]["dport"] == port]
    assert hits and hits[0]["target"] == {"kind": "interface", "name": "lo"}
    assert b"network.sig.redis_module_load" in err  # printed live on stderr too


# --------------------------------------------------------------------------- user rule files (hostile ones too)

USER_RULES = """\
alert redis any any -> any any (msg:"user: any CONFIG command"; redis.command; content:"CONFIG "; startswith; \\
  classtype:misc-activity; sid:5000001; rev:1;)
alert tcp any any -> any any (msg:"user: needs flowbits"; flowbits:isset,x; content:"CONFIG"; sid:5000002;)
alert tcp any any -> any any (msg:"user: broken; content:"x"; sid:5000003;)
alert tcp any any -> any any (msg:"user: takes a built-in sid"; content:"x"; sid:1900001;)
"""


def test_inspect_with_a_broken_user_file_loads_the_rest(capture: Path, tmp_path: Path) -> None:
    rules = tmp_path / "local.rules"
    rules.write_text(USER_RULES)
    done = CliRunner().invoke(app, ["network", "inspect", str(capture), "--rules", str(rules), "-f", "json",
                                    "--no-store"], env={"CLOUDWARD_DATA_DIR": str(tmp_path / "data")})
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    errors = {e["target"]: e["message"] for e in report["scan"]["errors"] if e["stage"] == "rules"}
    assert set(errors) == {f"{rules}:3", f"{rules}:4", f"{rules}:5"}
    assert errors[f"{rules}:3"] == "warning: unsupported keyword 'flowbits'"
    assert errors[f"{rules}:4"] == ("error: msg value '\"user: broken' is not a closed quoted string (a ';' inside "
                                    "a string must be written \\;)")
    assert errors[f"{rules}:5"].startswith("error: sid 1900001 is already used by the built-in rule at "
                                           "builtin:signatures/teamtnt.rules:")
    user = [f for f in report["findings"] if f["rule_id"] == "suricata.sid_5000001"]
    assert user and user[0]["severity"] == "low" and "user_rule" in user[0]["tags"]
    assert f"{rules}:3: warning: unsupported keyword 'flowbits'" in done.stderr
    assert report["scan"]["stats"]["rules"]["user"] == 1


def test_rules_check_and_load(tmp_path: Path, capture: Path) -> None:
    env = {"CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    runner = CliRunner()
    broken = tmp_path / "broken.rules"
    broken.write_text(USER_RULES)
    checked = runner.invoke(app, ["network", "rules", "check", str(broken)], env=env)
    assert checked.exit_code == 2
    assert f"{broken}:4: error" in checked.stderr
    assert "1 rules load, 1 skipped as unsupported, 2 broken" in checked.stderr
    refused = runner.invoke(app, ["network", "rules", "load", str(broken)], env=env)
    assert refused.exit_code == 2 and "nothing installed" in refused.stderr
    good = tmp_path / "good.rules"
    good.write_text(USER_RULES.split("alert tcp", 1)[0] + USER_RULES.splitlines(keepends=True)[2])
    assert runner.invoke(app, ["network", "rules", "check", str(good)], env=env).exit_code == 0
    assert runner.invoke(app, ["network", "rules", "check", "--strict", str(good)], env=env).exit_code == 2
    loaded = runner.invoke(app, ["network", "rules", "load", str(good)], env=env)
    assert loaded.exit_code == 0, loaded.output
    listed = runner.invoke(app, ["network", "rules", "load", "--list"], env=env)
    assert listed.stdout.strip() == str(tmp_path / "data" / "network" / "rules" / "good.rules")
    inspected = runner.invoke(app, ["network", "inspect", str(capture), "-f", "json", "--no-store"], env=env)
    assert any(f["rule_id"] == "suricata.sid_5000001" for f in json.loads(inspected.stdout)["findings"])
    assert runner.invoke(app, ["network", "rules", "load", "--remove", "good.rules"], env=env).exit_code == 0
    assert runner.invoke(app, ["network", "rules", "load", "--list"], env=env).stdout.strip() == ""
    assert runner.invoke(app, ["network", "rules", "check", "--builtin"], env=env).exit_code == 0
