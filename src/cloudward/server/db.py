"""The server's handle on the store: the findings `Store` plus short read and write sessions for
the server's own tables (users, tokens, audit, jobs, schedules, webhooks).

Writes go through the store's `write_connection`, so they queue behind a scan being recorded
exactly like any other cloudward writer (SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock).
Store errors surface as StoreError with the password masked, never as a driver traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cloudward.core.errors import StoreError
from cloudward.core.finding import utcnow
from cloudward.store.engine import scrub, write_connection
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

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).split("\n")[0]
            raise StoreError(f"findings store {self.store.url}: {scrub(reason, self.engine.url)}") from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._errors(), self.engine.connect() as conn, Session(bind=conn) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._errors(), write_connection(self.engine) as conn:
            session = Session(bind=conn, expire_on_commit=False)
            try:
                yield session
                session.flush()
            finally:
                session.close()
