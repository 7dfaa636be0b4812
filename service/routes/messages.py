"""The message store over HTTP: store messages (scored on arrival), list and read them, label them.

- ``POST /v1/messages`` takes one message or ``{"messages": [...]}`` (up to ``MAX_BATCH``); each is scored by the
  serving model and stored with that score, its interval and the model's version (201). All or none are stored.
  A message with ``"text": null`` is *known but unpublished* (an agency named it, printed no text): it is stored
  unscored, needs sender, recipient and date, counts for its relation's cadence and cannot be labelled (409).
- ``GET /v1/messages`` filters by sender, recipient, occasion, date range and whether labelled; pages by id
  (``after`` = the ``next_after`` of the previous page).
- ``PUT /v1/messages/{id}/label`` records an annotator's score; an annotator labelling again replaces their score.

Writes need a ``label`` key; reads a ``read`` key or above, unless ``open_reads`` opens them (``service.auth``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Discriminator, Field, GetJsonSchemaHandler, Tag, model_validator
from pydantic.json_schema import JsonSchemaValue
from starlette import status
from starlette.concurrency import run_in_threadpool

from model import ScoreResult, band_of
from service.auth import LabelKey, MissingKey, ReadAccess, ScopeTooLow
from service.batching import Batcher
from service.deps import BatcherDep, SessionDep, SettingsDep
from service.errors import TextTooLong, UnpublishedMessage, overloaded_responses, problem_responses
from service.keys import Principal
from service.limits import check_texts
from service.schemas import MAX_ID, NOT_BLANK, IsoDate, Text
from service.settings import Settings
from service.store.models import Label, Message
from service.store.repository import (
    MessageFields,
    MessageFilter,
    MessageNotFound,
    add_messages,
    get_message,
    list_messages,
    put_label,
)

MAX_BATCH = 1000

router = APIRouter(tags=["messages"])

MessageId = Annotated[int, Path(ge=1, le=MAX_ID, description="the message's id, as returned when it was stored")]
EXAMPLE_KEY = Principal(key_id="3f9a2c1d4e5b6a70", name="analyst", scope="score")
AUTH_ERRORS = problem_responses("/v1/messages", MissingKey("label"), ScopeTooLow(EXAMPLE_KEY, "label"))
NOT_FOUND = problem_responses("/v1/messages/42", MessageNotFound(42))


# ------------------------------------------------------------------------------------------------------------ bodies


class MessageCreate(BaseModel):
    """A message to store; the serving model scores it on arrival."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "Dear Comrade President, I extend my warmest congratulations on Russia Day.",
                    "sender": "Kim Jong Un",
                    "recipient": "Vladimir Putin",
                    "date": "2026-06-12",
                    "occasion": "Russia Day",
                }
            ],
        },
    )

    text: Text | None = Field(
        default=None,
        description="the message; null for one known but unpublished (named by an agency, no text printed), "
        "which is stored unscored and needs sender, recipient and date",
    )
    sender: str | None = Field(default=None, min_length=1, max_length=300, pattern=NOT_BLANK)
    recipient: str | None = Field(default=None, min_length=1, max_length=300, pattern=NOT_BLANK)
    date: IsoDate | None = Field(default=None, description="YYYY-MM-DD; orders the relation's timeline")
    occasion: str | None = Field(default=None, min_length=1, max_length=100, pattern=NOT_BLANK)
    language: str = Field(default="en", min_length=2, max_length=16)

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """What ``_unpublished_is_placed`` enforces, said in the schema: a text, or else sender, recipient and date,
        each branch with the field's own non-null constraints (a bare ``{"type": "string"}`` would loosen them)."""
        schema = handler.resolve_ref_schema(handler(core))
        present = {
            name: next(s for s in schema["properties"][name]["anyOf"] if s.get("type") != "null")
            for name in ("text", "sender", "recipient", "date")
        }
        schema["anyOf"] = [
            {"required": ["text"], "properties": {"text": present["text"]}},
            {
                "required": ["sender", "recipient", "date"],
                "properties": {k: present[k] for k in ("sender", "recipient", "date")},
            },
        ]
        return schema

    @model_validator(mode="after")
    def _unpublished_is_placed(self) -> MessageCreate:
        if self.text is None:
            missing = [name for name in ("sender", "recipient", "date") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    "a message without text (known but unpublished) only counts on a relation's timeline; "
                    f"expected sender, recipient and date; found no {', '.join(missing)}"
                )
        return self

    def fields(self) -> MessageFields:
        return MessageFields(self.text, self.sender, self.recipient, self.date, self.occasion, self.language)


class MessageBatchCreate(BaseModel):
    """Up to ``MAX_BATCH`` messages at once, stored all or none."""

    model_config = ConfigDict(extra="forbid")

    messages: list[MessageCreate] = Field(min_length=1, max_length=MAX_BATCH)


def _body_shape(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "messages" in value else "one"


MessagesBody = Annotated[
    Annotated[MessageCreate, Tag("one")] | Annotated[MessageBatchCreate, Tag("batch")],
    Discriminator(_body_shape),
]


class LabelPut(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"annotator": "analyst-7", "score": 82.5}]}
    )

    annotator: str = Field(
        min_length=1, max_length=100, pattern=NOT_BLANK, description="who judged; one label per annotator"
    )
    score: float = Field(ge=0, le=100, strict=True, description="0 = cold ... 100 = effusive, per the annotation guide")


class LabelPublic(BaseModel):
    annotator: str
    score: float
    labelled_at: dt.datetime

    @classmethod
    def of(cls, label: Label) -> LabelPublic:
        return cls(annotator=label.annotator, score=label.score, labelled_at=label.labelled_at)


class MessagePublic(BaseModel):
    """A stored message with the score it was given when stored, and its labels."""

    id: int
    text: str | None = Field(description="null for a message known but unpublished")
    published: bool = Field(description="false when the message is known but its text was not published")
    sender: str | None
    recipient: str | None
    date: dt.date | None
    occasion: str | None
    language: str
    score: float | None = Field(description="the serving model's score when the message was stored; null unpublished")
    band: str | None
    interval: tuple[float, float] | None
    model_version: str | None = Field(description="the model version that gave the score")
    created_at: dt.datetime
    label: float | None = Field(description="the mean of the annotators' scores; null if unlabelled")
    labels: list[LabelPublic]

    @classmethod
    def of(cls, message: Message) -> MessagePublic:
        low, high = message.interval_low, message.interval_high
        return cls(
            id=message.id,
            text=message.text,
            published=message.published,
            sender=message.sender,
            recipient=message.recipient,
            date=message.date,
            occasion=message.occasion,
            language=message.language,
            score=message.score,
            band=band_of(message.score) if message.score is not None else None,
            interval=None if low is None or high is None else (low, high),
            model_version=message.model_version,
            created_at=message.created_at,
            label=message.label_mean,
            labels=[LabelPublic.of(label) for label in message.labels],
        )


class MessageBatchPublic(BaseModel):
    messages: list[MessagePublic]


class MessagePage(BaseModel):
    messages: list[MessagePublic]
    next_after: int | None = Field(description="pass as `after` for the next page; null on the last page")


class LabelRecorded(LabelPublic):
    message_id: int
    label: float = Field(description="the message's label now: the mean over its annotators")
    annotators: int


# ------------------------------------------------------------------------------------------------------------ routes


@router.post(
    "/v1/messages",
    status_code=status.HTTP_201_CREATED,
    summary="Store one message or many",
    responses={
        **AUTH_ERRORS,
        **problem_responses("/v1/messages", TextTooLong("messages[3].text", 20001, 20000)),
        **overloaded_responses("/v1/messages"),
    },
)
async def create_messages(
    request: Request,
    response: Response,
    body: Annotated[MessagesBody, Body()],
    key: LabelKey,
    session: SessionDep,
    batcher: BatcherDep,
    settings: SettingsDep,
) -> MessagePublic | MessageBatchPublic:
    """Score each message with the serving model and store it with that score and the model's version.

    `{"text": ...}` answers the stored message; `{"messages": [...]}` answers `{"messages": [...]}` in order.
    """
    items = body.messages if isinstance(body, MessageBatchCreate) else [body]
    fields = [f"messages[{i}].text" for i in range(len(items))] if isinstance(body, MessageBatchCreate) else ["text"]
    published = {field: item.text for field, item in zip(fields, items, strict=True) if item.text is not None}
    scored = iter(await _score(batcher, check_texts(published, settings, count=False), settings))
    results = [None if item.text is None else next(scored) for item in items]  # unpublished: stored unscored
    stored = await run_in_threadpool(add_messages, session, [item.fields() for item in items], results)
    if isinstance(body, MessageBatchCreate):
        return MessageBatchPublic(messages=[MessagePublic.of(m) for m in stored])
    response.headers["Location"] = str(request.url_for("get_stored_message", message_id=stored[0].id))
    return MessagePublic.of(stored[0])


@router.get("/v1/messages", summary="List stored messages")
def list_stored_messages(
    session: SessionDep,
    access: ReadAccess,
    sender: Annotated[str | None, Query(max_length=300)] = None,
    recipient: Annotated[str | None, Query(max_length=300)] = None,
    occasion: Annotated[str | None, Query(max_length=100)] = None,
    date_from: Annotated[IsoDate | None, Query(description="on or after, YYYY-MM-DD")] = None,
    date_to: Annotated[IsoDate | None, Query(description="on or before, YYYY-MM-DD")] = None,
    labelled: Annotated[bool | None, Query(description="only labelled (true) or unlabelled (false)")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="the `next_after` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 100,
) -> MessagePage:
    """Messages matching every filter given, oldest first, `limit` a page."""
    where = MessageFilter(sender, recipient, occasion, date_from, date_to, labelled, after, limit)
    page = list_messages(session, where)
    return MessagePage(
        messages=[MessagePublic.of(m) for m in page], next_after=page[-1].id if len(page) == limit else None
    )


@router.get("/v1/messages/{message_id}", responses=NOT_FOUND, summary="Read a stored message")
def get_stored_message(message_id: MessageId, session: SessionDep, access: ReadAccess) -> MessagePublic:
    """The message, its stored score and its labels."""
    return MessagePublic.of(get_message(session, message_id))


@router.put(
    "/v1/messages/{message_id}/label",
    responses={**AUTH_ERRORS, **NOT_FOUND, **problem_responses("/v1/messages/42/label", UnpublishedMessage(42))},
    summary="Label a message",
)
def label_message(message_id: MessageId, body: LabelPut, key: LabelKey, session: SessionDep) -> LabelRecorded:
    """Record an annotator's score for the message (replacing that annotator's earlier one)."""
    if not get_message(session, message_id).published:
        raise UnpublishedMessage(message_id)
    label = put_label(session, message_id, body.annotator, body.score)
    message = get_message(session, message_id)
    session.refresh(message, ["labels"])
    assert message.label_mean is not None  # it has just been labelled
    return LabelRecorded(
        annotator=label.annotator,
        score=label.score,
        labelled_at=label.labelled_at,
        message_id=message_id,
        label=message.label_mean,
        annotators=len(message.labels),
    )


# ----------------------------------------------------------------------------------------------------------- helpers


async def _score(batcher: Batcher, texts: list[str], settings: Settings) -> list[ScoreResult]:
    """Score through the batcher, ``max_texts`` at a time, so a large upload waits its turn like any request."""
    results: list[ScoreResult] = []
    for start in range(0, len(texts), settings.max_texts):
        results += await batcher.score(texts[start : start + settings.max_texts], timeout_s=settings.request_timeout_s)
    return results
