"""Evaluate any scorer on a corpus split with the figures of ``metrics.py``, calibrated on validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from model.calibration import Calibration
from training.corpus import Corpus
from training.metrics import regression_metrics

Predict = Callable[[Sequence[str]], np.ndarray]


def split_arrays(corpus: Corpus, split: str) -> tuple[list[str], list[str], np.ndarray]:
    records = corpus.split(split)
    return list(records["id"]), list(records["text"]), np.asarray(records["score"], dtype=float)


def evaluate_predictions(
    corpus: Corpus, predictions: dict[str, np.ndarray], calibration: Calibration
) -> dict[str, dict[str, float]]:
    """Figures on validation and test from predictions already made for each split."""
    figures = {}
    for split, predicted in predictions.items():
        ids, _, target = split_arrays(corpus, split)
        figures[split] = regression_metrics(
            predicted, target, ids, corpus.pairs_within(set(ids)), calibration.halfwidth
        )
    return figures


def evaluate_scorer(corpus: Corpus, predict: Predict, coverage: float = 0.9) -> dict[str, Any]:
    """Predict validation and test, calibrate on validation, report both."""
    predictions = {split: predict(split_arrays(corpus, split)[1]) for split in ("validation", "test")}
    calibration = Calibration.fit(predictions["validation"], split_arrays(corpus, "validation")[2], coverage)
    return evaluate_predictions(corpus, predictions, calibration)


def breakdown(corpus: Corpus, predict: Predict, column: str, split: str = "test") -> dict[str, dict[str, float]]:
    """Spearman and MAE on ``split`` within each value of ``column`` (form, voice, ...): where the model is weak."""
    from scipy.stats import spearmanr

    records = corpus.split(split)
    predicted = predict(list(records["text"]))
    target = np.asarray(records["score"], dtype=float)
    values = np.asarray([value or "unknown" for value in records[column]])
    table = {}
    for value in sorted(set(values)):
        mask = values == value
        rho = float(spearmanr(predicted[mask], target[mask]).statistic) if mask.sum() > 2 else float("nan")
        table[str(value)] = {
            "n": float(mask.sum()),
            "spearman": rho,
            "mae": float(np.mean(np.abs(predicted[mask] - target[mask]))),
        }
    return table
