"""What the jobs page shows, and the small state the pages' live refresh polls.

A page that shows jobs (the jobs page, the overview) carries the `signature` of the jobs table it
was rendered from; its script asks `/jobs/live` for the current one every few seconds while a job
is queued or running, and fetches the page again only when they differ. The signature changes
whenever a job is added, starts, is asked to stop, or ends (the active jobs' ids, statuses and
cancel flags, plus the count and latest end of all jobs): a reading costs two small queries over
the jobs table, not a page render.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudward.server.jobs.runner import QUEUED, RUNNING
from cloudward.store.models import FindingRow, JobRow, ScanRow

ACTIVE = (QUEUED, RUNNING)


@dataclass(frozen=True)
class LiveState:
    active: int
    signature: str


def live_state(session: Session) -> LiveState:
    active = sorted(session.execute(select(JobRow.id, JobRow.status, JobRow.cancel_requested)
                                    .where(JobRow.status.in_(ACTIVE))).all())
    count, last_end = session.execute(select(func.count(), func.max(JobRow.finished))).one()
    digest = hashlib.sha256(repr((active, count, str(last_end))).encode()).hexdigest()[:16]
    return LiveState(len(active), digest)


@dataclass(frozen=True)
class JobView:
    job: JobRow
    targets: list[str]
    new: int | None
    fixed: int | None
    seconds: float | None

    @property
    def cancellable(self) -> bool:
        return self.job.status in ACTIVE and not (self.job.status == RUNNING and self.job.cancel_requested)


def _counts(session: Session, column: Any, scan_ids: Sequence[str]) -> dict[str, int]:
    return {scan: int(n) for scan, n in session.execute(
        select(column, func.count()).where(column.in_(scan_ids)).group_by(column))}


def job_views(session: Session, now: datetime, *, status: str = "", limit: int = 50) -> list[JobView]:
    """The newest jobs (of one status, when given) with their scans' targets and how many findings
    each scan saw first (new) and fixed; by indexes on the scan ids, whatever the store's size."""
    stmt = select(JobRow).order_by(JobRow.created.desc(), JobRow.id).limit(limit)
    if status:
        stmt = stmt.where(JobRow.status == status)
    jobs = list(session.scalars(stmt))
    scan_ids = sorted({j.scan_id for j in jobs if j.scan_id})
    targets: dict[str, list[str]] = {}
    new: dict[str, int] = {}
    fixed: dict[str, int] = {}
    if scan_ids:
        targets = {sid: list(t or []) for sid, t in session.execute(
            select(ScanRow.id, ScanRow.targets).where(ScanRow.id.in_(scan_ids)))}
        new = _counts(session, FindingRow.first_scan_id, scan_ids)
        fixed = _counts(session, FindingRow.fixed_scan_id, scan_ids)
    views = []
    for job in jobs:
        seconds = None
        if job.started is not None:
            seconds = max(0.0, ((job.finished or now) - job.started).total_seconds())
        recorded = job.scan_id in targets if job.scan_id else False
        views.append(JobView(job, targets.get(job.scan_id or "", []),
                             new.get(job.scan_id or "", 0) if recorded else None,
                             fixed.get(job.scan_id or "", 0) if recorded else None, seconds))
    return views
