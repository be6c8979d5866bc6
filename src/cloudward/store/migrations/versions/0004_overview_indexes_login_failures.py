"""Indexes that let the dashboard's overview and jobs page read indexes instead of the findings
table, and the table the login limiter shares between server processes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

- `ix_findings_open_rule` (partial, open findings): the overview's count by rule, severity and
  category is an index-only scan, with the fingerprint at hand for single-finding suppressions.
- `ix_findings_open_target` (partial, open findings whose target name has at most 400
  characters): the same for the count by target. target_name is unbounded text and a btree entry
  must stay under PostgreSQL's ~2.7 kB, so longer names are left out of the index (a recording
  could otherwise fail); the overview counts those few rows apart, found through
  `ix_findings_open_long_target` (usually empty).
- `ix_findings_first_seen`, `ix_findings_fixed_at` (with rule id and fingerprint, which the
  suppressions test): the 30-day new and fixed counts read only their window, from the index.
- `ix_findings_first_scan_id`, `ix_findings_fixed_scan_id`: the jobs page counts, per scan, the
  findings it saw first and the ones it fixed.
- `login_failures`: one row per failed dashboard login, keyed by a hash of (address, name), so every
  process behind one store (`--jobs N`, restarts, several servers) counts the same attempts.

Types are spelled out, not imported from the models (see 0001).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status = 'open'"
SHORT_TARGET = "status = 'open' AND length(target_name) <= 400"
LONG_TARGET = "status = 'open' AND length(target_name) > 400"


def upgrade() -> None:
    op.create_index("ix_findings_open_rule", "findings", ["rule_id", "severity_rank", "category", "fingerprint"],
                    postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    op.create_index("ix_findings_open_target", "findings",
                    ["target_kind", "target_name", "severity_rank", "rule_id", "fingerprint"],
                    postgresql_where=sa.text(SHORT_TARGET), sqlite_where=sa.text(SHORT_TARGET))
    op.create_index("ix_findings_open_long_target", "findings", ["target_kind"],
                    postgresql_where=sa.text(LONG_TARGET), sqlite_where=sa.text(LONG_TARGET))
    op.create_index("ix_findings_first_seen", "findings", ["first_seen", "rule_id", "fingerprint"])
    op.create_index("ix_findings_fixed_at", "findings", ["fixed_at", "rule_id", "fingerprint"])
    op.create_index("ix_findings_first_scan_id", "findings", ["first_scan_id"])
    op.create_index("ix_findings_fixed_scan_id", "findings", ["fixed_scan_id"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_key_at", "login_failures", ["key", "at"])
    op.create_index(op.f("ix_login_failures_at"), "login_failures", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failures_at"), table_name="login_failures")
    op.drop_index("ix_login_failures_key_at", table_name="login_failures")
    op.drop_table("login_failures")
    for name in ("ix_findings_fixed_scan_id", "ix_findings_first_scan_id", "ix_findings_fixed_at",
                 "ix_findings_first_seen", "ix_findings_open_long_target", "ix_findings_open_target",
                 "ix_findings_open_rule"):
        op.drop_index(name, table_name="findings")
