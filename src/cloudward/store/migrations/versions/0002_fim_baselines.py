"""File integrity monitoring baselines: fim_baselines (one per root and name) and fim_entries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Types are spelled out, not imported from the models (see 0001).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fim_baselines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paths", sa.JSON(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("authorized_keys", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fim_baselines")),
        sa.UniqueConstraint("root", "name", name=op.f("uq_fim_baselines_root_name")),
    )
    op.create_table(
        "fim_entries",
        sa.Column("baseline_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["baseline_id"], ["fim_baselines.id"],
                                name=op.f("fk_fim_entries_baseline_id_fim_baselines"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("baseline_id", "path", name=op.f("pk_fim_entries")),
    )


def downgrade() -> None:
    op.drop_table("fim_entries")
    op.drop_table("fim_baselines")
