"""The audit log (admin): newest first, keyset-paginated by id."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from cloudward.server.accounts import Principal
from cloudward.server.auth import ADMIN, context
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import AuditOut
from cloudward.store.models import AuditRow

router = APIRouter(prefix=f"{PREFIX}/audit", tags=["audit"], responses=STANDARD)


@router.get("", response_model=list[AuditOut])
def audit_log(request: Request, _: Principal = Depends(ADMIN),
              action: str | None = Query(None, max_length=64, description="Only this action, e.g. user.create"),
              actor: str | None = Query(None, max_length=200),
              before_id: int | None = Query(None, ge=1, le=2**62, description="Entries older than this id"),
              limit: int = Query(100, ge=1, le=1000)) -> list[AuditOut]:
    stmt = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if action:
        stmt = stmt.where(AuditRow.action == action)
    if actor:
        stmt = stmt.where(AuditRow.actor == actor)
    if before_id:
        stmt = stmt.where(AuditRow.id < before_id)
    with context(request).db.read() as session:
        return [AuditOut.model_validate(r) for r in session.scalars(stmt)]
