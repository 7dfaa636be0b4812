"""POST /v1/pairs: a judgement that one stored message is more effusive than another (``label`` scope)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette import status

from service.auth import LabelKey
from service.deps import SessionDep
from service.errors import problem_responses
from service.routes.messages import AUTH_ERRORS
from service.schemas import MAX_ID, NOT_BLANK, Id
from service.store.models import Pair
from service.store.repository import MessageNotFound, PairExists, add_pair

router = APIRouter(tags=["messages"])

ERRORS = {
    **AUTH_ERRORS,
    **problem_responses(
        "/v1/pairs",
        MessageNotFound(42, "cooler"),
        PairExists(Pair(id=3, warmer_id=12, cooler_id=9, annotator="analyst-7")),
    ),
}


class PairCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "warmer": 12,
                    "cooler": 9,
                    "kind": "year-over-year",
                    "annotator": "analyst-7",
                    "note": "drops the 'never forget' sentence",
                }
            ]
        },
    )

    warmer: Id = Field(ge=1, le=MAX_ID, description="id of the more effusive stored message")
    cooler: Id = Field(ge=1, le=MAX_ID, description="id of the less effusive stored message; not warmer")
    kind: str = Field(
        default="judgement",
        min_length=1,
        max_length=50,
        pattern=NOT_BLANK,
        description="year-over-year, variant, judgement ...",
    )
    annotator: str = Field(min_length=1, max_length=100, pattern=NOT_BLANK)
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _two_messages(self) -> PairCreate:
        if self.warmer == self.cooler:
            raise ValueError(f"warmer and cooler must be two different messages; found {self.warmer} for both")
        return self


class PairPublic(BaseModel):
    id: int
    warmer: int
    cooler: int
    kind: str
    annotator: str
    note: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, pair: Pair) -> PairPublic:
        return cls(
            id=pair.id,
            warmer=pair.warmer_id,
            cooler=pair.cooler_id,
            kind=pair.kind,
            annotator=pair.annotator,
            note=pair.note,
            created_at=pair.created_at,
        )


@router.post("/v1/pairs", status_code=status.HTTP_201_CREATED, responses=ERRORS, summary="Judge one message warmer")
def create_pair(body: PairCreate, key: LabelKey, session: SessionDep) -> PairPublic:
    """Record that `warmer` is more effusive than `cooler`; both must be stored messages."""
    return PairPublic.of(add_pair(session, body.warmer, body.cooler, body.kind, body.annotator, body.note))
