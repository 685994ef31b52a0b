"""ONNX Runtime + the numpy pipeline give MONAI ``RetinaNetDetector``'s detections.

Same weights, same inputs: every MONAI box is matched one-to-one to a pipeline box of the same
label with IoU >= 0.99 and a score difference <= 1e-3, and the counts are equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import match_detections

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.pipeline import DetectionPipeline

pytestmark = pytest.mark.torch

IOU_MIN = 0.99
SCORE_TOL = 1e-3


def _monai(detector, x: np.ndarray, use_inferer: bool = False) -> list[dict[str, np.ndarray]]:
    import torch

    with torch.no_grad():
        out = detector(torch.from_numpy(x), use_inferer=use_inferer)
    return [{k: v.numpy() for k, v in d.items()} for d in out]


def _assert_parity(reference, detections) -> int:
    assert len(reference) == len(detections)
    total = 0
    for ref, det in zip(reference, detections, strict=True):
        worst_iou, worst_score = match_detections(
            ref["boxes"], ref["labels_scores"], ref["labels"], det.boxes, det.scores, det.labels
        )
        assert worst_iou >= IOU_MIN
        assert worst_score <= SCORE_TOL
        total += len(det)
    return total


@pytest.mark.parametrize(
    ("shape", "seed"),
    [((1, 1, 64, 64), 0), ((2, 1, 64, 64), 1), ((1, 1, 64, 64), 2)],
)
def test_2d_matches_monai(tiny2d, shape, seed) -> None:
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    pipeline = DetectionPipeline.from_bundle(tiny2d.bundle)
    total = _assert_parity(_monai(tiny2d.detector, x), pipeline.predict_preprocessed(x))
    # Non-trivial: boxes survive the threshold and NMS, below the per-image cap.
    assert 20 * shape[0] <= total < tiny2d.cfg.postprocess.detections_per_img * shape[0]


@pytest.mark.parametrize(
    ("shape", "seed"),
    [
        ((1, 1, 64, 64, 32), 0),  # exactly one window: one pass
        ((1, 1, 40, 56, 20), 1),  # not divisible by size_divisible: padded, clipped to 40x56x20
        ((2, 1, 32, 32, 16), 2),  # batch of two, smaller than a window
    ],
)
def test_3d_matches_monai(tiny3d, shape, seed) -> None:
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    pipeline = DetectionPipeline.from_bundle(tiny3d.bundle)
    detections = pipeline.predict_preprocessed(x, use_sliding_window=False)
    total = _assert_parity(_monai(tiny3d.detector, x), detections)
    assert total >= 20 * shape[0]
    for det in detections:  # clipped to the unpadded input
        assert np.all(det.boxes[:, 3:] <= np.asarray(shape[2:], dtype=np.float32))


@pytest.mark.parametrize(
    ("shape", "overlap", "mode"),
    [
        ((1, 1, 96, 64, 40), 0.25, "constant"),  # 2 x 1 x 2 windows of 64 x 64 x 32
        ((1, 1, 80, 64, 48), 0.5, "gaussian"),  # 2 x 1 x 2 windows, Gaussian blending
    ],
)
def test_sliding_window_3d_matches_monai(tiny3d, shape, overlap, mode) -> None:
    from oncotriage.models.build import build_detector
    from oncotriage.models.spec import ModelSpec

    cfg = tiny3d.cfg.model_copy(deep=True)
    assert cfg.inference.sliding_window is not None
    cfg.inference.sliding_window.overlap = overlap
    cfg.inference.sliding_window.mode = mode
    detector = build_detector(cfg, tiny3d.network).eval()
    spec = ModelSpec.load(tiny3d.bundle).model_copy(
        update={"sliding_window": cfg.inference.sliding_window}
    )
    base = DetectionPipeline.from_bundle(tiny3d.bundle)
    pipeline = DetectionPipeline(spec, base.runner)

    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    # Larger than one window: the bundle rule turns the window on by itself.
    assert pipeline._uses_sliding_window(shape[2:], None)
    total = _assert_parity(_monai(detector, x, use_inferer=True), pipeline.predict_preprocessed(x))
    assert total >= 20


def test_detect_maps_monai_boxes_back_to_the_source(tiny3d) -> None:
    """detect() = our preprocessing -> MONAI detector -> boxes mapped to source index and world."""
    rng = np.random.default_rng(4)
    hu = rng.normal(-700, 300, size=(36, 30, 14)).astype(np.float32)
    # Oblique-free but flipped geometry (LPS axes reversed on x and z) to exercise reorientation.
    direction = np.diag([-1.0, 1.0, -1.0])
    image = ImageVolume(
        array=hu, spacing=(2.5, 3.0, 4.0), origin=(10.0, -20.0, 30.0), direction=direction
    )
    pipeline = DetectionPipeline.from_bundle(tiny3d.bundle)
    findings = pipeline.detect(image)

    pre = pipeline.preprocess(image)
    (reference,) = _monai(tiny3d.detector, pre.array[None])
    ref_boxes = pre.mapping.network_to_source_boxes(reference["boxes"])
    ref_boxes = np.clip(ref_boxes, -0.5, np.tile(np.asarray(hu.shape) - 0.5, 2))
    boxes = np.asarray([f.box_index for f in findings], dtype=np.float32)
    worst_iou, worst_score = match_detections(
        ref_boxes.astype(np.float32),
        reference["labels_scores"],
        reference["labels"],
        boxes,
        np.asarray([f.score for f in findings], dtype=np.float32),
        np.asarray([f.label for f in findings]),
    )
    assert len(findings) >= 20
    assert worst_iou >= IOU_MIN and worst_score <= SCORE_TOL
    for finding in findings[:10]:
        np.testing.assert_allclose(
            finding.box_world, image.box_index_to_world(np.asarray(finding.box_index)), atol=1e-9
        )


def test_fixed_size_3d_export_always_slides_the_window(tiny3d, tmp_path) -> None:
    """A 3D graph exported at the window size (TensorRT-friendly) pads small volumes like MONAI."""
    from oncotriage.models.build import build_detector
    from oncotriage.models.export import export_onnx
    from oncotriage.models.spec import ModelSpec

    cfg = tiny3d.cfg.model_copy(deep=True)
    cfg.export.dynamic_spatial = False
    export_onnx(tiny3d.network, cfg, tmp_path)
    assert ModelSpec.load(tmp_path).input_shape == [-1, 1, 64, 64, 32]
    pipeline = DetectionPipeline.from_bundle(tmp_path)
    detector = build_detector(cfg, tiny3d.network).eval()
    x = np.random.default_rng(6).random((1, 1, 48, 80, 24), dtype=np.float32)  # z below the window
    total = _assert_parity(_monai(detector, x, use_inferer=True), pipeline.predict_preprocessed(x))
    assert total >= 20
