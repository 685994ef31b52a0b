"""Study sensitivity under shift (bench/shifted_sensitivity.py's engine) for low-dose CT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oncotriage.datasets.synth_cxr_v2 import NO_SHIFT, CxrShift
from oncotriage.models.spec import ModelSpec
from oncotriage.training.robustness import shifted_sensitivity

REPO = Path(__file__).resolve().parents[2]


def test_ct_sets_are_shifted_and_counted_study_by_study(tmp_path: Path) -> None:
    shifts = {"none": NO_SHIFT, "fainter": CxrShift(nodule_contrast=0.6)}
    operating = ModelSpec.load(REPO / "models" / "demo_ct").thresholds.operating
    results = shifted_sensitivity(
        REPO / "models" / "demo_ct", tmp_path, n=20, seed=31, kind="ldct", shifts=shifts
    )
    assert [r.name for r in results] == ["none", "fainter"]
    for number, result in enumerate(results):
        datalist = json.loads((tmp_path / f"shift_{number}" / "datalist.json").read_text())
        test = datalist["test"]
        assert datalist["kind"] == "ldct" and len(test) >= 2
        assert datalist.get("shift", {}).get("nodule_contrast", 1.0) == (
            1.0 if number == 0 else 0.6
        )
        positives = sum(1 for entry in test if entry["box"])
        assert result.point.sensitivity.total == positives
        assert result.point.specificity.total == len(test) - positives
        assert result.nodules.total == sum(len(entry["box"]) for entry in test)
        assert result.point.threshold == operating
    unshifted, fainter = results
    assert unshifted.drop_points == 0.0
    assert fainter.drop_points == round(
        100.0 * (unshifted.point.sensitivity.value - fainter.point.sensitivity.value), 1
    )
    assert fainter.within_limit == (fainter.drop_points <= 10.0)


def test_a_model_of_the_other_dimensionality_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a 2D model; ldct images are 3D"):
        shifted_sensitivity(REPO / "models" / "demo", tmp_path, n=20, seed=31, kind="ldct")
    with pytest.raises(ValueError, match="kind must be one of cxr, ldct"):
        shifted_sensitivity(REPO / "models" / "demo", tmp_path, n=20, seed=31, kind="mg")
    assert not any(tmp_path.iterdir())  # refused before anything was written
