"""The one shape the capture side hands to the signature side.

Capture (pcap/pcapng files, live AF_PACKET) -> flows and TCP reassembly -> application parsers
produce `Inspectable`s; the signature engine judges each one and never touches packets itself. A
packet-level rule reads `payload`; a rule with a sticky buffer (`http.uri`, `dns.query`, `tls.sni`,
...) reads `buffers[name]`, present only when the parser found that field in this unit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Direction(enum.Enum):
    TO_SERVER = "to_server"  # from the flow's initiator (the side that sent the first SYN / datagram)
    TO_CLIENT = "to_client"


@dataclass(frozen=True, slots=True)
class FlowKey:
    """A flow as its initiator sees it: `src:sport` is the client, `dst:dport` the server."""

    proto: str  # "tcp" | "udp" | "icmp"
    src: str
    sport: int
    dst: str
    dport: int

    def location(self) -> dict[str, object]:
        """The Finding location of an alert on this flow."""
        return {"proto": self.proto, "src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport}

    def __str__(self) -> str:
        return f"{self.proto} {self.src}:{self.sport} -> {self.dst}:{self.dport}"


@dataclass(slots=True)
class Inspectable:
    """One unit a signature is judged on: a datagram's payload, or a piece of a reassembled TCP
    stream (in order, without overlaps), with the application-layer buffers parsed from it."""

    flow: FlowKey
    direction: Direction
    ts: float  # capture time of the packet that completed this unit (seconds since the epoch)
    payload: bytes  # the bytes `content` without a sticky buffer is matched against
    app_proto: str | None = None  # "http", "redis", "stratum", "dns", "tls", "ssh", "irc" or None
    # sticky buffers by Suricata name: "http.uri", "http.method", "http.header", "http.host",
    # "http.user_agent", "http.request_body", "dns.query", "tls.sni", "ssh.software", ...
    buffers: dict[str, bytes] = field(default_factory=dict)
    established: bool = False  # a TCP handshake was seen for this flow (`flow:established`)
    packet: int = 0  # 1-based index in the capture of the packet that completed this unit
    extra: dict[str, object] = field(default_factory=dict)  # parser facts (e.g. {"redis.args": [...]})
    # payload[:overlap] repeats the end of the previous unit of this direction (plain stream chunks
    # only), so a pattern split across segments is still found; a match that ends at or before
    # `overlap` was already seen in that unit and should not be reported again
    overlap: int = 0
