"""Calibration of a version: the 90% interval around a score and the probability that one message is warmer."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CALIBRATION = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """Split-conformal interval from validation residuals.

    ``halfwidth`` is the ceil((n + 1)(1 - alpha))-th smallest absolute validation residual, so on exchangeable data
    an interval ``score ± halfwidth`` covers the true label with probability at least ``coverage``.
    ``residual_sd`` sets ``p_warmer``: two independent errors of that spread give ``Φ(delta / (√2 · sd))``.
    """

    coverage: float
    halfwidth: float
    residual_sd: float
    n: int
    method: str = "split-conformal, absolute residuals on the validation split"

    @classmethod
    def fit(cls, predicted: np.ndarray, target: np.ndarray, coverage: float = 0.9) -> Calibration:
        residuals = np.sort(np.abs(np.asarray(predicted) - np.asarray(target)))
        n = len(residuals)
        if n == 0:
            raise ValueError("calibration needs at least one validation message; found none")
        rank = min(n, math.ceil((n + 1) * coverage))
        return cls(coverage, float(residuals[rank - 1]), float(np.sqrt(np.mean(residuals**2))), n)

    def interval(self, score: float) -> tuple[float, float]:
        return (max(0.0, score - self.halfwidth), min(100.0, score + self.halfwidth))

    def p_warmer(self, delta: float) -> float:
        scale = math.sqrt(2.0) * max(self.residual_sd, 1e-6)
        return 0.5 * (1.0 + math.erf(delta / scale / math.sqrt(2.0)))

    def save(self, folder: Path) -> None:
        (folder / CALIBRATION).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Calibration:
        return cls(**json.loads((folder / CALIBRATION).read_text()))
