"""The evaluation figures, the same for the model and every baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr

from model.bands import band_of


def regression_metrics(
    predicted: np.ndarray,
    target: np.ndarray,
    ids: Sequence[str],
    pairs: Sequence[dict[str, str]],
    halfwidth: float,
) -> dict[str, float]:
    """Spearman, Pearson, MAE, pairwise accuracy, band accuracy and coverage of ``predicted ± halfwidth``."""
    predicted, target = np.asarray(predicted, dtype=float), np.asarray(target, dtype=float)
    position = {message_id: i for i, message_id in enumerate(ids)}
    judged = [(position[p["warmer"]], position[p["cooler"]]) for p in pairs]
    pairwise = float(np.mean([predicted[w] > predicted[c] for w, c in judged])) if judged else float("nan")
    low, high = np.clip(predicted - halfwidth, 0, 100), np.clip(predicted + halfwidth, 0, 100)
    return {
        "n": float(len(target)),
        "spearman": float(spearmanr(predicted, target).statistic),
        "pearson": float(pearsonr(predicted, target).statistic),
        "mae": float(np.mean(np.abs(predicted - target))),
        "pairwise_accuracy": pairwise,
        "pairs": float(len(judged)),
        "band_accuracy": float(
            np.mean([band_of(float(np.clip(p, 0, 100))) == band_of(t) for p, t in zip(predicted, target, strict=True)])
        ),
        "interval_coverage": float(np.mean((target >= low) & (target <= high))),
    }
