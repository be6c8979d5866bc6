"""A compiled signature set and the matcher that judges each `Inspectable` against it.

How a unit is judged:
1. Prefilter. Every rule with a positive `content` contributes one fast pattern (the content marked
   `fast_pattern`, else its longest) to a multi-literal database of the buffer that content reads
   (payload, http.uri, dns.query, ...). One Hyperscan scan per buffer present in the unit names the
   rules that could match; pyahocorasick does the same where Hyperscan is missing (both give the
   same candidates; `CLOUDWARD_NETWORK_PREFILTER=hyperscan|ahocorasick` picks one). A rule without
   a positive content is a candidate for every unit, unless its header names a few hosts or ports,
   by which it is then looked up.
2. Header: protocol (or application protocol), addresses, ports, `<>`, `flow`, `dsize`.
3. Exact evaluation of each buffer's content/pcre chain with Suricata's semantics: offset/depth
   from the start of the buffer (depth counted from offset), distance/within from the end of the
   previous match in the same buffer (within counted from where distance puts the start), and the
   same backtracking: when a later relative element fails, the earlier one is retried at its next
   occurrence. Negated elements hold when absent. A recursion budget (Suricata's 3,000) bounds the
   work per rule and unit; pcre reads at most `MAX_PCRE_INPUT` bytes of a buffer.

Alert de-duplication: by default a rule alerts once per flow (the first unit that matches), which
is what `threshold: type limit, track by_flow, count 1` would say in Suricata; `dedup=False`
reports every matching unit. A rule with its own `threshold` or `detection_filter` is counted by
that instead (every match counts, across flows: a brute force is many flows of one match each).
A matching `pass` rule silences the unit and the rest of its flow.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudward.network.events import Direction, FlowKey, Inspectable
from cloudward.network.rulevars import AddressSet, PortSet
from cloudward.network.suricata import PAYLOAD, Content, Element, Signature, Threshold

__all__ = ["Alert", "Matcher", "SignatureSet", "available_backends"]

ENV_BACKEND = "CLOUDWARD_NETWORK_PREFILTER"
RECURSION_LIMIT = 3000
MAX_PCRE_INPUT = 256 * 1024
EXCERPT_CONTEXT = 48
MAX_TRACKED_FLOWS = 1_000_000  # de-duplication memory: reset (and count) beyond this many alerted flows
MAX_THRESHOLD_KEYS = 100_000  # threshold counters kept; beyond it the oldest window goes first


@dataclass(frozen=True, slots=True)
class Alert:
    signature: Signature
    flow: FlowKey
    direction: Direction
    ts: float
    packet: int
    app_proto: str | None
    buffer: str  # the buffer of the rule's last chain with a positive match ("http.request_body", ...)
    span: tuple[int, int]  # where that chain's first element matched in it
    excerpt: bytes  # up to EXCERPT_CONTEXT bytes either side of that match
    buffers: tuple[str, ...] = ()  # every buffer the rule matched in, in rule order


# --------------------------------------------------------------------------- prefilters


class _HyperscanLiterals:
    name = "hyperscan"

    def __init__(self, literals: Sequence[tuple[bytes, bool]]) -> None:
        import hyperscan

        flags = [hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if nocase else 0)
                 for _, nocase in literals]
        from cloudward.engines.hyperscan_cache import compile_database

        # Expressions with every byte escaped rather than Hyperscan's literal API: the Python binding
        # passes literals as C strings, so a NUL byte would cut one short. Hyperscan extracts the
        # literal from such an expression itself; the speed is the same.
        database = compile_database([_escaped(pattern) for pattern, _ in literals], ids=list(range(len(literals))),
                                    flags=flags)
        self._hyperscan = hyperscan
        self._database = database
        self._local = threading.local()

    def scan(self, data: bytes) -> list[int]:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hyperscan.Scratch(self._database)
        found: list[int] = []
        append = found.append

        def on_match(pattern: int, _start: int, _end: int, _flags: int, _context: object) -> None:
            append(pattern)

        self._database.scan(data, match_event_handler=on_match, scratch=scratch)
        return found


def _escaped(pattern: bytes) -> bytes:
    return b"".join(bytes([b]) if 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A else b"\\x%02x" % b
                    for b in pattern)


class _AhoCorasickLiterals:
    """pyahocorasick over latin-1 text (one character a byte): one automaton for case-sensitive
    literals over the buffer, one for caseless literals over its ASCII-lowered copy."""

    name = "ahocorasick"

    def __init__(self, literals: Sequence[tuple[bytes, bool]]) -> None:
        import ahocorasick

        self._exact: Any = None
        self._caseless: Any = None
        for nocase in (False, True):
            words: dict[str, list[int]] = {}
            for index, (pattern, caseless) in enumerate(literals):
                if caseless == nocase:
                    text = (pattern.lower() if nocase else pattern).decode("latin-1")
                    words.setdefault(text, []).append(index)
            if not words:
                continue
            automaton = ahocorasick.Automaton()
            for text, ids in words.items():
                automaton.add_word(text, tuple(ids))
            automaton.make_automaton()
            if nocase:
                self._caseless = automaton
            else:
                self._exact = automaton

    def scan(self, data: bytes) -> list[int]:
        found: set[int] = set()
        if self._exact is not None:
            for _end, ids in self._exact.iter(data.decode("latin-1")):
                found.update(ids)
        if self._caseless is not None:
            for _end, ids in self._caseless.iter(data.lower().decode("latin-1")):
                found.update(ids)
        return list(found)


def available_backends() -> list[str]:
    names = []
    for name, module in (("hyperscan", "hyperscan"), ("ahocorasick", "ahocorasick")):
        try:
            __import__(module)
        except ImportError:
            continue
        names.append(name)
    return names


def _build_prefilter(literals: Sequence[tuple[bytes, bool]], backend: str) -> _HyperscanLiterals | _AhoCorasickLiterals:
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "") or (available_backends() or ["ahocorasick"])[0]
    if backend == "hyperscan":
        return _HyperscanLiterals(literals)
    if backend == "ahocorasick":
        return _AhoCorasickLiterals(literals)
    raise ValueError(f"unknown prefilter back-end {backend!r} (hyperscan, ahocorasick or auto)")


# --------------------------------------------------------------------------- compiled rules


def _fast_pattern(signature: Signature) -> Content | None:
    positives = [e for e in signature.elements if isinstance(e, Content) and not e.negated]
    if not positives:
        return None
    marked = [c for c in positives if c.fast_pattern]
    return marked[0] if marked else max(positives, key=lambda c: len(c.pattern))


def _chains(signature: Signature) -> tuple[tuple[str, tuple[Element, ...], tuple[bool, ...]], ...]:
    """Per buffer, in order of first use: its elements, and for each whether the next one is
    relative to it (only then does a failure later retry it at its next occurrence)."""
    grouped: dict[str, list[Element]] = {}
    for element in signature.elements:
        grouped.setdefault(element.buffer, []).append(element)
    out = []
    for buffer, elements in grouped.items():
        retry = tuple(i + 1 < len(elements) and elements[i + 1].relative for i in range(len(elements)))
        out.append((buffer, tuple(elements), retry))
    return tuple(out)


@dataclass(slots=True)
class _Compiled:
    index: int
    signature: Signature
    chains: tuple[tuple[str, tuple[Element, ...], tuple[bool, ...]], ...]
    is_pass: bool
    transport: str | None  # "tcp" / "udp" / "icmp" when the header names one
    app_proto: str | None  # an application protocol the unit must carry
    any_address: bool
    any_port: bool
    buffer_names: tuple[str, ...] = ()
    lowered: dict[int, bytes] = field(default_factory=dict)  # id(content) -> lower-cased pattern


_TRANSPORTS = frozenset({"tcp", "udp", "icmp"})


def _compile(index: int, signature: Signature) -> _Compiled:
    proto = signature.proto
    compiled = _Compiled(
        index=index, signature=signature, chains=_chains(signature), is_pass=signature.action == "pass",
        transport=proto if proto in _TRANSPORTS else None,
        app_proto=None if proto == "ip" or proto in _TRANSPORTS else proto,
        any_address=signature.src.is_any and signature.dst.is_any,
        any_port=signature.sport.is_any and signature.dport.is_any,
    )
    compiled.buffer_names = tuple(b.split("|")[0] for b, _, _ in compiled.chains)
    for element in signature.elements:
        if isinstance(element, Content) and element.nocase:
            compiled.lowered[id(element)] = element.pattern.lower()
    return compiled


_INDEXED_PORTS_MAX = 1024


def _hosts(addresses: AddressSet) -> list[str] | None:
    """The single addresses an address set is made of, or None when it is not just a few hosts."""
    if addresses.include is None or addresses.exclude or len(addresses.include) > 4096:
        return None
    if any(net.num_addresses != 1 for net in addresses.include):
        return None
    return [str(net.network_address) for net in addresses.include]


def _ports(ports: PortSet) -> list[int] | None:
    if ports.include is None or ports.exclude:
        return None
    total = sum(hi - lo + 1 for lo, hi in ports.include)
    return None if total > _INDEXED_PORTS_MAX else [p for lo, hi in ports.include for p in range(lo, hi + 1)]


def _index_headers(rules: list[_Compiled], always: list[int]) -> tuple[
        tuple[int, ...], dict[str, tuple[int, ...]], dict[int, tuple[int, ...]]]:
    """Rules without a content pattern are candidates for every unit, unless their header names a
    few host addresses or ports: those are looked up by the unit's addresses or ports instead (an
    actor address list, the pool ports), and the header check still decides exactly."""
    rest: list[int] = []
    by_address: dict[str, list[int]] = {}
    by_port: dict[int, list[int]] = {}
    for index in always:
        signature = rules[index].signature
        hosts = [_hosts(signature.src), _hosts(signature.dst)]
        ports = [_ports(signature.sport), _ports(signature.dport)]
        if any(h is not None for h in hosts):
            chosen = next(h for h in hosts if h is not None)
            for host in chosen:
                by_address.setdefault(host, []).append(index)
        elif any(p is not None for p in ports):
            chosen_ports = next(p for p in ports if p is not None)
            for port in chosen_ports:
                by_port.setdefault(port, []).append(index)
        else:
            rest.append(index)
    return (tuple(rest), {k: tuple(v) for k, v in by_address.items()}, {k: tuple(v) for k, v in by_port.items()})


class SignatureSet:
    """Signatures compiled once (prefilter databases per buffer); `matcher()` per inspection run."""

    def __init__(self, signatures: Iterable[Signature], backend: str = "auto") -> None:
        self.signatures = list(signatures)
        self._rules = [_compile(i, s) for i, s in enumerate(self.signatures)]
        literals: dict[str, dict[tuple[bytes, bool], list[int]]] = {}
        always: list[int] = []
        for rule in self._rules:
            fast = _fast_pattern(rule.signature)
            if fast is None:
                always.append(rule.index)
                continue
            key = (fast.pattern.lower() if fast.nocase else fast.pattern, fast.nocase)
            literals.setdefault(fast.buffer, {}).setdefault(key, []).append(rule.index)
        self.backend = ""
        # (buffer, its base buffer name, its transforms, prefilter, rules owning each pattern)
        self._databases: list[tuple[str, str, list[str], Any, tuple[tuple[int, ...], ...]]] = []
        for buffer, table in sorted(literals.items()):
            keys = list(table)
            prefilter = _build_prefilter(keys, backend)
            self.backend = prefilter.name
            base, *transforms = buffer.split("|")
            self._databases.append((buffer, base, transforms, prefilter, tuple(tuple(table[k]) for k in keys)))
        self._always, self._by_address, self._by_port = _index_headers(self._rules, always)
        self.buffers = frozenset(b for rule in self._rules for b, _, _ in rule.chains)

    def __len__(self) -> int:
        return len(self._rules)

    def matcher(self, *, dedup: bool = True) -> Matcher:
        return Matcher(self, dedup=dedup)


# --------------------------------------------------------------------------- matching


def _transform(data: bytes, transforms: list[str]) -> bytes:
    for name in transforms:
        if name == "dotprefix":
            data = b"." + data
        elif name == "to_lowercase":
            data = data.lower()
    return data


class _Unit:
    """One unit's buffers, computed (and lower-cased) only when a rule asks."""

    __slots__ = ("_buffers", "_lowered", "unit")

    def __init__(self, unit: Inspectable) -> None:
        self.unit = unit
        self._buffers: dict[str, bytes | None] = {}
        self._lowered: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        try:
            return self._buffers[key]
        except KeyError:
            pass
        base, *transforms = key.split("|")
        data = self.unit.payload if base == PAYLOAD else self.unit.buffers.get(base)
        if data is not None and transforms:
            data = _transform(data, transforms)
        self._buffers[key] = data
        return data

    def lower(self, key: str, data: bytes) -> bytes:
        found = self._lowered.get(key)
        if found is None:
            found = self._lowered[key] = data.lower()
        return found


class _Budget:
    __slots__ = ("count", "end", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, int] | None = None  # span of the chain's first element on the matching path
        self.end = 0  # the furthest end of an element on the matching path


def _inspect(rule: _Compiled, elements: tuple[Element, ...], retry: tuple[bool, ...], i: int, buffer: bytes,
             lowered: bytes | None, prev_end: int, budget: _Budget) -> int:
    """Suricata's content inspection: 1 match, 0 no match (a caller may retry), -1 give up."""
    if i == len(elements):
        return 1
    budget.count += 1
    if budget.count > RECURSION_LIMIT:
        return -1
    element = elements[i]
    size = len(buffer)
    if isinstance(element, Content):
        needle = rule.lowered[id(element)] if element.nocase else element.pattern
        hay = lowered if element.nocase and lowered is not None else buffer
        if element.relative:
            start = prev_end + (element.distance or 0)
            start = max(start, 0)
            end = size if element.within is None else min(size, prev_end + (element.distance or 0) + element.within)
        elif element.startswith:
            start, end = 0, min(size, len(needle))
        else:
            start = element.offset or 0
            end = size if element.depth is None else min(size, start + element.depth)
        search_from = start
        while True:
            pos = hay.find(needle, search_from, end) if search_from <= end else -1
            while pos >= 0 and element.endswith and pos + len(needle) != size:
                pos = hay.find(needle, pos + 1, end)
            if pos < 0:
                if element.negated:
                    return _inspect(rule, elements, retry, i + 1, buffer, lowered, prev_end, budget)
                return 0 if element.relative else -1
            if element.negated:
                return 0 if element.relative else -1
            match_end = pos + len(needle)
            result = _inspect(rule, elements, retry, i + 1, buffer, lowered, match_end, budget)
            if result == 1:
                if budget.first is None or i == 0:
                    budget.first = (pos, match_end)
                budget.end = max(budget.end, match_end)
                return 1
            if result == -1 or not retry[i]:
                return -1
            search_from = pos + 1
    # pcre
    spec = element.spec
    start = min(prev_end, size) if spec.relative else 0
    limit = min(size, start + MAX_PCRE_INPUT)
    subject: Any = buffer[start:limit] if start or limit < size else buffer
    pos = 0
    while True:
        found = spec.regex.match(subject, pos) if spec.anchored else spec.regex.search(subject, pos)
        if found is None:
            if element.negated:
                return _inspect(rule, elements, retry, i + 1, buffer, lowered, prev_end, budget)
            return 0 if spec.relative else -1
        if element.negated:
            return 0 if spec.relative else -1
        match_end = start + found.end()
        result = _inspect(rule, elements, retry, i + 1, buffer, lowered, match_end, budget)
        if result == 1:
            if budget.first is None or i == 0:
                budget.first = (start + found.start(), match_end)
            budget.end = max(budget.end, match_end)
            return 1
        if result == -1 or not retry[i] or spec.anchored:
            return -1
        pos = found.start() + 1
        if pos > len(subject):
            return -1


def _excerpt(data: bytes, span: tuple[int, int]) -> bytes:
    start, end = span
    return data[max(0, start - EXCERPT_CONTEXT):min(len(data), end + EXCERPT_CONTEXT)]


class Matcher:
    """Judges units in order for one inspection run; holds the per-flow state (alerted, passed)."""

    def __init__(self, ruleset: SignatureSet, *, dedup: bool = True) -> None:
        self.ruleset = ruleset
        self.dedup = dedup
        self.units = 0
        self.candidates = 0  # rule evaluations the prefilter let through
        self.evaluations_given_up = 0  # chains stopped by the recursion budget
        self.dedup_resets = 0
        self.threshold_evictions = 0
        self._alerted: set[tuple[FlowKey, int]] = set()
        self._windows: OrderedDict[tuple[object, ...], list[float]] = OrderedDict()  # key -> [start, matches]
        self._passed: set[FlowKey] = set()
        self._addresses: dict[str, Any] = {}

    def _address(self, text: str) -> Any:
        found = self._addresses.get(text)
        if found is None:
            if len(self._addresses) > 65536:
                self._addresses.clear()
            try:
                found = ipaddress.ip_address(text)
            except ValueError:
                found = False
            self._addresses[text] = found
        return found

    def _header_ok(self, rule: _Compiled, unit: Inspectable) -> bool:
        signature = rule.signature
        flow = unit.flow
        if rule.transport is not None and flow.proto != rule.transport:
            return False
        if rule.app_proto is not None and unit.app_proto != rule.app_proto:
            return False
        if signature.app_layer is not None:
            negated, name = signature.app_layer
            if (unit.app_proto == name) == negated:
                return False
        to_server = unit.direction is Direction.TO_SERVER
        if signature.flow_to_server is not None and signature.flow_to_server != to_server:
            return False
        if signature.flow_established is not None and signature.flow_established != unit.established:
            return False
        if signature.dsize is not None and not _dsize_ok(signature.dsize, len(unit.payload)):
            return False
        if rule.any_address and rule.any_port:
            return True
        if to_server:
            src, sport, dst, dport = flow.src, flow.sport, flow.dst, flow.dport
        else:
            src, sport, dst, dport = flow.dst, flow.dport, flow.src, flow.sport
        if self._endpoints_ok(rule, signature, src, sport, dst, dport):
            return True
        return signature.bidirectional and self._endpoints_ok(rule, signature, dst, dport, src, sport)

    def _endpoints_ok(self, rule: _Compiled, signature: Signature, src: str, sport: int, dst: str,
                      dport: int) -> bool:
        if not rule.any_port and not (signature.sport.contains(sport) and signature.dport.contains(dport)):
            return False
        if rule.any_address:
            return True
        for addresses, text in ((signature.src, src), (signature.dst, dst)):
            if addresses.is_any:
                continue
            address = self._address(text)
            if address is False or not addresses.contains(address):
                return False
        return True

    def _evaluate(self, rule: _Compiled, unit: _Unit) -> tuple[str, tuple[int, int], bytes] | None:
        """Where the rule matched (the last buffer with a positive match, where in it, the buffer),
        or None. Rules go from general to specific, so the last buffer says most (the request
        body rather than the method). A unit whose payload repeats `overlap` bytes of the previous
        one does not match again when all its payload matches end inside that repeated part (they
        were seen in that unit)."""
        last: tuple[str, tuple[int, int], bytes] | None = None
        overlap = unit.unit.overlap
        payload_end = -1
        for buffer_key, elements, retry in rule.chains:
            data = unit.get(buffer_key)
            if data is None:
                return None
            needs_lower = any(isinstance(e, Content) and e.nocase for e in elements)
            lowered = unit.lower(buffer_key, data) if needs_lower else None
            budget = _Budget()
            result = _inspect(rule, elements, retry, 0, data, lowered, 0, budget)
            if budget.count > RECURSION_LIMIT:
                self.evaluations_given_up += 1
            if result != 1:
                return None
            if buffer_key == PAYLOAD:
                payload_end = budget.end
            if budget.first is not None:
                last = (buffer_key, budget.first, data)
        if overlap and 0 <= payload_end <= overlap:
            return None
        if last is None:
            return (PAYLOAD, (0, 0), unit.unit.payload)
        return last

    def match(self, unit: Inspectable) -> list[Alert]:
        """The alerts this unit raises (empty for most units)."""
        self.units += 1
        flow = unit.flow
        if flow in self._passed:
            return []
        ruleset = self.ruleset
        candidates: set[int] = set(ruleset._always)
        if ruleset._by_address:
            for address in (flow.src, flow.dst):
                owners = ruleset._by_address.get(address)
                if owners:
                    candidates.update(owners)
        if ruleset._by_port:
            for port in (flow.sport, flow.dport):
                owners = ruleset._by_port.get(port)
                if owners:
                    candidates.update(owners)
        payload, buffers = unit.payload, unit.buffers
        for _key, base, transforms, prefilter, patterns in ruleset._databases:
            data = payload if base == PAYLOAD else buffers.get(base)
            if data:
                if transforms:
                    data = _transform(data, transforms)
                for pattern in prefilter.scan(data):
                    candidates.update(patterns[pattern])
        if not candidates:
            return []
        view = _Unit(unit)
        rules = ruleset._rules
        ordered = sorted(candidates, key=lambda i: (not rules[i].is_pass, i))
        alerts: list[Alert] = []
        for index in ordered:
            rule = rules[index]
            threshold = rule.signature.threshold
            if self.dedup and threshold is None and not rule.is_pass and (flow, index) in self._alerted:
                continue
            self.candidates += 1
            if not self._header_ok(rule, unit):
                continue
            found = self._evaluate(rule, view)
            if found is None:
                continue
            if rule.is_pass:
                self._passed.add(flow)
                return []
            if threshold is not None and not self._counted(index, threshold, unit):
                continue
            buffer_key, span, data = found
            alerts.append(Alert(rule.signature, flow, unit.direction, unit.ts, unit.packet, unit.app_proto,
                                buffer_key, span, _excerpt(data, span), rule.buffer_names))
            if self.dedup and threshold is None:
                if len(self._alerted) >= MAX_TRACKED_FLOWS:
                    self._alerted.clear()
                    self.dedup_resets += 1
                self._alerted.add((flow, index))
        return alerts


    def _counted(self, index: int, threshold: Threshold, unit: Inspectable) -> bool:
        """Count this match against the rule's threshold; True when it alerts. Windows start at the
        first match of a key and last `seconds` of capture time, as Suricata counts them."""
        flow = unit.flow
        src, dst = (flow.src, flow.dst) if unit.direction is Direction.TO_SERVER else (flow.dst, flow.src)
        track = threshold.track
        key: tuple[object, ...] = (index, src if track == "by_src" else dst if track == "by_dst" else
                                   (src, dst) if track == "by_both" else flow if track == "by_flow" else None)
        window = self._windows.get(key)
        if window is None or unit.ts - window[0] > threshold.seconds:
            if window is None and len(self._windows) >= MAX_THRESHOLD_KEYS:
                self._windows.popitem(last=False)
                self.threshold_evictions += 1
            window = self._windows[key] = [unit.ts, 0.0]
        else:
            self._windows.move_to_end(key)
        window[1] += 1
        seen, count, kind = int(window[1]), threshold.count, threshold.kind
        if kind == "limit":
            return seen <= count
        if kind == "both":
            return seen == count
        if kind == "threshold":
            if seen == count:
                window[0], window[1] = unit.ts, 0.0  # every count-th match alerts; counting starts again
                return True
            return False
        return seen > count  # detection_filter: every match beyond the first `count`


def _dsize_ok(dsize: tuple[str, int, int], size: int) -> bool:
    op, a, b = dsize
    if op == "=":
        return size == a
    if op == "!":
        return size != a
    if op == "<":
        return size < a
    if op == ">":
        return size > a
    if op == "<=":
        return size <= a
    if op == ">=":
        return size >= a
    return a < size < b
