"""The interval that widens off the training data, the distance behind it, and the unusual flag."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.calibration import MIN_FORM, Calibration, surface_form
from model.neighbours import Neighbours


def _heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels whose error grows with distance, as on messages unlike the training ones."""
    rng = np.random.default_rng(seed)
    distance = rng.uniform(0.02, 0.4, n)
    truth = rng.uniform(0, 100, n)
    return truth + rng.normal(0, 1, n) * 60 * distance, truth, distance


@pytest.mark.parametrize(
    ("coverage", "halfwidth"),
    [
        (0.8, 9.0),  # ceil(11 · 0.8) = 9th smallest of 10; ceil(10 · 0.8) would give the 8th
        (0.9, 10.0),  # ceil(11 · 0.9) = 10th
        (0.95, 10.0),  # ceil(11 · 0.95) = 11 > 10: the largest residual, not past the end
    ],
)
def test_constant_interval_takes_the_exact_conformal_rank(coverage: float, halfwidth: float) -> None:
    residuals = np.array([3.0, -1.0, 7.0, 10.0, -2.0, 5.0, -9.0, 4.0, 8.0, -6.0])  # |r| = 1..10, shuffled
    calibration = Calibration.fit(np.full(10, 50.0), 50.0 + residuals, coverage=coverage)
    assert calibration.halfwidth == halfwidth


def test_normalised_interval_takes_the_exact_conformal_rank() -> None:
    distance = np.array([0.1, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.7, 0.9, 1.5])  # median 0.5: the floor
    scale = 0.5 + distance
    nonconformity = np.array([4.0, 9.0, 1.0, 6.0, 10.0, 2.0, 8.0, 3.0, 5.0, 7.0])  # 1..10, shuffled
    calibration = Calibration.fit(np.full(10, 50.0), 50.0 + nonconformity * scale, coverage=0.8, distances=distance)
    assert calibration.scale_floor == 0.5
    assert calibration.halfwidth == pytest.approx(9.0)  # the 9th smallest of 10 (ceil(11 · 0.8)), not the 8th
    assert calibration.interval(50.0, 0.5) == pytest.approx((41.0, 59.0))  # 9 · (0.5 + 0.5) either side


def test_normalised_interval_widens_with_distance() -> None:
    predicted, target, distance = _heteroscedastic(400, 1)
    calibration = Calibration.fit(predicted, target, distances=distance)
    near, far = calibration.interval(50.0, 0.05), calibration.interval(50.0, 0.35)
    assert far[1] - far[0] > 2 * (near[1] - near[0])


def test_normalised_interval_covers_more_far_from_training_and_is_narrower_on_average() -> None:
    predicted, target, distance = _heteroscedastic(600, 2)
    test_predicted, test_target, test_distance = _heteroscedastic(4000, 3)
    far = test_distance > 0.3
    normalised = Calibration.fit(predicted, target, distances=distance)
    constant = Calibration.fit(predicted, target)

    def covered(calibration: Calibration, distances: np.ndarray | None) -> np.ndarray:
        half = calibration.halfwidths(distances)
        return (test_target >= test_predicted - half) & (test_target <= test_predicted + half)

    assert covered(normalised, test_distance).mean() >= 0.88  # marginal coverage kept
    # far from training the normalised interval covers more (0.82 here against 0.77), though narrower on average
    assert covered(normalised, test_distance)[far].mean() > covered(constant, None)[far].mean() + 0.03
    assert np.mean(normalised.halfwidths(test_distance)) < constant.halfwidth


def test_surface_form_reads_excerpts_and_length_off_the_text() -> None:
    assert surface_form("Warm words [...] for the people [...] of the friendly country") == "excerpt"
    assert surface_form("Thank you, my friend. " * 3) == "short"
    assert surface_form("word " * 59) == "short" and surface_form("word " * 60) == "medium"
    assert surface_form("word " * 159) == "medium" and surface_form("word " * 160) == "long"


def _two_forms(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Excerpts with errors three times those of letters, at the same distance from training."""
    rng = np.random.default_rng(seed)
    texts = ["a [...] b" if i % 2 else "word " * 80 for i in range(n)]
    spread = np.where(np.arange(n) % 2 == 1, 12.0, 4.0)
    truth = rng.uniform(0, 100, n)
    return truth + rng.normal(0, 1, n) * spread, truth, np.full(n, 0.2), texts


def test_interval_takes_its_quantile_within_each_surface_form() -> None:
    predicted, truth, distance, texts = _two_forms(400, seed=3)
    calibration = Calibration.fit(predicted, truth, 0.9, distance, texts)
    assert calibration.by_form is not None and set(calibration.by_form) == {"excerpt", "medium"}
    scores = np.abs(predicted - truth) / (calibration.scale_floor + distance)
    excerpt = np.array(["[...]" in text for text in texts])
    for form, mask in (("excerpt", excerpt), ("medium", ~excerpt)):
        n = int(mask.sum())
        expected = np.sort(scores[mask])[math.ceil((n + 1) * 0.9) - 1]  # the exact rank within the form
        assert calibration.by_form[form] == pytest.approx(expected)
    # Fresh messages of each form are covered near the target, where one pooled quantile under-covers the excerpts.
    fresh_predicted, fresh_truth, fresh_distance, fresh_texts = _two_forms(4000, seed=4)
    fresh_excerpt = np.array(["[...]" in text for text in fresh_texts])
    covered = np.abs(fresh_predicted - fresh_truth) <= calibration.halfwidths(fresh_distance, fresh_texts)
    pooled = np.abs(fresh_predicted - fresh_truth) <= calibration.halfwidths(fresh_distance)
    assert covered[fresh_excerpt].mean() > 0.87 and covered[~fresh_excerpt].mean() > 0.87
    assert pooled[fresh_excerpt].mean() < 0.85


def test_a_form_with_few_validation_messages_uses_the_pooled_quantile() -> None:
    predicted, truth, distance, texts = _two_forms(400, seed=5)
    texts[: MIN_FORM - 1] = ["word " * 200] * (MIN_FORM - 1)  # too few long letters for a quantile of their own
    calibration = Calibration.fit(predicted, truth, 0.9, distance, texts)
    assert calibration.by_form is not None and "long" not in calibration.by_form
    low, high = calibration.interval(50.0, 0.2, "word " * 200)
    assert (high - low) / 2 == pytest.approx(calibration.halfwidth * (calibration.scale_floor + 0.2))


def test_calibration_without_distances_keeps_a_constant_interval() -> None:
    calibration = Calibration.fit(np.array([50.0, 60.0, 70.0]), np.array([52.0, 57.0, 71.0]), coverage=0.5)
    assert not calibration.uses_distance
    assert calibration.interval(40.0, 0.9) == calibration.interval(40.0) == (38.0, 42.0)
    assert not calibration.is_unusual(0.9)


def test_text_farther_than_validation_is_unusual() -> None:
    distances = np.linspace(0.0, 1.0, 101)
    calibration = Calibration.fit(np.full(101, 50.0), np.full(101, 55.0), distances=distances)
    assert calibration.unusual_distance == pytest.approx(0.95)
    assert calibration.is_unusual(0.97) and not calibration.is_unusual(0.5) and not calibration.is_unusual(None)


def test_calibration_round_trips_through_its_file(tmp_path) -> None:
    predicted, target, distance = _heteroscedastic(50, 4)
    calibration = Calibration.fit(predicted, target, distances=distance)
    calibration.save(tmp_path)
    assert Calibration.load(tmp_path) == calibration


def test_neighbours_distance_is_zero_on_training_texts_and_grows_away() -> None:
    train = np.random.default_rng(5).normal(size=(50, 16))
    neighbours = Neighbours(train, k=1)
    assert np.allclose(neighbours.distances(train[:5] * 3.0), 0.0, atol=1e-3)  # length does not matter
    assert (neighbours.distances(-train[:5]) > 0.3).all()  # random neighbours of 16 dims are near 1 - 0.5


def test_neighbours_average_k_nearest() -> None:
    neighbours = Neighbours(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), k=2)
    # nearest two to (1, 0) are itself (distance 0) and (0, 1) (distance 1)
    assert neighbours.distances(np.array([[1.0, 0.0]])) == pytest.approx([0.5])


def test_neighbours_refuse_an_empty_matrix() -> None:
    with pytest.raises(ValueError, match=r"expected a \(messages, hidden\) matrix of embeddings; found shape \(0,\)"):
        Neighbours(np.zeros(0))


def test_neighbours_round_trip_in_half_precision(tmp_path) -> None:
    train = np.random.default_rng(6).normal(size=(20, 8))
    Neighbours(train).save(tmp_path)
    loaded = Neighbours.load(tmp_path)
    assert loaded is not None
    queries = np.random.default_rng(7).normal(size=(4, 8))
    assert np.allclose(loaded.distances(queries), Neighbours(train).distances(queries), atol=2e-3)
    assert Neighbours.load(tmp_path / "missing") is None
