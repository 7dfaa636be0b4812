"""Micro-batching: the one way a scoring request reaches the model, which never runs on the event loop.

``Batcher.score`` is that way: it counts the request's tokens with the serving model's tokenizer (on a worker thread,
as text-embeddings-inference does before queueing), queues the texts, and waits for their results until the
request's deadline, the one place where the deadline is enforced.

One dedicated worker thread loops: wait until something is queued, take everything queued (oldest first) up to
``batch_tokens`` tokens (and at most ``max_requests`` requests, when set), score it in one ``Scorer.score`` call, hand
each request its slice. ``max_requests=1`` turns batching off (one request per model call) without changing how a
request's own texts are batched: the baseline that ``make bench`` measures the batcher against. There is no fixed
wait to gather a batch: a lone request is scored at once, and whatever arrives while the model is busy forms the next
batch, so batches grow exactly when load does.

Admission (back-pressure) and abandonment:

- a request is admitted by its expected wait: ``ServiceCost`` keeps the worker's seconds per token over recent
  batches, so the work ahead of a new request (what is left of the batch in flight, every token queued) plus its own
  tokens gives the seconds until its result. Past ``max_queue_wait_s`` it is refused with ``ExpectedWaitTooLong``
  (429), whose Retry-After is that estimate: by then the work ahead of it now is done. Before any batch has been
  measured (cold start) there is no estimate, and the queue's size alone decides;
- the queue holds at most ``queue_size`` texts whatever the estimate says (a hard cap); ``submit`` raises
  ``QueueFull`` (429) beyond that, its Retry-After from the same estimate. A request is always taken into an empty
  queue, even one larger than the whole queue or whose own work takes longer than the limit, so every request within
  ``max_texts`` and ``max_chars`` can be served;
- a request whose future is cancelled (its client went away, or its deadline passed) leaves the queue at once and is
  skipped if the worker already took it; a deadline that passes fails the request with ``DeadlineExceeded`` (503).

Futures are resolved on their own event loop through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from anyio import to_thread

from model import Scorer, ScoreResult
from model.encoding import count_tokens
from service.errors import ClientGone, DeadlineExceeded, ExpectedWaitTooLong, NotReady, QueueFull
from service.metrics import Metrics
from service.model_slot import ModelSlot
from service.process import lower_priority

T = TypeVar("T")
Finish = Callable[[Scorer, list[ScoreResult]], T]

log = logging.getLogger("diplotone.batching")

COLD_SECONDS_PER_TEXT = 0.05  # what QueueFull's Retry-After assumes before any batch has been measured


def keep_results(scorer: Scorer, results: list[ScoreResult]) -> list[ScoreResult]:
    """The default ``finish``: the score results themselves."""
    return results


class ServiceCost:
    """The worker's seconds per token: an exponentially weighted mean over recent batches, ``None`` until one is
    measured. Each batch's own figure (its wall time on the worker, results handed out included, over its tokens)
    weighs ``weight``, so the mean follows a machine that slows down within a few batches.

    >>> cost = ServiceCost(); cost.observe(tokens=2000, seconds=0.5); cost.seconds(1000)
    0.25
    """

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.seconds_per_token: float | None = None

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens <= 0:
            return
        measured = max(0.0, seconds) / tokens
        known = self.seconds_per_token
        self.seconds_per_token = measured if known is None else known + self.weight * (measured - known)

    def seconds(self, tokens: int) -> float | None:
        """How long ``tokens`` tokens take on the worker, or ``None`` before the first batch."""
        return None if self.seconds_per_token is None else tokens * self.seconds_per_token


@dataclass(eq=False)
class _Job:
    texts: list[str]
    tokens: int  # what the encoder reads for all of them (model.encoding.count_tokens)
    finish: Finish[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    abandoned: bool = False  # set on the event loop when the future is cancelled; read by the worker
    dropped_because: str = "cancelled"  # the reason counted if it leaves the queue unscored


class Batcher:
    """Gathers scoring requests into model batches on a dedicated thread.

    >>> batcher = Batcher(slot, batch_tokens=2048, queue_size=256, max_queue_wait_s=2.0)  # doctest: +SKIP
    >>> batcher.start(); results = await batcher.score(["Dear friend ..."], timeout_s=30)  # doctest: +SKIP

    ``max_queue_wait_s`` None admits by the queue's size alone; ``clock`` (seconds, monotonic) times the batches for
    the estimate, and is there so that a test can set the time.
    """

    def __init__(
        self,
        slot: ModelSlot,
        *,
        batch_tokens: int,
        queue_size: int,
        metrics: Metrics | None = None,
        max_requests: int | None = None,
        max_queue_wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slot = slot
        self.batch_tokens = batch_tokens
        self.max_requests = max_requests  # requests per model call; None: as many as the token budget allows
        self.queue_size = queue_size
        self.max_queue_wait_s = max_queue_wait_s
        self.metrics = metrics
        self.cost = ServiceCost()
        self._clock = clock
        self._waiting: deque[_Job] = deque()
        self._depth = 0  # texts in the queue
        self._queued_tokens = 0  # their tokens
        self._in_flight: tuple[int, float] | None = None  # the batch on the worker: its tokens, when it started
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Texts waiting for the model."""
        return self._depth

    def expected_wait(self, tokens: int = 0) -> float | None:
        """Seconds until a request of ``tokens`` tokens queued now would have its result, or ``None`` before the
        first batch has been measured."""
        with self._changed:
            return self._expected_wait(tokens)

    def _expected_wait(self, tokens: int) -> float | None:
        """``expected_wait``; the caller holds ``_changed``."""
        ahead = self.cost.seconds(self._queued_tokens + tokens)
        if ahead is None or self._in_flight is None:
            return ahead
        in_flight_tokens, started = self._in_flight
        left = (self.cost.seconds(in_flight_tokens) or 0.0) - (self._clock() - started)
        return ahead + max(0.0, left)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        """Start the worker thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="diplotone-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in flight, fail what is still queued with ``NotReady``, and end the worker."""
        with self._changed:
            self._stopping = True
            left, self._depth, self._queued_tokens = list(self._waiting), 0, 0
            self._waiting.clear()
            self._changed.notify_all()
        for job in left:
            _settle(job, error=NotReady("the service is shutting down; the request was not scored"))
        if self._thread is not None:
            self._thread.join()

    @overload
    async def score(
        self, texts: Sequence[str], *, timeout_s: float, abandon: Callable[[], Awaitable[None]] | None = None
    ) -> list[ScoreResult]: ...

    @overload
    async def score(
        self,
        texts: Sequence[str],
        finish: Finish[T],
        *,
        timeout_s: float,
        abandon: Callable[[], Awaitable[None]] | None = None,
    ) -> T: ...

    async def score(
        self,
        texts: Sequence[str],
        finish: Finish[Any] = keep_results,
        *,
        timeout_s: float,
        abandon: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Score ``texts`` within ``timeout_s``: ``finish(scorer, results)``, computed on the worker thread.

        Raises ``DeadlineExceeded`` when the deadline passes first, ``ClientGone`` when what ``abandon()`` awaits (the
        client's disconnect) comes first (either way the texts leave the queue unscored), and what ``submit`` raises.
        """
        deadline = time.monotonic() + timeout_s
        gone = asyncio.ensure_future(abandon()) if abandon is not None else None
        job: _Job | None = None
        try:
            tokens = await to_thread.run_sync(self.count_tokens, texts)  # tokenizing a long text takes milliseconds
            job = self._enqueue(list(texts), sum(tokens), finish)
            waiting: set[asyncio.Future[Any]] = {job.future} if gone is None else {job.future, gone}
            left = max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if job.future in done:
                return job.future.result()
            if gone is not None and gone in done:
                raise ClientGone()
            job.dropped_because = "deadline"
            raise DeadlineExceeded(timeout_s)
        finally:
            if job is not None:
                job.future.cancel()  # a no-op once resolved; otherwise the request leaves the queue
            if gone is not None:
                gone.cancel()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The tokens the serving model's encoder reads for each text, counted with its tokenizer."""
        scorer = self.slot.current()
        return count_tokens(scorer.tokenizer, texts, scorer.max_tokens)

    @overload
    def submit(self, texts: Sequence[str], *, tokens: int | None = None) -> asyncio.Future[list[ScoreResult]]: ...

    @overload
    def submit(self, texts: Sequence[str], finish: Finish[T], *, tokens: int | None = None) -> asyncio.Future[T]: ...

    def submit(
        self, texts: Sequence[str], finish: Finish[Any] = keep_results, *, tokens: int | None = None
    ) -> asyncio.Future[Any]:
        """Queue ``texts`` (``tokens`` in all; counted here, on the calling thread, if not given) and return the
        future of ``finish(scorer, results)``. ``score`` is this with the deadline and the count off the event loop.

        Call from the event loop. Raises ``QueueFull`` when the queue has no room, ``ExpectedWaitTooLong`` when the
        request would wait past ``max_queue_wait_s``, and ``NotReady`` when stopped. Cancelling the future withdraws
        the request.
        """
        counted = sum(self.count_tokens(texts)) if tokens is None else tokens
        return self._enqueue(list(texts), counted, finish).future

    def _enqueue(self, texts: list[str], tokens: int, finish: Finish[Any]) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(texts, tokens, finish, loop.create_future(), loop)
        with self._changed:
            if not self.running:
                raise NotReady("the scoring worker is not running")
            if self._depth:  # an empty queue takes any request (the module docstring says why)
                self._admit(job)
            self._waiting.append(job)
            self._depth += len(job.texts)
            self._queued_tokens += job.tokens
            self._changed.notify()
        job.future.add_done_callback(lambda future: self._withdraw(job) if future.cancelled() else None)
        return job

    def _admit(self, job: _Job) -> None:
        """Refuse ``job`` if the queue has no room for it or it would wait too long; the caller holds ``_changed``."""
        wait = self._expected_wait(job.tokens)
        if self._depth + len(job.texts) > self.queue_size:
            drained = wait if wait is not None else COLD_SECONDS_PER_TEXT * self._depth
            self._count_refused("queue_full")
            raise QueueFull(self._depth, len(job.texts), self.queue_size, _whole_seconds(drained))
        if wait is not None and self.max_queue_wait_s is not None and wait > self.max_queue_wait_s:
            self._count_refused("expected_wait")
            raise ExpectedWaitTooLong(wait, self.max_queue_wait_s, self._depth, len(job.texts), _whole_seconds(wait))

    def _withdraw(self, job: _Job) -> None:
        job.abandoned = True
        with self._changed:
            if job in self._waiting:
                self._waiting.remove(job)
                self._depth -= len(job.texts)
                self._queued_tokens -= job.tokens
                self._count_dropped(job.dropped_because)

    def _work(self) -> None:
        lower_priority([threading.get_native_id()])  # model work yields the CPU to the event loop (service.process)
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if self._still_wanted(job)]
            if not live:
                continue
            tokens = sum(job.tokens for job in live)
            started = self._clock()
            with self._changed:
                self._in_flight = (tokens, started)
            try:
                if self._run(live):
                    self.cost.observe(tokens, self._clock() - started)
            finally:
                with self._changed:
                    self._in_flight = None

    def _next_batch(self) -> list[_Job] | None:
        """Block until something is queued; take the oldest jobs up to the budgets (always at least one)."""
        with self._changed:
            while not self._waiting and not self._stopping:
                self._changed.wait()
            if self._stopping:
                return None
            batch: list[_Job] = []
            tokens = 0
            while self._waiting and (not batch or self._fits(len(batch), tokens + self._waiting[0].tokens)):
                job = self._waiting.popleft()
                self._depth -= len(job.texts)
                self._queued_tokens -= job.tokens
                batch.append(job)
                tokens += job.tokens
            return batch

    def _fits(self, requests: int, tokens: int) -> bool:
        """Whether a batch already holding ``requests`` jobs may take one more, reaching ``tokens`` tokens."""
        return tokens <= self.batch_tokens and (self.max_requests is None or requests < self.max_requests)

    def _still_wanted(self, job: _Job) -> bool:
        if job.abandoned:
            self._count_dropped(job.dropped_because)
            return False
        return True

    def _run(self, batch: list[_Job]) -> bool:
        """Score ``batch`` and hand out its results; whether it ran as one batch (a failed one is retried one by one,
        and its time says nothing of the model's speed)."""
        texts = [text for job in batch for text in job.texts]
        started = time.perf_counter()
        try:
            scorer = self.slot.current()  # read once: the batch runs on one model even if a swap lands meanwhile
            results = scorer.score(texts, batch_tokens=self.batch_tokens)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0], error=error)
            else:
                # One bad request must not fail the others it happened to share a batch with.
                log.warning("a batch of %d requests failed (%s); scoring them one by one", len(batch), error)
                for job in batch:
                    self._run([job])
            return False
        self._observe(len(texts), sum(job.tokens for job in batch), time.perf_counter() - started)
        cursor = 0
        for job in batch:
            mine = results[cursor : cursor + len(job.texts)]
            cursor += len(job.texts)
            try:
                _settle(job, value=job.finish(scorer, mine))
            except Exception as error:
                _settle(job, error=error)
        return True

    def _observe(self, texts: int, tokens: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.batch_texts.observe(texts)
            self.metrics.batch_tokens.observe(tokens)
            self.metrics.batch_seconds.observe(seconds)

    def _count_dropped(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dropped.labels(reason).inc()

    def _count_refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused.labels(reason).inc()


def _whole_seconds(seconds: float) -> int:
    """A Retry-After: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def _settle(job: _Job, *, value: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``job``'s future on its own loop (futures are not thread-safe)."""

    def resolve() -> None:
        if job.future.done():  # cancelled meanwhile: nobody is waiting
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting either
        job.loop.call_soon_threadsafe(resolve)
