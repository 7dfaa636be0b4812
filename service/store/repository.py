"""Queries and writes of the message store: messages, labels, pairs and a relation's timeline.

Functions that write commit before they return, so a route never leaves work half-done in its session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette import status

from model import ScoreResult
from service.errors import ServiceError
from service.store.models import Label, Message, Pair, utcnow


class MessageNotFound(ServiceError):
    status = status.HTTP_404_NOT_FOUND
    slug, title = "message-not-found", "Message not found"

    def __init__(self, message_id: int, field: str = "id") -> None:
        super().__init__(f"{field} {message_id} names no stored message", message_id=message_id, field=field)


class PairExists(ServiceError):
    status = status.HTTP_409_CONFLICT
    slug, title = "pair-exists", "Pair already recorded"

    def __init__(self, pair: Pair) -> None:
        super().__init__(
            f"annotator {pair.annotator!r} already judged message {pair.warmer_id} warmer than "
            f"{pair.cooler_id} (pair {pair.id})",
            pair_id=pair.id,
        )


@dataclass(frozen=True)
class MessageFields:
    """What a caller says about a message; the score comes from the model. No text: known but unpublished."""

    text: str | None
    sender: str | None = None
    recipient: str | None = None
    date: dt.date | None = None
    occasion: str | None = None
    language: str = "en"


@dataclass(frozen=True)
class MessageFilter:
    """Filters and a keyset page of ``list_messages``: messages with ``id > after``, ``limit`` of them."""

    sender: str | None = None
    recipient: str | None = None
    occasion: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    labelled: bool | None = None
    after: int | None = None
    limit: int = 100


def add_messages(
    session: Session, fields: Sequence[MessageFields], results: Sequence[ScoreResult | None]
) -> list[Message]:
    """Store messages with the scores the serving model gave them, all or none; ids in input order.

    An unpublished message (no text) comes with ``None`` for its result and is stored unscored.
    """
    rows = [
        Message(
            text=f.text,
            sender=f.sender,
            recipient=f.recipient,
            date=f.date,
            occasion=f.occasion,
            language=f.language,
            score=None if r is None else r.score,
            interval_low=None if r is None else r.interval[0],
            interval_high=None if r is None else r.interval[1],
            model_version=None if r is None else r.model_version,
            labels=[],
        )
        for f, r in zip(fields, results, strict=True)
    ]
    session.add_all(rows)
    session.commit()
    return rows


def get_message(session: Session, message_id: int, field: str = "id") -> Message:
    """The message ``message_id`` with its labels; ``MessageNotFound`` if there is none."""
    message = session.get(Message, message_id)
    if message is None:
        raise MessageNotFound(message_id, field)
    return message


def list_messages(session: Session, where: MessageFilter) -> list[Message]:
    """Messages matching ``where``, oldest id first, one page."""
    query = select(Message).order_by(Message.id).limit(where.limit)
    for column, value in (
        (Message.sender, where.sender),
        (Message.recipient, where.recipient),
        (Message.occasion, where.occasion),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.date_from is not None:
        query = query.where(Message.date >= where.date_from)
    if where.date_to is not None:
        query = query.where(Message.date <= where.date_to)
    if where.labelled is not None:
        has_label = exists().where(Label.message_id == Message.id)
        query = query.where(has_label if where.labelled else ~has_label)
    if where.after is not None:
        query = query.where(Message.id > where.after)
    return list(session.scalars(query))


def put_label(session: Session, message_id: int, annotator: str, score: float) -> Label:
    """Record ``annotator``'s score for a message, replacing their earlier one; safe under concurrent writes."""
    get_message(session, message_id)
    insert = _insert_for(session)(Label).values(
        message_id=message_id, annotator=annotator, score=score, labelled_at=utcnow()
    )
    # One statement, so two concurrent labels by the same annotator cannot both insert (or lose one another).
    upsert = insert.on_conflict_do_update(
        index_elements=[Label.message_id, Label.annotator],
        set_={"score": insert.excluded.score, "labelled_at": insert.excluded.labelled_at},
    ).returning(Label.id)
    label_id = session.execute(upsert).scalar_one()
    session.commit()
    label = session.get(Label, label_id, populate_existing=True)
    assert label is not None  # just written in a committed transaction
    return label


def add_pair(session: Session, warmer_id: int, cooler_id: int, kind: str, annotator: str, note: str | None) -> Pair:
    """Record that ``warmer_id`` is more effusive than ``cooler_id``; ``PairExists`` if this annotator said so."""
    get_message(session, warmer_id, "warmer")
    get_message(session, cooler_id, "cooler")
    pair = Pair(warmer_id=warmer_id, cooler_id=cooler_id, kind=kind, annotator=annotator, note=note)
    session.add(pair)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = session.scalars(
            select(Pair).where(Pair.warmer_id == warmer_id, Pair.cooler_id == cooler_id, Pair.annotator == annotator)
        ).first()
        if existing is None:
            raise
        raise PairExists(existing) from None
    return pair


def relation_messages(session: Session, sender: str, recipient: str) -> list[Message]:
    """The messages from ``sender`` to ``recipient``, oldest first (undated ones last, in the order stored)."""
    query = (
        select(Message)
        .where(Message.sender == sender, Message.recipient == recipient)
        .order_by(Message.date.is_(None), Message.date, Message.id)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class Relation:
    """A sender → recipient pair of the store and the span of its dated messages."""

    sender: str
    recipient: str
    messages: int
    first: dt.date | None
    last: dt.date | None


def relations(session: Session) -> list[Relation]:
    """Every sender → recipient pair with at least one stored message, the busiest first."""
    count = func.count(Message.id)
    query = (
        select(Message.sender, Message.recipient, count, func.min(Message.date), func.max(Message.date))
        .where(Message.sender.is_not(None), Message.recipient.is_not(None))
        .group_by(Message.sender, Message.recipient)
        .order_by(count.desc(), Message.sender, Message.recipient)
    )
    return [Relation(str(s), str(r), n, first, last) for s, r, n, first, last in session.execute(query)]


def labelled_messages(session: Session) -> list[Message]:
    """Every message with at least one label, with its labels, by id."""
    query = select(Message).where(exists().where(Label.message_id == Message.id)).order_by(Message.id)
    return list(session.scalars(query))


def all_pairs(session: Session) -> list[Pair]:
    """Every pairwise judgement, by id."""
    return list(session.scalars(select(Pair).order_by(Pair.id)))


def _insert_for(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT, which has ``on_conflict_do_update`` (SQLite and PostgreSQL spell it alike)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert
    if dialect == "postgresql":
        return postgresql.insert
    raise NotImplementedError(f"labels need an upsert; supported databases are sqlite and postgresql, found {dialect}")
