"""The model switch on its own: load, probe, activate, swap, in that order; and serving what the pointer names."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from model import Registry, Scorer, ScoreResult, UnknownVersion
from service.model_slot import EnginePreparation, ModelSlot, ModelSwitch
from tests.factories import make_tiny_version


class _ScoresOutOfRange:
    """A scorer that loads but scores outside [0, 100], so that its probe fails."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)

    def score(self, texts: Sequence[str], **kwargs: Any) -> list[ScoreResult]:
        return [replace(result, score=140.0) for result in self.scorer.score(texts)]


class _OnOnnx:
    """A scorer as the configured ONNX engine opens it (the engine's name and report), scoring with the tiny model."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.engine = SimpleNamespace(name="onnx-fp32")
        self.engine_report = {"engine": "onnx-fp32", "requested": "onnx-fp32", "from_cache": True}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)


@dataclass
class _Preparation:
    """Engine preparation that records what it prepared, and holds each preparation until ``release`` is set."""

    works: bool = True
    release: threading.Event = field(default_factory=threading.Event)
    done: list[str] = field(default_factory=list)

    def prepare(self, folder: Path) -> bool:
        assert self.release.wait(30), "the test never released the preparation"
        if self.works:
            self.done.append(folder.name)
        return self.works

    def switch(self, registry: Registry, slot: ModelSlot) -> ModelSwitch:
        preparation = EnginePreparation(
            prepared=lambda folder: folder.name in self.done, prepare=self.prepare, reference=Scorer.from_pretrained
        )
        return ModelSwitch(registry, slot, load=lambda f: _OnOnnx(Scorer.from_pretrained(f)), engine=preparation)  # type: ignore[arg-type,return-value]


@pytest.fixture(scope="module")
def second_version(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_version(tiny_base, tmp_path_factory.mktemp("versions") / "tiny-0002", version="tiny-0002")


@pytest.fixture
def registry(tmp_path: Path, tiny_version: Path, second_version: Path) -> Registry:
    registry = Registry(tmp_path / "models")
    registry.install(tiny_version, "tiny-0001")
    registry.install(second_version, "tiny-0002")
    registry.activate("tiny-0001")
    return registry


def test_serve_active_serves_the_pointer_and_leaves_it(registry: Registry) -> None:
    slot = ModelSlot()

    served = ModelSwitch(registry, slot).serve_active()

    assert served == slot.current().version == slot.probe.model_version == "tiny-0001"
    assert registry.active_version() == "tiny-0001"


def test_activate_serves_the_version_and_moves_the_pointer(registry: Registry) -> None:
    slot = ModelSlot()
    switch = ModelSwitch(registry, slot)
    switch.serve_active()

    assert switch.activate("tiny-0002") == "tiny-0002"
    assert (slot.current().version, registry.active_version()) == ("tiny-0002", "tiny-0002")


def test_activate_a_version_that_fails_its_probe_moves_nothing(registry: Registry) -> None:
    slot = ModelSlot()
    switch = ModelSwitch(registry, slot, load=lambda folder: _load(folder, failing="tiny-0002"))
    switch.serve_active()

    with pytest.raises(RuntimeError, match=r"scored the probe text 140\.0"):
        switch.activate("tiny-0002")

    assert (slot.current().version, registry.active_version()) == ("tiny-0001", "tiny-0001")


def test_serve_active_with_no_active_version_names_the_registry(tmp_path: Path) -> None:
    with pytest.raises(UnknownVersion, match="no active model version in"):
        ModelSwitch(Registry(tmp_path / "models"), ModelSlot()).serve_active()


def test_follow_pointer_serves_a_version_activated_elsewhere(registry: Registry) -> None:
    slot = ModelSlot()
    switch = ModelSwitch(registry, slot)
    switch.serve_active()
    Registry(registry.root).activate("tiny-0002")  # another replica, or `diplotone models activate`

    assert switch.follow_pointer() == "tiny-0002"
    assert (slot.current().version, slot.probe.model_version) == ("tiny-0002", "tiny-0002")


def test_follow_pointer_to_a_version_that_fails_its_probe_keeps_serving_and_tries_it_once(registry: Registry) -> None:
    loaded: list[str] = []

    def load(folder: Path) -> Scorer:
        loaded.append(folder.name)
        return _load(folder, failing="tiny-0002")

    slot = ModelSlot()
    switch = ModelSwitch(registry, slot, load=load)
    switch.serve_active()
    registry.activate("tiny-0002")

    assert switch.follow_pointer() == switch.follow_pointer() == "tiny-0001"
    assert slot.current().version == "tiny-0001"
    assert loaded == ["tiny-0001", "tiny-0002"]  # refused once, not reloaded every period
    registry.activate("tiny-0001")
    assert switch.follow_pointer() == "tiny-0001"
    assert loaded == ["tiny-0001", "tiny-0002"]  # already served: nothing to load


def _load(folder: Path, failing: str) -> Scorer:
    scorer = Scorer.from_pretrained(folder)
    return _ScoresOutOfRange(scorer) if folder.name == failing else scorer  # type: ignore[return-value]


# ------------------------------------------------------------------------------- engines prepared, or not yet


def test_an_unprepared_version_serves_on_torch_at_once_and_its_engine_comes_in_when_prepared(
    registry: Registry,
) -> None:
    slot, preparation = ModelSlot(), _Preparation()
    switch = preparation.switch(registry, slot)

    switch.serve_active()
    at_first = (slot.current().engine.name, slot.probe.model_version)
    still_preparing = not switch.wait_for_engine(0.05)
    preparation.release.set()
    prepared = switch.wait_for_engine(30)

    assert at_first == ("torch", "tiny-0001")
    assert still_preparing and prepared
    assert (slot.current().engine.name, slot.current().version) == ("onnx-fp32", "tiny-0001")
    assert preparation.done == ["tiny-0001"]


def test_a_version_prepared_beforehand_is_activated_on_its_engine_without_preparing_again(registry: Registry) -> None:
    slot, preparation = ModelSlot(), _Preparation()
    preparation.release.set()
    switch = preparation.switch(registry, slot)
    switch.serve_active()
    assert switch.wait_for_engine(30)

    assert switch.prepare("tiny-0002")  # what a training run does for its candidate before it ends
    switch.activate("tiny-0002")

    assert (slot.current().engine.name, slot.current().version) == ("onnx-fp32", "tiny-0002")
    assert preparation.done == ["tiny-0001", "tiny-0002"]  # each prepared once
    assert switch.wait_for_engine(0)  # nothing is being prepared


def test_an_engine_that_cannot_be_prepared_leaves_the_version_serving_on_torch(registry: Registry) -> None:
    slot, preparation = ModelSlot(), _Preparation(works=False)
    preparation.release.set()
    switch = preparation.switch(registry, slot)

    switch.serve_active()

    assert switch.wait_for_engine(30)
    assert (slot.current().engine.name, slot.current().version) == ("torch", "tiny-0001")
