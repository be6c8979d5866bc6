"""alembic environment for the findings store.

cloudward runs its migrations itself (`cloudward.store.engine.migrate`), handing over an open
connection in `config.attributes["connection"]` inside a transaction it already holds (and, on
PostgreSQL, an advisory lock), so users never need an alembic.ini. alembic sees that transaction and
does not commit on its own; the caller does.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloudward.store.engine import VERSION_TABLE
from cloudward.store.models import Base


def _configure_and_run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode copies the table instead, in future revisions.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    # A developer running alembic by hand: `sqlalchemy.url` must name a scratch database.
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection: use cloudward.store.open_store() or set sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _configure_and_run(conn)
    finally:
        engine.dispose()


run()
