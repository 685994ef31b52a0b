"""Threshold choice and Wilson intervals, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.training.calibrate import (
    calibrate_thresholds,
    threshold_for_sensitivity,
    threshold_for_specificity,
)
from oncotriage.training.operating_points import operating_point, wilson_interval

# 10 positive studies scoring 0.95, 0.90, ..., 0.50 and 10 negatives 0.05 ... 0.50 (+0.6)
POS = np.array([0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60, 0.55, 0.50])
NEG = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.60])
SCORES = np.concatenate([POS, NEG])
POSITIVE = np.array([True] * 10 + [False] * 10)


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    [
        # closed-form Wilson bounds with z = 1.959964, worked out by hand (rounded to 1e-7)
        (8, 10, 0.4901625, 0.9433178),
        (0, 10, 0.0, 0.2775328),
        (10, 10, 0.7224672, 1.0),
        (95, 100, 0.8882495, 0.9784563),
    ],
)
def test_wilson_interval_reference_values(
    successes: int, total: int, low: float, high: float
) -> None:
    prop = wilson_interval(successes, total)
    assert prop.value == pytest.approx(successes / total)
    assert prop.low == pytest.approx(low, abs=1e-6)
    assert prop.high == pytest.approx(high, abs=1e-6)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


@pytest.mark.parametrize(
    ("target", "expected"),
    [(0.95, 0.50), (0.90, 0.55), (0.80, 0.60), (0.5, 0.75), (0.1, 0.95), (1.0, 0.50)],
)
def test_threshold_for_sensitivity(target: float, expected: float) -> None:
    threshold = threshold_for_sensitivity(SCORES, POSITIVE, target)
    assert threshold == pytest.approx(expected)
    sens = operating_point(SCORES, POSITIVE, threshold).sensitivity.value
    assert sens >= target


@pytest.mark.parametrize(
    ("target", "just_above"),
    # 10 negatives: 0.9 allows 1 FP (the 0.60 one), 0.95/0.98/1.0 allow none
    [(0.98, 0.60), (1.0, 0.60), (0.9, 0.45), (0.8, 0.40)],
)
def test_threshold_for_specificity(target: float, just_above: float) -> None:
    threshold = threshold_for_specificity(SCORES, POSITIVE, target)
    assert threshold > just_above
    assert threshold == pytest.approx(just_above)
    assert operating_point(SCORES, POSITIVE, threshold).specificity.value >= target


def test_calibrate_thresholds_reports_both_points() -> None:
    cal = calibrate_thresholds(SCORES, POSITIVE, target_sensitivity=0.95, target_specificity=0.98)
    assert cal.operating.threshold == pytest.approx(0.50)
    assert cal.operating.sensitivity.successes == 10
    assert cal.operating.specificity.successes == 9  # only the 0.60 negative is flagged
    assert cal.urgent.threshold > 0.60
    assert cal.urgent.sensitivity.successes == 7  # 0.95 ... 0.65
    assert cal.urgent.specificity.value == 1.0
    metrics = cal.as_metrics()
    assert metrics["operating_sensitivity"] == 1.0
    assert metrics["urgent_specificity_ci_low"] == pytest.approx(0.7224672, abs=1e-6)
    assert cal.num_studies == 20 and cal.num_positive_studies == 10


def test_urgent_never_below_operating() -> None:
    # negatives all score low, so specificity alone would allow a threshold under the
    # operating one: urgent is raised to the operating threshold.
    scores = np.array([0.9, 0.8, 0.1, 0.05])
    positive = np.array([True, True, False, False])
    cal = calibrate_thresholds(scores, positive, target_sensitivity=0.5)
    assert cal.operating.threshold == pytest.approx(0.9)
    assert cal.urgent.threshold == pytest.approx(0.9)


def test_calibration_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="no positive study"):
        calibrate_thresholds([0.1, 0.2], [False, False])
    with pytest.raises(ValueError, match="no negative study"):
        calibrate_thresholds([0.1, 0.2], [True, True])
