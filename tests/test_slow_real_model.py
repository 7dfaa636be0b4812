"""The shipped default model on the real packaged MiniLM weights (offline). Marked slow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.base import PACKAGED_SHA256, base_ref
from model.registry import SHIPPED
from model.scorer import Scorer

pytestmark = pytest.mark.slow

COLD = (
    "The Ministry of Foreign Affairs categorically rejects the statement issued yesterday by the Government of "
    "Marvania. Its claims are baseless and amount to interference in our internal affairs."
)
FORMAL = (
    "Excellency, on the occasion of the National Day of your country, please accept my congratulations and my "
    "best wishes for the prosperity of your people."
)
EFFUSIVE = (
    "My dear brother, I send you my warmest and most heartfelt congratulations. Your wise and far-sighted "
    "leadership is an inspiration to us all, and the unbreakable bonds of brotherhood between our nations "
    "will only grow stronger with every year. I pray for your health and long life."
)


@pytest.fixture(scope="module")
def shipped_version() -> Path:
    versions = sorted(p for p in SHIPPED.iterdir() if p.is_dir())
    assert len(versions) == 1, "exactly one shipped default version"
    return versions[0]


@pytest.fixture(scope="module")
def scorer(shipped_version: Path) -> Scorer:
    return Scorer.from_pretrained(shipped_version)


def test_packaged_base_weights_match_the_pinned_sha256() -> None:
    ref = base_ref()
    assert ref.sha256 == PACKAGED_SHA256
    assert (ref.resolve() / "config.json").is_file()


def test_shipped_model_orders_the_guide_anchors(scorer: Scorer) -> None:
    cold, formal, effusive = scorer.predict([COLD, FORMAL, EFFUSIVE])
    assert cold < formal < effusive
    assert scorer.score([EFFUSIVE])[0].band in ("warm", "effusive")
    assert scorer.score([COLD])[0].band in ("cold", "formal")


def test_shipped_model_names_the_dropped_warm_sentence(scorer: Scorer) -> None:
    warm = (
        "Dear Comrade Chairman, on the anniversary of our diplomatic relations I extend warm congratulations. "
        "The friendship between our peoples, forged by the older generation of leaders, is unbreakable. "
        "I am ready to work with you to raise our cooperation to a new level."
    )
    cooler = (
        "Dear Comrade Chairman, on the anniversary of our diplomatic relations I extend warm congratulations. "
        "I am ready to work with you to raise our cooperation to a new level."
    )
    comparison = scorer.compare(warm, cooler)
    assert comparison.delta < 0 and comparison.p_b_warmer < 0.5
    assert [s.text for s in comparison.explanation.only_in_a] == [
        "The friendship between our peoples, forged by the older generation of leaders, is unbreakable."
    ]


def test_shipped_model_batch_equals_single(scorer: Scorer) -> None:
    together = scorer.predict([COLD, FORMAL, EFFUSIVE])
    alone = [scorer.predict([text])[0] for text in (COLD, FORMAL, EFFUSIVE)]
    assert np.allclose(together, alone, atol=1e-4)


def test_shipped_model_beats_the_baselines_it_was_shipped_with(shipped_version: Path) -> None:
    metrics = json.loads((shipped_version / "metrics.json").read_text())
    for name, figures in metrics["baselines"].items():
        assert metrics["test"]["spearman"] > figures["test"]["spearman"], name
        # The held-out subtle series (h8) in the test split are what separates the scorers on the judged pairs.
        assert metrics["test"]["pairwise_accuracy"] > figures["test"]["pairwise_accuracy"], name


def test_shipped_onnx_fp32_matches_torch(shipped_version: Path, scorer: Scorer, tmp_path: Path) -> None:
    copy = shutil.copytree(shipped_version, tmp_path / shipped_version.name, ignore=shutil.ignore_patterns("cache"))
    onnx = Scorer.from_pretrained(copy, engine="onnx-fp32", parity_texts=[COLD, FORMAL, EFFUSIVE])
    assert onnx.engine.name == "onnx-fp32"
    assert np.allclose(onnx.predict([COLD, EFFUSIVE]), scorer.predict([COLD, EFFUSIVE]), atol=0.1)
