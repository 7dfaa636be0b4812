"""The ONNX Runtime engines agree with the torch reference, or are refused with a reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from model.scorer import Scorer

TEXTS = [
    "Dear friend, please accept my warmest congratulations on the national day. Our friendship is eternal.",
    "We firmly reject the statement of the ministry. We demand that the government note our protest.",
    "Happy new year, dear brother! I wish you good health and happiness.",
    "The letter has been received.",
]


@pytest.fixture(scope="module")
def version_copy(tiny_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shutil.copytree(tiny_version, tmp_path_factory.mktemp("engines") / "v")


def test_onnx_fp32_matches_torch_within_a_tenth_of_a_point(version_copy: Path, tiny_scorer: Scorer) -> None:
    onnx = Scorer.from_pretrained(version_copy, engine="onnx-fp32", parity_texts=TEXTS)
    assert onnx.engine.name == "onnx-fp32"
    assert onnx.engine_report["onnx-fp32"]["max_abs_diff"] <= 0.1
    assert np.allclose(onnx.predict(TEXTS), tiny_scorer.predict(TEXTS), atol=0.1)


def test_onnx_results_keep_the_full_shape(version_copy: Path, tiny_scorer: Scorer) -> None:
    onnx = Scorer.from_pretrained(version_copy, engine="onnx-fp32")
    ours, reference = onnx.score(TEXTS[:1])[0], tiny_scorer.score(TEXTS[:1])[0]
    assert [s.text for s in ours.sentences] == [s.text for s in reference.sentences]
    assert ours.markers == reference.markers


def test_onnx_int8_is_served_or_refused_with_a_reason(version_copy: Path) -> None:
    scorer = Scorer.from_pretrained(version_copy, engine="onnx-int8", parity_texts=TEXTS)
    report = scorer.engine_report
    check = report["onnx-int8"]
    passes = check["spearman"] >= 0.995 and check["max_abs_diff"] <= 2.0
    assert scorer.engine.name == ("onnx-int8" if passes else "onnx-fp32")
    assert passes or "Spearman" in report["refused"]["onnx-int8"]


def test_onnx_export_is_cached_in_the_version_folder(version_copy: Path) -> None:
    Scorer.from_pretrained(version_copy, engine="onnx-fp32")
    exported = version_copy / "cache" / "encoder-fp32.onnx"
    before = exported.stat().st_mtime_ns
    Scorer.from_pretrained(version_copy, engine="onnx-fp32")
    assert exported.stat().st_mtime_ns == before


def test_unknown_engine_is_refused(version_copy: Path) -> None:
    with pytest.raises(ValueError, match="engine must be one of torch, onnx-fp32, onnx-int8; found 'tpu'"):
        Scorer.from_pretrained(version_copy, engine="tpu")
