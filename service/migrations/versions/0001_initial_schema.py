"""Initial schema: messages, labels, pairs, training runs, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sender", sa.String(length=300), nullable=True),
        sa.Column("recipient", sa.String(length=300), nullable=True),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("occasion", sa.String(length=100), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("interval_low", sa.Double(), nullable=False),
        sa.Column("interval_high", sa.Double(), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index("ix_messages_relation", "messages", ["sender", "recipient", "date"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("previous_version", sa.String(length=100), nullable=True),
        sa.Column("snapshot_path", sa.String(length=500), nullable=True),
        sa.Column("snapshot_sha256", sa.String(length=64), nullable=True),
        sa.Column("snapshot_counts", sa.JSON(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("candidate_version", sa.String(length=100), nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    op.create_index(
        "uq_training_runs_one_running",
        "training_runs",
        ["status"],
        unique=True,
        sqlite_where=ONE_RUNNING,
        postgresql_where=ONE_RUNNING,
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("annotator", sa.String(length=100), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("labelled_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 100", name=op.f("ck_labels_score_range")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_labels_message_id_messages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.UniqueConstraint("message_id", "annotator", name=op.f("uq_labels_message_id")),
    )
    op.create_index(op.f("ix_labels_message_id"), "labels", ["message_id"])
    op.create_table(
        "pairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("warmer_id", sa.Integer(), nullable=False),
        sa.Column("cooler_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("annotator", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("warmer_id <> cooler_id", name=op.f("ck_pairs_distinct_messages")),
        sa.ForeignKeyConstraint(
            ["cooler_id"], ["messages.id"], name=op.f("fk_pairs_cooler_id_messages"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["warmer_id"], ["messages.id"], name=op.f("fk_pairs_warmer_id_messages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairs")),
        sa.UniqueConstraint("warmer_id", "cooler_id", "annotator", name=op.f("uq_pairs_warmer_id")),
    )
    op.create_index(op.f("ix_pairs_cooler_id"), "pairs", ["cooler_id"])
    op.create_index(op.f("ix_pairs_warmer_id"), "pairs", ["warmer_id"])


def downgrade() -> None:
    op.drop_table("pairs")
    op.drop_table("labels")
    op.drop_table("training_runs")
    op.drop_table("messages")
    op.drop_table("api_keys")
