"""Scan history, and what changed between two scans: new, fixed, still open, not re-checked."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse

from cloudward.core.errors import UsageError
from cloudward.server.accounts import Principal
from cloudward.server.auth import READ_ONLY, context
from cloudward.server.dashboard import queries
from cloudward.server.dashboard.render import render
from cloudward.server.dashboard.routing import new_router

router = new_router()
SHOWN_PER_BUCKET = 300


@router.get("/scans", response_class=HTMLResponse)
def scans_page(request: Request, principal: Principal = Depends(READ_ONLY),
               kind: str = Query("", max_length=64), limit: int = Query(100, ge=1, le=500)) -> HTMLResponse:
    db = context(request).db
    scans = db.store.list_scans(kind=kind or None, limit=limit)
    with db.read() as session:
        kinds = queries.scan_kinds(session)
    return render(request, "scans.html", principal=principal, section="scans", scans=scans, kinds=kinds,
                  kind=kind, limit=limit)


def _rows(items: list[Any]) -> dict[str, Any]:
    return {"total": len(items), "rows": [
        {"fingerprint": i.fingerprint, "severity": i.finding.severity.value, "title": i.finding.title,
         "rule_id": i.finding.rule_id, "target": i.finding.target.name, "suppressed": i.suppressed}
        for i in items[:SHOWN_PER_BUCKET]]}


@router.get("/scans/diff", response_class=HTMLResponse)
def diff_page(request: Request, principal: Principal = Depends(READ_ONLY),
              before: str = Query("", max_length=64), after: str = Query("", max_length=64),
              include_suppressed: bool = False) -> HTMLResponse:
    db = context(request).db
    scans = db.store.list_scans(limit=200)
    try:
        result = db.store.diff(before or None, after or None, include_suppressed=include_suppressed)
    except UsageError as exc:
        return render(request, "diff.html", status=400, principal=principal, section="scans", error=str(exc),
                      scans=scans, chosen_before=before, chosen_after=after, include_suppressed=include_suppressed,
                      result=None, buckets=[])
    buckets = [("new", "New", "Seen by the later scan, not by the earlier one", _rows(result.new)),
               ("fixed", "Fixed", "Gone in the later scan, which looked where they were", _rows(result.fixed)),
               ("still_open", "Still open", "Seen by both scans", _rows(result.still_open)),
               ("not_rechecked", "Not re-checked", "Not seen by the later scan, which did not look there (other "
                "targets, an error, or a cancelled scan)", _rows(result.not_rechecked))]
    return render(request, "diff.html", principal=principal, section="scans", error="", scans=scans,
                  chosen_before=result.before.id, chosen_after=result.after.id,
                  include_suppressed=include_suppressed, result=result, buckets=buckets, shown=SHOWN_PER_BUCKET)
