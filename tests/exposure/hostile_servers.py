"""Misbehaving TCP servers on loopback, for proving the scanner stays bounded against them.

Every server runs on one asyncio loop in a daemon thread (so the code under test can run its own
`asyncio.run` in the test's thread), binds a free port on a 127.0.0.0/8 address, and is closed —
with every connection it accepted — when the `HostileServers` context ends.

Behaviours:
  silent        accepts, reads and discards, never says a word
  endless       streams a banner without a line break for as long as the client reads
  garbage       answers whatever it is sent with random binary bytes, then closes
  http_garbage  answers with an HTTP status line followed by random bytes (a broken HTTP server)
  half_http     answers with HTTP headers promising 5000 bytes, sends 13, then closes
  tarpit        N listening sockets on one address that accept every connection and close it

And, as the control in the same scans, a well-behaved "toy" service with its own probe and rule
(`ToyProbe`, `toy_rule()`), so tests do not depend on the real probes: the client sends
`HELLO\r\n`, the server answers `TOY 1.0 open\r\n` (`slow_toy` only after 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import resource
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from cloudward.core.rules import Rule
from cloudward.core.severity import Category, Severity
from cloudward.exposure.net import ProbeError
from cloudward.exposure.probes.base import Observation, ProbeContext

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
T = TypeVar("T")

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
HALF_HTTP = (b"HTTP/1.1 200 OK\r\nServer: half\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n"
             b"<html>partial")


def _check_loopback(host: str) -> None:
    if ipaddress.ip_address(host) not in _LOOPBACK:
        raise ValueError(f"hostile servers bind only to 127.0.0.0/8, not {host}")


async def _drain_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader, wait: float = 2.0) -> bytes:
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        return await asyncio.wait_for(reader.read(4096), wait)
    return b""


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(4096):
            pass
    await _close(writer)


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    chunk = b"A" * 16384
    try:
        while not writer.is_closing():
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        await _close(writer)


def _random_bytes(seed: int, size: int) -> bytes:
    data = bytearray(random.Random(seed).randbytes(size))
    # Never look like a TLS alert, an HTTP status line, RESP or a PostgreSQL answer by accident.
    data[0] = 0x00
    return bytes(data)


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader, wait=5.0)
    writer.write(_random_bytes(1, 2048))
    await _drain_quietly(writer)
    await _close(writer)


async def http_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader, wait=5.0)
    writer.write(b"HTTP/1.1 200 OK\r\n" + _random_bytes(2, 2048) + b"\r\n\r\n")
    await _drain_quietly(writer)
    await _close(writer)


async def half_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader, wait=5.0)
    writer.write(HALF_HTTP)
    await _drain_quietly(writer)
    await _close(writer)


async def _toy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        first = await asyncio.wait_for(reader.read(4096), 10)
        if first.strip() == b"HELLO":
            await asyncio.sleep(delay)
            writer.write(b"TOY 1.0 open\r\n")
        else:
            writer.write(b"ERR unknown command\r\n")
        await writer.drain()
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        await _close(writer)


async def toy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _toy(reader, writer, 0.0)


async def slow_toy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _toy(reader, writer, 60.0)


class ToyProbe:
    """A "raw" probe for the toy protocol; `calls` records (port, tls) of every attempt."""

    name: ClassVar[str] = "toy"
    family: ClassVar[str] = "raw"
    ports: ClassVar[tuple[int, ...]] = ()

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        self.calls.append((ctx.port, tls))
        if tls:
            return None
        try:
            reply = await ctx.exchange(b"HELLO\r\n", until=b"\n", max_bytes=256)
        except ProbeError:
            return None
        if not reply.startswith(b"TOY "):
            return None
        words = reply.split()
        return Observation(service="toy", host=ctx.host, port=ctx.port,
                           facts={"version": words[1].decode("ascii", "replace"), "open": b"open" in words})


def toy_rule() -> Rule:
    return Rule(
        id="toy.open", title="Toy service answers anyone", severity=Severity.HIGH,
        category=Category.EXPOSURE, description="The toy service answers without authentication.",
        remediation="Shut the toy service down or put it behind authentication.",
        match={"engine": "exposure", "service": "toy", "when": {"fact": "open", "equals": True},
               "evidence": ["version"]},
    )


class _CloseAtOnce(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


BEHAVIOURS: dict[str, Handler] = {
    "silent": silent,
    "endless": endless,
    "garbage": garbage,
    "http_garbage": http_garbage,
    "half_http": half_http,
    "toy": toy,
    "slow_toy": slow_toy,
}


class HostileServers:
    """`with HostileServers() as hs: host, port = hs.start("silent")`."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-servers", daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _tracked(self, handler: Handler) -> Handler:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            self._writers.add(writer)
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                self._writers.discard(writer)
                self._tasks.discard(task)  # type: ignore[arg-type]

        return run

    def start(self, behaviour: str, host: str = "127.0.0.1") -> tuple[str, int]:
        """Start one server with a named behaviour; returns its (host, port)."""
        return self.serve(BEHAVIOURS[behaviour], host)

    def serve(self, handler: Handler, host: str = "127.0.0.1",
              tls: ssl.SSLContext | None = None) -> tuple[str, int]:
        """Start a server running `handler` per connection (over TLS with `tls`)."""
        _check_loopback(host)
        tracked = self._tracked(handler)

        async def go() -> int:
            server = await asyncio.start_server(tracked, host, 0, ssl=tls)
            self._servers.append(server)
            port: int = server.sockets[0].getsockname()[1]
            return port

        return host, self._call(go())

    def tarpit(self, host: str, count: int) -> list[int]:
        """`count` listening sockets on `host` that accept and immediately close every connection."""
        _check_loopback(host)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if count > soft - 256:
            raise RuntimeError(f"RLIMIT_NOFILE {soft} is too low for a {count}-port tarpit")

        async def go() -> list[int]:
            ports = []
            loop = asyncio.get_running_loop()
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, 0))
                sock.listen(64)
                server = await loop.create_server(_CloseAtOnce, sock=sock)
                self._servers.append(server)
                ports.append(sock.getsockname()[1])
            return ports

        return self._call(go(), timeout=120)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        await asyncio.sleep(0)
