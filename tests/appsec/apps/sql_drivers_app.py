"""A FastAPI app (under uvicorn) with SQL built from request values by f-string, unsafe on purpose, on
the drivers sqldrivers hooks: psycopg2 (with psycopg2.extras' cursors and `psycopg2.sql`), asyncpg
(a pool, prepared statements, a cursor) and aiosqlite, each beside the safe spelling of the same
query. The test seeds the databases; the app only connects: APPSEC_PG_DSN names the PostgreSQL
database, APPSEC_SQL_DIR holds `aio.db`. Wrapped in the middleware as sql_app is (APPSEC_MODE,
APPSEC_POLICY, APPSEC_FINDINGS), with the runtime guards on."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import asyncpg
import psycopg2
import psycopg2.extras
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from psycopg2 import sql

DB_DIR = os.environ.get("APPSEC_SQL_DIR", "/nonexistent")
PG_DSN = os.environ.get("APPSEC_PG_DSN", "")
state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # opened at startup, after the middleware was built and the guards armed
    state["pool"] = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=2)
    state["aio"] = await aiosqlite.connect(os.path.join(DB_DIR, "aio.db"))
    yield
    await state["aio"].close()
    await state["pool"].close()


inner = FastAPI(lifespan=lifespan)


def _rows(rows: Any) -> JSONResponse:
    return JSONResponse({"rows": [list(row.values()) if isinstance(row, dict) else list(row) for row in rows]})


# ---- psycopg2 (sync views: Starlette's thread pool carries the request's context)

@inner.get("/guarded/pg2/user")
def pg2_user(name: str) -> JSONResponse:
    with psycopg2.connect(PG_DSN, cursor_factory=psycopg2.extras.RealDictCursor) as connection:
        cursor = connection.cursor()
        cursor.execute(f"SELECT name, secret FROM users WHERE name = '{name}'")  # injectable on purpose
        rows = cursor.fetchall()
    connection.close()
    return _rows(rows)


@inner.get("/guarded/pg2/tuple")
def pg2_tuple(name: str) -> JSONResponse:
    connection = psycopg2.connect(PG_DSN)
    try:
        cursor = connection.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor)
        cursor.execute(f"SELECT name, secret FROM users WHERE name = '{name}'")  # injectable on purpose
        return _rows(cursor.fetchall())
    finally:
        connection.close()


@inner.get("/guarded/pg2/param")
def pg2_param(name: str) -> JSONResponse:
    connection = psycopg2.connect(PG_DSN)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT name, secret FROM users WHERE name = %s", (name,))
        return _rows(cursor.fetchall())
    finally:
        connection.close()


@inner.get("/guarded/pg2/literal")
def pg2_literal(name: str) -> JSONResponse:
    connection = psycopg2.connect(PG_DSN)
    try:
        cursor = connection.cursor()
        cursor.execute(sql.SQL("SELECT name, secret FROM users WHERE name = {}").format(sql.Literal(name)))  # safe
        return _rows(cursor.fetchall())
    finally:
        connection.close()


@inner.get("/guarded/pg2/composed")
def pg2_composed(order: str) -> JSONResponse:
    connection = psycopg2.connect(PG_DSN)
    try:
        cursor = connection.cursor()
        cursor.execute(sql.SQL("SELECT id FROM notes ORDER BY {}").format(sql.SQL(order)))  # sql.SQL(value): unsafe
        connection.commit()
        return _rows(cursor.fetchall())
    finally:
        connection.close()


@inner.get("/guarded/pg2/delete")
def pg2_delete(id: str) -> JSONResponse:
    connection = psycopg2.connect(PG_DSN)
    try:
        connection.cursor().execute(f"DELETE FROM notes WHERE id = {id}")  # injectable on purpose
        connection.commit()
    finally:
        connection.close()
    return JSONResponse({"deleted": True})


# ---- asyncpg (a pool opened at startup)

@inner.get("/guarded/apg/user")
async def apg_user(name: str) -> JSONResponse:
    return _rows(await state["pool"].fetch(f"SELECT name, secret FROM users WHERE name = '{name}'"))  # on purpose


@inner.get("/guarded/apg/param")
async def apg_param(name: str) -> JSONResponse:
    return _rows(await state["pool"].fetch("SELECT name, secret FROM users WHERE name = $1", name))


@inner.get("/guarded/apg/prepare")
async def apg_prepare(name: str) -> JSONResponse:
    async with state["pool"].acquire() as connection:
        statement = await connection.prepare(f"SELECT name, secret FROM users WHERE name = '{name}'")  # on purpose
        return _rows(await statement.fetch())


@inner.get("/guarded/apg/cursor")
async def apg_cursor(name: str) -> JSONResponse:
    async with state["pool"].acquire() as connection, connection.transaction():
        rows = [row async for row in connection.cursor(f"SELECT name, secret FROM users WHERE name = '{name}'")]
    return _rows(rows)


@inner.get("/guarded/apg/delete")
async def apg_delete(id: str) -> JSONResponse:
    await state["pool"].execute(f"DELETE FROM notes WHERE id = {id}")  # injectable on purpose
    return JSONResponse({"deleted": True})


# ---- aiosqlite (one connection opened at startup; its sqlite3 runs in a worker thread)

@inner.get("/guarded/aio/user")
async def aio_user(name: str) -> JSONResponse:
    async with state["aio"].execute(f"SELECT name, secret FROM users WHERE name = '{name}'") as cursor:  # on purpose
        return _rows(await cursor.fetchall())


@inner.get("/guarded/aio/cursor")
async def aio_cursor(name: str) -> JSONResponse:
    cursor = await state["aio"].cursor()
    try:
        await cursor.execute(f"SELECT name, secret FROM users WHERE name = '{name}'")  # injectable on purpose
        return _rows(await cursor.fetchall())
    finally:
        await cursor.close()


@inner.get("/guarded/aio/param")
async def aio_param(name: str) -> JSONResponse:
    return _rows(await state["aio"].execute_fetchall("SELECT name, secret FROM users WHERE name = ?", (name,)))


@inner.get("/guarded/aio/delete")
async def aio_delete(id: str) -> JSONResponse:
    await state["aio"].execute(f"DELETE FROM notes WHERE id = {id}")  # injectable on purpose
    await state["aio"].commit()
    return JSONResponse({"deleted": True})


def __getattr__(name: str) -> Any:
    """`app` is wrapped when the server asks for it, after the drivers above are imported."""
    from cloudward.appsec import ASGIMiddleware, JsonLinesSink

    if name != "app":
        raise AttributeError(name)
    options: dict[str, Any] = {"guards": True}
    if os.environ.get("APPSEC_FINDINGS"):
        options["sink"] = JsonLinesSink(os.environ["APPSEC_FINDINGS"])
    globals()["app"] = built = ASGIMiddleware(inner, mode=os.environ.get("APPSEC_MODE") or None,
                                              policy=os.environ.get("APPSEC_POLICY") or None, **options)
    return built
