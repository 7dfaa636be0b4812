"""Security: keys never reach the logs, CORS is off unless configured, keys are listed and revoked by prefix only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from diplotone.cli import app as cli
from service.app import create_app
from service.settings import Settings
from tests.postgres import BACKENDS
from tests.service.store_helpers import TEXTS, bearer, issue_key

ORIGIN = "https://analysts.example"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_api_keys_never_appear_in_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    label, admin = issue_key(client, "label"), issue_key(client, "admin")
    wrong_secret = label[:-4] + ("AAAA" if not label.endswith("AAAA") else "BBBB")
    caplog.set_level(logging.DEBUG)  # every logger, every level

    answers = [
        client.post("/v1/messages", json={"text": TEXTS[0]}, headers=bearer(label)),
        client.post("/v1/messages", json={"text": TEXTS[0]}, headers={"X-API-Key": label}),
        client.post("/v1/messages", json={"text": TEXTS[0]}, headers=bearer(wrong_secret)),  # 401
        client.post("/v1/models/nope/activate", headers=bearer(label)),  # 403: below the scope
        client.post("/v1/models/nope/activate", headers=bearer(admin)),  # 404
        client.put("/v1/messages/1/label", json={"annotator": "a", "score": 500}, headers=bearer(label)),  # 422
    ]

    assert [a.status_code for a in answers] == [201, 201, 401, 403, 404, 422]
    logged = caplog.text + " ".join(str(record.args) for record in caplog.records)
    assert caplog.records  # the requests were logged at all, so the check below looked at something
    for token in (label, admin, wrong_secret):
        secret = token.split("_", 2)[2]  # dpt_<id>_<secret>; the secret itself may hold "_"
        assert secret not in logged
        assert all(secret not in answer.text for answer in answers)


def test_cors_is_off_by_default(client: TestClient) -> None:
    preflight = client.options("/v1/score", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    scored = client.post("/v1/score", json={"text": TEXTS[0]}, headers={"Origin": ORIGIN})

    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in scored.headers


def test_cors_allows_the_configured_origins_only(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=[ORIGIN])
    request = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}

    allowed = client.options("/v1/messages", headers={"Origin": ORIGIN, **request})
    other = client.options("/v1/messages", headers={"Origin": "https://elsewhere.example", **request})
    scored = client.post("/v1/score", json={"text": TEXTS[0]}, headers={"Origin": ORIGIN})

    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert scored.headers["access-control-allow-origin"] == ORIGIN


def test_cors_origins_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIPLOTONE_CORS_ORIGINS", f'["{ORIGIN}"]')
    assert Settings().cors_origins == [ORIGIN]


def test_keys_are_listed_and_revoked_by_prefix_only(
    make_settings: Callable[..., Settings], data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIPLOTONE_DATABASE_URL", database_url)
    runner, where = CliRunner(), ["--data-dir", str(data_dir)]
    tokens = [
        runner.invoke(cli, ["keys", "create", "--scope", "label", "--name", name, *where]).stdout.strip()
        for name in ("tool", "other")
    ]
    prefix = tokens[0][: len("dpt_") + 16] + "_…"

    revoked = runner.invoke(cli, ["keys", "revoke", prefix, *where])
    listing = runner.invoke(cli, ["keys", "list", *where])
    again = runner.invoke(cli, ["keys", "revoke", prefix, *where])
    nonsense = runner.invoke(cli, ["keys", "revoke", "not-a-key", *where])
    with TestClient(create_app(make_settings())) as client:
        statuses = [
            client.post("/v1/messages", json={"text": TEXTS[0]}, headers=bearer(token)).status_code for token in tokens
        ]

    assert revoked.exit_code == 0 and revoked.stdout.strip() == f"revoked {prefix}"
    lines = listing.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [token[: len("dpt_") + 16] + "_…" for token in tokens]
    assert "revoked" in lines[0] and "active" in lines[1]
    assert all(token.split("_", 2)[2] not in listing.stdout for token in tokens)
    assert again.exit_code == 2 and f"no active key {prefix}" in again.output
    assert (
        nonsense.exit_code == 2
        and "expected a key prefix dpt_<16 hex digits>_… or a key id" in again.output + nonsense.output
    )
    assert statuses == [401, 201]
