"""The dashboard's jobs page: what it shows of each job (who, what, when, how long, new and fixed
findings, links to the scan and its diff), start and cancel through its forms with the API's roles
and CSRF, and the live state its script polls. Over HTTP against a real server that only queues
jobs (so a job stays queued until the test cancels it), and on fresh stores of both kinds for the
counts and the signature. The browser test (test_dashboard_browser.py) watches a real job run."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from typing import Any

from cloudward.server.audit import Actor
from tests.server._dashboard import logged_in
from tests.server._support import ApiServer
from tests.store._support import exposure, scan

_HOSTS = itertools.count(1)
JOB_ROW = re.compile(r'<tr data-job="([0-9a-f]+)" data-status="(\w+)">(.*?)</tr>', re.S)


def _rows(page: str) -> dict[str, tuple[str, str]]:
    return {job: (status, body) for job, status, body in JOB_ROW.findall(page)}


def _row_for(page: str, text: str) -> tuple[str, str, str]:
    found = [(job, status, body) for job, (status, body) in _rows(page).items() if text in body]
    assert len(found) == 1, page[:2000]
    return found[0]


def test_start_and_cancel_through_the_page_with_roles_and_csrf(quiet_api: ApiServer) -> None:
    target = f"192.0.2.{next(_HOSTS)}"
    command = f"exposure scan {target} -p 6379"
    with logged_in(quiet_api, "analyst") as (analyst, csrf):
        assert analyst.post("/jobs", data={"command": command}).status_code == 403  # no CSRF token
        refused = analyst.post("/jobs", data={"command": "rm -rf /", "csrf_token": csrf})
        assert refused.status_code == 400 and "not a command a job may run" in refused.text
        assert 'value="rm -rf /"' in refused.text  # the form keeps what was typed
        started = analyst.post("/jobs", data={"command": command, "csrf_token": csrf})
        assert started.status_code == 303 and started.headers["location"] == "/jobs?notice=started"
        page = analyst.get(started.headers["location"]).text
        job, status, body = _row_for(page, command)
        assert status == "queued" and f'action="/jobs/{job}/cancel"' in body
        assert 'data-live-active="1"' in page and "updates itself" in page
        live = analyst.get("/jobs/live").json()
        assert live["active"] >= 1
        name = re.search(r'class="user"[^>]*>([^<]+)<', page)
        assert name and name.group(1) in body  # who started it

    with logged_in(quiet_api, "read-only") as (reader, reader_csrf):
        page = reader.get("/jobs").text
        assert command in _row_for(page, command)[2] and f'action="/jobs/{job}/cancel"' not in page
        assert 'method="post" action="/jobs"' not in page  # no start form either
        assert reader.post(f"/jobs/{job}/cancel", data={"csrf_token": reader_csrf}).status_code == 403
        assert _row_for(reader.get("/jobs").text, command)[1] == "queued"

    with logged_in(quiet_api, "analyst") as (analyst, csrf):
        cancelled = analyst.post(f"/jobs/{job}/cancel", data={"csrf_token": csrf})
        assert cancelled.status_code == 303 and cancelled.headers["location"] == "/jobs?notice=cancelled"
        page = analyst.get("/jobs").text
        _, status, body = _row_for(page, command)
        assert status == "cancelled" and "/cancel" not in body
        assert analyst.get("/jobs/live").json()["signature"] != live["signature"]
        only = analyst.get("/jobs", params={"status": "cancelled"}).text
        assert job in _rows(only) and all(s == "cancelled" for s, _ in _rows(only).values())
        assert analyst.get("/jobs", params={"status": "nonsense"}).status_code == 422
        assert analyst.post(f"/jobs/{'0' * 32}/cancel", data={"csrf_token": csrf}).status_code == 404


def test_overview_carries_the_live_region(quiet_api: ApiServer) -> None:
    with quiet_api.client("read-only") as client:
        page = client.get("/").text
        state = client.get("/jobs/live").json()
    assert 'id="overview-live" data-live="/jobs/live"' in page
    assert f'data-live-signature="{state["signature"]}"' in page or state["active"]  # a job may start in between


# --- counts and signature on fresh stores --------------------------------------------------------


def _finish(db: Any, job_id: str, scan_id: str | None, status: str = "succeeded") -> None:
    from cloudward.store.models import JobRow

    with db.write() as session:
        row = session.get(JobRow, job_id)
        row.status, row.finished, row.scan_id, row.exit_code = status, db.clock(), scan_id, 0


def test_jobs_show_the_findings_their_scans_found_new_and_fixed(fresh_db: Any) -> None:
    from cloudward.server.dashboard import activity
    from cloudward.server.jobs.runner import DatabaseJobs

    jobs = DatabaseJobs(fresh_db)
    who = Actor("carol", "127.0.0.1")
    a, b, c = (exposure(f"10.9.0.{i}") for i in (1, 2, 3))
    first_job = jobs.submit("exposure scan 10.9.0.0/24", actor=who)
    assert jobs.claim(first_job.id, "node")
    first = fresh_db.store.record_scan(scan([a, b], hours=0, targets=["10.9.0.0/24"]))
    _finish(fresh_db, first_job.id, first.scan_id)
    second_job = jobs.submit("exposure scan 10.9.0.0/24", actor=who)
    assert jobs.claim(second_job.id, "node")
    second = fresh_db.store.record_scan(scan([b, c], hours=1, targets=["10.9.0.0/24"]))  # c new, a fixed
    _finish(fresh_db, second_job.id, second.scan_id)
    failed_job = jobs.submit("exposure scan 10.9.1.0/24", actor=who)
    assert jobs.claim(failed_job.id, "node")
    _finish(fresh_db, failed_job.id, None, status="failed")
    queued = jobs.submit("exposure scan 10.9.2.0/24", actor=who)

    with fresh_db.read() as session:
        views = {v.job.id: v for v in activity.job_views(session, fresh_db.clock())}
    assert (views[first_job.id].new, views[first_job.id].fixed) == (2, 0)
    assert (views[second_job.id].new, views[second_job.id].fixed) == (1, 1)
    assert views[second_job.id].targets == ["10.9.0.0/24"]
    assert (views[failed_job.id].new, views[failed_job.id].fixed) == (None, None)  # no scan: shown as —
    assert views[queued.id].seconds is None and views[queued.id].cancellable
    assert not views[first_job.id].cancellable and views[first_job.id].seconds is not None
    assert all(v.job.submitted_by == "carol" for v in views.values())
    with fresh_db.read() as session:
        assert [v.job.id for v in activity.job_views(session, fresh_db.clock(), status="failed")] == [failed_job.id]


def test_live_signature_changes_exactly_when_a_job_does(fresh_db: Any) -> None:
    from cloudward.server.dashboard import activity
    from cloudward.server.jobs.runner import DatabaseJobs

    def state() -> Any:
        with fresh_db.read() as session:
            return activity.live_state(session)

    jobs = DatabaseJobs(fresh_db)
    empty = state()
    assert empty.active == 0 and state() == empty  # nothing changed: same signature
    job = jobs.submit("exposure scan 10.8.0.1", actor=Actor("dan", ""))
    queued = state()
    assert queued.active == 1 and queued.signature != empty.signature
    fresh_db.store.record_scan(scan([exposure("10.8.0.1")], hours=0, targets=["10.8.0.1"]))  # not a job change
    assert state() == queued
    assert jobs.claim(job.id, "node")
    running = state()
    assert running.active == 1 and running.signature != queued.signature
    jobs.cancel(job.id, actor=Actor("dan", ""))  # a running job asked to stop: the page shows "cancelling"
    stopping = state()
    assert stopping.active == 1 and stopping.signature != running.signature
    _finish(fresh_db, job.id, None)
    done = state()
    signatures = {empty.signature, queued.signature, running.signature, stopping.signature, done.signature}
    assert done.active == 0 and len(signatures) == 5


def test_a_running_job_being_cancelled_offers_no_second_cancel(fresh_db: Any) -> None:
    from cloudward.server.dashboard import activity
    from cloudward.server.jobs.runner import DatabaseJobs

    jobs = DatabaseJobs(fresh_db)
    job = jobs.submit("exposure scan 10.7.0.1", actor=Actor("erin", ""))
    assert jobs.claim(job.id, "node")
    with fresh_db.read() as session:
        assert activity.job_views(session, fresh_db.clock())[0].cancellable
    jobs.cancel(job.id, actor=Actor("erin", ""))
    with fresh_db.read() as session:
        view = activity.job_views(session, fresh_db.clock() + timedelta(seconds=5))[0]
    assert view.job.status == "running" and view.job.cancel_requested and not view.cancellable
