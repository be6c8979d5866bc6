"""Targets and assets: every scanned thing with findings, and how bad it is."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request

from cloudward.server import findings as queries
from cloudward.server.accounts import Principal
from cloudward.server.auth import READ_ONLY, context
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import TargetOut

router = APIRouter(prefix=f"{PREFIX}/targets", tags=["targets"], responses=STANDARD)


@router.get("", response_model=list[TargetOut])
def list_targets(request: Request, _: Principal = Depends(READ_ONLY),
                 status: Literal["open", "fixed", "all"] = "open",
                 kind: str | None = Query(None, max_length=32, description="service, path, image, object, resource..."),
                 search: str | None = Query(None, max_length=500, description="Substring of the target name"),
                 limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0, le=10_000_000)) -> list[TargetOut]:
    """Finding counts per target and severity (suppressed findings left out), worst first."""
    db = context(request).db
    with db.read() as session:
        rows = queries.targets(session, db.clock(), status=status, kind=kind, search=search, limit=limit, offset=offset)
    return [TargetOut.model_validate(r) for r in rows]
