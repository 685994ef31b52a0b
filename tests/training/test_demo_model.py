"""The committed demo model: labelled synthetic, calibrated, small, and it finds nodules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncotriage.datasets.datalist import boxes_to_index, load_datalist, load_entry_image
from oncotriage.datasets.synth import run_synth
from oncotriage.models.pipeline import DetectionPipeline
from oncotriage.models.registry import resolve
from oncotriage.training.metrics import box_iou

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def test_demo_bundle_is_labelled_small_and_calibrated() -> None:
    model = resolve(str(DEMO))
    spec = model.spec
    assert model.name == "oncotriage-cxr2d"
    assert "synthetic" in spec.intended_use.lower() and "not for clinical use" in spec.intended_use
    assert "synthetic" in spec.description.lower()
    card = (DEMO / "MODEL_CARD.md").read_text()
    assert "TRAINED ON SYNTHETIC IMAGES, NOT FOR CLINICAL USE" in card
    assert sum(p.stat().st_size for p in DEMO.iterdir()) <= 10 * 1024 * 1024
    assert spec.thresholds.calibrated and spec.thresholds.target_sensitivity == 0.95
    assert spec.dataset_fingerprint and spec.training_run_id
    # calibrated scores: "suspicious" and "urgent" are different bands, both below 0.99
    thresholds = spec.thresholds
    assert thresholds.score_calibration is not None
    assert thresholds.score_calibration.method == "platt"
    assert thresholds.operating < thresholds.urgent < 0.99
    assert thresholds.urgent - thresholds.operating > 0.1
    assert spec.metrics["validation_ece"] < spec.metrics["validation_ece_raw"]
    # as recorded by `oncotriage evaluate` on the held-out test split of generator version 2
    # (seed 7: 75 radiographs, 53 with 81 nodules), and as the card reports it
    assert spec.metrics["test_num_lesions"] == 81
    assert spec.metrics["test_num_positive_studies"] == 53
    assert spec.metrics["test_froc_sens_at_1_fp"] >= 0.60
    assert spec.metrics["test_study_auc"] >= 0.80
    assert spec.metrics["test_operating_sensitivity"] >= 0.85
    # the urgent band holds part of the positives and no negative
    assert 0.25 <= spec.metrics["test_urgent_sensitivity"] <= 0.6
    assert spec.metrics["test_urgent_specificity"] == 1.0
    assert f"{spec.metrics['test_cpm']:.3f}" in card


@pytest.fixture(scope="module")
def fresh_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version-2 synthetic studies from a seed the demo never saw."""
    return run_synth(
        "cxr",
        16,
        99,
        tmp_path_factory.mktemp("unseen"),
        negative_fraction=0.25,
        generator_version=2,
    )


def test_demo_finds_nodules_on_unseen_synthetic_studies(fresh_cases: Path) -> None:
    pipeline = DetectionPipeline.from_bundle(DEMO, intra_op_threads=1)
    thresholds = pipeline.spec.thresholds
    found = lesions = 0
    flagged: list[bool] = []  # per positive study
    for split in ("training", "validation", "test"):
        for entry in load_datalist(fresh_cases, split, box_mode="xyxy"):
            volume = load_entry_image(entry)
            truth = boxes_to_index(entry, volume)
            findings = [
                f
                for f in pipeline.detect(volume)
                if thresholds.study_score(f.score) >= thresholds.operating
            ]
            boxes = np.array([f.box_index for f in findings]).reshape(-1, 4)
            lesions += len(truth)
            if len(truth):
                flagged.append(len(findings) > 0)
            if len(truth) and len(boxes):
                found += int((box_iou(truth, boxes).max(axis=1) >= 0.1).sum())
    # On the shift bench's 84 positive version-2 studies the model flags 0.93 of the studies
    # and finds 0.66 of the nodules at its operating threshold (docs/models.md); version 2
    # keeps nodules down to 4 mm and ground-glass ones, which it misses more often.
    assert lesions >= 20 and len(flagged) >= 10
    assert sum(flagged) / len(flagged) >= 0.75, flagged
    assert found / lesions >= 0.45, (found, lesions)


def test_demo_spec_matches_its_onnx_graph() -> None:
    import onnx

    graph = onnx.load(str(DEMO / "model.onnx")).graph
    spec = json.loads((DEMO / "model_spec.json").read_text())
    assert [o.name for o in graph.output] == spec["output_names"]
    dims = [d.dim_value or -1 for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == spec["input_shape"] == [-1, 1, 384, 384]


DEMO_CT = DEMO.parent / "demo_ct"


def test_demo_ct_bundle_is_labelled_small_calibrated_and_routed_to_ct() -> None:
    model = resolve(str(DEMO_CT))
    spec = model.spec
    assert model.name == "oncotriage-ct3d" and spec.spatial_dims == 3
    assert "synthetic" in spec.intended_use.lower() and "not for clinical use" in spec.intended_use
    card = (DEMO_CT / "MODEL_CARD.md").read_text()
    assert "TRAINED ON SYNTHETIC IMAGES, NOT FOR CLINICAL USE" in card
    assert sum(p.stat().st_size for p in DEMO_CT.iterdir()) <= 10 * 1024 * 1024
    assert spec.intended_inputs is not None
    assert spec.intended_inputs.modalities == ["CT"] and spec.intended_inputs.spatial_dims == 3
    assert spec.input_fingerprint is not None  # the monitor's input charts need it
    thresholds = spec.thresholds
    assert thresholds.calibrated and thresholds.target_sensitivity == 0.95
    assert thresholds.score_calibration is not None
    assert thresholds.operating < thresholds.urgent < 0.99
    assert spec.metrics["validation_ece"] < spec.metrics["validation_ece_raw"]
    # the card's figures are the ones `oncotriage evaluate` recorded on the held-out split
    # (version-2 held-out set: --n 400 --seed 31 --split test, 60 CTs, 42 with 68 nodules)
    assert spec.metrics["test_num_lesions"] == 68
    assert spec.metrics["test_num_positive_studies"] == 42
    assert f"{spec.metrics['test_cpm']:.3f}" in card
    assert f"{spec.metrics['test_study_auc']:.3f}" in card
    assert spec.metrics["test_cpm"] >= 0.8 and spec.metrics["test_operating_sensitivity"] >= 0.95
    # urgent is the high-specificity band: no negative CT of the held-out set in it
    assert spec.metrics["test_urgent_specificity"] == 1.0


def test_demo_ct_finds_nodules_on_unseen_synthetic_ct(tmp_path: Path) -> None:
    """Synthetic LDCT from a seed the model never saw: the positive studies are flagged and
    most of their nodules found at the operating threshold."""
    out = run_synth("ldct", 6, 99, tmp_path, negative_fraction=0.0, generator_version=2)
    pipeline = DetectionPipeline.from_bundle(DEMO_CT, intra_op_threads=1)
    thresholds = pipeline.spec.thresholds
    flagged = positives = found = lesions = 0
    for split in ("training", "validation", "test"):
        for entry in load_datalist(out, split, box_mode="xyzxyz"):
            volume = load_entry_image(entry)
            truth = boxes_to_index(entry, volume)
            if not len(truth):
                continue
            findings = [
                f
                for f in pipeline.detect(volume)
                if thresholds.study_score(f.score) >= thresholds.operating
            ]
            positives += 1
            flagged += bool(findings)
            boxes = np.array([f.box_index for f in findings]).reshape(-1, 6)
            lesions += len(truth)
            if len(boxes):
                found += int((box_iou(truth, boxes).max(axis=1) >= 0.1).sum())
    assert positives >= 4
    assert flagged == positives
    assert found / lesions >= 0.6, (found, lesions)  # measured: 6/6 flagged, 8/9 nodules
