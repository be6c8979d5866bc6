"""The failed-login limit, kept in the store so every process behind it counts the same attempts.

An in-memory counter would let a guesser multiply the limit by the number of server processes
(`--jobs N` behind one name, several servers, a restart that forgets). Each failure is one row in
`login_failures`, keyed by a hash of (address, lower-cased name): a spray of made-up names costs
rows that expire with the window (pruned as failures arrive), never unbounded memory, and the
table holds no name in clear. A success clears its key; the limit never locks a user out from
an address other than the guesser's.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete, func, select

from cloudward.server.db import ServerDB
from cloudward.store.models import LoginFailureRow

LOGIN_FAILURES = 10
LOGIN_WINDOW_SECONDS = 15 * 60
PRUNE_EVERY = 200  # failures between sweeps of expired rows of every key


def limiter_key(address: str, name: str) -> str:
    return hashlib.sha256(f"{address}\0{name.lower()}".encode("utf-8", "surrogatepass")).hexdigest()


class LoginLimiter:
    """At most LOGIN_FAILURES failed logins per (address, name) within a sliding window."""

    def __init__(self, db: ServerDB, failures: int = LOGIN_FAILURES,
                 window: timedelta = timedelta(seconds=LOGIN_WINDOW_SECONDS)) -> None:
        self.db = db
        self.failures = failures
        self.window = window
        self._since_prune = 0

    def blocked(self, address: str, name: str) -> bool:
        key, since = limiter_key(address, name), self.db.clock() - self.window
        with self.db.read() as session:
            count = session.scalar(select(func.count()).select_from(LoginFailureRow)
                                   .where(LoginFailureRow.key == key, LoginFailureRow.at > since))
        return int(count or 0) >= self.failures

    def failed(self, address: str, name: str) -> None:
        key, now = limiter_key(address, name), self.db.clock()
        self._since_prune += 1
        prune_all = self._since_prune >= PRUNE_EVERY
        if prune_all:
            self._since_prune = 0
        with self.db.write() as session:
            stale = LoginFailureRow.at <= now - self.window
            session.execute(delete(LoginFailureRow).where(stale, *([] if prune_all else [LoginFailureRow.key == key])))
            session.add(LoginFailureRow(key=key, at=now))

    def succeeded(self, address: str, name: str) -> None:
        key = limiter_key(address, name)
        with self.db.write() as session:
            session.execute(delete(LoginFailureRow).where(LoginFailureRow.key == key))
