"""What every request handler reaches through `request.app.state.cloudward`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from cloudward.server import accounts
from cloudward.server.config import ServerConfig
from cloudward.server.db import ServerDB
from cloudward.server.jobs.runner import JobRunner
from cloudward.server.login_limit import LoginLimiter
from cloudward.server.metrics import Metrics


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


@dataclass
class ServerContext:
    config: ServerConfig
    db: ServerDB
    runner: JobRunner
    metrics: Metrics
    usage: TokenUsage = field(default_factory=TokenUsage)
    limiter: LoginLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = LoginLimiter(self.db)  # in the store: shared by every process on it
