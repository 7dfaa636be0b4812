"""GET /healthz, /readyz, /metrics and /v1/info: is it alive, can it score, how is it doing, what does it serve."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from model import BANDS, Registry
from service.deps import MetricsDep, RegistryDep, SettingsDep, SlotDep, get_batcher
from service.errors import NotReady, problem_responses
from service.replica import replica_id
from service.schemas import (
    INFO_EXAMPLE,
    READY_EXAMPLE,
    Band,
    HealthResponse,
    InfoResponse,
    Limits,
    ReadyResponse,
    ok_examples,
)

router = APIRouter(tags=["operations"])

NOT_READY = problem_responses("/readyz", NotReady("no model has passed its probe yet"))
METRICS_EXAMPLE = (
    "# HELP diplotone_http_requests_total HTTP requests by route, method and status\n"
    "# TYPE diplotone_http_requests_total counter\n"
    'diplotone_http_requests_total{method="POST",route="/v1/score",status="200"} 42.0\n'
    "# HELP diplotone_queue_depth_texts texts waiting for the model\n"
    "# TYPE diplotone_queue_depth_texts gauge\n"
    "diplotone_queue_depth_texts 3.0\n"
)


@router.get("/healthz", summary="Liveness", responses=ok_examples(alive={"status": "alive"}))
async def healthz() -> HealthResponse:
    """The process is up and answering; says nothing about the model (see /readyz)."""
    return HealthResponse()


@router.get(
    "/readyz",
    summary="Readiness",
    responses={**ok_examples(ready=READY_EXAMPLE), **NOT_READY},
    dependencies=[Depends(get_batcher)],  # 503 too when the scoring worker is not running
)
async def readyz(slot: SlotDep) -> ReadyResponse:
    """Ready once the served model has scored the probe text and the scoring worker runs; 503 before that."""
    probe = slot.probe
    return ReadyResponse(model_version=probe.model_version, probe_score=probe.score)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {"example": METRICS_EXAMPLE}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    """Requests by route and status, latency, batch sizes, queue depth and the model version."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/info", summary="What is served", responses={**ok_examples(info=INFO_EXAMPLE), **NOT_READY})
async def info(slot: SlotDep, registry: RegistryDep, settings: SettingsDep) -> InfoResponse:
    """The model version, its test metrics, the request limits and the score bands."""
    scorer = slot.current()
    return InfoResponse(
        model_version=scorer.version,
        registry_active=registry.active_version(),
        replica=replica_id(),
        engine=scorer.engine.name,
        engine_report=scorer.engine_report,
        test_metrics=_test_metrics(registry, scorer.version),
        interval_coverage=scorer.calibration.coverage,
        limits=Limits(
            max_texts=settings.max_texts,
            max_chars=settings.max_chars,
            max_body_bytes=settings.max_body_bytes,
            batch_tokens=settings.batch_tokens,
            queue_size=settings.queue_size,
            max_queue_wait_s=settings.max_queue_wait_s,
            request_timeout_s=settings.request_timeout_s,
            window_tokens=scorer.max_tokens,
        ),
        bands=[Band(name=name, low=low, high=high) for name, low, high in BANDS],
    )


def _test_metrics(registry: Registry, version: str) -> dict[str, float]:
    """The ``test`` figures of ``metrics.json`` (empty when the version records none)."""
    for known in registry.versions():
        if known.version == version:
            figures = known.metrics.get("test", {})
            return {key: float(value) for key, value in figures.items() if isinstance(value, int | float)}
    return {}
