"""Redis commands as a client sends them: RESP arrays of bulk strings, or inline commands.

Lenient where Redis is strict (it would close the connection; we only need to keep reading) and
streaming: a bulk string longer than what is kept is cut, the rest passed through as it arrives,
so a 512 MiB `SET` costs no more memory than a short one and the `CONFIG SET` after it is still
seen. Replies (the server's direction) are not parsed; they pass through as stream data.

Each command is one message: `redis.command` holds the command line (name upper-cased, arguments
as sent, joined by spaces) and `extra["redis.args"]` the arguments exactly.
"""

from __future__ import annotations

from cloudward.network.protocols.base import ParserLimits, Sink, StreamParser, strip_eol

# commands a client may send inline that identify Redis by content (a subset of Redis's table)
COMMANDS = frozenset({
    b"PING", b"INFO", b"CONFIG", b"AUTH", b"SET", b"GET", b"DEL", b"KEYS", b"SCAN", b"FLUSHALL",
    b"FLUSHDB", b"SAVE", b"BGSAVE", b"SLAVEOF", b"REPLICAOF", b"MODULE", b"EVAL", b"EVALSHA",
    b"SCRIPT", b"CLIENT", b"DBSIZE", b"SELECT", b"HELLO", b"MULTI", b"EXEC", b"QUIT", b"ECHO",
    b"EXISTS", b"EXPIRE", b"TTL", b"TYPE", b"HSET", b"HGET", b"LPUSH", b"RPUSH", b"SADD", b"ZADD",
    b"INCR", b"MSET", b"MGET", b"SETEX", b"APPEND", b"COMMAND", b"SHUTDOWN", b"DEBUG", b"MONITOR",
    b"SYNC", b"PSYNC", b"REPLCONF", b"ACL", b"FUNCTION", b"FCALL", b"MIGRATE", b"RESTORE", b"DUMP",
})

_IDLE, _ARGLEN, _BULK, _CRLF, _SKIP_LINE, _LOST = range(6)
_MAX_ARGS_KEPT = 256
_MAX_HEADER_LINE = 64


def probe(data: bytes) -> int:
    """2: a RESP array of bulk strings or a known inline command; 1: undecided; 0: not Redis."""
    if data[:1] == b"*":
        nl = data.find(b"\n")
        if nl < 0:
            return 1 if (len(data) < 16 and data[1:].rstrip(b"\r").isdigit()) or len(data) == 1 else 0
        count = strip_eol(data[1:nl + 1])
        if not count.isdigit():
            return 0
        rest = data[nl + 1:nl + 2]
        return 2 if rest == b"$" else 1 if not rest else 0
    word = data.split(None, 1)[0] if data.strip() else b""
    if not word:
        return 1 if not data.strip(b" \t") else 0
    if word.upper() in COMMANDS:
        return 2 if b"\n" in data else 1
    return 1 if len(data) < 12 and b"\n" not in data and data.isalpha() else 0


def probe_reply(data: bytes) -> int:
    """The server's side: a RESP reply type byte followed by a line."""
    if data[:1] not in (b"+", b"-", b":", b"$", b"*", b"%", b"_", b"#", b",", b"(", b"=", b"~", b">", b"|"):
        return 0
    return 2 if data[:4] in (b"+OK\r", b"+PON", b"-ERR", b"-NOA", b"-WRO") else 1


def split_inline(line: bytes) -> list[bytes]:
    """Arguments of an inline command, with Redis's quoting ("..." with backslash escapes, '...')."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in b" \t":
            i += 1
        if i >= n:
            break
        quote = line[i] if line[i] in b"\"'" else 0
        current = bytearray()
        if quote:
            i += 1
            while i < n and line[i] != quote:
                if line[i] == 0x5C and i + 1 < n:  # backslash
                    i += 1
                    current.append({0x6E: 10, 0x72: 13, 0x74: 9}.get(line[i], line[i]) if quote == 0x22 else line[i])
                else:
                    current.append(line[i])
                i += 1
            i += 1
        else:
            while i < n and line[i] not in b" \t":
                current.append(line[i])
                i += 1
        args.append(bytes(current))
    return args


class RedisParser(StreamParser):
    proto = "redis"

    def __init__(self, limits: ParserLimits, shared: dict[str, object]) -> None:
        super().__init__(limits, shared)  # self.buf: the kept raw bytes of the current command
        self.state = _IDLE
        self.line = bytearray()
        self.args: list[bytes] = []
        self.nargs = 0
        self.want = 0
        self.cur = bytearray()
        self.truncated = False

    def feed(self, data: bytes, sink: Sink) -> None:
        pos, n = 0, len(data)
        while pos < n:
            state = self.state
            if state == _LOST:
                sink.passthrough(data[pos:] if pos else data)
                return
            if state in (_BULK, _CRLF):
                take = min(self.want, n - pos)
                piece = data[pos:pos + take]
                pos += take
                self.want -= take
                self._raw(piece, sink)
                if state == _BULK:
                    room = self.limits.message_max - len(self.cur)
                    if room > 0:
                        self.cur += piece[:room]
                    if not self.want:
                        self.state, self.want = _CRLF, 2
                elif not self.want:
                    self._arg_done(sink)
                continue
            nl = data.find(b"\n", pos)
            if state == _SKIP_LINE:
                end = n if nl < 0 else nl + 1
                sink.passthrough(data[pos:end])
                pos = end
                if nl >= 0:
                    self.state = _IDLE
                continue
            if nl < 0:
                self.line += data[pos:]
                pos = n
                self._long_line(sink)
                continue
            if self.line:
                self.line += data[pos:nl + 1]
                line = bytes(self.line)
                self.line.clear()
            else:
                line = data[pos:nl + 1]
            pos = nl + 1
            if state == _IDLE:
                self._command_start(line, sink)
            else:
                self._arg_header(line, sink)

    def close(self, sink: Sink) -> None:
        if self.state == _IDLE and self.line:
            line = bytes(self.line)
            self.line.clear()
            self._command_start(line, sink)
        elif self.state in (_ARGLEN, _BULK, _CRLF):
            if self.cur:
                self.args.append(bytes(self.cur))
            if self.line:
                self._raw(bytes(self.line), sink)
            self.truncated = True
            self._emit(sink)
        elif self.line:
            sink.passthrough(bytes(self.line))
        self.line.clear()
        self.state = _IDLE

    # ------------------------------------------------------------------ steps

    def _long_line(self, sink: Sink) -> None:
        limit = self.limits.line_max if self.state == _IDLE else _MAX_HEADER_LINE
        if len(self.line) <= limit:
            return
        line = bytes(self.line)
        self.line.clear()
        if self.state == _IDLE and line[:1] != b"*":  # an over-long inline command: report its start
            self._raw(line[:limit], sink)
            self.args = split_inline(line[:limit])[:_MAX_ARGS_KEPT]
            self.truncated = True
            self._emit(sink)
            sink.passthrough(line[limit:])
            self.state = _SKIP_LINE
        else:
            self._lose(line, sink)

    def _command_start(self, line: bytes, sink: Sink) -> None:
        if line[:1] == b"*":
            count = strip_eol(line[1:])
            if not count.lstrip(b"-").isdigit():
                self._lose(line, sink)
                return
            if int(count) <= 0:
                sink.passthrough(line)
                return
            self.nargs = int(count)
            self.state = _ARGLEN
            self._raw(line, sink)
            return
        args = split_inline(strip_eol(line))
        if not args:
            sink.passthrough(line)
            return
        self._raw(line, sink)
        self.args = args[:_MAX_ARGS_KEPT]
        self.truncated = len(args) > _MAX_ARGS_KEPT
        self._emit(sink)

    def _arg_header(self, line: bytes, sink: Sink) -> None:
        text = strip_eol(line)
        if text[:1] != b"$" or not text[1:].lstrip(b"-").isdigit():
            self._raw(line, sink)
            self.truncated = True
            self._emit(sink)
            self.state = _LOST
            return
        self._raw(line, sink)
        length = int(text[1:])
        if length < 0:  # a null bulk string stands for an empty argument here
            self._arg_done(sink)
        elif length == 0:
            self.state, self.want = _CRLF, 2
        else:
            self.state, self.want = _BULK, length

    def _arg_done(self, sink: Sink) -> None:
        if len(self.args) < _MAX_ARGS_KEPT:
            self.args.append(bytes(self.cur))
        else:
            self.truncated = True
        self.cur.clear()
        self.nargs -= 1
        if self.nargs <= 0:
            self._emit(sink)
        else:
            self.state = _ARGLEN

    def _raw(self, piece: bytes, sink: Sink) -> None:
        room = self.limits.message_max - len(self.buf)
        if len(piece) <= room:
            self.buf += piece
            return
        if room > 0:
            self.buf += piece[:room]
        sink.passthrough(piece[max(room, 0):])
        self.truncated = True

    def _emit(self, sink: Sink) -> None:
        args = self.args
        if args:
            command = b" ".join([args[0].upper(), *args[1:]])
            extra: dict[str, object] = {"redis.args": args}
            if self.truncated:
                extra["truncated"] = True
            sink.message(bytes(self.buf), {"redis.command": command}, extra)
        elif self.buf:
            sink.passthrough(bytes(self.buf))
        self.buf.clear()
        self.args = []
        self.cur.clear()
        self.truncated = False
        self.nargs = 0
        self.state = _IDLE

    def _lose(self, line: bytes, sink: Sink) -> None:
        """Not RESP after all: what is held and the rest of the direction pass through."""
        if self.args or self.buf:
            self.truncated = True
            self._emit(sink)
        sink.passthrough(line)
        self.state = _LOST


class OpaqueParser(StreamParser):
    """A direction whose protocol is known but whose messages are not parsed (Redis replies)."""

    def __init__(self, limits: ParserLimits, shared: dict[str, object], proto: str) -> None:
        super().__init__(limits, shared)
        self.proto = proto

    def feed(self, data: bytes, sink: Sink) -> None:
        sink.passthrough(data)
