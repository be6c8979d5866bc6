"""The findings pages of the API: filters, sort orders and opaque cursors, all in SQL.

Pagination is keyset, not offset: the cursor holds the sort key of the last row shown (and its
fingerprint, which breaks ties), and the next page is `WHERE (key..., fingerprint) < (cursor...)`
in the same order. Page 500 costs what page 1 costs, and a finding recorded between two requests
neither repeats nor hides a row. The default order (`severity`, descending) walks the index
`status, severity_rank, last_seen, fingerprint` directly.

Suppressions are applied in SQL as well (a page must not come back short because rows were
filtered after the LIMIT): a fingerprint suppression is a subquery, a rule/target glob suppression
a predicate with fnmatchcase's meaning (globs.py).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from sqlalchemy import Text, and_, case, cast, false, func, literal, not_, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from cloudward.core.errors import UsageError
from cloudward.core.severity import Category, Severity
from cloudward.server.globs import glob_predicate
from cloudward.store.models import FIXED, FindingRow, ScanFindingRow, ScanRow, SuppressionRow

SORTS = ("severity", "last_seen", "first_seen", "rule_id", "target")
SortName = Literal["severity", "last_seen", "first_seen", "rule_id", "target"]
Order = Literal["asc", "desc"]
MAX_LIMIT = 500
ATTACK_ID = re.compile(r"^T\d{4}(?:\.\d{3})?$")
MAX_CURSOR = 2048


@dataclass(frozen=True)
class FindingFilter:
    severity: Sequence[Severity] = ()
    min_severity: Severity | None = None
    category: Sequence[Category] = ()
    rule: str | None = None
    target: str | None = None
    target_kind: str | None = None
    attack: str | None = None
    status: Literal["open", "fixed", "all"] = "open"
    suppressed: Literal["exclude", "include", "only"] = "exclude"
    scan_id: str | None = None


@dataclass
class Page:
    rows: list[tuple[FindingRow, SuppressionRow | None]] = field(default_factory=list)
    next_cursor: str | None = None


def _sort_columns(sort: str) -> list[Any]:
    columns: dict[str, list[Any]] = {
        "severity": [FindingRow.severity_rank, FindingRow.last_seen, FindingRow.fingerprint],
        "last_seen": [FindingRow.last_seen, FindingRow.fingerprint],
        "first_seen": [FindingRow.first_seen, FindingRow.fingerprint],
        "rule_id": [FindingRow.rule_id, FindingRow.fingerprint],
        "target": [FindingRow.target_name, FindingRow.fingerprint],
    }
    return columns[sort]


# --- cursors -----------------------------------------------------------------------------------


def encode_cursor(sort: str, order: str, row: FindingRow) -> str:
    values: list[Any] = []
    for column in _sort_columns(sort):
        value = getattr(row, column.key)
        values.append(value.isoformat() if isinstance(value, datetime) else value)
    raw = json.dumps([sort, order, values], separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, sort: str, order: str) -> list[Any]:
    """The key values in a cursor made for the same sort and order; UsageError otherwise."""
    problem = UsageError("cursor: not a cursor this API handed out (or made for another sort order)")
    if len(cursor) > MAX_CURSOR:
        raise problem
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise problem from None
    if not (isinstance(data, list) and len(data) == 3 and data[0] == sort and data[1] == order
            and isinstance(data[2], list)):
        raise problem
    columns = _sort_columns(sort)
    values = data[2]
    if len(values) != len(columns):
        raise problem
    out: list[Any] = []
    for column, value in zip(columns, values, strict=True):
        python_type = column.type.python_type if column.key != "severity_rank" else int
        if column.key in ("last_seen", "first_seen"):
            if not isinstance(value, str):
                raise problem
            try:
                out.append(datetime.fromisoformat(value))
            except ValueError:
                raise problem from None
        elif python_type is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise problem
            out.append(value)
        else:
            if not isinstance(value, str):
                raise problem
            out.append(value)
    return out


# --- suppressions --------------------------------------------------------------------------------


def active_suppressions(session: Session, now: datetime) -> list[SuppressionRow]:
    return list(session.scalars(select(SuppressionRow).where(
        or_(SuppressionRow.expires.is_(None), SuppressionRow.expires > now)).order_by(SuppressionRow.id)))


def suppressed_predicate(session: Session, active: Sequence[SuppressionRow], now: datetime) -> ColumnElement[bool]:
    dialect = session.get_bind().dialect.name
    parts: list[ColumnElement[bool]] = []
    if any(s.fingerprint for s in active):
        parts.append(FindingRow.fingerprint.in_(select(SuppressionRow.fingerprint).where(
            SuppressionRow.fingerprint.is_not(None),
            or_(SuppressionRow.expires.is_(None), SuppressionRow.expires > now))))
    for rule in (s for s in active if not s.fingerprint and s.rule_id):
        predicate = glob_predicate(FindingRow.rule_id, rule.rule_id or "", dialect,
                                   lambda: session.scalars(select(FindingRow.rule_id).distinct()))
        if rule.target_pattern:
            predicate = and_(predicate, glob_predicate(FindingRow.target_name, rule.target_pattern, dialect,
                                                       _distinct_targets(session, predicate)))
        parts.append(predicate)
    return or_(*parts) if parts else false()


def _distinct_targets(session: Session, clause: ColumnElement[bool]) -> Callable[[], Iterable[str]]:
    def values() -> Iterable[str]:
        return session.scalars(select(FindingRow.target_name).where(clause).distinct())

    return values


def match_suppression(row: FindingRow, active: Sequence[SuppressionRow]) -> SuppressionRow | None:
    """The suppression that applies to one row (the store's precedence: fingerprint first)."""
    for s in active:
        if s.fingerprint and s.fingerprint == row.fingerprint:
            return s
    for s in active:
        if not s.fingerprint and s.rule_id and fnmatchcase(row.rule_id, s.rule_id) and (
                not s.target_pattern or fnmatchcase(row.target_name, s.target_pattern)):
            return s
    return None


# --- the query -----------------------------------------------------------------------------------


def filter_clauses(session: Session, flt: FindingFilter, active: Sequence[SuppressionRow],
                   now: datetime) -> list[ColumnElement[bool]]:
    dialect = session.get_bind().dialect.name
    clauses: list[ColumnElement[bool]] = []
    if flt.status != "all":
        clauses.append(FindingRow.status == flt.status)
    if flt.severity:
        clauses.append(FindingRow.severity_rank.in_(sorted({s.rank for s in flt.severity})))
    if flt.min_severity is not None:
        clauses.append(FindingRow.severity_rank >= flt.min_severity.rank)
    if flt.category:
        values = sorted({c.value for c in flt.category})
        clauses.append(FindingRow.category == values[0] if len(values) == 1 else FindingRow.category.in_(values))
    if flt.rule:
        clauses.append(glob_predicate(FindingRow.rule_id, flt.rule, dialect,
                                      lambda: session.scalars(select(FindingRow.rule_id).distinct())))
    if flt.target:
        clauses.append(FindingRow.target_name.icontains(flt.target, autoescape=True))
    if flt.target_kind:
        clauses.append(FindingRow.target_kind == flt.target_kind)
    if flt.attack:
        if not ATTACK_ID.match(flt.attack):
            raise UsageError(f"attack: {flt.attack[:40]!r} is not an ATT&CK technique id (T1190, T1059.004)")
        text = cast(FindingRow.attack, Text)
        quoted = f'%"{flt.attack}"%'
        # a technique also matches its sub-techniques: T1059 finds T1059.004
        clauses.append(or_(text.like(quoted), text.like(f'%"{flt.attack}.%'))
                       if "." not in flt.attack else text.like(quoted))
    if flt.scan_id:
        clauses.append(FindingRow.fingerprint.in_(
            select(ScanFindingRow.fingerprint).where(ScanFindingRow.scan_id == flt.scan_id)))
    if flt.suppressed != "include" and active:
        predicate = suppressed_predicate(session, active, now)
        clauses.append(predicate if flt.suppressed == "only" else not_(predicate))
    elif flt.suppressed == "only":
        clauses.append(false())  # nothing is suppressed
    return clauses


def page(session: Session, flt: FindingFilter, now: datetime, *, sort: str = "severity", order: str = "desc",
         limit: int = 50, cursor: str | None = None) -> tuple[Page, list[SuppressionRow]]:
    if sort not in SORTS:
        raise UsageError(f"sort: unknown sort {sort[:40]!r} (choose from {', '.join(SORTS)})")
    if order not in ("asc", "desc"):
        raise UsageError("order: asc or desc")
    limit = max(1, min(limit, MAX_LIMIT))
    if flt.scan_id:
        scan = session.get(ScanRow, flt.scan_id)
        if scan is None:
            from cloudward.server.errors import NotFound

            raise NotFound(f"no scan {flt.scan_id[:64]!r}")
    active = active_suppressions(session, now)
    clauses = filter_clauses(session, flt, active, now)
    columns = _sort_columns(sort)
    if cursor:
        key = tuple_(*columns)
        values = tuple_(*[literal(v, c.type) for v, c in zip(decode_cursor(cursor, sort, order), columns, strict=True)])
        clauses.append(key < values if order == "desc" else key > values)
    ordering = [c.desc() if order == "desc" else c.asc() for c in columns]
    rows = list(session.scalars(select(FindingRow).where(*clauses).order_by(*ordering).limit(limit + 1)))
    result = Page()
    for row in rows[:limit]:
        result.rows.append((row, match_suppression(row, active)))
    if len(rows) > limit:
        result.next_cursor = encode_cursor(sort, order, rows[limit - 1])
    return result, active


# --- targets -------------------------------------------------------------------------------------


def targets(session: Session, now: datetime, *, status: str = "open", kind: str | None = None,
            search: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """One row per target: finding counts per severity (suppressed ones left out), worst first."""
    flt = FindingFilter(status=status if status in ("open", "fixed", "all") else "open",  # type: ignore[arg-type]
                        target=search, target_kind=kind)
    active = active_suppressions(session, now)
    clauses = filter_clauses(session, flt, active, now)
    counts = [func.sum(case((FindingRow.severity_rank == s.rank, 1), else_=0)).label(s.value) for s in Severity]
    worst = func.max(FindingRow.severity_rank).label("worst")
    total = func.count().label("total")
    stmt = (select(FindingRow.target_kind, FindingRow.target_name, total, worst, *counts,
                   func.min(FindingRow.first_seen).label("first_seen"),
                   func.max(FindingRow.last_seen).label("last_seen"))
            .where(*clauses).group_by(FindingRow.target_kind, FindingRow.target_name)
            .order_by(worst.desc(), total.desc(), FindingRow.target_kind, FindingRow.target_name)
            .limit(max(1, min(limit, MAX_LIMIT))).offset(max(0, offset)))
    out = []
    for row in session.execute(stmt):
        data = row._mapping
        out.append({"kind": data["target_kind"], "name": data["target_name"], "total": int(data["total"]),
                    "worst": list(Severity)[int(data["worst"])].value,
                    "by_severity": {s.value: int(data[s.value] or 0) for s in Severity},
                    "first_seen": data["first_seen"], "last_seen": data["last_seen"]})
    return out


def history(session: Session, fingerprint: str, limit: int = 100) -> list[ScanRow]:
    return list(session.scalars(
        select(ScanRow).join(ScanFindingRow, ScanFindingRow.scan_id == ScanRow.id)
        .where(ScanFindingRow.fingerprint == fingerprint)
        .order_by(ScanRow.started.desc(), ScanRow.recorded.desc()).limit(limit)))


def is_fixed(row: FindingRow) -> bool:
    return row.status == FIXED
