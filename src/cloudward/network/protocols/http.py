"""HTTP/1.x requests and responses, one message each, named like Suricata's HTTP sticky buffers.

Bodies are kept up to `body_max` (Content-Length, chunked, or until the connection closes for a
response without either); a message whose body is longer is reported when the limit is reached
(`extra["truncated"]`) and the rest of its body passes through as plain stream data, its framing
still followed so the next message on the connection is found. A head longer than `message_max`
is reported cut and skipped up to its blank line. Chunked bodies are de-chunked into
`http.request_body` / `http.response_body`. Content codings gzip, x-gzip and deflate (up to two
layers) are decoded there too, as Suricata decompresses bodies, within the same `body_max` of
output whatever the ratio (a decompression bomb yields `body_max` bytes and `extra["truncated"]`);
a body that does not decode is kept as it came, with `extra["decode_error"]`.
"""

from __future__ import annotations

import zlib
from collections import deque
from urllib.parse import unquote_to_bytes

from cloudward.network.protocols.base import ParserLimits, Sink, StreamParser

METHODS = frozenset({
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH", b"REPORT",
})

_REQUEST_FIELDS = {
    b"user-agent": "http.user_agent", b"cookie": "http.cookie", b"referer": "http.referer",
    b"accept": "http.accept", b"accept-encoding": "http.accept_enc", b"accept-language": "http.accept_lang",
    b"connection": "http.connection", b"content-type": "http.content_type",
    b"content-length": "http.content_len",
}
_RESPONSE_FIELDS = {
    b"server": "http.server", b"location": "http.location", b"set-cookie": "http.cookie",
    b"connection": "http.connection", b"content-type": "http.content_type",
    b"content-length": "http.content_len",
}

_HEAD, _SKIP_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _LOST, _SKIP_BODY = range(10)
_FOREVER = 1 << 62
_NO_BODY = -1
_CHUNKED = -2
_UNTIL_EOF = -3


def probe_request(data: bytes) -> int:
    """2: an HTTP request line; 1: could still become one; 0: not HTTP."""
    data = data.lstrip(b"\r\n")
    sp = data.find(b" ", 0, 12)
    if sp < 0:
        return 1 if len(data) < 12 and data.isalpha() and data.isupper() else 0
    if data[:sp] not in METHODS:
        return 0
    eol = data.find(b"\n")
    if eol < 0:
        return 1 if len(data) < 4096 else 2 if data[sp + 1:sp + 2] in (b"/", b"h", b"*") else 0
    line = data[:eol].rstrip(b"\r")
    return 2 if line.rsplit(b" ", 1)[-1].startswith(b"HTTP/") else 0


def probe_response(data: bytes) -> int:
    if len(data) < 8:
        return 1 if b"HTTP/1."[:len(data)] == data else 0
    return 2 if data.startswith(b"HTTP/1.") and data[8:9] == b" " else 0


class HttpParser(StreamParser):
    """One direction of an HTTP/1.x connection: requests to the server, responses to the client."""

    proto = "http"

    def __init__(self, limits: ParserLimits, shared: dict[str, object], *, request: bool) -> None:
        super().__init__(limits, shared)
        self.request = request
        methods = shared.get("http.methods")
        if not isinstance(methods, deque):
            methods = deque(maxlen=64)
            shared["http.methods"] = methods
        self.methods: deque[bytes] = methods
        self.state = _HEAD
        self.remaining = 0
        self.body = bytearray()  # a de-chunked body (an unchunked one is read from buf itself)
        self.head_len = 0  # buf[:head_len] is the head, buf[head_len:] the unchunked body kept
        self.chunked = False
        self.line = bytearray()  # a chunk-size or trailer line being completed
        self.pending: tuple[dict[str, bytes], dict[str, object]] | None = None
        self.emitted = False  # the current message was already reported (its body overflowed)
        self.tunnel = False  # after CONNECT 2xx or 101 Switching Protocols: no more HTTP
        self.coding = b""  # the message's Content-Encoding

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes, sink: Sink) -> None:
        pos, n = 0, len(data)
        while pos < n:
            state = self.state
            if state == _HEAD:
                self.buf += data[pos:] if pos else data
                data, pos, n = b"", 0, 0
                rest = self._head(sink)
                if rest is not None:
                    data, pos, n = rest, 0, len(rest)
            elif state == _LENGTH:
                take = min(self.remaining, n - pos)
                self._body(data[pos:pos + take], data[pos:pos + take], sink)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self._finish(sink)
                elif self.emitted:  # the rest of the body is only passed on: let the stream do it
                    self.state, self.skip, self.remaining = _SKIP_BODY, self.remaining, 0
            elif state == _SKIP_BODY:
                take = min(self.skip, n - pos)
                if take:
                    sink.passthrough(data[pos:pos + take])
                    pos += take
                    self.skip -= take
                if not self.skip:
                    self._finish(sink)
            elif state == _CHUNK_DATA:
                take = min(self.remaining, n - pos)
                self._body(data[pos:pos + take], data[pos:pos + take], sink)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _CHUNK_END
                    self.remaining = 2
            elif state == _CHUNK_END:  # the CRLF after chunk data (a bare LF is tolerated)
                byte = data[pos]
                if byte in (13, 10):
                    self._framing(data[pos:pos + 1], sink)
                    pos += 1
                    self.remaining -= 1
                if byte not in (13, 10) or byte == 10 or self.remaining <= 0:
                    self.state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILER, _SKIP_HEAD):
                pos = self._framing_line(data, pos, sink)
            elif state == _UNTIL_CLOSE:
                self._body(data[pos:], data[pos:], sink)
                pos = n
                if self.emitted:
                    self.skip = _FOREVER
            else:  # _LOST
                sink.passthrough(data[pos:] if pos else data)
                pos = n

    def close(self, sink: Sink) -> None:
        if self.state == _HEAD and self.buf:
            head = bytes(self.buf)
            self.buf.clear()
            if self._parse_head(head, sink) is not None:
                self._emit(sink, truncated=True)  # a head that never ended
        elif self.pending is not None and not self.emitted:
            self._emit(sink, truncated=self.state != _UNTIL_CLOSE)
        elif self.buf:
            sink.passthrough(bytes(self.buf))
        self._reset()

    # ------------------------------------------------------------------ head

    def _head(self, sink: Sink) -> bytes | None:
        """Complete the head if it is there; returns the bytes after it (None: wait for more)."""
        buf = self.buf
        blank = len(buf) - len(buf.lstrip(b"\r\n"))  # blank lines before a start line are allowed
        if blank:
            sink.passthrough(bytes(buf[:blank]))
            del buf[:blank]
        end = buf.find(b"\r\n\r\n")
        cut = end + 4 if end >= 0 else -1
        if end < 0:
            end = buf.find(b"\n\n")
            cut = end + 2 if end >= 0 else -1
        if cut < 0:
            if len(buf) > self.limits.message_max:
                head = bytes(buf)
                buf.clear()
                if self._parse_head(head, sink) is not None:
                    self._emit(sink, truncated=True)
                    self.state = _SKIP_HEAD
                    self.line = bytearray(head[-3:])
            elif b"\n" in buf[:4096] and not self._start_line_ok(bytes(buf[:buf.find(b"\n")])):
                self._lose(sink)
            return None
        head, rest = bytes(buf[:cut]), bytes(buf[cut:])
        buf.clear()
        framing = self._parse_head(head, sink)
        if framing is None:
            return rest
        if framing == _NO_BODY:
            self._emit(sink, truncated=False)
            if self.tunnel:
                self.state = _LOST
        elif framing == _CHUNKED:
            self.state = _CHUNK_SIZE
            self.chunked = True
        elif framing == _UNTIL_EOF:
            self.state = _UNTIL_CLOSE
        else:
            self.state = _LENGTH
            self.remaining = framing
        return rest

    def _start_line_ok(self, line: bytes) -> bool:
        line = line.rstrip(b"\r")
        if self.request:
            parts = line.split(b" ")
            return len(parts) >= 3 and parts[0] in METHODS and parts[-1].startswith(b"HTTP/")
        return line.startswith(b"HTTP/") and line[9:12].isdigit()

    def _parse_head(self, head: bytes, sink: Sink) -> int | None:
        """Buffers of the head into `self.pending`; the body framing, or None if this is no HTTP
        (then the direction is lost and everything passes through)."""
        lines = head.split(b"\n")
        start = lines[0].rstrip(b"\r")
        if not self._start_line_ok(start):
            self.buf += head
            self._lose(sink)
            return None
        self.buf += head
        self.head_len = len(self.buf)
        headers: list[tuple[bytes, bytes]] = []
        for raw_line in lines[1:]:
            line = raw_line.rstrip(b"\r")
            if not line:
                continue
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
                name, value = headers[-1]
                headers[-1] = (name, value + b" " + line.strip())
                continue
            name, colon, value = line.partition(b":")
            if colon:
                headers.append((name.strip(), value.strip()))
        header_block = head[len(lines[0]) + 1:]
        buffers: dict[str, bytes] = {
            "http.start": head,
            "http.header.raw": header_block,
            "http.header": b"".join(name + b": " + value + b"\r\n" for name, value in headers),
            "http.header_names": b"\r\n" + b"".join(name + b"\r\n" for name, _ in headers) + b"\r\n",
        }
        fields = _REQUEST_FIELDS if self.request else _RESPONSE_FIELDS
        by_name: dict[bytes, bytes] = {}
        for name, value in headers:
            key = name.lower()
            by_name[key] = by_name[key] + b", " + value if key in by_name else value
        for key, buffer in fields.items():
            if key in by_name:
                buffers[buffer] = by_name[key]
        if self.request:
            method, _, rest = start.partition(b" ")
            uri, _, protocol = rest.rpartition(b" ")
            buffers.update({"http.request_line": start, "http.method": method, "http.uri.raw": uri,
                            "http.uri": normalize_uri(uri), "http.protocol": protocol})
            host = by_name.get(b"host")
            if host is not None:
                buffers["http.host.raw"] = host
                buffers["http.host"] = _normal_host(host)
            self.methods.append(method)
            status = 0
        else:
            protocol, _, rest = start.partition(b" ")
            code, _, message = rest.partition(b" ")
            buffers.update({"http.response_line": start, "http.protocol": protocol,
                            "http.stat_code": code, "http.stat_msg": message})
            status = int(code) if code.isdigit() else 0
        self.pending = (buffers, {})
        self.emitted = False
        self.coding = by_name.get(b"content-encoding", b"").strip().lower()
        return self._framing_of(by_name, status)

    def _framing_of(self, headers: dict[bytes, bytes], status: int) -> int:
        if not self.request:
            if 100 <= status < 200:
                if status == 101:
                    self.tunnel = True
                return _NO_BODY  # an interim response: the final one follows (no method consumed)
            method = self.methods.popleft() if self.methods else b""
            if method == b"CONNECT" and 200 <= status < 300:
                self.tunnel = True
                return _NO_BODY
            if method == b"HEAD" or status in (204, 304):
                return _NO_BODY
        coding = headers.get(b"transfer-encoding", b"").lower()
        if coding.rstrip().endswith(b"chunked"):
            return _CHUNKED
        length = headers.get(b"content-length")
        if length is not None:
            value = length.split(b",")[0].strip()
            if value.isdigit():
                return int(value) or _NO_BODY
            return _NO_BODY
        return _NO_BODY if self.request else _UNTIL_EOF

    # ------------------------------------------------------------------ body

    def _body(self, raw: bytes, decoded: bytes, sink: Sink) -> None:
        if self.emitted:
            sink.passthrough(raw)
            return
        chunked = self.state == _CHUNK_DATA
        room = self.limits.body_max - (len(self.body) if chunked else len(self.buf) - self.head_len)
        if len(decoded) <= room:
            if chunked:
                self.body += decoded
            self.buf += raw
            return
        # the body limit is reached inside this piece: report the message with what fits
        if chunked:
            self.body += decoded[:room]
        self.buf += raw[:room]
        self._emit(sink, truncated=True)
        sink.passthrough(raw[room:])

    def _framing(self, raw: bytes, sink: Sink) -> None:
        if not raw:
            return
        if self.emitted or self.state == _SKIP_HEAD:
            sink.passthrough(raw)
        elif len(self.buf) + len(raw) > self.limits.message_max + self.limits.body_max:
            self._emit(sink, truncated=True)
            sink.passthrough(raw)
        else:
            self.buf += raw

    def _framing_line(self, data: bytes, pos: int, sink: Sink) -> int:
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        piece = data[pos:end]
        if self.state == _SKIP_HEAD:
            window = bytes(self.line[-3:]) + piece
            blank = window.find(b"\r\n\r\n")
            blank_len = 4
            if blank < 0:
                blank, blank_len = window.find(b"\n\n"), 2
            if blank < 0:
                sink.passthrough(piece)
                self.line = bytearray(window[-3:])
                return end
            used = blank + blank_len - (len(window) - len(piece))
            sink.passthrough(piece[:used])
            self.line.clear()
            self.state = _HEAD
            return pos + used
        self._framing(piece, sink)
        if len(self.line) < 1024:
            self.line += piece[:1024]
        if nl < 0:
            return end
        line = bytes(self.line).strip()
        self.line.clear()
        if self.state == _TRAILER:
            if not line:
                self._finish(sink)
            return end
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16) if size_text else -1
        except ValueError:
            size = -1
        if size < 0:  # not chunked framing after all: give up on this direction
            self._emit(sink, truncated=True)
            self.state = _LOST
        elif size == 0:
            self.state = _TRAILER
        else:
            self.state = _CHUNK_DATA
            self.remaining = size
        return end

    # ------------------------------------------------------------------ output

    def _finish(self, sink: Sink) -> None:
        if not self.emitted:
            self._emit(sink, truncated=False)
        self._reset()
        if self.tunnel:
            self.state = _LOST

    def _emit(self, sink: Sink, *, truncated: bool) -> None:
        if self.pending is None:
            return
        buffers, extra = self.pending
        body = bytes(self.body) if self.chunked else bytes(self.buf[self.head_len:])
        if body and self.coding and self.coding != b"identity":
            body = self._decoded(body, extra)
        if body:
            buffers["http.request_body" if self.request else "http.response_body"] = body
        if truncated:
            extra["truncated"] = True
        sink.message(bytes(self.buf), buffers, extra)
        self.buf.clear()
        self.body.clear()
        self.emitted = True

    def _decoded(self, body: bytes, extra: dict[str, object]) -> bytes:
        try:
            decoded, cut = decode_content(body, self.coding, self.limits.body_max)
        except ValueError as exc:
            extra["decode_error"] = str(exc)
            return body
        extra["content_encoding"] = self.coding.decode("latin-1")
        if cut:
            extra["truncated"] = True
        return decoded

    def _reset(self) -> None:
        self.state = _HEAD
        self.skip = 0
        self.head_len = 0
        self.chunked = False
        self.pending = None
        self.emitted = False
        self.body.clear()
        self.buf.clear()
        self.line.clear()
        self.remaining = 0

    def _lose(self, sink: Sink) -> None:
        if self.buf:
            sink.passthrough(bytes(self.buf))
            self.buf.clear()
        self.pending = None
        self.state = _LOST


def normalize_uri(uri: bytes) -> bytes:
    """Percent-decoded, with `.` and `..` path segments resolved (the query is decoded, not
    resolved), which is what a `http.uri` rule expects to see."""
    if b"%" not in uri and b"/." not in uri:
        return uri
    path, sep, query = uri.partition(b"?")
    path = unquote_to_bytes(path)
    if b"/." in path:
        out: list[bytes] = []
        segments = path.split(b"/")
        for segment in segments[1:] if path.startswith(b"/") else segments:
            if segment == b"..":
                if out:
                    out.pop()
            elif segment != b".":
                out.append(segment)
        if segments[-1] in (b".", b".."):
            out.append(b"")
        path = (b"/" if path.startswith(b"/") else b"") + b"/".join(out)
    return path + sep + unquote_to_bytes(query) if sep else path


def _normal_host(host: bytes) -> bytes:
    host = host.strip().lower()
    if host.startswith(b"["):
        return host[:host.find(b"]") + 1] if b"]" in host else host
    name, colon, port = host.rpartition(b":")
    return name if colon and port.isdigit() else host


_CODINGS = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}  # zlib wbits; deflate may also come raw (-15)


def decode_content(body: bytes, coding: bytes, limit: int) -> tuple[bytes, bool]:
    """`body` with its content codings undone (listed in the order applied, undone last first; at
    most two), never more than `limit` bytes of output. Returns (bytes, cut short). ValueError for a
    coding this cannot undo (br, compress) or a stream that is not what it claims; a body cut by the
    body limit decodes as far as it goes."""
    names = [name.strip() for name in coding.split(b",") if name.strip() and name.strip() != b"identity"]
    if len(names) > 2:
        raise ValueError(f"{len(names)} content codings (at most 2 are undone)")
    cut = False
    for name in reversed(names):
        wbits = _CODINGS.get(name)
        if wbits is None:
            raise ValueError(f"content coding {name[:20].decode('latin-1')!r} is not decoded")
        attempts = (wbits, -15) if name == b"deflate" else (wbits,)
        for attempt in attempts:
            inflater = zlib.decompressobj(attempt)
            try:
                out = inflater.decompress(body, limit)
            except zlib.error as exc:
                if attempt == attempts[-1]:
                    raise ValueError(f"{name.decode('latin-1')} body does not decode: {exc}") from None
                continue
            cut = cut or bool(inflater.unconsumed_tail)
            body = out
            break
    return body, cut

