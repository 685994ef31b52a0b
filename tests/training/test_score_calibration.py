"""Score calibration (Platt / temperature scaling), reliability and ECE, and its use in triage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncotriage.models.spec import ModelSpec, ScoreCalibration, Thresholds
from oncotriage.serving.enums import Priority
from oncotriage.serving.triage import calibrated_suspicion_score, priority_for
from oncotriage.training.calibrate import (
    calibrate_thresholds,
    fit_score_calibration,
    plot_reliability,
    reliability,
)

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_platt_recovers_a_known_logistic_map() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 3.0, 20000)
    positive = rng.random(x.size) < _sigmoid(0.5 * x - 1.0)
    fitted = fit_score_calibration(_sigmoid(x), positive, "platt")
    assert fitted.method == "platt"
    assert fitted.slope == pytest.approx(0.5, abs=0.03)
    assert fitted.intercept == pytest.approx(-1.0, abs=0.08)
    assert "20000 studies" in fitted.fitted_on


def test_temperature_scaling_has_no_intercept_and_unsaturates() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 2.0, 5000)
    positive = rng.random(x.size) < _sigmoid(x)
    overconfident = _sigmoid(4.0 * x)  # temperature 1/4
    fitted = fit_score_calibration(overconfident, positive, "temperature")
    assert fitted.intercept == 0.0
    assert fitted.slope == pytest.approx(0.25, abs=0.02)
    before = reliability(overconfident, positive).ece
    after = reliability(fitted.apply(overconfident), positive).ece
    assert after < before / 3


def test_saturated_separable_scores_get_a_finite_spread() -> None:
    # what the demo detector does: positives at 1 - 1e-6, negatives far below
    positive = np.array([True] * 40 + [False] * 20)
    raw = np.concatenate([1 - np.geomspace(1e-8, 1e-3, 40), np.geomspace(1e-4, 0.9, 20)])
    fitted = fit_score_calibration(raw, positive, "platt")
    calibrated = fitted.apply(raw)
    assert np.all(np.diff(calibrated[:40]) < 0) and np.all(np.diff(calibrated[40:]) > 0)
    assert calibrated.max() < 0.999  # targets are smoothed to (P + 1) / (P + 2)
    cal = calibrate_thresholds(calibrated, positive, urgent_sensitivity=0.5)
    assert cal.operating.threshold < cal.urgent.threshold < 0.99
    assert cal.operating.sensitivity.successes == 38
    assert cal.urgent.sensitivity.successes == 20 and cal.urgent.specificity.value == 1.0
    # without the share limit the separable set makes the two thresholds equal
    plain = calibrate_thresholds(calibrated, positive)
    assert plain.urgent.threshold == plain.operating.threshold


def test_fit_needs_both_classes_and_a_known_method() -> None:
    with pytest.raises(ValueError, match="positive and negative"):
        fit_score_calibration([0.2, 0.9], [True, True])
    with pytest.raises(ValueError, match="unknown score calibration"):
        fit_score_calibration([0.2, 0.9], [False, True], "isotonic")


def test_reliability_bins_and_ece_by_hand(tmp_path: Path) -> None:
    scores = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    positive = np.array([False, False, True, True, True, True, False])
    rel = reliability(scores, positive, num_bins=10)
    assert rel.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 4]
    assert rel.positive_rate[1] == pytest.approx(0.5) and rel.mean_score[9] == pytest.approx(0.95)
    expected = (1 * 0.05 + 2 * abs(0.5 - 0.15) + 4 * abs(0.75 - 0.95)) / 7
    assert rel.ece == pytest.approx(expected)
    png = plot_reliability(rel, rel, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_calibration_validates_and_maps_floats_and_arrays() -> None:
    with pytest.raises(ValueError):
        ScoreCalibration(method="platt", slope=0.0)
    with pytest.raises(ValueError, match="no intercept"):
        ScoreCalibration(method="temperature", slope=1.0, intercept=0.5)
    sc = ScoreCalibration(method="platt", slope=1.0, intercept=0.0)
    assert sc.apply(0.3) == pytest.approx(0.3)
    assert isinstance(sc.apply(0.3), float)
    assert sc.apply(np.array([0.0, 1.0])).tolist() == [0.0, 1.0]


def test_old_specs_without_score_calibration_still_load(tmp_path: Path) -> None:
    spec = json.loads((DEMO / "model_spec.json").read_text())
    spec["thresholds"] = {
        "operating": 0.99949,
        "urgent": 0.99949,
        "target_sensitivity": 0.95,
        "calibrated": True,
    }
    (tmp_path / "model_spec.json").write_text(json.dumps(spec))
    old = ModelSpec.load(tmp_path)
    assert old.thresholds.score_calibration is None
    assert old.thresholds.study_score(0.9996) == 0.9996


class _F:
    def __init__(self, score: float) -> None:
        self.score = score


def test_triage_compares_the_calibrated_study_score() -> None:
    thresholds = Thresholds(
        operating=0.78,
        urgent=0.99,
        calibrated=True,
        score_calibration=ScoreCalibration(method="platt", slope=0.47, intercept=-2.3),
    )
    # raw 0.9999 sits at the old saturated thresholds (0.9995); calibrated it is 0.88
    score = calibrated_suspicion_score([_F(0.2), _F(0.9999)], thresholds)
    assert score == pytest.approx(1 / (1 + np.exp(-(0.47 * np.log(0.9999 / 0.0001) - 2.3))))
    assert 0.87 < score < 0.89
    assert priority_for(score, thresholds) is Priority.SUSPICIOUS
    top = calibrated_suspicion_score([_F(1 - 1e-9)], thresholds)
    assert priority_for(top, thresholds) is Priority.URGENT
    assert calibrated_suspicion_score([], thresholds) < 0.01
    none = Thresholds(operating=0.5, urgent=0.9)
    assert calibrated_suspicion_score([_F(0.7)], none) == 0.7
