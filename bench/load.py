"""Load generators on httpx.AsyncClient: closed loop (N clients, each waiting for its answer before the next
request) and open loop (Poisson arrivals at a fixed rate, whatever the server does). Every loop stops by itself: a
time limit, a cap on requests, and a per-request timeout.

Open-loop latency counts from the scheduled arrival, not from when the client got round to sending, so a client that
falls behind cannot hide the server's queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUEST_TIMEOUT_S = 60.0  # longer than the service's own deadline (30 s), so the server is the one that answers
MAX_REQUESTS = 100_000  # a safety cap on any one loop


@dataclass
class Outcome:
    """What one loop saw: per request the send time, latency and status (0 = transport error or timeout)."""

    started: float
    finished: float = 0.0
    requests: list[tuple[float, float, int]] = field(default_factory=list)  # (sent at, seconds, status)
    client_dropped: int = 0  # open loop: arrivals not sent because too many were already in flight
    bodies: list[Any] = field(default_factory=list)  # kept only when asked (keep_body)

    def summary(self) -> dict[str, Any]:
        """Counts by status, successful requests per second, and latency percentiles of the successes."""
        elapsed = self.finished - self.started
        ok = sorted(seconds for _, seconds, status in self.requests if status == 200)
        statuses = Counter(str(status) for _, _, status in self.requests)
        return {
            "seconds": elapsed,
            "requests": len(self.requests),
            "ok": len(ok),
            "status": dict(sorted(statuses.items())),
            "rejected_429": statuses.get("429", 0),
            "failed": len(self.requests) - len(ok) - statuses.get("429", 0),
            "client_dropped": self.client_dropped,
            "ok_per_s": len(ok) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": 1000 * percentile(ok, 50) if ok else None,
            "p99_ms": 1000 * percentile(ok, 99) if ok else None,
            "max_ms": 1000 * ok[-1] if ok else None,
        }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list: the smallest value with at least q% of values at or below it."""
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Target:
    """Where to send: ``url + path`` with ``{"text": ...}``, optional headers."""

    url: str
    path: str
    texts: list[str]
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self, index: int) -> dict[str, str]:
        return {"text": self.texts[index % len(self.texts)]}


async def _send(
    client: httpx.AsyncClient, target: Target, index: int, origin: float, outcome: Outcome, keep_body: bool
) -> None:
    """One request; latency measured from ``origin`` (time.perf_counter())."""
    try:
        response = await client.post(target.path, json=target.payload(index), headers=target.headers)
        status = response.status_code
        if keep_body and status == 200:
            outcome.bodies.append(response.json())
    except httpx.HTTPError:
        status = 0
    outcome.requests.append((origin, time.perf_counter() - origin, status))


def _client(target: Target, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=target.url, limits=limits, timeout=REQUEST_TIMEOUT_S)


async def closed_loop(
    target: Target, clients: int, seconds: float, keep_body: bool = False, until: Callable[[], bool] | None = None
) -> Outcome:
    """``clients`` concurrent clients, each sending its next request when the last one is answered, for ``seconds``
    (or, with ``until``, until ``until()`` holds, but never longer than ``seconds``)."""
    outcome = Outcome(started=time.perf_counter())
    deadline = outcome.started + seconds
    counter = iter(range(MAX_REQUESTS))

    def more() -> bool:
        return time.perf_counter() < deadline and not (until is not None and until())

    async def client_loop(http: httpx.AsyncClient) -> None:
        while more() and (index := next(counter, None)) is not None:
            await _send(http, target, index, time.perf_counter(), outcome, keep_body)

    async with _client(target, clients) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
    outcome.finished = time.perf_counter()
    return outcome


async def open_loop(target: Target, rate: float, seconds: float, max_in_flight: int = 1024, seed: int = 0) -> Outcome:
    """Poisson arrivals at ``rate`` per second for ``seconds``; waits for the answers of what was sent.

    Arrivals beyond ``max_in_flight`` requests still unanswered are counted as ``client_dropped``, not sent.
    """
    arrivals = poisson_schedule(rate, seconds, random.Random(seed))
    outcome = Outcome(started=time.perf_counter())
    in_flight: set[asyncio.Task[None]] = set()
    async with _client(target, max_in_flight) as http:
        for index, offset in enumerate(arrivals):
            origin = outcome.started + offset
            await asyncio.sleep(max(0.0, origin - time.perf_counter()))
            if len(in_flight) >= max_in_flight:
                outcome.client_dropped += 1
                continue
            task = asyncio.create_task(_send(http, target, index, origin, outcome, False))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)  # each is bounded by REQUEST_TIMEOUT_S
    outcome.finished = time.perf_counter()
    return outcome


def poisson_schedule(rate: float, seconds: float, rng: random.Random) -> list[float]:
    """Arrival offsets (seconds from start) of a Poisson process of ``rate`` per second, over ``seconds``."""
    offsets: list[float] = []
    moment = 0.0
    while len(offsets) < MAX_REQUESTS:
        moment += rng.expovariate(rate)
        if moment >= seconds:
            break
        offsets.append(moment)
    return offsets
