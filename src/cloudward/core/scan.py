"""A scan: what was asked, what was found, what failed.

Per-target failures are data (`ScanResult.errors`), never tracebacks, so one hostile target cannot
cost the findings of the others. Cancellation (Ctrl-C) stops new work, keeps every finding already
made and marks the scan `cancelled`, so the store stays consistent (the capabilities' scanners do
the running; this module is what they fill in).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from cloudward.core.finding import Finding, utcnow
from cloudward.core.severity import Severity


class ScanStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class TargetError(BaseModel):
    target: str
    message: str
    stage: str = ""


class ScanResult(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str
    started: datetime = Field(default_factory=utcnow)
    finished: datetime | None = None
    status: ScanStatus = ScanStatus.RUNNING
    targets: list[str] = Field(default_factory=list)
    errors: list[TargetError] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    # Facts worth reporting that are not findings (e.g. identified services), per capability.
    inventory: list[dict[str, Any]] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)

    def add_error(self, target: str, message: str, stage: str = "") -> None:
        self.errors.append(TargetError(target=target, message=message, stage=stage))

    def finish(self, status: ScanStatus = ScanStatus.COMPLETED) -> ScanResult:
        self.finished = utcnow()
        self.status = status
        return self

    def worst_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def contract(self, tool_version: str) -> dict[str, Any]:
        """The `cloudward/v1` JSON document (ARCHITECTURE.md); a public contract, keep it stable."""
        return {
            "schema": "cloudward/v1",
            "tool": {"name": "cloudward", "version": tool_version},
            "scan": {
                "id": self.id,
                "kind": self.kind,
                "status": self.status.value,
                "started": self.started.isoformat(),
                "finished": self.finished.isoformat() if self.finished else None,
                "targets": list(self.targets),
                "errors": [e.model_dump() for e in self.errors],
                "stats": self.stats,
            },
            "findings": [f.to_contract() for f in self.findings],
            # What was identified even where no rule fired (e.g. a Redis that requires AUTH).
            "inventory": list(self.inventory),
        }
