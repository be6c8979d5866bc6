"""`network ips`: the signatures inline, on packets the kernel holds until cloudward says what to do.

Netfilter's NFQUEUE target hands each packet of the traffic a firewall rule selects to this process
and waits for a verdict (fnfqueue speaks the netlink protocol; the packet is raw IP). Each packet goes
through the same pipeline and signatures as `network inspect`, one at a time: the packet generator
yields it, the pipeline turns it into units, every unit is judged, and when the pipeline asks for the
next packet the generator first gives this one its verdict — so every packet is judged before it is
released, and the verdict never waits for the next packet to arrive.

What is dropped: a packet whose units match a signature the `DropPolicy` says drops, and every later
packet of that flow (both directions; retransmissions of the dropped data too), as Suricata's `drop`
does in IPS mode. The peers see a stalled connection that times out. Plain data of protocols without
a parser is judged packet by packet (a chunk per packet, with the usual overlap of earlier bytes for
matches that straddle packets); a parsed message (an HTTP request, a Redis command) is judged at the
packet that completes it, so that packet and the rest of the flow are held back.

Fail open or closed is the user's: with `fail_open`, the kernel lets packets through while the
queue is full; if the process is gone, iptables' `--queue-bypass` decides (without it, traffic
stops). A packet that cannot be decoded is accepted and counted: the IPS judges what it understands
and does not turn a parser's gap into an outage.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult
from cloudward.core.severity import Severity
from cloudward.network.capture import LINKTYPE_RAW, Packet
from cloudward.network.events import FlowKey
from cloudward.network.flows import Limits, Stats, address_text
from cloudward.network.inspect import Engine, Totals, finding_from_alert, record_finding, record_scans
from cloudward.network.layers import TCP, UDP, decode
from cloudward.network.pipeline import Pipeline
from cloudward.network.suricata import Signature

__all__ = ["DropPolicy", "InlineStats", "QueueError", "run_inline"]

MAX_DROPPED_FLOWS = 100_000
_DROP_ACTIONS = frozenset({"drop", "reject"})
# Inline, plain data becomes a unit with every packet (a chunk of 1 byte or more), not after a second.
INLINE_LIMITS = Limits(chunk=1, flush_after=0.05)
SWITCH_INTERVAL = 0.0002  # seconds


@dataclass(frozen=True)
class DropPolicy:
    """Which matching signatures drop. By default: every rule whose action is drop or reject, and
    the built-in signatures of high or critical severity (the exploitation, credential-theft and
    C2 patterns of the threat map; informational ones only alert). `drop` adds rules by cloudward id
    or sid glob; `alert_only` drops nothing (an IDS on the queue)."""

    drop: tuple[str, ...] = ()
    builtin_severity: Severity | None = Severity.HIGH
    alert_only: bool = False

    def drops(self, signature: Signature) -> bool:
        if self.alert_only:
            return False
        if signature.action in _DROP_ACTIONS:
            return True
        if (self.builtin_severity is not None and signature.source.startswith("builtin")
                and signature.severity.rank >= self.builtin_severity.rank):
            return True
        return any(fnmatch(signature.rule_id, g) or fnmatch(f"sid:{signature.sid}", g) for g in self.drop)


class QueueError(OSError):
    """The queue cannot be bound: no CAP_NET_ADMIN, or another process holds it."""


@dataclass
class InlineStats:
    packets: int = 0
    accepted: int = 0
    dropped: int = 0
    undecoded: int = 0  # accepted without judging
    overflows: int = 0  # times the netlink socket overflowed (the kernel dropped, or with fail_open accepted)
    dropped_flows: int = 0
    flows_forgotten: int = 0  # dropped flows beyond MAX_DROPPED_FLOWS, oldest first


def _flow_of(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> tuple[object, ...]:
    """Both directions of a conversation under one key."""
    a, b = (address_text(src), sport), (address_text(dst), dport)
    return (proto, *(a + b if a <= b else b + a))


def _flow_of_key(key: FlowKey) -> tuple[object, ...]:
    proto = TCP if key.proto == "tcp" else UDP if key.proto == "udp" else -1
    a, b = (key.src, key.sport), (key.dst, key.dport)
    return (proto, *(a + b if a <= b else b + a))


def run_inline(queue: int, engine: Engine, result: ScanResult, totals: Totals, *, policy: DropPolicy,
               fail_open: bool = False, duration: float | None = None, stop: threading.Event | None = None,
               on_finding: Callable[[Finding], None] | None = None,
               on_ready: Callable[[], None] | None = None) -> InlineStats:
    """Judge the packets of NFQUEUE `queue` until `duration` seconds pass or `stop` is set. Needs
    CAP_NET_ADMIN; raises QueueError when the queue cannot be bound."""
    import fnfqueue

    stop = stop or threading.Event()
    try:
        conn = fnfqueue.Connection()
    except OSError as exc:
        raise QueueError(exc.errno, exc.strerror or str(exc)) from None
    try:
        bound = conn.bind(queue)
        bound.set_mode(fnfqueue.MAX_PAYLOAD, fnfqueue.COPY_PACKET)
        bound.fail_open = fail_open
    except OSError as exc:
        conn.close()
        raise QueueError(exc.errno, exc.strerror or str(exc)) from None
    except BaseException:
        conn.close()
        raise
    closing = threading.Lock()

    def close_once() -> None:  # fnfqueue's close is not safe to call twice at once
        with closing, contextlib.suppress(OSError):
            conn.close()

    def close_when_stopped() -> None:
        stop.wait()
        close_once()

    closer = threading.Thread(target=close_when_stopped, daemon=True, name="cloudward-ips-stop")
    closer.start()
    stats = InlineStats()
    dropped: OrderedDict[tuple[object, ...], None] = OrderedDict()
    current: list[object] = [None, False]  # [flow of the packet being judged, drop it]
    target = Target(kind="queue", name=f"nfqueue:{queue}")
    capture = f"nfqueue:{queue}"

    def packets() -> Iterator[Packet]:
        while not stop.is_set():
            try:
                yield from judged()
                return
            except fnfqueue.BufferOverflowException:  # the kernel outran us: it dropped what did not fit
                stats.overflows += 1
                conn.reset()

    def judged() -> Iterator[Packet]:
        try:
            for packet in conn:
                stats.packets += 1
                payload = packet.payload
                decoded = decode(LINKTYPE_RAW, payload)
                flow = None
                if not isinstance(decoded, int) and decoded[0] in (TCP, UDP):
                    proto, src, dst, sport, dport = decoded[:5]
                    flow = _flow_of(proto, src, sport, dst, dport)
                if flow is not None and flow in dropped:
                    packet.drop()
                    stats.dropped += 1
                    continue
                if flow is None and isinstance(decoded, int):
                    stats.undecoded += 1
                current[0], current[1] = flow, False
                yield Packet(time.time(), LINKTYPE_RAW, payload, len(payload))
                if current[1]:  # (the generator resumes once every unit of this packet is judged)
                    packet.drop()
                    stats.dropped += 1
                else:
                    packet.accept()
                    stats.accepted += 1
                if stop.is_set():
                    return
        except StopIteration:  # fnfqueue after close()
            return
        except OSError:  # the connection closed under a verdict: only when stopping
            if not stop.is_set():
                raise

    pipeline_stats = Stats()
    scans = engine.scan_detector()
    matcher = engine.matcher()
    if on_ready is not None:
        on_ready()
    result.targets.append(capture)
    timer = threading.Timer(duration, stop.set) if duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    # fnfqueue's reader thread hands packets over to this one; with the default 5 ms switch interval
    # a packet could wait that long for the GIL while this thread judges the previous one
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    started = time.perf_counter()
    try:
        units = Pipeline(INLINE_LIMITS, pipeline_stats, on_flow_end=scans.flow_ended if scans else None).run(packets())
        for unit in units:
            for alert in matcher.match(unit):
                verdict = "alert"
                if policy.drops(alert.signature):
                    verdict = "drop"
                    key = _flow_of_key(unit.flow)
                    if key not in dropped:
                        stats.dropped_flows += 1
                        dropped[key] = None
                        if len(dropped) > MAX_DROPPED_FLOWS:
                            dropped.popitem(last=False)
                            stats.flows_forgotten += 1
                    if key == current[0]:
                        current[1] = True
                finding = finding_from_alert(alert, engine, target, capture)
                finding.evidence["ips"] = "dropped: this packet and the rest of its flow" if verdict == "drop" \
                    else "alerted (passed)"
                record_finding(finding, result, totals, on_finding)
            if scans is not None and scans.alerts:
                record_scans(scans, target, capture, result, totals, on_finding)
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()
        close_once()
        sys.setswitchinterval(previous_interval)
        totals.source_done(pipeline_stats, started)
    for message in pipeline_stats.errors:
        result.add_error(capture, message, stage="capture")
    return stats
