"""Captures and live traffic in, findings out: capture -> pipeline -> signatures -> `Finding`s.

    engine = prepare(InspectOptions(rule_files=[Path("local.rules")]))
    result = ScanResult(kind="network_inspect")
    inspect_capture(Path("traffic.pcap"), engine, result)

Each alert becomes one Finding: the rule's `cloudward_id` (else `suricata.sid_<sid>`) is the rule
id, `msg` the title, the severity comes from `signature_severity` / priority / classtype
(classification.py), ATT&CK ids and references from the rule, description and remediation from
the built-in notes (a user rule gets a generic text naming its sid). The target is what was
inspected (the capture file, or the interface for `monitor`); the flow is the location (both
ends, direction, packet number, capture time); the evidence is the rule (sid, rev, source line),
the buffer that matched and a short excerpt around the match with credentials masked, and for an
IOC signature the indicator's source and date. One finding per rule per flow by default.

Beside the signatures, the flow table tells a `ScanDetector` (scans.py) of every flow it forgets:
failed connection attempts add up to port-scan and sweep findings, whose location is the scanning
source (and the scanned host or port) rather than one flow.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudward.core.errors import UsageError
from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult
from cloudward.core.severity import Category
from cloudward.network.capture import CaptureError, Packet, live, read_capture
from cloudward.network.classification import BUILTIN_CLASSTYPES, load_classification
from cloudward.network.events import Inspectable
from cloudward.network.flows import Limits, Stats
from cloudward.network.pipeline import Pipeline
from cloudward.network.rulesets import LoadedRules, load_signatures
from cloudward.network.scans import ScanDetector, scan_finding
from cloudward.network.signatures import Alert, Matcher, SignatureSet
from cloudward.network.suricata import RuleParser, RuleVars

__all__ = ["Engine", "InspectOptions", "Totals", "finding_from_alert", "inspect_capture", "monitor", "prepare"]

EXCERPT_CHARS = 200


@dataclass
class InspectOptions:
    rule_files: list[Path] = field(default_factory=list)
    builtin: bool = True  # the built-in signatures and those generated from the IOC list
    ioc_files: list[Path] = field(default_factory=list)  # more indicators (same shape as data/iocs.yaml)
    vars_file: Path | None = None
    classification_file: Path | None = None
    dedup: bool = True  # one alert per rule per flow
    limits: Limits = field(default_factory=Limits)
    backend: str = "auto"
    scans: bool = True  # port-scan and sweep detection (built-in rules, with `builtin`)


@dataclass
class Engine:
    """Rules loaded and compiled once, shared by every capture of a run."""

    options: InspectOptions
    loaded: LoadedRules
    ruleset: SignatureSet
    compile_seconds: float = 0.0

    def matcher(self) -> Matcher:
        return self.ruleset.matcher(dedup=self.options.dedup)

    def scan_detector(self) -> ScanDetector | None:
        return ScanDetector() if self.options.scans and self.options.builtin else None


def prepare(options: InspectOptions) -> Engine:
    """Load and compile the rules; a bad vars, classification or IOC file is a UsageError naming it."""
    started = time.perf_counter()
    variables = RuleVars()
    if options.vars_file is not None:
        try:
            variables = RuleVars.load(options.vars_file)
        except ValueError as exc:
            raise UsageError(f"--vars: {exc}") from None
    classtypes = dict(BUILTIN_CLASSTYPES)
    if options.classification_file is not None:
        try:
            classtypes.update(load_classification(options.classification_file))
        except ValueError as exc:
            raise UsageError(f"--classification: {exc}") from None
    iocs = None
    if options.builtin:
        from cloudward.engines.iocs import load_iocs

        try:
            iocs = load_iocs(options.ioc_files)
        except ValueError as exc:
            raise UsageError(f"--iocs: {exc}") from None
    elif options.ioc_files:
        raise UsageError("--iocs adds to the built-in indicator signatures; it cannot go with --no-builtin")
    parser = RuleParser(variables, classtypes)
    loaded = load_signatures(parser, builtin=options.builtin, iocs=iocs, rule_files=options.rule_files)
    ruleset = SignatureSet(loaded.signatures, backend=options.backend)
    return Engine(options, loaded, ruleset, time.perf_counter() - started)


# --------------------------------------------------------------------------- alerts -> findings

_CREDENTIALS = [
    (re.compile(rb"(?im)^((?:proxy-)?authorization|cookie|set-cookie|x-api-key|x-auth-token|"
                rb"x-amz-security-token)(\s*:\s*)[^\r\n]*"), rb"\1\2****"),
    (re.compile(rb"(?i)\b(AUTH)(\s+)\S+(?:\s+\S+)?"), rb"\1\2****"),
    (re.compile(rb"(?i)((?:pass(?:word)?|passwd|secret|token|api_?key|access_?key)[\"']?\s*[=:]\s*[\"']?)"
                rb"[^&\s\"',}]+"), rb"\1****"),
    (re.compile(rb"(?i)(requirepass|masterauth)(\s+)\S+"), rb"\1\2****"),
]


def _masked(data: bytes) -> bytes:
    for pattern, replacement in _CREDENTIALS:
        data = pattern.sub(replacement, data)
    return data


def _text(data: bytes) -> str:
    """Printable ASCII kept, everything else as \\xNN; cut to EXCERPT_CHARS."""
    out = []
    for byte in data:
        if 32 <= byte < 127 and byte != 0x5C:
            out.append(chr(byte))
        elif byte == 0x5C:
            out.append("\\\\")
        elif byte == 10:
            out.append("\\n")
        elif byte == 13:
            out.append("\\r")
        else:
            out.append(f"\\x{byte:02x}")
    text = "".join(out)
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _iso(ts: float) -> str | None:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def finding_from_alert(alert: Alert, engine: Engine, target: Target, capture: str) -> Finding:
    from cloudward.core.attack import techniques

    signature = alert.signature
    notes = engine.loaded.notes.get(signature.rule_id)
    indicator = engine.loaded.indicators.get(signature.sid)
    location: dict[str, Any] = {
        **alert.flow.location(), "direction": alert.direction.value, "packet": alert.packet,
        "time": _iso(alert.ts), "capture": capture,
    }
    evidence: dict[str, Any] = {  # what a reader wants first comes first (the table shows the first few)
        "flow": f"{alert.flow} ({alert.direction.value})", "match": _text(_masked(alert.excerpt)),
        "buffer": alert.buffer.split("|")[0], "buffers": list(alert.buffers), "sid": signature.sid,
        "rev": signature.rev, "gid": signature.gid, "msg": signature.msg, "classtype": signature.classtype,
        "action": signature.action, "rule": f"{signature.source}:{signature.line}", "app_proto": alert.app_proto,
    }
    if indicator is not None:
        evidence["indicator"] = {"kind": indicator.kind, "value": indicator.value, "source": indicator.source,
                                 "date": indicator.date, "note": indicator.note}
    known = techniques()
    attack = [t for t in signature.attack if t in known]
    if notes is not None:
        description, remediation = notes.description, notes.remediation
        references = [*signature.references, *notes.references]
        tags = ["signature", *notes.tags]
    else:
        kind = BUILTIN_CLASSTYPES.get(signature.classtype or "")
        what = f" ({kind.description})" if kind is not None else ""
        description = (f"Suricata rule {signature.sid} matched{what}: {signature.msg or 'no message'}. "
                       f"Rule from {signature.source}:{signature.line}.")
        remediation = "Review the flow and the rule's references; the rule's author decides what it means."
        references = list(signature.references)
        tags = ["signature", "user_rule"]
    threat_map = signature.meta("threat_map")
    if threat_map:
        tags.append(f"threat_map:{threat_map[0]}")
    identity = indicator.value if indicator is not None else f"sid:{signature.gid}:{signature.sid}"
    key = f"{identity}|{alert.flow}" if engine.options.dedup else f"{identity}|{alert.flow}|{alert.packet}"
    return Finding(
        rule_id=signature.rule_id, title=signature.msg or f"Suricata rule {signature.sid}",
        severity=signature.severity, category=Category.NETWORK, target=target, location=location,
        evidence=evidence, description=description, remediation=remediation, references=references,
        attack=attack, tags=tags, key=key,
    )


# --------------------------------------------------------------------------- running


@dataclass
class Totals:
    """Counters of one run, across captures: what `--format table` prints and the JSON `stats`."""

    captures: int = 0
    packets: int = 0
    bytes: int = 0
    flows: int = 0
    units: int = 0
    alerts: int = 0
    seconds: float = 0.0
    signature_seconds: float = 0.0  # of `seconds`, the time in the signature engine (the rest: the pipeline)
    by_rule: Counter[str] = field(default_factory=Counter)
    pipeline: dict[str, int] = field(default_factory=dict)

    def source_done(self, stats: Stats, started: float) -> None:
        """One capture, interface or queue finished: its time (since perf_counter `started`) and counters."""
        self.seconds += time.perf_counter() - started
        self.captures += 1
        self.add(stats)

    def add(self, stats: Stats) -> None:
        self.packets += stats.packets
        self.bytes += stats.bytes
        self.flows += stats.flows
        self.units += stats.inspectables
        for name, value in stats.as_dict().items():
            if isinstance(value, int) and name not in ("packets", "bytes", "flows", "inspectables"):
                self.pipeline[name] = self.pipeline.get(name, 0) + value

    def as_dict(self, engine: Engine, matcher_counts: dict[str, int]) -> dict[str, Any]:
        rate = self.bytes * 8 / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return {
            "captures": self.captures, "packets": self.packets, "bytes": self.bytes, "flows": self.flows,
            "units": self.units, "alerts": self.alerts, "seconds": round(self.seconds, 3),
            "signature_seconds": round(self.signature_seconds, 3),
            "mbit_per_second": round(rate, 1),
            "packets_per_second": round(self.packets / self.seconds) if self.seconds > 0 else 0,
            "alerts_by_rule": dict(sorted(self.by_rule.items())),
            "rules": {"loaded": len(engine.loaded.signatures), "builtin": engine.loaded.builtin_count,
                      "user": engine.loaded.user_count, "skipped": len(engine.loaded.problems),
                      "prefilter": engine.ruleset.backend, "compile_seconds": round(engine.compile_seconds, 3)},
            "dedup": "one alert per rule per flow" if engine.options.dedup else "every matching unit",
            "pipeline": self.pipeline, **matcher_counts,
        }


def record_rule_problems(engine: Engine, result: ScanResult) -> None:
    for problem in engine.loaded.problems:
        kind = "warning" if problem.warning else "error"
        result.add_error(f"{problem.source}:{problem.line}", f"{kind}: {problem.message}", stage="rules")


def _judge(units: Iterable[Inspectable], matcher: Matcher, engine: Engine, target: Target, capture: str,
           result: ScanResult, totals: Totals, on_finding: Callable[[Finding], None] | None,
           scans: ScanDetector | None = None) -> None:
    match = matcher.match
    clock = time.perf_counter
    spent = 0.0
    try:
        for unit in units:
            started = clock()
            alerts = match(unit)
            spent += clock() - started
            if alerts:
                _record(alerts, engine, target, capture, result, totals, on_finding)
            if scans is not None and scans.alerts:
                record_scans(scans, target, capture, result, totals, on_finding)
    finally:
        totals.signature_seconds += spent
        if scans is not None:  # the flows forgotten at the end of the input
            record_scans(scans, target, capture, result, totals, on_finding)
            totals.pipeline["scan_failed_attempts"] = totals.pipeline.get("scan_failed_attempts", 0) + scans.attempts


def record_finding(finding: Finding, result: ScanResult, totals: Totals,
                   on_finding: Callable[[Finding], None] | None) -> None:
    """One alert's finding into the run: the result, the counters, and the live callback."""
    result.findings.append(finding)
    totals.alerts += 1
    totals.by_rule[finding.rule_id] += 1
    if on_finding is not None:
        on_finding(finding)


def record_scans(scans: ScanDetector, target: Target, capture: str, result: ScanResult, totals: Totals,
                 on_finding: Callable[[Finding], None] | None) -> None:
    alerts, scans.alerts = scans.alerts, []
    for alert in alerts:
        record_finding(scan_finding(alert, target, capture), result, totals, on_finding)


def _record(alerts: list[Alert], engine: Engine, target: Target, capture: str, result: ScanResult,
            totals: Totals, on_finding: Callable[[Finding], None] | None) -> None:
    for alert in alerts:
        record_finding(finding_from_alert(alert, engine, target, capture), result, totals, on_finding)


def matcher_counts(matchers: Iterable[Matcher]) -> dict[str, int]:
    out = {"rule_evaluations": 0, "evaluations_given_up": 0}
    for matcher in matchers:
        out["rule_evaluations"] += matcher.candidates
        out["evaluations_given_up"] += matcher.evaluations_given_up
    return out


def inspect_capture(path: Path, engine: Engine, result: ScanResult, totals: Totals,
                    on_finding: Callable[[Finding], None] | None = None) -> Matcher | None:
    """Inspect one pcap/pcapng file into `result`; a capture that cannot be read (or stops being
    readable) is an error of that target, and what was read before still counts."""
    name = str(path)
    result.targets.append(name)
    try:
        packets = read_capture(path)
    except CaptureError as exc:
        result.add_error(name, str(exc), stage="capture")
        return None
    stats = Stats()
    matcher = engine.matcher()
    scans = engine.scan_detector()
    started = time.perf_counter()
    try:
        units = Pipeline(engine.options.limits, stats, on_flow_end=scans.flow_ended if scans else None).run(packets)
        _judge(units, matcher, engine, Target(kind="path", name=name), name, result, totals, on_finding, scans)
    finally:
        totals.source_done(stats, started)
    for message in stats.errors:
        result.add_error(name, message, stage="capture")
    return matcher


def monitor(interface: str, engine: Engine, result: ScanResult, totals: Totals, *,
            duration: float | None = None, stop: threading.Event | None = None,
            on_finding: Callable[[Finding], None] | None = None,
            on_ready: Callable[[], None] | None = None) -> Matcher:
    """Inspect live traffic on `interface` until `duration` seconds pass or `stop` is set.
    `on_ready` is called once the capture socket is open: from then on no packet is missed."""
    stop = stop or threading.Event()
    try:
        packets = live(interface, stop)
    except CaptureError as exc:
        raise UsageError(str(exc)) from None
    if on_ready is not None:
        on_ready()
    result.targets.append(f"interface:{interface}")
    timer = None
    if duration is not None:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    stats = Stats()
    matcher = engine.matcher()
    scans = engine.scan_detector()
    started = time.perf_counter()
    try:
        units = Pipeline(engine.options.limits, stats,
                         on_flow_end=scans.flow_ended if scans else None).run(_until(packets, stop))
        _judge(units, matcher, engine, Target(kind="interface", name=interface), f"live:{interface}", result,
               totals, on_finding, scans)
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        totals.source_done(stats, started)
    for message in stats.errors:
        result.add_error(f"interface:{interface}", message, stage="capture")
    return matcher


def _until(packets: Iterator[Packet], stop: threading.Event) -> Iterator[Packet]:
    for packet in packets:
        yield packet
        if stop.is_set():
            return
