"""Recorded scans and the diff between two of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request

from cloudward.server.accounts import Principal
from cloudward.server.auth import READ_ONLY, context
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.routers.findings import stored_out
from cloudward.server.schemas import DiffOut, ScanOut

router = APIRouter(prefix=PREFIX, tags=["scans"], responses=STANDARD)


def scan_out(info: Any) -> ScanOut:
    return ScanOut(id=info.id, kind=info.kind, status=info.status.value, started=info.started,
                   finished=info.finished, recorded=info.recorded, targets=list(info.targets),
                   errors=[e.model_dump() for e in info.errors], stats=dict(info.stats),
                   finding_count=info.finding_count)


@router.get("/scans", response_model=list[ScanOut])
def list_scans(request: Request, _: Principal = Depends(READ_ONLY),
               kind: str | None = Query(None, max_length=64, description="Only scans of this kind (exposure, host...)"),
               limit: int = Query(50, ge=1, le=500)) -> list[ScanOut]:
    """Recorded scans, newest first."""
    return [scan_out(s) for s in context(request).db.store.list_scans(kind=kind, limit=limit)]


@router.get("/scans/{scan_id}", response_model=ScanOut)
def get_scan(request: Request, scan_id: str = Path(min_length=1, max_length=64),
             _: Principal = Depends(READ_ONLY)) -> ScanOut:
    """One scan by id, unique id prefix, or `latest`."""
    from cloudward.core.errors import UsageError
    from cloudward.server.errors import NotFound

    try:
        return scan_out(context(request).db.store.get_scan(scan_id))
    except UsageError as exc:
        raise NotFound(str(exc)) from None


@router.get("/diff", response_model=DiffOut)
def diff(request: Request, _: Principal = Depends(READ_ONLY),
         before: str | None = Query(None, max_length=64, description="Earlier scan (default: the previous completed "
                                                                     "scan of the same kind and scope)"),
         after: str | None = Query(None, max_length=64, description="Later scan (default: the latest)"),
         include_suppressed: bool = False) -> DiffOut:
    """What changed between two scans: new, fixed, still open, and not re-checked findings."""
    result = context(request).db.store.diff(before, after, include_suppressed=include_suppressed)
    return DiffOut(before=scan_out(result.before), after=scan_out(result.after),
                   new=[stored_out(f) for f in result.new], fixed=[stored_out(f) for f in result.fixed],
                   still_open=[stored_out(f) for f in result.still_open],
                   not_rechecked=[stored_out(f) for f in result.not_rechecked])
