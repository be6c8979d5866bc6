"""Scanning bursts: many failed connection attempts from one source, counted per window.

Why on flows and not on packets: a content signature sees one packet or message at a time, and a
scan is only visible as a pattern across thousands of tiny flows. The flow table already knows, for
every conversation it forgets, whether the client's SYN was answered; so the detector is told once
per flow, when the flow ends (`ScanDetector.flow_ended`), and counts the attempts that failed — a
TCP SYN never answered by a SYN-ACK (refused with a reset or dropped), a UDP flow the other side
never answered. Completed connections never count: a browser opening fifty HTTPS connections or an
application's connection pool stays quiet, where a scanner knocking on closed doors does not.

What is counted, per source address within fixed windows of capture time (rules/scans.yaml): the
distinct ports tried on one host (`ports`: a port scan) and the distinct hosts tried on one port
(`hosts`: a sweep, optionally only of listed ports, e.g. Docker's 2375 and the kubelet's 10250).
Flows end out of order (a refused attempt is forgotten seconds after an unanswered one that came
first), so counts are kept per window the attempt *started* in: the last two windows of each source,
for each window length the rules use (each rule counts in windows of its own `window`).

Memory is bounded whatever the traffic: at most `max_sources` sources are tracked (the one seen
least recently goes first, counted in `evicted`), and per source and window at most
`max_targets` distinct (host, port) attempts are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from cloudward.core.finding import Finding, Target
from cloudward.core.rules import Rule, packaged_engine_rules
from cloudward.core.severity import Category

if TYPE_CHECKING:
    from cloudward.network.flows import Flow

__all__ = ["ScanAlert", "ScanDetector", "builtin_rules", "scan_finding", "validate_rule"]

RULES_FILE = "scans.yaml"
_KINDS = ("ports", "hosts")
_SAMPLE = 12  # targets named in a finding


def validate_rule(rule: Rule) -> None:
    """A scan rule's match block: kind, threshold (2..65536), window seconds, optional ports."""
    match = rule.match
    if match.get("kind") not in _KINDS:
        raise ValueError(f"match.kind must be one of {', '.join(_KINDS)}")
    threshold = match.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 2 <= threshold <= 65536:
        raise ValueError("match.threshold must be a whole number from 2 to 65536")
    window = match.get("window")
    if not isinstance(window, int | float) or isinstance(window, bool) or not 1 <= window <= 86400:
        raise ValueError("match.window must be seconds, from 1 to 86400")
    ports = match.get("ports", [])
    if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise ValueError("match.ports must be a list of port numbers")
    if ports and match["kind"] != "hosts":
        raise ValueError("match.ports only narrows a `hosts` rule")
    unknown = set(match) - {"engine", "kind", "threshold", "window", "ports"}
    if unknown:
        raise ValueError(f"match: unknown keys {', '.join(sorted(unknown))}")


@cache
def builtin_rules() -> tuple[Rule, ...]:
    return packaged_engine_rules("cloudward.network", RULES_FILE, "scan", validate_rule)


@dataclass(frozen=True, slots=True)
class ScanAlert:
    rule: Rule
    source: str  # the scanning address
    proto: str  # tcp | udp
    host: str | None  # the scanned host (`ports` rules)
    port: int | None  # the swept port (`hosts` rules)
    count: int  # distinct ports (or hosts) when the threshold was reached
    first: float  # capture time of the window's first failed attempt of this source
    last: float  # ... of the attempt that reached the threshold
    sample: tuple[str, ...]  # some of the ports or hosts tried


@dataclass(slots=True)
class _Window:
    start: float
    first: float
    ports: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # (proto, host) -> ports
    hosts: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # (proto, port) -> hosts
    size: int = 0

    def add(self, proto: str, host: str, port: int, ts: float, max_targets: int) -> bool:
        """Count one attempt; False when it adds nothing (seen before, or the window is full)."""
        if self.size >= max_targets:
            return False
        self.first = min(self.first, ts)
        ports = self.ports.setdefault((proto, host), set())
        if port in ports:
            return False
        ports.add(port)
        self.hosts.setdefault((proto, port), set()).add(host)
        self.size += 1
        return True


class ScanDetector:
    """Counts failed attempts per source; `alerts` collects what crossed a rule's threshold (the
    caller drains it). One alert per rule, source and scanned host or port for the whole run."""

    def __init__(self, rules: tuple[Rule, ...] | None = None, *, max_sources: int = 65536,
                 max_targets: int = 4096) -> None:
        self.rules = builtin_rules() if rules is None else rules
        self._by_length: dict[float, list[Rule]] = {}
        for rule in self.rules:
            self._by_length.setdefault(float(rule.match["window"]), []).append(rule)
        self.max_sources = max_sources
        self.max_targets = max_targets
        self.alerts: list[ScanAlert] = []
        self.attempts = 0  # failed attempts counted
        self.evicted = 0  # sources forgotten to stay within max_sources
        self._sources: OrderedDict[str, dict[float, list[_Window]]] = OrderedDict()  # source -> length -> windows
        self._alerted: set[tuple[str, str, str, object]] = set()
        self._sweep_ports = {r.id: frozenset(r.match.get("ports", [])) for r in self.rules}

    def flow_ended(self, flow: Flow) -> None:
        """The flow table forgets `flow`: count it if it was an attempt that failed."""
        key = flow.key
        if key.proto == "tcp":
            if not flow.syn or flow.synack:
                return
        elif key.proto != "udp" or flow.replied:
            return
        self.attempt(key.proto, key.src, key.dst, key.dport, flow.first)

    def attempt(self, proto: str, source: str, host: str, port: int, ts: float) -> None:
        self.attempts += 1
        by_length = self._sources.get(source)
        if by_length is None:
            if len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
                self.evicted += 1
            by_length = self._sources[source] = {}
        else:
            self._sources.move_to_end(source)
        for length, rules in self._by_length.items():  # each rule counts in windows of its own length
            window = self._window(by_length.setdefault(length, []), length, ts)
            if window is not None and window.add(proto, host, port, ts, self.max_targets):
                self._judge(rules, window, proto, source, host, port, ts)

    @staticmethod
    def _window(windows: list[_Window], length: float, ts: float) -> _Window | None:
        """The window `ts` falls in, among the last two kept (None: older than both)."""
        start = ts - ts % length
        for window in windows:
            if window.start == start:
                return window
        if windows and start < min(w.start for w in windows):
            return None  # too late to count
        window = _Window(start, ts)
        windows.append(window)
        windows.sort(key=lambda w: w.start)
        del windows[:-2]
        return window

    def _judge(self, rules: list[Rule], window: _Window, proto: str, source: str, host: str, port: int,
               ts: float) -> None:
        for rule in rules:
            kind = rule.match["kind"]
            seen: set[int] | set[str]
            target: str | int
            if kind == "ports":
                seen, target = window.ports[(proto, host)], host
            else:
                allowed = self._sweep_ports[rule.id]
                if allowed and port not in allowed:
                    continue
                seen, target = window.hosts[(proto, port)], port
            if len(seen) < rule.match["threshold"] or (rule.id, source, proto, target) in self._alerted:
                continue
            self._alerted.add((rule.id, source, proto, target))
            sample = tuple(sorted(str(s) for s in seen)[:_SAMPLE])
            self.alerts.append(ScanAlert(rule, source, proto, host if kind == "ports" else None,
                                         port if kind == "hosts" else None, len(seen), window.first, ts, sample))


def scan_finding(alert: ScanAlert, target: Target, capture: str) -> Finding:
    rule = alert.rule
    window = rule.match["window"]
    if alert.host is not None:
        what = f"{alert.count} {alert.proto.upper()} ports of {alert.host}"
        key = f"{alert.source}|{alert.proto}|host:{alert.host}"
    else:
        what = f"{alert.proto.upper()} port {alert.port} on {alert.count} hosts"
        key = f"{alert.source}|{alert.proto}|port:{alert.port}"
    location: dict[str, Any] = {"source": alert.source, "protocol": alert.proto, "capture": capture,
                                "time": _iso(alert.first)}
    if alert.host is not None:
        location["destination"] = alert.host
    else:
        location["destination_port"] = alert.port
    evidence: dict[str, Any] = {
        "scan": f"{alert.source} tried {what} without an answer",
        "failed_attempts": alert.count, "threshold": rule.match["threshold"], "window_seconds": window,
        "first": _iso(alert.first), "reached": _iso(alert.last),
        ("ports" if alert.host is not None else "hosts"): list(alert.sample),
    }
    return Finding(rule_id=rule.id, title=rule.title, severity=rule.severity, category=Category.NETWORK,
                   target=target, location=location, evidence=evidence, description=rule.description,
                   remediation=rule.remediation, references=list(rule.references), attack=list(rule.attack),
                   tags=["scan", *rule.tags], key=key)


def _iso(ts: float) -> str | None:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None
