"""GET /healthz, /readyz, /metrics, /v1/info and /docs, and how the app starts."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from model import BANDS, ArtifactCorrupt, Registry
from service.app import create_app
from service.model_slot import PROBE_TEXT
from service.settings import Settings
from tests.service.helpers import Gate, app_of, asgi_client, in_app_loop, metric_samples, wait_until

PROBLEM = "application/problem+json"
TEXT = "Dear friend, warmest congratulations on your national day."


def test_healthz_returns_alive(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_healthz_before_startup_returns_alive(make_settings: Callable[..., Settings]) -> None:
    response = TestClient(create_app(make_settings())).get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_after_startup_reports_the_probe_score(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["model_version"]) == ("ready", "tiny-0001")
    assert body["probe_score"] == client.post("/v1/score", json={"text": PROBE_TEXT}).json()["score"]


def test_readyz_before_startup_returns_503(make_settings: Callable[..., Settings]) -> None:
    response = TestClient(create_app(make_settings())).get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "5"
    assert response.json()["detail"].startswith("the service has not finished starting")


def test_readyz_with_the_scoring_worker_stopped_returns_503(client: TestClient) -> None:
    app_of(client).state.batcher.stop()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["detail"] == "the scoring worker is not running"


def test_readyz_after_a_swap_reports_the_new_version(client: TestClient, second_scorer: Any) -> None:
    app_of(client).state.model_slot.swap(second_scorer)

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["model_version"] == "tiny-0002"


def test_info_returns_version_test_metrics_limits_and_bands(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_texts=8, max_chars=5000)

    response = client.get("/v1/info")

    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == body["registry_active"] == "tiny-0001"
    assert body["replica"] == f"{socket.gethostname()}:{os.getpid()}"
    assert body["engine"] == "torch"
    assert body["engine_report"] == {"engine": "torch"}
    assert body["test_metrics"]["spearman"] == 0.5  # as tests/factories.py wrote it
    assert body["test_metrics"]["pairwise_accuracy"] == 0.6
    assert body["interval_coverage"] == 0.9
    assert body["limits"] == {
        "max_texts": 8,
        "max_chars": 5000,
        "max_body_bytes": 8 * 1024 * 1024,
        "batch_tokens": 2048,
        "queue_size": 256,
        "max_queue_wait_s": 2.0,
        "request_timeout_s": 30.0,
        "window_tokens": 24,
    }
    assert [(b["name"], b["low"], b["high"]) for b in body["bands"]] == list(BANDS)


def test_info_reports_the_expected_wait_limit_set(make_client: Callable[..., TestClient]) -> None:
    limits = make_client(max_queue_wait_s=0.75).get("/v1/info").json()["limits"]

    assert limits["max_queue_wait_s"] == 0.75


def test_max_queue_wait_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIPLOTONE_MAX_QUEUE_WAIT_S", "0.5")

    assert Settings().max_queue_wait_s == 0.5


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf")])
def test_max_queue_wait_must_be_positive_and_finite(seconds: float) -> None:
    with pytest.raises(ValueError, match="expected a positive, finite number of seconds; found") as refused:
        Settings(max_queue_wait_s=seconds)

    assert "max_queue_wait_s" in str(refused.value)


def test_info_before_startup_returns_503(make_settings: Callable[..., Settings]) -> None:
    response = TestClient(create_app(make_settings())).get("/v1/info")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM


def test_metrics_counts_requests_by_route_and_status(client: TestClient) -> None:
    client.post("/v1/score", json={"text": TEXT})
    client.post("/v1/score", json={"text": TEXT})
    client.post("/v1/score", json={"text": " "})
    client.get("/no/such/path")

    samples = metric_samples(client)

    def requests(route: str, status: str, method: str = "POST") -> float:
        return samples[("diplotone_http_requests_total", (("method", method), ("route", route), ("status", status)))]

    assert requests("/v1/score", "200") == 2
    assert requests("/v1/score", "422") == 1
    assert requests("unmatched", "404", "GET") == 1  # raw paths never become labels
    latency = ("diplotone_http_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/score")))
    assert samples[latency] == 3
    assert samples[("diplotone_batch_size_texts_count", ())] == 2


def test_metrics_shows_the_served_model_version(client: TestClient, second_scorer: Any) -> None:
    before = metric_samples(client)
    app_of(client).state.model_slot.swap(second_scorer)

    after = metric_samples(client)

    assert before[("diplotone_model_info", (("version", "tiny-0001"),))] == 1
    assert after[("diplotone_model_info", (("version", "tiny-0002"),))] == 1
    assert ("diplotone_model_info", (("version", "tiny-0001"),)) not in after


def test_metrics_shows_queue_depth_while_requests_wait(client: TestClient, gate: Gate) -> None:
    app = app_of(client)
    gate.install(app.state.model_slot)

    async def scenario() -> httpx.Response:
        async with asgi_client(app) as http:
            first = asyncio.ensure_future(http.post("/v1/score", json={"text": TEXT}))
            await asyncio.to_thread(gate.wait_entered)
            queued = asyncio.ensure_future(http.post("/v1/score", json={"texts": [TEXT, TEXT]}))
            await wait_until(lambda: app.state.batcher.depth == 2)
            scraped = await http.get("/metrics")
            gate.open()
            await asyncio.gather(first, queued)
            return scraped

    scraped = in_app_loop(client, scenario)

    assert scraped.status_code == 200
    assert "diplotone_queue_depth_texts 2.0" in scraped.text.splitlines()
    assert metric_samples(client)[("diplotone_queue_depth_texts", ())] == 0


def test_metrics_of_two_apps_are_separate(make_client: Callable[..., TestClient]) -> None:
    first, second = make_client(), make_client()
    first.post("/v1/score", json={"text": TEXT})

    samples = metric_samples(second)

    assert ("diplotone_http_requests_total", (("method", "POST"), ("route", "/v1/score"), ("status", "200"))) not in (
        samples
    )


def test_openapi_gives_examples_for_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    ours = {path: paths[path] for path in ("/v1/score", "/v1/compare", "/healthz", "/readyz", "/metrics", "/v1/info")}
    for path, operations in ours.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                contents = response["content"].values()
                assert any("example" in c or "examples" in c for c in contents), f"{method} {path} {status}"
                if status != "200":
                    assert list(response["content"]) == [PROBLEM], f"{method} {path} {status}"
            if "requestBody" in operation:
                assert operation["requestBody"]["content"]["application/json"]["examples"], f"{method} {path}"


def test_docs_serves_the_openapi_page(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "/openapi.json" in response.text


def test_startup_with_a_corrupt_model_fails_loudly(make_settings: Callable[..., Settings], data_dir: Path) -> None:
    calibration = Registry(data_dir / "models").active_path() / "calibration.json"
    calibration.write_text('{"coverage": 0.99, "halfwidth": 0.1, "residual_sd": 0.1, "n": 1}')
    app = create_app(make_settings())

    with pytest.raises(ArtifactCorrupt, match=r"calibration\.json: sha256 is"), TestClient(app):
        pass


def test_info_names_the_onnx_engine_and_its_parity(make_client: Callable[..., TestClient]) -> None:
    client = make_client(engine="onnx-fp32")
    assert app_of(client).state.model_switch.wait_for_engine(600)  # first start: torch until the child has prepared it

    body = client.get("/v1/info").json()

    assert body["engine"] == "onnx-fp32"
    assert body["engine_report"]["requested"] == "onnx-fp32"
    assert body["engine_report"]["onnx-fp32"]["max_abs_diff"] <= 0.1
    # Exported and checked by a child process (model.prepare_engine); the server only read the verdict.
    assert body["engine_report"]["from_cache"] is True
