"""Suricata's `threshold` and `detection_filter`: parsed with clear errors, counted as Suricata
counts them — on a real capture of one client's repeated HTTP logins (each its own connection, so
per-flow de-duplication would have hidden them), and window by window on units built here."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from cloudward.core.scan import ScanResult
from cloudward.network.events import Direction, FlowKey, Inspectable
from cloudward.network.inspect import InspectOptions, Totals, inspect_capture, prepare
from cloudward.network.signatures import SignatureSet
from cloudward.network.suricata import RuleParser, RuleVars, Threshold
from tests.network.capturing import capture_lo, http_server

RULES = {
    9100001: "detection_filter: track by_src, count 5, seconds 60;",
    9100002: "threshold: type limit, track by_src, count 2, seconds 60;",
    9100003: "threshold: type both, track by_src, count 5, seconds 60;",
    9100004: "threshold: type threshold, track by_src, count 3, seconds 60;",
    9100005: "threshold: type limit, track by_dst, count 1, seconds 60;",
    9100006: "",  # no threshold: once per flow, so once per login here
}


def rules_text() -> str:
    return "\n".join(f'alert http any any -> any any (msg:"login {sid}"; http.uri; content:"/login"; {extra} '
                     f"sid:{sid}; rev:1;)" for sid, extra in RULES.items())


def logins(count: int, tmp_path: Path) -> dict[int, int]:
    """`count` logins, each on a new connection, captured and inspected: alerts per sid."""
    with http_server() as port, capture_lo([port]) as pcap:
        for i in range(count):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/login", body=f"user=admin&password=guess{i}")
            conn.getresponse().read()
            conn.close()
    rules = tmp_path / "login.rules"
    rules.write_text(rules_text())
    engine = prepare(InspectOptions(rule_files=[rules], builtin=False))
    result, totals = ScanResult(kind="network_inspect"), Totals()
    inspect_capture(pcap, engine, result, totals)
    assert not result.errors
    alerts = {sid: 0 for sid in RULES}
    for finding in result.findings:
        alerts[finding.evidence["sid"]] += 1
    return alerts


def test_a_burst_of_logins_crosses_the_thresholds(tmp_path: Path):
    assert logins(8, tmp_path) == {
        9100001: 3,  # the 6th, 7th and 8th match: beyond the first 5
        9100002: 2,  # at most 2 per window
        9100003: 1,  # once, at the 5th
        9100004: 2,  # every 3rd: the 3rd and the 6th
        9100005: 1,  # by_dst: every login went to the one server
        9100006: 8,  # per flow: one alert per connection
    }


def test_a_few_logins_stay_under_them(tmp_path: Path):
    assert logins(4, tmp_path) == {9100001: 0, 9100002: 2, 9100003: 0, 9100004: 1, 9100005: 1, 9100006: 4}


def unit(ts: float, src: str = "10.0.0.5") -> Inspectable:
    return Inspectable(FlowKey("tcp", src, 40000 + int(ts), "10.0.0.1", 80), Direction.TO_SERVER, ts, b"GET /login",
                       "http", {"http.uri": b"/login"}, True)


def matcher(option: str):
    parsed = RuleParser(RuleVars()).parse_text(
        f'alert tcp any any -> any any (msg:"x"; content:"/login"; {option} sid:1;)', "test")
    assert not parsed.problems, parsed.problems
    return SignatureSet(parsed.signatures).matcher()


def test_windows_restart_after_their_seconds():
    m = matcher("detection_filter: track by_src, count 2, seconds 10;")
    fired = [bool(m.match(unit(t))) for t in (0, 1, 2, 3, 20, 21, 22)]
    assert fired == [False, False, True, True, False, False, True]
    other = [bool(m.match(unit(t, src="10.0.0.6"))) for t in (3, 4, 5)]  # another source: its own count
    assert other == [False, False, True]


@pytest.mark.parametrize("option, message", [
    ("threshold: type limit, track by_src, count 1;", "needs count, seconds, track, type"),
    ("threshold: type sometimes, track by_src, count 1, seconds 5;", "unknown type"),
    ("threshold: type limit, track by_port, count 1, seconds 5;", "unknown track"),
    ("threshold: type limit, track by_src, count many, seconds 5;", "positive whole numbers"),
    ("threshold: type limit, track by_src, count 0, seconds 5;", "positive whole numbers"),
    ("detection_filter: type limit, track by_src, count 1, seconds 5;", "needs count, seconds, track"),
    ("threshold: type limit track by_src, count 1, seconds 5;", "name value"),
])
def test_broken_thresholds_are_errors_naming_the_keyword(option: str, message: str):
    parsed = RuleParser(RuleVars()).parse_text(
        f'alert tcp any any -> any any (msg:"x"; content:"a"; {option} sid:7;)', "t.rules")
    assert not parsed.signatures and len(parsed.problems) == 1
    assert message in parsed.problems[0].message and not parsed.problems[0].warning


def test_two_thresholds_on_one_rule_skip_it_with_a_warning():
    parsed = RuleParser(RuleVars()).parse_text(
        'alert tcp any any -> any any (msg:"x"; content:"a"; threshold: type limit, track by_src, count 1, '
        'seconds 5; detection_filter: track by_src, count 2, seconds 5; sid:7;)', "t.rules")
    assert not parsed.signatures and parsed.problems[0].warning


def test_parsed_threshold():
    parsed = RuleParser(RuleVars()).parse_text(
        'alert tcp any any -> any any (msg:"x"; content:"a"; threshold:type both,track by_both,count 4,seconds 30; '
        "sid:7;)", "t.rules")
    assert parsed.signatures[0].threshold == Threshold("both", "by_both", 4, 30.0)
