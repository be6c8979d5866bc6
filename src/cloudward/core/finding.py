"""The one Finding model every capability produces and every store/report consumes.

A finding's fingerprint identifies "the same problem on the same thing" across re-scans: it hashes
the rule id, the target identity and a caller-chosen stable key (never a line number, never a raw
secret), so the store can tell new from fixed from still open.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudward.core.severity import Category, Severity


def utcnow() -> datetime:
    return datetime.now(UTC)


class Target(BaseModel):
    """What was scanned: `kind` is service, path, image, object, resource, process, flow or request."""

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class Finding(BaseModel):
    model_config = ConfigDict(use_enum_values=False)

    rule_id: str
    title: str
    severity: Severity
    category: Category
    target: Target
    location: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    remediation: str = ""
    references: list[str] = Field(default_factory=list)
    attack: list[str] = Field(default_factory=list)
    compliance: dict[str, list[str]] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    # The part of the identity that is neither rule nor target (e.g. a secret's HMAC, a package name).
    key: str = ""
    fingerprint: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    detected_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _fill_fingerprint(self) -> Finding:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.rule_id, self.target, self.key)
        return self

    def retargeted(self, target: Target, key: str) -> Finding:
        """A copy judged against `target` with identity `key`: content scanners name findings after
        the blob they read, while an image or a bucket object is the thing a user tracks."""
        new_fingerprint = fingerprint(self.rule_id, target, key)
        return self.model_copy(update={"target": target, "key": key, "fingerprint": new_fingerprint})

    def to_contract(self) -> dict[str, Any]:
        """The `cloudward/v1` JSON shape of this finding (stable: scripts parse it)."""
        data = self.model_dump(mode="json", exclude={"key"})
        return data


def fingerprint(rule_id: str, target: Target, key: str = "") -> str:
    digest = hashlib.sha256("\x1f".join((rule_id, target.kind, target.name, key)).encode()).hexdigest()
    return digest[:32]
