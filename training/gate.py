"""The promotion gate: a candidate replaces the active model only if it is no worse on the fixed test split, and no
worse on the held-out share of the labels users gave it (``user_test``), where there are enough of them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Tolerances: the test split has about a hundred messages and a few dozen pairs, so differences smaller than these
# are noise between two runs of the same recipe, not a regression.
SPEARMAN_TOLERANCE = 0.01
PAIRWISE_TOLERANCE = 0.02
COVERAGE_RANGE = (0.80, 0.98)  # a 90% interval covering far less is miscalibrated; far more is uselessly wide
MIN_USER_TEST = 5  # held-out user labels needed before the gate judges on them


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def gate(
    candidate: dict[str, Any],
    active: dict[str, Any] | None,
    candidate_user: dict[str, Any] | None = None,
    active_user: dict[str, Any] | None = None,
) -> GateDecision:
    """Compare test figures (``metrics.json["test"]``) of a candidate and of the active version, and their figures on
    the user's held-out share when both are given: there the candidate's mean error must be no larger (a few dozen
    labels at most, too few for a rank correlation to mean much; the mean error is what a user sees move).

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
    if candidate_user is not None and active_user is not None:
        new_mae, old_mae = float(candidate_user.get("mae", math.nan)), float(active_user["mae"])
        if not new_mae <= old_mae:  # written so that NaN fails too
            reasons.append(
                f"on the {int(candidate_user['n'])} held-out user labels the mean error {new_mae:.2f} is above "
                f"the active model's {old_mae:.2f}"
            )
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
