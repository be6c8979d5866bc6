"""The API's request and response bodies: what /openapi.json documents and what every response
is validated against. Nothing here ever carries a stored secret: tokens appear once, at creation
(`TokenCreated.value`), webhook URLs only masked."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RoleName = Literal["admin", "analyst", "read-only"]
SeverityName = Literal["info", "low", "medium", "high", "critical"]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    detail: Any


class HealthOut(Out):
    status: Literal["ok", "unavailable"]
    version: str


# --- auth, users, tokens ---------------------------------------------------------------------------


class LoginIn(In):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    next: str | None = Field(default=None, max_length=2000, description="Relative URL to redirect a form post to")


class LoginOut(Out):
    name: str
    role: RoleName
    csrf_token: str = Field(description="Send as X-CSRF-Token with state-changing requests made with the cookie")
    expires: datetime


class MeOut(Out):
    name: str
    role: RoleName
    via: Literal["token", "session"]


class UserOut(Out):
    name: str
    role: RoleName
    disabled: bool
    has_password: bool
    created: datetime


class UserIn(In):
    name: str = Field(min_length=1, max_length=64)
    role: RoleName
    password: str | None = Field(default=None, min_length=10, max_length=1024)


class UserUpdate(In):
    role: RoleName | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=1024)


class TokenOut(Out):
    id: str
    user: str
    name: str
    created: datetime
    expires: datetime | None
    last_used: datetime | None
    revoked: datetime | None


class TokenIn(In):
    name: str = Field(default="", max_length=200)
    user: str | None = Field(default=None, max_length=64, description="Admins only: make the token for this user")
    expires_days: int | None = Field(default=None, ge=1, le=3650)


class TokenCreated(Out):
    token: TokenOut
    value: str = Field(description="The token itself: shown this once, stored only as a hash")


class AuditOut(Out):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    remote: str


# --- scans and findings ----------------------------------------------------------------------------


class TargetRef(Out):
    kind: str
    name: str


class TargetErrorOut(Out):
    target: str
    message: str
    stage: str = ""


class ScanOut(Out):
    id: str
    kind: str
    status: str
    started: datetime
    finished: datetime | None
    recorded: datetime | None = None
    targets: list[str]
    errors: list[TargetErrorOut]
    stats: dict[str, Any]
    finding_count: int | None = None


class SuppressionOut(Out):
    id: int
    fingerprint: str | None
    rule_id: str | None
    target_pattern: str | None
    reason: str
    author: str
    created: datetime
    expires: datetime | None


class FindingOut(Out):
    fingerprint: str
    rule_id: str
    title: str
    severity: SeverityName
    category: str
    target: TargetRef
    location: dict[str, Any]
    evidence: dict[str, Any]
    description: str
    remediation: str
    references: list[str]
    attack: list[str]
    compliance: dict[str, list[str]]
    tags: list[str]
    first_seen: datetime | None
    last_seen: datetime | None
    status: Literal["open", "fixed"]
    first_scan_id: str | None
    last_scan_id: str | None
    fixed_at: datetime | None
    fixed_scan_id: str | None
    suppressed: bool
    suppression: SuppressionOut | None


class FindingPage(Out):
    items: list[FindingOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class FindingHistory(Out):
    fingerprint: str
    status: Literal["open", "fixed"]
    first_seen: datetime
    last_seen: datetime
    first_scan_id: str | None
    last_scan_id: str | None
    fixed_at: datetime | None
    fixed_scan_id: str | None
    scans: list[ScanOut]


class SuppressIn(In):
    reason: str = Field(min_length=1, max_length=2000)
    expires: str | None = Field(default=None, max_length=64,
                                description="ISO date/datetime, or a duration from now: 30d, 12h, 2w")


class RuleSuppressIn(SuppressIn):
    rule_id: str = Field(min_length=1, max_length=200, description="A rule id or glob (redis.*)")
    target_pattern: str | None = Field(default=None, max_length=1000, description="Only on targets matching this glob")


class DiffOut(Out):
    before: ScanOut
    after: ScanOut
    new: list[FindingOut]
    fixed: list[FindingOut]
    still_open: list[FindingOut]
    not_rechecked: list[FindingOut]


class RuleOut(Out):
    id: str
    title: str
    severity: SeverityName
    category: str
    engine: str
    tags: list[str]
    attack: list[str]


class RuleDetail(RuleOut):
    description: str
    remediation: str
    references: list[str]
    compliance: dict[str, list[str]]
    source: str
    match: dict[str, Any]


class TargetOut(Out):
    kind: str
    name: str
    total: int
    worst: SeverityName
    by_severity: dict[str, int]
    first_seen: datetime | None
    last_seen: datetime | None


# --- jobs, schedules, webhooks ---------------------------------------------------------------------


class JobIn(In):
    command: str = Field(min_length=1, max_length=4096,
                         description="A cloudward scan command line, e.g. 'exposure scan 10.0.0.0/24 -p teamtnt'")


class JobOut(Out):
    id: str
    command: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    submitted_by: str
    schedule_id: int | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    exit_code: int | None
    scan_id: str | None
    cancel_requested: bool
    log_tail: str
    error: str


class ScheduleIn(In):
    command: str = Field(min_length=1, max_length=4096)
    cron: str = Field(min_length=1, max_length=200, description="Five-field cron expression, UTC")


class ScheduleUpdate(In):
    enabled: bool | None = None
    cron: str | None = Field(default=None, min_length=1, max_length=200)


class ScheduleOut(Out):
    id: int
    command: str
    cron: str
    enabled: bool
    created_by: str
    created: datetime
    next_run: datetime
    last_run: datetime | None
    last_job_id: str | None


class WebhookIn(In):
    name: str = Field(default="", max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    kind: Literal["generic", "slack"] = "generic"
    min_severity: SeverityName = "high"
    secret: str | None = Field(default=None, min_length=16, max_length=500,
                               description="Signs generic payloads (X-Cloudward-Signature); never shown again")
    allow_http: bool = False


class WebhookOut(Out):
    id: int
    name: str
    kind: Literal["generic", "slack"]
    url: str = Field(description="Masked: scheme, host and port only")
    signed: bool
    min_severity: SeverityName
    enabled: bool
    created_by: str
    created: datetime
    last_delivery: datetime | None
    last_status: str
