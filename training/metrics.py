"""The evaluation figures, the same for the model and every baseline."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

from model.bands import band_of

# Judged pairs whose labels lie under this many points apart are "subtle": a sentence dropped, a phrase toned down.
# They are the year-over-year changes analysts look for, and the ones a crude scorer gets wrong.
SUBTLE_GAP = 10.0


def regression_metrics(
    predicted: np.ndarray,
    target: np.ndarray,
    ids: Sequence[str],
    pairs: Sequence[dict[str, str]],
    halfwidth: float | np.ndarray,
) -> dict[str, float]:
    """Spearman, Pearson, MAE, pairwise accuracy, band accuracy and coverage of ``predicted ± halfwidth``.

    ``halfwidth`` is one number or one per message (intervals that widen with distance from the training data).
    """
    predicted, target = np.asarray(predicted, dtype=float), np.asarray(target, dtype=float)
    position = {message_id: i for i, message_id in enumerate(ids)}
    judged = [(position[p["warmer"]], position[p["cooler"]]) for p in pairs]
    subtle = [(w, c) for w, c in judged if target[w] - target[c] < SUBTLE_GAP]
    low, high = np.clip(predicted - halfwidth, 0, 100), np.clip(predicted + halfwidth, 0, 100)
    with warnings.catch_warnings():
        # Constant predictions make both correlations NaN, which the gate rejects with its reason; no warning needed.
        warnings.simplefilter("ignore", ConstantInputWarning)
        spearman, pearson = spearmanr(predicted, target).statistic, pearsonr(predicted, target).statistic
    return {
        "n": float(len(target)),
        "spearman": float(spearman),
        "pearson": float(pearson),
        "mae": float(np.mean(np.abs(predicted - target))),
        "pairwise_accuracy": _ordered(predicted, judged),
        "pairs": float(len(judged)),
        "subtle_pairwise_accuracy": _ordered(predicted, subtle),
        "subtle_pairs": float(len(subtle)),
        "concordance": _concordance(predicted, target, min_gap=5.0),
        "band_accuracy": float(
            np.mean([band_of(float(np.clip(p, 0, 100))) == band_of(t) for p, t in zip(predicted, target, strict=True)])
        ),
        "interval_coverage": float(np.mean((target >= low) & (target <= high))),
        "interval_width": float(np.mean(high - low)),
        "mean_error": float(np.mean(predicted - target)),  # > 0: reads warmer than labelled
        "prediction_spread": float(np.std(predicted)),  # 0: the same score for every message (a degenerate model)
    }


def _ordered(predicted: np.ndarray, judged: Sequence[tuple[int, int]]) -> float:
    """The share of (warmer, cooler) index pairs that ``predicted`` puts in that order."""
    return float(np.mean([predicted[w] > predicted[c] for w, c in judged])) if judged else float("nan")


def _concordance(predicted: np.ndarray, target: np.ndarray, min_gap: float) -> float:
    """Of all message pairs whose labels differ by at least ``min_gap`` points, the share ordered correctly.

    The judged pairs are few (a few dozen in a test split) and easy to get all right; this asks the same question of
    every pair of messages, so it still separates scorers when both get every judged pair right.
    """
    label_gap = target[:, None] - target[None, :]  # (n, n)
    predicted_gap = predicted[:, None] - predicted[None, :]
    judged = label_gap >= min_gap
    return float(np.mean(predicted_gap[judged] > 0)) if judged.any() else float("nan")
