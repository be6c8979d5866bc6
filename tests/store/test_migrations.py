"""Opening the store: migrations to head from empty, idempotent re-open, models == migrations,
concurrent openers, and clear errors (password masked) when the database cannot be opened."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cloudward.core.config import Settings, StoreSettings
from cloudward.core.errors import StoreError
from cloudward.store import Store, open_store
from cloudward.store.engine import (
    VERSION_TABLE,
    create_store_engine,
    current_revision,
    head_revision,
    migrate,
)
from cloudward.store.models import Base

TABLES = {"scans", "findings", "scan_findings", "suppressions", "fim_baselines", "fim_entries", VERSION_TABLE}


def test_empty_database_is_migrated_to_head(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == head_revision() == "0004"
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_reopening_is_idempotent_and_keeps_data(store_url: str) -> None:
    from tests.store._support import exposure, scan

    with Store.open(store_url) as first:
        first.record_scan(scan([exposure("10.0.0.1")], hours=0))
    for _ in range(2):
        with Store.open(store_url) as again:
            assert current_revision(again.engine) == head_revision()
            assert len(again.list_findings()) == 1


def test_models_and_migrations_agree(store: Store) -> None:
    """alembic autogenerate against a migrated database finds nothing to do."""
    with store.engine.connect() as conn:
        options = {"version_table": VERSION_TABLE, "compare_type": True}
        context = MigrationContext.configure(conn, opts=options)
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/c.db") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_open_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    with open_store(Settings(data_dir=str(data_dir))) as store:
        assert store.url == f"sqlite:///{data_dir}/cloudward.db"
    assert (data_dir / "cloudward.db").is_file()


def test_open_store_uses_the_configured_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/elsewhere.db"
    with open_store(Settings(data_dir=str(tmp_path / "unused"), store=StoreSettings(url=url))) as store:
        assert store.url == url
    assert not (tmp_path / "unused").exists()


def _open_and_record(url: str, index: int) -> int:
    from tests.store._support import exposure, scan

    with Store.open(url) as store:
        store.record_scan(scan([exposure(f"10.0.0.{index}"), exposure("10.0.0.200")], hours=index,
                               targets=[f"10.0.0.{index}", "10.0.0.200"]))
        return len(store.list_scans(limit=None))


def test_concurrent_openers_migrate_once_and_record_everything(store_url: str) -> None:
    """Eight processes open a brand-new store at the same moment and each records a scan."""
    processes = 8
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        counts = pool.starmap(_open_and_record, [(store_url, i) for i in range(1, processes + 1)])
    assert all(1 <= c <= processes for c in counts)
    with Store.open(store_url) as store:
        assert len(store.list_scans(limit=None)) == processes
        assert len(store.list_findings()) == processes + 1
        shared = [f for f in store.list_findings() if f.finding.target.name == "10.0.0.200:6379"]
        assert len(shared) == 1 and shared[0].status == "open"
        with store.engine.connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1


def _open_at(url: str, start: float) -> str:
    while time.time() < start:
        pass
    try:
        with Store.open(url):
            return ""
    except StoreError as exc:
        return str(exc)


def test_simultaneous_openers_of_a_new_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """The switch to WAL ignores busy_timeout; openers racing on it used to fail 'database is locked'."""
    with multiprocessing.get_context("fork").Pool(16) as pool:
        for attempt in range(10):
            url = f"sqlite:///{tmp_path}/race{attempt}.db"
            start = time.time() + 0.3
            errors = [e for e in pool.starmap(_open_at, [(url, start)] * 16) if e]
            assert errors == []


def test_a_newer_schema_is_refused_clearly(store_url: str) -> None:
    with Store.open(store_url) as store, store.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(StoreError, match="9999, newer than this cloudward knows"):
        Store.open(store_url)


def test_unreachable_postgres_is_a_store_error_with_the_password_masked() -> None:
    from tests.harness import free_port

    url = f"postgresql+psycopg://cloudward:s3cret-pw@127.0.0.1:{free_port()}/cloudward"
    with pytest.raises(StoreError) as caught:
        Store.open(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql+psycopg://cloudward:***@127.0.0.1" in message
    assert "cannot open findings store" in message


def test_wrong_password_is_masked(postgres_scram: object) -> None:
    server = postgres_scram
    url = f"postgresql+psycopg://postgres:not-the-password@{server.host}:{server.port}/postgres"  # type: ignore[attr-defined]
    with pytest.raises(StoreError) as caught:
        Store.open(url)
    assert "not-the-password" not in str(caught.value)
    assert "password authentication failed" in str(caught.value)


def test_scram_postgres_with_the_right_password_works(postgres_scram: object) -> None:
    with Store.open(postgres_scram.sqlalchemy_url) as store:  # type: ignore[attr-defined]
        assert store.list_scans() == []
        assert "***" in store.url and postgres_scram.password not in store.url  # type: ignore[attr-defined]


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "cloudward.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=f"cannot open findings store sqlite:///{path}"):
        Store.open(f"sqlite:///{path}")


def test_an_unwritable_data_dir_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open findings store"):
        Store.open(f"sqlite:///{blocker}/sub/cloudward.db")


def test_nonsense_urls_are_store_errors() -> None:
    with pytest.raises(StoreError, match="invalid findings store URL"):
        Store.open("not a url at all")
    with pytest.raises(StoreError, match=r"missing driver|cannot open") as caught:
        Store.open("mysql+nosuchdriver://u:topsecret@localhost/db")
    assert "topsecret" not in str(caught.value)
