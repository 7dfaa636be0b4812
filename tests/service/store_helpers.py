"""Helpers of the store, auth and training tests: issue keys in an app's database, store messages through the API."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import httpx
from fastapi.testclient import TestClient

from service.deps import get_training_jobs
from service.jobs import TrainingJobs
from service.keys import create_key
from service.store.db import Database
from tests.service.helpers import app_of

TEXTS = [
    "Dear friend, warmest congratulations on the national day of your great country.",
    "We note the letter received from your ministry.",
    "My dear brother, our unbreakable friendship will never be forgotten by generations of our peoples.",
    "Please accept my congratulations on the occasion of your national day.",
]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The problem+json body of ``response``, after checking its status, media type and type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (f"urn:diplotone:problem:{slug}", status)
    return body


def database_of(client: TestClient) -> Database:
    database: Database = app_of(client).state.database
    return database


def issue_key(client: TestClient, scope: str, name: str = "test") -> str:
    """A new key of ``scope`` in the client's app database; returns the token."""
    with database_of(client).sessions() as session:
        return create_key(session, scope, name).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def store(client: TestClient, token: str, text: str = TEXTS[0], **fields: Any) -> dict[str, Any]:
    """Store one message through the API and return its body (asserting 201)."""
    response = client.post("/v1/messages", json={"text": text, **fields}, headers=bearer(token))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# A stand-in for `python -m training`, run as `python -c SCRIPT --snapshot ... --outcome FILE ...`.
FAKE_TRAINER_FAILS = """
import json, sys
outcome = sys.argv[sys.argv.index("--outcome") + 1]
open(outcome, "w").write(json.dumps({"error": "ValueError: the fake trainer always fails"}))
sys.exit(1)
"""
FAKE_TRAINER_SLEEPS = "import time; time.sleep(120)"


def use_trainer(client: TestClient, script: str) -> TrainingJobs:
    """Make the app's training runs start ``python -c script`` instead of the real trainer."""
    app = app_of(client)
    real: TrainingJobs = app.state.training_jobs
    jobs = TrainingJobs(
        real.database,
        replace(real.plan, command=(sys.executable, "-c", script)),
        real.switch,
        poll_s=0.05,
        lease_s=real.lease_s,
    )
    app.dependency_overrides[get_training_jobs] = lambda: jobs
    return jobs
