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
    # the documented target, as recorded by `oncotriage evaluate` on the held-out test split
    assert spec.metrics["test_froc_sens_at_1_fp"] >= 0.90
    assert spec.metrics["test_num_lesions"] == 88
    assert f"{spec.metrics['test_cpm']:.3f}" in card


@pytest.fixture(scope="module")
def fresh_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic studies from a seed the demo never saw."""
    return run_synth("cxr", 8, 99, tmp_path_factory.mktemp("unseen"), negative_fraction=0.25)


def test_demo_finds_nodules_on_unseen_synthetic_studies(fresh_cases: Path) -> None:
    pipeline = DetectionPipeline.from_bundle(DEMO, intra_op_threads=1)
    thresholds = pipeline.spec.thresholds
    found = lesions = 0
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
            if len(truth) and len(boxes):
                found += int((box_iou(truth, boxes).max(axis=1) >= 0.1).sum())
    assert lesions >= 6
    assert found / lesions >= 0.6, (found, lesions)


def test_demo_spec_matches_its_onnx_graph() -> None:
    import onnx

    graph = onnx.load(str(DEMO / "model.onnx")).graph
    spec = json.loads((DEMO / "model_spec.json").read_text())
    assert [o.name for o in graph.output] == spec["output_names"]
    dims = [d.dim_value or -1 for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == spec["input_shape"] == [-1, 1, 384, 384]
