"""GET /v1/timeline: one relation's stored messages, oldest first, each placed in that relation's history, with its
cadence and the absences in it; GET /v1/timeline.svg draws it; GET /v1/relations lists the relations stored.

For each scored message: its stored score, band and interval; ``percentile``, the mid-rank percentile of its score
among all the relation's scored messages (the share scoring below it, plus half the share tied with it, itself
included: one message alone sits at 50); ``change``, its score minus the previous scored message's; and ``moved``,
true where that previous score lies outside this message's interval, i.e. the score moved by more than the model's
own uncertainty. A message known but unpublished (no text) is a point too, unscored (``published`` false, its score
fields null), and counts for cadence; the moves skip over it.

``cadence`` and ``absences`` follow the rules of ``service.cadence`` (recurring occasions, usual gap, expected
messages that did not come, silences longer than usual), judged up to ``as_of`` (default: today, UTC).

Scores are those stored with each message, so ``model_version`` can differ along a timeline after a retraining.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from model import band_of
from service.auth import ReadAccess
from service.cadence import Cadence, Entry, cadence
from service.deps import SessionDep
from service.store.models import Message
from service.store.repository import relation_messages, relations

router = APIRouter(tags=["messages"])

Sender = Annotated[str, Query(min_length=1, max_length=300)]
Recipient = Annotated[str, Query(min_length=1, max_length=300)]
AsOf = Annotated[dt.date | None, Query(description="judge absences up to this date (YYYY-MM-DD); default today (UTC)")]


class TimelinePoint(BaseModel):
    id: int
    date: dt.date | None
    occasion: str | None
    published: bool = Field(True, description="false: known but unpublished (no text), unscored")
    score: float | None
    band: str | None
    interval: tuple[float, float] | None
    model_version: str | None
    percentile: float | None = Field(ge=0, le=100, description="mid-rank percentile among this relation's messages")
    change: float | None = Field(description="score minus the previous scored message's; null for the first")
    moved: bool = Field(description="the previous score lies outside this message's interval")
    label: float | None = Field(description="the annotators' mean score, if labelled")


class RecurringOccasionOut(BaseModel):
    occasion: str = Field(description="normalised: lower case, words joined by _")
    years: list[int] = Field(description="the years with at least one message for it")
    usual_date: str = Field(description="MM-DD, the median day of the year of its messages")


class AbsenceOut(BaseModel):
    kind: Literal["expected_occasion", "long_silence"]
    start: dt.date = Field(description="an occasion: its usual date that year; a silence: the last message before it")
    end: dt.date = Field(description="an occasion: the same; a silence: the message that ended it, or as_of")
    detail: str = Field(description="a line an analyst can quote")
    occasion: str | None = None
    year: int | None = None
    ongoing: bool = Field(False, description="a silence that lasts to as_of")


class CadenceOut(BaseModel):
    usual_gap_days: float | None = Field(description="median days between messages; null with fewer than 4 gaps")
    gaps: int = Field(description="gaps between consecutive dated messages")
    occasions: list[RecurringOccasionOut] = Field(description="occasions seen in at least 3 years")


class TimelineResponse(BaseModel):
    sender: str
    recipient: str
    messages: list[TimelinePoint]
    as_of: dt.date | None = Field(None, description="absences are judged up to this date")
    cadence: CadenceOut | None = None
    absences: list[AbsenceOut] = Field(default_factory=list)


class RelationOut(BaseModel):
    sender: str
    recipient: str
    messages: int
    first: dt.date | None = Field(description="the earliest dated message")
    last: dt.date | None


class RelationsResponse(BaseModel):
    relations: list[RelationOut]


@router.get("/v1/timeline", summary="One relation's messages over time, its cadence and absences")
def timeline(
    sender: Sender, recipient: Recipient, session: SessionDep, access: ReadAccess, as_of: AsOf = None
) -> TimelineResponse:
    """The messages from `sender` to `recipient`, oldest first, each with its percentile and change; the relation's
    recurring occasions and usual gap; the expected messages that did not come and the silences longer than usual."""
    return relation_timeline(relation_messages(session, sender, recipient), sender, recipient, as_of)


@router.get(
    "/v1/timeline.svg",
    summary="One relation's timeline as an SVG picture",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}, "description": "the chart"}},
)
def timeline_svg(
    sender: Sender, recipient: Recipient, session: SessionDep, access: ReadAccess, as_of: AsOf = None
) -> Response:
    """The chart of `/v1/timeline`: score and interval over time on the bands, moves and absences labelled."""
    from service.plots import timeline_figure, to_bytes  # matplotlib loads on the first picture, not at start-up

    data = relation_timeline(relation_messages(session, sender, recipient), sender, recipient, as_of)
    return Response(to_bytes(timeline_figure(data), "svg"), media_type="image/svg+xml")


@router.get("/v1/relations", summary="The sender → recipient relations stored")
def list_relations(session: SessionDep, access: ReadAccess) -> RelationsResponse:
    """Every relation with at least one stored message, the busiest first."""
    return RelationsResponse(
        relations=[
            RelationOut(sender=r.sender, recipient=r.recipient, messages=r.messages, first=r.first, last=r.last)
            for r in relations(session)
        ]
    )


def relation_timeline(
    messages: list[Message], sender: str, recipient: str, as_of: dt.date | None = None
) -> TimelineResponse:
    """The whole answer of ``/v1/timeline`` for ``messages`` (already in date order)."""
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    found = cadence([Entry(m.date, m.occasion) for m in messages if m.date is not None], as_of)
    return TimelineResponse(
        sender=sender,
        recipient=recipient,
        messages=build_timeline(messages),
        as_of=as_of,
        cadence=_cadence_out(found),
        absences=[AbsenceOut.model_validate(absence, from_attributes=True) for absence in found.absences],
    )


def build_timeline(messages: list[Message]) -> list[TimelinePoint]:
    """Place each message (already in date order) in the history of all of them."""
    ranked = sorted(m.score for m in messages if m.score is not None)
    points, previous = [], None
    for message in messages:
        if message.score is None or message.interval_low is None or message.interval_high is None:
            points.append(_unscored(message))
            continue
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


def _unscored(message: Message) -> TimelinePoint:
    return TimelinePoint(
        id=message.id,
        date=message.date,
        occasion=message.occasion,
        published=message.published,
        score=None,
        band=None,
        interval=None,
        model_version=None,
        percentile=None,
        change=None,
        moved=False,
        label=message.label_mean,
    )


def _cadence_out(found: Cadence) -> CadenceOut:
    return CadenceOut(
        usual_gap_days=found.usual_gap_days,
        gaps=found.gaps,
        occasions=[RecurringOccasionOut.model_validate(o, from_attributes=True) for o in found.occasions],
    )
