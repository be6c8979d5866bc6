"""What every request handler reaches through `request.app.state.cloudward`."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from cloudward.server import accounts
from cloudward.server.config import ServerConfig
from cloudward.server.db import ServerDB
from cloudward.server.jobs.runner import JobRunner
from cloudward.server.metrics import Metrics

LOGIN_FAILURES = 10
LOGIN_WINDOW_SECONDS = 15 * 60


class TokenUsage:
    """When each token was last used, remembered in memory and written by the scheduler's chores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, datetime] = {}

    def note(self, credential_id: str, when: datetime) -> None:
        with self._lock:
            self._seen[credential_id] = when

    def flush(self, db: ServerDB) -> None:
        with self._lock:
            seen, self._seen = self._seen, {}
        accounts.touch(db, seen)


class LoginLimiter:
    """At most LOGIN_FAILURES failed logins per (address, name) in a sliding window: slows password
    guessing without letting anyone lock a user out from elsewhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def blocked(self, key: tuple[str, str], now: float) -> bool:
        with self._lock:
            times = self._failures.get(key)
            if not times:
                return False
            while times and now - times[0] > LOGIN_WINDOW_SECONDS:
                times.popleft()
            return len(times) >= LOGIN_FAILURES

    def failed(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.clear()
            self._failures.setdefault(key, deque(maxlen=LOGIN_FAILURES)).append(now)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)


@dataclass
class ServerContext:
    config: ServerConfig
    db: ServerDB
    runner: JobRunner
    metrics: Metrics
    usage: TokenUsage = field(default_factory=TokenUsage)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
