"""The lower layers (link, IPv4/IPv6, TCP/UDP/ICMP) decoded with `struct` and byte indexing.

This is the hot path of every inspection: building full dpkt objects for each layer costs about
ten times as much per packet (measured in benchmarks/network/pipeline.py), so only what flow
tracking needs is read here. dpkt stays the writer of the crafted captures in the tests and the
independent check of this decoder there.

`decode()` never raises on hostile bytes: it returns a `Decoded` tuple, or an int saying why the
frame was not decoded (`NOT_IP`, `MALFORMED`, `FRAGMENT`, `OTHER`). A `FRAGMENT` is read again by
`fragment()` for `defrag.Defragmenter`, whose whole datagrams go through `transport()`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from cloudward.network.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
NOT_IP, MALFORMED, FRAGMENT, OTHER = 1, 2, 3, 4  # reasons a frame was not decoded

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_VLAN = frozenset({0x8100, 0x88A8, 0x9100})
_AF_INET6 = frozenset({10, 24, 28, 30})  # Linux, OpenBSD/NetBSD, FreeBSD, macOS
_IPV6_EXT = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: length in 8-octet units
_TCP_HDR = struct.Struct("!HHIIBB").unpack_from
_new = tuple.__new__  # a NamedTuple built without its Python-level __new__ (a third of decode's time)
_UDP_HDR = struct.Struct("!HHH").unpack_from


class Decoded(NamedTuple):
    proto: int  # TCP, UDP, ICMP, ICMPV6
    src: bytes  # 4 or 16 address bytes
    dst: bytes
    sport: int  # ICMP: type
    dport: int  # ICMP: code
    flags: int  # TCP flags, 0 otherwise
    seq: int
    ack: int
    payload: bytes
    missing: int  # payload bytes on the wire that the capture cut off (snapshot length)


def network_offset(linktype: int, frame: bytes) -> tuple[int, int]:
    """(ethertype, offset of the network header), or (0, 0) when the frame carries no IP."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return 0, 0
        etype = frame[12] << 8 | frame[13]
        off = 14
        while etype in _VLAN and len(frame) >= off + 4:
            etype = frame[off + 2] << 8 | frame[off + 3]
            off += 4
        if etype == 0x8864 and len(frame) >= off + 8:  # PPPoE session: 6-byte header + PPP protocol
            ppp = frame[off + 6] << 8 | frame[off + 7]
            etype = 0x0800 if ppp == 0x0021 else 0x86DD if ppp == 0x0057 else 0
            off += 8
        return etype, off
    if linktype == LINKTYPE_LINUX_SLL:
        return (frame[14] << 8 | frame[15], 16) if len(frame) >= 16 else (0, 0)
    if linktype == LINKTYPE_LINUX_SLL2:
        return (frame[0] << 8 | frame[1], 20) if len(frame) >= 20 else (0, 0)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not frame:
            return 0, 0
        version = frame[0] >> 4
        return (0x0800 if version == 4 else 0x86DD if version == 6 else 0), 0
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            return 0, 0
        family = max(frame[0], frame[3])  # the writer's byte order is unknown; the value is < 256
        return (0x0800 if family == 2 else 0x86DD if family in _AF_INET6 else 0), 4
    return 0, 0


class Fragment(NamedTuple):
    key: tuple[object, ...]  # the datagram it belongs to: addresses, protocol, identification
    proto: int
    src: bytes
    dst: bytes
    offset: int  # bytes into the datagram's payload
    more: bool
    data: bytes
    missing: int


_Network = tuple[int, bytes, bytes, int, int, "tuple[int, int, bool] | None"]


def _network(linktype: int, frame: bytes) -> _Network | int:
    """(transport protocol, src, dst, its offset, end of the IP payload, fragment id/offset/more)."""
    if linktype == LINKTYPE_ETHERNET and len(frame) >= 34 and frame[12] == 8 and frame[13] == 0:
        etype, off = 0x0800, 14  # the common case without the general link dispatch
    else:
        etype, off = network_offset(linktype, frame)
    fragment: tuple[int, int, bool] | None = None
    if etype == 0x0800:
        if len(frame) < off + 20:
            return MALFORMED
        vihl = frame[off]
        ihl = (vihl & 15) * 4
        total = frame[off + 2] << 8 | frame[off + 3]
        if vihl >> 4 != 4 or ihl < 20 or total < ihl:
            return MALFORMED
        flags_offset = frame[off + 6] << 8 | frame[off + 7]
        if flags_offset & 0x3FFF:  # MF flag or a fragment offset
            fragment = (frame[off + 4] << 8 | frame[off + 5], (flags_offset & 0x1FFF) * 8, bool(flags_offset & 0x2000))
        proto = frame[off + 9]
        src = frame[off + 12:off + 16]
        dst = frame[off + 16:off + 20]
        end = off + total
        off += ihl
    elif etype == 0x86DD:
        if len(frame) < off + 40 or frame[off] >> 4 != 6:
            return MALFORMED
        plen = frame[off + 4] << 8 | frame[off + 5]
        proto = frame[off + 6]
        src = frame[off + 8:off + 24]
        dst = frame[off + 24:off + 40]
        end = off + 40 + plen if plen else len(frame)  # 0: jumbogram, take what was captured
        off += 40
        for _ in range(8):  # a chain of extension headers, bounded
            if proto in _IPV6_EXT:
                if len(frame) < off + 2:
                    return MALFORMED
                proto, off = frame[off], off + (frame[off + 1] + 1) * 8
            elif proto == 44:  # fragment header
                if len(frame) < off + 8:
                    return MALFORMED
                word = frame[off + 2] << 8 | frame[off + 3]
                if word & 0xFFF9:  # an offset or the M flag: a real fragment (else an atomic one)
                    ident = int.from_bytes(frame[off + 4:off + 8], "big")
                    fragment = (ident, word & 0xFFF8, bool(word & 1))
                proto, off = frame[off], off + 8
                if fragment is not None:
                    break  # what follows is the fragmentable part, not more headers
            elif proto == 51:  # authentication header: length in 4-octet units, plus 2
                if len(frame) < off + 2:
                    return MALFORMED
                proto, off = frame[off], off + (frame[off + 1] + 2) * 4
            else:
                break
        if off > end:
            return MALFORMED
    else:
        return NOT_IP
    return proto, src, dst, off, end, fragment


def decode(linktype: int, frame: bytes) -> Decoded | int:
    """The transport-level facts of one frame, or why there are none."""
    network = _network(linktype, frame)
    if type(network) is int:
        return network
    proto, src, dst, off, end, fragment = network  # type: ignore[misc]
    if fragment is not None:
        return FRAGMENT
    return transport(proto, src, dst, frame, off, end)


def fragment(linktype: int, frame: bytes) -> Fragment | int:
    """The facts of an IP fragment (for `defrag`), or why this frame is not one."""
    network = _network(linktype, frame)
    if type(network) is int:
        return network
    proto, src, dst, off, end, info = network  # type: ignore[misc]
    if info is None:
        return OTHER
    ident, offset, more = info
    captured_end = min(end, len(frame))
    return Fragment((len(src), src, dst, proto, ident), proto, src, dst, offset, more, frame[off:captured_end],
                    max(0, end - captured_end))


def transport(proto: int, src: bytes, dst: bytes, frame: bytes, off: int = 0, end: int | None = None) -> Decoded | int:
    """TCP, UDP or ICMP at `frame[off:end]` (a reassembled datagram's payload, or inside a frame)."""
    if end is None:
        end = len(frame)
    captured_end = min(end, len(frame))
    if proto == TCP:
        if captured_end < off + 20:
            return MALFORMED
        sport, dport, seq, ack, doff, flags = _TCP_HDR(frame, off)
        hlen = (doff >> 4) * 4
        if hlen < 20 or off + hlen > captured_end:
            return MALFORMED
        return _new(Decoded, (TCP, src, dst, sport, dport, flags, seq, ack, frame[off + hlen:captured_end],
                              end - captured_end))
    if proto == UDP:
        if captured_end < off + 8:
            return MALFORMED
        sport, dport, ulen = _UDP_HDR(frame, off)
        if ulen >= 8 and off + ulen < end:
            end = off + ulen  # trust the shorter of the IP and UDP lengths
            captured_end = min(end, captured_end)
        return _new(Decoded, (UDP, src, dst, sport, dport, 0, 0, 0, frame[off + 8:captured_end], end - captured_end))
    if proto in (ICMP, ICMPV6):
        if captured_end < off + 4:
            return MALFORMED
        return Decoded(proto, src, dst, frame[off], frame[off + 1], 0, 0, 0, frame[off + 8:captured_end],
                       max(0, end - captured_end))
    return OTHER
