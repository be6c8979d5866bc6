"""Shell-style globs (`redis.*`, `10.0.?.*`) as SQL predicates with exactly fnmatchcase's meaning.

The store matches suppression globs in Python with `fnmatchcase`; the server has to filter in SQL
to paginate, so it must agree with it to the character. `*` and `?` translate exactly: to LIKE
on PostgreSQL (case-sensitive there; `%`, `_` and `\\` escaped) and to GLOB on SQLite (whose
LIKE ignores case, while GLOB has fnmatch's meaning for `*` and `?`). A pattern with a `[...]`
set has corner cases no SQL operator shares on both backends (`[!a]`, an unclosed `[`, `]`
first), so it is resolved in Python against the column's distinct values instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase

from sqlalchemy import ColumnElement, false, literal
from sqlalchemy.orm import InstrumentedAttribute

WILDCARDS = "*?["


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in WILDCARDS)


def like_pattern(pattern: str) -> str:
    """`*`/`?` glob -> LIKE pattern with `\\` as its escape character."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def glob_predicate(column: InstrumentedAttribute[str] | ColumnElement[str], pattern: str, dialect: str,
                   distinct: Callable[[], Iterable[str]] | None = None) -> ColumnElement[bool]:
    """`column` matches `pattern` as fnmatchcase would. `distinct` lists the column's values, needed
    only for patterns with a `[` set (without it such a pattern matches nothing: fail closed)."""
    if not is_glob(pattern):
        return column == pattern
    if "[" in pattern:
        if distinct is None:
            return false()
        values = sorted({v for v in distinct() if fnmatchcase(v, pattern)})
        return column.in_(values) if values else false()
    if dialect == "sqlite":
        return column.op("GLOB")(literal(pattern))
    return column.like(like_pattern(pattern), escape="\\")
