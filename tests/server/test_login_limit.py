"""The failed-login limit is kept in the store: two real server processes on one store (as with
several servers behind one name, or a restart) count the same failures, per (address, name)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cloudward.server.login_limit import LOGIN_FAILURES
from tests.server._dashboard import PASSWORD, make_user
from tests.server._support import ApiServer, start_api


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, ApiServer]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('limit')}/cloudward.db"
    first = start_api(url, "sqlite", jobs=0)
    try:
        second = start_api(url, "sqlite", jobs=0, first=False)
        second.tokens = dict(first.tokens)
        try:
            yield first, second
        finally:
            second.service.stop()
    finally:
        first.service.stop()


def _login(server: ApiServer, name: str, password: str) -> int:
    with httpx.Client(base_url=server.base, trust_env=False, timeout=30) as client:
        return client.post("/api/v1/auth/login", json={"name": name, "password": password}).status_code


def test_failures_on_one_server_block_the_name_on_the_other(two_servers: tuple[ApiServer, ApiServer]) -> None:
    one, two = two_servers
    guessed, bystander = make_user(one, "read-only"), make_user(one, "read-only")
    for i in range(LOGIN_FAILURES):
        assert _login(one if i % 2 else two, guessed, f"guess {i}") == 401
    # the next attempt is refused on either process, even with the right password
    assert _login(two, guessed, PASSWORD) == 429
    assert _login(one, guessed, PASSWORD) == 429
    # another name from the same address is not locked out
    assert _login(two, bystander, PASSWORD) == 200


def test_a_success_clears_the_count_everywhere(two_servers: tuple[ApiServer, ApiServer]) -> None:
    one, two = two_servers
    name = make_user(one, "analyst")
    for i in range(LOGIN_FAILURES - 1):
        assert _login(one, name, f"guess {i}") == 401
    assert _login(two, name, PASSWORD) == 200  # one short of the limit: allowed, and the count starts over
    for i in range(LOGIN_FAILURES - 1):
        assert _login(two, name, f"again {i}") == 401
    assert _login(one, name, PASSWORD) == 200


def test_failures_expire_with_the_window_and_are_pruned(tmp_path: Path) -> None:
    """The window on a store whose clock the test moves (no waiting)."""
    from cloudward.server.db import ServerDB
    from cloudward.server.login_limit import LoginLimiter
    from cloudward.store.models import LoginFailureRow

    now = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    db = ServerDB.open(f"sqlite:///{tmp_path}/c.db", lambda: now[0])
    try:
        limiter = LoginLimiter(db, failures=3, window=timedelta(minutes=15))
        for _ in range(3):
            limiter.failed("127.0.0.9", "Mallory")
        assert limiter.blocked("127.0.0.9", "mallory")  # names compare without case
        assert not limiter.blocked("127.0.0.10", "mallory")  # per address
        now[0] += timedelta(minutes=16)
        assert not limiter.blocked("127.0.0.9", "mallory")
        limiter.failed("127.0.0.9", "mallory")  # prunes the key's expired rows
        with db.read() as session:
            assert session.query(LoginFailureRow).count() == 1
            assert all(len(row.key) == 64 and "mallory" not in row.key for row in session.query(LoginFailureRow))
    finally:
        db.close()
