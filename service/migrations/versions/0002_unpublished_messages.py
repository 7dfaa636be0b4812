"""Messages known but unpublished: text, score, interval and model version may be null, together or not at all.

Every stored message has all five, so the check holds for existing rows; nothing is rewritten but the column
constraints (SQLite copies the table in batch mode, rows and ids unchanged). Downgrading refuses while an unpublished
message is stored, rather than deleting it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCORED_COLUMNS = (
    ("text", sa.Text()),
    ("score", sa.Double()),
    ("interval_low", sa.Double()),
    ("interval_high", sa.Double()),
    ("model_version", sa.String(length=100)),
)
SCORED_IFF_PUBLISHED = (
    "(text IS NOT NULL AND score IS NOT NULL AND interval_low IS NOT NULL AND interval_high IS NOT NULL "
    "AND model_version IS NOT NULL) OR (text IS NULL AND score IS NULL AND interval_low IS NULL "
    "AND interval_high IS NULL AND model_version IS NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for name, type_ in SCORED_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=True)
        batch.create_check_constraint(op.f("ck_messages_scored_iff_published"), SCORED_IFF_PUBLISHED)


def downgrade() -> None:
    unpublished = op.get_bind().execute(sa.text("SELECT count(*) FROM messages WHERE text IS NULL")).scalar_one()
    if unpublished:
        raise RuntimeError(
            f"cannot downgrade below 0002: {unpublished} unpublished messages (no text) are stored, and the older "
            "schema has no place for them; delete them first if that is really meant"
        )
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(op.f("ck_messages_scored_iff_published"), type_="check")
        for name, type_ in SCORED_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=False)
