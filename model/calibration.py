"""Calibration of a version: the 90% interval around a score, how unusual a text is, and P(one message warmer).

The interval is **normalised split conformal**: a validation message's nonconformity is its absolute residual divided
by ``scale_floor + distance``, where ``distance`` is the mean cosine distance of its embedding to its nearest
training messages (``model/neighbours.py``). An interval is ``score ± quantile · (scale_floor + distance)``: it widens
with distance from the training data, and on exchangeable data it still covers the label with probability at least
``coverage``. A version without neighbours (written before they were kept) falls back to a constant half-width.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CALIBRATION = "calibration.json"
UNUSUAL_QUANTILE = 0.95  # a text farther from training than 95% of validation messages is flagged unusual


@dataclass(frozen=True)
class Calibration:
    """Conformal interval from validation residuals, scaled by distance to the training data where it is known.

    ``halfwidth`` is the ceil((n + 1) · coverage)-th smallest nonconformity on validation: an absolute residual
    (constant intervals) or a residual per unit of ``scale_floor + distance`` (normalised intervals).
    ``residual_sd`` sets ``p_warmer``: two independent errors of that spread give ``Φ(delta / (√2 · sd))``.

    >>> c = Calibration.fit(np.array([50.0, 60.0]), np.array([52.0, 57.0]))
    >>> c.interval(40.0)
    (37.0, 43.0)
    """

    coverage: float
    halfwidth: float
    residual_sd: float
    n: int
    method: str = "split-conformal, absolute residuals on the validation split"
    scale_floor: float | None = None  # set for normalised intervals: the width's part that distance does not explain
    unusual_distance: float | None = None  # distances above this are flagged unusual

    @classmethod
    def fit(
        cls,
        predicted: np.ndarray,
        target: np.ndarray,
        coverage: float = 0.9,
        distances: np.ndarray | None = None,
    ) -> Calibration:
        residuals = np.abs(np.asarray(predicted, dtype=float) - np.asarray(target, dtype=float))
        n = len(residuals)
        if n == 0:
            raise ValueError("calibration needs at least one validation message; found none")
        rank = min(n, math.ceil((n + 1) * coverage))
        sd = float(np.sqrt(np.mean(residuals**2)))
        if distances is None:
            return cls(coverage, float(np.sort(residuals)[rank - 1]), sd, n)
        distances = np.asarray(distances, dtype=float)
        # The floor keeps near-duplicates of training messages from getting a zero-width interval.
        floor = max(float(np.median(distances)), 1e-3)
        scores = np.sort(residuals / (floor + distances))
        return cls(
            coverage,
            float(scores[rank - 1]),
            sd,
            n,
            "normalised split-conformal: |residual| / (floor + distance to training), on the validation split",
            floor,
            float(np.quantile(distances, UNUSUAL_QUANTILE)),
        )

    @property
    def uses_distance(self) -> bool:
        return self.scale_floor is not None

    def halfwidths(self, distances: np.ndarray | None) -> np.ndarray | float:
        """Half-width of the interval for each distance (a constant where the calibration ignores distance)."""
        if not self.uses_distance or distances is None:
            return self.halfwidth
        return self.halfwidth * (float(self.scale_floor or 0.0) + np.asarray(distances, dtype=float))

    def interval(self, score: float, distance: float | None = None) -> tuple[float, float]:
        half = float(self.halfwidths(None if distance is None else np.asarray(distance)))
        return (max(0.0, score - half), min(100.0, score + half))

    def is_unusual(self, distance: float | None) -> bool:
        return distance is not None and self.unusual_distance is not None and distance > self.unusual_distance

    def p_warmer(self, delta: float) -> float:
        scale = math.sqrt(2.0) * max(self.residual_sd, 1e-6)
        return 0.5 * (1.0 + math.erf(delta / scale / math.sqrt(2.0)))

    def save(self, folder: Path) -> None:
        (folder / CALIBRATION).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Calibration:
        return cls(**json.loads((folder / CALIBRATION).read_text()))
