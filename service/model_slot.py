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

No switch waits for an engine to be prepared. An ONNX engine needs an export, an int8 calibration and a parity check
against torch (a minute of both cores for MiniLM), done once per version and cached beside it. A training run's
candidate is prepared before its run ends (``prepare``, from ``service.jobs``), so it is served on its engine from its
first request. A version that is not prepared yet (the shipped one on a first start, one installed by hand) is served
at once on torch, the reference, which needs nothing prepared; its engine is prepared in a child process in the
background and swapped in, through the same lock, once its parity has passed (``wait_for_engine`` waits for that).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class EnginePreparation:
    """How a version's ONNX engine is made ready (built by ``service.app.model_loader``).

    ``prepared`` says whether its files and parity verdict are cached beside the version; ``prepare`` does that work in
    a child process (False if it could not); ``reference`` opens the version on torch, which needs nothing prepared.
    """

    prepared: Callable[[Path], bool]
    prepare: Callable[[Path], bool]
    reference: Callable[[Path], Scorer]


class ModelSwitch:
    """Changes what the slot serves: load, probe, (activate), swap; one switch at a time.

    The version is loaded and probed before anything changes, so a version that cannot serve never becomes active and
    never reaches the slot; the registry pointer moves before the slot, so a crash in between restarts on the new
    version. Runs the model: call it off the event loop. With ``engine`` (an ONNX engine configured), a version whose
    engine is not prepared is served on torch until it is (see the module's docstring).

    >>> switch = ModelSwitch(Registry(Path("var/models")), ModelSlot())  # doctest: +SKIP
    >>> switch.activate("2026-12-03-lora-904166")  # doctest: +SKIP
    '2026-12-03-lora-904166'
    """

    def __init__(
        self,
        registry: Registry,
        slot: ModelSlot,
        load: Callable[[Path], Scorer] = Scorer.from_pretrained,
        engine: EnginePreparation | None = None,
    ) -> None:
        self.registry = registry
        self.slot = slot
        self.load = load  # the configured engine and threads (service.app.model_loader)
        self.engine = engine
        self._lock = threading.Lock()
        self._refused: str | None = None  # the last version the pointer named that could not be served
        self._upgrade: threading.Thread | None = None  # preparing the served version's engine, if one is

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
            self._upgrade_if_on_reference(version, scorer)
            return scorer.version

    def serve_active(self) -> str:
        """Serve the version the registry's pointer names, if it is not served already; the pointer stays put."""
        with self._lock:
            version = self.registry.active_path().name  # UnknownVersion when the registry has no active version
            if version != self.serving:
                scorer, probed = self._load(version)
                self.slot.swap(scorer, probed)
                self._upgrade_if_on_reference(version, scorer)
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

    def prepare(self, version: str) -> bool:
        """Prepare ``version``'s engine now (in a child process; nothing is served or moved): what a training run does
        for its candidate, so that activating it later only opens cached files. True if there is nothing left to do."""
        if self.engine is None:
            return True
        folder = self.registry.path(version)
        return self.engine.prepared(folder) or self.engine.prepare(folder)

    def wait_for_engine(self, timeout_s: float | None = None) -> bool:
        """Wait until no engine is being prepared for the served version; False if one still is after ``timeout_s``."""
        upgrade = self._upgrade
        if upgrade is not None:
            upgrade.join(timeout_s)
            return not upgrade.is_alive()
        return True

    def _load(self, version: str) -> tuple[Scorer, ScoreResult]:
        folder = self.registry.path(version)
        if self.engine is not None and not self.engine.prepared(folder):
            scorer = self.engine.reference(folder)  # serve now; the engine follows (_upgrade_if_on_reference)
        else:
            scorer = self.load(folder)
        return scorer, probe(scorer)

    def _upgrade_if_on_reference(self, version: str, scorer: Scorer) -> None:
        """Called with the lock held, after a swap: prepare the engine of a version served on the reference."""
        if self.engine is None or not _on_reference(scorer):
            return
        if self._upgrade is not None and self._upgrade.is_alive():
            return  # it moves on to whatever is served when it finishes
        log.info("serving %s on torch while its engine is prepared in the background", version)
        self._upgrade = threading.Thread(target=self._prepare_and_swap, name="engine-preparation", daemon=True)
        self._upgrade.start()

    def _prepare_and_swap(self) -> None:
        """Prepare the served version's engine, then swap it in if that scorer is still the one served."""
        while self.slot.ready and _on_reference(served := self.slot.current()):
            if not self.prepare(served.version):
                log.error("the engine of %s could not be prepared; it keeps serving on torch", served.version)
                return
            with self._lock:
                if self.slot.current() is not served:
                    continue  # another version came in meanwhile: prepare its engine, if it is on torch too
                try:
                    scorer = self.load(self.registry.path(served.version))
                    self.slot.swap(scorer, probe(scorer))
                except Exception as error:
                    log.error("the engine of %s could not be served (%s); it stays on torch", served.version, error)
                    return
                log.info("serving %s on engine %s", served.version, scorer.engine.name)
                return


def _on_reference(scorer: Scorer) -> bool:
    """Opened on torch because its engine was not prepared (not torch by request, nor after a refused parity)."""
    return scorer.engine.name == "torch" and "requested" not in scorer.engine_report
