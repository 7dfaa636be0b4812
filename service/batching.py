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

Back-pressure and abandonment:

- the queue holds at most ``queue_size`` texts; ``submit`` raises ``QueueFull`` (429) beyond that, with a Retry-After
  estimated from recent throughput. A request larger than the whole queue is still taken when the queue is empty, so
  every request within ``max_texts`` can be served;
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
from service.errors import ClientGone, DeadlineExceeded, NotReady, QueueFull
from service.metrics import Metrics
from service.model_slot import ModelSlot
from service.process import lower_priority

T = TypeVar("T")
Finish = Callable[[Scorer, list[ScoreResult]], T]

log = logging.getLogger("diplotone.batching")


def keep_results(scorer: Scorer, results: list[ScoreResult]) -> list[ScoreResult]:
    """The default ``finish``: the score results themselves."""
    return results


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

    >>> batcher = Batcher(slot, batch_tokens=2048, queue_size=256); batcher.start()  # doctest: +SKIP
    >>> results = await batcher.score(["Dear friend ..."], timeout_s=30)  # doctest: +SKIP
    """

    def __init__(
        self,
        slot: ModelSlot,
        *,
        batch_tokens: int,
        queue_size: int,
        metrics: Metrics | None = None,
        max_requests: int | None = None,
    ) -> None:
        self.slot = slot
        self.batch_tokens = batch_tokens
        self.max_requests = max_requests  # requests per model call; None: as many as the token budget allows
        self.queue_size = queue_size
        self.metrics = metrics
        self._waiting: deque[_Job] = deque()
        self._depth = 0  # texts in the queue
        self._changed = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._seconds_per_text = 0.05  # moving average, seeds Retry-After before the first batch

    @property
    def depth(self) -> int:
        """Texts waiting for the model."""
        return self._depth

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
            left, self._depth = list(self._waiting), 0
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

        Call from the event loop. Raises ``QueueFull`` when the queue has no room and ``NotReady`` when stopped.
        Cancelling the future withdraws the request.
        """
        counted = sum(self.count_tokens(texts)) if tokens is None else tokens
        return self._enqueue(list(texts), counted, finish).future

    def _enqueue(self, texts: list[str], tokens: int, finish: Finish[Any]) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(texts, tokens, finish, loop.create_future(), loop)
        with self._changed:
            if not self.running:
                raise NotReady("the scoring worker is not running")
            if self._depth and self._depth + len(job.texts) > self.queue_size:
                raise QueueFull(self._depth, len(job.texts), self.queue_size, self._retry_after())
            self._waiting.append(job)
            self._depth += len(job.texts)
            self._changed.notify()
        job.future.add_done_callback(lambda future: self._withdraw(job) if future.cancelled() else None)
        return job

    def _withdraw(self, job: _Job) -> None:
        job.abandoned = True
        with self._changed:
            if job in self._waiting:
                self._waiting.remove(job)
                self._depth -= len(job.texts)
                self._count_dropped(job.dropped_because)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._seconds_per_text * self._depth))

    def _work(self) -> None:
        lower_priority([threading.get_native_id()])  # model work yields the CPU to the event loop (service.process)
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if self._still_wanted(job)]
            if live:
                self._run(live)

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

    def _run(self, batch: list[_Job]) -> None:
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
            return
        self._observe(len(texts), sum(job.tokens for job in batch), time.perf_counter() - started)
        cursor = 0
        for job in batch:
            mine = results[cursor : cursor + len(job.texts)]
            cursor += len(job.texts)
            try:
                _settle(job, value=job.finish(scorer, mine))
            except Exception as error:
                _settle(job, error=error)

    def _observe(self, texts: int, tokens: int, seconds: float) -> None:
        self._seconds_per_text = 0.8 * self._seconds_per_text + 0.2 * seconds / texts
        if self.metrics is not None:
            self.metrics.batch_texts.observe(texts)
            self.metrics.batch_tokens.observe(tokens)
            self.metrics.batch_seconds.observe(seconds)

    def _count_dropped(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dropped.labels(reason).inc()


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
