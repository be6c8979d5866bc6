"""Schedules: the cron-timed scans, their next and last runs, and (analyst and above, as in the
API) adding, pausing and removing them. The commands go through the same allow-list as jobs."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cloudward.core.errors import UsageError
from cloudward.server import schedules
from cloudward.server.accounts import Principal
from cloudward.server.auth import ANALYST, READ_ONLY, actor, context
from cloudward.server.dashboard import queries
from cloudward.server.dashboard.forms import read_form
from cloudward.server.dashboard.render import render
from cloudward.server.dashboard.routing import new_router

router = new_router()
ScheduleId = Path(ge=1, le=2**62)
NOTICES = {"added": "Schedule added.", "removed": "Schedule removed.", "paused": "Schedule paused.",
           "resumed": "Schedule resumed."}
EXAMPLES = ["exposure scan 10.0.0.0/24 -p teamtnt", "audit", "image scan registry.example/app:latest",
            "conformity scan aws --regions all", "iac scan /srv/infra"]


def _page_data(request: Request) -> dict[str, Any]:
    db = context(request).db
    items = schedules.list_schedules(db)
    with db.read() as session:
        jobs = queries.jobs_by_id(session, [s.last_job_id or "" for s in items])
    return {"schedules": items, "jobs": jobs, "examples": EXAMPLES}


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, principal: Principal = Depends(READ_ONLY)) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return render(request, "schedules.html", principal=principal, section="schedules", notice=notice, errors=[],
                  form={"command": "", "cron": ""}, **_page_data(request))


@router.post("/schedules", response_class=HTMLResponse)
async def add_schedule(request: Request, principal: Principal = Depends(ANALYST)) -> Response:
    form = await read_form(request)
    command, cron = form.get("command", "")[:2000], form.get("cron", "")[:200]
    db = context(request).db
    try:
        if not command.strip() or not cron.strip():
            raise UsageError("a schedule needs a command and a cron expression")
        await run_in_threadpool(schedules.add_schedule, db, actor(request, principal), command, cron)
    except UsageError as exc:
        data = await run_in_threadpool(_page_data, request)
        return render(request, "schedules.html", status=400, principal=principal, section="schedules", notice="",
                      errors=[str(exc)], form={"command": command, "cron": cron}, **data)
    return RedirectResponse("/schedules?notice=added", status_code=303)


@router.post("/schedules/{schedule_id}/toggle")
def toggle_schedule(request: Request, schedule_id: int = ScheduleId,
                    principal: Principal = Depends(ANALYST)) -> Response:
    db = context(request).db
    current = schedules.get_schedule(db, schedule_id)
    schedules.update_schedule(db, actor(request, principal), schedule_id, enabled=not current.enabled)
    return RedirectResponse(f"/schedules?notice={'paused' if current.enabled else 'resumed'}", status_code=303)


@router.post("/schedules/{schedule_id}/delete")
def delete_schedule(request: Request, schedule_id: int = ScheduleId,
                    principal: Principal = Depends(ANALYST)) -> Response:
    schedules.remove_schedule(context(request).db, actor(request, principal), schedule_id)
    return RedirectResponse("/schedules?notice=removed", status_code=303)
