"""Flow tracking and TCP reassembly: order, overlaps, retransmissions, gaps, and the memory bounds
under hostile traffic (half-open floods, bodies that never end, out-of-order hoarding)."""

from __future__ import annotations

import itertools
import random
import socket
import struct
from dataclasses import dataclass, field

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.network.capture import Packet
from cloudward.network.events import Direction, Inspectable
from cloudward.network.flows import Limits, Stats
from cloudward.network.pipeline import Pipeline
from cloudward.network.protocols import ParserLimits
from cloudward.network.reassembly import Reassembler

SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
_ETH4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
_ETH6 = _ETH4[:12] + b"\x86\xdd"


@dataclass
class Conversation:
    """Frames of one TCP conversation, built with struct (fast enough for floods)."""

    sport: int = 40000
    dport: int = 80
    client: str = "10.0.0.1"
    server: str = "10.0.0.2"
    cseq: int = 1000
    sseq: int = 900_000
    ts: float = 1_700_000_000.0
    v6: bool = False
    packets: list[Packet] = field(default_factory=list)

    def frame(self, data: bytes, flags: int, *, from_client: bool = True, seq: int | None = None,
              cut: int = 0) -> Packet:
        family = socket.AF_INET6 if self.v6 else socket.AF_INET
        src, dst = socket.inet_pton(family, self.client), socket.inet_pton(family, self.server)
        sp, dp = self.sport, self.dport
        if from_client:
            seq = self.cseq if seq is None else seq
            ack = self.sseq
        else:
            src, dst, sp, dp = dst, src, dp, sp
            seq = self.sseq if seq is None else seq
            ack = self.cseq
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0) + data
        if self.v6:
            frame = _ETH6 + struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + src + dst + tcp
        else:
            frame = _ETH4 + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst) + tcp
        self.ts += 0.001
        return Packet(self.ts, 1, frame[:len(frame) - cut], len(frame))

    def open(self) -> list[Packet]:
        out = [self.frame(b"", SYN)]
        self.cseq += 1
        out.append(self.frame(b"", SYN | ACK, from_client=False))
        self.sseq += 1
        out.append(self.frame(b"", ACK))
        return out

    def send(self, data: bytes, *, from_client: bool = True, segment: int = 1448) -> list[Packet]:
        out = []
        for i in range(0, len(data), segment):
            piece = data[i:i + segment]
            out.append(self.frame(piece, ACK | PSH, from_client=from_client))
            if from_client:
                self.cseq += len(piece)
            else:
                self.sseq += len(piece)
        return out

    def segments(self, data: bytes, size: int) -> list[Packet]:
        """The segments of `data` from the client without advancing (for reordering)."""
        return [self.frame(data[i:i + size], ACK | PSH, seq=self.cseq + i) for i in range(0, len(data), size)]

    def close(self) -> list[Packet]:
        out = [self.frame(b"", FIN | ACK)]
        self.cseq += 1
        out.append(self.frame(b"", FIN | ACK, from_client=False))
        self.sseq += 1
        out.append(self.frame(b"", ACK))
        return out


def run_pipeline(packets: list[Packet], limits: Limits | None = None) -> tuple[list[Inspectable], Stats]:
    stats = Stats()
    units = list(Pipeline(limits, stats).run(packets))
    return units, stats


def client_stream(units: list[Inspectable]) -> bytes:
    """The client's bytes as the units carry them, without the repeated overlap."""
    return b"".join(u.payload[u.overlap:] for u in units if u.direction is Direction.TO_SERVER)


# --------------------------------------------------------------------------- order and overlaps


def test_out_of_order_segments_are_reassembled() -> None:
    conv = Conversation()
    request = b"GET /reordered/path/to/something HTTP/1.1\r\nHost: example\r\nUser-Agent: x\r\n\r\n"
    packets = conv.open()
    segments = conv.segments(request, 16)
    order = [2, 0, 4, 1, 3, *range(5, len(segments))]
    packets += [segments[i] for i in order]
    conv.cseq += len(request)
    units, stats = run_pipeline(packets + conv.close())
    requests = [u for u in units if "http.uri" in u.buffers]
    assert [u.buffers["http.uri"] for u in requests] == [b"/reordered/path/to/something"]
    assert requests[0].payload == request and stats.tcp_gaps == 0 and stats.tcp_conflicts == 0


def test_overlapping_segments_first_wins() -> None:
    """An evasion classic: the same bytes sent twice with different content. Held bytes win."""
    conv = Conversation(dport=9999)
    real = b"harmless text and more harmless text\n"
    packets = conv.open()
    packets.append(conv.frame(real[20:], ACK | PSH, seq=conv.cseq + 20))  # the tail arrives first
    packets.append(conv.frame(b"CONFIG SET dir /root/.ssh/\n", ACK | PSH, seq=conv.cseq + 10))  # overlaps it
    packets.append(conv.frame(real[:20], ACK | PSH, seq=conv.cseq))  # then the head
    packets.append(conv.frame(b"EVIL", ACK | PSH, seq=conv.cseq))  # a retransmission with other data: dropped
    conv.cseq += len(real)
    units, stats = run_pipeline(packets + conv.close())
    assert client_stream(units) == real[:10] + b"CONFIG SET" + real[20:]
    # the head overlapped what was held too: two overlaps with different bytes
    assert stats.tcp_conflicts == 2 and stats.tcp_overlaps == 2 and stats.tcp_retransmits == 1


def test_retransmissions_are_not_inspected_twice() -> None:
    conv = Conversation(dport=9999)
    data = b"A" * 1000 + b"MARKER" + b"B" * 1000
    packets = conv.open()
    sent = conv.segments(data, 500)
    packets += [p for s in sent for p in (s, s)] + [sent[1]]
    conv.cseq += len(data)
    units, stats = run_pipeline(packets + conv.close())
    assert client_stream(units) == data
    assert sum(u.payload[u.overlap:].count(b"MARKER") for u in units) == 1
    assert stats.tcp_retransmits == 6


def test_pattern_split_across_segments_is_found_in_one_unit() -> None:
    conv = Conversation(dport=9999)
    packets = conv.open()
    packets += conv.send(b"x" * 30 + b"CONFIG S")
    packets += conv.send(b"ET dir /root/.ssh" + b"y" * 30)
    units, _ = run_pipeline(packets + conv.close(), Limits(chunk=32, overlap=16))
    client = [u for u in units if u.direction is Direction.TO_SERVER]
    assert len(client) >= 2  # the chunk limit cut the stream
    hits = [u for u in client if b"CONFIG SET dir" in u.payload]
    assert len(hits) == 1  # with the overlap, the pattern is whole in exactly one unit
    unit = hits[0]
    assert unit.payload.find(b"CONFIG SET dir") + len(b"CONFIG SET dir") > unit.overlap  # ends in new data
    assert client_stream(units) == b"x" * 30 + b"CONFIG SET dir /root/.ssh" + b"y" * 30


def test_units_turn_with_the_conversation() -> None:
    conv = Conversation(dport=9999)
    packets = conv.open() + conv.send(b"good ") + conv.send(b"morning") + conv.send(b"hi client", from_client=False)
    packets += conv.send(b"bye")
    units, _ = run_pipeline(packets + conv.close())
    assert [(u.direction.value, u.payload[u.overlap:]) for u in units] == [
        ("to_server", b"good morning"), ("to_client", b"hi client"), ("to_server", b"bye")]
    assert all(u.established and u.app_proto is None for u in units)


# --------------------------------------------------------------------------- gaps


def test_a_lost_segment_becomes_a_gap_once_the_buffer_is_full() -> None:
    conv = Conversation(dport=9999)
    data = bytes(range(256)) * 64  # 16 KiB
    packets = conv.open()
    segments = conv.segments(data, 1000)
    packets += segments[:1] + segments[2:]  # the second segment never arrives
    conv.cseq += len(data)
    units, stats = run_pipeline(packets + conv.close(), Limits(max_ooo_bytes=4000))
    assert stats.tcp_gaps == 1 and stats.tcp_gap_bytes == 1000
    assert client_stream(units) == data[:1000] + data[2000:]


def test_an_ack_beyond_the_hole_declares_the_gap_at_once() -> None:
    conv = Conversation()
    first = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
    lost = b"GET /lost HTTP/1.1\r\nHost: a\r\n\r\n"
    third = b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
    packets = conv.open() + conv.send(first)
    conv.cseq += len(lost)  # the capture missed this segment
    packets += conv.send(third)
    packets.append(conv.frame(b"", ACK, from_client=False))  # the server acknowledges all of it
    units, stats = run_pipeline(packets)  # no FIN: the gap is not found by the end of input
    assert [u.buffers["http.uri"] for u in units if "http.uri" in u.buffers] == [b"/one", b"/three"]
    assert stats.tcp_gaps == 1 and stats.tcp_gap_bytes == len(lost)


def test_segments_cut_by_the_snapshot_length() -> None:
    conv = Conversation(dport=9999)
    packets = conv.open()
    packets.append(conv.frame(b"a" * 200, ACK | PSH, cut=100))
    conv.cseq += 200
    packets += conv.send(b"tail")
    units, stats = run_pipeline(packets + conv.close())
    assert stats.truncated == 1 and stats.tcp_gaps == 1 and stats.tcp_gap_bytes == 100
    assert client_stream(units) == b"a" * 100 + b"tail"


# --------------------------------------------------------------------------- bounds


def test_half_open_flood_is_bounded_and_spares_established_flows() -> None:
    limits = Limits(max_flows=1000, emit_syn=True)  # a unit per SYN: a chance to look at the table
    pipeline = Pipeline(limits)
    victim = Conversation(dport=6379, client="10.9.9.9")
    packets = victim.open() + victim.send(b"*1\r\n$4\r\nPING\r\n")
    template = bytearray(Conversation(dport=80).frame(b"", SYN).frame)
    for i in range(100_000):  # 100,000 SYNs from distinct addresses and ports, never answered
        struct.pack_into("!I", template, 26, 0x0A000000 + i + 1)  # source address
        struct.pack_into("!H", template, 34, 1024 + i % 60000)  # source port
        packets.append(Packet(1_700_000_000.0 + i / 1000, 1, bytes(template), len(template)))
    packets += victim.send(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$3\r\ndir\r\n")
    largest = 0
    commands = []
    for unit in pipeline.run(iter(packets)):
        largest = max(largest, pipeline.table.count, len(pipeline.table.flows) // 2)
        if unit.app_proto == "redis":
            commands.append(unit.buffers["redis.command"])
    stats = pipeline.stats
    assert stats.flows == 100_001 and stats.flows_evicted == 100_001 - 1000  # every flow beyond the table
    assert largest <= 1000 and pipeline.table.count == 0  # bounded while it ran; all flushed at the end
    assert commands == [b"PING", b"CONFIG GET dir"]  # the established flow was never the one evicted


def test_flow_table_never_exceeds_max_flows() -> None:
    limits = Limits(max_flows=50)
    pipeline = Pipeline(limits)
    packets = []
    for i in range(500):
        conv = Conversation(sport=30000 + i, dport=9999)
        packets += conv.open() + conv.send(b"data %d" % i)
    sizes = []
    for _ in pipeline.run(iter(packets)):
        sizes.append(pipeline.table.count)
    assert max(sizes) <= 50 and pipeline.stats.flows_evicted >= 450


def test_http_body_that_never_ends_stops_at_depth() -> None:
    conv = Conversation()
    limits = Limits(depth=256 * 1024, parser=ParserLimits(body_max=16 * 1024))
    pipeline = Pipeline(limits)
    packets = conv.open() + conv.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000000\r\n\r\n")
    body = b"Z" * 1448
    packets += [p for _ in range(2000) for p in conv.send(body)]  # 2.9 MB of a body that never ends
    largest = 0
    units = []
    for unit in pipeline.run(iter(packets)):
        units.append(unit)
        largest = max(largest, pipeline.table.mem)
    request = [u for u in units if "http.method" in u.buffers]
    assert len(request) == 1 and request[0].extra["truncated"] is True
    assert request[0].buffers["http.request_body"] == b"Z" * 16 * 1024
    inspected = sum(len(u.payload) - u.overlap for u in units)
    assert inspected == 256 * 1024
    stats = pipeline.stats
    assert stats.depth_reached == 1 and stats.uninspected_bytes == 2000 * 1448 + len(packets[3].frame) - 54 - 256 * 1024
    assert largest <= limits.chunk + limits.parser.message_max + limits.parser.body_max


def test_memcap_flushes_the_largest_holders() -> None:
    limits = Limits(memcap=300_000, max_ooo_bytes=200_000, max_ooo_segments=10_000)
    pipeline = Pipeline(limits)
    packets = []
    for i in range(10):
        conv = Conversation(sport=31000 + i, dport=9999)
        packets += conv.open() + conv.send(b"head")
        # everything after a hole: held, waiting for the hole to fill
        packets += [conv.frame(b"q" * 1000, ACK | PSH, seq=conv.cseq + 10 + k * 1000) for k in range(60)]
    top = 0
    for _ in pipeline.run(iter(packets)):
        top = max(top, pipeline.table.mem)
    stats = pipeline.stats
    assert stats.memcap_flushes >= 1 and top <= limits.memcap + 1000
    assert stats.tcp_gaps >= 10  # each flow's hole was given up, its data inspected


# --------------------------------------------------------------------------- flows


def test_midstream_pickup_names_the_server_by_its_port() -> None:
    conv = Conversation(sport=51000, dport=80)
    packets = conv.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", from_client=False)
    packets += conv.send(b"GET /later HTTP/1.1\r\nHost: a\r\n\r\n")
    units, stats = run_pipeline(packets)
    assert stats.midstream == 1 and stats.flows == 1
    assert {(u.flow.dport, u.direction) for u in units} == {(80, Direction.TO_CLIENT), (80, Direction.TO_SERVER)}
    request = next(u for u in units if "http.uri" in u.buffers)
    assert request.established and request.flow.src == "10.0.0.1"


def test_no_midstream_pickup_when_asked() -> None:
    conv = Conversation(dport=80)
    units, stats = run_pipeline(conv.send(b"GET / HTTP/1.1\r\n\r\n"), Limits(midstream=False))
    assert units == [] and stats.flows == 0


def test_syn_ack_first_and_handshake_states() -> None:
    conv = Conversation(dport=9999)
    handshake = conv.open()
    units, stats = run_pipeline(handshake[1:] + conv.send(b"after a missed syn"))
    assert stats.flows == 1 and units[0].flow.src == "10.0.0.1" and units[0].direction is Direction.TO_SERVER
    assert units[0].established  # SYN/ACK then the client's ACK
    conv = Conversation(dport=9999)
    early = conv.frame(b"data before the handshake", ACK | PSH, seq=conv.cseq + 1)
    units, _ = run_pipeline([*conv.open()[:1], early])
    assert units and not units[0].established


def test_fin_and_rst_close_and_the_tuple_can_be_reused() -> None:
    first = Conversation(dport=9999)
    packets = first.open() + first.send(b"first life") + first.close()
    second = Conversation(dport=9999, cseq=5000)
    packets += second.open() + second.send(b"second life")
    packets.append(second.frame(b"", RST))
    packets += second.send(b"after the reset")  # ignored: the flow is closed
    units, stats = run_pipeline(packets)
    assert [u.payload for u in units] == [b"first life", b"second life"]
    assert stats.flows == 2 and stats.flows_closed == 2


def test_idle_flows_expire_and_report_what_they_held() -> None:
    conv = Conversation(dport=6379)
    packets = conv.open() + conv.send(b"*2\r\n$3\r\nGET\r\n")  # a command cut off mid-way
    later = Conversation(sport=40001, dport=9999, ts=conv.ts + 3600)
    packets += later.open() + later.send(b"much later")
    pipeline = Pipeline(Limits())
    units = list(pipeline.run(iter(packets)))
    assert pipeline.stats.flows_expired == 1
    partial = units[0]
    assert partial.buffers["redis.command"] == b"GET" and partial.extra["truncated"] is True
    assert partial.packet == 4


def test_udp_flows_direction_and_established() -> None:
    query = bytes(dpkt.dns.DNS(id=5, qd=[dpkt.dns.DNS.Q(name="iplogger.org")]))

    def datagram(src: str, dst: str, sport: int, dport: int, data: bytes) -> Packet:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(data), 1, 0, 64, 17, 0, socket.inet_aton(src),
                         socket.inet_aton(dst))
        return Packet(1.0, 1, _ETH4 + ip + udp, 0)

    answer = dpkt.dns.DNS(query)
    answer.op = dpkt.dns.DNS_QR
    units, stats = run_pipeline([datagram("10.0.0.1", "10.0.0.53", 33333, 53, query),
                                 datagram("10.0.0.53", "10.0.0.1", 53, 33333, bytes(answer)),
                                 datagram("10.0.0.1", "10.0.0.7", 5000, 6000, b"not dns")])
    assert [(u.direction, u.established, u.app_proto) for u in units] == [
        (Direction.TO_SERVER, False, "dns"), (Direction.TO_CLIENT, True, "dns"), (Direction.TO_SERVER, False, None)]
    assert units[0].buffers["dns.query"] == b"iplogger.org" and stats.flows == 2


def test_ipv6_flows_and_ipv4_fragments() -> None:
    conv = Conversation(client="fd00::1", server="fd00::2", v6=True)
    packets = conv.open() + conv.send(b"GET /six HTTP/1.1\r\nHost: [fd00::2]:80\r\n\r\n") + conv.close()
    fragment = dpkt.ip.IP(src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"), p=17,
                          mf=1, data=b"\x00" * 40)
    packets.append(Packet(2.0, 1, _ETH4 + bytes(fragment), 0))
    units, stats = run_pipeline(packets)
    request = next(u for u in units if "http.uri" in u.buffers)
    assert request.flow.src == "fd00::1" and request.buffers["http.host"] == b"[fd00::2]"
    assert stats.ipv6 == len(packets) - 1 and stats.fragments == 1


def test_initial_syns_as_units_when_asked() -> None:
    conv = Conversation(dport=22)
    units, _ = run_pipeline(conv.open(), Limits(emit_syn=True))
    assert [(u.payload, u.extra) for u in units] == [(b"", {"tcp.flags": "S"})]


def test_a_parser_bug_is_recorded_and_inspection_goes_on(monkeypatch: object) -> None:
    """Mocked: a parser that raises stands in for a bug no real input is known to trigger."""
    from cloudward.network.protocols import irc

    def broken(self: object, raw: bytes, sink: object, truncated: bool) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(irc.IrcParser, "line", broken)  # type: ignore[attr-defined]
    bad = Conversation(dport=6667)
    good = Conversation(sport=40001, dport=9999)
    packets = bad.open() + bad.send(b"NICK x\r\n") + good.open() + good.send(b"still inspected")
    units, stats = run_pipeline(packets)
    assert [u.payload for u in units] == [b"still inspected"]
    assert len(stats.errors) == 1 and "internal error (RuntimeError: boom)" in stats.errors[0]


# --------------------------------------------------------------------------- reassembly property


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(min_size=1, max_size=300), seed=st.integers(0, 2**32 - 1), isn=st.integers(0, 2**32 - 1))
def test_any_segmentation_order_and_duplication_reassembles_the_stream(data: bytes, seed: int, isn: int) -> None:
    rng = random.Random(seed)
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 40)
        start = max(0, pos - rng.randint(0, 10))  # overlaps with earlier bytes (same content)
        pieces.append((start, data[start:pos + size]))
        pos += size
    pieces += rng.sample(pieces, k=min(len(pieces), rng.randint(0, 3)))  # duplicates
    rng.shuffle(pieces)
    reasm = Reassembler()
    reasm.start(isn)  # sequence numbers wrap around 2**32 for some isn
    out: list[bytes | int] = []
    for start, piece in pieces:
        reasm.add((isn + start) % 2**32, piece, out)
    assert b"".join(p for p in out if isinstance(p, bytes)) == data
    assert reasm.held == 0 and not reasm.segs and reasm.conflicts == 0


# --------------------------------------------------------------------------- IP fragments


def _fragments_v4(datagram_payload: bytes, proto: int, cuts: list[int], ident: int = 77) -> list[Packet]:
    src, dst = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
    bounds = [0, *cuts, len(datagram_payload)]
    out = []
    for start, end in itertools.pairwise(bounds):
        more = 0x2000 if end < len(datagram_payload) else 0
        piece = datagram_payload[start:end]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ident, more | start // 8, 64, proto, 0, src, dst)
        out.append(Packet(1.0, 1, _ETH4 + ip + piece, 0))
    return out


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def test_fragmented_dns_query_is_reassembled_whatever_the_order() -> None:
    query = bytes(dpkt.dns.DNS(id=9, qd=[dpkt.dns.DNS.Q(name="x" * 40 + ".teamtnt.red")]))
    fragments = _fragments_v4(_udp(40000, 53, query), 17, [16, 40])
    units, stats = run_pipeline([fragments[2], fragments[0], fragments[1]])
    assert [u.buffers.get("dns.query") for u in units] == [b"x" * 40 + b".teamtnt.red"]
    assert stats.fragments == 3 and stats.fragments_reassembled == 1 and stats.fragments_dropped == 0


def test_fragmented_tcp_segment_and_first_wins_overlap() -> None:
    conv = Conversation(dport=6379)
    packets = conv.open()
    segment = conv.frame(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$3\r\ndir\r\n", ACK | PSH).frame[34:]
    conv.cseq += len(segment) - 20
    pieces = _fragments_v4(segment, 6, [24, 40])
    # a rogue copy of the middle fragment with other bytes, after the real one: ignored
    rogue = bytearray(pieces[1].frame)
    rogue[34:40] = b"XXXXXX"
    units, stats = run_pipeline([*packets, pieces[0], pieces[1], Packet(1.0, 1, bytes(rogue), 0), pieces[2]])
    assert [u.buffers["redis.command"] for u in units] == [b"CONFIG SET dir"]
    assert stats.fragment_conflicts == 1


def test_fragment_flood_is_bounded() -> None:
    limits = Limits(max_fragmented=100)
    pipeline = Pipeline(limits)
    packets = [_fragments_v4(b"z" * 64, 17, [32], ident=i)[0] for i in range(10_000)]  # never completed
    list(pipeline.run(iter(packets)))
    assert pipeline.defrag is not None and len(pipeline.defrag.pending) <= 100
    assert pipeline.stats.fragments_dropped == 10_000 - 100 and pipeline.defrag.held <= 100 * 32


def test_data_lost_before_an_acknowledged_fin_is_a_gap() -> None:
    conv = Conversation(dport=9999)
    packets = conv.open() + conv.send(b"first part ")
    conv.cseq += 5000  # lost by the capture
    packets.append(conv.frame(b"", FIN | ACK))
    conv.cseq += 1
    packets.append(conv.frame(b"", ACK, from_client=False))  # the server has it all, FIN included
    packets += conv.send(b"late reply", from_client=False)
    pipeline = Pipeline()
    units = []
    for unit in pipeline.run(iter(packets)):
        units.append(unit)
        if unit.payload == b"late reply":
            assert pipeline.stats.tcp_gaps == 1  # declared when the FIN was acknowledged, not at the end
    assert [u.payload for u in units] == [b"first part ", b"late reply"]
    assert pipeline.stats.tcp_gap_bytes == 5000


def test_shards_together_inspect_every_conversation_once() -> None:
    packets = []
    for i in range(40):
        conv = Conversation(sport=41000 + i, dport=[80, 6379, 9999][i % 3], client=f"10.0.{i}.1")
        if i % 3 == 0:
            body = b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i
        elif i % 3 == 1:
            body = b"*2\r\n$4\r\nECHO\r\n$2\r\n%02d\r\n" % i
        else:
            body = b"opaque %d" % i
        packets += conv.open() + conv.send(body) + conv.send(b"reply %d" % i, from_client=False) + conv.close()
    whole, _ = run_pipeline(packets)
    parts = []
    for index in range(3):
        stats = Stats()
        units = list(Pipeline(None, stats, shard=(index, 3)).run(iter(packets)))
        assert units  # each shard got some of the 40 conversations
        parts += units
    key = lambda u: (u.packet, u.direction.value, u.payload)  # noqa: E731
    assert sorted(map(key, parts)) == sorted(map(key, whole))


def test_after_a_gap_the_next_message_is_found_again() -> None:
    conv = Conversation()
    packets = conv.open() + conv.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
    packets += conv.send(b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n" + b"b" * 1000)
    conv.cseq += 1000  # a body segment the capture lost
    packets += conv.send(b"b" * 1000)
    packets += conv.send(b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n")
    packets.append(conv.frame(b"", ACK, from_client=False))  # acknowledges everything
    packets += conv.close()
    units, stats = run_pipeline(packets, Limits(max_ooo_bytes=500))
    assert [u.buffers["http.uri"] for u in units if "http.uri" in u.buffers] == [b"/one", b"/two", b"/three"]
    assert stats.tcp_gaps == 1
    assert client_stream(units).count(b"b") == 2000
