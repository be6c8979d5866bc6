"""WSGI middleware (Flask, Django, any WSGI app): `app.wsgi_app = WSGIMiddleware(app.wsgi_app)`.

The body is read from `wsgi.input` up to `max_body_bytes`, judged, and handed on unchanged: the
application's `wsgi.input` serves the bytes already read, then the rest of the original stream.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from cloudward.appsec.protect import PolicySource, Protector, block_payload
from cloudward.appsec.request import HttpRequest

__all__ = ["WSGIMiddleware"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_READ = 64 * 1024


class _Replay(io.RawIOBase):
    """The bytes read for judging, then the original stream (at most `remaining` more bytes)."""

    def __init__(self, head: bytes, rest: Any, remaining: int | None) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest
        self._remaining = remaining

    def readable(self) -> bool:
        return True

    def _from_rest(self, size: int) -> bytes:
        if self._remaining is not None:
            if self._remaining <= 0:
                return b""
            size = self._remaining if size < 0 else min(size, self._remaining)
        data: bytes = self._rest.read(size) if size >= 0 else self._rest.read()
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        data = self._head.read(size)
        if size < 0:
            return data + self._from_rest(-1)
        if len(data) < size:
            data += self._from_rest(size - len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        line = self._head.readline(size if size is not None else -1)
        if line.endswith(b"\n") or (size is not None and 0 <= size <= len(line)):
            return line
        more_size = -1 if size is None or size < 0 else size - len(line)
        if self._remaining is not None and self._remaining <= 0:
            return line
        rest_line: bytes = self._rest.readline(more_size) if more_size >= 0 else self._rest.readline()
        if self._remaining is not None:
            rest_line = rest_line[: self._remaining]
            self._remaining -= len(rest_line)
        return line + rest_line

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class WSGIMiddleware:
    def __init__(self, wsgi_app: WSGIApp, mode: str | None = None, policy: PolicySource = None,
                 **options: Any) -> None:
        self.app = wsgi_app
        self.protector = Protector(mode, policy, **options)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path_info = environ.get("PATH_INFO", "/")
        try:
            decoded_path = path_info.encode("latin-1").decode("utf-8", "replace")
        except UnicodeEncodeError:
            decoded_path = path_info
        policy = self.protector.route(method, decoded_path)
        if policy.mode == "off":
            return self.app(environ, start_response)
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        raw_path = raw_uri.split("?", 1)[0] if raw_uri else quote(decoded_path, safe="/%:@!$&'()*+,;=~")
        headers = [(k[5:].replace("_", "-").lower(), str(v)) for k, v in environ.items() if k.startswith("HTTP_")]
        if environ.get("CONTENT_TYPE"):
            headers.append(("content-type", environ["CONTENT_TYPE"]))
        if environ.get("CONTENT_LENGTH"):
            headers.append(("content-length", environ["CONTENT_LENGTH"]))
        try:
            length: int | None = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if not length and environ.get("wsgi.input_terminated"):
            length = None  # chunked, and the server says reading to EOF is safe
        stream = environ.get("wsgi.input")
        head = b""
        truncated = False
        if stream is not None and (length is None or length > 0):
            want = policy.max_body_bytes + 1 if length is None else min(length, policy.max_body_bytes + 1)
            pieces: list[bytes] = []
            got = 0
            while got < want:
                piece = stream.read(min(_READ, want - got))
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
            head = b"".join(pieces)
            truncated = len(head) > policy.max_body_bytes
            remaining = None if length is None else length - len(head)
            environ["wsgi.input"] = _Replay(head, stream, remaining)
        request = HttpRequest(method=method, raw_path=raw_path, query=environ.get("QUERY_STRING", ""),
                              headers=headers, body=head[: policy.max_body_bytes], body_truncated=truncated,
                              client=str(environ.get("REMOTE_ADDR", "")))
        verdict = self.protector.judge(request, policy)
        status = self.protector.refusal(verdict, request, policy)
        if status:
            payload = block_payload(verdict.incident_id, status)
            reason = "403 Forbidden" if status == 403 else "413 Content Too Large"
            start_response(reason, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                                    ("X-Cloudward-Incident", verdict.incident_id)])
            return [payload]
        with self.protector.guard(request, policy):  # the view's calls; a streamed body is iterated later
            return self.app(environ, start_response)
