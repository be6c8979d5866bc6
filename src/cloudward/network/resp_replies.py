"""Where each RESP reply ends in a server's reply stream, read by read, without holding replies.

A connection the proxy shares between clients (redis_shared.py) carries the replies of many clients
in turn, so the proxy must know where one reply ends and the next begins to hand each client its
own. `ReplyFramer.advance` walks whole replies forward from a position and keeps, between reads,
only what an unfinished reply needs to be resumed: the bulk bytes still to come, the element counts
of the arrays still open and an unfinished header line. No reply is ever buffered: the bytes can go
to their client as they arrive, and a 500 MiB bulk costs one counter, not 500 MiB.

RESP2 and RESP3 replies are framed: lines (`+ - : _ # , (`), length-prefixed strings (`$ ! =`) and
aggregates (`* ~` of N values, `%` of N key-value pairs). Out-of-band data is not: a shared
connection never subscribes and never turns on client tracking, since every command that would is
kept off it, so a push (`>`) or an attribute (`|`) there is as wrong as an unknown type byte, a
malformed length, a string not ending in CRLF, aggregates nested deeper than `MAX_DEPTH` or a line
longer than `MAX_LINE`: a ProtocolError. The stream can no longer be split with certainty, and the
caller drops the connection rather than guess.
"""

from __future__ import annotations

from cloudward.network.resp import ProtocolError

__all__ = ["ReplyFramer"]

_CRLF = b"\r\n"
_LINES = frozenset(b"+-:_#,(")  # the whole value is on its header line
_STRINGS = frozenset(b"$!=")  # a length, then that many bytes and CRLF
_AGGREGATES = {0x2A: 1, 0x7E: 1, 0x25: 2}  # * array, ~ set: N values; % map: N pairs


class ReplyFramer:
    """Resumable reply boundaries for one server connection (not thread-safe)."""

    MAX_DEPTH = 64
    MAX_LINE = 1024 * 1024  # simple strings and errors are short; a header line is at most ~22 bytes

    __slots__ = ("_line", "_need", "_stack")

    def __init__(self) -> None:
        self._need = 0  # bytes of a bulk (payload and its CRLF) still to come
        self._stack: list[int] = []  # elements still expected by each open array, innermost last
        self._line = b""  # the start of a header line cut by the end of the previous read

    @property
    def idle(self) -> bool:
        """Between replies: nothing of an unfinished reply is pending."""
        return not self._need and not self._stack and not self._line

    def advance(self, data: bytes, pos: int, count: int) -> tuple[int, int]:
        """Pass over up to `count` whole replies in `data` from `pos`. Returns (position after the
        last reply completed, replies completed); when fewer than `count` complete, the data ran out
        inside one and the position is len(data) (the unfinished reply is remembered)."""
        n = len(data)
        done = 0
        stack = self._stack
        find = data.find
        while done < count:
            if self._need:
                left = n - pos
                if left < self._need:
                    self._need -= left
                    return n, done
                pos += self._need  # (its CRLF may have been cut by the read: not checked here)
                self._need = 0
                if self._element():
                    done += 1
                continue
            if self._line:
                if self._line[-1:] == b"\r" and data[pos:pos + 1] == b"\n":  # CRLF cut in two
                    header = self._line[:-1]
                    pos += 1
                else:
                    end = find(_CRLF, pos)
                    if end < 0:
                        self._carry(self._line + data[pos:])
                        return n, done
                    header = self._line + data[pos:end]
                    pos = end + 2
                self._line = b""
            else:
                end = find(_CRLF, pos)
                if end < 0:
                    self._carry(data[pos:])
                    return n, done
                header = data[pos:end]
                pos = end + 2
            if not header:
                raise ProtocolError("an empty reply line")
            kind = header[0]
            if kind in _LINES:
                if self._element():
                    done += 1
                continue
            size = _length(header)
            if kind in _STRINGS:
                if size < 0:
                    if self._element():
                        done += 1
                    continue
                stop = pos + size + 2
                if stop > n:
                    self._need = stop - n
                    return n, done
                if data[stop - 2:stop] != _CRLF:
                    raise ProtocolError("a bulk reply does not end in CRLF")
                pos = stop
                if self._element():
                    done += 1
            elif kind in _AGGREGATES:
                if size <= 0:
                    if self._element():
                        done += 1
                    continue
                if len(stack) >= self.MAX_DEPTH:
                    raise ProtocolError(f"replies nested deeper than {self.MAX_DEPTH} aggregates")
                stack.append(size * _AGGREGATES[kind])
            else:
                raise ProtocolError(f"unexpected reply type {chr(kind)!r}")
        return pos, done

    def _element(self) -> bool:
        """One value finished: close the arrays it completes; True when a whole reply is done."""
        stack = self._stack
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                return False
            stack.pop()
        return True

    def _carry(self, piece: bytes) -> None:
        if len(piece) > self.MAX_LINE:
            raise ProtocolError(f"a reply line longer than {self.MAX_LINE} bytes")
        self._line = piece


def _length(header: bytes) -> int:
    digits = header[1:]
    if digits.isdigit() and len(digits) <= 20:
        return int(digits)
    if digits == b"-1":
        return -1
    raise ProtocolError(f"invalid reply length {digits[:24]!r}")
