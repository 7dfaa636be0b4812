"""Request and response bodies of the scoring, health and info routes, named for their direction.

Shapes (decided here, shown in OpenAPI with examples):

- ``POST /v1/score`` with ``{"text": ...}`` answers one ``ScoreResponse``: the result of docs/design.md ("Scoring
  result") plus the request's ``id``, ``sender``, ``recipient``, ``date`` and ``occasion`` echoed back (``null`` where
  not given).
- ``POST /v1/score`` with ``{"texts": [...]}`` answers ``{"results": [...]}``, one such object per text, in order.
  An item is a string or an object with its own ``text`` and metadata; the top-level ``sender``, ``recipient``,
  ``date`` and ``occasion`` are defaults for the items that do not set their own. A top-level ``id`` only goes with
  ``text`` (each item of ``texts`` carries its own).
- ``POST /v1/compare`` takes ``{"a": ..., "b": ...}``, each a string or an object like an item of ``texts``, and
  answers the Comparison of docs/design.md with ``a`` and ``b`` as scored texts (metadata echoed).

Unknown fields are refused (a misspelt ``txt`` is an error, not a silently empty request).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from model.engines import ENGINES
from model.errors import check_text

NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"  # a character that is not whitespace, and no NUL (service.body_guard)
NO_NUL = r"^[^\x00]*$"  # what service.body_guard holds every string to; service.openapi says it of each
MAX_ID = 2**31 - 1  # ids are PostgreSQL `integer` columns (SQLite's go to 2**63 - 1); larger is no id we gave


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: object) -> object:
    """A date only as ``YYYY-MM-DD`` (pydantic would also take ``0`` or ``"0"`` as a Unix time: a silent 1970)."""
    if isinstance(value, dt.date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return value
    found = f"{value!r}"[:40] if isinstance(value, str) else type(value).__name__
    raise ValueError(f"expected a date as YYYY-MM-DD; found {found}")


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # pydantic would take true for 1
        raise ValueError(f"expected an integer id; found {str(value).lower()}")
    return value


Id = Annotated[int, BeforeValidator(_not_bool)]


def _has_words(text: str) -> str:
    return check_text(text)  # EmptyInput is a ValueError: pydantic turns it into a 422 naming the field


Text = Annotated[
    str,
    AfterValidator(_has_words),
    Field(
        min_length=1,
        pattern=NOT_BLANK,
        description="the message, plain text, not blank; longer than the model's window is fine (it is split by "
        "sentence); at most max_chars characters (GET /v1/info), 413 beyond",
    ),
]

# ---------------------------------------------------------------------------------------------------------- examples

KIM_TO_PUTIN = (
    "Dear Comrade President, I extend my warmest congratulations on Russia Day. "
    "The invincible friendship between our peoples grows stronger year by year."
)
NOTE_OF_PROTEST = "The Ministry has received your letter. We firmly reject the statement and its interference."

RESULT_EXAMPLE: dict[str, Any] = {
    "score": 84.6,
    "band": "effusive",
    "interval": [72.6, 96.6],
    "sentences": [
        {"start": 0, "end": 21, "text": "Dear Comrade President,", "score": 71.3, "contribution": 1.2},
        {
            "start": 22,
            "end": 75,
            "text": "I extend my warmest congratulations on Russia Day.",
            "score": 78.9,
            "contribution": 2.7,
        },
        {
            "start": 76,
            "end": 150,
            "text": "The invincible friendship between our peoples grows stronger year by year.",
            "score": 88.4,
            "contribution": 5.1,
        },
    ],
    "markers": [
        {"kind": "friendship", "start": 5, "end": 12, "text": "Comrade"},
        {"kind": "superlative", "start": 34, "end": 41, "text": "warmest"},
        {"kind": "superlative", "start": 80, "end": 90, "text": "invincible"},
        {"kind": "friendship", "start": 91, "end": 101, "text": "friendship"},
    ],
    "model_version": "2026-11-30-lora-3f9a2c",
}
METADATA_EXAMPLE: dict[str, Any] = {
    "id": "kp-ru-2026-06-12",
    "sender": "Kim Jong Un",
    "recipient": "Vladimir Putin",
    "date": "2026-06-12",
    "occasion": "Russia Day",
}
NO_METADATA: dict[str, Any] = {"id": None, "sender": None, "recipient": None, "date": None, "occasion": None}
SCORE_EXAMPLE: dict[str, Any] = {**RESULT_EXAMPLE, **METADATA_EXAMPLE}
SCORE_BATCH_EXAMPLE: dict[str, Any] = {"results": [{**RESULT_EXAMPLE, **NO_METADATA}]}

SCORE_REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "one text": {"summary": "One text", "value": {"text": KIM_TO_PUTIN}},
    "one text with metadata": {
        "summary": "One text, metadata echoed back",
        "value": {"text": KIM_TO_PUTIN, **METADATA_EXAMPLE},
    },
    "several texts": {
        "summary": "Several texts: strings, or objects with their own metadata",
        "value": {
            "sender": "Kim Jong Un",
            "texts": [
                KIM_TO_PUTIN,
                {
                    "id": "note-17",
                    "text": NOTE_OF_PROTEST,
                    "recipient": "Japan",
                    "date": "2026-03-01",
                    "occasion": "protest",
                },
            ],
        },
    },
}
COMPARE_REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "two texts": {
        "summary": "Last year's message against this year's",
        "value": {"a": KIM_TO_PUTIN, "b": NOTE_OF_PROTEST},
    },
    "two texts with metadata": {
        "summary": "With metadata on each side",
        "value": {
            "a": {"text": KIM_TO_PUTIN, "date": "2025-06-12", "occasion": "Russia Day"},
            "b": {"text": NOTE_OF_PROTEST, "date": "2026-06-12", "occasion": "Russia Day"},
        },
    },
}

# ------------------------------------------------------------------------------------------------------------ requests


class Metadata(BaseModel):
    """What the caller knows about a message; echoed back untouched, never used to score it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="the caller's id for the text")
    sender: str | None = Field(default=None, max_length=200)
    recipient: str | None = Field(default=None, max_length=200)
    date: IsoDate | None = Field(default=None, description="YYYY-MM-DD")
    occasion: str | None = Field(default=None, max_length=200)

    def echo(self) -> dict[str, Any]:
        return self.model_dump(include={"id", "sender", "recipient", "date", "occasion"})


class TextItem(Metadata):
    """One text with its own metadata."""

    text: Text


def _object_from_string(value: object) -> object:
    return {"text": value} if isinstance(value, str) else value


# A bare string is shorthand for {"text": ...}; converting it first gives errors one location ("texts.3.text").
Item = Annotated[TextItem, BeforeValidator(_object_from_string, json_schema_input_type=Text | TextItem)]


class ScoreRequest(Metadata):
    """Exactly one of ``text`` or ``texts``; at most ``max_texts`` texts (413 beyond)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [SCORE_REQUEST_EXAMPLES["one text"]["value"]],
            # What _one_of_text_or_texts enforces, said in the schema: one of the two, and an id only with text.
            "oneOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
            ],
            "not": {"required": ["id", "texts"]},
        },
    )

    text: Text | None = None
    texts: list[Item] | None = Field(default=None, min_length=1, description="strings or objects")

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> ScoreRequest:
        if (self.text is None) == (self.texts is None):
            found = "both" if self.text is not None else "neither"
            raise ValueError(f"expected exactly one of 'text' or 'texts'; found {found}")
        if self.texts is not None and self.id is not None:
            raise ValueError("a top-level 'id' names the single 'text'; with 'texts', give each item its own id")
        return self

    @property
    def single(self) -> bool:
        return self.text is not None

    def items(self) -> list[TextItem]:
        """Every text to score with its metadata, top-level fields filling in what an item leaves unset."""
        if self.text is not None:
            return [TextItem(text=self.text, **self.echo())]
        defaults = self.model_dump(include={"sender", "recipient", "date", "occasion"}, exclude_none=True)
        items = []
        for item in self.texts or []:
            unset = {key: value for key, value in defaults.items() if getattr(item, key) is None}
            items.append(item.model_copy(update=unset))
        return items


class CompareRequest(BaseModel):
    """Two messages; ``delta`` is b minus a."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [COMPARE_REQUEST_EXAMPLES["two texts"]["value"]]}
    )

    a: Item
    b: Item


# ----------------------------------------------------------------------------------------------------------- responses


class SentenceOut(BaseModel):
    start: int = Field(description="character offset in the text")
    end: int
    text: str
    score: float = Field(description="the sentence scored on its own, 0-100")
    contribution: float = Field(description="how far the message score drops when this sentence is removed")


class MarkerOut(BaseModel):
    kind: str = Field(description="friendship, superlative, personal_praise, shared_history, wishes, commitment, ...")
    start: int
    end: int
    text: str


class ScoredText(BaseModel):
    """A scoring result (docs/design.md) with the text's metadata echoed back."""

    score: float = Field(ge=0, le=100, description="0 = cold ... 100 = effusive")
    band: str = Field(description="cold, formal, cordial, warm or effusive")
    interval: tuple[float, float] = Field(description="calibrated 90% interval around the score")
    sentences: list[SentenceOut]
    markers: list[MarkerOut]
    model_version: str
    unusual: bool = Field(False, description="the text is unlike the training messages; its interval is wider")
    distance: float | None = Field(None, description="mean cosine distance to the nearest training messages")
    id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    date: dt.date | None = None
    occasion: str | None = None


class ScoreResponse(ScoredText):
    """The answer to ``{"text": ...}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [SCORE_EXAMPLE]})


class ScoreBatchResponse(BaseModel):
    """The answer to ``{"texts": [...]}``: one result per text, in request order."""

    model_config = ConfigDict(json_schema_extra={"examples": [SCORE_BATCH_EXAMPLE]})

    results: list[ScoredText]


class MarkerChangeOut(BaseModel):
    kind: str
    label: str
    a: int = Field(description="count in a")
    b: int = Field(description="count in b")


class ExplanationOut(BaseModel):
    markers: list[MarkerChangeOut]
    only_in_a: list[SentenceOut] = Field(description="sentences of a with no close counterpart in b")
    only_in_b: list[SentenceOut] = Field(description="sentences of b with no close counterpart in a")
    summary: list[str] = Field(description="lines an analyst can quote")


COMPARE_EXAMPLE: dict[str, Any] = {
    "a": {**RESULT_EXAMPLE, **NO_METADATA},
    "b": {
        **RESULT_EXAMPLE,
        "score": 12.5,
        "band": "cold",
        "interval": [0.5, 24.5],
        "markers": [],
        "sentences": [{"start": 0, "end": 84, "text": NOTE_OF_PROTEST, "score": 12.5, "contribution": 0.0}],
        **NO_METADATA,
    },
    "delta": -72.1,
    "p_b_warmer": 0.0,
    "explanation": {
        "markers": [{"kind": "friendship", "label": "friendship references", "a": 2, "b": 0}],
        "only_in_a": RESULT_EXAMPLE["sentences"][2:],
        "only_in_b": [],
        "summary": ["B scores 12.5 (cold) against 84.6 (effusive) for A: cooler.", "friendship references: 2 → 0"],
    },
}


class CompareResponse(BaseModel):
    """Both results, ``delta = b.score - a.score``, ``p_b_warmer`` and an explanation."""

    model_config = ConfigDict(json_schema_extra={"examples": [COMPARE_EXAMPLE]})

    a: ScoredText
    b: ScoredText
    delta: float
    p_b_warmer: float = Field(ge=0, le=1)
    explanation: ExplanationOut


class Limits(BaseModel):
    max_texts: int = Field(description="texts per /v1/score request (413 beyond)")
    max_chars: int = Field(description="characters per text (413 beyond)")
    max_body_bytes: int = Field(description="bytes per request body (413 beyond, before it is parsed)")
    batch_tokens: int = Field(description="tokens per model batch, counted with the model's tokenizer")
    queue_size: int = Field(description="texts waiting for the model before 429, whatever the wait")
    max_queue_wait_s: float = Field(
        description="seconds a scoring request may expect to wait for its result before it is refused with 429"
    )
    request_timeout_s: float = Field(description="deadline of a scoring request (503 beyond)")
    window_tokens: int = Field(description="the model's window; longer texts are split by sentence, never truncated")


class Band(BaseModel):
    name: str
    low: float
    high: float


INFO_EXAMPLE: dict[str, Any] = {
    "model_version": "2026-11-30-lora-3f9a2c",
    "registry_active": "2026-11-30-lora-3f9a2c",
    "replica": "diplotone-7c9f:41",
    "engine": "onnx-int8",
    "engine_report": {
        "engine": "onnx-int8",
        "requested": "onnx-int8",
        "parity_texts": 102,
        "onnx-fp32": {"max_abs_diff": 0.00001, "spearman": 1.0, "n": 102},
        "onnx-int8": {"max_abs_diff": 1.4, "spearman": 0.9996, "n": 102},
    },
    "test_metrics": {"spearman": 0.81, "mae": 8.9, "pairwise_accuracy": 0.88, "interval_coverage": 0.91},
    "interval_coverage": 0.9,
    "limits": {
        "max_texts": 64,
        "max_chars": 20000,
        "max_body_bytes": 8388608,
        "batch_tokens": 2048,
        "queue_size": 256,
        "max_queue_wait_s": 2.0,
        "request_timeout_s": 30.0,
        "window_tokens": 256,
    },
    "bands": [
        {"name": "cold", "low": 0.0, "high": 20.0},
        {"name": "formal", "low": 20.0, "high": 40.0},
        {"name": "cordial", "low": 40.0, "high": 60.0},
        {"name": "warm", "low": 60.0, "high": 80.0},
        {"name": "effusive", "low": 80.0, "high": 100.0},
    ],
}


class InfoResponse(BaseModel):
    """What is being served: the model version, its test figures, the limits and the bands."""

    model_config = ConfigDict(json_schema_extra={"examples": [INFO_EXAMPLE]})

    model_version: str = Field(description="the version this replica serves")
    registry_active: str | None = Field(
        description="the version the registry's active pointer names; differs from model_version for at most "
        "registry_poll_s after another replica activated a version (or while that version cannot be served here)"
    )
    replica: str = Field(description="which replica answered: hostname:pid")
    engine: str = Field(description=f"the encoder engine serving: {', '.join(ENGINES[:-1])} or {ENGINES[-1]}")
    engine_report: dict[str, Any] = Field(
        description="how the engine was chosen: the one asked for, its parity with torch, any refusal and why"
    )
    test_metrics: dict[str, float] = Field(description="the version's figures on the fixed test split")
    interval_coverage: float = Field(description="the coverage the intervals are calibrated for")
    limits: Limits
    bands: list[Band]


READY_EXAMPLE: dict[str, Any] = {"status": "ready", "model_version": "2026-11-30-lora-3f9a2c", "probe_score": 71.2}


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "alive"}]})

    status: str = "alive"


class ReadyResponse(BaseModel):
    """Ready: the served model has scored the probe text."""

    model_config = ConfigDict(json_schema_extra={"examples": [READY_EXAMPLE]})

    status: str = "ready"
    model_version: str
    probe_score: float


def ok_examples(**examples: Any) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI ``responses`` entry giving named examples of a route's 200 JSON body."""
    named = {name.replace("_", " "): {"value": value} for name, value in examples.items()}
    return {200: {"content": {"application/json": {"examples": named}}}}
