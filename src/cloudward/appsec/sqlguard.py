"""Where the SQL guard sees statements: the `execute` calls of the database libraries Python web
applications really use, hooked once per process and only if the library is loaded.

There is no audit event for executing SQL, so each library is hooked at the narrowest global point it
offers, where one hook sees every connection:

- SQLAlchemy (Flask-SQLAlchemy, FastAPI + SQLAlchemy, SQLModel, async engines too — they run on a
  sync Engine): a `before_cursor_execute` listener on the Engine class, which every engine, existing or
  future, dispatches to. The statement is the one compiled for the cursor.
- psycopg 3: its cursors are Python classes, so `execute`, `executemany`, `copy` and `stream` of
  Cursor, AsyncCursor and their server-side variants are wrapped in place. Every connection is covered,
  including those opened before the hook, pools and Django's psycopg backend (its cursors inherit them).
  A `sql.Composed` query is judged as the text it renders to.
- sqlite3: its types are C types that can be neither patched nor swapped on a live object, so
  `sqlite3.connect` (and `sqlite3.dbapi2.connect`, which SQLAlchemy and Django call) is wrapped to hand
  the connection a `factory=` subclass whose `execute*` and cursors are checked (a factory the caller
  passes is subclassed the same way). Connections opened before the hook are not covered — which is
  why the guards are armed when the middleware is built, before an app's startup code connects.

- psycopg2, asyncpg and aiosqlite: in sqldrivers (its docstring says where and what each leaves
  out): psycopg2 through `psycopg2.connect` handing out checked connection and cursor subclasses
  (like sqlite3: connections opened before the hook are not covered), asyncpg's `Connection` methods
  in place, and aiosqlite in the caller's task, since its sqlite3 runs in a thread the request's
  context does not reach.

Django gets no hook of its own (and is not installed here to test one): its SQLite backend connects
through `dbapi2.connect` and asks for its cursor class as a `factory=`, its psycopg 3 cursors
subclass psycopg's without overriding `execute`, and its psycopg2 backend connects through
`psycopg2.connect`, so all reach the hooks above; another layer would only judge every statement
twice. Django's MySQL and Oracle backends are not covered, nor is PyMySQL (no MySQL server to test
it against here).

A library is hooked when the guards are armed if it is already imported, or at the start of the first
guarded request after it is (a check of `sys.modules`, stopped once all six are hooked): no database
library is ever imported by cloudward, and nothing is hooked into the import system. Outside a guarded
request a hooked `execute` costs one extra Python call and a ContextVar read.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Check", "dialect_of", "install", "statement_text"]

log = logging.getLogger("cloudward.appsec")

Check = Callable[[str, str], None]  # (statement text, dialect): raises GuardViolation to refuse it
Active = Callable[[], object]  # not None while a request is being guarded (a ContextVar's get)
_MARK = "__cloudward_sql_guard__"
_check: Check | None = None
_active: Active | None = None
_pending = ["sqlalchemy", "psycopg", "sqlite3", "psycopg2", "asyncpg", "aiosqlite"]
_lock = threading.Lock()


def _guarding() -> bool:
    """True while a request is guarded: the one test every hooked call makes before anything else."""
    active = _active
    return active is not None and active() is not None


def _run(statement: str, dialect: str) -> None:
    check = _check
    if check is not None and statement:
        check(statement, dialect)


def install(check: Check, active: Active) -> None:
    """Hook the database libraries that are loaded and not hooked yet (cheap once all are)."""
    global _check, _active
    if _check is None:
        with _lock:
            if _check is None:
                _check, _active = check, active
    if not any(name in sys.modules for name in _pending):  # the common case: nothing new (or nothing left)
        return
    with _lock:
        for name in list(_pending):
            if name not in sys.modules:
                continue
            _pending.remove(name)
            try:
                _HOOKS[name]()
            except Exception:  # an unexpected library version: that library goes unguarded, the app runs
                log.exception("appsec: could not hook %s for the SQL guard", name)


def statement_text(statement: object, context: object = None) -> str:
    """The text of what a driver was asked to run: str, bytes, or a psycopg `Composable`."""
    if isinstance(statement, str):
        return statement
    if isinstance(statement, bytes | bytearray | memoryview):
        return bytes(statement).decode("utf-8", "replace")
    render = getattr(statement, "as_string", None)
    if callable(render):
        try:
            text = render(context)
        except Exception:  # a query that cannot be rendered is not run either
            return ""
        if isinstance(text, bytes | str):
            return statement_text(text)
    return ""


def dialect_of(name: str) -> str:
    """The lexer dialect for a SQLAlchemy dialect or Django vendor name."""
    return _DIALECT_NAMES.get(name.lower(), "ansi")


_DIALECT_NAMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
                  "mariadb": "mysql"}


# ------------------------------------------------------------------------------------------ SQLAlchemy

def _hook_sqlalchemy() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "before_cursor_execute", _before_cursor_execute):
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute)


def _before_cursor_execute(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any,
                           executemany: bool) -> None:
    if _guarding():
        _run(statement_text(statement), dialect_of(getattr(conn.dialect, "name", "")))


# ------------------------------------------------------------------------------------------- psycopg 3

_PG_CLASSES = ("Cursor", "AsyncCursor", "ServerCursor", "AsyncServerCursor")
_PG_METHODS = ("execute", "executemany", "copy", "stream")


def _hook_psycopg() -> None:
    psycopg = importlib.import_module("psycopg")
    for class_name in _PG_CLASSES:
        cls = getattr(psycopg, class_name, None)
        if not isinstance(cls, type):
            continue
        for method in _PG_METHODS:
            original = cls.__dict__.get(method)
            if callable(original) and not getattr(original, _MARK, False):
                setattr(cls, method, _checked_method(original, "postgresql"))


def _checked_method(original: Callable[..., Any], dialect: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def checked_async(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if _guarding():
                _run(statement_text(query, self), dialect)
            return await original(self, query, *args, **kwargs)

        setattr(checked_async, _MARK, True)
        return checked_async

    @functools.wraps(original)
    def checked(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if _guarding():
            _run(statement_text(query, self), dialect)
        return original(self, query, *args, **kwargs)

    setattr(checked, _MARK, True)
    return checked


# --------------------------------------------------------------------------------------------- sqlite3

_FACTORY_ARG = 5  # connect(database, timeout, detect_types, isolation_level, check_same_thread, factory, …)
_guarded_types: dict[type, type] = {}


def _hook_sqlite3() -> None:
    import sqlite3
    import sqlite3.dbapi2 as dbapi2

    modules: tuple[Any, ...] = (sqlite3, dbapi2)  # two names for one function: SQLAlchemy and Django call dbapi2's
    for module in modules:
        original = module.connect
        if not getattr(original, _MARK, False):
            module.connect = _checked_connect(original, sqlite3.Connection)


def _checked_connect(original: Callable[..., Any], default: type) -> Callable[..., Any]:
    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> Any:
        if len(args) > _FACTORY_ARG:
            args = (*args[:_FACTORY_ARG], _guarded_type(args[_FACTORY_ARG], "connection"), *args[_FACTORY_ARG + 1:])
        else:
            kwargs["factory"] = _guarded_type(kwargs.get("factory", default), "connection")
        return original(*args, **kwargs)

    setattr(connect, _MARK, True)
    return connect


class _CheckedStatements:
    """The statement-running methods sqlite3's Connection and Cursor share, each judged first."""

    __slots__ = ()

    def execute(self, sql: Any, *args: Any) -> Any:
        if _guarding():
            _run(statement_text(sql), "sqlite")
        return super().execute(sql, *args)  # type: ignore[misc]

    def executemany(self, sql: Any, *args: Any) -> Any:
        if _guarding():
            _run(statement_text(sql), "sqlite")
        return super().executemany(sql, *args)  # type: ignore[misc]

    def executescript(self, script: Any, *args: Any) -> Any:
        if _guarding():
            _run(statement_text(script), "sqlite")
        return super().executescript(script, *args)  # type: ignore[misc]


class _CheckedConnection(_CheckedStatements):
    __slots__ = ()

    def cursor(self, factory: Any = None) -> Any:
        import sqlite3

        return super().cursor(_guarded_type(factory or sqlite3.Cursor, "cursor"))  # type: ignore[misc]


class _CheckedCursor(_CheckedStatements):
    __slots__ = ()


def _guarded_type(factory: Any, role: str) -> Any:
    """`factory` with checked execute calls in front of its own: a subclass, made once per class. A
    factory that is not a sqlite3 class (a function, say) is left as it is."""
    import sqlite3

    base = sqlite3.Connection if role == "connection" else sqlite3.Cursor
    mixin = _CheckedConnection if role == "connection" else _CheckedCursor
    if not isinstance(factory, type) or not issubclass(factory, base) or issubclass(factory, mixin):
        return factory
    guarded = _guarded_types.get(factory)
    if guarded is None:
        try:
            guarded = type(factory.__name__, (mixin, factory), {"__module__": factory.__module__,
                                                                  "__qualname__": factory.__qualname__})
        except TypeError:  # a class that cannot be subclassed stays unguarded
            return factory
        if len(_guarded_types) < 256:
            _guarded_types[factory] = guarded
    return guarded


def _hook_driver(name: str) -> None:
    """psycopg2, asyncpg, aiosqlite: hooked in sqldrivers, imported only once one of them is."""
    from cloudward.appsec import sqldrivers

    sqldrivers.HOOKS[name]()


_HOOKS: dict[str, Callable[[], None]] = {"sqlalchemy": _hook_sqlalchemy, "psycopg": _hook_psycopg,
                                         "sqlite3": _hook_sqlite3,
                                         **{name: functools.partial(_hook_driver, name)
                                            for name in ("psycopg2", "asyncpg", "aiosqlite")}}
