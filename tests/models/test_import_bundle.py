"""``oncotriage import-bundle`` on a bundle laid out like the Model Zoo's lung_nodule_ct_detection.

The fixture holds the zoo's real ``configs/inference.json``, ``configs/metadata.json`` and
``LICENSE`` (Project-MONAI/model-zoo, models/lung_nodule_ct_detection, commit dfae206d);
``models/model.pt`` is written by ``model_fixtures.build_zoo_bundle``: the bundle's own
network with seeded random weights. The exported ONNX model run through the numpy pipeline
must give the detections of the bundle's own MONAI ``RetinaNetDetector`` (built by MONAI's
ConfigParser from the same files): boxes IoU >= 0.99, scores within 1e-3.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_fixtures import ZOO_FIXTURE, build_zoo_bundle, match_detections

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zoo_bundle(tmp_path_factory.mktemp("zoo") / "lung_nodule_ct_detection")


@pytest.fixture(scope="module")
def imported(zoo_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    from oncotriage.models.import_bundle import import_bundle

    out = tmp_path_factory.mktemp("imported")
    return import_bundle(zoo_bundle, out), out


def _monai_reference(bundle: Path, x: np.ndarray):
    import torch

    from oncotriage.models.import_bundle import load_bundle_weights, parse_bundle

    parser = parse_bundle(bundle)
    detector = parser.get_parsed_content("detector")
    parser.get_parsed_content("detector_ops")
    load_bundle_weights(detector.network, bundle / "models" / "model.pt")
    detector.eval()
    with torch.no_grad():
        out = detector(torch.from_numpy(x), use_inferer=False)
    return [{k: v.numpy() for k, v in d.items()} for d in out]


def test_spec_carries_the_bundles_processing(imported) -> None:
    result, out = imported
    assert result.name == "lung-nodule-ct-detection"
    assert result.bundle_name == "Lung nodule CT detection"
    assert result.bundle_version == "0.6.8"
    assert result.license.startswith("Apache License")
    spec = json.loads((out / "model_spec.json").read_text())
    assert spec["name"] == "lung-nodule-ct-detection" and spec["version"] == "0.6.8"
    pre = spec["preprocessing"]
    assert pre["orientation"] == "RAS"
    assert pre["target_spacing"] == [0.703125, 0.703125, 1.25]
    assert pre["intensity"]["a_min"] == -1024.0 and pre["intensity"]["a_max"] == 300.0
    assert pre["intensity"]["clip"] is True
    assert spec["anchors"]["base_anchor_shapes"] == [[6, 8, 4], [8, 6, 5], [10, 10, 6]]
    assert spec["anchors"]["feature_map_scales"] == [1, 2, 4]
    assert spec["size_divisible"] == [16, 16, 8]
    assert spec["postprocess"]["score_thresh"] == 0.02
    assert spec["postprocess"]["nms_thresh"] == 0.22
    assert spec["postprocess"]["detections_per_img"] == 300
    assert spec["sliding_window"]["roi_size"] == [512, 512, 192]
    assert spec["sliding_window"]["overlap"] == 0.25
    assert "example, not to be used for diagnostic purposes" in spec["intended_use"]
    # which series the service routes to it, from metadata.json: network_data_format's
    # modality CT, and "CT lung nodule detection" (the zoo has no body-part field): chest
    assert result.reads == "3D CT chest, at least 16 slices"
    reads = spec["intended_inputs"]
    assert (reads["modalities"], reads["body_parts"], reads["spatial_dims"]) == (
        ["CT"],
        ["CHEST"],
        3,
    )
    assert reads["min_slices"] == 16


@pytest.mark.parametrize(("shape", "seed"), [((1, 1, 64, 64, 32), 0), ((1, 1, 48, 64, 24), 1)])
def test_pipeline_matches_the_bundles_own_monai_inference(zoo_bundle, imported, shape, seed):
    from oncotriage.models.pipeline import DetectionPipeline

    _, out = imported
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    reference = _monai_reference(zoo_bundle, x)
    detections = DetectionPipeline.from_bundle(out).predict_preprocessed(x)
    assert len(reference) == len(detections) == 1
    ref, det = reference[0], detections[0]
    # detector_ops set the bundle's keys: box, label, label_scores
    assert 5 <= len(ref["box"]) < 300  # boxes survive the bundle's threshold and NMS
    assert len(det.boxes) == len(ref["box"])
    worst_iou, worst_score = match_detections(
        ref["box"], ref["label_scores"], ref["label"], det.boxes, det.scores, det.labels
    )
    assert worst_iou >= 0.99
    assert worst_score <= 1e-3


def test_cli_imports_and_registers_with_the_bundles_name_version_and_licence(
    zoo_bundle: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from oncotriage.cli import app
    from oncotriage.models import registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "bundle"
    args = ["import-bundle", str(zoo_bundle), "--out", str(out), "--tracking-uri", uri]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Lung nodule CT detection v0.6.8 (licence: Apache License Version 2.0" in result.output
    assert "registered lung-nodule-ct-detection version 1" in result.output
    assert "reads:   3D CT chest, at least 16 slices" in result.output
    info = registry.get_version("lung-nodule-ct-detection", 1, tracking_uri=uri)
    assert info.tags["monai_bundle.version"] == "0.6.8"
    assert info.tags["monai_bundle.license"].startswith("Apache License")
    assert info.tags["monai_bundle.name"] == "Lung nodule CT detection"
    model = registry.resolve("models:/lung-nodule-ct-detection/1", tracking_uri=uri)
    assert model.spec.preprocessing.target_spacing == [0.703125, 0.703125, 1.25]


def test_a_folder_without_weights_is_refused_with_a_reason(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oncotriage.cli import app

    bundle = tmp_path / "no_weights"
    shutil.copytree(ZOO_FIXTURE, bundle)
    result = CliRunner().invoke(app, ["import-bundle", str(bundle), "--no-register"])
    assert result.exit_code == 2
    assert "models/model.pt not found" in result.output


def _zoo_metadata() -> dict:
    return json.loads((ZOO_FIXTURE / "configs" / "metadata.json").read_text())


def test_intended_inputs_are_read_from_the_bundles_metadata() -> None:
    from oncotriage.models.import_bundle import intended_inputs_from_metadata

    zoo = intended_inputs_from_metadata(_zoo_metadata(), 3)
    assert (zoo.modalities, zoo.body_parts, zoo.spatial_dims, zoo.min_slices) == (
        ["CT"],
        ["CHEST"],
        3,
        16,
    )
    brain = _zoo_metadata()
    brain.update(name="Brain tumour detection", task="MRI brain lesion detection", description="")
    brain["network_data_format"]["inputs"]["image"]["modality"] = "MRI"
    reads = intended_inputs_from_metadata(brain, 3)
    assert (reads.modalities, reads.body_parts) == (["MR"], ["HEAD"])
    # the user's word wins over the metadata's
    given = intended_inputs_from_metadata(
        brain, 3, modalities=["ct"], body_parts=["chest", "abdomen"]
    )
    assert (given.modalities, given.body_parts) == (["CT"], ["CHEST", "ABDOMEN"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("modality", "does not say which modality .* give it with --modality"),
        ("body part", "does not say which body part .* give it with --body-part"),
    ],
)
def test_a_bundle_that_does_not_say_what_it_reads_is_refused(change: str, message: str) -> None:
    from oncotriage.models.import_bundle import BundleError, intended_inputs_from_metadata

    metadata = _zoo_metadata()
    if change == "modality":
        del metadata["network_data_format"]["inputs"]["image"]["modality"]
    else:
        metadata.update(name="Detector", task="object detection", description="a detector")
    with pytest.raises(BundleError, match=message):
        intended_inputs_from_metadata(metadata, 3)
    # told on the command line, it imports
    told = intended_inputs_from_metadata(metadata, 3, modalities=["CT"], body_parts=["CHEST"])
    assert (told.modalities, told.body_parts) == (["CT"], ["CHEST"])
