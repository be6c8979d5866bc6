"""Schedules: cron-timed scan jobs stored in the database (analyst to change, everyone to read)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request, Response

from cloudward.server import schedules
from cloudward.server.accounts import Principal
from cloudward.server.auth import ANALYST, READ_ONLY, actor, context
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import ScheduleIn, ScheduleOut, ScheduleUpdate

router = APIRouter(prefix=f"{PREFIX}/schedules", tags=["schedules"], responses=STANDARD)
ScheduleId = Path(ge=1, le=2**62)


def _out(info: schedules.ScheduleInfo) -> ScheduleOut:
    return ScheduleOut.model_validate(info, from_attributes=True)


@router.get("", response_model=list[ScheduleOut])
def list_schedules(request: Request, _: Principal = Depends(READ_ONLY)) -> list[ScheduleOut]:
    return [_out(s) for s in schedules.list_schedules(context(request).db)]


@router.post("", response_model=ScheduleOut, status_code=201)
def add_schedule(body: ScheduleIn, request: Request, principal: Principal = Depends(ANALYST)) -> ScheduleOut:
    """Run `command` (as a job) at the times of a five-field cron expression, in UTC."""
    return _out(schedules.add_schedule(context(request).db, actor(request, principal), body.command, body.cron))


@router.get("/{schedule_id}", response_model=ScheduleOut)
def get_schedule(request: Request, schedule_id: int = ScheduleId,
                 _: Principal = Depends(READ_ONLY)) -> ScheduleOut:
    return _out(schedules.get_schedule(context(request).db, schedule_id))


@router.patch("/{schedule_id}", response_model=ScheduleOut)
def update_schedule(body: ScheduleUpdate, request: Request, schedule_id: int = ScheduleId,
                    principal: Principal = Depends(ANALYST)) -> ScheduleOut:
    return _out(schedules.update_schedule(context(request).db, actor(request, principal), schedule_id,
                                          enabled=body.enabled, cron=body.cron))


@router.delete("/{schedule_id}", status_code=204, response_class=Response)
def delete_schedule(request: Request, schedule_id: int = ScheduleId,
                    principal: Principal = Depends(ANALYST)) -> Response:
    schedules.remove_schedule(context(request).db, actor(request, principal), schedule_id)
    return Response(status_code=204)
