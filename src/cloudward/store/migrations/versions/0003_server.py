"""The server's tables (users, api_tokens, audit_log, schedules, jobs, webhooks) and the indexes
behind its findings pages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Types are spelled out, not imported from the models (see 0001). The two findings indexes serve
keyset pagination: `status, severity_rank, last_seen, fingerprint` is the default page order,
`status, category, severity_rank, last_seen, fingerprint` the same order within a category (the
cursor's row comparison stays an index condition on a deep page), and `status, last_seen,
fingerprint` the newest-first order.
target_name is deliberately not indexed: it is unbounded text, and a btree entry over PostgreSQL's
~2.7 kB limit would make recording such a finding fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_index("ix_findings_status_severity_rank_last_seen", "findings",
                    ["status", "severity_rank", "last_seen", "fingerprint"])
    op.create_index("ix_findings_status_category_severity_rank", "findings",
                    ["status", "category", "severity_rank", "last_seen", "fingerprint"])
    op.create_index("ix_findings_status_last_seen", "findings", ["status", "last_seen", "fingerprint"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _ts("created"),
        _ts("updated"),
        sa.CheckConstraint("role IN ('admin', 'analyst', 'read-only')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        _ts("created"),
        _ts("expires", nullable=True),
        _ts("last_used", nullable=True),
        _ts("revoked", nullable=True),
        sa.CheckConstraint("kind IN ('api', 'session')", name=op.f("ck_api_tokens_kind")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _ts("at"),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("remote", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created"),
        _ts("next_run"),
        _ts("last_run", nullable=True),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_enabled_next_run", "schedules", ["enabled", "next_run"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        _ts("created"),
        _ts("started", nullable=True),
        _ts("finished", nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("scan_id", sa.String(64), nullable=True),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                           name=op.f("ck_jobs_status")),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"], name=op.f("fk_jobs_schedule_id_schedules"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_schedule_id"), "jobs", ["schedule_id"])
    op.create_index(op.f("ix_jobs_created"), "jobs", ["created"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created"])
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created"),
        _ts("last_delivery", nullable=True),
        sa.Column("last_status", sa.String(200), nullable=False),
        sa.CheckConstraint("kind IN ('generic', 'slack')", name=op.f("ck_webhooks_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
    op.drop_table("jobs")
    op.drop_table("schedules")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_index("ix_findings_status_last_seen", table_name="findings")
    op.drop_index("ix_findings_status_category_severity_rank", table_name="findings")
    op.drop_index("ix_findings_status_severity_rank_last_seen", table_name="findings")
