"""Scan jobs: start (analyst), status and list (everyone), cancel (analyst)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select

from cloudward.server.accounts import Principal
from cloudward.server.auth import ANALYST, READ_ONLY, actor, context
from cloudward.server.jobs.runner import STATUSES, JobInfo, job_info
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import JobIn, JobOut
from cloudward.store.models import JobRow

router = APIRouter(prefix=f"{PREFIX}/jobs", tags=["jobs"], responses=STANDARD)
JobId = Path(min_length=1, max_length=32)


def job_out(info: JobInfo) -> JobOut:
    return JobOut.model_validate(info, from_attributes=True)


@router.post("", response_model=JobOut, status_code=202)
def start_job(body: JobIn, request: Request, principal: Principal = Depends(ANALYST)) -> JobOut:
    """Start a scan: an allow-listed cloudward command line (no shell), e.g.
    `exposure scan 10.0.0.0/24 -p teamtnt`. The job is queued and runs as soon as a slot is free;
    poll GET /api/v1/jobs/{id}; when it succeeds, `scan_id` names the recorded scan."""
    return job_out(context(request).runner.submit(body.command, actor=actor(request, principal)))


@router.get("", response_model=list[JobOut])
def list_jobs(request: Request, _: Principal = Depends(READ_ONLY),
              status: str | None = Query(None, pattern="^(" + "|".join(STATUSES) + ")$"),
              schedule_id: int | None = Query(None, ge=1, le=2**62),
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10_000_000)) -> list[JobOut]:
    """Jobs, newest first."""
    stmt = select(JobRow).order_by(JobRow.created.desc(), JobRow.id).limit(limit).offset(offset)
    if status:
        stmt = stmt.where(JobRow.status == status)
    if schedule_id:
        stmt = stmt.where(JobRow.schedule_id == schedule_id)
    with context(request).db.read() as session:
        return [job_out(job_info(r)) for r in session.scalars(stmt)]


@router.get("/{job_id}", response_model=JobOut)
def get_job(request: Request, job_id: str = JobId, _: Principal = Depends(READ_ONLY)) -> JobOut:
    return job_out(context(request).runner.status(job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, status_code=202)
def cancel_job(request: Request, job_id: str = JobId, principal: Principal = Depends(ANALYST)) -> JobOut:
    """Cancel: a queued job at once, a running one at its runner's next check (SIGINT to its
    process group, so the scan is recorded as cancelled with what it found; then SIGTERM, SIGKILL)."""
    return job_out(context(request).runner.cancel(job_id, actor=actor(request, principal)))
