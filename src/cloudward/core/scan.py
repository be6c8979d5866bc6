"""A scan: what was asked, what was found, what failed — and the machinery to run one.

Per-target failures are data (`ScanResult.errors`), never tracebacks, so one hostile target cannot
cost the findings of the others. Cancellation (Ctrl-C) stops new work, keeps every finding already
made and marks the scan `cancelled`, so the store stays consistent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from cloudward.core.finding import Finding, utcnow
from cloudward.core.severity import Severity

T = TypeVar("T")


class ScanStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class TargetError(BaseModel):
    target: str
    message: str
    stage: str = ""


class ScanResult(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str
    started: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    status: ScanStatus = ScanStatus.RUNNING
    targets: list[str] = Field(default_factory=list)
    errors: list[TargetError] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    # Facts worth reporting that are not findings (e.g. identified services), per capability.
    inventory: list[dict[str, Any]] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)

    def add_error(self, target: str, message: str, stage: str = "") -> None:
        self.errors.append(TargetError(target=target, message=message, stage=stage))

    def finish(self, status: ScanStatus = ScanStatus.COMPLETED) -> ScanResult:
        self.finished = utcnow()
        self.status = status
        return self

    def worst_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def contract(self, tool_version: str) -> dict[str, Any]:
        """The `cloudward/v1` JSON document (ARCHITECTURE.md); a public contract, keep it stable."""
        return {
            "schema": "cloudward/v1",
            "tool": {"name": "cloudward", "version": tool_version},
            "scan": {
                "id": self.id,
                "kind": self.kind,
                "status": self.status.value,
                "started": self.started.isoformat(),
                "finished": self.finished.isoformat() if self.finished else None,
                "targets": list(self.targets),
                "errors": [e.model_dump() for e in self.errors],
                "stats": self.stats,
            },
            "findings": [f.to_contract() for f in self.findings],
            # What was identified even where no rule fired (e.g. a Redis that requires AUTH).
            "inventory": list(self.inventory),
        }


class RateLimiter:
    """Spaces out events to at most `rate` per second (0 = unlimited), shared by all workers."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)


async def bounded_map(
    items: Iterable[T],
    worker: Callable[[T], Awaitable[None]],
    concurrency: int,
    on_done: Callable[[T], None] | None = None,
) -> None:
    """Run `worker` over `items` with at most `concurrency` in flight.

    Items are pulled lazily (a /16 of targets is never materialised as tasks at once). A worker
    must record its own per-item failures; an exception escaping it is a bug and propagates.
    """
    iterator = iter(items)
    in_flight: set[asyncio.Task[None]] = set()

    async def run(item: T) -> None:
        await worker(item)
        if on_done is not None:
            on_done(item)

    try:
        while True:
            while len(in_flight) < concurrency:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                in_flight.add(asyncio.create_task(run(item)))
            if not in_flight:
                return
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)


