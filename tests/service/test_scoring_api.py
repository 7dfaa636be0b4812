"""POST /v1/score and /v1/compare through HTTP on the tiny model: results, limits, errors, batching, back-pressure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from model import ArtifactCorrupt, EmptyInput, InputTooLong, UnknownVersion
from service.app import create_app
from service.deps import get_batcher
from service.settings import Settings
from tests.service.helpers import (
    Gate,
    app_of,
    asgi_client,
    in_app_loop,
    metric_samples,
    post_then_disconnect,
    wait_until,
)

PROBLEM = "application/problem+json"
TEXTS = [
    "Dear friend, warmest congratulations on your national day. Our friendship is unbreakable.",
    "The ministry has received your letter. We firmly reject the statement.",
    "Please accept my congratulations on your election. I wish you success.",
    "Our brotherly peoples will never forget their shared struggle. Long live our eternal friendship!",
]
METADATA = {"sender": "Kim Jong Un", "recipient": "Vladimir Putin", "date": "2026-06-12", "occasion": "Russia Day"}


def without_metadata(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key not in {"id", *METADATA}}


def assert_same_scoring(batched: dict[str, Any], single: dict[str, Any]) -> None:
    batched, single = without_metadata(batched), without_metadata(single)
    assert batched["score"] == pytest.approx(single["score"], abs=1e-3)
    assert batched["interval"] == pytest.approx(single["interval"], abs=1e-3)
    for ours, theirs in zip(batched["sentences"], single["sentences"], strict=True):
        assert ours == {
            **theirs,
            "score": pytest.approx(theirs["score"], abs=1e-3),
            "contribution": pytest.approx(theirs["contribution"], abs=1e-3),
        }
    assert (batched["band"], batched["markers"]) == (single["band"], single["markers"])


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (f"urn:diplotone:problem:{slug}", status)
    return body


# ------------------------------------------------------------------------------------------------------------ scoring


def test_score_one_text_returns_the_result_with_metadata_echoed(client: TestClient) -> None:
    response = client.post("/v1/score", json={"text": TEXTS[0], "id": "m-1", **METADATA})

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", *METADATA)} == {"id": "m-1", **METADATA}
    # the tiny version's calibration: a constant 12-point half-width (tests/factories.py), clipped to [0, 100]
    low, high = max(0.0, body["score"] - 12.0), min(100.0, body["score"] + 12.0)
    assert body["interval"] == [pytest.approx(low, abs=1e-3), pytest.approx(high, abs=1e-3)]
    assert body["model_version"] == "tiny-0001"
    assert [s["text"] for s in body["sentences"]] == [
        "Dear friend, warmest congratulations on your national day.",
        "Our friendship is unbreakable.",
    ]
    assert {"kind": "superlative", "start": 13, "end": 20, "text": "warmest"} in body["markers"]


def test_score_without_metadata_echoes_nulls(client: TestClient) -> None:
    response = client.post("/v1/score", json={"text": TEXTS[1]})

    assert response.status_code == 200
    assert {key: response.json()[key] for key in ("id", *METADATA)} == dict.fromkeys(("id", *METADATA))


def test_score_texts_returns_results_in_order_with_item_metadata_over_defaults(client: TestClient) -> None:
    texts = [TEXTS[0], {"text": TEXTS[1], "id": "note", "recipient": "Japan"}]

    response = client.post("/v1/score", json={"texts": texts, "sender": "Kim Jong Un", "recipient": "Russia"})

    assert response.status_code == 200
    first, second = response.json()["results"]
    assert (first["sentences"][0]["text"], second["sentences"][0]["text"]) == (
        "Dear friend, warmest congratulations on your national day.",
        "The ministry has received your letter.",
    )
    assert (first["id"], first["sender"], first["recipient"]) == (None, "Kim Jong Un", "Russia")
    assert (second["id"], second["sender"], second["recipient"]) == ("note", "Kim Jong Un", "Japan")


def test_score_texts_scores_each_as_a_single_text_would(client: TestClient) -> None:
    batched = client.post("/v1/score", json={"texts": TEXTS}).json()["results"]

    singles = [client.post("/v1/score", json={"text": text}).json() for text in TEXTS]

    assert len(batched) == len(singles) == len(TEXTS)
    for ours, theirs in zip(batched, singles, strict=True):
        assert_same_scoring(ours, theirs)


def test_score_text_over_max_chars_returns_413_naming_length_and_limit(client: TestClient) -> None:
    response = client.post("/v1/score", json={"text": "friend " * 2857 + "dear!"})  # 20,004 characters

    body = assert_problem(response, 413, "text-too-long")
    assert body["detail"] == "text has 20004 characters; the limit is 20000"
    assert (body["length"], body["limit"], body["field"]) == (20004, 20000, "text")


def test_score_texts_with_one_over_max_chars_returns_413_naming_which(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_chars=100)

    response = client.post("/v1/score", json={"texts": [TEXTS[0][:50], "a" * 101]})

    body = assert_problem(response, 413, "text-too-long")
    assert body["detail"] == "texts[1] has 101 characters; the limit is 100"


def test_score_more_than_max_texts_returns_413(client: TestClient) -> None:
    response = client.post("/v1/score", json={"texts": ["Dear friend."] * 65})

    body = assert_problem(response, 413, "too-many-texts")
    assert body["detail"] == "texts has 65 items; the limit is 64 per request"


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"text": "   \n"}, "body.text", "text must contain words; found only whitespace"),
        ({"text": ""}, "body.text", "text must contain words; found an empty string"),
        ({"texts": ["Dear friend.", " "]}, "body.texts.1.text", "found only whitespace"),
        ({"texts": []}, "body.texts", "at least 1 item"),
        (
            {"text": "Dear friend.", "texts": ["Dear friend."]},
            "body",
            "expected exactly one of 'text' or 'texts'; found both",
        ),
        ({"sender": "Kim"}, "body", "expected exactly one of 'text' or 'texts'; found neither"),
        ({"texts": ["Dear friend."], "id": "x"}, "body", "give each item its own id"),
        ({"text": "Dear friend.", "txt": "typo"}, "body.txt", "Extra inputs are not permitted"),
        ({"text": "Dear friend.", "date": "12/06/2026"}, "body.date", "expected a date as YYYY-MM-DD"),
        ({"text": 42}, "body.text", "valid string"),
    ],
)
def test_score_invalid_body_returns_422_listing_the_field(
    client: TestClient, payload: dict[str, Any], field: str, message: str
) -> None:
    response = client.post("/v1/score", json=payload)

    body = assert_problem(response, 422, "invalid-request")
    assert [error["field"] for error in body["errors"]] == [field]
    assert message in body["errors"][0]["message"]
    assert message in body["detail"]


def test_score_malformed_json_returns_400_naming_where(client: TestClient) -> None:
    response = client.post("/v1/score", content=b'{"text": "Dear', headers={"content-type": "application/json"})

    body = assert_problem(response, 400, "malformed-json")
    assert "line 1, column 10" in body["detail"]


# ------------------------------------------------------------------------------------------------------------ compare


def test_compare_two_texts_returns_delta_and_explanation(client: TestClient) -> None:
    response = client.post("/v1/compare", json={"a": TEXTS[0], "b": {"text": TEXTS[1], "date": "2026-06-12"}})

    assert response.status_code == 200
    body = response.json()
    single_a = client.post("/v1/score", json={"text": TEXTS[0]}).json()
    single_b = client.post("/v1/score", json={"text": TEXTS[1]}).json()
    assert_same_scoring(body["a"], single_a)
    assert_same_scoring(body["b"], single_b)
    assert body["delta"] == pytest.approx(body["b"]["score"] - body["a"]["score"], abs=1e-3)
    assert 0 <= body["p_b_warmer"] <= 1
    assert (body["a"]["date"], body["b"]["date"]) == (None, "2026-06-12")
    friendship = next(m for m in body["explanation"]["markers"] if m["kind"] == "friendship")
    assert (friendship["a"], friendship["b"]) == (2, 0)
    assert body["explanation"]["summary"][0].startswith("B scores")


def test_compare_missing_b_returns_422(client: TestClient) -> None:
    response = client.post("/v1/compare", json={"a": TEXTS[0]})

    body = assert_problem(response, 422, "invalid-request")
    assert [error["field"] for error in body["errors"]] == ["body.b"]


def test_compare_text_over_max_chars_returns_413_naming_the_side(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_chars=100)

    response = client.post("/v1/compare", json={"a": TEXTS[0][:50], "b": "b" * 150})

    body = assert_problem(response, 413, "text-too-long")
    assert body["detail"] == "b has 150 characters; the limit is 100"


# ------------------------------------------------------------------------------------------ batching and back-pressure


def test_score_concurrent_requests_are_batched_together(client: TestClient, gate: Gate) -> None:
    app = app_of(client)
    gate.install(app.state.model_slot)

    async def scenario() -> list[httpx.Response]:
        async with asgi_client(app) as http:
            first = asyncio.ensure_future(http.post("/v1/score", json={"text": TEXTS[0]}))
            await asyncio.to_thread(gate.wait_entered)
            rest = [asyncio.ensure_future(http.post("/v1/score", json={"text": text})) for text in TEXTS[1:]]
            await wait_until(lambda: app.state.batcher.depth == 3)
            gate.open()
            return await asyncio.gather(first, *rest)

    responses = in_app_loop(client, scenario)

    assert [r.status_code for r in responses] == [200] * 4
    assert sorted(map(len, gate.calls)) == [1, 3]
    samples = metric_samples(client)
    assert samples[("diplotone_batch_size_texts_count", ())] == 2
    assert samples[("diplotone_batch_size_texts_bucket", (("le", "1.0"),))] == 1  # so the other batch held more


def test_score_expected_to_wait_past_the_limit_returns_429_naming_the_estimate(
    make_client: Callable[..., TestClient], gate: Gate
) -> None:
    client = make_client(max_queue_wait_s=1.5)
    app = app_of(client)
    gate.install(app.state.model_slot)
    app.state.batcher.cost.observe(tokens=1, seconds=1.0)  # as if measured: a second a token

    async def scenario() -> tuple[httpx.Response, Any]:
        async with asgi_client(app) as http:
            first = asyncio.ensure_future(http.post("/v1/score", json={"text": TEXTS[0]}))
            await asyncio.to_thread(gate.wait_entered)
            queued = asyncio.ensure_future(http.post("/v1/score", json={"text": TEXTS[1]}))
            await wait_until(lambda: app.state.batcher.depth == 1)
            refused = await http.post("/v1/score", json={"text": TEXTS[2]})
            gate.open()
            return refused, await asyncio.gather(first, queued)

    refused, served = in_app_loop(client, scenario)

    body = assert_problem(refused, 429, "overloaded")
    assert body["expected_wait_s"] > body["limit_s"] == 1.5
    assert body["detail"].startswith(f"expected wait {body['expected_wait_s']:.1f} s is over the 1.5 s limit")
    assert body["expected_wait_s"] <= body["retry_after"] < body["expected_wait_s"] + 1
    assert refused.headers["retry-after"] == str(body["retry_after"])
    assert [r.status_code for r in served] == [200, 200]
    samples = metric_samples(client)
    assert samples[("diplotone_refused_requests_total", (("reason", "expected_wait"),))] == 1


def test_openapi_documents_both_429s_of_scoring_with_retry_after(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    for path in ("/v1/score", "/v1/compare", "/v1/messages"):
        response = paths[path]["post"]["responses"]["429"]
        examples = response["content"][PROBLEM]["examples"]
        assert set(examples) == {"QueueFull", "ExpectedWaitTooLong"}, path
        assert examples["ExpectedWaitTooLong"]["value"]["detail"].startswith("expected wait 3.4 s is over the 2.0 s")
        assert "max_queue_wait_s" in response["description"]
        assert "Retry-After" in response["headers"], path


def test_score_when_queue_is_full_returns_429_with_retry_after(
    make_client: Callable[..., TestClient], gate: Gate
) -> None:
    client = make_client(queue_size=2)
    app = app_of(client)
    gate.install(app.state.model_slot)

    async def scenario() -> tuple[httpx.Response, Any]:
        async with asgi_client(app) as http:
            first = asyncio.ensure_future(http.post("/v1/score", json={"text": TEXTS[0]}))
            await asyncio.to_thread(gate.wait_entered)
            queued = asyncio.ensure_future(http.post("/v1/score", json={"texts": TEXTS[1:3]}))
            await wait_until(lambda: app.state.batcher.depth == 2)
            refused = await http.post("/v1/score", json={"text": TEXTS[3]})
            gate.open()
            return refused, await asyncio.gather(first, queued)

    refused, served = in_app_loop(client, scenario)

    body = assert_problem(refused, 429, "overloaded")
    assert int(refused.headers["retry-after"]) >= 1
    assert body["detail"].startswith("the scoring queue holds 2 texts and this request adds 1; the limit is 2")
    assert [r.status_code for r in served] == [200, 200]


def test_score_past_the_deadline_returns_503(make_client: Callable[..., TestClient], gate: Gate) -> None:
    client = make_client(request_timeout_s=0.2)
    gate.install(app_of(client).state.model_slot)  # closed: the model never answers in time

    response = client.post("/v1/score", json={"text": TEXTS[0]})

    body = assert_problem(response, 503, "deadline-exceeded")
    assert body["detail"] == "the request was not scored within its deadline of 0.2 s"


def test_score_whose_client_disconnects_is_dropped_unscored(client: TestClient, gate: Gate) -> None:
    app = app_of(client)
    gate.install(app.state.model_slot)

    async def scenario() -> list[Any]:
        async with asgi_client(app) as http:
            first = asyncio.ensure_future(http.post("/v1/score", json={"text": TEXTS[0]}))
            await asyncio.to_thread(gate.wait_entered)
            sent = await post_then_disconnect(app, "/v1/score", {"text": TEXTS[1]})
            gate.open()
            await first
            return sent

    sent = in_app_loop(client, scenario)

    assert sent[0]["status"] == 499
    assert gate.calls == [[TEXTS[0]]]
    samples = metric_samples(client)
    assert samples[("diplotone_dropped_requests_total", (("reason", "cancelled"),))] == 1
    assert (
        samples[("diplotone_http_requests_total", (("method", "POST"), ("route", "/v1/score"), ("status", "499")))] == 1
    )


def test_score_after_a_swap_uses_the_new_model(client: TestClient, second_scorer: Any) -> None:
    app_of(client).state.model_slot.swap(second_scorer)

    response = client.post("/v1/score", json={"text": TEXTS[0]})

    assert response.status_code == 200
    assert response.json()["model_version"] == "tiny-0002"


# -------------------------------------------------------------------------------------------------- the error mapping


def test_score_before_startup_returns_503(make_settings: Callable[..., Settings]) -> None:
    client = TestClient(create_app(make_settings()))  # not entered: the lifespan has not run

    response = client.post("/v1/score", json={"text": TEXTS[0]})

    body = assert_problem(response, 503, "not-ready")
    assert body["detail"] == "the service has not finished starting: no batcher yet"


class _Raising:
    """A batcher whose scoring raises ``error``."""

    running = True

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def score(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (EmptyInput("text must contain words; found only whitespace"), 422, "empty-text"),
        (InputTooLong(30_000, 20_000), 413, "text-too-long"),
        (UnknownVersion("no model version 'v9'; the registry holds: tiny-0001"), 404, "unknown-model-version"),
        (ArtifactCorrupt("var/models/v1/head.pt", "sha256 is 00…, expected 11…"), 500, "model-artifact-corrupt"),
    ],
)
def test_score_domain_error_maps_to_its_status(client: TestClient, error: Exception, status: int, slug: str) -> None:
    app_of(client).dependency_overrides[get_batcher] = lambda: _Raising(error)

    response = client.post("/v1/score", json={"text": TEXTS[0]})

    body = assert_problem(response, status, slug)
    assert body["detail"] == str(error)
    assert body["instance"] == "/v1/score"


def test_score_unhandled_error_returns_500_without_a_stack_trace(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    app.dependency_overrides[get_batcher] = lambda: _Raising(RuntimeError("secret internals"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/score", json={"text": TEXTS[0]})

    body = assert_problem(response, 500, "internal-error")
    assert body["detail"] == "an unexpected error occurred; it has been logged"
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


def test_unknown_path_returns_404_problem(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "instance": "/v1/nothing-here",
    }


def test_score_with_get_returns_405_problem(client: TestClient) -> None:
    response = client.get("/v1/score")

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == "POST"
    assert response.json()["title"] == "Method Not Allowed"
