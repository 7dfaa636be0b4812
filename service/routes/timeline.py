"""GET /v1/timeline: one relation's stored messages, oldest first, each placed in that relation's history.

For each message: its stored score, band and interval; ``percentile``, the mid-rank percentile of its score among all
the relation's messages (the share scoring below it, plus half the share tied with it, itself included: one message
alone sits at 50); ``change``, its score minus the previous message's; and ``moved``, true where the previous score lies
outside this message's interval, i.e. the score moved by more than the model's own uncertainty.

Scores are those stored with each message, so ``model_version`` can differ along a timeline after a retraining.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from model import band_of
from service.auth import ReadAccess
from service.deps import SessionDep
from service.store.models import Message
from service.store.repository import relation_messages

router = APIRouter(tags=["messages"])


class TimelinePoint(BaseModel):
    id: int
    date: dt.date | None
    occasion: str | None
    score: float
    band: str
    interval: tuple[float, float]
    model_version: str
    percentile: float = Field(ge=0, le=100, description="mid-rank percentile among this relation's messages")
    change: float | None = Field(description="score minus the previous message's; null for the first")
    moved: bool = Field(description="the previous score lies outside this message's interval")
    label: float | None = Field(description="the annotators' mean score, if labelled")


class TimelineResponse(BaseModel):
    sender: str
    recipient: str
    messages: list[TimelinePoint]


@router.get("/v1/timeline", summary="One relation's messages over time")
def timeline(
    sender: Annotated[str, Query(min_length=1, max_length=300)],
    recipient: Annotated[str, Query(min_length=1, max_length=300)],
    session: SessionDep,
    access: ReadAccess,
) -> TimelineResponse:
    """The messages from `sender` to `recipient`, oldest first, each with its percentile and change."""
    return TimelineResponse(
        sender=sender, recipient=recipient, messages=build_timeline(relation_messages(session, sender, recipient))
    )


def build_timeline(messages: list[Message]) -> list[TimelinePoint]:
    """Place each message (already in date order) in the history of all of them."""
    ranked = sorted(m.score for m in messages)
    points, previous = [], None
    for message in messages:
        below, up_to = bisect_left(ranked, message.score), bisect_right(ranked, message.score)
        percentile = 100.0 * (below + 0.5 * (up_to - below)) / len(ranked)
        change: float | None = None if previous is None else round(message.score - previous, 4)
        moved = previous is not None and not message.interval_low <= previous <= message.interval_high
        points.append(
            TimelinePoint(
                id=message.id,
                date=message.date,
                occasion=message.occasion,
                score=message.score,
                band=band_of(message.score),
                interval=(message.interval_low, message.interval_high),
                model_version=message.model_version,
                percentile=round(percentile, 2),
                change=change,
                moved=moved,
                label=message.label_mean,
            )
        )
        previous = message.score
    return points
