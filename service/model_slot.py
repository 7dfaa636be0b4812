"""The slot holding the Scorer that serves requests, and the one switch that changes what it serves.

The batcher reads the slot once per batch, so a batch in flight finishes on the scorer it started with and the next
batch uses the new one. A scorer enters the slot only after it has scored a probe text: that is what ``/readyz``
reports, and it keeps a model that cannot score from ever going live.

``ModelSwitch`` is the only writer of the registry's ``active`` pointer in the service: an activation (a rollback
through the API, or a training run's candidate that passed the gate) loads the version, probes it, points the
registry at it and swaps it in, in that order, one at a time. ``serve_active`` takes the same path without moving the
pointer: it serves what the pointer names (at start-up, and for whatever follows the pointer from outside).
``follow_pointer`` is what a replica runs every ``registry_poll_s`` (``service.app.watch_registry``): a version another
replica (or the command line) activated is served here too, through that same path.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

from model import Registry, Scorer, ScoreResult

log = logging.getLogger("diplotone.model_slot")

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

    def swap(self, scorer: Scorer, probed: ScoreResult | None = None) -> Scorer | None:
        """Make ``scorer`` the serving one once it has scored the probe text; return the scorer it replaced.

        ``probed`` is its probe result when the caller has already probed it (``ModelSwitch``); otherwise the probe
        runs here, on the model, so call it off the event loop. If the probe fails, the error propagates and the slot
        keeps its scorer.
        """
        result = probed if probed is not None else probe(scorer)
        with self._lock:
            previous, self._scorer, self._probe = self._scorer, scorer, result
        return previous


def probe(scorer: Scorer) -> ScoreResult:
    """Score ``PROBE_TEXT``; raise ``RuntimeError`` if the result is not a score in [0, 100]."""
    result = scorer.score([PROBE_TEXT])[0]
    if not (math.isfinite(result.score) and 0.0 <= result.score <= 100.0):
        raise RuntimeError(f"model {scorer.version} scored the probe text {result.score}; expected a score in [0, 100]")
    return result


class ModelSwitch:
    """Changes what the slot serves: load, probe, (activate), swap; one switch at a time.

    The version is loaded and probed before anything changes, so a version that cannot serve never becomes active and
    never reaches the slot; the registry pointer moves before the slot, so a crash in between restarts on the new
    version. Runs the model: call it off the event loop.

    >>> switch = ModelSwitch(Registry(Path("var/models")), ModelSlot())  # doctest: +SKIP
    >>> switch.activate("2026-12-03-lora-904166")  # doctest: +SKIP
    '2026-12-03-lora-904166'
    """

    def __init__(
        self, registry: Registry, slot: ModelSlot, load: Callable[[Path], Scorer] = Scorer.from_pretrained
    ) -> None:
        self.registry = registry
        self.slot = slot
        self.load = load  # the configured engine and threads (service.app.model_loader)
        self._lock = threading.Lock()
        self._refused: str | None = None  # the last version the pointer named that could not be served

    @property
    def serving(self) -> str | None:
        return self.slot.current().version if self.slot.ready else None

    def activate(self, version: str) -> str:
        """Serve ``version`` and point the registry at it (``UnknownVersion``, ``ArtifactCorrupt`` or the probe's error
        if it cannot be served: then nothing has changed)."""
        with self._lock:
            scorer, probed = self._load(version)
            self.registry.activate(version)
            self.slot.swap(scorer, probed)
            return scorer.version

    def serve_active(self) -> str:
        """Serve the version the registry's pointer names, if it is not served already; the pointer stays put."""
        with self._lock:
            version = self.registry.active_path().name  # UnknownVersion when the registry has no active version
            if version != self.serving:
                scorer, probed = self._load(version)
                self.slot.swap(scorer, probed)
                log.info("serving model %s on engine %s from %s", version, scorer.engine.name, self.registry.root)
            return version

    def follow_pointer(self) -> str | None:
        """Serve what the pointer names if it has moved; return the version served.

        A version that cannot be served is refused once, logged, and not retried until the pointer moves again: the
        slot keeps serving what it served.
        """
        version = self.registry.active_version()
        if version is None or version in (self.serving, self._refused):
            return self.serving
        try:
            return self.serve_active()
        except Exception as error:
            self._refused = version
            log.error(
                "the registry points at %s, which cannot be served (%s); still serving %s", version, error, self.serving
            )
            return self.serving

    def _load(self, version: str) -> tuple[Scorer, ScoreResult]:
        scorer = self.load(self.registry.path(version))
        return scorer, probe(scorer)
