"""POST /v1/score and POST /v1/compare: check limits, queue the texts for the batcher, echo metadata back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, Request

from model import Comparison, Scorer, ScoreResult
from service.auth import score_access
from service.deps import BatcherDep, SettingsDep
from service.errors import ClientGone, DeadlineExceeded, TextTooLong, TooManyTexts
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
    problem_example,
)
from service.settings import Settings

T = TypeVar("T")

router = APIRouter(tags=["scoring"], dependencies=[Depends(score_access)])  # a key only if score_requires_key
BLANK = "Value error, text must contain words; found only whitespace"


def _errors(instance: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI examples of the problems a scoring route answers."""
    return {
        413: problem_example(
            413,
            "text-too-long",
            "Text too long",
            "texts[2] has 20001 characters; the limit is 20000",
            instance,
            length=20001,
            limit=20000,
            field="texts[2]",
        ),
        422: problem_example(
            422,
            "invalid-request",
            "Invalid request",
            f"1 field is invalid: body.text: {BLANK}",
            instance,
            errors=[{"field": "body.text", "type": "value_error", "message": BLANK}],
        ),
        429: problem_example(
            429,
            "overloaded",
            "Too many requests",
            "the scoring queue holds 256 texts and this request adds 3; the limit is 256. Retry after 2 s",
            instance,
            queued=256,
            limit=256,
            retry_after=2,
        ),
        503: problem_example(
            503,
            "deadline-exceeded",
            "Deadline exceeded",
            "the request was not scored within its deadline of 30 s",
            instance,
            timeout_s=30.0,
        ),
    }


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
    texts = [item.text for item in items]
    _check_limits(texts, ["text"] if body.single else [f"texts[{i}]" for i in range(len(texts))], settings)
    future = batcher.submit(texts, timeout_s=settings.request_timeout_s)
    results = await _outcome(request, future, settings.request_timeout_s)
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
    _check_limits([a.text, b.text], ["a", "b"], settings)
    future = batcher.submit([a.text, b.text], _compare_pair, timeout_s=settings.request_timeout_s)
    data = (await _outcome(request, future, settings.request_timeout_s)).to_dict()
    data["a"].update(a.echo())
    data["b"].update(b.echo())
    return CompareResponse.model_validate(data)


def _check_limits(texts: Sequence[str], fields: Sequence[str], settings: Settings) -> None:
    if len(texts) > settings.max_texts:
        raise TooManyTexts(len(texts), settings.max_texts)
    for field, text in zip(fields, texts, strict=True):
        if len(text) > settings.max_chars:
            raise TextTooLong(field, len(text), settings.max_chars)


def _compare_pair(scorer: Scorer, results: list[ScoreResult]) -> Comparison:
    return scorer.comparison(*results)


async def _outcome(request: Request, future: asyncio.Future[T], timeout_s: float) -> T:
    """Wait for ``future`` unless the client disconnects or the deadline passes first; withdraw it if so."""
    gone = asyncio.ensure_future(_disconnected(request))
    waiting: set[asyncio.Future[Any]] = {future, gone}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        if gone in done:
            raise ClientGone()
        raise DeadlineExceeded(timeout_s)
    finally:
        future.cancel()  # a no-op once resolved; otherwise the batcher drops the request
        gone.cancel()


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
