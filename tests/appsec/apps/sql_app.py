"""Apps with SQL built from request values by f-string, unsafe on purpose, for the SQL runtime guard:
a FastAPI app (`app`, under uvicorn) on sqlite3, SQLAlchemy and psycopg 3 (sync, async and
`sql.Composed`), and a Flask app (`flask_app`, under waitress) on SQLAlchemy, each beside the safe
spelling of the same query. The test seeds the databases; the app only connects:
APPSEC_SQL_DIR holds `app.db` (sqlite3) and `alchemy.db` (SQLAlchemy), APPSEC_PG_DSN names the
PostgreSQL database. Both apps are wrapped in the middleware as fastapi_app is (APPSEC_MODE,
APPSEC_POLICY, APPSEC_FINDINGS), with the runtime guards on."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import sqlalchemy
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from flask import Flask, request
from psycopg import sql

DB_DIR = os.environ.get("APPSEC_SQL_DIR", "/nonexistent")
PG_DSN = os.environ.get("APPSEC_PG_DSN", "")
state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # opened at startup, after the middleware was built: the connection the guard must already see
    state["sqlite"] = sqlite3.connect(os.path.join(DB_DIR, "app.db"), check_same_thread=False)
    state["engine"] = sqlalchemy.create_engine(f"sqlite:///{os.path.join(DB_DIR, 'alchemy.db')}")
    yield
    state["sqlite"].close()
    state["engine"].dispose()


inner = FastAPI(lifespan=lifespan)


def _rows(rows: Any) -> JSONResponse:
    return JSONResponse({"rows": [list(row) for row in rows]})


# ---- sqlite3

@inner.get("/guarded/sqlite/user")
def sqlite_user(name: str) -> JSONResponse:
    cursor = state["sqlite"].cursor()
    cursor.execute(f"SELECT name, secret FROM users WHERE name = '{name}'")  # injectable on purpose
    return _rows(cursor.fetchall())


@inner.get("/guarded/sqlite/escaped")
def sqlite_escaped(name: str) -> JSONResponse:
    quoted = name.replace("'", "''")  # inlined, but quoted correctly: data, not syntax
    return _rows(state["sqlite"].execute(f"SELECT name, secret FROM users WHERE name = '{quoted}'"))


@inner.get("/guarded/sqlite/param")
def sqlite_param(name: str) -> JSONResponse:
    return _rows(state["sqlite"].execute("SELECT name, secret FROM users WHERE name = ?", (name,)))


@inner.get("/guarded/sqlite/delete")
def sqlite_delete(id: str) -> JSONResponse:
    connection = state["sqlite"]
    connection.execute(f"DELETE FROM notes WHERE id = {id}")  # injectable on purpose
    connection.commit()
    return JSONResponse({"deleted": True})


@inner.get("/guarded/sqlite/search")
def sqlite_search(q: str) -> JSONResponse:
    pattern = q.replace("'", "''")
    return _rows(state["sqlite"].execute(f"SELECT id FROM notes WHERE body LIKE '%{pattern}%' ORDER BY id"))


# ---- SQLAlchemy (on sqlite)

def _alchemy(statement: Any, **params: Any) -> list[list[Any]]:
    with state["engine"].begin() as connection:
        result = connection.execute(statement, params)
        return [list(row) for row in result] if result.returns_rows else []


@inner.get("/guarded/alchemy/user")
def alchemy_user(name: str) -> JSONResponse:
    return JSONResponse({"rows": _alchemy(sqlalchemy.text(f"SELECT name, secret FROM users WHERE name = '{name}'"))})


@inner.get("/guarded/alchemy/param")
def alchemy_param(name: str) -> JSONResponse:
    users = sqlalchemy.table("users", sqlalchemy.column("name"), sqlalchemy.column("secret"))
    query = sqlalchemy.select(users.c.name, users.c.secret).where(users.c.name == name)
    return JSONResponse({"rows": _alchemy(query)})


@inner.get("/guarded/alchemy/delete")
def alchemy_delete(id: str) -> JSONResponse:
    _alchemy(sqlalchemy.text(f"DELETE FROM notes WHERE id = {id}"))  # injectable on purpose
    return JSONResponse({"deleted": True})


# ---- psycopg 3 (PostgreSQL)

@inner.get("/guarded/pg/user")
def pg_user(name: str) -> JSONResponse:
    with psycopg.connect(PG_DSN) as connection:
        return _rows(connection.execute(f"SELECT name, secret FROM users WHERE name = '{name}'").fetchall())


@inner.get("/guarded/pg/param")
def pg_param(name: str) -> JSONResponse:
    with psycopg.connect(PG_DSN) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name, secret FROM users WHERE name = %s", (name,))
        return _rows(cursor.fetchall())


@inner.get("/guarded/pg/delete")
def pg_delete(id: str) -> JSONResponse:
    with psycopg.connect(PG_DSN) as connection, connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM notes WHERE id = {id}")  # injectable on purpose (and stacked queries)
    return JSONResponse({"deleted": True})


@inner.get("/guarded/pg/composed")
def pg_composed(order: str) -> JSONResponse:
    with psycopg.connect(PG_DSN) as connection, connection.cursor() as cursor:
        query = sql.SQL("SELECT id FROM notes ORDER BY {}").format(sql.SQL(order))  # sql.SQL(value): unsafe
        cursor.execute(query)
        return _rows(cursor.fetchall())


@inner.get("/guarded/pg/literal")
def pg_literal(name: str) -> JSONResponse:
    with psycopg.connect(PG_DSN) as connection, connection.cursor() as cursor:
        query = sql.SQL("SELECT name, secret FROM users WHERE name = {}").format(sql.Literal(name))  # safe
        cursor.execute(query)
        return _rows(cursor.fetchall())


@inner.get("/guarded/pg/async")
async def pg_async(name: str) -> JSONResponse:
    async with await psycopg.AsyncConnection.connect(PG_DSN) as connection, connection.cursor() as cursor:
        await cursor.execute(f"SELECT name, secret FROM users WHERE name = '{name}'")  # injectable on purpose
        return _rows(await cursor.fetchall())


def _protect(application: Any, middleware: Any) -> Any:
    from cloudward.appsec import JsonLinesSink

    options: dict[str, Any] = {"guards": True}
    if os.environ.get("APPSEC_FINDINGS"):
        options["sink"] = JsonLinesSink(os.environ["APPSEC_FINDINGS"])
    return middleware(application, mode=os.environ.get("APPSEC_MODE") or None,
                      policy=os.environ.get("APPSEC_POLICY") or None, **options)


# ---- Flask + SQLAlchemy (WSGI)

_flask = Flask(__name__)
_flask_engine = sqlalchemy.create_engine(f"sqlite:///{os.path.join(DB_DIR, 'alchemy.db')}")


@_flask.route("/guarded/flask/user")
def flask_user() -> dict[str, Any]:
    name = request.args.get("name", "")
    with _flask_engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(f"SELECT name, secret FROM users WHERE name = '{name}'"))
        return {"rows": [list(row) for row in rows]}


@_flask.route("/guarded/flask/param")
def flask_param() -> dict[str, Any]:
    with _flask_engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT name, secret FROM users WHERE name = :name"),
                                  {"name": request.args.get("name", "")})
        return {"rows": [list(row) for row in rows]}


@_flask.route("/guarded/flask/delete")
def flask_delete() -> dict[str, Any]:
    with _flask_engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DELETE FROM notes WHERE id = {request.args.get('id', '')}"))
    return {"deleted": True}


def __getattr__(name: str) -> Any:
    """`app` and `flask_app` are wrapped when the server asks for one, so a process runs one middleware."""
    from cloudward.appsec import ASGIMiddleware, WSGIMiddleware

    if name == "app":
        globals()["app"] = built = _protect(inner, ASGIMiddleware)
        return built
    if name == "flask_app":
        _flask.wsgi_app = _protect(_flask.wsgi_app, WSGIMiddleware)  # type: ignore[method-assign]
        globals()["flask_app"] = _flask
        return _flask
    raise AttributeError(name)
