"""The overview's numbers: GROUP BYs over the findings table, folded in Python, and kept while the
store does not change.

Open findings are counted the way the API lists them by default: open and not suppressed (the
API's own filter clauses, so a count here and the list it links to always agree). The overview
needs three groupings (by rule, severity and category; by day; by target), run at once on
PostgreSQL; each reads a narrow index made for it (migration 0004: partial indexes on the open
findings, the trend's timestamps with rule id and fingerprint), not the findings table. Their result is cached per
store and reused while no scan is recorded and no suppression changes (`_Cache`), which also gives
the findings table its totals for the filters the aggregates answer (`counted_total`).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Date, cast, false, func, not_, select, text
from sqlalchemy.orm import Session

from cloudward.core.severity import Severity
from cloudward.server import findings as api_queries
from cloudward.server.db import ServerDB
from cloudward.server.findings import FindingFilter
from cloudward.store.models import OPEN, TARGET_INDEX_CHARS, FindingRow, ScanRow, SuppressionRow

TREND_DAYS = 30


def _day(value: Any) -> date | None:
    """A GROUP BY day key as a date (SQLite hands back text, PostgreSQL a date)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _day_of(session: Session, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, in each dialect's terms (SQLite stores UTC
    text; PostgreSQL's timestamptz is read in UTC whatever the session's time zone)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


@dataclass
class Overview:
    groups: list[tuple[str, int, str, int]] = field(default_factory=list)  # (rule, rank, category, count)
    rule_counts: list[tuple[str, int, int]] = field(default_factory=list)  # (rule, rank, count)
    categories: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    new_by_day: dict[date, int] = field(default_factory=dict)
    fixed_by_day: dict[date, int] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)


def _open_by_rule(session: Session, now: datetime, out: Overview) -> None:
    """One pass over the open findings: per (rule, severity, category), how many are shown and how
    many are suppressed."""
    active = api_queries.active_suppressions(session, now)
    hidden = api_queries.suppressed_predicate(session, active, now) if active else false()
    rows = session.execute(
        select(FindingRow.rule_id, FindingRow.severity_rank, FindingRow.category,
               func.count().filter(not_(hidden)), func.count().filter(hidden))
        .where(FindingRow.status == OPEN)
        .group_by(FindingRow.rule_id, FindingRow.severity_rank, FindingRow.category))
    folded: dict[tuple[str, int], int] = {}
    for rule_id, rank, category, shown, suppressed in rows:
        out.suppressed += int(suppressed or 0)
        if shown:
            out.groups.append((rule_id, int(rank), category, int(shown)))
            folded[(rule_id, int(rank))] = folded.get((rule_id, int(rank)), 0) + int(shown)
            out.categories[category] = out.categories.get(category, 0) + int(shown)
    out.rule_counts = [(rule, rank, count) for (rule, rank), count in folded.items()]


def _trend(session: Session, now: datetime, out: Overview) -> None:
    """Findings first seen, and findings fixed, per day of the last TREND_DAYS days (suppressed
    ones left out, open or fixed alike): two range reads of the indexes on first_seen and
    fixed_at, which carry the rule id and fingerprint the suppressions test."""
    since = now - timedelta(days=TREND_DAYS)
    active = api_queries.active_suppressions(session, now)
    unsuppressed = api_queries.filter_clauses(session, FindingFilter(status="all"), active, now)
    for column, by_day in ((FindingRow.first_seen, out.new_by_day), (FindingRow.fixed_at, out.fixed_by_day)):
        day = _day_of(session, column)
        for value, count in session.execute(select(day, func.count()).where(column >= since, *unsuppressed)
                                            .group_by(day)):
            key = _day(value)
            if key is not None:
                by_day[key] = by_day.get(key, 0) + int(count)


def _targets(session: Session, now: datetime, out: Overview) -> None:
    """The eight targets with the worst open findings, then the most; with counts per severity.

    Names of up to TARGET_INDEX_CHARS characters are grouped from their partial index (an
    index-only read in PostgreSQL); longer ones, never in that index, are grouped apart (the
    two sets of groups cannot overlap) and the two top-eights merged."""
    if session.get_bind().dialect.name == "postgresql":
        # one group per target: enough memory that a store with many targets hashes them in RAM
        session.execute(text("SET LOCAL work_mem = '32MB'"))
    active = api_queries.active_suppressions(session, now)
    clauses = api_queries.filter_clauses(session, FindingFilter(status="open"), active, now)
    ranks = list(Severity)
    per = [func.count().filter(FindingRow.severity_rank == s.rank) for s in ranks]
    worst, total = func.max(FindingRow.severity_rank), func.count()
    length = func.length(FindingRow.target_name)
    found: list[Any] = []
    for size in (length <= TARGET_INDEX_CHARS, length > TARGET_INDEX_CHARS):
        found += session.execute(
            select(FindingRow.target_kind, FindingRow.target_name, total, worst, *per).where(*clauses, size)
            .group_by(FindingRow.target_kind, FindingRow.target_name)
            .order_by(worst.desc(), total.desc(), FindingRow.target_kind, FindingRow.target_name).limit(8)).all()
    found.sort(key=lambda row: (-int(row[3]), -int(row[2]), row[0], row[1]))
    out.targets = [{"kind": kind, "name": name, "total": int(count), "worst": ranks[int(top)].value,
                    "by_severity": {s.value: int(n or 0) for s, n in zip(ranks, counts, strict=True)}}
                   for kind, name, count, top, *counts in found[:8]]


def overview(db: ServerDB, now: datetime) -> Overview:
    """The overview's numbers: from the cache while the store has not changed (see `_Cache`),
    else computed in three passes over their indexes. On PostgreSQL the passes run at once on
    their own connections; SQLite runs them one after the other."""
    return _CACHE.get(db, now)


def _compute(db: ServerDB, now: datetime) -> Overview:
    out = Overview()
    parts = (_open_by_rule, _trend, _targets)

    def run(part: Any) -> None:
        with db.read() as session:
            part(session, now, out)

    if db.dialect == "postgresql":
        with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="overview") as pool:
            for future in [pool.submit(run, part) for part in parts]:
                future.result()
    else:
        for part in parts:
            run(part)
    return out


def store_version(session: Session, now: datetime) -> tuple[Any, ...]:
    """What changes whenever the overview's numbers can: findings only change when a scan is
    recorded (or scans are removed); suppressions when one is added, replaced (a new `created`,
    maybe a new expiry) or removed, and when the next one to expire does."""
    scans = session.execute(select(func.count(), func.max(ScanRow.recorded))).one()
    suppressions = session.execute(select(func.count(), func.max(SuppressionRow.id), func.max(SuppressionRow.created),
                                          func.count(SuppressionRow.expires), func.max(SuppressionRow.expires))).one()
    next_expiry = session.scalar(select(func.min(SuppressionRow.expires)).where(SuppressionRow.expires > now))
    return (*scans, *suppressions, next_expiry)


class _Cache:
    """One overview per store, reused while `store_version` is unchanged and for at most
    MAX_AGE seconds (the 30-day window moves with the clock). A team
    with the overview open in many tabs costs one computation per change, not one per view;
    servers sharing a database each check the version, so none shows stale numbers."""

    MAX_AGE = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: weakref.WeakKeyDictionary[ServerDB, tuple[tuple[Any, ...], float, Overview]] = \
            weakref.WeakKeyDictionary()

    def peek(self, db: ServerDB) -> Overview | None:
        """The cached overview if it is still current, else None (nothing is computed)."""
        with db.read() as session:
            version = store_version(session, db.clock())
        return self._current(db, version)

    def _current(self, db: ServerDB, version: tuple[Any, ...]) -> Overview | None:
        with self._lock:
            entry = self._entries.get(db)
        if entry is not None and entry[0] == version and time.monotonic() - entry[1] < self.MAX_AGE:
            return entry[2]
        return None

    def get(self, db: ServerDB, now: datetime) -> Overview:
        with db.read() as session:
            version = store_version(session, now)
        cached = self._current(db, version)
        if cached is not None:
            return cached
        began = time.monotonic()
        value = _compute(db, now)
        with self._lock:
            self._entries[db] = (version, began, value)
        return value


_CACHE = _Cache()


def counted_total(db: ServerDB, flt: FindingFilter, globs: Sequence[Sequence[str]]) -> int | None:
    """How many findings a filter matches, from the cached overview when the filter is one of its
    kind (open, not suppressed, narrowed only by severity, category, rule or chain link): the
    findings table then costs its page query alone. None when it cannot tell."""
    if (flt.status != "open" or flt.suppressed != "exclude" or flt.target or flt.target_kind or flt.attack
            or flt.scan_id or flt.min_severity is not None):
        return None
    cached = _CACHE.peek(db)
    if cached is None:
        return None
    ranks = {s.rank for s in flt.severity}
    categories = {c.value for c in flt.category}
    total = 0
    for rule_id, rank, category, count in cached.groups:
        if (ranks and rank not in ranks) or (categories and category not in categories):
            continue
        if flt.rule and not fnmatchcase(rule_id, flt.rule):
            continue
        if any(not any(fnmatchcase(rule_id, g) for g in group) for group in globs):
            continue
        total += count
    return total


def open_counts_by_rule(db: ServerDB, now: datetime) -> dict[str, int]:
    """Open, unsuppressed findings per rule: from the cached overview when it is current."""
    cached = _CACHE.peek(db)
    if cached is not None:
        counts: dict[str, int] = {}
        for rule_id, _rank, _category, count in cached.groups:
            counts[rule_id] = counts.get(rule_id, 0) + count
        return counts
    with db.read() as session:
        return _count_by_rule(session, now)


def _count_by_rule(session: Session, now: datetime) -> dict[str, int]:
    active = api_queries.active_suppressions(session, now)
    clauses = api_queries.filter_clauses(session, FindingFilter(status="open"), active, now)
    return {rule: int(n) for rule, n in session.execute(
        select(FindingRow.rule_id, func.count()).where(*clauses).group_by(FindingRow.rule_id))}


def open_count(session: Session, now: datetime, rule_id: str) -> int:
    active = api_queries.active_suppressions(session, now)
    clauses = api_queries.filter_clauses(session, FindingFilter(status="open"), active, now)
    return int(session.scalar(select(func.count()).select_from(FindingRow)
                              .where(FindingRow.rule_id == rule_id, *clauses)) or 0)
