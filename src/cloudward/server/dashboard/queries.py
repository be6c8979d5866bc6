"""The dashboard's reads other than the overview's aggregates (aggregates.py): findings pages
with the chain filter, one finding, its triage history, scan kinds, jobs.

No page loads findings it does not show: pages are the API's keyset pages, totals come from the
cached aggregates or one COUNT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from cloudward.server import findings as api_queries
from cloudward.server.findings import FindingFilter, Page
from cloudward.store.models import AuditRow, FindingRow, JobRow, ScanRow, SuppressionRow


@dataclass
class FindingsPage:
    page: Page
    total: int
    prev_cursor: str | None = None  # the page before this one (its rows end just before this page's first)


def findings_page(session: Session, flt: FindingFilter, extra: Sequence[ColumnElement[bool]], now: datetime, *,
                  sort: str, order: str, limit: int, cursor: str | None, total: int | None = None,
                  backwards: bool = False) -> FindingsPage:
    """The API's keyset page (same sorts, same cursors) plus the dashboard's own clauses (the
    chain filter), and the number of findings the filter matches (counted unless given).

    With `backwards`, the page is the `limit` rows just before the cursor: the same index read in
    the other direction, then reversed, so "previous page" costs what "next page" does and no
    stack of earlier cursors has to ride along in the URL."""
    active = api_queries.active_suppressions(session, now)
    clauses = [*api_queries.filter_clauses(session, flt, active, now), *extra]
    if total is None:
        total = int(session.scalar(select(func.count()).select_from(FindingRow).where(*clauses)) or 0)
    columns = api_queries._sort_columns(sort)  # the cursor's key: the same columns as the API's pages
    backwards = backwards and bool(cursor)
    descending = (order == "desc") != backwards
    keyed = list(clauses)
    if cursor:
        values = api_queries.decode_cursor(cursor, sort, order)
        key, bound = tuple_(*columns), tuple_(*[literal(v, c.type) for v, c in zip(values, columns, strict=True)])
        keyed.append(key < bound if descending else key > bound)
    ordering = [c.desc() if descending else c.asc() for c in columns]
    rows = list(session.scalars(select(FindingRow).where(*keyed).order_by(*ordering).limit(limit + 1)))
    more = len(rows) > limit
    shown = rows[:limit]
    if backwards:
        shown.reverse()
    page = Page()
    for row in shown:
        page.rows.append((row, api_queries.match_suppression(row, active)))
    result = FindingsPage(page, total)
    if shown and (more if backwards else bool(cursor)):
        result.prev_cursor = api_queries.encode_cursor(sort, order, shown[0])
    if shown and (bool(cursor) if backwards else more):
        page.next_cursor = api_queries.encode_cursor(sort, order, shown[-1])
    return result


def resolve(session: Session, ref: str) -> FindingRow | None:
    """A finding by full fingerprint or unique prefix (None when unknown or ambiguous)."""
    prefix = ref.strip().lower()
    if not prefix or len(prefix) > 64 or any(c not in "0123456789abcdef" for c in prefix):
        return None
    row = session.get(FindingRow, prefix)
    if row is not None or len(prefix) < 4:
        return row
    rows = list(session.scalars(select(FindingRow).where(FindingRow.fingerprint.startswith(prefix)).limit(2)))
    return rows[0] if len(rows) == 1 else None


def triage_history(session: Session, fingerprint: str, limit: int = 20) -> list[AuditRow]:
    """Suppressions and their removal for one finding, newest first (from the audit log)."""
    return list(session.scalars(
        select(AuditRow).where(AuditRow.action.in_(("finding.suppress", "finding.unsuppress")),
                               AuditRow.target == f"finding:{fingerprint}")
        .order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit)))


def rule_suppression(session: Session, row: FindingRow, now: datetime) -> SuppressionRow | None:
    return api_queries.match_suppression(row, api_queries.active_suppressions(session, now))


def scan_kinds(session: Session) -> list[str]:
    return sorted(k for k in session.scalars(select(ScanRow.kind).distinct()) if k)


def jobs_by_id(session: Session, ids: Sequence[str]) -> dict[str, JobRow]:
    wanted = [i for i in ids if i]
    if not wanted:
        return {}
    return {job.id: job for job in session.scalars(select(JobRow).where(JobRow.id.in_(wanted)))}
