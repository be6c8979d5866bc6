"""Suppression and rule globs in SQL must mean exactly what the store's fnmatchcase means: a
hypothesis comparison on SQLite, and a fixed set of awkward cases on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, insert, select

from cloudward.server.globs import glob_predicate
from tests.store._support import fresh_database

META = MetaData()
VALUES = Table("glob_values", META, Column("v", String(200)))
ALPHABET = "aAb._-%\\*?[]!^/é\n"
CASES = ["redis.*", "redis.?nauth*", "*", "?", "a_b", "a%b", "a\\b*", "*.*", "[ab]*", "[!a]*", "[", "a[", "[]a]",
         "[a-c]?", "*é*", "A*", "", "10.0.*.?:6379", "[^a]*", "*]"]
SAMPLE = ["redis.unauthenticated", "Redis.unauth", "a_b", "axb", "a%b", "a\\bc", "x.y", "b", "]", "a", "", "é",
          "10.0.1.2:6379", "10.0.12.3:6379", "^x", "[", "a[", "ca", "A", "AB", "a\nb"]


def _matches(engine: Engine, pattern: str) -> set[str]:
    column = VALUES.c.v
    with engine.connect() as conn:
        values = list(conn.scalars(select(column)))
        predicate = glob_predicate(column, pattern, engine.dialect.name, lambda: values)
        return set(conn.scalars(select(column).where(predicate)))


@pytest.fixture(scope="module")
def sqlite_engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    META.create_all(engine)
    yield engine
    engine.dispose()


@settings(max_examples=300, deadline=None)
@given(pattern=st.text(ALPHABET, max_size=6), values=st.lists(st.text(ALPHABET, max_size=6), max_size=8))
def test_sqlite_agrees_with_fnmatchcase(sqlite_engine: Engine, pattern: str, values: list[str]) -> None:
    with sqlite_engine.begin() as conn:
        conn.execute(VALUES.delete())
        if values:
            conn.execute(insert(VALUES), [{"v": v} for v in values])
    assert _matches(sqlite_engine, pattern) == {v for v in values if fnmatchcase(v, pattern)}


def test_postgresql_agrees_with_fnmatchcase(postgres_trust: object) -> None:
    with fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as url:  # type: ignore[attr-defined]
        engine = create_engine(url)
        try:
            META.create_all(engine)
            with engine.begin() as conn:
                conn.execute(insert(VALUES), [{"v": v} for v in SAMPLE])
            for pattern in CASES:
                assert _matches(engine, pattern) == {v for v in SAMPLE if fnmatchcase(v, pattern)}, pattern
        finally:
            engine.dispose()
