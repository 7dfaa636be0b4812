"""Apps on a temporary data dir whose registry holds the tiny version, and a gate that holds the model busy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model import Registry, Scorer
from service.app import create_app
from service.settings import Settings
from tests.factories import make_tiny_version
from tests.service.helpers import Gate


@pytest.fixture(scope="session")
def second_scorer(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Scorer:
    """Another version on the tiny base (``tiny-0002``), to swap in."""
    folder = make_tiny_version(tiny_base, tmp_path_factory.mktemp("versions") / "tiny-0002", version="tiny-0002")
    return Scorer.from_pretrained(folder)


@pytest.fixture
def gate(tiny_scorer: Scorer) -> Iterator[Gate]:
    gate = Gate(tiny_scorer)
    yield gate
    gate.open()


@pytest.fixture
def data_dir(tmp_path: Path, tiny_version: Path) -> Path:
    registry = Registry(tmp_path / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.activate("tiny-0001")
    return tmp_path


@pytest.fixture
def make_settings(data_dir: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        # The torch reference engine: the ONNX engines have their own tests (tests/test_engines.py). The registry
        # watch is off: a test that moves the pointer itself decides when the service follows (test_replicas.py).
        # Reads open, so that tests of what is stored read it without a key; tests/service/test_auth.py tests the
        # read scope.
        defaults = {"engine": "torch", "database_url": database_url, "registry_poll_s": 0, "open_reads": True}
        return Settings(data_dir=data_dir, model_threads=1, **{**defaults, **overrides})

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings], gate: Gate) -> Iterator[Callable[..., TestClient]]:
    """Start apps with settings overrides (``make_client(queue_size=2)``); all are shut down after the test."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            client = stack.enter_context(TestClient(create_app(make_settings(**overrides))))
            stack.callback(gate.open)  # runs before this client closes: a closed gate would hold its shutdown
            return client

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
