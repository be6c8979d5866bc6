"""The server's handle on the store: the findings `Store` plus short read and write sessions for
the server's own tables (users, tokens, audit, jobs, schedules, webhooks).

Writes go through the store's `write_connection`, so they queue behind a scan being recorded
exactly like any other cloudward writer (SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock).
Store errors surface as StoreError with the password masked, never as a driver traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy.orm import Session

from cloudward.core.finding import utcnow
from cloudward.store.repository import Store


class ServerDB:
    def __init__(self, store: Store, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.engine = store.engine
        self.clock = clock

    @classmethod
    def open(cls, url: str, clock: Callable[[], datetime] = utcnow) -> ServerDB:
        store = Store.open(url)
        store.clock = clock
        return cls(store, clock)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.store.close()

    def read(self) -> AbstractContextManager[Session]:
        return self.store.read_session()

    def write(self) -> AbstractContextManager[Session]:
        return self.store.write_session()
