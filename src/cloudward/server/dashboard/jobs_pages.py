"""Scan jobs: who started what, how it went, what it found and fixed, with cancel and start for
analysts (the API's rules: the same runner calls). The page refreshes itself while a job runs
(see activity.py and the page script); without JavaScript it is a plain page to reload."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cloudward.core.errors import UsageError
from cloudward.server.accounts import Principal
from cloudward.server.auth import ANALYST, READ_ONLY, actor, context
from cloudward.server.dashboard import activity
from cloudward.server.dashboard.forms import read_form
from cloudward.server.dashboard.render import render
from cloudward.server.dashboard.routing import new_router
from cloudward.server.dashboard.schedules_pages import EXAMPLES
from cloudward.server.jobs.runner import STATUSES

router = new_router()
JobId = Path(min_length=1, max_length=32)
NOTICES = {"started": "Scan queued: it starts as soon as a job slot is free.",
           "cancelled": "Cancel requested: a queued job stops at once, a running one at its next check."}
SHOWN = 50


def _page_data(request: Request, status: str) -> dict[str, Any]:
    db = context(request).db
    with db.read() as session:
        jobs = activity.job_views(session, db.clock(), status=status, limit=SHOWN)
        live = activity.live_state(session)
    return {"jobs": jobs, "live": live, "shown_status": status, "statuses": STATUSES, "examples": EXAMPLES}


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, principal: Principal = Depends(READ_ONLY),
              status: str = Query("", pattern="^(" + "|".join(STATUSES) + ")?$")) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return render(request, "jobs.html", principal=principal, section="jobs", notice=notice, errors=[],
                  form={"command": ""}, **_page_data(request, status))


@router.get("/jobs/live")
def jobs_live(request: Request, _: Principal = Depends(READ_ONLY)) -> JSONResponse:
    """How many jobs are queued or running, and the signature pages compare with their own."""
    with context(request).db.read() as session:
        state = activity.live_state(session)
    return JSONResponse({"active": state.active, "signature": state.signature})


@router.post("/jobs", response_class=HTMLResponse)
async def start_job(request: Request, principal: Principal = Depends(ANALYST)) -> Response:
    form = await read_form(request)
    command = form.get("command", "")[:4096]
    try:
        if not command.strip():
            raise UsageError("give the scan command to run, e.g. " + EXAMPLES[0])
        runner = context(request).runner
        await run_in_threadpool(runner.submit, command, actor=actor(request, principal))
    except UsageError as exc:
        data = await run_in_threadpool(_page_data, request, "")
        return render(request, "jobs.html", status=400, principal=principal, section="jobs", notice="",
                      errors=[str(exc)], form={"command": command}, **data)
    return RedirectResponse("/jobs?notice=started", status_code=303)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str = JobId, principal: Principal = Depends(ANALYST)) -> Response:
    context(request).runner.cancel(job_id, actor=actor(request, principal))
    return RedirectResponse("/jobs?notice=cancelled", status_code=303)
