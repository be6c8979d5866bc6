"""A connect sweep built for size: one epoll loop per CPU, no coroutine per connection.

An asyncio connect costs tens of microseconds of Python per port, which makes a /16 slower than
nmap before a single service is identified. This loop does the minimum per port: a non-blocking
`connect`, then an immediate `SO_ERROR` look — on a network that answers at once (loopback, a
LAN that sends RSTs) the refusal is already there and the socket never touches epoll — and epoll
only for connections still in flight. Large sweeps are split by host over forked worker processes
that send each finished host back through a pipe, so both cores connect while the parent's event
loop identifies the services already found.

It is the same connect scan as `discovery.py` (no privileges, no raw packets), only cheaper.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import pickle
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from cloudward.exposure.targets import Host

REFUSED = frozenset({errno.ECONNREFUSED})
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN,
                             errno.EADDRNOTAVAIL})
_EVENTS = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP
_HEADER = struct.Struct("!I")


@dataclass
class HostResult:
    host: Host
    open: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    probed: int = 0
    closed: int = 0
    filtered: int = 0


class _Pacer:
    """At most `rate` connection attempts per second (0 = unlimited), for one worker."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)
        self.next = max(now, self.next) + self.interval


def sweep(
    groups: Iterable[tuple[Host, Sequence[int]]],
    *,
    concurrency: int = 1024,
    timeout: float = 1.5,
    rate: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[HostResult]:
    """Yield one HostResult per host once every one of its ports was tried (in one process)."""
    poller = select.epoll()
    live: dict[int, tuple[socket.socket, HostResult, int, float]] = {}
    expiry: collections.deque[tuple[float, int, socket.socket]] = collections.deque()
    pending: dict[int, int] = {}  # id(result) -> attempts still in flight
    results: dict[int, HostResult] = {}
    finished: list[HostResult] = []
    pacer = _Pacer(rate)
    limit = max(1, concurrency)
    groups_iter = iter(groups)
    current: tuple[HostResult, Iterator[int]] | None = None
    sol, so_error = socket.SOL_SOCKET, socket.SO_ERROR

    def settle(result: HostResult, port: int, err: int) -> None:
        if err == 0:
            result.open.append(port)
        elif err in REFUSED:
            result.closed += 1
        else:
            result.filtered += 1
        key = id(result)
        pending[key] -= 1
        if pending[key] == 0 and (current is None or current[0] is not result):
            del pending[key]
            finished.append(results.pop(key))

    try:
        while True:
            # Fill: start attempts until the limit, host by host.
            while len(live) < limit:
                if current is None:
                    try:
                        host, ports = next(groups_iter)
                    except StopIteration:
                        break
                    result = HostResult(host)
                    results[id(result)] = result
                    pending[id(result)] = 0
                    current = (result, iter(ports))
                result, ports_iter = current
                port = next(ports_iter, None)
                if port is None:
                    current = None
                    if pending[id(result)] == 0:
                        del pending[id(result)]
                        finished.append(results.pop(id(result)))
                    continue
                pacer.wait()
                try:
                    sock = socket.socket(result.host.family, socket.SOCK_STREAM)
                except OSError as exc:
                    if exc.errno in RESOURCE_ERRNOS and live:
                        limit = max(1, len(live) * 3 // 4)  # give descriptors back, retry this port later
                        current = (result, _chain(port, ports_iter))
                        break
                    result.errors.append(f"port {port}: cannot open a socket: {exc.strerror}")
                    continue
                sock.setblocking(False)
                result.probed += 1
                pending[id(result)] += 1
                code = sock.connect_ex((result.host.address, port))
                if code in RESOURCE_ERRNOS:  # our side ran short (ephemeral ports, buffers): not an answer
                    sock.close()
                    result.probed -= 1
                    pending[id(result)] -= 1
                    if live:
                        limit = max(1, len(live) * 3 // 4)
                        current = (result, _chain(port, ports_iter))
                        break
                    result.errors.append(f"port {port}: cannot connect: {os.strerror(code)}")
                    continue
                if code == errno.EINPROGRESS:
                    code = sock.getsockopt(sol, so_error)  # answered already? (loopback, RST-ing LANs)
                    if code == 0:
                        fd = sock.fileno()
                        live[fd] = (sock, result, port, 0.0)
                        expiry.append((time.monotonic() + timeout, fd, sock))
                        poller.register(fd, _EVENTS)
                        continue
                sock.close()
                settle(result, port, code)
            if finished:
                yield from finished
                finished.clear()
            if not live and current is None:
                if results:  # hosts whose every attempt settled but were never flushed
                    for key in list(results):
                        if pending.get(key, 0) == 0:
                            pending.pop(key, None)
                            finished.append(results.pop(key))
                    yield from finished
                    finished.clear()
                break
            if should_stop():
                return
            for fd, _ in poller.poll(0.05):
                sock, result, port, _unused = live.pop(fd)
                code = sock.getsockopt(sol, so_error)
                sock.close()  # closing also removes it from the epoll set
                settle(result, port, code)
            now = time.monotonic()
            while expiry and expiry[0][0] <= now:
                _, fd, sock = expiry.popleft()
                entry = live.get(fd)
                if entry is None or entry[0] is not sock:
                    continue  # settled already (the fd number may have been reused)
                del live[fd]
                sock.close()
                settle(entry[1], entry[2], errno.ETIMEDOUT)
            if limit < concurrency and len(live) < limit:
                limit = min(concurrency, limit + 16)  # recover slowly after a descriptor shortage
    finally:
        for sock, *_ in live.values():
            sock.close()
        poller.close()


def _chain(first: int, rest: Iterator[int]) -> Iterator[int]:
    yield first
    yield from rest


# --------------------------------------------------------------------------- parallel sweep


def _worker(groups: Iterable[tuple[Host, Sequence[int]]], index: int, workers: int, write_fd: int,
            concurrency: int, timeout: float, rate: float) -> None:
    parent = os.getppid()
    mine = (g for i, g in enumerate(groups) if i % workers == index)
    with os.fdopen(write_fd, "wb", buffering=1 << 16) as out:
        batch: list[HostResult] = []
        last = time.monotonic()
        for result in sweep(mine, concurrency=concurrency, timeout=timeout, rate=rate,
                            should_stop=lambda: os.getppid() != parent):
            batch.append(result)
            now = time.monotonic()
            if len(batch) >= 256 or result.open or now - last > 0.1:
                data = pickle.dumps(batch)
                out.write(_HEADER.pack(len(data)) + data)
                out.flush()
                batch, last = [], now
        if batch:
            data = pickle.dumps(batch)
            out.write(_HEADER.pack(len(data)) + data)


def _read_messages(read_fd: int) -> Iterator[list[HostResult]]:
    with os.fdopen(read_fd, "rb") as stream:
        while len(header := stream.read(_HEADER.size)) == _HEADER.size:
            (size,) = _HEADER.unpack(header)
            payload = stream.read(size)
            if len(payload) < size:
                return  # the worker was stopped mid-message: nothing more will come
            yield pickle.loads(payload)  # noqa: S301 - our own forked child wrote it


def parallel_sweep(
    groups: Iterable[tuple[Host, Sequence[int]]],
    on_result: Callable[[HostResult], None],
    *,
    workers: int = 0,
    concurrency: int = 1024,
    timeout: float = 1.5,
    rate: float = 0.0,
    stop: threading.Event | None = None,
) -> None:
    """Run `sweep` over `groups` split by host across `workers` forked processes (default: one
    per CPU), calling `on_result` in this thread for every finished host. Blocks until done or
    until `stop` is set (the workers are then killed). Meant to run in a thread of its own."""
    workers = workers or max(1, os.cpu_count() or 1)
    if workers == 1:
        for result in sweep(groups, concurrency=concurrency, timeout=timeout, rate=rate,
                            should_stop=stop.is_set if stop else lambda: False):
            on_result(result)
        return
    children: list[tuple[int, int]] = []
    try:
        for index in range(workers):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: sweep its share, write results, leave without cleanup handlers
                code = 0
                try:
                    os.close(read_fd)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
                    _worker(groups, index, workers, write_fd, max(1, concurrency // workers), timeout,
                            rate / workers)
                except BaseException:
                    code = 1
                os._exit(code)
            os.close(write_fd)
            children.append((pid, read_fd))
        readers = [threading.Thread(target=_pump, args=(fd, on_result), daemon=True) for _, fd in children]
        for reader in readers:
            reader.start()
        while any(r.is_alive() for r in readers):
            if stop is not None and stop.wait(0.05):
                break
            for reader in readers:
                reader.join(0.05)
    finally:
        for pid, _ in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _pump(read_fd: int, on_result: Callable[[HostResult], None]) -> None:
    for batch in _read_messages(read_fd):
        for result in batch:
            on_result(result)
