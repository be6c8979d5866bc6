"""Packets in, `Inspectable`s out: the one entry point the signature engine and the CLI use.

    stats = Stats()
    for unit in inspectables(read_capture("capture.pcap"), Limits(), stats):
        ...
    stats.errors  # a corrupt or truncated capture: what was read before it was inspected

The units are:
- a TCP application message (an HTTP request or response, a Redis command, a stratum line, a DNS
  message, a TLS ClientHello, an SSH banner, an IRC line) with its sticky buffers;
- a chunk of plain reassembled TCP stream data (unknown protocols, and what a parser passes
  through), with `overlap` bytes of context before its new data;
- a UDP datagram (with DNS buffers when it is DNS) or an ICMP message;
- with `Limits.emit_syn`, each initial SYN (empty payload).

Errors of the packet source (`CaptureError`: a corrupt block, a truncated file, a failed
receive) end the inspection cleanly: they go to `stats.errors`, every flow is flushed and its
units still come out. An unexpected exception while handling one packet (a bug) is recorded the
same way with the packet's index, its flow is dropped, and inspection goes on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator

from cloudward.network.capture import TICK, CaptureError, Packet
from cloudward.network.defrag import Defragmenter
from cloudward.network.events import Direction, FlowKey, Inspectable
from cloudward.network.flows import Flow, FlowTable, Limits, Stats, address_text
from cloudward.network.layers import (
    FRAGMENT,
    ICMPV6,
    MALFORMED,
    NOT_IP,
    TCP,
    UDP,
    Fragment,
    decode,
    fragment,
    transport,
)
from cloudward.network.protocols import dns

__all__ = ["Limits", "Pipeline", "Stats", "inspectables", "shard_of"]

_MAX_ERRORS = 100
# Ethernet type, then the IPv4 and TCP fields flow tracking needs, in one call
_ETHERNET_IPV4_TCP = struct.Struct("!12xHBxH2xH1xB2x4s4sHHIIBB").unpack_from
_ICMP_REPLIES = frozenset({0, 14, 16, 18})  # echo, timestamp, information, address mask replies
_ICMPV6_REPLIES = frozenset({129})


def inspectables(packets: Iterable[Packet], limits: Limits | None = None,
                 stats: Stats | None = None, *, shard: tuple[int, int] | None = None) -> Iterator[Inspectable]:
    """Every unit of `packets` (from `read_capture` or `live`), in capture order as far as
    reassembly allows; counters go to `stats` if given. `shard=(i, n)`: see `Pipeline`."""
    return Pipeline(limits, stats, shard=shard).run(packets)


def shard_of(src: bytes, dst: bytes, sport: int, dport: int, count: int) -> int:
    """The shard of a conversation: the same for both directions and in every process (unlike
    `hash()`, which Python seeds per process)."""
    return (int.from_bytes(src, "big") ^ int.from_bytes(dst, "big") ^ sport ^ dport) % count


class Pipeline:
    """The pipeline over one packet source.

    `shard=(i, n)` inspects only the conversations whose `shard_of` is `i`: n processes reading
    the same capture, each with its own shard, together inspect every conversation exactly once
    (packet numbers stay those of the whole capture), n times as fast on n cores. Every shard
    still reads and decodes every packet, and reassembles every IP fragment before deciding.
    """

    def __init__(self, limits: Limits | None = None, stats: Stats | None = None, *,
                 shard: tuple[int, int] | None = None, on_flow_end: Callable[[Flow], None] | None = None) -> None:
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard {shard[0]} of {shard[1]} does not exist")
        self.shard = shard if shard is not None and shard[1] > 1 else None
        self.limits = limits or Limits()
        self.stats = stats if stats is not None else Stats()
        self.table = FlowTable(self.limits, self.stats)
        self.table.on_end = on_flow_end
        limits = self.limits
        self.defrag = Defragmenter(max_datagrams=limits.max_fragmented, timeout=limits.fragment_timeout) \
            if limits.defrag else None

    def run(self, packets: Iterable[Packet]) -> Iterator[Inspectable]:
        table = self.table
        stats = self.stats
        out = table.out
        tcp = table.tcp
        flows = table.flows
        headers = _ETHERNET_IPV4_TCP
        index = stats.packets
        captured = 0
        fast = 0  # Ethernet/IPv4/TCP packets decoded inline
        shard, shards = self.shard or (0, 0)
        try:
            for ts, linktype, frame, _wirelen in packets:
                if ts >= table.next_event:
                    table.tick(ts)
                elif ts > table.now:
                    table.now = ts
                if linktype == TICK:
                    stats.ticks += 1
                else:
                    index += 1
                    table.pkt = index
                    size = len(frame)
                    captured += size
                    # inline: Ethernet, IPv4 without options or fragmentation, TCP, nothing cut off
                    if linktype == 1 and size >= 54:
                        (etype, vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff,
                         flags) = headers(frame)
                        if (etype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF
                                and 40 <= total <= size - 14):
                            start = 34 + (doff >> 4) * 4
                            end = 14 + total
                            if 54 <= start <= end:
                                fast += 1
                                if shards and (int.from_bytes(src, "big") ^ int.from_bytes(dst, "big") ^ sport
                                               ^ dport) % shards != shard:
                                    continue
                                if start == end and flags == 0x10:  # a bare ACK on a quiet flow: only time
                                    stream = flows.get((6, src, sport, dst, dport))
                                    if (stream is not None and stream.fin < 0 and stream.peer.fin < 0
                                            and not stream.peer.reasm.segs):
                                        flow = stream.flow
                                        if flow.established and not flow.closed:
                                            flow.last = ts
                                            continue
                                try:
                                    tcp(src, dst, sport, dport, flags, seq, ack, frame[start:end], 0)
                                except Exception as err:  # a bug must not end the inspection
                                    self._internal_error(index, 6, src, sport, dst, dport, err)
                                if out:
                                    stats.inspectables += len(out)
                                    yield from out
                                    out.clear()
                                continue
                    self._generic(linktype, frame, ts, index)
                if out:
                    stats.inspectables += len(out)
                    yield from out
                    out.clear()
        except CaptureError as err:
            stats.errors.append(str(err))
        finally:
            stats.packets = index
            stats.bytes += captured
            stats.tcp += fast
            stats.ipv4 += fast
        table.finish()
        if out:
            stats.inspectables += len(out)
            yield from out
            out.clear()

    def _generic(self, linktype: int, frame: bytes, ts: float, index: int) -> None:
        """Every frame the inline path does not take: other links, IPv6, options, UDP, ICMP ..."""
        stats = self.stats
        decoded = decode(linktype, frame)
        if decoded == FRAGMENT and self.defrag is not None:
            stats.fragments += 1
            piece = fragment(linktype, frame)
            whole = self.defrag.add(piece, ts) if type(piece) is Fragment else None
            self._defrag_stats()
            if whole is None:
                return
            decoded = transport(piece.proto, piece.src, piece.dst, whole)  # type: ignore[union-attr]
        if type(decoded) is int:
            self._not_decoded(decoded)
            return
        proto, src, dst, sport, dport, flags, seq, ack, payload, missing = decoded  # type: ignore[misc]
        if self.shard is not None:
            shard, shards = self.shard
            ports = (sport, dport) if proto in (TCP, UDP) else (0, 0)  # ICMP: by addresses
            if shard_of(src, dst, *ports, shards) != shard:
                return
        if missing:
            stats.truncated += 1
        if len(src) == 4:
            stats.ipv4 += 1
        else:
            stats.ipv6 += 1
        try:
            if proto == TCP:
                stats.tcp += 1
                self.table.tcp(src, dst, sport, dport, flags, seq, ack, payload, missing)
            elif proto == UDP:
                stats.udp += 1
                self._udp(src, dst, sport, dport, payload, ts, index)
            else:
                stats.icmp += 1
                self._icmp(proto, src, dst, sport, dport, payload, ts, index)
        except Exception as err:  # a bug must not end the inspection
            self._internal_error(index, proto, src, sport, dst, dport, err)

    def _defrag_stats(self) -> None:
        assert self.defrag is not None
        done = self.defrag.stats
        self.stats.fragments_reassembled = done.reassembled
        self.stats.fragments_dropped = done.dropped
        self.stats.fragment_conflicts = done.conflicts

    def _not_decoded(self, reason: int) -> None:
        stats = self.stats
        if reason == NOT_IP:
            stats.not_ip += 1
        elif reason == MALFORMED:
            stats.malformed += 1
        elif reason == FRAGMENT:
            stats.fragments += 1
        else:
            stats.other_ip += 1

    def _udp(self, src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ts: float,
             index: int) -> None:
        stream = self.table.udp(src, dst, sport, dport, payload)
        if not payload:
            return
        flow = stream.flow
        buffers: dict[str, bytes] = {}
        extra: dict[str, object] = {}
        more: list[tuple[dict[str, bytes], dict[str, object]]] = []
        app = flow.app_proto
        if app == "dns" or (app is None and (sport in dns.PORTS or dport in dns.PORTS or dns.plausible(payload))):
            parsed = dns.parse(payload)
            if parsed is not None:
                flow.app_proto = "dns"
                buffers, extra = parsed
                more = dns.other_questions(buffers, extra)
        out = self.table.out
        out.append(Inspectable(flow.key, stream.direction, ts, payload, flow.app_proto, buffers,
                               flow.established, index, extra))
        for other_buffers, other_extra in more:
            out.append(Inspectable(flow.key, stream.direction, ts, b"", "dns", other_buffers,
                                   flow.established, index, other_extra))

    def _icmp(self, proto: int, src: bytes, dst: bytes, itype: int, code: int, payload: bytes, ts: float,
              index: int) -> None:
        replies = _ICMPV6_REPLIES if proto == ICMPV6 else _ICMP_REPLIES
        name = "icmp"
        if itype in replies:
            key = FlowKey(name, address_text(dst), 0, address_text(src), 0)
            direction = Direction.TO_CLIENT
        else:
            key = FlowKey(name, address_text(src), 0, address_text(dst), 0)
            direction = Direction.TO_SERVER
        self.table.out.append(Inspectable(key, direction, ts, payload, None, {}, False, index,
                                          {"icmp.type": itype, "icmp.code": code}))

    def _internal_error(self, index: int, proto: int, src: bytes, sport: int, dst: bytes, dport: int,
                        err: Exception) -> None:
        stats = self.stats
        if len(stats.errors) < _MAX_ERRORS:
            stats.errors.append(f"packet {index}: internal error ({type(err).__name__}: {err}); its flow was dropped")
        stream = self.table.flows.get((proto, src, sport, dst, dport))
        if stream is not None:
            self.table._remove(stream.flow)
