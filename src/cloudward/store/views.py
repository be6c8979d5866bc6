"""What the store hands back: plain frozen dataclasses around core models, no SQL in sight.

Findings come back as core `Finding`s (first_seen / last_seen filled, `detected_at` = last_seen)
so the report writers render them unchanged; the store's own state (open/fixed, suppression) sits
beside the Finding rather than inside it, and is added to the JSON as extra keys per finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cloudward.core.finding import Finding
from cloudward.core.scan import ScanResult, ScanStatus, TargetError
from cloudward.core.severity import Severity

StatusFilter = Literal["open", "fixed", "all"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class SuppressionInfo:
    id: int
    reason: str
    author: str
    created: datetime
    expires: datetime | None
    fingerprint: str | None = None
    rule_id: str | None = None
    target_pattern: str | None = None

    @property
    def subject(self) -> str:
        """What is suppressed, for people: a fingerprint, or `rule R [on GLOB]`."""
        if self.fingerprint:
            return self.fingerprint
        return f"rule {self.rule_id}" + (f" on {self.target_pattern}" if self.target_pattern else "")

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "rule_id": self.rule_id,
            "target_pattern": self.target_pattern,
            "reason": self.reason,
            "author": self.author,
            "created": _iso(self.created),
            "expires": _iso(self.expires),
        }


@dataclass(frozen=True)
class StoredFinding:
    finding: Finding
    status: Literal["open", "fixed"]
    first_scan_id: str | None
    last_scan_id: str | None
    fixed_at: datetime | None = None
    fixed_scan_id: str | None = None
    suppression: SuppressionInfo | None = None

    @property
    def fingerprint(self) -> str:
        return self.finding.fingerprint

    @property
    def suppressed(self) -> bool:
        return self.suppression is not None

    def to_contract(self) -> dict[str, Any]:
        """The finding's `cloudward/v1` object plus the store's keys (additive, never renamed)."""
        data = self.finding.to_contract()
        data.update(
            status=self.status,
            first_scan_id=self.first_scan_id,
            last_scan_id=self.last_scan_id,
            fixed_at=_iso(self.fixed_at),
            fixed_scan_id=self.fixed_scan_id,
            suppressed=self.suppressed,
            suppression=self.suppression.to_dict() if self.suppression else None,
        )
        return data


@dataclass(frozen=True)
class ScanInfo:
    id: str
    kind: str
    status: ScanStatus
    started: datetime
    finished: datetime | None
    recorded: datetime
    targets: list[str]
    errors: list[TargetError]
    stats: dict[str, Any]
    finding_count: int

    def to_result(self, findings: Sequence[Finding] = ()) -> ScanResult:
        """This scan as a ScanResult (for the report writers and the JSON contract)."""
        return ScanResult(
            id=self.id, kind=self.kind, status=self.status, started=self.started,
            finished=self.finished, targets=list(self.targets), errors=list(self.errors),
            stats=dict(self.stats), findings=list(findings),
        )

    def to_dict(self) -> dict[str, Any]:
        scan: dict[str, Any] = self.to_result().contract("")["scan"]
        scan.update(recorded=_iso(self.recorded), finding_count=self.finding_count)
        return scan


@dataclass(frozen=True)
class FindingQuery:
    """Filters for `Store.list_findings`; None means "any". `rule_id` may use * and ? globs,
    `target` is a case-insensitive substring of the target name."""

    min_severity: Severity | None = None
    category: str | None = None
    rule_id: str | None = None
    status: StatusFilter = "open"
    target: str | None = None
    scan_id: str | None = None
    include_suppressed: bool = False


@dataclass(frozen=True)
class RecordSummary:
    """What `record_scan` changed: new / reopened / seen again / marked fixed."""

    scan_id: str
    total: int
    new: int
    reopened: int
    seen_again: int
    fixed: int


@dataclass(frozen=True)
class ScanDiff:
    """Two scans compared through what each saw (scan_findings), so the answer is exact.

    `fixed`: seen by `before`, not by `after`, and inside what `after` looked at. `not_rechecked`:
    seen by `before` but outside `after`'s scope, on a target `after` failed on, or `after` did
    not complete, so absence proves nothing.
    """

    before: ScanInfo
    after: ScanInfo
    new: list[StoredFinding] = field(default_factory=list)
    fixed: list[StoredFinding] = field(default_factory=list)
    still_open: list[StoredFinding] = field(default_factory=list)
    not_rechecked: list[StoredFinding] = field(default_factory=list)

    def to_contract(self, tool_version: str) -> dict[str, Any]:
        return {
            "schema": "cloudward/v1",
            "tool": {"name": "cloudward", "version": tool_version},
            "diff": {"from": self.before.to_dict(), "to": self.after.to_dict()},
            "new": [f.to_contract() for f in self.new],
            "fixed": [f.to_contract() for f in self.fixed],
            "still_open": [f.to_contract() for f in self.still_open],
            "not_rechecked": [f.to_contract() for f in self.not_rechecked],
        }


@dataclass(frozen=True)
class FimBaselineInfo:
    """A file-integrity baseline's header (`host fim baseline`); `entries` only when asked for."""

    id: int
    name: str
    root: str
    created: datetime
    paths: list[str]
    entry_count: int
    authorized_keys: list[str]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "root": self.root, "created": _iso(self.created),
                "paths": list(self.paths), "entry_count": self.entry_count,
                "authorized_keys": list(self.authorized_keys)}
