"""Servers under test. `api` is a real `cloudward server` (uvicorn, its own process) with two job
slots, once on SQLite and once on a fresh database of the harness's PostgreSQL; `quiet_api` is a
SQLite server that queues jobs but runs none (the authorization table and schemathesis send
every kind of request, and a fuzzed scan command must never run). `fresh_db` is no server: a
ServerDB on an empty store of each kind, with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A ServerDB on an empty store whose clock stands at 2026-03-31 12:00 UTC."""
    from cloudward.server.db import ServerDB

    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    if request.param == "sqlite":
        db = ServerDB.open(f"sqlite:///{tmp_path}/c.db", lambda: now)
        try:
            yield db
        finally:
            db.close()
        return
    postgres = request.getfixturevalue("postgres_trust")
    with fresh_database(postgres.dsn, postgres.sqlalchemy_url) as url:
        db = ServerDB.open(url, lambda: now)
        try:
            yield db
        finally:
            db.close()
