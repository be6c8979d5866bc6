"""Phase 1: which of the named ports accept a TCP connection (a connect scan).

A connect scan needs no privileges and speaks plain TCP: the kernel does the handshake, we close
the socket at once. Closed (refused) and filtered (timeout, unreachable) ports are the normal
answer, not errors. The connecting itself is `sweep.py`'s epoll loop — forked over the CPUs for
large scans — run from a thread, so the event loop stays free to identify the services found so
far while the rest of the range is still being swept.

Sockets are file descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at start and
concurrency clamped to what it allows; a descriptor or ephemeral-port shortage shrinks the sweep
instead of failing it, and a port that cannot be tried at all becomes a per-host error.

Results come out per host, once all of a host's ports were tried, so the scanner can spot a host
that answers on every port (a tarpit or a proxy) before spending identification on it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass

from cloudward.exposure.sweep import HostResult, parallel_sweep
from cloudward.exposure.targets import Host

FD_RESERVE = 64  # descriptors kept free for the interpreter, logs, the store, rule files
PARALLEL_FROM = 8192  # connection attempts from which forking a sweeper per CPU pays off


@dataclass
class DiscoveryStats:
    probed: int = 0
    open: int = 0
    closed: int = 0
    filtered: int = 0
    errors: int = 0
    hosts_up: int = 0
    concurrency: int = 0
    workers: int = 0


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


async def discover(
    groups: Iterable[tuple[Host, Sequence[int]]],
    *,
    concurrency: int = 512,
    connect_timeout: float = 1.5,
    rate: float = 0.0,
    stats: DiscoveryStats | None = None,
    on_probed: Callable[[int], None] | None = None,
    on_error: Callable[[str, str], None] | None = None,
    attempts: int = 0,
    workers: int = 0,
) -> AsyncGenerator[tuple[Host, list[int]], None]:
    """Yield (host, open ports) for every host with at least one open port, as hosts finish.

    `groups` is a lazy stream of (host, ports to try); `attempts` (the total, when known) decides
    whether to fork one sweeper per CPU (`workers` overrides). `on_probed(n)` reports progress;
    `on_error(host_address, message)` reports ports this process could not try (not closed or
    filtered ones: those are answers). Close the generator (`contextlib.aclosing`) to stop early:
    the sweep stops and every socket is closed.
    """
    stats = stats if stats is not None else DiscoveryStats()
    stats.concurrency = concurrency
    if not workers:
        workers = (os.cpu_count() or 1) if attempts >= PARALLEL_FROM else 1
    stats.workers = workers
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[HostResult | BaseException | None] = asyncio.Queue()
    stop = threading.Event()

    def deliver(result: HostResult) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, result)

    def run() -> None:
        try:
            parallel_sweep(groups, deliver, workers=workers,
                           concurrency=concurrency, timeout=connect_timeout, rate=rate, stop=stop)
        except BaseException as exc:  # surfaces in the event loop, not lost in the thread
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=run, name="cloudward-sweep", daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            stats.probed += item.probed
            stats.closed += item.closed
            stats.filtered += item.filtered
            stats.open += len(item.open)
            if on_probed is not None:
                on_probed(item.probed)
            if item.errors:
                stats.errors += len(item.errors)
                if on_error is not None:
                    more = len(item.errors) - 3
                    shown = "; ".join(item.errors[:3]) + (f" (+{more} more)" if more > 0 else "")
                    on_error(item.host.address, shown)
            if item.open:
                stats.hosts_up += 1
                yield item.host, sorted(item.open)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
