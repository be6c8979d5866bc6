"""The tables of the findings store, as SQLAlchemy 2 declarative models.

The migrations in `migrations/versions/` must create exactly this schema; a test runs alembic's
autogenerate comparison against both SQLite and PostgreSQL to keep the two from drifting.

Why some choices:
- Timestamps go through `UTCDateTime`, so both backends hand back aware UTC datetimes (SQLite keeps
  no zone, PostgreSQL returns the session's zone) and SQLite stores one string format that sorts
  and compares correctly.
- JSON is plain `JSON`, not PostgreSQL's JSONB: nothing queries inside it, and `json` accepts the
  `\\u0000` escapes that hostile evidence can carry, where JSONB rejects them.
- `severity_rank` duplicates `severity` as an integer so `--severity high` is an indexed `>=`.
- The constraint naming convention gives every constraint the same name on every backend, which
  future ALTERs (batch mode on SQLite) depend on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

OPEN = "open"
FIXED = "fixed"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (naive input is taken to be UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite compares timestamps as text: one zone-less format keeps that ordering right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ScanRow(Base):
    """One recorded scan. `scope` hashes the sorted target list so "the previous scan of the same
    kind and scope" is one indexed lookup."""

    __tablename__ = "scans"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime())
    targets: Mapped[list[str]] = mapped_column(JSON)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    finding_count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_scans_kind_scope_started", "kind", "scope", "started"),
        Index("ix_scans_started", "started"),
    )


OPEN_WHERE = "status = 'open'"
# Target names are unbounded text: only short ones go into a btree (PostgreSQL's ~2.7 kB entry limit).
TARGET_INDEX_CHARS = 400
SHORT_TARGET_WHERE = f"status = 'open' AND length(target_name) <= {TARGET_INDEX_CHARS}"
LONG_TARGET_WHERE = f"status = 'open' AND length(target_name) > {TARGET_INDEX_CHARS}"


class FindingRow(Base):
    """The current state of one problem on one thing, keyed by the Finding's fingerprint."""

    __tablename__ = "findings"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(Integer, index=True)
    category: Mapped[str] = mapped_column(String(32), index=True)
    target_kind: Mapped[str] = mapped_column(String(32))
    target_name: Mapped[str] = mapped_column(Text)
    location: Mapped[dict[str, Any]] = mapped_column(JSON)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    remediation: Mapped[str] = mapped_column(Text)
    references: Mapped[list[str]] = mapped_column(JSON)
    attack: Mapped[list[str]] = mapped_column(JSON)
    compliance: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    first_scan_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("scans.id", ondelete="SET NULL"), nullable=True
    )
    last_scan_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("scans.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(8), index=True)
    fixed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fixed_scan_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("scans.id", ondelete="SET NULL"), nullable=True
    )

    __table_args__ = (
        CheckConstraint("status IN ('open', 'fixed')", name="status"),
        # The server's findings pages (server/findings_query.py): keyset order within a status.
        Index("ix_findings_status_severity_rank_last_seen", "status", "severity_rank", "last_seen", "fingerprint"),
        Index("ix_findings_status_category_severity_rank", "status", "category", "severity_rank", "last_seen",
              "fingerprint"),
        Index("ix_findings_status_last_seen", "status", "last_seen", "fingerprint"),
        # The overview's aggregates and the jobs page (migration 0004 says why each exists).
        Index("ix_findings_open_rule", "rule_id", "severity_rank", "category", "fingerprint",
              postgresql_where=text(OPEN_WHERE), sqlite_where=text(OPEN_WHERE)),
        Index("ix_findings_open_target", "target_kind", "target_name", "severity_rank", "rule_id", "fingerprint",
              postgresql_where=text(SHORT_TARGET_WHERE), sqlite_where=text(SHORT_TARGET_WHERE)),
        Index("ix_findings_open_long_target", "target_kind",
              postgresql_where=text(LONG_TARGET_WHERE), sqlite_where=text(LONG_TARGET_WHERE)),
        Index("ix_findings_first_seen", "first_seen", "rule_id", "fingerprint"),
        Index("ix_findings_fixed_at", "fixed_at", "rule_id", "fingerprint"),
        Index("ix_findings_first_scan_id", "first_scan_id"),
        Index("ix_findings_fixed_scan_id", "fixed_scan_id"),
    )


class ScanFindingRow(Base):
    """Which findings each scan saw: what makes a diff between two scans exact, not inferred."""

    __tablename__ = "scan_findings"

    scan_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True
    )
    fingerprint: Mapped[str] = mapped_column(
        String(64), ForeignKey("findings.fingerprint", ondelete="CASCADE"), primary_key=True, index=True
    )


class SuppressionRow(Base):
    """An accepted risk: one fingerprint, or a rule id (glob) on targets matching a glob.

    Expiry is checked at query time, so an expired suppression stops applying without any job.
    """

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    rule_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    target_pattern: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint("fingerprint IS NOT NULL OR rule_id IS NOT NULL", name="subject"),
    )


class FimBaselineRow(Base):
    """One file-integrity baseline of one root (`host fim baseline`): which paths it covers, when,
    and the SSH key fingerprints its authorized_keys files held. Re-baselining a (root, name)
    replaces its entries."""

    __tablename__ = "fim_baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    root: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    paths: Mapped[list[str]] = mapped_column(JSON)
    entry_count: Mapped[int] = mapped_column(Integer)
    authorized_keys: Mapped[list[str]] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("root", "name"),)


class FimEntryRow(Base):
    """One path of a baseline and its attributes (workload/fim.py: type, size, mode, owner, mtime,
    sha256, symlink target, inode flags, key fingerprints) as JSON: nothing queries inside them."""

    __tablename__ = "fim_entries"

    baseline_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("fim_baselines.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)


# --- the server (cloudward.server): accounts, audit, jobs, schedules, webhooks ------------------


class UserRow(Base):
    """A person or robot that uses the API. `password_hash` (scrypt) only for dashboard logins;
    API tokens are separate rows. Users are disabled, never deleted, so the audit log keeps names."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    updated: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint("role IN ('admin', 'analyst', 'read-only')", name="role"),)


class ApiTokenRow(Base):
    """An API token or a dashboard session: a public id plus the SHA-256 of the secret part."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (CheckConstraint("kind IN ('api', 'session')", name="kind"),)


class AuditRow(Base):
    """Who changed what, when, from where: one row per state change (and per login attempt)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    remote: Mapped[str] = mapped_column(String(64))


class ScheduleRow(Base):
    """A command run on a cron expression. `next_run` is claimed with a compare-and-set, so two
    servers sharing the database never both start the same run."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(Text)
    argv: Mapped[list[str]] = mapped_column(JSON)
    cron: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    next_run: Mapped[datetime] = mapped_column(UTCDateTime())
    last_run: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_schedules_enabled_next_run", "enabled", "next_run"),)


class JobRow(Base):
    """One run of an allow-listed cloudward command: queued, claimed by a runner, finished."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    command: Mapped[str] = mapped_column(Text)
    argv: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    submitted_by: Mapped[str] = mapped_column(String(200))
    schedule_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("schedules.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    scan_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    node: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"),
        Index("ix_jobs_status_created", "status", "created"),
    )


class WebhookRow(Base):
    """Where new findings at or above `min_severity` are POSTed. The URL (Slack's carries its own
    secret) and the signing secret are never returned by the API, only a masked form."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    min_severity: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    last_delivery: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (CheckConstraint("kind IN ('generic', 'slack')", name="kind"),)


class LoginFailureRow(Base):
    """One failed dashboard login, keyed by a hash of (address, name): shared by every server
    process on the store, so the limit holds across `--jobs N`, restarts and several servers."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)
