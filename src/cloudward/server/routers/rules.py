"""The rules catalogue: every capability's built-in rules, as `cloudward rules list` shows them."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from cloudward.server.accounts import Principal
from cloudward.server.auth import READ_ONLY
from cloudward.server.errors import NotFound
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import RuleDetail, RuleOut

router = APIRouter(prefix=f"{PREFIX}/rules", tags=["rules"], responses=STANDARD)


@cache
def catalogue() -> Any:
    """Loaded once per process (about a second): the same loader the CLI uses, so a capability
    that adds rules shows up here without a change to the server."""
    from cloudward.cli.common import load_all_rules

    return load_all_rules()


def _out(rule: Any) -> RuleOut:
    return RuleOut(id=rule.id, title=rule.title, severity=rule.severity.value, category=rule.category.value,
                   engine=rule.engine_name, tags=list(rule.tags), attack=list(rule.attack))


@router.get("", response_model=list[RuleOut])
def list_rules(_: Principal = Depends(READ_ONLY),
               engine: str | None = Query(None, max_length=32),
               tag: str | None = Query(None, max_length=64),
               category: str | None = Query(None, max_length=32),
               severity: Literal["info", "low", "medium", "high", "critical"] | None = None,
               q: str | None = Query(None, max_length=200, description="Substring of the id or title (any case)"),
               ) -> list[RuleOut]:
    out = []
    needle = (q or "").lower()
    for rule in catalogue():
        if (engine and rule.engine_name != engine) or (tag and tag not in rule.tags):
            continue
        if (category and rule.category.value != category) or (severity and rule.severity.value != severity):
            continue
        if needle and needle not in rule.id.lower() and needle not in rule.title.lower():
            continue
        out.append(_out(rule))
    return out


@router.get("/{rule_id}", response_model=RuleDetail)
def get_rule(rule_id: str = Path(min_length=1, max_length=200), _: Principal = Depends(READ_ONLY)) -> RuleDetail:
    rules = catalogue()
    if rule_id not in rules:
        raise NotFound(f"no rule {rule_id[:200]!r}")
    rule = rules.get(rule_id)
    return RuleDetail(**_out(rule).model_dump(), description=rule.description, remediation=rule.remediation,
                      references=list(rule.references), compliance=dict(rule.compliance), source=rule.source,
                      match=dict(rule.match))
