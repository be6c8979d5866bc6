"""Initial schema: scans, findings, scan_findings, suppressions.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Migrations spell their types out instead of importing the models: a revision is a frozen record of
the schema at that point, and must keep working after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _scan_fk(column: str, table: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["scans.id"], name=op.f(f"fk_{table}_{column}_scans"),
                                   ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "scans",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("started"),
        _ts("finished", nullable=True),
        _ts("recorded"),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("finding_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scans")),
    )
    op.create_index("ix_scans_kind_scope_started", "scans", ["kind", "scope", "started"])
    op.create_index("ix_scans_started", "scans", ["started"])

    op.create_table(
        "findings",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("severity_rank", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("target_kind", sa.String(32), nullable=False),
        sa.Column("target_name", sa.Text(), nullable=False),
        sa.Column("location", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("remediation", sa.Text(), nullable=False),
        sa.Column("references", sa.JSON(), nullable=False),
        sa.Column("attack", sa.JSON(), nullable=False),
        sa.Column("compliance", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.Column("first_scan_id", sa.String(64), nullable=True),
        sa.Column("last_scan_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        _ts("fixed_at", nullable=True),
        sa.Column("fixed_scan_id", sa.String(64), nullable=True),
        sa.CheckConstraint("status IN ('open', 'fixed')", name=op.f("ck_findings_status")),
        _scan_fk("first_scan_id", "findings", "SET NULL"),
        _scan_fk("last_scan_id", "findings", "SET NULL"),
        _scan_fk("fixed_scan_id", "findings", "SET NULL"),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_findings")),
    )
    for column in ("rule_id", "severity_rank", "category", "last_scan_id", "status"):
        op.create_index(op.f(f"ix_findings_{column}"), "findings", [column])

    op.create_table(
        "scan_findings",
        sa.Column("scan_id", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        _scan_fk("scan_id", "scan_findings", "CASCADE"),
        sa.ForeignKeyConstraint(["fingerprint"], ["findings.fingerprint"],
                                name=op.f("fk_scan_findings_fingerprint_findings"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("scan_id", "fingerprint", name=op.f("pk_scan_findings")),
    )
    op.create_index(op.f("ix_scan_findings_fingerprint"), "scan_findings", ["fingerprint"])

    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("target_pattern", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        _ts("created"),
        _ts("expires", nullable=True),
        sa.CheckConstraint("fingerprint IS NOT NULL OR rule_id IS NOT NULL",
                           name=op.f("ck_suppressions_subject")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
    )
    op.create_index(op.f("ix_suppressions_fingerprint"), "suppressions", ["fingerprint"])
    op.create_index(op.f("ix_suppressions_rule_id"), "suppressions", ["rule_id"])


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_table("scan_findings")
    op.drop_table("findings")
    op.drop_table("scans")
