"""The catalogue of bad input, on every route that takes text: each gets a 4xx problem+json saying what was expected
and what was found, never a 500; odd but valid text (other scripts, markup, SQL) is accepted and kept verbatim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from model import Registry
from service.app import create_app
from service.body_guard import BodyGuard
from service.schemas import MAX_ID
from service.settings import Settings
from tests.service.store_helpers import TEXTS, bearer, issue_key, store

JSON = {"content-type": "application/json"}
LIMIT = 1024 * 1024  # the catalogue's body limit


@dataclass(frozen=True)
class TextRoute:
    """A route that takes text, and a body holding ``text`` where its text goes (as JSON source, unescaped)."""

    name: str
    method: str
    path: str
    body: Callable[[str], str]  # text as a JSON string literal (already quoted) → the whole body
    success: int


def _route_list(message_id: int, other_id: int) -> list[TextRoute]:
    return [
        TextRoute("score", "POST", "/v1/score", lambda t: f'{{"text": {t}}}', 200),
        TextRoute("score-texts", "POST", "/v1/score", lambda t: f'{{"texts": ["Dear friend", {t}]}}', 200),
        TextRoute("compare", "POST", "/v1/compare", lambda t: f'{{"a": "Dear friend", "b": {{"text": {t}}}}}', 200),
        TextRoute("store", "POST", "/v1/messages", lambda t: f'{{"text": {t}, "sender": "A", "recipient": "B"}}', 201),
        TextRoute(
            "store-bulk",
            "POST",
            "/v1/messages",
            lambda t: f'{{"messages": [{{"text": "Dear friend"}}, {{"text": {t}}}]}}',
            201,
        ),
        TextRoute(
            "label", "PUT", f"/v1/messages/{message_id}/label", lambda t: f'{{"annotator": {t}, "score": 50}}', 200
        ),
        TextRoute(
            "pair",
            "POST",
            "/v1/pairs",
            lambda t: f'{{"warmer": {message_id}, "cooler": {other_id}, "annotator": {t}}}',
            201,
        ),
    ]


ROUTE_NAMES = ["score", "score-texts", "compare", "store", "store-bulk", "label", "pair"]


@dataclass
class Caller:
    client: TestClient
    headers: dict[str, str]
    routes: dict[str, TextRoute]

    def send(self, route: TextRoute, body: str | bytes, **headers: str) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return self.client.request(route.method, route.path, content=content, headers={**self.headers, **headers})


@pytest.fixture(scope="module")
def caller(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Caller]:
    """One app for the catalogue (starting one per case would take minutes): an admin key, two stored messages,
    and a client that answers a server error as a 500 rather than raising it."""
    data_dir = tmp_path_factory.mktemp("bad-input")
    registry = Registry(data_dir / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.activate("tiny-0001")
    settings = Settings(data_dir=data_dir, engine="torch", model_threads=1, max_body_bytes=LIMIT)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        token = issue_key(client, "admin")
        a, b = store(client, token, TEXTS[0])["id"], store(client, token, TEXTS[1])["id"]
        routes = {route.name: route for route in _route_list(a, b)}
        yield Caller(client, {**bearer(token), **JSON}, routes)


def assert_refused(response: httpx.Response, status: int, slug: str, *phrases: str) -> dict[str, Any]:
    """A problem+json of ``status`` and ``slug`` whose detail holds each of ``phrases``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:diplotone:problem:{slug}", body
    for phrase in phrases:
        assert phrase in body["detail"], body["detail"]
    return body


# ----------------------------------------------------------------------------------------------- bad text, each route

BAD_TEXT = [  # (case, JSON string literal, status, slug, phrases in the detail)
    ("empty", '""', 422, "invalid-request", ("body.", "found")),
    ("blank", '"  \\n\\t "', 422, "invalid-request", ("body.", "found")),
    ("lone high surrogate", '"Dear \\ud800 friend"', 422, "invalid-text", ("expected Unicode text", "U+D800")),
    ("lone low surrogate", '"Dear \\udfff"', 422, "invalid-text", ("U+DFFF at character 5",)),
    ("NUL", '"Dear\\u0000friend"', 422, "invalid-text", ("found a NUL character at character 4",)),
    ("a number", "42", 422, "invalid-request", ("found the integer 42",)),
    ("an array", '["Dear friend"]', 422, "invalid-request", ("found an array of 1 items",)),
]


@pytest.mark.parametrize("route_name", ROUTE_NAMES)
@pytest.mark.parametrize(("case", "literal", "status", "slug", "phrases"), BAD_TEXT, ids=[c[0] for c in BAD_TEXT])
def test_bad_text_is_refused_naming_what_was_expected_and_found(
    caller: Caller, route_name: str, case: str, literal: str, status: int, slug: str, phrases: tuple[str, ...]
) -> None:
    route = caller.routes[route_name]
    if route_name == "score-texts" and case == "an array":
        pytest.skip("an item of texts may be an object or a string; an array in it is the 'a number' case")

    assert_refused(caller.send(route, route.body(literal)), status, slug, *phrases)


def test_a_lone_surrogate_names_the_item_of_a_bulk_write_and_stores_none(caller: Caller) -> None:
    route = caller.routes["store-bulk"]
    before = caller.client.get("/v1/messages", headers=caller.headers).json()["messages"]

    body = assert_refused(caller.send(route, route.body('"x \\ud83d y"')), 422, "invalid-text")

    assert body["field"] == "body.messages[1].text"
    assert caller.client.get("/v1/messages", headers=caller.headers).json()["messages"] == before


# ------------------------------------------------------------------------------------------ bad bodies, each route

BAD_BODIES = [  # (case, body bytes given the route's valid body, status, slug, phrase)
    ("invalid UTF-8", lambda ok: ok.replace(b"Dear", b"D\xffar"), 400, "malformed-json", "found byte 0xff"),
    ("truncated JSON", lambda ok: ok[:-3], 400, "malformed-json", "expected one JSON document"),
    ("not JSON", lambda ok: b"text=Dear+friend", 400, "malformed-json", "line 1, column 1"),
    ("duplicate key", lambda ok: ok[:-1] + b', "zz": 1, "zz": 2}', 400, "malformed-json", "'zz' more than once"),
    ("NaN", lambda ok: ok[:-1] + b', "zz": NaN}', 400, "malformed-json", "found NaN"),
    ("deeply nested", lambda ok: b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "malformed-json", "32 deep"),
    ("unknown field", lambda ok: ok[:-1] + b', "txet": "Dear"}', 422, "invalid-request", "txet"),
]


@pytest.mark.parametrize("route_name", ROUTE_NAMES)
@pytest.mark.parametrize(("case", "spoil", "status", "slug", "phrase"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_body_is_refused_before_the_route(
    caller: Caller,
    route_name: str,
    case: str,
    spoil: Callable[[bytes], bytes],
    status: int,
    slug: str,
    phrase: str,
) -> None:
    route = caller.routes[route_name]
    valid = route.body('"Dear friend"').encode()

    assert_refused(caller.send(route, spoil(valid)), status, slug, phrase)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
@pytest.mark.parametrize("route_name", ROUTE_NAMES)
def test_a_body_that_is_not_json_by_its_content_type_is_415(caller: Caller, route_name: str, content_type: str) -> None:
    route = caller.routes[route_name]

    body = assert_refused(
        caller.send(route, route.body('"Dear friend"'), **{"content-type": content_type}),
        415,
        "unsupported-media-type",
        "expected a body of Content-Type application/json",
    )
    assert body["found"] == content_type


@pytest.mark.parametrize("route_name", ROUTE_NAMES)
def test_a_50_mb_body_is_413_from_its_content_length(caller: Caller, route_name: str) -> None:
    route = caller.routes[route_name]
    huge = route.body(json.dumps("Dear friend " * (50 * 1024 * 1024 // 12)))

    body = assert_refused(caller.send(route, huge), 413, "body-too-large", "found a Content-Length of")
    assert body["limit"] == LIMIT


def test_a_body_streaming_past_the_limit_is_413_before_it_is_parsed() -> None:
    """No Content-Length (chunked): refused as the bytes pass the limit, the rest never read, the app never called."""
    chunks = [b'{"text": "'] + [b"a" * 65536] * 50  # 3.2 MiB offered, the limit is 1 MiB
    pulled, sent, reached = 0, [], []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    scope = {"type": "http", "method": "POST", "path": "/v1/score", "headers": [], "query_string": b""}
    asyncio.run(BodyGuard(app, max_body_bytes=LIMIT)(scope, receive, send))  # type: ignore[arg-type]

    assert sent[0]["status"] == 413
    assert b"found more than 1048576 bytes as it streamed" in sent[1]["body"]
    assert pulled == 1 + LIMIT // 65536  # the opening, then 16 chunks: the 16th passes the limit and reading stops
    assert reached == []


def test_the_body_limit_is_reported_by_info(caller: Caller) -> None:
    assert caller.client.get("/v1/info").json()["limits"]["max_body_bytes"] == LIMIT


# ------------------------------------------------------------------------------ odd but valid text: kept verbatim

VERBATIM = [
    ("mixed scripts", "Dear friend, 亲爱的朋友, дорогой друг, 친애하는 친구"),
    ("right to left", "صديقي العزيز، أحر التهاني \u202eبمناسبة\u202c العيد الوطني. חבר יקר"),
    ("HTML and script", '<script>alert("x")</script><b onmouseover="steal()">Dear friend</b>'),
    ("SQL", "Dear friend'); DROP TABLE messages; -- \" OR 1=1 --"),
    ("BOM inside", "\ufeffDear friend \u200d\ufe0f"),
]


@pytest.mark.parametrize("route_name", ROUTE_NAMES)
@pytest.mark.parametrize(("case", "text"), VERBATIM, ids=[c[0] for c in VERBATIM])
def test_odd_text_is_accepted_and_given_back_verbatim(caller: Caller, route_name: str, case: str, text: str) -> None:
    route = caller.routes[route_name]

    response = caller.send(route, route.body(json.dumps(text)))

    assert response.status_code == route.success, response.text
    assert response.headers["content-type"] == "application/json"
    if route.name.startswith(("score", "compare")):  # scored: its sentences are spans of the text, verbatim
        body = response.json()
        result = {"score": body, "score-texts": body.get("results", [{}, {}])[1], "compare": body.get("b")}[route.name]
        spans = [(s["start"], s["end"], s["text"]) for s in result["sentences"]]
        assert all(text[start:end] == span for start, end, span in spans)
        assert "".join(span for *_, span in spans).replace(" ", "") == text.replace(" ", "")
    else:
        assert text in _strings(response.json()), "the text did not come back verbatim"


def test_markup_and_sql_are_stored_verbatim_and_never_executed(caller: Caller) -> None:
    texts = [text for _, text in VERBATIM]
    stored = [caller.client.post("/v1/messages", json={"text": t}, headers=caller.headers) for t in texts]
    assert [r.status_code for r in stored] == [201] * len(texts)

    for response, text in zip(stored, texts, strict=True):
        read = caller.client.get(f"/v1/messages/{response.json()['id']}", headers=caller.headers)
        assert read.json()["text"] == text
    listed = caller.client.get("/v1/messages?limit=1000", headers=caller.headers).json()["messages"]
    assert {m["id"] for m in listed} >= {r.json()["id"] for r in stored}  # the table is there, with them all


def test_a_body_with_a_leading_bom_is_read_as_json(caller: Caller) -> None:
    """RFC 8259 lets a parser ignore a byte order mark; refusing it would only punish Windows tools."""
    route = caller.routes["score"]

    response = caller.send(route, b"\xef\xbb\xbf" + route.body('"Dear friend"').encode())

    assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------------------ numbers, ids and paths

TOO_BIG = 10**30


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", f"/v1/messages?after={TOO_BIG}", None, "query.after"),
        ("GET", f"/v1/messages?after={MAX_ID + 1}", None, "query.after"),
        ("GET", "/v1/messages?limit=1e999", None, "query.limit"),
        ("GET", f"/v1/messages/{TOO_BIG}", None, "path.message_id"),
        ("GET", f"/v1/training-runs/{TOO_BIG}", None, "path.run_id"),
        ("PUT", f"/v1/messages/{TOO_BIG}/label", '{"annotator": "a", "score": 5}', "path.message_id"),
        ("POST", "/v1/pairs", f'{{"warmer": {TOO_BIG}, "cooler": 1, "annotator": "a"}}', "body.warmer"),
        ("PUT", "/v1/messages/1/label", '{"annotator": "a", "score": 1e999}', "body.score"),
        ("PUT", "/v1/messages/1/label", '{"annotator": "a", "score": -1e308}', "body.score"),
        ("POST", "/v1/pairs", '{"warmer": 1e999, "cooler": 1, "annotator": "a"}', "body.warmer"),
    ],
)
def test_huge_numbers_are_422_naming_the_range(
    caller: Caller, method: str, path: str, body: str | None, field: str
) -> None:
    response = caller.client.request(method, path, content=body, headers=caller.headers)

    problem = assert_refused(response, 422, "invalid-request", field)
    assert "found" in problem["detail"]


def test_a_cursor_past_the_id_range_says_the_range(caller: Caller) -> None:
    response = caller.client.get(f"/v1/messages?after={TOO_BIG}", headers=caller.headers)

    assert_refused(response, 422, "invalid-request", f"less than or equal to {MAX_ID}", f"found '{TOO_BIG}'")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/timeline?sender=%00&recipient=B", 422),
        ("/v1/timeline?sender=%ED%A0%80&recipient=B", 422),  # a surrogate, percent-encoded
        ("/v1/timeline?sender=%FF&recipient=B", 422),
        ("/v1/messages?sender=A%00B", 422),
    ],
)
def test_bad_text_in_a_query_is_422_naming_the_parameter(caller: Caller, path: str, status: int) -> None:
    response = caller.client.get(path, headers=caller.headers)

    assert_refused(response, status, "invalid-text", "query.", "expected")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/..%2F..%2Fetc%2Fpasswd/activate",
        "/v1/models/%2e%2e/activate",
        "/v1/models/..hidden/activate",
        "/v1/models/tiny-0001%00/activate",
        "/v1/models/..%5C..%5Cwindows/activate",
    ],
)
def test_path_traversal_in_a_version_never_leaves_the_registry(caller: Caller, path: str) -> None:
    response = caller.client.post(path, headers=caller.headers)

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert caller.client.get("/v1/models", headers=caller.headers).json()["serving"] == "tiny-0001"


@pytest.mark.parametrize("path", ["/v1/messages/..%2F1", "/v1/messages/1%2F..%2F2", "/v1/training-runs/..%2F1"])
def test_path_traversal_in_an_id_is_refused(caller: Caller, path: str) -> None:
    response = caller.client.get(path, headers=caller.headers)

    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value (to find a text given back somewhere in a response)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []
