"""Evaluate any scorer on a corpus split with the figures of ``metrics.py``, calibrated on validation.

A scorer is an ``Estimate``: texts → scores and, where it knows them, distances to its training data (the model's
intervals widen with distance; the baselines' are constant).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from model.calibration import Calibration
from training.corpus import Corpus
from training.metrics import regression_metrics

Predict = Callable[[Sequence[str]], np.ndarray]
Estimate = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray | None]]
Estimates = dict[str, tuple[np.ndarray, np.ndarray | None]]
MIN_GROUP = 5  # figures by form need at least this many messages to mean anything


def split_arrays(corpus: Corpus, split: str) -> tuple[list[str], list[str], np.ndarray]:
    records = corpus.split(split)
    return list(records["id"]), list(records["text"]), np.asarray(records["score"], dtype=float)


def scores_only(predict: Predict) -> Estimate:
    """An ``Estimate`` for a scorer that knows no distances (the baselines)."""
    return lambda texts: (predict(texts), None)


def estimate_splits(corpus: Corpus, estimate: Estimate, splits: Sequence[str] = ("validation", "test")) -> Estimates:
    return {split: estimate(split_arrays(corpus, split)[1]) for split in splits}


def calibrate(corpus: Corpus, estimates: Estimates, coverage: float = 0.9) -> Calibration:
    predicted, distances = estimates["validation"]
    _, texts, target = split_arrays(corpus, "validation")
    return Calibration.fit(predicted, target, coverage, distances, texts)


def evaluate_predictions(
    corpus: Corpus, estimates: Estimates, calibration: Calibration, by: str | None = None
) -> dict[str, Any]:
    """Figures on each split of ``estimates``; with ``by`` (a column: form, kind) also within each of its values."""
    figures: dict[str, Any] = {}
    for split, (predicted, distances) in estimates.items():
        ids, texts, target = split_arrays(corpus, split)
        halfwidth = calibration.halfwidths(distances, texts)
        figures[split] = regression_metrics(predicted, target, ids, corpus.pairs_within(set(ids)), halfwidth)
        if by is not None:
            figures[f"{split}_by_{by}"] = _by_column(corpus, split, by, predicted, halfwidth)
    return figures


def evaluate_scorer(corpus: Corpus, estimate: Estimate, coverage: float = 0.9, by: str | None = None) -> dict[str, Any]:
    """Estimate validation and test, calibrate on validation, report both."""
    estimates = estimate_splits(corpus, estimate)
    return evaluate_predictions(corpus, estimates, calibrate(corpus, estimates, coverage), by)


def _by_column(
    corpus: Corpus, split: str, column: str, predicted: np.ndarray, halfwidth: float | np.ndarray
) -> dict[str, dict[str, float]]:
    records = corpus.split(split)
    ids, target = list(records["id"]), np.asarray(records["score"], dtype=float)
    values = np.asarray([value or "unknown" for value in records[column]])
    widths = np.broadcast_to(np.asarray(halfwidth, dtype=float), predicted.shape)
    table = {}
    for value in sorted(set(values)):
        mask = values == value
        if mask.sum() < MIN_GROUP or np.ptp(target[mask]) == 0 or np.ptp(predicted[mask]) == 0:
            continue
        chosen = [i for i, keep in zip(ids, mask, strict=True) if keep]
        table[str(value)] = regression_metrics(
            predicted[mask], target[mask], chosen, corpus.pairs_within(set(chosen)), widths[mask]
        )
    return table
