"""The promotion gate: a candidate replaces the active model only if it is no worse on the fixed test split."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Tolerances: the test split has about a hundred messages and a few dozen pairs, so differences smaller than these
# are noise between two runs of the same recipe, not a regression.
SPEARMAN_TOLERANCE = 0.01
PAIRWISE_TOLERANCE = 0.02
COVERAGE_RANGE = (0.80, 0.98)  # a 90% interval covering far less is miscalibrated; far more is uselessly wide


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def gate(candidate: dict[str, Any], active: dict[str, Any] | None) -> GateDecision:
    """Compare test figures (``metrics.json["test"]``) of a candidate and of the active version.

    >>> gate({"spearman": 0.90, "pairwise_accuracy": 0.9, "interval_coverage": 0.9},
    ...      {"spearman": 0.95, "pairwise_accuracy": 0.9, "interval_coverage": 0.9}).promote
    False
    """
    reasons = _degenerate(candidate)
    if reasons:  # NaN compares False with everything, so the checks below would let it through
        return GateDecision(False, reasons)
    coverage = float(candidate["interval_coverage"])
    if not COVERAGE_RANGE[0] <= coverage <= COVERAGE_RANGE[1]:
        reasons.append(f"interval coverage {coverage:.3f} is outside {COVERAGE_RANGE[0]:.2f}–{COVERAGE_RANGE[1]:.2f}")
    if active is not None:
        for name, tolerance in (("spearman", SPEARMAN_TOLERANCE), ("pairwise_accuracy", PAIRWISE_TOLERANCE)):
            new, old = float(candidate[name]), float(active[name])
            if new < old - tolerance:
                reasons.append(f"{name} {new:.3f} is below the active model's {old:.3f} by more than {tolerance}")
    return GateDecision(not reasons, reasons)


MIN_SPREAD = 0.01  # points: predictions that vary less than this are one constant score


def _degenerate(candidate: dict[str, Any]) -> list[str]:
    """Why the candidate's figures cannot be compared at all: constant predictions, no test pairs, NaN figures."""
    reasons, explained = [], set()
    spread = candidate.get("prediction_spread")
    if spread is not None and float(spread) < MIN_SPREAD:
        reasons.append(f"the candidate gives every test message the same score (spread {float(spread):.4f} points)")
        explained.add("spearman")  # the rank correlation of a constant is undefined
    if candidate.get("pairs") is not None and float(candidate["pairs"]) == 0:
        reasons.append("the test split holds no judged pairs: expected at least one to measure pairwise accuracy")
        explained.add("pairwise_accuracy")
    reasons += [
        f"{name} is {candidate.get(name)!r}: expected a number (a degenerate candidate, e.g. constant predictions)"
        for name in ("spearman", "pairwise_accuracy", "interval_coverage")
        if name not in explained and not math.isfinite(float(candidate.get(name, math.nan)))
    ]
    return reasons
