"""The micro-batcher on its own: batching, budget, admission, abandonment, deadlines, shutdown and swaps.

Admission by expected wait is tested on a clock the test sets and on costs fed to the estimator, never on the wall
clock: a cost of 2**-10 s a token makes every estimate exact in binary, so "exactly at the limit" is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from model import EmptyInput, Scorer, ScoreResult
from service.batching import Batcher, ServiceCost
from service.errors import ClientGone, DeadlineExceeded, ExpectedWaitTooLong, NotReady, QueueFull
from service.metrics import Metrics
from service.model_slot import ModelSlot
from tests.service.helpers import Gate, wait_until

T = TypeVar("T")
TEXTS = [
    "Dear friend, warmest congratulations on your national day.",
    "We firmly reject the statement of your ministry.",
    "Our unbreakable friendship will continue for generations.",
    "Please accept my congratulations on your election.",
    "The brotherly peoples of our countries will never forget their shared struggle.",
]


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def score_now(batcher: Batcher, texts: list[str]) -> list[ScoreResult]:
    async def scenario() -> list[ScoreResult]:
        return await batcher.score(texts, timeout_s=30)

    return run(scenario)


async def entered(gate: Gate) -> None:
    await asyncio.to_thread(gate.wait_entered)


@pytest.fixture
def slot(gate: Gate) -> ModelSlot:
    slot = ModelSlot()
    gate.install(slot)  # closed: each batch waits for the test to open it
    return slot


@pytest.fixture
def make_batcher(slot: ModelSlot, gate: Gate) -> Iterator[Callable[..., Batcher]]:
    started: list[Batcher] = []

    def make(
        batch_tokens: int = 8192,
        queue_size: int = 256,
        max_requests: int | None = None,
        max_queue_wait_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Batcher:
        batcher = Batcher(
            slot,
            batch_tokens=batch_tokens,
            queue_size=queue_size,
            metrics=Metrics(),
            max_requests=max_requests,
            max_queue_wait_s=max_queue_wait_s,
            **({} if clock is None else {"clock": clock}),
        )
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    gate.open()
    for batcher in started:
        batcher.stop()


def test_submit_scores_as_the_scorer_does(
    make_batcher: Callable[..., Batcher], gate: Gate, tiny_scorer: Scorer
) -> None:
    batcher = make_batcher()
    gate.open()

    results = score_now(batcher, TEXTS)

    assert results == tiny_scorer.score(TEXTS)


def test_submit_while_model_busy_gathers_everything_queued_into_the_next_batch(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher()

    async def scenario() -> None:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        rest = [batcher.submit([text]) for text in TEXTS[1:4]]
        assert batcher.depth == 3
        gate.open()
        await asyncio.gather(first, *rest)

    run(scenario)

    assert gate.calls == [TEXTS[:1], TEXTS[1:4]]
    assert batcher.depth == 0


def test_submit_while_model_busy_splits_batches_at_the_token_budget(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    texts = ["word " * 40] * 6
    batcher = make_batcher()
    batcher.batch_tokens = 3 * batcher.count_tokens(texts[:1])[0]  # three of them fit, four do not

    async def scenario() -> None:
        first = batcher.submit(texts[:1])
        await entered(gate)
        rest = [batcher.submit([text]) for text in texts[1:]]
        gate.open()
        await asyncio.gather(first, *rest)

    run(scenario)

    assert [len(call) for call in gate.calls] == [1, 3, 2]


def test_submit_while_model_busy_with_one_request_a_batch_scores_requests_one_by_one(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher(max_requests=1)

    async def scenario() -> None:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        rest = [batcher.submit(TEXTS[1:3]), batcher.submit(TEXTS[3:4])]
        gate.open()
        await asyncio.gather(first, *rest)

    run(scenario)

    assert gate.calls == [TEXTS[:1], TEXTS[1:3], TEXTS[3:4]]  # a request's own texts still share a call


def test_submit_over_the_token_budget_is_scored_alone(make_batcher: Callable[..., Batcher], gate: Gate) -> None:
    batcher = make_batcher(batch_tokens=8)
    gate.open()

    results = score_now(batcher, TEXTS)

    assert len(results) == len(TEXTS)
    assert gate.calls == [TEXTS]


def test_submit_when_queue_is_full_raises_queue_full(make_batcher: Callable[..., Batcher], gate: Gate) -> None:
    batcher = make_batcher(queue_size=2)

    async def scenario() -> QueueFull:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        queued = batcher.submit(TEXTS[1:3])
        with pytest.raises(QueueFull) as refused:
            batcher.submit(TEXTS[3:4])
        gate.open()
        await asyncio.gather(first, queued)
        return refused.value

    error = run(scenario)

    assert str(error).startswith("the scoring queue holds 2 texts and this request adds 1; the limit is 2")
    assert int(error.headers["Retry-After"]) >= 1


def test_submit_larger_than_the_queue_is_taken_when_the_queue_is_empty(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher(queue_size=2)
    gate.open()

    results = score_now(batcher, TEXTS)

    assert [r.model_version for r in results] == ["tiny-0001"] * len(TEXTS)


def test_cancelled_request_leaves_the_queue_unscored(make_batcher: Callable[..., Batcher], gate: Gate) -> None:
    batcher = make_batcher()

    async def scenario() -> None:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        abandoned = batcher.submit(TEXTS[1:2])
        kept = batcher.submit(TEXTS[2:3])
        abandoned.cancel()
        await wait_until(lambda: batcher.depth == 1)
        gate.open()
        await asyncio.gather(first, kept)

    run(scenario)

    assert gate.calls == [TEXTS[:1], TEXTS[2:3]]
    assert batcher.metrics is not None
    assert batcher.metrics.registry.get_sample_value("diplotone_dropped_requests_total", {"reason": "cancelled"}) == 1


def test_score_past_its_deadline_fails_with_deadline_exceeded_and_leaves_the_queue(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher()

    async def scenario() -> Any:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        late = await asyncio.gather(batcher.score(TEXTS[1:2], timeout_s=0.05), return_exceptions=True)
        depth = batcher.depth  # after the deadline, before the model is free again
        gate.open()
        await first
        return late[0], depth

    error, depth = run(scenario)

    assert isinstance(error, DeadlineExceeded)
    assert str(error) == "the request was not scored within its deadline of 0.05 s"
    assert depth == 0
    assert gate.calls == [TEXTS[:1]]
    assert batcher.metrics is not None
    assert batcher.metrics.registry.get_sample_value("diplotone_dropped_requests_total", {"reason": "deadline"}) == 1


def test_score_whose_abandon_ends_first_raises_client_gone_and_leaves_the_queue(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher()

    async def scenario() -> Any:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        left = await asyncio.gather(
            batcher.score(TEXTS[1:2], timeout_s=30, abandon=lambda: asyncio.sleep(0.05)), return_exceptions=True
        )
        gate.open()
        await first
        return left[0]

    error = run(scenario)

    assert isinstance(error, ClientGone)
    assert gate.calls == [TEXTS[:1]]
    assert batcher.depth == 0


def test_count_tokens_counts_word_pieces_with_the_special_tokens_of_each_window(
    make_batcher: Callable[..., Batcher], tiny_scorer: Scorer
) -> None:
    batcher = make_batcher()
    short, long = TEXTS[0], " ".join(TEXTS * 40)
    pieces = [len(ids) for ids in tiny_scorer.tokenizer([short, long], add_special_tokens=False)["input_ids"]]
    windows = -(-pieces[1] // (tiny_scorer.max_tokens - 2))

    counts = batcher.count_tokens([short, long])

    assert windows > 1
    assert counts == [pieces[0] + 2, pieces[1] + 2 * windows]


def test_failing_text_fails_only_its_own_request(
    make_batcher: Callable[..., Batcher], gate: Gate, tiny_scorer: Scorer
) -> None:
    batcher = make_batcher()

    async def scenario() -> Any:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        bad = batcher.submit([""])  # the route refuses this; the batcher must cope all the same
        good = batcher.submit(TEXTS[1:2])
        gate.open()
        return await asyncio.gather(first, bad, good, return_exceptions=True)

    _, bad, good = run(scenario)

    assert isinstance(bad, EmptyInput)
    assert good == tiny_scorer.score(TEXTS[1:2])


def test_stop_fails_queued_requests_with_not_ready_and_finishes_the_batch_in_flight(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher()

    async def scenario() -> Any:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        queued = batcher.submit(TEXTS[1:2])
        stopping = asyncio.ensure_future(asyncio.to_thread(batcher.stop))
        await wait_until(queued.done)
        gate.open()
        await stopping
        return await asyncio.gather(first, queued, return_exceptions=True)

    first, queued = run(scenario)

    assert first[0].model_version == "tiny-0001"
    assert isinstance(queued, NotReady)
    assert not batcher.running


def test_submit_after_stop_raises_not_ready(make_batcher: Callable[..., Batcher]) -> None:
    batcher = make_batcher()
    batcher.stop()

    async def scenario() -> None:
        batcher.submit(TEXTS[:1])

    with pytest.raises(NotReady, match="the scoring worker is not running"):
        run(scenario)


def test_swap_applies_from_the_next_batch(
    make_batcher: Callable[..., Batcher], gate: Gate, slot: ModelSlot, second_scorer: Scorer
) -> None:
    batcher = make_batcher()

    async def scenario() -> Any:
        first = batcher.submit(TEXTS[:1])
        await entered(gate)
        await asyncio.to_thread(slot.swap, second_scorer)  # lands while the first batch is on the old model
        after = batcher.submit(TEXTS[1:2])
        gate.open()
        return await asyncio.gather(first, after)

    first, after = run(scenario)

    assert first[0].model_version == "tiny-0001"
    assert after[0].model_version == "tiny-0002"


# --------------------------------------------------------------------------------------- admission by expected wait

COST = 2**-10  # seconds a token: 1,024 tokens a second


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused(batcher: Batcher, reason: str) -> float | None:
    assert batcher.metrics is not None
    return batcher.metrics.registry.get_sample_value("diplotone_refused_requests_total", {"reason": reason})


def test_service_cost_converges_on_a_known_cost() -> None:
    cost = ServiceCost(weight=0.2)
    cost.observe(tokens=1000, seconds=5.0)  # a slow first batch (a cold cache, a busy machine)
    first = cost.seconds_per_token
    cost.observe(tokens=512, seconds=512 * COST)
    second = cost.seconds_per_token

    for _ in range(60):
        cost.observe(tokens=512, seconds=512 * COST)

    assert first == 0.005
    assert second == pytest.approx(0.005 + 0.2 * (COST - 0.005))  # one batch moves it a fifth of the way
    assert cost.seconds_per_token == pytest.approx(COST, rel=1e-4)
    assert cost.seconds(2048) == pytest.approx(2.0, rel=1e-4)


def test_service_cost_is_unknown_until_a_batch_is_measured() -> None:
    cost = ServiceCost()
    cost.observe(tokens=0, seconds=1.0)  # nothing to divide by: no figure

    assert cost.seconds_per_token is None
    assert cost.seconds(100) is None


def test_worker_feeds_the_cost_the_time_of_each_batch(make_batcher: Callable[..., Batcher], gate: Gate) -> None:
    clock = Clock()
    batcher = make_batcher(clock=clock)

    async def scenario() -> None:
        first = batcher.submit(TEXTS[:1], tokens=100)
        await entered(gate)
        clock.now += 0.5  # the batch takes half a second on the test's clock
        gate.open()
        await first

    run(scenario)

    assert batcher.cost.seconds_per_token == 0.5 / 100


def test_submit_is_refused_exactly_when_its_expected_wait_passes_the_limit(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher(max_queue_wait_s=2.0, clock=Clock())
    batcher.cost.observe(tokens=1024, seconds=1.0)

    async def scenario() -> tuple[list[float | None], ExpectedWaitTooLong]:
        first = batcher.submit(TEXTS[:1], tokens=512)  # in flight: 0.5 s of work left
        await entered(gate)
        waits = [batcher.expected_wait()]
        queued = [batcher.submit(TEXTS[1:2], tokens=1024)]  # would wait 1.5 s
        waits.append(batcher.expected_wait())
        queued.append(batcher.submit(TEXTS[2:3], tokens=512))  # 2.0 s: at the limit, not past it
        waits.append(batcher.expected_wait())
        with pytest.raises(ExpectedWaitTooLong) as refusal:
            batcher.submit(TEXTS[3:4], tokens=1)  # one token more than the limit allows
        gate.open()
        await asyncio.gather(first, *queued)
        return waits, refusal.value

    waits, error = run(scenario)

    assert waits == [0.5, 1.5, 2.0]
    assert error.extensions["expected_wait_s"] == round(2.0 + COST, 3)
    assert str(error) == (
        "expected wait 2.00 s is over the 2.0 s limit (max_queue_wait_s): 2 texts are queued ahead of this "
        "request's 1. Retry after 3 s"
    )
    assert gate.calls == [TEXTS[:1], TEXTS[1:3]]  # the refused request never reached the model
    assert refused(batcher, "expected_wait") == 1


@pytest.mark.parametrize(("tokens", "expected", "retry_after"), [(4096, 6.0, 6), (4097, 6.0 + COST, 7)])
def test_refusal_retry_after_is_the_estimate_in_whole_seconds_rounded_up(
    make_batcher: Callable[..., Batcher], gate: Gate, tokens: int, expected: float, retry_after: int
) -> None:
    batcher = make_batcher(max_queue_wait_s=2.0, clock=Clock())
    batcher.cost.observe(tokens=1024, seconds=1.0)

    async def scenario() -> ExpectedWaitTooLong:
        first = batcher.submit(TEXTS[:1], tokens=512)
        await entered(gate)
        queued = batcher.submit(TEXTS[1:2], tokens=1536)
        with pytest.raises(ExpectedWaitTooLong) as refusal:
            batcher.submit(TEXTS[2:3], tokens=tokens)  # 0.5 in flight + 1.5 queued + its own 4 s (and a token)
        gate.open()
        await asyncio.gather(first, queued)
        return refusal.value

    error = run(scenario)

    assert error.headers == {"Retry-After": str(retry_after)}
    assert error.extensions["retry_after"] == retry_after
    assert error.extensions["expected_wait_s"] == round(expected, 3)
    assert str(error).startswith(f"expected wait {expected:.1f} s is over the 2.0 s limit")


def test_expected_wait_counts_only_what_is_left_of_the_batch_in_flight(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    clock = Clock()
    batcher = make_batcher(max_queue_wait_s=2.0, clock=clock)
    batcher.cost.observe(tokens=1024, seconds=1.0)

    async def scenario() -> tuple[float | None, float | None, float | None]:
        first = batcher.submit(TEXTS[:1], tokens=1024)  # 1 s of work
        await entered(gate)
        queued = batcher.submit(TEXTS[1:2], tokens=1024)
        with pytest.raises(ExpectedWaitTooLong):
            batcher.submit(TEXTS[2:3], tokens=256)  # 1 + 1 + 0.25 s
        at_start = batcher.expected_wait(256)
        clock.now += 0.25  # a quarter of the batch in flight is done
        later = batcher.expected_wait(256)
        admitted = batcher.submit(TEXTS[2:3], tokens=256)  # now exactly at the limit
        clock.now += 5.0  # the batch in flight overruns its estimate: it counts as nothing left, never less
        overrun = batcher.expected_wait()
        gate.open()
        await asyncio.gather(first, queued, admitted)
        return at_start, later, overrun

    at_start, later, overrun = run(scenario)

    assert (at_start, later, overrun) == (2.25, 2.0, 1.25)


def test_cold_start_admits_by_queue_size_alone(make_batcher: Callable[..., Batcher], gate: Gate) -> None:
    batcher = make_batcher(queue_size=3, max_queue_wait_s=0.001, clock=Clock())

    async def scenario() -> tuple[float | None, QueueFull]:
        first = batcher.submit(TEXTS[:1], tokens=10**6)
        await entered(gate)
        wait = batcher.expected_wait(10**6)
        queued = [batcher.submit([text], tokens=10**6) for text in TEXTS[1:4]]  # no estimate: all three fit
        with pytest.raises(QueueFull) as full:
            batcher.submit(TEXTS[4:5], tokens=1)
        gate.open()
        await asyncio.gather(first, *queued)
        return wait, full.value

    wait, error = run(scenario)

    assert wait is None
    assert error.headers == {"Retry-After": "1"}  # 3 texts at the cold guess of 0.05 s each
    assert refused(batcher, "queue_full") == 1
    assert refused(batcher, "expected_wait") is None


def test_queue_size_is_a_hard_cap_however_short_the_expected_wait(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher(queue_size=2, max_queue_wait_s=2.0, clock=Clock())
    batcher.cost.observe(tokens=1024, seconds=0.001)

    async def scenario() -> tuple[float | None, QueueFull]:
        first = batcher.submit(TEXTS[:1], tokens=10)
        await entered(gate)
        queued = batcher.submit(TEXTS[1:3], tokens=20)
        wait = batcher.expected_wait(10)
        with pytest.raises(QueueFull) as full:
            batcher.submit(TEXTS[3:4], tokens=10)
        gate.open()
        await asyncio.gather(first, queued)
        return wait, full.value

    wait, error = run(scenario)

    assert wait is not None and wait < 0.001
    assert error.headers == {"Retry-After": "1"}
    assert refused(batcher, "queue_full") == 1


def test_empty_queue_takes_a_request_whose_own_work_passes_the_limit(
    make_batcher: Callable[..., Batcher], gate: Gate
) -> None:
    batcher = make_batcher(max_queue_wait_s=2.0, clock=Clock())
    batcher.cost.observe(tokens=1024, seconds=1.0)

    async def scenario() -> list[ScoreResult]:
        assert batcher.expected_wait(10 * 1024) == 10.0
        big = batcher.submit(TEXTS, tokens=10 * 1024)  # 10 s by the estimate, but nothing is ahead of it
        gate.open()
        return await big

    results = run(scenario)

    assert len(results) == len(TEXTS)
    assert refused(batcher, "expected_wait") is None
