"""What every stream parser shares: the sink it reports to, its limits, and line splitting.

A parser reads one direction of one TCP flow, in order, and partitions those bytes: each byte
ends up either in an application message (`sink.message(raw, buffers, extra)`, `raw` being the
message's own bytes as sent) or handed on as plain stream data (`sink.passthrough(data)`), never in
both, so a signature's `content` sees every byte once. A parser holds at most `message_max`
bytes (plus one line or header it is completing); what does not fit is cut, reported with
`extra["truncated"] = True`, and the rest of that message is passed through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Sink(Protocol):
    def message(self, raw: bytes, buffers: dict[str, bytes], extra: dict[str, object] | None = None) -> None:
        ...

    def passthrough(self, data: bytes) -> None:
        ...


@dataclass(frozen=True, slots=True)
class ParserLimits:
    message_max: int = 64 * 1024  # raw bytes of one message kept for inspection
    body_max: int = 64 * 1024  # HTTP request/response body bytes kept (like Suricata's body limits)
    line_max: int = 8 * 1024  # longest line of a line protocol (IRC, stratum, SSH banner, inline Redis)


class StreamParser:
    """Base of the per-direction parsers. `bypass` turns true when the rest of the direction is
    encrypted (TLS after the handshake, SSH after the banners) and not worth inspecting."""

    proto = ""
    bypass = False
    # bytes coming next that this parser would pass through untouched (the rest of an HTTP body past
    # its limit): the stream hands them on itself, without a call to feed(), and lowers the count
    skip = 0

    def __init__(self, limits: ParserLimits, shared: dict[str, object]) -> None:
        self.limits = limits
        self.shared = shared  # per-flow state both directions' parsers see (HTTP: request methods)
        self.buf = bytearray()  # bytes held: an incomplete message

    def feed(self, data: bytes, sink: Sink) -> None:
        raise NotImplementedError

    def close(self, sink: Sink) -> None:
        """End of the stream, a gap, or memory pressure: report what is held, as it is."""
        if self.buf:
            sink.passthrough(bytes(self.buf))
            self.buf.clear()


class LineParser(StreamParser):
    """Newline-delimited protocols. `line()` gets each line with its terminator; a line longer than
    `line_max` is reported cut (`truncated`) and its remainder passed through up to the newline."""

    def __init__(self, limits: ParserLimits, shared: dict[str, object]) -> None:
        super().__init__(limits, shared)
        self.skipping = False  # inside the remainder of an over-long line

    def feed(self, data: bytes, sink: Sink) -> None:
        if self.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                sink.passthrough(data)
                return
            sink.passthrough(data[:nl + 1])
            data = data[nl + 1:]
            self.skipping = False
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        start = 0
        while not self.bypass:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            self.line(data[start:nl + 1], sink, False)
            start = nl + 1
        rest = data[start:] if start else data
        if not rest:
            return
        if self.bypass:
            sink.passthrough(rest)
        elif len(rest) > self.limits.line_max:
            self.line(rest[:self.limits.line_max], sink, True)
            sink.passthrough(rest[self.limits.line_max:])
            self.skipping = True
        else:
            self.buf += rest

    def close(self, sink: Sink) -> None:
        if self.buf:
            line = bytes(self.buf)
            self.buf.clear()
            self.line(line, sink, False)

    def line(self, raw: bytes, sink: Sink, truncated: bool) -> None:
        raise NotImplementedError


def strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line
