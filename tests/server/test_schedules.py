"""Schedules: cron checks, ticks on an injected clock (on time, once, missed runs coalesced, two
schedulers sharing one store never both start a run), and a schedule whose tick queues a job that
a real server then runs and announces to a webhook."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cloudward.core.errors import UsageError
from cloudward.server.audit import Actor
from cloudward.server.db import ServerDB
from cloudward.server.jobs.runner import DatabaseJobs
from cloudward.server.schedules import Scheduler, add_schedule, check_cron, get_schedule, update_schedule
from cloudward.store.models import JobRow
from tests.harness.services import ServicePool, start_redis
from tests.server._support import ApiServer, wait_for_job
from tests.server.receiver import webhook_receiver
from tests.store._support import fresh_database

ALICE = Actor("alice")


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2030, 5, 1, hour, minute, second, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=("sqlite", "postgresql"))
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDB]:
    clock = Clock(at(10, 30))
    if request.param == "sqlite":
        opened = ServerDB.open(f"sqlite:///{tmp_path_factory.mktemp('sched')}/c.db", clock)
        yield opened
        opened.close()
        return
    server = request.getfixturevalue("postgres_trust")
    with fresh_database(server.dsn, server.sqlalchemy_url) as url:
        opened = ServerDB.open(url, clock)
        yield opened
        opened.close()


def _jobs(db: ServerDB) -> list[JobRow]:
    with db.read() as session:
        return list(session.scalars(select(JobRow).order_by(JobRow.created)))


@pytest.mark.parametrize("expression", ["0 * * * *", "*/5 9-17 * * 1-5", "0 0 1 1 *", "@hourly", "  30   2 * * * "])
def test_valid_cron(expression: str) -> None:
    assert check_cron(expression) == " ".join(expression.split())


@pytest.mark.parametrize("expression", ["", "* * * *", "* * * * * *", "61 * * * *", "x y z a b", "@never", "*" * 300])
def test_invalid_cron(expression: str) -> None:
    with pytest.raises(UsageError):
        check_cron(expression)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_cron_check_never_crashes(text: str) -> None:
    with contextlib.suppress(UsageError):
        check_cron(text)


def test_runs_on_time_once_and_coalesces_missed_runs(db: ServerDB) -> None:
    jobs = DatabaseJobs(db)  # queues only: these tests look at what is queued, not at scans
    schedule = add_schedule(db, ALICE, "exposure scan 127.0.0.1 -p 6379", "0 * * * *")
    assert schedule.next_run == at(11)
    scheduler = Scheduler(db, jobs)
    assert scheduler.tick(at(10, 59, 59)) == []
    first = scheduler.tick(at(11, 0, 0))
    assert len(first) == 1 and scheduler.tick(at(11, 0, 1)) == []
    assert get_schedule(db, schedule.id).next_run == at(12)
    # down from before 12:00 until 15:30: the 12, 13, 14 and 15 o'clock runs become one run now
    late = scheduler.tick(at(15, 30))
    assert len(late) == 1
    after = get_schedule(db, schedule.id)
    assert after.next_run == at(16) and after.last_run == at(15, 30) and after.last_job_id == late[0]
    rows = _jobs(db)
    assert [(r.schedule_id, r.status, r.submitted_by, r.argv) for r in rows] == [
        (schedule.id, "queued", "scheduler", ["exposure", "scan", "127.0.0.1", "-p", "6379"])] * 2


def test_disabled_schedule_does_not_run_and_re_enabling_skips_the_past(db: ServerDB) -> None:
    jobs = DatabaseJobs(db)
    schedule = add_schedule(db, ALICE, "iac scan /srv", "*/10 * * * *")
    update_schedule(db, ALICE, schedule.id, enabled=False)
    scheduler = Scheduler(db, jobs)
    assert scheduler.tick(at(12)) == []
    db.clock.now = at(12, 3)  # type: ignore[attr-defined]
    assert update_schedule(db, ALICE, schedule.id, enabled=True).next_run == at(12, 10)
    assert scheduler.tick(at(12, 5)) == [] and len(scheduler.tick(at(12, 10))) == 1


def test_two_schedulers_never_both_start_a_run(db: ServerDB) -> None:
    """Two servers sharing the store tick at the same moment, many times: each run starts once."""
    schedules = [add_schedule(db, ALICE, f"exposure scan 127.0.0.{n}", "* * * * *") for n in range(1, 4)]
    left, right = Scheduler(db, DatabaseJobs(db)), Scheduler(db, DatabaseJobs(db))
    started: list[str] = []
    lock = threading.Lock()

    def run(scheduler: Scheduler, when: datetime, barrier: threading.Barrier) -> None:
        barrier.wait()
        got = scheduler.tick(when)
        with lock:
            started.extend(got)

    for minute in range(31, 36):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=run, args=(s, at(10, minute), barrier)) for s in (left, right)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(started) == len(set(started)) == 5 * len(schedules)
    per_schedule = {s.id: 0 for s in schedules}
    for row in _jobs(db):
        per_schedule[row.schedule_id or 0] += 1
    assert set(per_schedule.values()) == {5}


def test_schedule_api_and_a_scheduled_job_run_by_the_server(sqlite_api: ApiServer, services: ServicePool) -> None:
    """The schedule is made over HTTP; a scheduler on the same store (a second process would do the
    same) ticks at its time; the server's runner picks the queued job up, runs the scan and calls
    the webhook; the API shows the run."""
    api = sqlite_api
    redis_server = services.start(start_redis)  # a redis of its own: its findings are new to this store
    with webhook_receiver() as receiver, api.client("analyst") as analyst, api.client("admin") as admin:
        hook = admin.post("/api/v1/webhooks", json={"url": receiver.url + "/scheduled", "min_severity": "critical"})
        assert hook.status_code == 201
        made = analyst.post("/api/v1/schedules", json={"command": f"exposure scan 127.0.0.1 -p {redis_server.port}",
                                                       "cron": "*/15 * * * *"})
        assert made.status_code == 201, made.text
        schedule = made.json()
        assert analyst.post("/api/v1/schedules", json={"command": "rm -rf /", "cron": "* * * * *"}).status_code == 400
        assert analyst.post("/api/v1/schedules", json={"command": "audit", "cron": "every day"}).status_code == 400
        due = datetime.fromisoformat(schedule["next_run"])
        db = ServerDB.open(api.store_url)
        try:
            runner = DatabaseJobs(db)
            scheduler = Scheduler(db, runner)
            assert scheduler.tick(due - timedelta(seconds=1)) == []
            (job_id,) = scheduler.tick(due)
        finally:
            db.close()
        job = wait_for_job(analyst, job_id)
        assert job["status"] == "succeeded" and job["schedule_id"] == schedule["id"], job
        listed = analyst.get("/api/v1/jobs", params={"schedule_id": schedule["id"]}).json()
        assert [j["id"] for j in listed] == [job_id]
        assert analyst.get(f"/api/v1/schedules/{schedule['id']}").json()["last_job_id"] == job_id
        (delivery,) = receiver.at("/scheduled")  # sent before the job turned final
        payload = delivery.json()
        assert payload["job"]["schedule_id"] == schedule["id"]
        assert {f["severity"] for f in payload["findings"]} == {"critical"}
        assert analyst.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 204
        assert admin.delete(f"/api/v1/webhooks/{hook.json()['id']}").status_code == 204
        actions = [e["action"] for e in admin.get("/api/v1/audit", params={"limit": 200}).json()]
        assert "schedule.create" in actions and "schedule.delete" in actions
