"""The findings table's filters, read from the query string of a plain GET form.

A form sends empty fields and may be edited by hand, so nothing here raises: a value that is not
valid is dropped and named in `errors`, and the page shows the rest of the filter's results with
that message above them. The result becomes the API's own `FindingFilter` plus the dashboard's
chain filter (a link of the threat map, or a whole stage).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.sql import ColumnElement

from cloudward.core.severity import Category, Severity
from cloudward.server.dashboard import chain
from cloudward.server.findings import ATTACK_ID, MAX_CURSOR, SORTS, FindingFilter

LIMITS = (25, 50, 100, 200)
STATUSES = ("open", "fixed", "all")
SUPPRESSED = ("exclude", "include", "only")
SEVERITY_VALUES = tuple(s.value for s in Severity)
CATEGORY_VALUES = tuple(c.value for c in Category)
MAX_TEXT = 200
_NUMBER = re.compile(r"^[0-9]{1,6}\Z")  # str.isdigit() also takes '²' and other digits int() refuses


class Params:
    """The parts of a query string this module reads (Starlette's QueryParams, or a dict in tests)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def get(self, name: str) -> str:
        value = self.source.get(name)
        return str(value).strip() if value is not None else ""

    def all(self, name: str) -> list[str]:
        if hasattr(self.source, "getlist"):
            return [str(v) for v in self.source.getlist(name)]
        value = self.source.get(name)
        return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)] if value else []


@dataclass
class Criteria:
    severity: list[str] = field(default_factory=list)
    category: str = ""
    target: str = ""
    rule: str = ""
    attack: str = ""
    status: str = "open"
    suppressed: str = "exclude"
    link: int | None = None
    stage: str = ""
    scan: str = ""
    sort: str = "severity"
    order: str = "desc"
    limit: int = 50
    cursor: str = ""
    backwards: bool = False  # the page before `cursor` (the pager's "previous page")
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, source: Mapping[str, Any] | Any) -> Criteria:
        params = Params(source)
        out = cls()
        for raw in params.all("severity"):
            for part in raw.split(","):
                value = part.strip().lower()
                if value in SEVERITY_VALUES and value not in out.severity:
                    out.severity.append(value)
                elif value:
                    out.errors.append(f"severity: {value[:40]!r} is not a severity")
        category = params.get("category").lower()
        if category in CATEGORY_VALUES:
            out.category = category
        elif category:
            out.errors.append(f"category: {category[:40]!r} is not a category")
        for name in ("target", "rule", "scan"):
            value = params.get(name)
            if len(value) > (64 if name == "scan" else MAX_TEXT):
                out.errors.append(f"{name}: too long")
            else:
                setattr(out, name, value)
        attack = params.get("attack").upper()
        if attack and not ATTACK_ID.match(attack):
            out.errors.append(f"ATT&CK: {attack[:20]!r} is not a technique id (T1190, T1059.004)")
        else:
            out.attack = attack
        out.status = out._choice(params, "status", STATUSES, "open")
        out.suppressed = out._choice(params, "suppressed", SUPPRESSED, "exclude")
        out.sort = out._choice(params, "sort", SORTS, "severity")
        out.order = out._choice(params, "order", ("desc", "asc"), "desc")
        link = params.get("link")
        if link:
            if _NUMBER.match(link) and int(link) < len(chain.links()):
                out.link = int(link)
            else:
                out.errors.append(f"link: {link[:20]!r} is not a link of the attack chain")
        stage = params.get("stage")
        if stage:
            if chain.by_slug(stage):
                out.stage = stage
            else:
                out.errors.append(f"stage: {stage[:40]!r} is not a stage of the attack chain")
        limit = params.get("limit")
        if limit:
            if _NUMBER.match(limit) and int(limit) in LIMITS:
                out.limit = int(limit)
            else:
                out.errors.append(f"limit: choose one of {', '.join(map(str, LIMITS))}")
        cursor = params.get("cursor")
        out.cursor = cursor if len(cursor) <= MAX_CURSOR else ""
        out.backwards = bool(out.cursor) and params.get("dir") == "prev"
        return out

    def _choice(self, params: Params, name: str, choices: tuple[str, ...], default: str) -> str:
        value = params.get(name).lower()
        if not value:
            return default
        if value in choices:
            return value
        self.errors.append(f"{name}: choose one of {', '.join(choices)}")
        return default

    def finding_filter(self) -> FindingFilter:
        return FindingFilter(
            severity=[Severity(s) for s in self.severity], category=[Category(self.category)] if self.category else [],
            rule=self.rule or None, target=self.target or None, attack=self.attack or None,
            status=self.status,  # type: ignore[arg-type]
            suppressed=self.suppressed,  # type: ignore[arg-type]
            scan_id=self.scan or None)

    def chain_globs(self) -> list[tuple[str, ...]]:
        """The chain filter as glob groups: a finding must match one glob of every group."""
        out = []
        if self.link is not None:
            out.append(chain.globs_of(link_index=self.link))
        if self.stage:
            out.append(chain.globs_of(stage=chain.by_slug(self.stage)))
        return out

    def chain_clauses(self, dialect: str) -> list[ColumnElement[bool]]:
        return [chain.clause(globs, dialect) for globs in self.chain_globs()]

    def params(self, **changes: Any) -> dict[str, Any]:
        """The filter as query parameters (defaults and the cursor left out), for links."""
        values: dict[str, Any] = {
            "severity": self.severity, "category": self.category, "target": self.target, "rule": self.rule,
            "attack": self.attack, "status": self.status if self.status != "open" else "",
            "suppressed": self.suppressed if self.suppressed != "exclude" else "",
            "link": "" if self.link is None else self.link, "stage": self.stage, "scan": self.scan,
            "sort": self.sort if self.sort != "severity" else "", "order": self.order if self.order != "desc" else "",
            "limit": self.limit if self.limit != 50 else ""}
        values.update(changes)
        return values

    @property
    def narrowed(self) -> bool:
        return any((self.severity, self.category, self.target, self.rule, self.attack, self.link is not None,
                    self.stage, self.scan, self.status != "open", self.suppressed != "exclude"))

    def sort_link(self, column: str) -> dict[str, Any]:
        """Parameters for a column header: sort by it, or flip the order when it already sorts."""
        order = ("asc" if self.order == "desc" else "desc") if self.sort == column else \
            ("asc" if column in ("rule_id", "target") else "desc")
        return self.params(sort=column if column != "severity" else "", order=order if order != "desc" else "")
