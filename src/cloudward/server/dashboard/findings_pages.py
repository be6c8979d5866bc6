"""The findings table (filters, sorts, cursor pages), one finding in full, and its triage:
suppress with a reason and an optional expiry, or lift the suppression (analyst and above)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete
from starlette.concurrency import run_in_threadpool

from cloudward.core.errors import UsageError
from cloudward.server import findings as api_queries
from cloudward.server.accounts import Principal
from cloudward.server.audit import record
from cloudward.server.auth import ANALYST, READ_ONLY, actor, context
from cloudward.server.dashboard import aggregates, chain, queries
from cloudward.server.dashboard.criteria import CATEGORY_VALUES, LIMITS, Criteria
from cloudward.server.dashboard.forms import read_form
from cloudward.server.dashboard.render import render
from cloudward.server.dashboard.routing import new_router
from cloudward.server.errors import NotFound
from cloudward.store.models import FIXED, SuppressionRow

router = new_router()
Fingerprint = Path(min_length=1, max_length=64)
NOTICES = {"suppressed": "Suppressed: the finding is out of the open list until the suppression is lifted or expires.",
           "unsuppressed": "Suppression lifted: the finding counts as open again."}
MAX_REASON = 2000


@router.get("/findings", response_class=HTMLResponse)
def findings_list(request: Request, principal: Principal = Depends(READ_ONLY)) -> HTMLResponse:
    criteria = Criteria.parse(request.query_params)
    db = context(request).db
    rows: list[Any] = []
    total, next_cursor, prev_cursor = 0, None, None
    flt = criteria.finding_filter()
    known = aggregates.counted_total(db, flt, criteria.chain_globs())
    with db.read() as session:
        try:
            result = queries.findings_page(session, flt, criteria.chain_clauses(db.dialect), db.clock(),
                                           sort=criteria.sort, order=criteria.order, limit=criteria.limit,
                                           cursor=criteria.cursor or None, total=known,
                                           backwards=criteria.backwards)
            rows, total, next_cursor = result.page.rows, result.total, result.page.next_cursor
            prev_cursor = result.prev_cursor
        except UsageError as exc:
            criteria.errors.append(str(exc))
    return render(request, "findings.html", status=400 if criteria.errors else 200, principal=principal,
                  section="findings", c=criteria, rows=rows, total=total, next_cursor=next_cursor,
                  prev_cursor=prev_cursor,
                  links=chain.links(), stages=chain.stage_names(), stage_slug=chain.slug,
                  categories=CATEGORY_VALUES, limits=LIMITS)


def _detail(request: Request, fingerprint: str) -> dict[str, Any]:
    from cloudward.server.routers.rules import catalogue

    db = context(request).db
    now = db.clock()
    with db.read() as session:
        row = queries.resolve(session, fingerprint)
        if row is None:
            raise NotFound(f"no finding {fingerprint[:64]!r}")
        suppression = queries.rule_suppression(session, row, now)
        scans = api_queries.history(session, row.fingerprint, limit=50)
        triage = queries.triage_history(session, row.fingerprint)
    rules = catalogue()
    return {"f": row, "fixed": row.status == FIXED, "suppression": suppression, "scans": scans, "triage": triage,
            "on_links": [lk for lk in chain.links() if lk.matches(row.rule_id)],
            "rule_known": row.rule_id in rules}


@router.get("/findings/{fingerprint}", response_class=HTMLResponse)
def finding_page(request: Request, fingerprint: str = Fingerprint,
                 principal: Principal = Depends(READ_ONLY)) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return render(request, "finding.html", principal=principal, section="findings", notice=notice, errors=[],
                  form={"reason": "", "expires": ""}, **_detail(request, fingerprint))


def _suppress(request: Request, principal: Principal, fingerprint: str, reason: str, expires: str) -> str:
    from cloudward.store import parse_expiry

    db = context(request).db
    with db.read() as session:
        row = queries.resolve(session, fingerprint)
        if row is None:
            raise NotFound(f"no finding {fingerprint[:64]!r}")
        full = row.fingerprint
    if not reason.strip():
        raise UsageError("give a reason: it is what the next person to see this finding will read")
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason has at most {MAX_REASON} characters")
    when = parse_expiry(expires, db.clock()) if expires.strip() else None
    info = db.store.suppress(full, reason=reason, author=principal.name, expires=when)
    with db.write() as session:
        record(session, actor(request, principal), "finding.suppress", f"finding:{full}", db.clock(),
               reason=info.reason, expires=info.expires.isoformat() if info.expires else None, via="dashboard")
    return full


@router.post("/findings/{fingerprint}/suppress", response_class=HTMLResponse)
async def suppress_finding(request: Request, fingerprint: str = Fingerprint,
                           principal: Principal = Depends(ANALYST)) -> Response:
    form = await read_form(request)
    reason, expires = form.get("reason", ""), form.get("expires", "")
    try:
        full = await run_in_threadpool(_suppress, request, principal, fingerprint, reason, expires)
    except UsageError as exc:
        data = await run_in_threadpool(_detail, request, fingerprint)
        return render(request, "finding.html", status=400, principal=principal, section="findings", notice="",
                      errors=[str(exc)], form={"reason": reason[:MAX_REASON], "expires": expires[:100]}, **data)
    return RedirectResponse(f"/findings/{full}?notice=suppressed", status_code=303)


def _unsuppress(request: Request, principal: Principal, fingerprint: str) -> str:
    db = context(request).db
    with db.write() as session:
        row = queries.resolve(session, fingerprint)
        if row is None:
            raise NotFound(f"no finding {fingerprint[:64]!r}")
        full = row.fingerprint
        removed = session.execute(delete(SuppressionRow).where(SuppressionRow.fingerprint == full))
        if not getattr(removed, "rowcount", 0):
            raise UsageError("this finding has no suppression of its own (a rule suppression may cover it: "
                             "lift that one under /api/v1/suppressions)")
        record(session, actor(request, principal), "finding.unsuppress", f"finding:{full}", db.clock(),
               via="dashboard")
    return full


@router.post("/findings/{fingerprint}/unsuppress", response_class=HTMLResponse)
async def unsuppress_finding(request: Request, fingerprint: str = Fingerprint,
                             principal: Principal = Depends(ANALYST)) -> Response:
    full = await run_in_threadpool(_unsuppress, request, principal, fingerprint)
    return RedirectResponse(f"/findings/{full}?notice=unsuppressed", status_code=303)
