"""Helpers of the service tests: a gate that holds the model busy, and readers of the app's state and metrics."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model import Scorer, ScoreResult
from service.model_slot import ModelSlot

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
