"""The SQL runtime guard on psycopg2, asyncpg and aiosqlite (sqldrivers). Over HTTP, against a real
FastAPI app under uvicorn (tests/appsec/apps/sql_drivers_app.py) whose views build SQL by f-string
against a real PostgreSQL and a temp-file SQLite: in block mode an injection raises from the driver
call (the client gets a 500) and the database proves nothing ran; the same hostile strings passed as
parameters or quoted by `psycopg2.sql.Literal` go through; monitor mode lets the injection run and
reports it once. Then, in a child process (so this test process's drivers stay unhooked), what the
hooks do on their own: nothing imported, nothing judged outside a request, installed once, the
caller's psycopg2 factories kept, aiosqlite's worker thread outside any request's context."""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tests.appsec.servers import ROOT, findings, start_fastapi
from tests.appsec.test_guard_sql import DELETE_ALL, HOSTILE, LEAK, NOTES, POLICY, USERS, _database, _seed
from tests.harness.services import PostgresService, Service, http_get

APP = "tests.appsec.apps.sql_drivers_app:app"
UNION = "x' UNION SELECT name, secret FROM users --"


@dataclass
class App:
    service: Service
    sqlite: Path  # aio.db
    pg: str  # the PostgreSQL database's DSN

    @property
    def url(self) -> str:
        return self.service.url or ""


def _start(directory: Path, mode: str, postgres: PostgresService) -> App:
    with sqlite3.connect(directory / "aio.db") as connection:
        _seed(connection)
    connection.close()
    policy = directory / "policy.yaml"
    policy.write_text(POLICY)
    dsn = _database(postgres, f"guard_drivers_{mode}")
    service = start_fastapi(mode, policy=policy, app=APP,
                            extra_env={"APPSEC_SQL_DIR": str(directory), "APPSEC_PG_DSN": dsn})
    return App(service, directory / "aio.db", dsn)


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory, postgres_trust: PostgresService) -> Iterator[App]:
    app = _start(tmp_path_factory.mktemp("drivers-block"), "block", postgres_trust)
    yield app
    app.service.stop()


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory, postgres_trust: PostgresService) -> Iterator[App]:
    app = _start(tmp_path_factory.mktemp("drivers-monitor"), "monitor", postgres_trust)
    yield app
    app.service.stop()


def get(app: App, path: str, **params: str) -> tuple[int, bytes]:
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    return http_get(f"{app.url}{path}?{query}", timeout=10)


def _secrets_in(body: bytes) -> list[str]:
    return [secret for _, secret in USERS if secret.encode() in body]


def _pg_notes(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        return int(connection.execute("SELECT count(*) FROM notes").fetchone()[0])  # type: ignore[index]


def _sqlite_notes(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT count(*) FROM notes").fetchone()[0]
    connection.close()
    return int(found)


def _written(app: App) -> list[dict[str, Any]]:
    """Every SQL guard finding of the requests made so far: one more injection is sent, and its finding,
    queued after theirs, waited for (a poll for the file to catch up, not a timed assertion)."""
    marker = f"m{time.monotonic_ns()}' OR ''='"
    get(app, "/guarded/aio/user", name=marker)
    deadline = time.monotonic() + 10
    while True:
        found = [f for f in findings(app.service) if f["location"].get("location") == "runtime:sql"]
        if any(f["evidence"]["fragment"] == marker for f in found) or time.monotonic() > deadline:
            return [f for f in found if f["evidence"]["fragment"] != marker]
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------- over HTTP

def test_psycopg2_injection_is_refused_with_extras_cursors_and_composed(blocking: App) -> None:
    for path in ("/guarded/pg2/user", "/guarded/pg2/tuple"):  # RealDictCursor on connect, NamedTupleCursor
        assert _secrets_in(get(blocking, path, name="alice")[1]) == ["secret-alice-1"], path
        status, body = get(blocking, path, name=LEAK)
        assert status == 500 and _secrets_in(body) == [], path
    before = _pg_notes(blocking.pg)
    assert get(blocking, "/guarded/pg2/delete", id=DELETE_ALL)[0] == 500
    assert get(blocking, "/guarded/pg2/delete", id="1; DROP TABLE notes")[0] == 500
    assert get(blocking, "/guarded/pg2/composed", order="id; DROP TABLE notes")[0] == 500  # sql.SQL(value)
    assert _pg_notes(blocking.pg) == before
    assert get(blocking, "/guarded/pg2/composed", order="id")[0] == 200
    assert get(blocking, "/guarded/pg2/delete", id="1")[0] == 200
    assert _pg_notes(blocking.pg) == before - 1


def test_asyncpg_injection_is_refused_through_pool_prepare_and_cursor(blocking: App) -> None:
    for path in ("/guarded/apg/user", "/guarded/apg/prepare", "/guarded/apg/cursor"):
        assert _secrets_in(get(blocking, path, name="bob")[1]) == ["secret-bob-2"], path
        status, body = get(blocking, path, name=UNION)
        assert status == 500 and _secrets_in(body) == [], path
    before = _pg_notes(blocking.pg)
    assert get(blocking, "/guarded/apg/delete", id=DELETE_ALL)[0] == 500
    assert get(blocking, "/guarded/apg/delete", id="2; DROP TABLE notes")[0] == 500
    assert _pg_notes(blocking.pg) == before
    assert get(blocking, "/guarded/apg/delete", id="2")[0] == 200
    assert _pg_notes(blocking.pg) == before - 1


def test_aiosqlite_injection_is_refused_in_the_callers_task(blocking: App) -> None:
    for path in ("/guarded/aio/user", "/guarded/aio/cursor"):
        assert _secrets_in(get(blocking, path, name="alice")[1]) == ["secret-alice-1"], path
        status, body = get(blocking, path, name=LEAK)
        assert status == 500 and _secrets_in(body) == [], path
    assert get(blocking, "/guarded/aio/delete", id=DELETE_ALL)[0] == 500
    assert _sqlite_notes(blocking.sqlite) == NOTES
    assert get(blocking, "/guarded/aio/delete", id="3")[0] == 200
    assert _sqlite_notes(blocking.sqlite) == NOTES - 1
    found = [f for f in _written(blocking) if f["location"]["path"] == "/guarded/aio/user"]
    assert found and found[0]["evidence"]["action"] == "blocked" and found[0]["evidence"]["fragment"] == LEAK


def test_hostile_strings_as_parameters_or_literals_pass(blocking: App) -> None:
    safe = ("/guarded/pg2/param", "/guarded/pg2/literal", "/guarded/apg/param", "/guarded/aio/param")
    for value in HOSTILE:
        for path in safe:
            assert get(blocking, path, name=value) == (200, b'{"rows":[]}'), (path, value)
    for path in safe:
        status, body = get(blocking, path, name="O'Reilly")
        assert status == 200 and _secrets_in(body) == ["secret-oreilly-3"], path
    assert [f for f in _written(blocking) if f["location"]["path"] in safe] == []


def test_monitor_mode_reports_once_and_lets_the_statement_run(monitoring: App) -> None:
    for path in ("/guarded/pg2/user", "/guarded/apg/user", "/guarded/aio/user"):
        status, body = get(monitoring, path, name=LEAK)
        assert status == 200 and len(_secrets_in(body)) == len(USERS), path  # the injection ran
    assert get(monitoring, "/guarded/apg/delete", id=DELETE_ALL)[0] == 200
    assert _pg_notes(monitoring.pg) == 0
    found = _written(monitoring)
    for path in ("/guarded/pg2/user", "/guarded/apg/user", "/guarded/aio/user", "/guarded/apg/delete"):
        mine = [f for f in found if f["location"]["path"] == path]
        assert len(mine) == 1, (path, mine)  # aiosqlite: judged in the task, not again in its thread
        assert mine[0]["evidence"]["action"] == "monitored"


# ---------------------------------------------------------------------------------- in a child process

HOOKS = r"""
import asyncio, os, sys, threading
from queue import SimpleQueue
from cloudward.appsec import guards, sqlguard

DRIVERS = ("psycopg2", "asyncpg", "aiosqlite")
guards.install()
assert not any(name in sys.modules for name in DRIVERS), "imported by cloudward"
assert set(DRIVERS) <= set(sqlguard._pending)  # not hooked while not imported

import aiosqlite, asyncpg, psycopg2, psycopg2.extras
from psycopg2 import sql

guards.install()
guards.install()  # idempotent: each wrapped once
assert not set(DRIVERS) & set(sqlguard._pending)
assert not hasattr(psycopg2.connect.__wrapped__, "__cloudward_sql_guard__")
assert not hasattr(asyncpg.Connection.fetch.__wrapped__, "__cloudward_sql_guard__")
assert not hasattr(aiosqlite.Connection.execute.__wrapped__, "__cloudward_sql_guard__")

judged = []
real = sqlguard._check
sqlguard._check = lambda statement, dialect: (judged.append(statement), real(statement, dialect))
DSN, DB = os.environ["DSN"], os.environ["DB"]
VALUE = "1 OR 1=1"
STEERED = "SELECT name FROM users WHERE 1 = 1 OR 1=1"
OUTSIDE = STEERED + " -- outside any request"
results = {}

def guarded():
    return guards.guarding([VALUE], block=True, report=lambda found, blocked: None)

def attempt(name, run):
    try:
        run()
        results[name] = "ran"
    except guards.GuardViolation:
        results[name] = "refused"

# psycopg2: the caller's factories kept, the checks under them
class Mine(psycopg2.extras.LoggingConnection):
    pass

connection = psycopg2.connect(DSN, connection_factory=Mine, cursor_factory=psycopg2.extras.DictCursor)
connection.initialize(open(os.devnull, "w"))
cursor = connection.cursor()
assert isinstance(connection, Mine) and isinstance(cursor, psycopg2.extras.DictCursor)
cursor.execute(OUTSIDE)  # outside a request: runs, never judged
assert cursor.fetchone()["name"] == "alice"
with guarded():
    attempt("psycopg2 DictCursor", lambda: cursor.execute(STEERED))
    attempt("psycopg2 RealDictCursor", lambda: connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
            .execute(sql.SQL("SELECT name FROM users WHERE 1 = {}").format(sql.SQL(VALUE))))
    attempt("psycopg2 named", lambda: connection.cursor("named").execute(STEERED))
    safe = connection.cursor()
    safe.execute(sql.SQL("SELECT {} = %s").format(sql.Literal(VALUE)), (VALUE,))
    assert safe.fetchone()[0] is True
connection.close()

import io
from psycopg2 import pool as pg2pool
pool = pg2pool.SimpleConnectionPool(1, 1, DSN)  # connects through psycopg2.connect too
pooled = pool.getconn()
with guarded():
    attempt("psycopg2 pool", lambda: pooled.cursor().execute(STEERED))
    attempt("psycopg2 copy_expert", lambda: pooled.cursor().copy_expert(
        f"COPY (SELECT 1 WHERE 1 = {VALUE}) TO STDOUT", io.StringIO()))
    attempt("psycopg2 execute_values, quoted", lambda: psycopg2.extras.execute_values(
        pooled.cursor(), "INSERT INTO notes (id, body) VALUES %s", [(100, VALUE), (101, "x' OR 1=1 --")]))
pooled.rollback()
pool.closeall()

# asyncpg: existing connections and pools alike
async def pg():
    connection = await asyncpg.connect(DSN)
    assert await connection.fetchval(OUTSIDE) == "alice"
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
    with guarded():
        for name, run in [("asyncpg fetchval", lambda: connection.fetchval(STEERED)),
                          ("asyncpg executemany", lambda: connection.executemany(STEERED, [])),
                          ("asyncpg pool fetchrow", lambda: pool.fetchrow(STEERED))]:
            try:
                await run()
                results[name] = "ran"
            except guards.GuardViolation:
                results[name] = "refused"
        assert await pool.fetchval("SELECT $1::text", VALUE) == VALUE
    await pool.close()
    await connection.close()

asyncio.run(pg())

# aiosqlite: judged in the task; its worker thread runs outside any request, even one it was made in
async def lite():
    with guarded():
        database = await aiosqlite.connect(DB)  # its thread starts inside the request
    async with database.execute(OUTSIDE) as cursor:
        assert (await cursor.fetchone())[0] == "alice"
    with guarded():
        for name, run in [("aiosqlite execute_fetchall", lambda: database.execute_fetchall(STEERED)),
                          ("aiosqlite executescript", lambda: database.executescript(STEERED))]:
            try:
                await run()
                results[name] = "ran"
            except guards.GuardViolation:
                results[name] = "refused"
        seen = await database._execute(sqlguard._guarding)  # in the worker thread
        results["aiosqlite worker sees a request"] = seen
    await database.close()

asyncio.run(lite())

# a thread that inherits its creator's context (as Python 3.14 may): the worker still sees none
import aiosqlite.core as core
import contextvars
for name, worker in [("inherited context", core._connection_worker_thread),
                     ("inherited context, worker unwrapped", core._connection_worker_thread.__wrapped__)]:
    tx, box = SimpleQueue(), SimpleQueue()
    with guarded():
        thread = threading.Thread(target=contextvars.copy_context().run, args=(worker, tx))
        thread.start()
    tx.put((None, lambda: box.put(sqlguard._guarding())))
    tx.put((None, lambda: core._STOP_RUNNING_SENTINEL))
    thread.join()
    results[name] = box.get()
print(sorted(results.items()))
print(sorted(set(judged)))
"""


def test_hooks_import_nothing_judge_only_in_requests_and_keep_the_callers_classes(
        tmp_path: Path, postgres_trust: PostgresService) -> None:
    dsn = _database(postgres_trust, "guard_drivers_hooks")
    database = tmp_path / "hooks.db"
    with sqlite3.connect(database) as connection:
        _seed(connection)
    connection.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DSN": dsn, "DB": str(database)}
    done = subprocess.run([sys.executable, "-c", HOOKS], capture_output=True, text=True, timeout=120, check=False,
                          env=env)
    assert done.returncode == 0, done.stderr
    results, judged = done.stdout.strip().splitlines()
    assert results == str(sorted({
        "psycopg2 DictCursor": "refused", "psycopg2 RealDictCursor": "refused", "psycopg2 named": "refused",
        "psycopg2 pool": "refused", "psycopg2 copy_expert": "refused", "psycopg2 execute_values, quoted": "ran",
        "asyncpg fetchval": "refused", "asyncpg executemany": "refused", "asyncpg pool fetchrow": "refused",
        "aiosqlite execute_fetchall": "refused", "aiosqlite executescript": "refused",
        "aiosqlite worker sees a request": False, "inherited context": False,
        "inherited context, worker unwrapped": True}.items()))  # the control: what the wrapper prevents
    # only statements run inside a guarded request reached the judge, the rendered Composed among them
    # (and asyncpg's own reset query when the pool takes its connection back)
    seen = set(ast.literal_eval(judged))
    assert {"SELECT name FROM users WHERE 1 = 1 OR 1=1", "SELECT '1 OR 1=1' = %s", "SELECT $1::text"} <= seen
    assert not [statement for statement in seen if "outside any request" in statement]
