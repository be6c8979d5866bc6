"""Flows: the table of TCP and UDP conversations, their reassembled streams, and the units handed
to the signature engine.

A flow is keyed by its 5-tuple in both orientations. Its *client* (initiator) is the sender of the
first SYN; without one (a capture that starts mid-connection) the receiver of the SYN/ACK, else
the first sender, unless the ports say otherwise (a well-known port talking to an ephemeral one is
the server). UDP flows likewise: the first sender, unless the ports say otherwise.

Each direction of a TCP flow is reassembled (`reassembly.Reassembler`, first-wins), its first bytes
name the application protocol (`protocols.detect`) and its parser partitions the stream into
messages and plain data; plain data is coalesced into chunks of up to `Limits.chunk` bytes, cut
early when the other side starts talking or the data has sat for `Limits.flush_after` seconds, so
every byte of the stream is in exactly one unit's new data. A chunk repeats the last
`Limits.overlap` bytes of what came before it on that side (`Inspectable.overlap` says how many),
so a pattern split across two segments or two chunks is still found in one unit. After a gap
(data the capture lost) the parser reports what it held, and the start of each of the next 64
segments is looked at for the start of a message (one usually starts a segment); until then the
data is plain.

Memory is bounded by: `max_flows` (the oldest flows that never completed a handshake go first,
then the least recently active; each flow costs about 1.6 KB of bookkeeping), the out-of-order
budget per direction, `depth` bytes inspected per direction (Suricata's
`stream.reassembly.depth`; after it the direction is no longer inspected), the parsers' own
message limits, and `memcap` over everything held by all flows (when it is exceeded the largest
holders are flushed: held data is given up as gaps and partial messages are reported as they are).
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from cloudward.network.events import Direction, FlowKey, Inspectable
from cloudward.network.protocols import NEED_MORE, ParserLimits, StreamParser, detect, new_parser
from cloudward.network.reassembly import Reassembler

TO_SERVER, TO_CLIENT = Direction.TO_SERVER, Direction.TO_CLIENT
# ports that are servers' when they meet an ephemeral port (used only without a SYN to go by)
SERVICE_PORTS = frozenset({
    21, 22, 23, 25, 53, 80, 110, 143, 443, 445, 465, 587, 993, 995, 1433, 2375, 2376, 2379, 3306,
    3333, 4444, 5432, 5555, 6379, 6667, 6697, 7777, 8080, 8443, 9200, 10250, 14444, 27017, 45700,
})


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one inspection. Defaults follow Suricata's where it has one."""

    max_flows: int = 65536
    depth: int = 1024 * 1024  # bytes inspected per direction of a TCP flow
    max_ooo_bytes: int = 256 * 1024  # out-of-order bytes held per direction before a gap is declared
    max_ooo_segments: int = 512
    memcap: int = 256 * 1024 * 1024  # all bytes held by all flows (out of order, parsers, chunks)
    chunk: int = 32 * 1024  # plain stream data per unit
    overlap: int = 1024  # bytes of earlier stream data repeated at the start of a chunk unit
    flush_after: float = 1.0  # seconds (capture time) plain data may wait for more before it is a unit
    detect_max: int = 4096  # bytes of a direction looked at to name its protocol
    new_timeout: float = 30.0  # a flow without a completed handshake (or a UDP flow without reply)
    established_timeout: float = 600.0
    udp_timeout: float = 120.0
    closed_timeout: float = 10.0
    midstream: bool = True  # pick up TCP flows without a handshake (and treat them as established)
    emit_syn: bool = False  # a unit (empty payload, extra["tcp.flags"] = "S") for each initial SYN
    defrag: bool = True  # reassemble IP fragments (else they are counted and skipped)
    max_fragmented: int = 4096  # datagrams being reassembled at once
    fragment_timeout: float = 30.0
    parser: ParserLimits = field(default_factory=ParserLimits)


@dataclass(slots=True)
class Stats:
    """Counters of one inspection; `errors` are messages for what could not be read."""

    packets: int = 0
    bytes: int = 0  # captured bytes of all packets
    ticks: int = 0
    ipv4: int = 0
    ipv6: int = 0
    tcp: int = 0
    udp: int = 0
    icmp: int = 0
    not_ip: int = 0
    other_ip: int = 0  # IP packets of other transports (GRE, ESP, SCTP ...)
    malformed: int = 0
    fragments: int = 0  # IP fragments seen (reassembled into datagrams unless Limits.defrag is off)
    fragments_reassembled: int = 0  # whole datagrams made of fragments
    fragments_dropped: int = 0  # datagrams never completed (timeout, bounds, cut by the capture)
    fragment_conflicts: int = 0  # overlapping fragments with different bytes (first wins)
    truncated: int = 0  # packets cut short by the capture's snapshot length
    flows: int = 0  # flows created
    flows_evicted: int = 0  # dropped to stay within max_flows
    flows_expired: int = 0
    flows_closed: int = 0
    midstream: int = 0  # TCP flows picked up without their handshake
    tcp_gaps: int = 0
    tcp_gap_bytes: int = 0
    # these four are added up as each flow ends (all are at the end of an inspection)
    tcp_retransmits: int = 0
    tcp_overlaps: int = 0
    tcp_conflicts: int = 0  # overlapping segments whose bytes differed
    tcp_out_of_window: int = 0
    depth_reached: int = 0  # directions no longer inspected after `depth` bytes
    uninspected_bytes: int = 0  # stream bytes past depth or bypassed
    bypassed: int = 0  # directions left uninspected because they turned encrypted (TLS, SSH)
    memcap_flushes: int = 0
    inspectables: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def address_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class Stream:
    """One direction of a flow: reassembly (TCP), protocol parser, and the units it produces.
    It is the `Sink` its parser reports to."""

    __slots__ = ("chunk", "chunk_len", "closed", "depth", "detect_buf", "detecting", "direction", "dirty", "fin",
                 "flow", "inspect", "inspected", "mem", "parser", "peer", "pkt", "reasm", "resync", "table", "tail",
                 "ts")

    def __init__(self, flow: Flow, direction: Direction, table: FlowTable) -> None:
        self.flow = flow
        self.direction = direction
        self.table = table
        self.peer = self  # set to the other direction by Flow
        self.depth = table.limits.depth
        self.reasm = Reassembler()
        self.parser: StreamParser | None = None
        self.detecting = True
        self.detect_buf = b""
        self.resync = 0  # after a gap: segments left in which to look for the start of a message
        self.chunk: list[bytes] = []
        self.chunk_len = 0
        self.tail = b""
        self.inspect = True
        self.inspected = 0
        self.fin = -1  # stream offset of our FIN, once seen
        self.closed = False
        self.ts = 0.0
        self.pkt = 0
        self.mem = 0
        self.dirty = False

    # ------------------------------------------------------------------ input

    def deliver(self, pieces: list[bytes | int]) -> None:
        """In-order data (bytes) and gaps (int) from reassembly."""
        for piece in pieces:
            if type(piece) is int:
                self.table.stats.tcp_gaps += 1
                self.table.stats.tcp_gap_bytes += piece
                self._resync()
            else:
                self.data(piece)  # type: ignore[arg-type]

    def data(self, data: bytes) -> None:
        if not self.inspect:
            self.table.stats.uninspected_bytes += len(data)
            return
        peer = self.peer
        if peer.detect_buf:
            peer.decide(data)  # the other side had its say: name its protocol with what it sent
        if peer.chunk_len:
            peer.flush_chunk()  # and its pending plain data is one unit
        inspected = self.inspected + len(data)
        last = inspected >= self.depth
        if last:
            room = self.depth - self.inspected
            self.table.stats.uninspected_bytes += len(data) - room
            data = data[:room]
            inspected = self.depth
        self.inspected = inspected
        if data:
            parser = self.parser
            if parser is not None:
                if parser.skip >= len(data):
                    parser.skip -= len(data)
                    self.passthrough(data)
                else:
                    parser.feed(data, self)
                    if parser.bypass:
                        self._bypass()
            elif self.detecting:
                self._detect(data)
            else:
                self.passthrough(data)
        if last and self.inspect:
            self.table.stats.depth_reached += 1
            self.finish()
            self._stop()

    def _detect(self, data: bytes) -> None:
        buf = self.detect_buf + data if self.detect_buf else data
        flow = self.flow
        known = flow.app_proto
        if known is not None and not self.resync:
            proto: str | None = known
        else:
            key = flow.key
            proto = detect(buf, to_server=self.direction is TO_SERVER, sport=key.sport, dport=key.dport,
                           final=len(buf) >= self.table.limits.detect_max)
            if proto == NEED_MORE:
                self.detect_buf = buf
                return
            if self.resync and (proto is None or (known is not None and proto != known)):
                # after a gap, mid-message: pass this segment on and look again at the next one
                self.resync -= 1
                self.detect_buf = b""
                self.passthrough(buf)
                if not self.resync:
                    self.detecting = False
                return
        self.resync = 0
        self.detect_buf = b""
        self._adopt(proto)
        if self.parser is not None:
            self.parser.feed(buf, self)
            if self.parser.bypass:
                self._bypass()
        else:
            self.passthrough(buf)
        if proto is not None:
            peer = self.peer
            if peer.detecting and peer.parser is None and peer.detect_buf:
                pending, peer.detect_buf = peer.detect_buf, b""
                peer._adopt(proto)
                if peer.parser is not None:
                    peer.parser.feed(pending, peer)

    def decide(self, reply: bytes = b"") -> None:
        """Name the protocol from the bytes held for detection, as if no more were coming (`reply`:
        what the other side answered them with)."""
        buf, self.detect_buf = self.detect_buf, b""
        flow = self.flow
        proto = flow.app_proto
        self.resync = 0
        if proto is None:
            key = flow.key
            verdict = detect(buf, to_server=self.direction is TO_SERVER, sport=key.sport, dport=key.dport,
                             final=True, reply=reply)
            proto = verdict if verdict != NEED_MORE else None
        self._adopt(proto)
        if self.parser is not None:
            self.parser.feed(buf, self)
            if self.parser.bypass:
                self._bypass()
        else:
            self.passthrough(buf)

    def _adopt(self, proto: str | None) -> None:
        self.detecting = False
        if proto is None:
            return
        flow = self.flow
        if flow.app_proto is None:
            flow.app_proto = proto
        limits = self.table.limits
        self.parser = new_parser(proto, to_server=self.direction is TO_SERVER, limits=limits.parser,
                                 shared=flow.shared)

    def _resync(self) -> None:
        """After a gap: report what the parser held, and name the protocol afresh from the next bytes."""
        if self.parser is not None:
            self.parser.close(self)
        elif self.detect_buf:
            buf, self.detect_buf = self.detect_buf, b""
            self.passthrough(buf)
        self.flush_chunk()
        self.tail = b""
        if self.inspect:
            self.parser = None
            self.detecting = True
            self.resync = 64

    def _bypass(self) -> None:
        self.table.stats.bypassed += 1
        self.flush_chunk()
        self._stop()

    def _stop(self) -> None:
        """No more inspection of this direction: reassembly only follows the sequence numbers."""
        self.inspect = False
        self.parser = None
        self.detecting = False
        self.reasm.segs.clear()
        self.reasm.held = 0

    def finish(self) -> None:
        """End of this direction (FIN, RST, expiry, end of input): report everything held."""
        self.reasm_flush()
        if self.detect_buf:
            self.decide()
        if self.parser is not None:
            self.parser.close(self)
        self.flush_chunk()

    def reasm_flush(self) -> None:
        if self.reasm.segs:
            out: list[bytes | int] = []
            self.reasm.flush(out)
            self.deliver(out)

    # ------------------------------------------------------------------ the Sink protocol

    def message(self, raw: bytes, buffers: dict[str, bytes], extra: dict[str, object] | None = None) -> None:
        if self.chunk_len:
            self.flush_chunk()
        flow = self.flow
        table = self.table
        table.out.append(Inspectable(flow.key, self.direction, self.ts, raw, flow.app_proto, buffers,
                                     flow.established, self.pkt, extra if extra is not None else {}))
        self.tail = raw[-table.limits.overlap:] if table.limits.overlap else b""

    def passthrough(self, data: bytes) -> None:
        if not data:
            return
        self.chunk.append(data)
        self.chunk_len += len(data)
        if self.chunk_len >= self.table.limits.chunk:
            self.flush_chunk()
        elif not self.dirty:
            self.dirty = True
            self.table.dirty.add(self)

    def flush_chunk(self) -> None:
        if not self.chunk_len:
            return
        tail = self.tail
        chunk = self.chunk
        if tail:
            chunk.insert(0, tail)
        payload = b"".join(chunk) if len(chunk) > 1 else chunk[0]  # one copy, the context included
        chunk.clear()
        self.chunk_len = 0
        flow = self.flow
        table = self.table
        table.out.append(Inspectable(flow.key, self.direction, self.ts, payload, flow.app_proto, {},
                                     flow.established, self.pkt, {}, len(tail)))
        window = table.limits.overlap
        self.tail = payload[-window:] if window else b""

    def held(self) -> int:
        parser = self.parser
        return (self.reasm.held + self.chunk_len + len(self.detect_buf)
                + (len(parser.buf) if parser is not None else 0))


class Flow:
    __slots__ = ("app_proto", "client", "closed", "established", "first", "key", "keys", "last", "mem",
                 "replied", "server", "shared", "syn", "synack")

    def __init__(self, key: FlowKey, keys: tuple[tuple[object, ...], tuple[object, ...]], table: FlowTable,
                 ts: float) -> None:
        self.key = key
        self.keys = keys  # (client -> server, server -> client) table keys
        self.client = Stream(self, TO_SERVER, table)
        self.server = Stream(self, TO_CLIENT, table)
        self.client.peer, self.server.peer = self.server, self.client
        self.established = False
        self.syn = self.synack = False
        self.replied = False
        self.app_proto: str | None = None
        self.shared: dict[str, object] = {}
        self.first = self.last = ts
        self.closed = False
        self.mem = 0


class FlowTable:
    """All live flows; the pipeline feeds it decoded packets and drains `out`."""

    def __init__(self, limits: Limits, stats: Stats) -> None:
        self.limits = limits
        self.stats = stats
        self.flows: dict[tuple[object, ...], Stream] = {}  # both orientations -> the sending side
        self.count = 0
        self.fresh: OrderedDict[Flow, None] = OrderedDict()  # not (yet) established, oldest first
        self.dirty: set[Stream] = set()  # streams with plain data waiting to become a unit
        self.out: list[Inspectable] = []
        self.mem = 0
        self.now = 0.0
        self.pkt = 0
        self._next_flush = 0.0
        self._next_expiry = 0.0
        self.next_event = 0.0
        self.on_end: Callable[[Flow], None] | None = None  # told of every flow it forgets (scans.py)

    # ------------------------------------------------------------------ flows

    def _create(self, proto: int, src: bytes, sport: int, dst: bytes, dport: int,
                client_is_src: bool) -> Flow:
        if self.count >= self.limits.max_flows:
            self._evict()
        if not client_is_src:
            src, sport, dst, dport = dst, dport, src, sport
        name = "tcp" if proto == 6 else "udp"
        fwd = (proto, src, sport, dst, dport)
        rev = (proto, dst, dport, src, sport)
        flow = Flow(FlowKey(name, address_text(src), sport, address_text(dst), dport), (fwd, rev), self, self.now)
        self.flows[fwd] = flow.client
        self.flows[rev] = flow.server
        self.count += 1
        self.fresh[flow] = None
        self.stats.flows += 1
        return flow

    def _remove(self, flow: Flow) -> None:
        fwd, rev = flow.keys
        if self.flows.get(fwd) is flow.client:
            if self.on_end is not None:
                self.on_end(flow)
            del self.flows[fwd]
            del self.flows[rev]
            self.count -= 1
        self.fresh.pop(flow, None)
        stats = self.stats
        for stream in (flow.client, flow.server):
            self.dirty.discard(stream)
            self.mem -= stream.mem
            stream.mem = 0
            reasm = stream.reasm
            stats.tcp_retransmits += reasm.retransmits
            stats.tcp_overlaps += reasm.overlaps
            stats.tcp_conflicts += reasm.conflicts
            stats.tcp_out_of_window += reasm.far
            reasm.retransmits = reasm.overlaps = reasm.conflicts = reasm.far = 0
        # break the flow <-> stream cycles so reference counting frees the flow at once: a flood of
        # short-lived flows otherwise piles up for the cyclic garbage collector to walk
        del flow.client.flow, flow.client.peer, flow.server.flow, flow.server.peer

    def _end(self, flow: Flow) -> None:
        """Report everything the flow holds, then forget it."""
        if not flow.closed:
            flow.client.finish()
            flow.server.finish()
        self._remove(flow)

    def _evict(self) -> None:
        self.stats.flows_evicted += 1
        if self.fresh:
            flow, _ = self.fresh.popitem(last=False)
            self._end(flow)
            return
        batch = max(1, self.limits.max_flows // 16)
        flows = sorted({stream.flow for stream in self.flows.values()}, key=lambda f: f.last)[:batch]
        self.stats.flows_evicted += len(flows) - 1
        for flow in flows:
            self._end(flow)

    def _establish(self, flow: Flow) -> None:
        flow.established = True
        self.fresh.pop(flow, None)

    def _close(self, flow: Flow) -> None:
        if not flow.closed:
            flow.client.finish()
            flow.server.finish()
            flow.closed = True
            self.stats.flows_closed += 1
            self.fresh.pop(flow, None)
            for stream in (flow.client, flow.server):
                self.dirty.discard(stream)
                self.mem -= stream.mem
                stream.mem = 0

    # ------------------------------------------------------------------ packets

    def tcp(self, src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int,
            payload: bytes, missing: int) -> None:
        stream = self.flows.get((6, src, sport, dst, dport))
        if stream is None or flags & 0x07 or missing or not stream.flow.established:
            self._tcp(stream, src, dst, sport, dport, flags, seq, ack, payload, missing)
            return
        # the common case: an established flow, no SYN/FIN/RST
        flow = stream.flow
        if flow.closed:
            return
        flow.last = self.now
        peer = stream.peer
        if flags & 0x10 and (peer.reasm.segs or peer.fin > peer.reasm.offset):
            self._acked(peer, ack)
        if payload:
            stream.ts = self.now
            stream.pkt = self.pkt
            reasm = stream.reasm
            if not stream.inspect:
                self._uninspected(stream, seq, payload, 0)
            elif not reasm.segs and reasm.base >= 0 and (seq - reasm.base - reasm.offset) & 0xFFFFFFFF == 0:
                size = len(payload)
                reasm.offset += size
                parser = stream.parser
                # Stream.data() for the common case, inline: a parsed (or plain) direction in mid-stream
                if (stream.inspected + size < stream.depth and not peer.chunk_len and not peer.detect_buf
                        and (parser is not None or not stream.detecting)):
                    stream.inspected += size
                    if parser is None:
                        stream.passthrough(payload)
                    elif parser.skip >= size:
                        parser.skip -= size
                        stream.passthrough(payload)
                    else:
                        parser.feed(payload, stream)
                        if parser.bypass:
                            stream._bypass()
                else:
                    stream.data(payload)
            else:
                self._segment(stream, seq, payload, 0)
            parser = stream.parser
            held = (reasm.held + stream.chunk_len + len(stream.detect_buf)
                    + (len(parser.buf) if parser is not None else 0))
            if held != stream.mem:
                self.mem += held - stream.mem
                stream.mem = held
                if self.mem > self.limits.memcap:
                    self._reclaim()
        if stream.fin >= 0:
            self._fin_reached(stream)

    def _tcp(self, stream: Stream | None, src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int,
             ack: int, payload: bytes, missing: int) -> None:
        """Everything but the common case: new flows, handshakes, FIN, RST, cut segments."""
        syn = flags & 0x02
        if stream is None:
            if syn:
                if flags & 0x10:  # SYN/ACK: we missed the SYN, the receiver is the client
                    flow = self._create(6, src, sport, dst, dport, False)
                    stream = flow.server
                else:
                    flow = self._create(6, src, sport, dst, dport, True)
                    stream = flow.client
                    if self.limits.emit_syn:
                        unit = Inspectable(flow.key, TO_SERVER, self.now, b"", None, {}, False, self.pkt,
                                           {"tcp.flags": "S"})
                        self.out.append(unit)
            elif flags & 0x04 or not self.limits.midstream:  # a reset for a flow we do not know
                return
            else:
                flow = self._create(6, src, sport, dst, dport, _is_client(sport, dport))
                stream = self.flows[(6, src, sport, dst, dport)]
                self.stats.midstream += 1
                self._establish(flow)
        flow = stream.flow
        if flow.closed:
            if syn and not flags & 0x10 and stream is flow.client:  # the 5-tuple is reused
                self._remove(flow)
                self._tcp(None, src, dst, sport, dport, flags, seq, ack, payload, missing)
            return
        flow.last = self.now
        reasm = stream.reasm
        if syn:
            reasm.start(seq + 1)
            if flags & 0x10:
                flow.synack = True
            else:
                flow.syn = True
            seq += 1
        elif flags & 0x10 and not flow.established and flow.synack and stream is flow.client:
            self._establish(flow)
        peer = stream.peer
        if flags & 0x10 and (peer.reasm.segs or peer.fin > peer.reasm.offset):
            self._acked(peer, ack)
        if (payload or missing) and not stream.closed:
            stream.ts, stream.pkt = self.now, self.pkt
            if not stream.inspect:
                self._uninspected(stream, seq, payload, missing)
            else:
                self._segment(stream, seq, payload, missing)
            self._account(stream)
        if flags & 0x04:
            self._close(flow)
            return
        if flags & 0x01 and stream.fin < 0:
            stream.fin = reasm.offset_of(seq + len(payload) + missing)
        if stream.fin >= 0:
            self._fin_reached(stream)

    def _segment(self, stream: Stream, seq: int, payload: bytes, missing: int) -> None:
        reasm = stream.reasm
        out: list[bytes | int] = []
        if payload:
            reasm.add(seq, payload, out)
        if missing:  # the capture cut this segment short: the rest is a gap
            end = reasm.offset_of(seq + len(payload) + missing)
            if end > reasm.offset and not reasm.segs:
                out.append(end - reasm.offset)
                reasm.offset = end
        if reasm.held > self.limits.max_ooo_bytes or len(reasm.segs) > self.limits.max_ooo_segments:
            reasm.skip(out)
        if out:
            stream.deliver(out)

    def _uninspected(self, stream: Stream, seq: int, payload: bytes, missing: int) -> None:
        """Past depth or bypassed: only follow the sequence numbers (for the FIN)."""
        reasm = stream.reasm
        self.stats.uninspected_bytes += len(payload)
        if reasm.base < 0:
            reasm.base = seq
        end = reasm.offset_of(seq + len(payload) + missing)
        if end > reasm.offset:
            reasm.offset = end

    def _acked(self, peer: Stream, ack: int) -> None:
        """The peer's data up to `ack` was received: holes before it are gaps in the capture. With
        the peer's FIN acknowledged, everything missing before the FIN is lost too."""
        out: list[bytes | int] = []
        reasm = peer.reasm
        reasm.acked(ack, out)
        if peer.fin >= 0 and reasm.offset < peer.fin < reasm.offset_of(ack):
            reasm.flush(out)
            if reasm.offset < peer.fin:
                out.append(peer.fin - reasm.offset)
                reasm.offset = peer.fin
        if out:
            peer.ts, peer.pkt = self.now, self.pkt
            peer.deliver(out)
            self._account(peer)
            if peer.fin >= 0:
                self._fin_reached(peer)

    def _fin_reached(self, stream: Stream) -> None:
        if not stream.closed and stream.reasm.offset >= stream.fin:
            stream.closed = True
            stream.finish()
            if stream.peer.closed:
                self._close(stream.flow)

    def udp(self, src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> Stream:
        """The sending side of the datagram's flow (the pipeline builds the unit)."""
        stream = self.flows.get((17, src, sport, dst, dport))
        if stream is None:
            flow = self._create(17, src, sport, dst, dport, _is_client(sport, dport))
            stream = self.flows[(17, src, sport, dst, dport)]
        flow = stream.flow
        flow.last = self.now
        if stream is flow.server and not flow.replied:
            flow.replied = True
            self._establish(flow)
        return stream

    # ------------------------------------------------------------------ memory and time

    def _account(self, stream: Stream) -> None:
        held = stream.held()
        if held != stream.mem:
            self.mem += held - stream.mem
            stream.mem = held
            if self.mem > self.limits.memcap:
                self._reclaim()

    def _reclaim(self) -> None:
        self.stats.memcap_flushes += 1
        streams = sorted((s for s in self.flows.values() if s.mem), key=lambda s: s.mem, reverse=True)
        target = self.limits.memcap * 3 // 4
        for stream in streams:
            if self.mem <= target:
                break
            stream.finish()  # gives up holes, reports partial messages and chunks
            stream._resync()
            self._account(stream)

    def tick(self, now: float) -> None:
        """Capture time moved on: flush plain data that waited long enough, expire idle flows.
        Cheap to call for every packet; work is done only once `next_event` has passed."""
        if now > self.now:
            self.now = now
        if now < self.next_event:
            return
        if now >= self._next_flush:
            self._next_flush = now + self.limits.flush_after
            stale = [s for s in self.dirty if now - s.ts >= self.limits.flush_after]
            for stream in stale:
                self.dirty.discard(stream)
                stream.dirty = False
                stream.flush_chunk()
        if now >= self._next_expiry:
            self._next_expiry = now + max(1.0, min(self.limits.new_timeout, self.limits.closed_timeout) / 2)
            self._expire(now)
        self.next_event = min(self._next_flush, self._next_expiry)

    def _expire(self, now: float) -> None:
        limits = self.limits
        expired = []
        for key, stream in self.flows.items():
            if stream.direction is not TO_SERVER:
                continue
            flow = stream.flow
            if flow.closed:
                timeout = limits.closed_timeout
            elif not flow.established:
                timeout = limits.new_timeout
            elif key[0] == 17:
                timeout = limits.udp_timeout
            else:
                timeout = limits.established_timeout
            if now - flow.last > timeout:
                expired.append(flow)
        for flow in expired:
            self.stats.flows_expired += 1
            self._end(flow)

    def finish(self) -> None:
        """End of input: report everything every flow holds."""
        for flow in list({stream.flow for stream in self.flows.values()}):
            self._end(flow)
        self.dirty.clear()


def _is_client(sport: int, dport: int) -> bool:
    """Without a SYN: is the sender of this first packet the client? A service port talking to
    a higher, non-service port is the server; otherwise the first sender is the client."""
    if sport in SERVICE_PORTS and dport not in SERVICE_PORTS:
        return False
    return not sport < 1024 <= dport
