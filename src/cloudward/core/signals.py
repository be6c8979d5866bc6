"""Graceful stops for long-running pollers (`storage listen`, `conformity watch`).

Both loops long-poll a queue and must stop cleanly on SIGINT/SIGTERM: finish what is in hand,
receive nothing new, and cut a long poll short (what it had received comes back after the queue's
visibility timeout). A second SIGINT interrupts at once. One implementation, so the two commands
cannot drift apart in how they stop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

__all__ = ["Stoppable", "stop_on_signals"]


class Stoppable(Protocol):
    @property
    def receiving(self) -> bool:
        """True while the poller's own thread sits in a long poll that a stop may cut short."""
        ...

    def stop(self) -> None: ...


@contextmanager
def stop_on_signals(poller: Stoppable, interrupted: type[BaseException]) -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM call `poller.stop()` and, during a long poll, raise
    `interrupted` (the poller's own exception, caught around its receive call). Yields the list of
    signals received. Outside the main thread signals cannot be caught: nothing is installed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if signum == signal.SIGINT and received.count(signal.SIGINT) > 1:
            raise KeyboardInterrupt
        poller.stop()
        if poller.receiving:
            raise interrupted

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
