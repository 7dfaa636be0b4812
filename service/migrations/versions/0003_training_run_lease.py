"""The training run's lease: which replica runs it and when it last renewed the lease.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("training_runs", sa.Column("replica", sa.String(length=300), nullable=True))
    op.add_column("training_runs", sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # SQLite 3.35 and later drop a column in place, so the partial unique index on status stays as it is.
    op.drop_column("training_runs", "heartbeat_at")
    op.drop_column("training_runs", "replica")
