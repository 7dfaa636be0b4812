"""API keys on every write route: 401 without a valid key, 403 below the route's scope, through with it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from diplotone.cli import app as cli
from service.app import create_app
from service.keys import revoke_key, scope_allows
from service.settings import Settings
from tests.postgres import BACKENDS
from tests.service.store_helpers import (
    FAKE_TRAINER_FAILS,
    TEXTS,
    assert_problem,
    bearer,
    database_of,
    issue_key,
    store,
    use_trainer,
)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test here that touches the store runs on SQLite and on PostgreSQL."""
    return str(request.param)


@dataclass(frozen=True)
class WriteRoute:
    method: str
    path: str
    body: dict[str, Any] | None
    success: int


def _write_routes(client: TestClient) -> list[WriteRoute]:
    """Every write route with a valid request, on two stored messages."""
    token = issue_key(client, "label")
    a, b = store(client, token, TEXTS[0])["id"], store(client, token, TEXTS[1])["id"]
    return [
        WriteRoute("POST", "/v1/messages", {"text": TEXTS[2]}, 201),
        WriteRoute("PUT", f"/v1/messages/{a}/label", {"annotator": "ana", "score": 50}, 200),
        WriteRoute("POST", "/v1/pairs", {"warmer": a, "cooler": b, "annotator": "ana"}, 201),
        WriteRoute("POST", "/v1/training-runs", None, 202),
        WriteRoute("POST", "/v1/models/tiny-0001/activate", None, 200),
    ]


ROUTE_NAMES = ["create-messages", "label", "create-pair", "start-training-run", "activate-model"]
ROUTE_SCOPES = ["label", "label", "label", "admin", "admin"]


@pytest.fixture
def routed(client: TestClient) -> Iterator[tuple[TestClient, list[WriteRoute]]]:
    jobs = use_trainer(client, FAKE_TRAINER_FAILS)  # an allowed training-run request starts a harmless process
    yield client, _write_routes(client)
    jobs.stop()


def _call(client: TestClient, route: WriteRoute, headers: dict[str, str]) -> Any:
    return client.request(route.method, route.path, json=route.body, headers=headers)


@pytest.mark.parametrize("index", range(5), ids=ROUTE_NAMES)
def test_write_route_without_a_key_is_401(routed: tuple[TestClient, list[WriteRoute]], index: int) -> None:
    client, routes = routed

    response = _call(client, routes[index], {})

    body = assert_problem(response, 401, "api-key-missing")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert body["detail"].startswith(f"this route needs an API key with scope '{ROUTE_SCOPES[index]}'")


@pytest.mark.parametrize("index", range(5), ids=ROUTE_NAMES)
@pytest.mark.parametrize("token", ["dpt_0123456789abcdef_" + "x" * 43, "not-a-key"], ids=["unknown", "malformed"])
def test_write_route_with_an_invalid_key_is_401(
    routed: tuple[TestClient, list[WriteRoute]], index: int, token: str
) -> None:
    client, routes = routed

    response = _call(client, routes[index], bearer(token))

    body = assert_problem(response, 401, "api-key-unknown")
    found = "key id 0123456789abcdef" if token.startswith("dpt_") else "a value not of the form"
    assert found in body["detail"]


@pytest.mark.parametrize("index", range(5), ids=ROUTE_NAMES)
def test_write_route_with_a_key_below_its_scope_is_403(routed: tuple[TestClient, list[WriteRoute]], index: int) -> None:
    client, routes = routed
    required = ROUTE_SCOPES[index]
    lower = "score" if required == "label" else "label"

    response = _call(client, routes[index], bearer(issue_key(client, lower)))

    body = assert_problem(response, 403, "api-key-scope")
    assert (body["required"], body["found"]) == (required, lower)
    assert f"this route needs scope '{required}' or above" in body["detail"]


SUFFICIENT = [
    pytest.param(index, scope, id=f"{name}-{scope}")
    for index, (name, required) in enumerate(zip(ROUTE_NAMES, ROUTE_SCOPES, strict=True))
    for scope in ("label", "admin")
    if scope_allows(scope, required)
]


@pytest.mark.parametrize(("index", "scope"), SUFFICIENT)
def test_write_route_with_a_key_of_its_scope_or_above_succeeds(
    routed: tuple[TestClient, list[WriteRoute]], index: int, scope: str
) -> None:
    client, routes = routed
    route = routes[index]

    response = _call(client, route, bearer(issue_key(client, scope)))

    assert response.status_code == route.success, response.text
    assert response.headers["content-type"] == "application/json"


def test_key_in_the_x_api_key_header_is_accepted(client: TestClient) -> None:
    token = issue_key(client, "label")

    response = client.post("/v1/messages", json={"text": TEXTS[0]}, headers={"X-API-Key": token})

    assert response.status_code == 201
    assert response.json()["text"] == TEXTS[0]


def test_revoked_key_is_401(client: TestClient) -> None:
    token = issue_key(client, "label")
    with database_of(client).sessions() as session:
        revoke_key(session, token.split("_")[1])

    response = client.post("/v1/messages", json={"text": TEXTS[0]}, headers=bearer(token))

    assert_problem(response, 401, "api-key-unknown")


def test_scoring_models_and_runs_are_open_by_default_and_stored_messages_need_read(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(open_reads=False)  # the service's default (the test fixture opens reads)
    responses = [client.get(path) for path in ("/v1/models", "/v1/training-runs")]
    responses.append(client.post("/v1/score", json={"text": TEXTS[0]}))
    assert [r.status_code for r in responses] == [200, 200, 200]

    for path in ("/v1/messages", "/v1/messages/1", "/v1/timeline?sender=A&recipient=B"):
        assert assert_problem(client.get(path), 401, "api-key-missing")["required"] == "read"
        below = client.get(path, headers=bearer(issue_key(client, "score")))
        assert assert_problem(below, 403, "api-key-scope")["found"] == "score"
        for scope in ("read", "label", "admin"):  # label and admin keys read too
            assert client.get(path, headers=bearer(issue_key(client, scope))).status_code in (200, 404), scope


def test_open_reads_opens_them_and_the_openapi_says_which_operations_are_open(
    make_client: Callable[..., TestClient],
) -> None:
    closed, opened = make_client(open_reads=False), make_client(open_reads=True)

    assert opened.get("/v1/messages").status_code == 200
    for client, reads_open in ((closed, False), (opened, True)):
        paths = client.get("/openapi.json").json()["paths"]
        assert ({} in paths["/v1/messages"]["get"]["security"]) is reads_open
        assert {} in paths["/v1/score"]["post"]["security"]
        assert {} not in paths["/v1/pairs"]["post"]["security"]


def test_scoring_needs_a_key_when_the_setting_asks(make_client: Callable[..., TestClient]) -> None:
    client = make_client(score_requires_key=True)

    missing = client.post("/v1/score", json={"text": TEXTS[0]})
    scored = client.post("/v1/score", json={"text": TEXTS[0]}, headers=bearer(issue_key(client, "score")))
    by_label_key = client.post("/v1/score", json={"text": TEXTS[0]}, headers=bearer(issue_key(client, "label")))
    listing = client.get("/v1/messages")

    assert assert_problem(missing, 401, "api-key-missing")["required"] == "score"
    assert (scored.status_code, scored.json()["model_version"]) == (200, "tiny-0001")
    assert by_label_key.status_code == 200
    assert_problem(listing, 401, "api-key-missing")


def test_key_created_by_the_cli_is_accepted_by_the_api(
    make_settings: Callable[..., Settings], data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIPLOTONE_DATABASE_URL", database_url)  # the CLI finds the service's database as it would
    runner = CliRunner()
    created = runner.invoke(
        cli, ["keys", "create", "--scope", "label", "--name", "annotation tool", "--data-dir", str(data_dir)]
    )
    refused = runner.invoke(cli, ["keys", "create", "--scope", "root", "--data-dir", str(data_dir)])
    token = created.stdout.strip()

    with TestClient(create_app(make_settings())) as client:
        response = client.post("/v1/messages", json={"text": TEXTS[0]}, headers=bearer(token))

    assert created.exit_code == 0
    assert token.startswith("dpt_")
    assert refused.exit_code == 2
    assert "scope must be one of score, read, label, admin; found 'root'" in refused.output
    assert response.status_code == 201
