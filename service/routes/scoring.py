"""POST /v1/score and POST /v1/compare: check the limits, score through the batcher, echo the metadata back."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from model import Comparison, Scorer, ScoreResult
from service.auth import score_access
from service.deps import BatcherDep, SettingsDep
from service.errors import DeadlineExceeded, TextTooLong, overloaded_responses, problem_responses
from service.limits import check_texts
from service.schemas import (
    COMPARE_EXAMPLE,
    COMPARE_REQUEST_EXAMPLES,
    SCORE_BATCH_EXAMPLE,
    SCORE_EXAMPLE,
    SCORE_REQUEST_EXAMPLES,
    CompareRequest,
    CompareResponse,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
    ok_examples,
)

router = APIRouter(tags=["scoring"], dependencies=[Depends(score_access)])  # a key only if score_requires_key


def _blank_text() -> RequestValidationError:
    """The error a blank text gets, from the same validation FastAPI runs on the body."""
    try:
        ScoreRequest.model_validate({"text": " "})
    except ValidationError as error:
        return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])
    raise AssertionError("a blank text must not validate")


def _errors(instance: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI examples of the problems a scoring route answers."""
    return problem_responses(
        instance,
        TextTooLong("texts[2]", 20001, 20000),
        _blank_text(),
        DeadlineExceeded(30.0),
    ) | overloaded_responses(instance)


@router.post(
    "/v1/score",
    summary="Score one text or several",
    responses={**ok_examples(one_text=SCORE_EXAMPLE, several_texts=SCORE_BATCH_EXAMPLE), **_errors("/v1/score")},
)
async def score(
    request: Request,
    body: Annotated[ScoreRequest, Body(openapi_examples=SCORE_REQUEST_EXAMPLES)],
    batcher: BatcherDep,
    settings: SettingsDep,
) -> ScoreResponse | ScoreBatchResponse:
    """Score texts 0-100 for effusiveness, with band, interval, sentence contributions and markers.

    `{"text": ...}` answers one result; `{"texts": [...]}` answers `{"results": [...]}` in request order.
    More than `max_texts` texts, or a text over `max_chars` characters, is 413; an empty or blank text is 422.
    """
    items = body.items()
    fields = ["text"] if body.single else [f"texts[{i}]" for i in range(len(items))]
    texts = check_texts({field: item.text for field, item in zip(fields, items, strict=True)}, settings)
    results = await batcher.score(texts, timeout_s=settings.request_timeout_s, abandon=partial(_disconnected, request))
    scored = [{**result.to_dict(), **item.echo()} for item, result in zip(items, results, strict=True)]
    if body.single:
        return ScoreResponse.model_validate(scored[0])
    return ScoreBatchResponse.model_validate({"results": scored})


@router.post(
    "/v1/compare",
    summary="Compare two texts",
    responses={**ok_examples(comparison=COMPARE_EXAMPLE), **_errors("/v1/compare")},
)
async def compare(
    request: Request,
    body: Annotated[CompareRequest, Body(openapi_examples=COMPARE_REQUEST_EXAMPLES)],
    batcher: BatcherDep,
    settings: SettingsDep,
) -> CompareResponse:
    """How much warmer or cooler `b` is than `a`, and why: marker counts and the sentences without a counterpart."""
    a, b = body.a, body.b
    texts = check_texts({"a": a.text, "b": b.text}, settings)
    comparison = await batcher.score(
        texts, _compare_pair, timeout_s=settings.request_timeout_s, abandon=partial(_disconnected, request)
    )
    data = comparison.to_dict()
    data["a"].update(a.echo())
    data["b"].update(b.echo())
    return CompareResponse.model_validate(data)


def _compare_pair(scorer: Scorer, results: list[ScoreResult]) -> Comparison:
    return scorer.comparison(*results)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
