"""The rules catalogue: every built-in rule, searchable, with the number of open findings it has."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Query, Request
from fastapi.responses import HTMLResponse

from cloudward.core.severity import Category
from cloudward.server.accounts import Principal
from cloudward.server.auth import READ_ONLY, context
from cloudward.server.dashboard import aggregates, chain
from cloudward.server.dashboard.render import SEVERITIES, render
from cloudward.server.dashboard.routing import new_router
from cloudward.server.errors import NotFound

router = new_router()
# The engine a rule runs on names the capability that owns it.
CAPABILITIES = {"exposure": "network exposure", "host": "hosts", "image": "container images",
                "secrets": "secrets", "content": "file content (malware)", "aws": "cloud accounts",
                "iac": "infrastructure as code", "appsec": "applications"}


def _catalogue() -> Any:
    from cloudward.server.routers.rules import catalogue

    return catalogue()


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, principal: Principal = Depends(READ_ONLY),
               q: str = Query("", max_length=200), engine: str = Query("", max_length=32),
               severity: str = Query("", max_length=16), category: str = Query("", max_length=32),
               with_findings: bool = False) -> HTMLResponse:
    db = context(request).db
    open_counts = aggregates.open_counts_by_rule(db, db.clock())
    rules = list(_catalogue())
    engines = sorted({r.engine_name for r in rules})
    needle = q.strip().lower()
    shown = [r for r in rules
             if (not engine or r.engine_name == engine) and (not severity or r.severity.value == severity)
             and (not category or r.category.value == category)
             and (not needle or needle in r.id.lower() or needle in r.title.lower()
                  or any(needle == a.lower() for a in r.attack))
             and (not with_findings or open_counts.get(r.id))]
    shown.sort(key=lambda r: (SEVERITIES.index(r.severity.value), r.id))
    return render(request, "rules.html", principal=principal, section="rules", rules=shown, total=len(rules),
                  engines=engines, capabilities=CAPABILITIES, categories=[c.value for c in Category],
                  q=q, engine=engine, severity=severity, category=category, with_findings=with_findings,
                  open_counts=open_counts)


@router.get("/rules/{rule_id}", response_class=HTMLResponse)
def rule_page(request: Request, rule_id: str = Path(min_length=1, max_length=200),
              principal: Principal = Depends(READ_ONLY)) -> HTMLResponse:
    rules = _catalogue()
    if rule_id not in rules:
        raise NotFound(f"no rule {rule_id[:200]!r} in the catalogue")
    rule = rules.get(rule_id)
    db = context(request).db
    with db.read() as session:
        count = aggregates.open_count(session, db.clock(), rule_id)
    return render(request, "rule.html", principal=principal, section="rules", rule=rule, open_count=count,
                  capabilities=CAPABILITIES, on_links=[lk for lk in chain.links() if lk.matches(rule_id)])
