"""Bounded network I/O for probes: every read has a deadline and a byte ceiling.

A hostile or broken service (silent, endless banner, garbage, mid-reply close) must cost a probe
bounded time and memory and surface as a `ProbeError` with a clear message, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import h11


class ProbeError(Exception):
    """A probe could not complete against this endpoint (timeout, reset, malformed reply)."""


def insecure_tls_context() -> ssl.SSLContext:
    """TLS without verification and without a client certificate: exactly what an anonymous
    attacker has, so `2376 answering over TLS` can be tested the way TeamTNT would."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class Limits:
    connect_timeout: float = 1.5
    io_timeout: float = 3.0
    max_bytes: int = 256 * 1024


class Connection:
    """One TCP (optionally TLS) connection with deadline-bounded, size-bounded reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits

    @classmethod
    async def open(cls, host: str, port: int, limits: Limits, tls: bool = False) -> Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=insecure_tls_context() if tls else None,
                    server_hostname=host if tls else None,
                    limit=limits.max_bytes,
                ),
                timeout=limits.connect_timeout + (limits.io_timeout if tls else 0),
            )
        except TimeoutError:
            raise ProbeError(f"{'TLS ' if tls else ''}connect timed out") from None
        except ssl.SSLError as exc:
            raise ProbeError(f"TLS handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise ProbeError(f"connect failed: {exc.strerror or exc}") from None
        return cls(reader, writer, limits)

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout=self.limits.io_timeout)
        except TimeoutError:
            raise ProbeError("send timed out") from None
        except OSError as exc:
            raise ProbeError(f"send failed: {exc.strerror or exc}") from None

    async def read_some(self, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
        """Whatever arrives first (up to `max_bytes`), b"" on EOF or when nothing comes in time."""
        try:
            return await asyncio.wait_for(
                self.reader.read(max_bytes or self.limits.max_bytes), timeout or self.limits.io_timeout
            )
        except TimeoutError:
            return b""
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"read failed: {exc}") from None

    async def read_until(self, done: bytes | None = None, max_bytes: int | None = None,
                         timeout: float | None = None) -> bytes:
        """Read until `done` appears, EOF, the byte ceiling or the deadline — whichever is first.

        Hitting the ceiling or deadline is not an error: the caller judges what it got.
        """
        ceiling = max_bytes or self.limits.max_bytes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.limits.io_timeout)
        buf = bytearray()
        while len(buf) < ceiling:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(self.reader.read(ceiling - len(buf)), remaining)
            except TimeoutError:
                break
            except (OSError, ssl.SSLError) as exc:
                if buf:
                    break
                raise ProbeError(f"read failed: {exc}") from None
            if not chunk:
                break
            buf += chunk
            if done is not None and done in buf:
                break
        return bytes(buf)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), timeout=1.0)


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    truncated: bool = False
    tls: bool = False

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def json(self) -> object | None:
        """The body as JSON, or None when it is not (a probe never trusts a body's shape)."""
        import json

        try:
            return json.loads(self.body) if not self.truncated else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None


@dataclass
class HttpRequest:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


async def http_exchange(conn: Connection, host: str, request: HttpRequest, tls: bool) -> HttpResponse:
    """One HTTP/1.1 request and its response, parsed by h11 with the connection's bounds."""
    client = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=16 * 1024)
    headers = [("Host", host), ("User-Agent", "cloudward-exposure"), ("Accept", "*/*"),
               ("Connection", "close")]
    headers += list(request.headers.items())
    if request.body or request.method in ("POST", "PUT"):
        headers.append(("Content-Length", str(len(request.body))))
    data = client.send(h11.Request(method=request.method, target=request.path, headers=headers))
    if request.body:
        data += client.send(h11.Data(data=request.body))
    data += client.send(h11.EndOfMessage())
    await conn.send(data)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + conn.limits.io_timeout
    response: h11.Response | None = None
    body = bytearray()
    truncated = False
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProbeError(f"not a valid HTTP response: {exc}") from None
        if event is h11.NEED_DATA:
            remaining = deadline - loop.time()
            chunk = b""
            if remaining > 0:
                chunk = await conn.read_some(timeout=remaining, max_bytes=64 * 1024)
            if not chunk and not conn.reader.at_eof():
                # The deadline passed with nothing new: keep what arrived, or give up.
                if response is not None:
                    truncated = True
                    break
                raise ProbeError("HTTP response timed out")
            try:
                client.receive_data(chunk)  # b"" tells h11 the peer closed
            except h11.RemoteProtocolError as exc:
                raise ProbeError(f"not a valid HTTP response: {exc}") from None
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > conn.limits.max_bytes:
                del body[conn.limits.max_bytes:]
                truncated = True
                break
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    if response is None:
        raise ProbeError("connection closed before an HTTP response")
    names: dict[str, str] = {}
    for raw_name, raw_value in response.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        names[name] = f"{names[name]}, {value}" if name in names else value
    return HttpResponse(
        status=response.status_code,
        reason=response.reason.decode("latin-1", "replace"),
        headers=names,
        body=bytes(body),
        truncated=truncated,
        tls=tls,
    )
