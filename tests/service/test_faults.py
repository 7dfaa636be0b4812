"""Faults the service must ride out: its database going away and coming back, a damaged version on disk.

The outage runs on a private PostgreSQL server (tests/postgres.py) that the test stops and starts again while a
writer keeps storing messages: every write is acknowledged (201) or refused with 503 and ``Retry-After``, never a
500, and every acknowledged write is in the database afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.store.models import Message
from tests.postgres import PostgresServer, binaries, fresh_database
from tests.service.store_helpers import assert_problem, bearer, database_of, issue_key


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, to stop and start."""
    if binaries() is None:
        pytest.skip("needs the PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql")
    with PostgresServer.temporary() as server:
        yield server


def test_database_outage_is_503_with_retry_after_and_loses_no_acknowledged_write(
    own_postgres: PostgresServer, make_client: Callable[..., TestClient]
) -> None:
    with fresh_database(own_postgres.url) as url:
        client = make_client(database_url=url)
        token = issue_key(client, "label")  # verified once, then remembered: the outage tests the store, not keys
        acknowledged: list[int] = []
        statuses: list[int] = []
        writing = threading.Event()
        writing.set()

        def write(number: int) -> None:
            response = client.post("/v1/messages", json={"text": f"Dear friend, note {number}."}, headers=bearer(token))
            statuses.append(response.status_code)
            if response.status_code == 201:
                acknowledged.append(response.json()["id"])

        def keep_writing() -> None:
            number = 1000
            while writing.is_set():
                write(number)
                number += 1

        for number in range(5):
            write(number)
        writer = threading.Thread(target=keep_writing)
        writer.start()
        own_postgres.stop()
        refused_write = client.post("/v1/messages", json={"text": "Dear friend."}, headers=bearer(token))
        refused_read = client.get("/v1/messages")
        own_postgres.start()
        for number in range(5, 10):
            write(number)
        writing.clear()
        writer.join()

        for refused in (refused_write, refused_read):
            body = assert_problem(refused, 503, "database-unavailable")
            assert refused.headers["Retry-After"] == "5" and body["retry_after"] == 5
        assert set(statuses) <= {201, 503}, statuses
        assert statuses[:5] == [201] * 5 and statuses[-5:] == [201] * 5  # up before, and fully back after
        with database_of(client).sessions() as session:
            stored = set(session.scalars(select(Message.id)))
        assert stored == set(acknowledged)
        assert client.get("/readyz").status_code == 200


def test_activate_a_truncated_version_is_refused_by_name_and_the_previous_keeps_serving(
    make_client: Callable[..., TestClient], data_dir: Path, tiny_version: Path
) -> None:
    client = make_client()
    registry = client.app.state.registry  # type: ignore[attr-defined]
    registry.install(tiny_version, "tiny-0003")
    weights = max(
        (p for p in (data_dir / "models" / "tiny-0003").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut off halfway, as a full disk would
    admin = bearer(issue_key(client, "admin"))

    refused = client.post("/v1/models/tiny-0003/activate", headers=admin)
    scored = client.post("/v1/score", json={"text": "Dear friend."})

    body = assert_problem(refused, 500, "model-artifact-corrupt")
    assert "tiny-0003" in body["detail"] and weights.name in body["detail"]
    assert scored.status_code == 200 and scored.json()["model_version"] == "tiny-0001"
    assert registry.active_version() == "tiny-0001"
