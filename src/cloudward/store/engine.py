"""Connecting to the store: which URL, how the engine is tuned, and migrating to head.

SQLite is the embedded default and must survive several cloudward processes at once (a scan
recording while `findings list` reads): WAL lets readers run beside the one writer, a busy timeout
makes writers queue instead of failing, and every write transaction starts with `BEGIN IMMEDIATE`
so it takes the write lock up front. A deferred transaction that reads and then writes can fail
with SQLITE_BUSY at once, whatever the timeout, when another writer committed in between.
PostgreSQL serialises the same critical sections with transaction-scoped advisory locks.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cloudward.core.errors import StoreError

if TYPE_CHECKING:
    from cloudward.core.config import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Not alembic's default name: a shared PostgreSQL database may hold other alembic-managed apps.
VERSION_TABLE = "cloudward_alembic_version"
SQLITE_FILE = "cloudward.db"
BUSY_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10
# Advisory lock keys (any constant bigint unique to cloudward): one for migrations, one for writes.
MIGRATION_LOCK = 0x636C6F7564_01
WRITE_LOCK = 0x636C6F7564_02
WRITE_OPTION = "cloudward_write"


def store_url(settings: Settings) -> str:
    """`[store] url` / CLOUDWARD_DB_URL, else a SQLite file in the data directory."""
    if settings.store.url.strip():
        return settings.store.url.strip()
    return f"sqlite:///{settings.resolved_data_dir() / SQLITE_FILE}"


_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe for error messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(r"\g<head>***@", url)


def scrub(message: str, url: URL) -> str:
    """Remove the URL's password from a driver message, in case a driver ever echoes it."""
    if url.password:
        message = message.replace(str(url.password), "***")
    return message


def create_store_engine(url: str) -> Engine:
    """An Engine for `url`, tuned per backend; StoreError (password masked) when it cannot be made."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"invalid findings store URL {mask_url(url)}: {exc}") from None
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            return _sqlite_engine(parsed)
        if backend == "postgresql":
            return create_engine(parsed, pool_pre_ping=True,
                                 connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
        return create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        hint = " (install cloudward[postgres])" if backend == "postgresql" else ""
        raise StoreError(f"cannot open findings store {mask_url(parsed)}: missing driver "
                         f"{exc.name}{hint}") from None
    except (SQLAlchemyError, OSError) as exc:
        reason = scrub(str(exc), parsed)
        raise StoreError(f"cannot open findings store {mask_url(parsed)}: {reason}") from None


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from pysqlite (it would not BEGIN before DDL) and issue BEGIN in
    # `_sqlite_on_begin` instead: that is what makes migrations and writes truly transactional.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL, and much faster
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a new database to WAL needs an exclusive lock and SQLite reports the race with
    # another opener doing the same as "database is locked" at once, ignoring busy_timeout: retry
    # within the same deadline. Once one opener has switched, the mode is persistent and this is a read.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def lock(conn: Connection, key: int) -> None:
    """Serialise this transaction against other cloudward writers (PostgreSQL; SQLite already
    holds its write lock from BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction holding cloudward's write lock; commits on success and
    rolls back on any exception, KeyboardInterrupt included."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            lock(conn, WRITE_LOCK)
            yield conn


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to head. Idempotent and safe against concurrent openers: the common case
    (already at head) is one read; otherwise the upgrade runs in one transaction under the write
    lock, where alembic re-reads the version and skips what another process already applied."""
    from alembic import command
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    head = script.get_current_head()
    current = current_revision(engine)
    if current == head:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise StoreError(
            f"findings store {mask_url(engine.url)} has schema revision {current}, newer than this "
            "cloudward knows (upgrade cloudward, or point CLOUDWARD_DB_URL elsewhere)"
        )
    from alembic.util import CommandError

    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            lock(conn, MIGRATION_LOCK)
            try:
                command.upgrade(_alembic_config(conn), "head")
            except CommandError as exc:
                raise StoreError(f"cannot migrate findings store {mask_url(engine.url)}: {exc}") from None


def new_revision(url: str, message: str) -> None:
    """For developers: autogenerate the next migration from the models against a scratch DB at
    `url` (it is migrated to head first). Review the file it writes before committing it."""
    from alembic import command

    engine = create_store_engine(url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            command.revision(_alembic_config(conn), message=message, autogenerate=True)
    finally:
        engine.dispose()
