"""Hostile servers cost a scan bounded time and memory, land in `scan.errors` naming the target,
and never cost the findings of the well-behaved targets scanned alongside them.

Time is bounded by pytest-timeout as a hang guard, not by tight timing assertions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from cloudward.core.config import ExposureSettings
from cloudward.core.rules import Rule, load_rules
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.exposure.evaluate import validate_rule
from cloudward.exposure.identify import SNIPPET_CHARS
from cloudward.exposure.probes.base import Probe
from cloudward.exposure.scanner import scan, scan_async
from tests.exposure.hostile_servers import HostileServers, ToyProbe, toy_rule

# Short timeouts keep the suite quick; the bounds scale with them.
SETTINGS = ExposureSettings(probe_timeout=1.0, connect_timeout=0.5, concurrency=256)
TARPIT_HOST = "127.0.2.71"
TARPIT_PORTS = 2000
CONTROL_HOST = "127.0.2.72"


def real_probes() -> list[Probe]:
    """The registered probes, or none while they are still being written (the toy suffices)."""
    try:
        from cloudward.exposure.probes.registry import all_probes

        return list(all_probes())
    except ImportError:
        return []


def rules() -> list[Rule]:
    builtin = load_rules(["cloudward.exposure"], validators={"exposure": validate_rule})
    return [*builtin, toy_rule()]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServers]:
    with HostileServers() as servers:
        yield servers


def _errors(result: ScanResult, endpoint: str) -> list[str]:
    return [f"{e.stage}: {e.message}" for e in result.errors if e.target == endpoint]


@pytest.mark.timeout(90)
def test_each_hostile_server_is_bounded_reported_and_does_not_cost_other_findings(hostile, redis_server):
    ports = {name: hostile.start(name)[1]
             for name in ("silent", "endless", "garbage", "http_garbage", "half_http", "toy")}
    probes = [*real_probes(), ToyProbe()]
    scanned = [*ports.values(), redis_server.port]

    result = asyncio.run(scan_async(["127.0.0.1"], scanned, SETTINGS, rules(), probes=probes))

    assert result.status is ScanStatus.COMPLETED
    json.dumps(result.contract("test"))  # everything JSON-safe, hostile bytes included
    inventory = {entry["endpoint"]: entry for entry in result.inventory}
    at = {name: f"127.0.0.1:{port}" for name, port in ports.items()}

    silent = _errors(result, at["silent"])
    assert any("silent" in e and e.startswith("identify:") for e in silent), result.errors
    assert inventory[at["silent"]]["facts"]["silent"] is True

    endless = _errors(result, at["endless"])
    assert any("endless banner" in e for e in endless), result.errors
    banner = inventory[at["endless"]]["facts"]["banner"]
    assert len(banner) <= SNIPPET_CHARS + 3  # the fact is capped, not 16 KiB a chunk forever

    http_garbage = _errors(result, at["http_garbage"])
    assert any("malformed or cut off" in e for e in http_garbage), result.errors
    half = _errors(result, at["half_http"])
    assert any("malformed or cut off" in e for e in half), result.errors

    # Plain binary garbage is just an unknown service: inventory, escaped and bounded, no crash.
    garbage = inventory[at["garbage"]]
    assert garbage["service"] == "unknown"
    assert garbage["facts"]["reply"].isprintable() and len(garbage["facts"]["reply"]) <= SNIPPET_CHARS + 3

    # The well-behaved targets in the same scan still produce their findings.
    assert any(f.rule_id == "toy.open" and f.target.name == at["toy"] for f in result.findings)
    if any(p.name == "redis" for p in probes):
        redis_at = f"127.0.0.1:{redis_server.port}"
        assert any(f.rule_id == "redis.unauthenticated" and f.target.name == redis_at
                   for f in result.findings), result.findings
    # Errors name host:port, never a bare message without a target.
    assert all(e.target.startswith("127.0.0.1:") for e in result.errors)


@pytest.mark.timeout(120)
def test_host_answering_on_thousands_of_ports_is_capped(hostile):
    tarpit_ports = hostile.tarpit(TARPIT_HOST, TARPIT_PORTS)
    _, toy_port = hostile.start("toy", CONTROL_HOST)
    probes = [*real_probes(), ToyProbe()]

    result = scan([TARPIT_HOST, CONTROL_HOST], [*tarpit_ports, toy_port], SETTINGS, rules(), probes=probes)

    assert result.status is ScanStatus.COMPLETED
    tarpit_errors = [e for e in result.errors if e.target == TARPIT_HOST]
    assert len(tarpit_errors) == 1, result.errors[:5]
    message = tarpit_errors[0].message
    assert f"answered on {TARPIT_PORTS} ports" in message and "--max-open-per-host 256" in message
    identified_on_tarpit = [i for i in result.inventory if i["endpoint"].startswith(f"{TARPIT_HOST}:")]
    assert len(identified_on_tarpit) == 256
    assert result.stats["open"] == TARPIT_PORTS + 1
    assert any(f.rule_id == "toy.open" and f.target.name == f"{CONTROL_HOST}:{toy_port}"
               for f in result.findings)
