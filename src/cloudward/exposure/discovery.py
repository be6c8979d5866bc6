"""Phase 1: which of the named ports accept a TCP connection (a connect scan).

A connect scan needs no privileges and speaks plain TCP: the kernel does the handshake, we close
the socket at once. Closed (refused) and filtered (timeout, unreachable) ports are the normal
answer, not errors. The work is spread over a fixed pool of worker coroutines pulling from one
lazy (host, port) stream, so a /16 costs neither a million tasks nor a million tuples.

Sockets are file descriptors: a scan at 512 connections in flight, next to identification,
easily meets the process's open-file limit. So the soft RLIMIT_NOFILE is raised to the hard limit
at start, concurrency is clamped to what the limit allows, and an `EMFILE` (or a shortage of
ephemeral ports, buffers, memory) halves nothing and crashes nothing: the worker backs off, the
pool shrinks by a quarter (at most once per 100 ms, so a burst of failures does not collapse it),
and the same port is tried again. A port still failing after several attempts is reported as a
per-host error, and the scan goes on.

Results come out per host, once all of a host's ports were tried, so the scanner can spot a host
that answers on every port (a tarpit or a proxy) before spending identification on it.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cloudward.core.scan import RateLimiter
from cloudward.exposure.targets import Host

# Our side ran out of something: back off and retry, never report the port as closed.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN,
                             errno.EADDRNOTAVAIL})
# The network said no: the port is filtered (or the host unreachable), which is an answer.
UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
                                errno.EACCES, errno.EPERM, errno.ECONNRESET, errno.ECONNABORTED,
                                errno.ETIMEDOUT})
MAX_RESOURCE_RETRIES = 8
SHRINK_COOLDOWN = 0.1
YIELD_EVERY = 16  # refused connects complete without suspending; let other tasks run
FD_RESERVE = 64  # descriptors kept free for the interpreter, logs, the store, rule files


class PortState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"
    ERROR = "error"


class ResourceExhaustedError(Exception):
    """This process (not the target) ran out of descriptors, ports, buffers or memory."""


@dataclass
class DiscoveryStats:
    probed: int = 0
    open: int = 0
    closed: int = 0
    filtered: int = 0
    errors: int = 0
    hosts_up: int = 0
    resource_retries: int = 0
    concurrency: int = 0  # the pool size at start
    concurrency_low: int = 0  # the smallest it shrank to after resource errors


@dataclass(slots=True)
class _HostState:
    host: Host
    remaining: int
    open: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard limit when allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def fd_capped_concurrency(requested: int, reserved: int = 0) -> int:
    """`requested`, lowered so that sockets in flight plus `reserved` fit the open-file limit."""
    soft = raise_nofile_limit()
    return max(1, min(requested, soft - FD_RESERVE - reserved))


async def connect_once(host: Host, port: int, timeout: float) -> tuple[PortState, str]:
    """One TCP connect; (state, message) where the message explains an ERROR state."""
    try:
        sock = socket.socket(host.family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in RESOURCE_ERRNOS:
            raise ResourceExhaustedError(f"cannot open a socket: {exc.strerror or exc}") from None
        return PortState.ERROR, f"cannot open a socket: {exc.strerror or exc}"
    try:
        sock.setblocking(False)
        address = (host.address, port) if host.family == socket.AF_INET else (host.address, port, 0, 0)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, address)
        except TimeoutError:
            return PortState.FILTERED, ""
        except ConnectionRefusedError:
            return PortState.CLOSED, ""
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                raise ResourceExhaustedError(f"connect: {exc.strerror or exc}") from None
            if exc.errno in UNREACHABLE_ERRNOS:
                return PortState.FILTERED, ""
            return PortState.ERROR, f"connect failed: {exc.strerror or exc}"
        return PortState.OPEN, ""
    finally:
        sock.close()


class _Pool:
    """The worker pool: shared lazy work stream, shrinkable size, per-host bookkeeping."""

    def __init__(self, groups: Iterable[tuple[Host, Sequence[int]]], concurrency: int, timeout: float,
                 rate: float, stats: DiscoveryStats, on_probed: Callable[[int], None] | None,
                 on_error: Callable[[str, str], None] | None,
                 done: asyncio.Queue[tuple[Host, list[int]] | None]) -> None:
        self.items = self._items(groups)
        self.limit = max(1, concurrency)
        self.timeout = timeout
        self.limiter = RateLimiter(rate)
        self.stats = stats
        self.on_probed = on_probed
        self.on_error = on_error
        self.done = done
        self.unreported = 0
        self.last_shrink = 0.0
        stats.concurrency = stats.concurrency_low = self.limit

    @staticmethod
    def _items(groups: Iterable[tuple[Host, Sequence[int]]]) -> Iterator[tuple[_HostState, int]]:
        for host, ports in groups:
            if ports:
                state = _HostState(host, len(ports))
                for port in ports:
                    yield state, port

    def _shrink(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self.last_shrink < SHRINK_COOLDOWN:
            return
        self.last_shrink = now
        self.limit = max(1, self.limit * 3 // 4)
        self.stats.concurrency_low = min(self.stats.concurrency_low, self.limit)

    async def _probe(self, host: Host, port: int) -> tuple[PortState, str]:
        problem = ""
        for attempt in range(MAX_RESOURCE_RETRIES + 1):
            await self.limiter.wait()
            try:
                return await connect_once(host, port, self.timeout)
            except ResourceExhaustedError as exc:
                problem = str(exc)
                self.stats.resource_retries += 1
                self._shrink()
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        return PortState.ERROR, f"{problem} (gave up after {MAX_RESOURCE_RETRIES + 1} attempts)"

    def _record(self, state: _HostState, port: int, outcome: PortState, message: str) -> None:
        stats = self.stats
        stats.probed += 1
        if outcome is PortState.OPEN:
            stats.open += 1
            state.open.append(port)
        elif outcome is PortState.CLOSED:
            stats.closed += 1
        elif outcome is PortState.FILTERED:
            stats.filtered += 1
        else:
            stats.errors += 1
            state.errors += 1
            state.first_error = state.first_error or message
        self.unreported += 1
        if self.unreported >= 64:
            self.flush()
        state.remaining -= 1
        if state.remaining == 0:
            self._host_done(state)

    def _host_done(self, state: _HostState) -> None:
        if state.errors and self.on_error is not None:
            self.on_error(state.host.address,
                          f"{state.errors} port(s) could not be probed: {state.first_error}")
        if state.open:
            self.stats.hosts_up += 1
            self.done.put_nowait((state.host, sorted(state.open)))

    def flush(self) -> None:
        if self.unreported and self.on_probed is not None:
            self.on_probed(self.unreported)
        self.unreported = 0

    async def worker(self, index: int) -> None:
        since_yield = 0
        for state, port in self.items:
            outcome, message = await self._probe(state.host, port)
            self._record(state, port, outcome, message)
            if index >= self.limit:
                return  # the pool shrank: retire (worker 0 never does)
            since_yield += 1
            if since_yield >= YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.limit):
                    group.create_task(self.worker(index))
        finally:
            self.flush()
            self.done.put_nowait(None)


async def discover(
    groups: Iterable[tuple[Host, Sequence[int]]],
    *,
    concurrency: int = 512,
    connect_timeout: float = 1.5,
    rate: float = 0.0,
    stats: DiscoveryStats | None = None,
    on_probed: Callable[[int], None] | None = None,
    on_error: Callable[[str, str], None] | None = None,
) -> AsyncGenerator[tuple[Host, list[int]], None]:
    """Yield (host, open ports) for every host with at least one open port, as hosts finish.

    `groups` is a lazy stream of (host, ports to try). `on_probed(n)` reports progress in
    batches; `on_error(host_address, message)` reports ports this process could not probe (not
    closed or filtered ones: those are answers). Close the generator (`contextlib.aclosing`) to
    stop early: the workers are cancelled and every socket closed.
    """
    stats = stats if stats is not None else DiscoveryStats()
    done: asyncio.Queue[tuple[Host, list[int]] | None] = asyncio.Queue()
    pool = _Pool(groups, concurrency, connect_timeout, rate, stats, on_probed, on_error, done)
    runner = asyncio.create_task(pool.run())
    try:
        while (item := await done.get()) is not None:
            yield item
        await runner  # re-raise a bug in a worker instead of ending quietly
    finally:
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
