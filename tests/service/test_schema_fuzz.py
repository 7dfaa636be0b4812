"""Schema fuzzing: schemathesis generates requests from the live app's OpenAPI, every operation, with an admin key,
and runs all its checks on each answer: no 5xx, the status code and media type documented, the body matching its
documented schema, and an operation that says it needs a key refusing a call without one.

Bounded (``FUZZ_EXAMPLES`` an operation, derandomized so a run is repeatable; starting a training run is left out,
it would train) so that it runs in CI; run it alone with ``-m fuzz``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python.asgi import ASGIClient, shutdown_lifespans

from model import Registry
from service.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.service.store_helpers import TEXTS

FUZZ_EXAMPLES = 25  # an operation; the hand trial used the same
pytestmark = pytest.mark.fuzz

# The app exists from collection on (schemathesis reads its OpenAPI to make one test an operation); its lifespan
# starts in ``live``, once its registry holds the tiny version, and every request and probe reaches that one app.
DATA_DIR = Path(tempfile.mkdtemp(prefix="diplotone-fuzz-"))
APP = create_app(Settings(data_dir=DATA_DIR, engine="torch", model_threads=1))
schema = schemathesis.openapi.from_dict(APP.openapi()).exclude(method="POST", path="/v1/training-runs")
schema.app = APP


@schema.hook("filter_body")
def _two_messages(context: schemathesis.HookContext, body: object) -> bool:
    """A pair of one message with itself is refused (422), a rule between two fields that JSON Schema cannot say."""
    if context.operation is None or context.operation.path != "/v1/pairs" or not isinstance(body, dict):
        return True
    return bool(body.get("warmer") != body.get("cooler"))


@pytest.fixture(scope="module")
def live(tiny_version: Path) -> Iterator[tuple[ASGIClient, dict[str, str]]]:
    """The started app with two stored messages, and the headers of an admin key."""
    registry = Registry(DATA_DIR / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.activate("tiny-0001")
    try:
        with ASGIClient(APP) as client:
            with APP.state.database.sessions() as session:
                headers = {"Authorization": f"Bearer {create_key(session, 'admin', 'fuzz').token}"}
            for text in TEXTS[:2]:
                assert client.post("/v1/messages", json={"text": text}, headers=headers).status_code == 201
            yield client, headers
    finally:
        shutdown_lifespans()
        shutil.rmtree(DATA_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_as_documented(
    live: tuple[ASGIClient, dict[str, str]], case: schemathesis.Case
) -> None:
    client, headers = live
    case.call_and_validate(session=client, headers=headers)
