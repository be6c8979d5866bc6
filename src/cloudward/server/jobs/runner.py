"""The job interface the API and the scheduler use, and its database half.

Every runner shares one model: a job is a row in `jobs`, inserted `queued`; whoever executes it
claims it with a compare-and-set (`queued` -> `running`), so however many servers or workers
watch the table, a job runs once. Cancelling sets `cancel_requested`: a queued job is cancelled at
once, a running one by whichever process holds it, at its next check. So `status` and `cancel`
work the same from any server, and a new runner only has to say how claimed jobs get executed:

    class CeleryRunner(DatabaseJobs):
        def dispatch(self, job_id):          # after the row is committed
            send_job(self.celery, job_id)    # a worker claims the row, then runs or splits the job

`LocalRunner` (local.py) is the in-process implementation `cloudward server` uses by default;
`CeleryRunner` (celery_runner.py) is the one above, for `--runner celery`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloudward.server.audit import Actor, record
from cloudward.server.db import ServerDB
from cloudward.server.errors import NotFound
from cloudward.server.jobs.commands import JobCommand, parse_command
from cloudward.store.models import JobRow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL = (SUCCEEDED, FAILED, CANCELLED)
log = logging.getLogger("cloudward.server.jobs")


@dataclass(frozen=True)
class JobInfo:
    id: str
    command: str
    status: str
    submitted_by: str
    schedule_id: int | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    exit_code: int | None
    scan_id: str | None
    cancel_requested: bool
    log_tail: str
    error: str

    @property
    def done(self) -> bool:
        return self.status in FINAL


def job_info(row: JobRow) -> JobInfo:
    return JobInfo(row.id, row.command, row.status, row.submitted_by, row.schedule_id, row.created, row.started,
                   row.finished, row.exit_code, row.scan_id, row.cancel_requested, row.log_tail or "", row.error or "")


class JobRunner(Protocol):
    """What the API and the scheduler need from whatever executes jobs."""

    def submit(self, command: str | JobCommand, *, actor: Actor, schedule_id: int | None = None) -> JobInfo: ...
    def dispatch(self, job_id: str) -> None: ...
    def cancel(self, job_id: str, *, actor: Actor) -> JobInfo: ...
    def status(self, job_id: str) -> JobInfo: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def insert_job(session: Session, command: JobCommand, *, actor: Actor, now: datetime,
               schedule_id: int | None = None) -> JobRow:
    """Queue a job inside the caller's write transaction (the scheduler claims a run and queues its
    job in one commit); the caller dispatches it after committing."""
    row = JobRow(id=uuid.uuid4().hex, command=command.text, argv=list(command.words), status=QUEUED,
                 submitted_by=actor.name[:200], schedule_id=schedule_id, created=now, cancel_requested=False,
                 log_tail="", error="")
    session.add(row)
    session.flush()
    record(session, actor, "job.submit", f"job:{row.id}", now, command=row.command, schedule=schedule_id)
    return row


class DatabaseJobs:
    """submit / cancel / status over the jobs table; subclasses decide how a queued job runs."""

    def __init__(self, db: ServerDB) -> None:
        self.db = db
        self.listeners: list[Callable[[JobInfo], None]] = []

    def submit(self, command: str | JobCommand, *, actor: Actor, schedule_id: int | None = None) -> JobInfo:
        parsed = command if isinstance(command, JobCommand) else parse_command(command)
        with self.db.write() as session:
            info = job_info(insert_job(session, parsed, actor=actor, now=self.db.clock(), schedule_id=schedule_id))
        self.dispatch(info.id)
        return info

    def dispatch(self, job_id: str) -> None:
        """Make sure a queued, committed job will be executed (the base class leaves it queued)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self, job_id: str) -> JobInfo:
        with self.db.read() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job {job_id[:64]!r}")
            return job_info(row)

    def cancel(self, job_id: str, *, actor: Actor) -> JobInfo:
        now = self.db.clock()
        with self.db.write() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job {job_id[:64]!r}")
            if row.status in FINAL:
                return job_info(row)
            row.cancel_requested = True
            if row.status == QUEUED:
                row.status, row.finished, row.error = CANCELLED, now, "cancelled before it started"
            record(session, actor, "job.cancel", f"job:{row.id}", now, status=row.status)
            info = job_info(row)
        if info.status == CANCELLED:
            self.finished(info)
        return info

    def claim(self, job_id: str, node: str) -> bool:
        """queued -> running for this node; False when someone else got there first."""
        with self.db.write() as session:
            result = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == QUEUED)
                .values(status=RUNNING, node=node[:200], started=self.db.clock()))
            return bool(getattr(result, "rowcount", 0))

    def queued(self, limit: int = 8) -> list[str]:
        with self.db.read() as session:
            return list(session.scalars(select(JobRow.id).where(JobRow.status == QUEUED)
                                        .order_by(JobRow.created, JobRow.id).limit(limit)))

    def cancel_requested(self, job_id: str) -> bool:
        with self.db.read() as session:
            return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def finished(self, info: JobInfo) -> None:
        """Tell the listeners (metrics, webhooks); one that fails is logged and the rest still run."""
        for listener in self.listeners:
            try:
                listener(info)
            except Exception:
                log.exception("job listener failed for job %s", info.id)
