"""Schedules: a job command plus a cron expression, stored in the database and run on time.

Times are UTC. `next_run` is kept on each row; a tick (the scheduler thread of `cloudward
server`, or `cloudward scheduler`, every few seconds) starts every enabled schedule whose
`next_run` has passed.

Missed runs: when the scheduler was not running at one or more of a schedule's times (the
server was down), the schedule runs once as soon as a scheduler sees it, and its next run is the
first cron time after that moment. Missed runs are coalesced, never replayed one by one: ten
missed hourly scans would only scan the same thing ten times in a row.

No double runs: a tick claims a run with a compare-and-set on `next_run` (`UPDATE ... WHERE id=?
AND next_run=<the value it read>`) in the same transaction that queues the job, so when two
servers share the database exactly one of them wins each run, and a run is never claimed without
its job being queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from cloudward.core.errors import CloudwardError, UsageError
from cloudward.server.audit import Actor, record
from cloudward.server.db import ServerDB
from cloudward.server.errors import NotFound
from cloudward.server.jobs.commands import parse_command
from cloudward.server.jobs.runner import JobRunner, insert_job
from cloudward.store.models import ScheduleRow

log = logging.getLogger("cloudward.server.scheduler")
MAX_CRON_CHARS = 200
SCHEDULER = Actor("scheduler")


@dataclass(frozen=True)
class ScheduleInfo:
    id: int
    command: str
    cron: str
    enabled: bool
    created_by: str
    created: datetime
    next_run: datetime
    last_run: datetime | None
    last_job_id: str | None


def _info(row: ScheduleRow) -> ScheduleInfo:
    return ScheduleInfo(row.id, row.command, row.cron, row.enabled, row.created_by, row.created, row.next_run,
                        row.last_run, row.last_job_id)


def check_cron(expression: str) -> str:
    """A standard five-field cron expression (minute hour day month weekday), or UsageError."""
    from croniter import croniter

    text = " ".join(expression.split())
    if not text or len(text) > MAX_CRON_CHARS:
        raise UsageError(f"cron expression must have 1-{MAX_CRON_CHARS} characters")
    if len(text.split(" ")) != 5 and not text.startswith("@"):
        raise UsageError(f"cron expression {text[:80]!r} must have five fields: minute hour day month weekday")
    try:
        valid = croniter.is_valid(text)
        if valid:
            croniter(text, datetime(2025, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception:  # croniter raises a zoo of types on hostile input
        valid = False
    if not valid:
        raise UsageError(f"invalid cron expression {text[:80]!r}")
    return text


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after `after` that the expression names (UTC)."""
    from croniter import croniter

    moment = after.astimezone(UTC) if after.tzinfo else after.replace(tzinfo=UTC)
    nxt: datetime = croniter(expression, moment).get_next(datetime)
    return nxt.astimezone(UTC)


def add_schedule(db: ServerDB, actor: Actor, command: str, cron: str) -> ScheduleInfo:
    parsed = parse_command(command)
    expression = check_cron(cron)
    now = db.clock()
    with db.write() as session:
        row = ScheduleRow(command=parsed.text, argv=list(parsed.words), cron=expression, enabled=True,
                          created_by=actor.name[:200], created=now, next_run=next_run(expression, now))
        session.add(row)
        session.flush()
        record(session, actor, "schedule.create", f"schedule:{row.id}", now, command=row.command, cron=expression)
        return _info(row)


def list_schedules(db: ServerDB) -> list[ScheduleInfo]:
    with db.read() as session:
        return [_info(r) for r in session.scalars(select(ScheduleRow).order_by(ScheduleRow.id))]


def get_schedule(db: ServerDB, schedule_id: int) -> ScheduleInfo:
    with db.read() as session:
        row = session.get(ScheduleRow, schedule_id)
        if row is None:
            raise NotFound(f"no schedule {schedule_id}")
        return _info(row)


def update_schedule(db: ServerDB, actor: Actor, schedule_id: int, *, enabled: bool | None = None,
                    cron: str | None = None) -> ScheduleInfo:
    expression = check_cron(cron) if cron is not None else None
    now = db.clock()
    with db.write() as session:
        row = session.get(ScheduleRow, schedule_id)
        if row is None:
            raise NotFound(f"no schedule {schedule_id}")
        changes: dict[str, object] = {}
        if expression is not None and expression != row.cron:
            changes["cron"] = {"from": row.cron, "to": expression}
            row.cron = expression
            row.next_run = next_run(expression, now)
        if enabled is not None and enabled != row.enabled:
            changes["enabled"] = enabled
            row.enabled = enabled
            if enabled:  # re-enabling does not fire for the time it was off
                row.next_run = next_run(row.cron, now)
        if changes:
            record(session, actor, "schedule.update", f"schedule:{row.id}", now, **changes)
        return _info(row)


def remove_schedule(db: ServerDB, actor: Actor, schedule_id: int) -> None:
    now = db.clock()
    with db.write() as session:
        row = session.get(ScheduleRow, schedule_id)
        if row is None:
            raise NotFound(f"no schedule {schedule_id}")
        record(session, actor, "schedule.delete", f"schedule:{row.id}", now, command=row.command, cron=row.cron)
        session.delete(row)


class Scheduler:
    """Starts due schedules. `tick(now)` is the whole logic (tests call it with their own clock);
    `start()` runs it on a thread along with the server's periodic chores."""

    def __init__(self, db: ServerDB, runner: JobRunner, clock: Callable[[], datetime] | None = None,
                 interval: float = 15.0, chores: list[Callable[[], None]] | None = None,
                 run_schedules: bool = True) -> None:
        self.db = db
        # False: the thread only does the chores (a server started with --no-scheduler)
        self.run_schedules = run_schedules
        self.runner = runner
        self.clock = clock or db.clock
        self.interval = interval
        self.chores = chores or []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime | None = None) -> list[str]:
        """Queue one job per due schedule this scheduler wins; returns the job ids."""
        now = now or self.clock()
        with self.db.read() as session:
            due = session.execute(
                select(ScheduleRow.id, ScheduleRow.next_run, ScheduleRow.cron)
                .where(ScheduleRow.enabled.is_(True), ScheduleRow.next_run <= now)
                .order_by(ScheduleRow.next_run, ScheduleRow.id)).all()
        started: list[str] = []
        for schedule_id, seen_next, expression in due:
            job_id = self._claim(schedule_id, seen_next, expression, now)
            if job_id is not None:
                self.runner.dispatch(job_id)
                started.append(job_id)
        return started

    def _claim(self, schedule_id: int, seen_next: datetime, expression: str, now: datetime) -> str | None:
        with self.db.write() as session:
            claimed = session.execute(
                update(ScheduleRow)
                .where(ScheduleRow.id == schedule_id, ScheduleRow.next_run == seen_next,
                       ScheduleRow.enabled.is_(True))
                .values(next_run=next_run(expression, now), last_run=now))
            if not getattr(claimed, "rowcount", 0):
                return None  # another scheduler won this run, or it was edited meanwhile
            row = session.get(ScheduleRow, schedule_id)
            assert row is not None
            try:
                command = parse_command(row.command)
            except UsageError as exc:  # a schedule written by an older, laxer cloudward
                record(session, SCHEDULER, "schedule.skip", f"schedule:{row.id}", now, reason=str(exc))
                return None
            job = insert_job(session, command, actor=SCHEDULER, now=now, schedule_id=row.id)
            row.last_job_id = job.id
            return job.id

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._chores()

    def _chores(self) -> None:
        for chore in self.chores:
            try:
                chore()
            except CloudwardError as exc:
                log.warning("scheduler chore: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_schedules:
                    self.tick()
            except CloudwardError as exc:  # the store is unreachable: say so and try again next tick
                log.warning("scheduler: %s", exc)
            self._chores()
            now = self.clock()
            to_next_minute = 60.0 - now.second - now.microsecond / 1e6 + 0.2
            self._stop.wait(max(0.5, min(self.interval, to_next_minute)))
