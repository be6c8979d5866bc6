"""Findings leave the request path through a bounded queue drained by one background thread.

A request only ever does `put_nowait`: when the queue is full the findings are counted as dropped,
never waited for. The thread hands batches to the sink (a callable — e.g. one that records them in
the findings store — or a JSON-lines file); a sink that raises is counted and the thread goes on.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from cloudward.core.finding import Finding

__all__ = ["FindingQueue", "JsonLinesSink", "LoggingSink", "Sink"]

Sink = Callable[[Sequence[Finding]], None]
log = logging.getLogger("cloudward.appsec")


class JsonLinesSink:
    """Appends each finding as one `cloudward/v1` JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __call__(self, findings: Sequence[Finding]) -> None:
        lines = "".join(json.dumps(f.to_contract(), sort_keys=True) + "\n" for f in findings)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)


class LoggingSink:
    """The default sink: one warning per finding on the `cloudward.appsec` logger."""

    def __call__(self, findings: Sequence[Finding]) -> None:
        for f in findings:
            log.warning("appsec %s %s at %s (%s) incident %s", f.evidence.get("action", ""), f.rule_id,
                        f.location.get("location", ""), f.target.name, f.evidence.get("incident_id", ""))


class FindingQueue:
    def __init__(self, sink: Sink | None = None, *, maxsize: int = 10_000, batch: int = 200) -> None:
        self.sink: Sink = sink or LoggingSink()
        self.batch = batch
        self._queue: queue.Queue[Finding | None] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.enqueued = 0
        self.written = 0
        self.dropped = 0
        self.sink_errors = 0
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def put(self, findings: Sequence[Finding]) -> None:
        """Never blocks: what does not fit is dropped and counted."""
        if not findings:
            return
        self._ensure_thread()
        for finding in findings:
            if self._closed:
                with self._lock:
                    self.dropped += 1
                continue
            try:
                self._queue.put_nowait(finding)
            except queue.Full:
                with self._lock:
                    self.dropped += 1
                continue
            with self._lock:
                self.enqueued += 1
                self._pending += 1

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cloudward-appsec-findings", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(batch)
                    return
                batch.append(nxt)
            self._write(batch)

    def _write(self, batch: list[Finding]) -> None:
        try:
            self.sink(batch)
        except Exception as exc:  # the store being down must not stop protection
            with self._lock:
                self.sink_errors += 1
            log.warning("appsec: findings sink failed (%s); %d findings lost", type(exc).__name__, len(batch))
        else:
            with self._lock:
                self.written += len(batch)
        with self._lock:
            self._pending -= len(batch)
            self._idle.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued has been handed to the sink (True) or `timeout` passes."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"enqueued": self.enqueued, "written": self.written, "dropped": self.dropped,
                    "sink_errors": self.sink_errors, "pending": self._pending}
