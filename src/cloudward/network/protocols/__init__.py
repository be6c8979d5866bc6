"""Application protocols recognised by content, and their per-direction stream parsers.

`detect()` looks at the first bytes one side of a TCP connection sent and names the protocol
(ports only break ties: an inline `PING` is Redis on 6379 and IRC on 6667). Once one side is
known, the other side gets the same protocol's parser for its direction without guessing.
"""

from __future__ import annotations

from collections.abc import Callable

from cloudward.network.protocols import dns, http, irc, redis, ssh, stratum, tls
from cloudward.network.protocols.base import LineParser, ParserLimits, Sink, StreamParser

__all__ = ["NEED_MORE", "PROTOCOLS", "LineParser", "ParserLimits", "Sink", "StreamParser", "detect",
           "new_parser"]

NEED_MORE = "?"  # detect(): not enough bytes to decide yet
PROTOCOLS = ("http", "redis", "stratum", "dns", "tls", "ssh", "irc")

REDIS_PORTS = frozenset({6379, 6380, 16379, 26379})
IRC_PORTS = frozenset({6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667, 6668, 6669, 6697, 7000, 194})

Probe = Callable[[bytes], int]


def _line_protocol(data: bytes, ports: tuple[int, int], final: bool, reply: bytes) -> str | int:
    """Inline Redis or IRC: the first line whose command only one of them knows decides; lines
    both know (PING, QUIT) defer to the server's answer, then to the ports. 1: undecided, 0: neither."""
    *complete, partial = data.split(b"\n")
    seen_ambiguous = False
    for line in complete[:8]:
        word = line.split(None, 1)[0].upper() if line.strip() else b""
        if not word:
            continue
        if word in irc.CLIENT_COMMANDS:
            return "irc"
        if word in irc.AMBIGUOUS:
            seen_ambiguous = True
            continue
        return "redis" if word in redis.COMMANDS else 0
    words = partial.split(None, 1)
    word = words[0].upper() if words else b""
    if final and word:
        if word in irc.CLIENT_COMMANDS:
            return "irc"
        if word in redis.COMMANDS and word not in irc.AMBIGUOUS:
            return "redis"
        seen_ambiguous = seen_ambiguous or word in irc.AMBIGUOUS
    if seen_ambiguous and reply:
        if redis.probe_reply(reply) == 2:
            return "redis"
        if irc.probe_server(reply) == 2:
            return "irc"
    if seen_ambiguous and (final or len(complete) >= 8 or any(p in REDIS_PORTS or p in IRC_PORTS for p in ports)):
        if any(p in REDIS_PORTS for p in ports):
            return "redis"
        if any(p in IRC_PORTS for p in ports):
            return "irc"
        return 0
    if final or len(complete) >= 8:
        return 0
    if seen_ambiguous or not word:
        return 1
    if len(words) > 1 or len(partial) > 16:  # a whole first word is there
        return 1 if word in irc.CLIENT_COMMANDS or word in redis.COMMANDS or word in irc.AMBIGUOUS else 0
    return 1 if word.isalpha() else 0


def detect(data: bytes, *, to_server: bool, sport: int, dport: int, final: bool = False,
           reply: bytes = b"") -> str | None:
    """The protocol these first bytes of one direction speak, `NEED_MORE`, or None (unknown).
    `final`: no more bytes will come (or the detection budget is spent): decide now. `reply`: the
    first bytes the other side answered with, when it did (tells Redis's `+PONG` from IRC)."""
    undecided = False
    if to_server:
        probes: tuple[tuple[str, Probe], ...] = (
            ("tls", _tls_client),
            ("ssh", ssh.probe),
            ("http", http.probe_request),
            ("stratum", stratum.probe),
        )
    else:
        probes = (
            ("tls", _tls_server),
            ("ssh", ssh.probe),
            ("http", http.probe_response),
            ("irc", irc.probe_server),
            ("stratum", stratum.probe),
        )
    for name, probe in probes:
        verdict = probe(data)
        if verdict == 2:
            return name
        undecided = undecided or verdict == 1
    verdict = dns.probe_tcp(data, dns_port=53 in (sport, dport))
    if verdict == 2:
        return "dns"
    undecided = undecided or verdict == 1
    if to_server:
        if data[:1] == b"*":
            verdict = redis.probe(data)
            if verdict == 2:
                return "redis"
            undecided = undecided or verdict == 1
        else:
            line = _line_protocol(data, (sport, dport), final, reply)
            if isinstance(line, str):
                return line
            undecided = undecided or line == 1
    elif any(p in REDIS_PORTS for p in (sport, dport)) and redis.probe_reply(data):
        return "redis"
    return NEED_MORE if undecided and not final else None


def _tls_client(data: bytes) -> int:
    return tls.probe(data, client=True)


def _tls_server(data: bytes) -> int:
    return tls.probe(data, client=False)


def new_parser(proto: str, *, to_server: bool, limits: ParserLimits,
               shared: dict[str, object]) -> StreamParser:
    """The parser for one direction of a flow speaking `proto`."""
    if proto == "http":
        return http.HttpParser(limits, shared, request=to_server)
    if proto == "redis":
        return redis.RedisParser(limits, shared) if to_server else redis.OpaqueParser(limits, shared, "redis")
    if proto == "stratum":
        return stratum.StratumParser(limits, shared)
    if proto == "dns":
        return dns.DnsTcpParser(limits, shared)
    if proto == "tls":
        return tls.TlsParser(limits, shared, client=to_server)
    if proto == "ssh":
        return ssh.SshParser(limits, shared)
    if proto == "irc":
        return irc.IrcParser(limits, shared)
    raise ValueError(f"unknown protocol {proto!r}")
