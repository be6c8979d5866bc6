"""Servers under test. `api` is a real `cloudward server` (uvicorn, its own process) with two job
slots, once on SQLite and once on a fresh database of the harness's PostgreSQL; `quiet_api` is a
SQLite server that queues jobs but runs none (the authorization table and schemathesis send
every kind of request, and a fuzzed scan command must never run)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server._support import ApiServer, start_api
from tests.store._support import fresh_database

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def sqlite_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(f"sqlite:///{tmp_path_factory.mktemp('api-sqlite')}/cloudward.db", "sqlite")
    try:
        yield server
    finally:
        server.service.stop()


@pytest.fixture(scope="session")
def postgresql_api(request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    postgres = request.getfixturevalue("postgres_trust")
    with fresh_database(postgres.dsn, postgres.sqlalchemy_url) as url:
        server = start_api(url, "postgresql")
        try:
            yield server
        finally:
            server.service.stop()


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest) -> ApiServer:
    """The same tests against both stores."""
    server: ApiServer = request.getfixturevalue(f"{request.param}_api")
    return server


@pytest.fixture(scope="session")
def quiet_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('quiet-api')}/cloudward.db"
    server = start_api(url, "sqlite", jobs=0)
    try:
        yield server
    finally:
        server.service.stop()

