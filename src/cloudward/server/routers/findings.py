"""Findings: filtered, sorted, cursor-paginated pages; one finding and its history; suppressions."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cloudward.core.errors import UsageError
from cloudward.core.severity import Category, Severity
from cloudward.server import findings as queries
from cloudward.server.accounts import Principal
from cloudward.server.audit import record
from cloudward.server.auth import ANALYST, READ_ONLY, actor, context
from cloudward.server.errors import NotFound
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import (
    FindingHistory,
    FindingOut,
    FindingPage,
    RuleSuppressIn,
    ScanOut,
    SuppressIn,
    SuppressionOut,
    TargetErrorOut,
    TargetRef,
)
from cloudward.store.models import FIXED, FindingRow, SuppressionRow

router = APIRouter(prefix=f"{PREFIX}/findings", tags=["findings"], responses=STANDARD)
suppressions = APIRouter(prefix=f"{PREFIX}/suppressions", tags=["suppressions"], responses=STANDARD)
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
Fingerprint = Path(min_length=4, max_length=64, description="Fingerprint, or a unique prefix of at least 4 digits")


def _suppression(row: Any) -> SuppressionOut | None:
    if row is None:
        return None
    return SuppressionOut(id=row.id, fingerprint=row.fingerprint, rule_id=row.rule_id,
                          target_pattern=row.target_pattern, reason=row.reason, author=row.author,
                          created=row.created, expires=row.expires)


def row_out(row: FindingRow, suppression: SuppressionRow | None) -> FindingOut:
    """Built without validation (the row is the store's own, already validated data): a page of
    50 findings is serialised straight from these objects."""
    return FindingOut.model_construct(
        fingerprint=row.fingerprint, rule_id=row.rule_id, title=row.title, severity=row.severity,
        category=row.category, target=TargetRef.model_construct(kind=row.target_kind, name=row.target_name),
        location=row.location or {}, evidence=row.evidence or {}, description=row.description,
        remediation=row.remediation, references=row.references or [], attack=row.attack or [],
        compliance=row.compliance or {}, tags=row.tags or [], first_seen=row.first_seen, last_seen=row.last_seen,
        status="fixed" if row.status == FIXED else "open", first_scan_id=row.first_scan_id,
        last_scan_id=row.last_scan_id, fixed_at=row.fixed_at, fixed_scan_id=row.fixed_scan_id,
        suppressed=suppression is not None, suppression=_suppression(suppression))


def stored_out(item: Any) -> FindingOut:
    """A store StoredFinding (diffs) in the API's shape."""
    data = item.to_contract()
    data.pop("detected_at", None)
    return FindingOut.model_validate(data)


def _parse_list(values: list[str] | None, parse: Any, name: str) -> list[Any]:
    out = []
    for value in values or []:
        for part in value.split(","):
            if part.strip():
                try:
                    out.append(parse(part.strip().lower()))
                except ValueError:
                    raise UsageError(f"{name}: unknown value {part.strip()[:40]!r}") from None
    return out


def _resolve(session: Session, ref: str) -> FindingRow:
    prefix = ref.strip().lower()
    if not _HEX.match(prefix):
        raise NotFound(f"no finding {ref[:64]!r} (fingerprints are hexadecimal)")
    row = session.get(FindingRow, prefix)
    if row is not None:
        return row
    rows = list(session.scalars(select(FindingRow).where(FindingRow.fingerprint.startswith(prefix)).limit(2)))
    if not rows:
        raise NotFound(f"no finding {prefix}")
    if len(rows) > 1:
        raise UsageError(f"fingerprint prefix {prefix} is ambiguous: give more digits")
    return rows[0]


@router.get("", response_model=FindingPage)
def list_findings(
    request: Request,
    _: Principal = Depends(READ_ONLY),
    severity: list[str] | None = Query(None, description="Exact severities (repeat or comma-separate)"),
    min_severity: Literal["info", "low", "medium", "high", "critical"] | None = Query(None),
    category: list[str] | None = Query(None, description="Categories (repeat or comma-separate)"),
    rule: str | None = Query(None, max_length=200, description="Rule id, or a glob such as redis.*"),
    target: str | None = Query(None, max_length=500, description="Substring of the target name (any case)"),
    target_kind: str | None = Query(None, max_length=32),
    attack: str | None = Query(None, max_length=16, description="ATT&CK technique id; T1059 also finds T1059.004"),
    status: Literal["open", "fixed", "all"] = "open",
    suppressed: Literal["exclude", "include", "only"] = "exclude",
    scan: str | None = Query(None, max_length=64, description="Only findings this scan saw (full scan id)"),
    sort: Literal["severity", "last_seen", "first_seen", "rule_id", "target"] = "severity",
    order: Literal["asc", "desc"] = "desc",
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=2048, description="next_cursor of the previous page"),
) -> FindingPage:
    flt = queries.FindingFilter(
        severity=_parse_list(severity, Severity, "severity"),
        min_severity=Severity(min_severity) if min_severity else None,
        category=_parse_list(category, Category, "category"), rule=rule or None, target=target or None,
        target_kind=target_kind or None, attack=attack or None, status=status, suppressed=suppressed,
        scan_id=scan or None)
    db = context(request).db
    with db.read() as session:
        result, _active = queries.page(session, flt, db.clock(), sort=sort, order=order, limit=limit, cursor=cursor)
        items = [row_out(row, sup) for row, sup in result.rows]
    return FindingPage.model_construct(items=items, next_cursor=result.next_cursor)


@router.get("/{fingerprint}", response_model=FindingOut)
def get_finding(request: Request, fingerprint: str = Fingerprint, _: Principal = Depends(READ_ONLY)) -> FindingOut:
    db = context(request).db
    with db.read() as session:
        row = _resolve(session, fingerprint)
        return row_out(row, queries.match_suppression(row, queries.active_suppressions(session, db.clock())))


@router.get("/{fingerprint}/history", response_model=FindingHistory)
def finding_history(request: Request, fingerprint: str = Fingerprint, _: Principal = Depends(READ_ONLY),
                    limit: int = Query(100, ge=1, le=1000)) -> FindingHistory:
    """When the finding was first and last seen, and the scans that saw it (newest first)."""
    with context(request).db.read() as session:
        row = _resolve(session, fingerprint)
        scans = [ScanOut(id=s.id, kind=s.kind, status=s.status, started=s.started, finished=s.finished,
                         recorded=s.recorded, targets=list(s.targets or []),
                         errors=[TargetErrorOut.model_validate(e) for e in s.errors or []],
                         stats=dict(s.stats or {}), finding_count=s.finding_count)
                 for s in queries.history(session, row.fingerprint, limit)]
        return FindingHistory(fingerprint=row.fingerprint, status="fixed" if row.status == FIXED else "open",
                              first_seen=row.first_seen, last_seen=row.last_seen, first_scan_id=row.first_scan_id,
                              last_scan_id=row.last_scan_id, fixed_at=row.fixed_at, fixed_scan_id=row.fixed_scan_id,
                              scans=scans)


def _expiry(text: str | None, now: Any) -> Any:
    from cloudward.store import parse_expiry

    return parse_expiry(text, now) if text else None


@router.put("/{fingerprint}/suppression", response_model=SuppressionOut)
def suppress(body: SuppressIn, request: Request, fingerprint: str = Fingerprint,
             principal: Principal = Depends(ANALYST)) -> SuppressionOut:
    """Accept the risk of one finding (replaces an earlier suppression of it)."""
    db = context(request).db
    with db.read() as session:
        full = _resolve(session, fingerprint).fingerprint
    info = db.store.suppress(full, reason=body.reason, author=principal.name, expires=_expiry(body.expires, db.clock()))
    with db.write() as session:
        record(session, actor(request, principal), "finding.suppress", f"finding:{full}", db.clock(),
               reason=info.reason, expires=info.expires.isoformat() if info.expires else None)
    return SuppressionOut.model_validate(info.to_dict())


@router.delete("/{fingerprint}/suppression", status_code=204, response_class=Response)
def unsuppress(request: Request, fingerprint: str = Fingerprint, principal: Principal = Depends(ANALYST)) -> Response:
    db = context(request).db
    with db.write() as session:
        full = _resolve(session, fingerprint).fingerprint
        removed = session.execute(delete(SuppressionRow).where(SuppressionRow.fingerprint == full))
        if not getattr(removed, "rowcount", 0):
            raise NotFound(f"finding {full} is not suppressed")
        record(session, actor(request, principal), "finding.unsuppress", f"finding:{full}", db.clock())
    return Response(status_code=204)


@suppressions.get("", response_model=list[SuppressionOut])
def list_suppressions(request: Request, _: Principal = Depends(READ_ONLY),
                      include_expired: bool = False) -> list[SuppressionOut]:
    return [SuppressionOut.model_validate(s.to_dict())
            for s in context(request).db.store.list_suppressions(include_expired=include_expired)]


@suppressions.post("", response_model=SuppressionOut, status_code=201)
def suppress_rule(body: RuleSuppressIn, request: Request, principal: Principal = Depends(ANALYST)) -> SuppressionOut:
    """Suppress a rule (id or glob), optionally only on targets matching a glob."""
    db = context(request).db
    info = db.store.suppress(rule_id=body.rule_id, target_pattern=body.target_pattern or None, reason=body.reason,
                             author=principal.name, expires=_expiry(body.expires, db.clock()))
    with db.write() as session:
        record(session, actor(request, principal), "suppression.create", f"suppression:{info.id}", db.clock(),
               rule_id=info.rule_id, target_pattern=info.target_pattern, reason=info.reason)
    return SuppressionOut.model_validate(info.to_dict())


@suppressions.delete("/{suppression_id}", status_code=204, response_class=Response)
def delete_suppression(request: Request, suppression_id: int = Path(ge=1, le=2**62),
                       principal: Principal = Depends(ANALYST)) -> Response:
    db = context(request).db
    with db.write() as session:
        row = session.get(SuppressionRow, suppression_id)
        if row is None:
            raise NotFound(f"no suppression {suppression_id}")
        record(session, actor(request, principal), "suppression.delete", f"suppression:{row.id}", db.clock(),
               fingerprint=row.fingerprint, rule_id=row.rule_id, target_pattern=row.target_pattern)
        session.delete(row)
    return Response(status_code=204)
