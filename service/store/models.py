"""The store's tables as typed SQLAlchemy 2 models: messages, their labels, pairwise judgements, training runs, keys.

Every timestamp is stored as UTC (naive in the column, for SQLite's sake) and read back timezone-aware.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from model.contract import RunStatus

# Constraint names are fixed so that later migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# A message with text has a score, interval and model version; one without text (unpublished) has none of them.
SCORED_IFF_PUBLISHED = (
    "(text IS NOT NULL AND score IS NOT NULL AND interval_low IS NOT NULL AND interval_high IS NOT NULL "
    "AND model_version IS NOT NULL) OR (text IS NULL AND score IS NULL AND interval_low IS NULL "
    "AND interval_high IS NULL AND model_version IS NULL)"
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on any database (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime; found naive {value.isoformat()}")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class Message(Base):
    """A stored message, with the score the active model gave it when it was stored, and that model's version.

    A message *known but unpublished* (an agency named it but printed no text) has no text and so no score: its
    ``text``, ``score``, ``interval_*`` and ``model_version`` are all null. It still counts for a relation's cadence.
    """

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_relation", "sender", "recipient", "date"),
        CheckConstraint(SCORED_IFF_PUBLISHED, name="scored_iff_published"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(String(300))
    recipient: Mapped[str | None] = mapped_column(String(300))
    date: Mapped[dt.date | None]
    occasion: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None]
    interval_low: Mapped[float | None]
    interval_high: Mapped[float | None]
    model_version: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    labels: Mapped[list[Label]] = relationship(
        back_populates="message", lazy="selectin", order_by="Label.id", passive_deletes=True
    )

    @property
    def published(self) -> bool:
        """False for a message known but unpublished (no text, no score)."""
        return self.text is not None

    @property
    def label_mean(self) -> float | None:
        """The mean of the annotators' scores; the training target of a labelled message."""
        return sum(label.score for label in self.labels) / len(self.labels) if self.labels else None


class Label(Base):
    """One annotator's score for one message; an annotator who labels again replaces their earlier score."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("message_id", "annotator"),
        CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    annotator: Mapped[str] = mapped_column(String(100))
    score: Mapped[float]
    labelled_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="labels")


class Pair(Base):
    """A judgement that ``warmer`` is more effusive than ``cooler``."""

    __tablename__ = "pairs"
    __table_args__ = (
        UniqueConstraint("warmer_id", "cooler_id", "annotator"),
        CheckConstraint("warmer_id <> cooler_id", name="distinct_messages"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    warmer_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    cooler_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    annotator: Mapped[str] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """A retraining run: its snapshot, its progress while it runs, and its outcome."""

    __tablename__ = "training_runs"
    __table_args__ = (
        # At most one running run, enforced by the database itself (a partial unique index).
        Index(
            "uq_training_runs_one_running",
            "status",
            unique=True,
            sqlite_where=text(f"status = '{RunStatus.RUNNING}'"),
            postgresql_where=text(f"status = '{RunStatus.RUNNING}'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # a model.contract.RunStatus
    requested_by: Mapped[str | None] = mapped_column(String(64))  # the API key id
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    previous_version: Mapped[str | None] = mapped_column(String(100))  # serving when the run started
    snapshot_path: Mapped[str | None] = mapped_column(String(500))
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    snapshot_counts: Mapped[dict[str, Any] | None]  # {"messages", "stored_labelled", "pairs", "stored_pairs", ...}
    pid: Mapped[int | None]
    # The lease: the replica that runs it (``hostname:pid``) and when it last said so; see service.jobs.
    replica: Mapped[str | None] = mapped_column(String(300))
    heartbeat_at: Mapped[dt.datetime | None]
    progress: Mapped[dict[str, Any] | None]  # the trainer's progress file, last read
    candidate_version: Mapped[str | None] = mapped_column(String(100))
    reasons: Mapped[list[str] | None]  # why the gate rejected the candidate
    metrics: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)


class ApiKey(Base):
    """An API key: its id is public (the middle of ``dpt_<id>_<secret>``), its secret is stored only as a hash."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
