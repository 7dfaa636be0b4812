"""The slot holding the Scorer that serves requests, replaced atomically on promotion or rollback.

The batcher reads the slot once per batch, so a batch in flight finishes on the scorer it started with and the next
batch uses the new one. A scorer enters the slot only after it has scored a probe text: that is what ``/readyz``
reports, and it keeps a model that cannot score from ever going live.
"""

from __future__ import annotations

import math
import threading

from model import Scorer, ScoreResult

PROBE_TEXT = "Dear friend, please accept my warmest congratulations on the national day of your country."


class ModelSlot:
    """Holds the serving Scorer.

    >>> slot = ModelSlot()
    >>> slot.swap(Scorer.from_pretrained(registry.active_path()))  # doctest: +SKIP
    >>> slot.current().version  # doctest: +SKIP
    'tiny-0001'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scorer: Scorer | None = None
        self._probe: ScoreResult | None = None

    @property
    def ready(self) -> bool:
        """True once a scorer that passed its probe is in the slot."""
        return self._scorer is not None

    @property
    def probe(self) -> ScoreResult:
        """The probe result of the scorer in the slot; ``LookupError`` if none has been put in yet."""
        result = self._probe
        if result is None:
            raise LookupError("no model in the slot yet; swap one in first")
        return result

    def current(self) -> Scorer:
        """The serving scorer; ``LookupError`` if none has been put in yet."""
        scorer = self._scorer
        if scorer is None:
            raise LookupError("no model in the slot yet; swap one in first")
        return scorer

    def swap(self, scorer: Scorer) -> Scorer | None:
        """Probe ``scorer``, then make it the serving one; return the scorer it replaced.

        Runs the model, so call it off the event loop (``await anyio.to_thread.run_sync(slot.swap, scorer)``).
        If the probe fails, the error propagates and the slot keeps its scorer.
        """
        result = probe(scorer)
        with self._lock:
            previous, self._scorer, self._probe = self._scorer, scorer, result
        return previous


def probe(scorer: Scorer) -> ScoreResult:
    """Score ``PROBE_TEXT``; raise ``RuntimeError`` if the result is not a score in [0, 100]."""
    result = scorer.score([PROBE_TEXT])[0]
    if not (math.isfinite(result.score) and 0.0 <= result.score <= 100.0):
        raise RuntimeError(f"model {scorer.version} scored the probe text {result.score}; expected a score in [0, 100]")
    return result
