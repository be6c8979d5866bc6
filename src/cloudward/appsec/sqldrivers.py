"""The SQL guard's hooks for the drivers that neither SQLAlchemy's listener nor sqlguard's own three
hooks reach: psycopg2, asyncpg and aiosqlite. Each is hooked by sqlguard under the same rule (only
once it is imported, never imported here), at the narrowest global point the driver offers:

- psycopg2: its connection and cursor are C types that cannot be patched, but `psycopg2.connect` is
  a Python function that Django's postgresql backend, SQLAlchemy's psycopg2 dialect and psycopg2's
  own pools look up at call time. It is wrapped to pass a `connection_factory` subclass whose
  `cursor()` hands out a checked subclass of the cursor class asked for (`cursor_factory=` on the
  call or on the connection, psycopg2.extras' Dict/RealDict/NamedTuple cursors included). The
  caller's own factories are kept: the checks sit below them in the class order, just above the C
  type, so they judge the query the caller's `execute` finally passes down. `execute`,
  `executemany` and `copy_expert` are judged; a `psycopg2.sql.Composed` as the text it renders to.
  Not covered: connections opened before the hook (or through `psycopg2.extensions.connection(...)`
  or a `connect` imported by name before it), a factory that is a function rather than a class,
  and `callproc`/`copy_from`/`copy_to`, which take names rather than SQL.
- asyncpg: `Connection` is a Python class, so its `execute`, `executemany`, `fetch`, `fetchrow`,
  `fetchval`, `fetchmany`, `prepare`, `cursor` and `copy_from_query` are wrapped in place. Every
  connection is covered, those opened before the hook too: pools hand out proxies that look the
  method up on `Connection` at each call, and `connection_class=` subclasses inherit the checks.
  The request's context follows the awaiting task.
- aiosqlite: it runs sqlite3 in a worker thread of its own, which does not share the request's
  context, so the sqlite3 hook there sees no request at all. Its `Connection` (`execute`,
  `execute_insert`, `execute_fetchall`, `executemany`, `executescript`) and `Cursor` (`execute`,
  `executemany`, `executescript`) are judged in the caller's task instead, when called. The worker
  thread is started in an empty context, so that on a Python whose threads inherit their creator's
  context, the sqlite3 hook does not judge later statements against the values of the request that
  happened to open the connection.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

from cloudward.appsec.sqlguard import _MARK, _guarding, _run, statement_text

__all__ = ["HOOKS"]

_PG = "postgresql"


def _checked(original: Callable[..., Any], dialect: str, keyword: str, *, rendered: bool = False) -> Callable[..., Any]:
    """`original` with its statement judged first: the first argument after self, or `keyword`.
    `rendered`: render a Composed query against the object itself (a psycopg2 cursor)."""

    def judge(owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        query = args[0] if args else kwargs.get(keyword)
        _run(statement_text(query, owner if rendered else None), dialect)

    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def checked_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _guarding():
                judge(self, args, kwargs)
            return await original(self, *args, **kwargs)

        setattr(checked_async, _MARK, True)
        return checked_async

    @functools.wraps(original)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _guarding():
            judge(self, args, kwargs)
        return original(self, *args, **kwargs)

    setattr(checked, _MARK, True)
    return checked


def _wrap_methods(cls: type, dialect: str, methods: dict[str, str]) -> None:
    for method, keyword in methods.items():
        original = cls.__dict__.get(method)
        if callable(original) and not getattr(original, _MARK, False):
            setattr(cls, method, _checked(original, dialect, keyword))


# -------------------------------------------------------------------------------------------- psycopg2

class _Pg2CursorChecks:
    """Put between a psycopg2 cursor class and the C cursor: the last Python `execute` before the query runs."""

    __slots__ = ()

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        if _guarding():
            _run(statement_text(query, self), _PG)
        return super().execute(query, *args, **kwargs)  # type: ignore[misc]

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        if _guarding():
            _run(statement_text(query, self), _PG)
        return super().executemany(query, *args, **kwargs)  # type: ignore[misc]

    def copy_expert(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
        if _guarding():
            _run(statement_text(sql, self), _PG)
        return super().copy_expert(sql, *args, **kwargs)  # type: ignore[misc]


class _Pg2ConnectionChecks:
    """Put between a psycopg2 connection class and the C connection: every cursor it makes is checked."""

    __slots__ = ()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        # cursor(name=None, cursor_factory=None, withhold=False, scrollable=None)
        if len(args) > 1:
            factory = args[1] or getattr(self, "cursor_factory", None)
            args = (args[0], _pg2_cursor_type(factory), *args[2:])
        else:
            factory = kwargs.get("cursor_factory") or getattr(self, "cursor_factory", None)
            kwargs["cursor_factory"] = _pg2_cursor_type(factory)
        return super().cursor(*args, **kwargs)  # type: ignore[misc]


_pg2: dict[str, type] = {}  # the C types and their checked subclasses, set when psycopg2 is hooked
_pg2_types: dict[type, type] = {}


def _pg2_cursor_type(factory: Any) -> Any:
    return _pg2_guarded(factory or _pg2["cursor"], _pg2["cursor"], _pg2["checked_cursor"])


def _pg2_guarded(factory: Any, base: type, checked: type) -> Any:
    """`factory` with the checks just above the C type: `checked` itself for the C type, a subclass
    of (factory, checked) for the caller's own class (made once per class). A factory that is not a
    subclass of the C type (a function, say) is left as it is."""
    if factory is base:
        return checked
    if not isinstance(factory, type) or not issubclass(factory, base) or issubclass(factory, checked):
        return factory
    guarded = _pg2_types.get(factory)
    if guarded is None:
        try:
            guarded = type(factory.__name__, (factory, checked), {
                "__module__": factory.__module__, "__qualname__": factory.__qualname__, "__slots__": ()})
        except TypeError:  # a class that cannot be combined stays unguarded
            return factory
        if len(_pg2_types) < 256:
            _pg2_types[factory] = guarded
    return guarded


def _hook_psycopg2() -> None:
    psycopg2: Any = importlib.import_module("psycopg2")
    extensions = importlib.import_module("psycopg2.extensions")
    original = psycopg2.connect
    if getattr(original, _MARK, False):
        return
    if not _pg2:
        _pg2.update(
            connection=extensions.connection, cursor=extensions.cursor,
            checked_connection=type("connection", (_Pg2ConnectionChecks, extensions.connection),
                                    {"__module__": __name__, "__slots__": ()}),
            checked_cursor=type("cursor", (_Pg2CursorChecks, extensions.cursor),
                                {"__module__": __name__, "__slots__": ()}))

    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> Any:
        # connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs)
        if len(args) > 1:
            args = (args[0], _pg2_connection_type(args[1]), *args[2:])
        else:
            kwargs["connection_factory"] = _pg2_connection_type(kwargs.get("connection_factory"))
        return original(*args, **kwargs)

    setattr(connect, _MARK, True)
    psycopg2.connect = connect


def _pg2_connection_type(factory: Any) -> Any:
    return _pg2_guarded(factory or _pg2["connection"], _pg2["connection"], _pg2["checked_connection"])


# --------------------------------------------------------------------------------------------- asyncpg

_ASYNCPG_METHODS = {"execute": "query", "executemany": "command", "fetch": "query", "fetchrow": "query",
                    "fetchval": "query", "fetchmany": "query", "prepare": "query", "cursor": "query",
                    "copy_from_query": "query"}


def _hook_asyncpg() -> None:
    connection = importlib.import_module("asyncpg.connection")
    _wrap_methods(connection.Connection, _PG, _ASYNCPG_METHODS)


# ------------------------------------------------------------------------------------------- aiosqlite

_AIOSQLITE_CONNECTION = {"execute": "sql", "execute_insert": "sql", "execute_fetchall": "sql",
                         "executemany": "sql", "executescript": "sql_script"}
_AIOSQLITE_CURSOR = {"execute": "sql", "executemany": "sql", "executescript": "sql_script"}


def _hook_aiosqlite() -> None:
    core: Any = importlib.import_module("aiosqlite.core")
    cursor = importlib.import_module("aiosqlite.cursor")
    _wrap_methods(core.Connection, "sqlite", _AIOSQLITE_CONNECTION)
    _wrap_methods(cursor.Cursor, "sqlite", _AIOSQLITE_CURSOR)
    if issubclass(core.Connection, threading.Thread):  # aiosqlite before 0.20: the connection is the thread
        run = core.Connection.__dict__.get("run")
        if callable(run) and not getattr(run, _MARK, False):
            core.Connection.run = _in_empty_context(run)
    else:
        worker = getattr(core, "_connection_worker_thread", None)  # looked up when each connection is made
        if callable(worker) and not getattr(worker, _MARK, False):
            core._connection_worker_thread = _in_empty_context(worker)


def _in_empty_context(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` run in a context of its own: no request is being guarded there."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        return contextvars.Context().run(function, *args, **kwargs)

    setattr(run, _MARK, True)
    return run


HOOKS: dict[str, Callable[[], None]] = {"psycopg2": _hook_psycopg2, "asyncpg": _hook_asyncpg,
                                        "aiosqlite": _hook_aiosqlite}
