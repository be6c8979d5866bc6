"""RESP on the request side, incrementally and within hard bounds; and local replies spliced into the
server's reply stream at the position a pipelining client expects them.

Requests. A Redis client sends arrays of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`; RESP3
changed replies, not requests) or, from a terminal, inline commands (`GET k\\r\\n`, split like redis's
sdssplitargs).
`RequestParser.feed` takes whatever arrived and returns every command now complete, each with its
byte span, so a proxy can forward allowed commands as the very bytes the client sent. A read made
only of whole commands whose arguments hold no \\r\\n (nearly every pipelined read) is framed by one
C-level split and a table lookup per header; anything else goes through the exact parser. Lengths are
checked against `Limits` the moment their header is read: a declared bulk length of 2^40 is refused
before one byte of it is awaited, and nothing is ever allocated by a declared length — only bytes
actually received are held, and a command still arriving is kept as a list of chunks joined once,
so a 64 MiB value sent in 16 KiB reads costs 64 MiB, not the sum of every partial join. The parser
is stricter than redis where redis is lax (redis skips the two bytes after a length or a payload
without looking at them; here they must be `\\r\\n`, digits must be plain digits): a frame the two
could read differently is refused, never forwarded.

Replies. The proxy does not parse replies at all: they go to the client byte for byte. A command
the proxy answers itself (refused, or AUTH at the proxy) must still be answered in order among
pipelined replies still on their way, so instead of counting replies the proxy sends the server a
*marker*: a one-word command whose name is a random nonce, which every Redis answers with
`-ERR unknown command '<nonce>' ...` in its place in the stream (before any AUTH, ACL, MULTI queueing
or subscribe-mode check: an unknown name is rejected first). `ReplySplicer` finds that line and puts
the proxy's own reply there. Inside MULTI the marker's error also flags the transaction, so EXEC
answers EXECABORT exactly as redis does for a command refused at queue time. Markers whose reply the
client suppressed (`CLIENT REPLY OFF|SKIP`) are dropped when a later marker's reply shows up. Nobody
but the proxy knows a nonce (it is never sent to a client, and redis neither executes nor logs an
unknown command, so MONITOR, SLOWLOG and CLIENT LIST never show it), so no stored value can imitate
a marker's reply.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from itertools import accumulate

__all__ = [
    "UNAUTHENTICATED_LIMITS",
    "Command",
    "Limits",
    "ProtocolError",
    "ReplySplicer",
    "RequestParser",
    "byte_spans",
    "encode_command",
    "error_reply",
    "split_inline",
    "uniform_names",
]

KIB = 1024
MIB = 1024 * KIB
_HEADER_MAX = 24  # "*" or "$", up to 20 digits (a sign included), "\r\n": anything longer is not a length
_CRLF = b"\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one client's requests. Redis itself allows 512 MiB bulks (proto-max-bulk-len); the
    proxy holds a whole command before judging it, so its default bulk is smaller (raise it in the
    policy when values are larger)."""

    max_bulk: int = 64 * MIB  # one argument
    max_array: int = 1024 * 1024  # arguments in one command
    max_inline: int = 64 * KIB  # one inline command line (redis: PROTO_INLINE_MAX_SIZE)
    max_request: int = 128 * MIB  # one whole command

    def __post_init__(self) -> None:
        for name in ("max_bulk", "max_array", "max_inline", "max_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


# What redis allows a client that has not authenticated yet (multibulk of 10, bulk of 16 KiB).
UNAUTHENTICATED_LIMITS = Limits(max_bulk=16 * KIB, max_array=10, max_inline=16 * KIB, max_request=64 * KIB)


class ProtocolError(ValueError):
    """The client sent something that is not a valid request (or exceeds a limit). The message is
    fit for a RESP error line and names what was wrong."""


# (arguments, start, end, encode): the command occupies buf[start:end] of the buffer `feed` returned
# and can be forwarded as those very bytes; when `encode` is true (an inline command, or one that
# arrived over several reads) there is no such span: forward `encode_command(args)`, which for a
# frame this strict parser accepted is byte for byte what the client sent (inline aside).
Command = tuple[list[bytes], int, int, bool]


class _Partial:
    """An array command whose end has not arrived: the arguments so far and where the next one is."""

    __slots__ = ("args", "body", "body_left", "header", "remaining", "size")

    def __init__(self, args: list[bytes], remaining: int, size: int) -> None:
        self.args = args
        self.remaining = remaining  # arguments still to come (the one being read included)
        self.size = size  # bytes of the command so far, for max_request
        self.header = b""  # the start of a bulk header cut by the end of a read
        self.body: list[bytes] | None = None  # pieces of the bulk being read (payload and its \r\n)
        self.body_left = 0


class RequestParser:
    """Incremental request parser for one client connection (not thread-safe; one per connection).

    Bytes are held only while a command is incomplete: the arguments complete so far, the pieces of
    the one being read (joined once, when it is complete) and at most a header's or an inline
    line's worth of unparsed bytes; so the work per read is proportional to the read."""

    __slots__ = ("_current", "_failed", "_held", "_held_pos", "_partial", "_rest", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._held = b""  # a read not parsed to its end because of max_commands, from _held_pos
        self._held_pos = 0
        self._rest = b""  # an incomplete array header or inline line that ended the last read
        self._partial: _Partial | None = None
        self._failed: ProtocolError | None = None
        self._current = b""  # the buffer being parsed, for the commands before a bad frame

    @property
    def buffered(self) -> int:
        """Bytes held for commands not returned yet (received bytes, not declared lengths)."""
        part = self._partial
        partial = 0
        if part is not None:
            partial = sum(map(len, part.args)) + len(part.header) + sum(map(len, part.body or ()))
        return len(self._held) - self._held_pos + len(self._rest) + partial

    def feed(self, data: bytes, max_commands: int = 0) -> tuple[bytes, list[Command]]:
        """Add `data`; return the buffer the spans refer to and the commands it completed (at most
        `max_commands` when not 0: the rest stays held, without a copy, for the next call, which may
        be `feed(b"")` after the limits changed, as they do when a client authenticates).

        Raises ProtocolError on a malformed or oversized frame when no command came before it; the
        parser then stays failed (the connection must be closed: after a framing error nothing that
        follows can be trusted). Commands before a bad frame are returned first, with `failed` set."""
        buf, commands, parts = self.feed_lazy(data, max_commands)
        return buf, commands if parts is None else byte_spans(parts, commands)

    def feed_lazy(self, data: bytes, max_commands: int = 0,
                  split: list[bytes] | None = None) -> tuple[bytes, list[Command], list[bytes] | None]:
        """`feed` for a caller that often needs no spans at all (a proxy forwarding a whole read):
        when the third item is not None the spans are token indices into it, for `byte_spans`.
        `split` is `data.split(b"\\r\\n")` when the caller already made it (see `uniform_names`)."""
        if self._failed is not None:
            raise self._failed
        if not max_commands and not self._held and self._partial is None and not self._rest and data[:1] == b"*":
            fast = _split_scan(data, self.limits, split)
            if fast is not None:
                return data, fast[0], fast[1]
        commands: list[Command] = []
        self._current = data
        try:
            buf, commands = self._feed(data, max_commands, commands)
            return buf, commands, None
        except ProtocolError as exc:
            self._failed = exc
            self._held, self._rest, self._partial = b"", b"", None
            if not commands:
                raise
            return self._current, commands, None  # what came before the bad frame; `failed` tells

    @property
    def idle(self) -> bool:
        """Nothing held between reads: the next read starts at a command's first byte."""
        return not self._held and self._partial is None and not self._rest and self._failed is None

    @property
    def failed(self) -> ProtocolError | None:
        """The error that ended this parser (set once the commands before the bad frame were returned)."""
        return self._failed

    def _feed(self, data: bytes, max_commands: int, commands: list[Command]) -> tuple[bytes, list[Command]]:
        pos = 0
        if self._held:
            buf, pos = self._held, self._held_pos
            if data:
                buf, pos = buf[pos:] + data, 0
            self._held, self._held_pos = b"", 0
            self._current = buf
        elif self._partial is not None:
            buf = data
            pos = self._resume(buf, commands)
            if self._partial is not None:
                return buf, commands
        elif self._rest:
            rest, self._rest = self._rest, b""
            if rest[0] == 0x2A:  # a cut array header: at most a few bytes to copy
                buf = self._current = rest + data
            else:  # a cut inline line: look for its end in the new bytes only
                buf = data
                nl = data.find(b"\n", 0, self.limits.max_inline + 1)
                if nl < 0:
                    if len(rest) + len(data) > self.limits.max_inline:
                        raise ProtocolError(f"inline request longer than {self.limits.max_inline} bytes")
                    self._rest = rest + data
                    return buf, commands
                line = rest + data[:nl]
                if len(line) > self.limits.max_inline:
                    raise ProtocolError(f"inline request longer than {self.limits.max_inline} bytes")
                self._inline(line, commands, -1, -1)
                pos = nl + 1
        else:
            buf = data
        if max_commands and len(commands) >= max_commands:
            if pos < len(buf):
                self._held, self._held_pos = buf, pos
            return buf, commands
        self._scan(buf, pos, commands, max_commands)
        return buf, commands

    def _inline(self, line: bytes, commands: list[Command], start: int, end: int) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        args = split_inline(line)
        if args:
            if len(args) > self.limits.max_array:
                raise ProtocolError(f"inline request with {len(args)} arguments (limit {self.limits.max_array})")
            commands.append((args, start, end, True))

    def _resume(self, buf: bytes, commands: list[Command]) -> int:
        """Continue the partial command with the new read; where it ended in buf (len(buf) when it
        is still incomplete)."""
        part = self._partial
        assert part is not None
        limits = self.limits
        n = len(buf)
        pos = 0
        while part.remaining:
            if part.body is not None:
                take = min(part.body_left, n - pos)
                part.body.append(buf[pos:pos + take])
                part.body_left -= take
                pos += take
                if part.body_left:
                    return n
                payload = b"".join(part.body)
                if payload[-2:] != _CRLF:
                    raise ProtocolError(f"bulk string of {len(payload) - 2} bytes not followed by \\r\\n")
                part.args.append(payload[:-2])
                part.body = None
                part.remaining -= 1
                continue
            if pos >= n:
                return n
            header = part.header + buf[pos:pos + _HEADER_MAX]
            if header[0] != 0x24:
                raise ProtocolError(f"expected '$' at the start of a bulk string, got {_show(header[:1])}")
            nl = header.find(_CRLF, 1)
            if nl < 0:
                if len(header) >= _HEADER_MAX:
                    raise ProtocolError(f"invalid bulk header {_show(header)}")
                part.header = header
                return n
            size = _length(header, 1, nl, "bulk")
            if size > limits.max_bulk:
                raise ProtocolError(f"bulk length {size} exceeds the limit of {limits.max_bulk} bytes")
            part.size += nl + 2 + size + 2
            if part.size > limits.max_request:
                raise ProtocolError(f"request larger than the limit of {limits.max_request} bytes")
            pos += nl + 2 - len(part.header)
            part.header = b""
            part.body, part.body_left = [], size + 2
        commands.append((part.args, -1, -1, True))
        self._partial = None
        return pos

    def _scan(self, buf: bytes, pos: int, commands: list[Command], max_commands: int) -> None:
        """Parse the complete commands in buf[pos:]; leave what is incomplete at the end in _rest or
        _partial, and what max_commands left in _held."""
        n = len(buf)
        limits = self.limits
        max_bulk, max_array, max_request = limits.max_bulk, limits.max_array, limits.max_request
        find = buf.find
        append_command = commands.append
        while pos < n:
            if max_commands and len(commands) >= max_commands:
                self._held, self._held_pos = buf, pos
                return
            if buf[pos] != 0x2A:  # not '*': an inline command
                nl = find(b"\n", pos, pos + limits.max_inline + 1)
                if nl < 0:
                    if n - pos > limits.max_inline:
                        raise ProtocolError(f"inline request longer than {limits.max_inline} bytes")
                    self._rest = buf[pos:]
                    return
                self._inline(buf[pos:nl], commands, pos, nl + 1)
                pos = nl + 1
                continue
            nl = find(_CRLF, pos + 1, pos + _HEADER_MAX)
            if nl < 0:
                if n - pos >= _HEADER_MAX:
                    raise ProtocolError(f"invalid array header {_show(buf[pos:pos + _HEADER_MAX])}")
                self._rest = buf[pos:]
                return
            count = _length(buf, pos + 1, nl, "array")
            if count > max_array:
                raise ProtocolError(f"array of {count} arguments exceeds the limit of {max_array}")
            p = nl + 2
            if count <= 0:  # redis ignores "*0" and "*-1": consumed, not a command, not forwarded
                pos = p
                continue
            args: list[bytes] = []
            append = args.append
            remaining = count
            while remaining:
                if p >= n:
                    self._partial = _Partial(args, remaining, p - pos)
                    return
                if buf[p] != 0x24:  # '$'
                    raise ProtocolError(f"expected '$' at the start of a bulk string, got {_show(buf[p:p + 1])}")
                nl = find(_CRLF, p + 1, p + _HEADER_MAX)
                if nl < 0:
                    if n - p >= _HEADER_MAX:
                        raise ProtocolError(f"invalid bulk header {_show(buf[p:p + _HEADER_MAX])}")
                    part = self._partial = _Partial(args, remaining, p - pos)
                    part.header = buf[p:]
                    return
                size = _length(buf, p + 1, nl, "bulk")
                if size > max_bulk:
                    raise ProtocolError(f"bulk length {size} exceeds the limit of {max_bulk} bytes")
                end = nl + 2 + size
                if end + 2 - pos > max_request:
                    raise ProtocolError(f"request larger than the limit of {max_request} bytes")
                if end + 2 > n:
                    part = self._partial = _Partial(args, remaining, end + 2 - pos)
                    part.body, part.body_left = [buf[nl + 2:]], end + 2 - n
                    return
                if buf[end:end + 2] != _CRLF:
                    raise ProtocolError(f"bulk string of {size} bytes not followed by \\r\\n")
                append(buf[nl + 2:end])
                p = end + 2
                remaining -= 1
            append_command((args, pos, p, False))
            pos = p


_BULK_HEADERS = [b"$%d" % size for size in range(16384)]
_ARRAY_HEADERS = {b"*%d" % count: count for count in range(1, 257)}
_BULK_LENGTHS = {header: size for size, header in enumerate(_BULK_HEADERS)}


def _split_scan(buf: bytes, limits: Limits,
                split: list[bytes] | None = None) -> tuple[list[Command], list[bytes]] | None:
    """The common case at C speed: a read holding only whole array commands (up to 256 arguments of
    under 16 KiB), none of whose arguments contains \\r\\n. Splitting at every \\r\\n gives header,
    payload, header, payload...; every payload must be exactly as long as its header says and every
    header written canonically (both checked at once against a table, not parsed), which proves the
    split is the real framing: a payload holding \\r\\n would come out shorter than declared.

    Returns the commands with spans in *token* indices of the split (turned into byte offsets only
    when someone needs them, see `byte_spans`) and the split itself; None for anything else (or a
    read beyond the limits), which the exact parser then handles."""
    if limits.max_array < len(_ARRAY_HEADERS) or limits.max_bulk < len(_BULK_HEADERS) or \
            len(buf) > limits.max_request:
        return None  # limits this tight are checked by the exact parser
    parts = buf.split(_CRLF) if split is None else split
    if parts[-1]:  # the read does not end at the end of a line
        return None
    last = len(parts) - 1
    arrays = _ARRAY_HEADERS.get
    commands: list[Command] = []
    headers: list[bytes] = []
    payloads: list[bytes] = []
    i = 0
    while i < last:
        count = arrays(parts[i])
        if count is None:
            return None
        j = i + 1 + 2 * count
        if j > last:
            return None
        args = parts[i + 2:j:2]
        headers += parts[i + 1:j:2]
        payloads += args
        commands.append((args, i, j, False))
        i = j
    try:
        if headers != list(map(_BULK_HEADERS.__getitem__, map(len, payloads))):
            return None
    except IndexError:  # a payload of 16 KiB or more
        return None
    return commands, parts


def uniform_names(buf: bytes, limits: Limits) -> tuple[list[bytes] | None, list[bytes] | None]:
    """The command names of a read made only of whole commands that all have the same number of
    arguments (a pipeline of GETs, of SETs...), found without a Python step per command or per
    argument; (None, split) for any other read, the split handed on to `RequestParser.feed_lazy`
    so it is not made twice, or (None, None) when the read was not even split.

    Same proof as `_split_scan`: after the split, every array header must be the same canonical
    `*N` at every (2N+1)-th token; the tokens between alternate bulk header and payload, and every
    header must be the canonical one for its payload's length, which a payload holding \\r\\n
    could not satisfy. So the names are redis's names for these very bytes."""
    if buf[:1] != b"*" or limits.max_array < len(_ARRAY_HEADERS) or limits.max_bulk < len(_BULK_HEADERS) or \
            len(buf) > limits.max_request:
        return None, None
    parts = buf.split(_CRLF)
    if parts[-1]:
        return None, parts
    count = _ARRAY_HEADERS.get(parts[0])
    if count is None:
        return None, parts
    step = 2 * count + 1
    n, odd = divmod(len(parts) - 1, step)
    if odd or parts[0:-1:step].count(parts[0]) != n:
        return None, parts
    for column in range(1, step, 2):  # argument by argument: in a pipeline its header often repeats
        headers, payloads = parts[column::step], parts[column + 1::step]
        size = _BULK_LENGTHS.get(headers[0])
        if size is not None and headers.count(headers[0]) == n:
            if list(map(len, payloads)).count(size) != n:
                return None, parts
        elif list(map(_BULK_LENGTHS.get, headers)) != list(map(len, payloads)):
            return None, parts  # a header not canonical, or not its payload's length
    return parts[2::step], parts


def byte_spans(parts: list[bytes], commands: list[Command]) -> list[Command]:
    """Commands from a split read with their spans turned from token indices into byte offsets."""
    offsets = list(accumulate(map((2).__add__, map(len, parts)), initial=0))
    return [(args, offsets[start], offsets[end], encode) for args, start, end, encode in commands]


def _length(buf: bytes, start: int, end: int, what: str) -> int:
    """The decimal at buf[start:end], as strictly as a length must be written (no sign, no spaces,
    no leading zeros, no underscores); -1 only for an array ("null array", ignored by redis)."""
    text = buf[start:end]
    if text.isdigit() and (len(text) == 1 or text[0] != 0x30):
        return int(text)
    if text == b"-1" and what == "array":
        return -1
    raise ProtocolError(f"invalid {what} length {_show(text)}")


def _show(raw: bytes, limit: int = 32) -> str:
    text = raw[:limit].decode("ascii", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")
    return repr(text + ("..." if len(raw) > limit else ""))


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_BLANKS = b" \n\r\t\v\f"  # isspace(): between words and after a closing quote
_WORD_ENDS = b" \n\r\t"  # what ends an unquoted word (redis does not count \v and \f here)
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command as redis's sdssplitargs does: blanks separate words; "double quotes"
    take \\n \\r \\t \\b \\a \\" \\\\ and \\xHH escapes; 'single quotes' take \\'. A closing quote must be
    followed by a blank. A NUL byte is refused (redis would silently stop reading at it)."""
    if b"\x00" in line:
        raise ProtocolError("inline request contains a NUL byte")
    if b'"' not in line and b"'" not in line and b"\x0b" not in line and b"\x0c" not in line:
        return line.split()  # bytes.split() cuts at exactly redis's blanks when \v and \f are absent
    args: list[bytes] = []
    n = len(line)
    p = 0
    while True:
        while p < n and line[p] in _BLANKS:
            p += 1
        if p >= n:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            if in_double:
                if p >= n:
                    raise ProtocolError("unbalanced quotes in inline request")
                c = line[p]
                if c == 0x5C and p + 3 < n and line[p + 1] == 0x78 and line[p + 2] in _HEX and line[p + 3] in _HEX:
                    current.append(int(line[p + 2:p + 4], 16))
                    p += 3
                elif c == 0x5C and p + 1 < n:
                    p += 1
                    current += _ESCAPES.get(line[p], bytes((line[p],)))
                elif c == 0x22:
                    if p + 1 < n and line[p + 1] not in _BLANKS:
                        raise ProtocolError("closing quote must be followed by a space in inline request")
                    p += 1
                    break
                else:
                    current.append(c)
            elif in_single:
                if p >= n:
                    raise ProtocolError("unbalanced quotes in inline request")
                c = line[p]
                if c == 0x5C and p + 1 < n and line[p + 1] == 0x27:
                    p += 1
                    current.append(0x27)
                elif c == 0x27:
                    if p + 1 < n and line[p + 1] not in _BLANKS:
                        raise ProtocolError("closing quote must be followed by a space in inline request")
                    p += 1
                    break
                else:
                    current.append(c)
            else:
                if p >= n:
                    break
                c = line[p]
                if c in _WORD_ENDS:
                    break
                if c == 0x22:
                    in_double = True
                elif c == 0x27:
                    in_single = True
                else:
                    current.append(c)
            p += 1
        args.append(bytes(current))


def encode_command(args: list[bytes]) -> bytes:
    """The canonical RESP array of bulk strings for `args`."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(_CRLF)
    return b"".join(parts)


def error_reply(message: str) -> bytes:
    """A RESP error line. The first word is the error code clients switch on (ERR, NOAUTH,
    WRONGPASS...); line breaks in the message are flattened so it stays one line."""
    text = " ".join(message.split())
    return b"-" + text.encode("utf-8", "replace") + _CRLF


class ReplySplicer:
    """Puts the proxy's own replies where markers' replies appear in the server's reply stream.

    `marker(payload)` returns the marker command to send upstream after everything forwarded so far;
    `feed(data)` takes the server's bytes and returns what to send the client (and whether the
    connection is to be closed after it). While no marker is pending the proxy bypasses this class
    entirely; while one is, at most `MAX_LINE` bytes of an unfinished line are held back (a marker's
    reply could begin there), so memory stays bounded whatever the server sends.
    """

    MAX_LINE = 256  # a marker's reply line is ~90 bytes; a longer unfinished line cannot be one

    __slots__ = ("_held", "_index", "_pending", "pending_bytes")

    def __init__(self) -> None:
        self._pending: deque[tuple[bytes, bytearray, bool]] = deque()  # (nonce, payload, close after)
        self._index: set[bytes] = set()
        self._held = b""
        self.pending_bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing pending and nothing held: the stream can bypass the splicer."""
        return not self._pending and not self._held

    def marker(self, payload: bytes, *, close: bool = False) -> bytes:
        nonce = b"cloudward." + secrets.token_hex(10).encode()
        self._pending.append((nonce, bytearray(payload), close))
        self._index.add(nonce)
        self.pending_bytes += len(payload)
        return encode_command([nonce])

    def append(self, payload: bytes, *, close: bool = False) -> None:
        """Add to the newest marker's reply (nothing was forwarded since it was sent)."""
        nonce, pending, closing = self._pending[-1]
        pending += payload
        self.pending_bytes += len(payload)
        if close and not closing:
            self._pending[-1] = (nonce, pending, True)

    def drain(self) -> bytes:
        """What is held back (the stream ended: a partial line the client may as well get)."""
        held, self._held = self._held, b""
        return held

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        buf = self._held + data if self._held else data
        self._held = b""
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while self._pending:
            hit = self._next_marker(buf, pos)
            if hit is None:
                break
            start, end, nonce = hit
            if end < 0:  # the marker's line is not complete yet: hold it from its start
                out.append(buf[pos:start])
                self._held = buf[start:]
                return b"".join(out), False
            out.append(buf[pos:start])
            while True:  # earlier markers whose replies the client suppressed are dropped with them
                candidate, payload, close = self._pending.popleft()
                self._index.discard(candidate)
                self.pending_bytes -= len(payload)
                if candidate == nonce:
                    break
            out.append(bytes(payload))
            pos = end
            if close:
                return b"".join(out), True
        if self._pending:
            last = buf.rfind(_CRLF, pos)
            tail = last + 2 if last >= 0 else pos
            if n - tail <= self.MAX_LINE:
                out.append(buf[pos:tail])
                self._held = buf[tail:]
                return b"".join(out), False
        out.append(buf[pos:] if pos else buf)
        return b"".join(out), False

    def _next_marker(self, buf: bytes, pos: int) -> tuple[int, int, bytes] | None:
        """(line start, line end after \\r\\n or -1 when incomplete, nonce) of the next marker reply."""
        search = pos
        while True:
            at = buf.find(b"cloudward.", search)
            if at < 0:
                return None
            search = at + 1
            nonce = buf[at:at + 30]
            if len(nonce) < 30:  # the nonce itself may be cut: hold from its line's start
                start = self._line_start(buf, pos, at)
                if at - start < self.MAX_LINE:
                    return start, -1, b""
                return None
            if nonce not in self._index:
                continue
            start = self._line_start(buf, pos, at)
            if buf[start:start + 1] != b"-" or at - start > self.MAX_LINE:
                continue
            end = buf.find(_CRLF, at + 30, start + self.MAX_LINE)
            if end < 0:
                if len(buf) - start <= self.MAX_LINE:
                    return start, -1, nonce
                continue
            return start, end + 2, nonce

    @staticmethod
    def _line_start(buf: bytes, pos: int, at: int) -> int:
        crlf = buf.rfind(_CRLF, pos, at)
        if crlf >= 0:
            return crlf + 2
        # the previous read may have ended between the \r and the \n of the line before
        return pos + 1 if buf[pos:pos + 1] == b"\n" else pos
