"""DNS messages over UDP (one per datagram) and TCP (two-byte length prefix), bounded.

Names are read with compression pointers followed at most 16 times and 255 bytes long at most;
a message is accepted only if every section it announces parses to within its length (that
strictness is what lets DNS be recognised by content on any port, not only 53).

Buffers: `dns.query` (the first question's name, in queries), `dns.queries.rrname` (the first
question's name, queries and responses), `dns.answer.name` (the first answer's owner name, in
responses). `extra` has the id, opcode, rcode, every question as (name, type) and up to 32
answers as (name, type, value).
"""

from __future__ import annotations

import ipaddress
import struct

from cloudward.network.protocols.base import Sink, StreamParser

PORTS = frozenset({53, 5353, 5355})
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_MAX_QUESTIONS = 16
_MAX_RECORDS = 256
_MAX_ANSWERS_KEPT = 32
_NAMED_RDATA = frozenset({2, 5, 12})  # NS, CNAME, PTR: the value is a name


class Malformed(ValueError):
    pass


def read_name(msg: bytes, pos: int) -> tuple[bytes, int]:
    """(dotted name, position after it in the message)."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    length = 0
    while True:
        if pos >= len(msg):
            raise Malformed("name runs past the message")
        size = msg[pos]
        if size == 0:
            pos += 1
            break
        if size & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise Malformed("truncated compression pointer")
            jumps += 1
            if jumps > 16:
                raise Malformed("compression loop")
            if end < 0:
                end = pos + 2
            pos = (size & 0x3F) << 8 | msg[pos + 1]
            continue
        if size & 0xC0:
            raise Malformed("reserved label type")
        label = msg[pos + 1:pos + 1 + size]
        if len(label) < size:
            raise Malformed("label runs past the message")
        length += size + 1
        if length > 255:
            raise Malformed("name longer than 255 bytes")
        labels.append(label)
        pos += 1 + size
    return b".".join(labels), end if end >= 0 else pos


def parse(msg: bytes) -> tuple[dict[str, bytes], dict[str, object]] | None:
    """Buffers and facts of one DNS message, or None if it is not one."""
    if len(msg) < 12:
        return None
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
    if not 0 < qdcount <= _MAX_QUESTIONS or ancount + nscount + arcount > _MAX_RECORDS:
        return None
    opcode = flags >> 11 & 0xF
    if opcode > 6:
        return None
    try:
        pos = 12
        questions: list[tuple[bytes, int]] = []
        for _ in range(qdcount):
            name, pos = read_name(msg, pos)
            if pos + 4 > len(msg):
                raise Malformed("question runs past the message")
            qtype = msg[pos] << 8 | msg[pos + 1]
            questions.append((name, qtype))
            pos += 4
        answers: list[tuple[bytes, int, str]] = []
        for index in range(ancount + nscount + arcount):
            name, pos = read_name(msg, pos)
            if pos + 10 > len(msg):
                raise Malformed("record runs past the message")
            rtype, _rclass, _ttl, rdlen = _RR.unpack_from(msg, pos)
            pos += 10
            if pos + rdlen > len(msg):
                raise Malformed("record data runs past the message")
            if index < ancount and len(answers) < _MAX_ANSWERS_KEPT:
                answers.append((name, rtype, _rdata(msg, pos, rtype, rdlen)))
            pos += rdlen
    except Malformed:
        return None
    response = bool(flags & 0x8000)
    first = questions[0][0]
    buffers = {"dns.queries.rrname": first}
    if response:
        if answers:
            buffers["dns.answer.name"] = answers[0][0]
    else:
        buffers["dns.query"] = first
    extra: dict[str, object] = {
        "dns.id": ident, "dns.opcode": opcode, "dns.rcode": flags & 0xF, "dns.response": response,
        "dns.qtype": questions[0][1], "dns.questions": questions,
    }
    if answers:
        extra["dns.answers"] = answers
    return buffers, extra


def other_questions(buffers: dict[str, bytes], extra: dict[str, object]
                    ) -> list[tuple[dict[str, bytes], dict[str, object]]]:
    """Units for the second and later questions of a message (rare, but a rule must see them)."""
    questions = extra.get("dns.questions")
    if not isinstance(questions, list) or len(questions) < 2:
        return []
    units: list[tuple[dict[str, bytes], dict[str, object]]] = []
    for name, qtype in questions[1:]:
        more = {"dns.queries.rrname": name}
        if "dns.query" in buffers:
            more["dns.query"] = name
        units.append((more, {**extra, "dns.qtype": qtype}))
    return units


def _rdata(msg: bytes, pos: int, rtype: int, rdlen: int) -> str:
    data = msg[pos:pos + rdlen]
    try:
        if rtype == 1 and rdlen == 4:
            return str(ipaddress.IPv4Address(data))
        if rtype == 28 and rdlen == 16:
            return str(ipaddress.IPv6Address(data))
        if rtype in _NAMED_RDATA:
            return read_name(msg, pos)[0].decode("ascii", "backslashreplace")
        if rtype == 16 and data:  # TXT: the first string
            return data[1:1 + data[0]].decode("utf-8", "backslashreplace")
    except Malformed:
        pass
    return data[:64].hex()


def plausible(payload: bytes) -> bool:
    """Cheap test before a full parse of a datagram on a port that is not DNS's."""
    return (len(payload) >= 17 and payload[4] == 0 and 0 < payload[5] <= 4
            and payload[2] & 0x78 == 0 and payload[12] < 64)


class DnsTcpParser(StreamParser):
    """DNS over TCP: each message is preceded by its length."""

    proto = "dns"

    def feed(self, data: bytes, sink: Sink) -> None:
        self.buf += data
        while len(self.buf) >= 2:
            size = self.buf[0] << 8 | self.buf[1]
            if len(self.buf) < 2 + size:
                return
            raw = bytes(self.buf[:2 + size])
            del self.buf[:2 + size]
            parsed = parse(raw[2:])
            if parsed is None:
                sink.passthrough(raw)
                continue
            sink.message(raw, *parsed)
            for buffers, extra in other_questions(*parsed):
                sink.message(b"", buffers, extra)


def probe_tcp(data: bytes, *, dns_port: bool) -> int:
    """DNS over TCP by content: a length prefix, then a message that parses to exactly that length.
    Off port 53 only messages of up to 4 KiB whose header looks like DNS are waited for."""
    if len(data) < 2:
        return 1 if dns_port else 0
    size = data[0] << 8 | data[1]
    if size < 17:
        return 0
    if len(data) >= 14:
        qdcount = data[6] << 8 | data[7]
        if not 0 < qdcount <= _MAX_QUESTIONS or (data[4] >> 3) & 0xF > 6:
            return 0
    if len(data) < 2 + size:
        return 1 if dns_port or size <= 4096 else 0
    return 2 if parse(data[2:2 + size]) is not None else 0
