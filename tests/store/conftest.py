"""Every store test runs twice: on a SQLite file and on a fresh database of a real PostgreSQL 15
(the harness's `postgres_trust` server, shared by the session; one database per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloudward.store import Store
from tests.store._support import fresh_database

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store')}/cloudward.db"
        return
    server = request.getfixturevalue("postgres_trust")
    with fresh_database(server.dsn, server.sqlalchemy_url) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as opened:
        yield opened
