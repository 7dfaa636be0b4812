"""Faults the service must ride out: its database going away and coming back, a damaged version on disk, kill -9
in the middle of a bulk write (counted trials: ``DIPLOTONE_FAULT_TRIALS``; RELIABILITY.md reports them).

The outage runs on a private PostgreSQL server (tests/postgres.py) that the test stops and starts again while a
writer keeps storing messages: every write is acknowledged (201) or refused with 503 and ``Retry-After``, never a
500, and every acknowledged write is in the database afterwards.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from service.keys import create_key
from service.store.db import Database
from service.store.models import Message
from tests.postgres import BACKENDS, PostgresServer, binaries, fresh_database
from tests.service.store_helpers import assert_problem, bearer, database_of, issue_key
from tests.trials import TRIALS, record_trial


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


# ------------------------------------------------------------------------------------------- kill -9, counted trials

BATCH = 1000  # messages in one bulk write: the route's limit


def _serve(data_dir: Path, database_url: str, port: int) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "DIPLOTONE_DATA_DIR": str(data_dir),
        "DIPLOTONE_DATABASE_URL": database_url,
        "DIPLOTONE_ENGINE": "torch",
        "DIPLOTONE_MODEL_THREADS": "1",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--port", str(port)]
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise AssertionError("the service did not become ready within 120 s")


def _bulk(port: int, token: str, trial: int, outcome: dict[str, Any]) -> None:
    body = {"messages": [{"text": f"Dear friend, trial {trial} message {n}."} for n in range(BATCH)]}
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body, headers=bearer(token), timeout=300)
        outcome["status"] = response.status_code
    except httpx.TransportError as error:
        outcome["status"] = type(error).__name__  # the server died before it answered


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_during_a_bulk_write_stores_all_of_the_batch_or_none(data_dir: Path, database_url: str) -> None:
    database = Database.open(database_url)
    with database.sessions() as session:
        token = create_key(session, "label", "bulk").token
    database.close()
    port = _free_port()
    server = _serve(data_dir, database_url, port)
    started = time.monotonic()
    _bulk(port, token, -1, outcome := {})  # unkilled: how long a bulk write takes, so kills land across it
    duration = time.monotonic() - started
    server.kill()
    server.wait()
    assert outcome["status"] == 201
    rng = random.Random(13)

    for trial in range(TRIALS):
        database = Database.open(database_url)
        with database.sessions() as session:
            before = session.scalar(select(func.count(Message.id)))
        database.close()
        server = _serve(data_dir, database_url, port)
        outcome = {}
        writer = threading.Thread(target=_bulk, args=(port, token, trial, outcome))
        delay = rng.uniform(0, 1.2 * duration)
        writer.start()
        time.sleep(delay)
        server.send_signal(signal.SIGKILL)
        server.wait()
        writer.join()

        database = Database.open(database_url)  # opens clean: connects and migrates
        with database.sessions() as session:
            stored = session.scalar(select(func.count(Message.id))) - before
            texts = set(session.scalars(select(Message.text).where(Message.text.like(f"% trial {trial} %"))))
            sqlite = database_url.startswith("sqlite")
            check = session.execute(text("PRAGMA integrity_check")).scalar() if sqlite else "ok"
        database.close()
        record_trial(
            "kill -9 service during a bulk write",
            trial=trial,
            delay_s=round(delay, 3),
            write_s=round(duration, 3),
            answered=outcome["status"],
            stored=stored,
            integrity=check,
        )
        assert stored in (0, BATCH) and len(texts) == stored, (trial, stored)
        assert check == "ok"
        if outcome["status"] == 201:
            assert stored == BATCH  # acknowledged: all of it is there
