"""The findings store: scans and findings in SQLite (default) or PostgreSQL, behind a small API.

    from cloudward.store import open_store
    with open_store(settings) as store:
        summary = store.record_scan(result)
        for item in store.list_findings(FindingQuery(min_severity=Severity.HIGH)):
            print(item.finding.fingerprint, item.status)

Opening migrates the schema to head (alembic, run in-process). Names are resolved on first use
so that importing this package costs nothing until a store is actually opened: SQLAlchemy and
alembic stay out of `cloudward --version` and of commands run with `--no-store`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudward.store.expiry import parse_expiry
    from cloudward.store.repository import Store, open_store
    from cloudward.store.views import (
        FimBaselineInfo,
        FindingQuery,
        RecordSummary,
        ScanDiff,
        ScanInfo,
        StoredFinding,
        SuppressionInfo,
    )

__all__ = [
    "FimBaselineInfo",
    "FindingQuery",
    "RecordSummary",
    "ScanDiff",
    "ScanInfo",
    "Store",
    "StoredFinding",
    "SuppressionInfo",
    "open_store",
    "parse_expiry",
]

_WHERE = {
    "open_store": "repository",
    "Store": "repository",
    "parse_expiry": "expiry",
    "FimBaselineInfo": "views",
    "FindingQuery": "views",
    "RecordSummary": "views",
    "ScanDiff": "views",
    "ScanInfo": "views",
    "StoredFinding": "views",
    "SuppressionInfo": "views",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cloudward.store' has no attribute {name!r}")
    value = getattr(import_module(f"cloudward.store.{module}"), name)
    globals()[name] = value
    return value
