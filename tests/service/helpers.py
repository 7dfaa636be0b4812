"""Helpers of the service tests: a gate that holds the model busy, and readers of the app's state and metrics."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from model import Scorer, ScoreResult
from service.model_slot import ModelSlot

T = TypeVar("T")
GATE_TIMEOUT_S = 30.0  # a safety net so that a failing test cannot hang the suite


class Gate:
    """Wraps a Scorer so that each ``score`` call waits until the test opens the gate, and records its texts.

    It lets a test hold the model busy, queue requests behind it, then see exactly how they were batched.
    """

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.entered = threading.Event()  # set when a batch reaches the model
        self.opened = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)  # version, calibration, max_tokens ... of the wrapped scorer

    def score(self, texts: Sequence[str], **kwargs: Any) -> list[ScoreResult]:
        self.calls.append(list(texts))
        self.entered.set()
        self.opened.wait(GATE_TIMEOUT_S)
        return self.scorer.score(texts, **kwargs)

    def install(self, slot: ModelSlot) -> None:
        """Put the gate in ``slot`` (its probe passes through), then close it."""
        self.open()
        slot.swap(self)  # type: ignore[arg-type]
        self.opened.clear()
        self.entered.clear()
        self.calls.clear()

    def open(self) -> None:
        self.opened.set()

    def wait_entered(self) -> None:
        assert self.entered.wait(GATE_TIMEOUT_S), "no batch reached the model"


def app_of(client: TestClient) -> FastAPI:
    app = client.app
    assert isinstance(app, FastAPI)
    return app


def metric_samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed: (sample name, sorted labels) → value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def wait_until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop until ``condition()`` holds (a failing test stops after ``GATE_TIMEOUT_S``)."""
    for _ in range(int(GATE_TIMEOUT_S / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def in_app_loop(client: TestClient, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``scenario`` on the event loop of ``client``'s running app (where its batcher resolves futures)."""
    assert client.portal is not None, "enter the client (with TestClient(app) as client) first"
    return client.portal.call(scenario)


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    """An async client on ``app``'s running lifespan, for concurrent requests inside ``TestClient.portal``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def post_then_disconnect(app: FastAPI, path: str, body: dict[str, Any]) -> list[Message]:
    """POST ``body`` to ``app`` from a client that hangs up right after sending it; return what the app sent."""
    payload = json.dumps(body).encode()
    incoming = [{"type": "http.request", "body": payload, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent
