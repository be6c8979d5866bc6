"""What the Redis proxy tests share: a real redis-server that would obey every attack, the proxy on
its own event loop in a thread, and raw-socket helpers for byte-exact exchanges."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cloudward.core.finding import Finding
from cloudward.network.redis_policy import load_policy
from cloudward.network.redis_proxy import RedisProxy, Upstream
from tests.harness.services import Service, start_process


@contextmanager
def protected_server(name: str = "redis-proxied") -> Iterator[Service]:
    """A redis-server that would let a client change `dir`, load modules and run DEBUG."""
    service = start_process(name, lambda s: [
        "redis-server", "--port", str(s.port), "--bind", s.host, "--protected-mode", "no", "--save", "",
        "--appendonly", "no", "--dir", str(s.dir), "--enable-protected-configs", "yes",
        "--enable-debug-command", "yes", "--enable-module-command", "yes"], ready=pong)
    with service:
        yield service


def pong(service: Service) -> bool:
    try:
        with socket.create_connection((service.host, service.port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class InProcessProxy:
    """The proxy on its own event loop in a thread (no signals there: reload is called directly)."""

    def __init__(self, upstream: str, policy_path: Path | None = None, watch_interval: float | None = None,
                 plain_asyncio: bool = False) -> None:
        self.watch_interval = watch_interval
        self.plain_asyncio = plain_asyncio
        self.lines: list[str] = []
        self.findings: list[Finding] = []
        self.proxy = RedisProxy(load_policy(policy_path), Upstream.parse(upstream), host="127.0.0.1", port=0,
                                policy_path=policy_path, sink=self.findings.extend, log=self.lines.append)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"
        self.port = self.proxy.port

    def _run(self) -> None:
        factory = None
        if not self.plain_asyncio:  # the loop the command runs on (uvloop, a dev dependency)
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        await self.proxy.start()
        self._ready.set()
        await self.proxy.serve(self.stop_event, watch_interval=self.watch_interval)
        await self.proxy.close()

    def call(self, fn):  # run fn on the proxy's loop, return its result
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(lambda: future.set_result(fn()))
        return future.result(10)

    def client(self, **kwargs) -> redis.Redis:
        # no retries: redis-py would otherwise retry a refused AUTH with a back-off of seconds
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0), **kwargs)

    def wait_for(self, predicate, what: str) -> None:
        """The reporter thread writes findings off the request path: wait for it (not a timing test)."""
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"never happened: {what}; log: {self.lines[-5:]}"
            time.sleep(0.02)

    def rule_ids(self) -> list[str]:
        return [f.rule_id for f in self.findings]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self._thread.join(10)


def exchange(port: int, payload: bytes, expect_replies: int | None = None, timeout: float = 5.0) -> bytes:
    """Send `payload` in one write and read until `expect_replies` reply lines arrived or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            if expect_replies is not None and _count_replies(data) >= expect_replies:
                return data
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return data
            if not chunk:
                return data
            data += chunk


def _count_replies(data: bytes) -> int:
    """Top-level replies in a stream made of simple strings, errors, integers and bulk strings."""
    count = pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        if data[pos:pos + 1] == b"$" and data[pos + 1:end] != b"-1":
            end = data.find(b"\r\n", end + 2 + int(data[pos + 1:end]))
            if end < 0:
                break
        count += 1
        pos = end + 2
    return count


def resp(*args: bytes | str) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return out
