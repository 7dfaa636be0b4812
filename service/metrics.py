"""Prometheus metrics of one app, in a registry of its own (never the process-global one).

An own registry per app lets tests build many apps in one process, and keeps library metrics out of the scrape.
Requests are counted by route template (``/v1/score``, not the raw path) so that a scan of random URLs cannot
blow up the label set; queue depth and the model version are read at scrape time, so they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_TOKEN_BUCKETS = (64, 256, 1024, 4096, 8192, 16384, 65536)


class Metrics:
    """The metrics of one app; ``render()`` gives the ``/metrics`` body and its content type."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "diplotone_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "diplotone_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "diplotone_batch_size_texts", "texts per model batch", buckets=BATCH_TEXT_BUCKETS, registry=self.registry
        )
        self.batch_tokens = Histogram(
            "diplotone_batch_tokens",
            "tokens per model batch, counted with the model's tokenizer",
            buckets=BATCH_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "diplotone_batch_duration_seconds", "model time per batch", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.dropped = Counter(
            "diplotone_dropped_requests",
            "scoring requests dropped before the model ran",
            ["reason"],
            registry=self.registry,
        )
        self.refused = Counter(
            "diplotone_refused_requests",
            "scoring requests refused with 429 before queueing, by reason (queue_full, expected_wait)",
            ["reason"],
            registry=self.registry,
        )
        self._live = _LiveCollector()
        self.registry.register(self._live)

    def watch(self, queue_depth: Callable[[], int], model_version: Callable[[], str | None]) -> None:
        """Read queue depth and model version from these callables at every scrape."""
        self._live.queue_depth, self._live.model_version = queue_depth, model_version

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LiveCollector(Collector):
    def __init__(self) -> None:
        self.queue_depth: Callable[[], int] = lambda: 0
        self.model_version: Callable[[], str | None] = lambda: None

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("diplotone_queue_depth_texts", "texts waiting for the model", value=self.queue_depth())
        info = GaugeMetricFamily("diplotone_model_info", "the model version being served (value 1)", labels=["version"])
        version = self.model_version()
        if version is not None:
            info.add_metric([version], 1.0)
        yield info


class MetricsMiddleware:
    """Pure ASGI middleware counting and timing HTTP requests (pure, so that client disconnects still reach routes)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before starting a response
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template, scope["method"]).observe(time.perf_counter() - started)
