"""Box decoding, clipping, NMS and box selection against MONAI and torchvision."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.models.postprocess import (
    BoxSelector,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    decode_boxes,
    encode_boxes,
    non_max_suppression,
    reshape_head_outputs,
    sigmoid,
)


def random_boxes(rng: np.random.Generator, n: int, dims: int, extent: float = 50.0) -> np.ndarray:
    lo = rng.uniform(0, extent, size=(n, dims))
    size = rng.uniform(2, extent / 3, size=(n, dims))
    return np.concatenate([lo, lo + size], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("logit", "expected"),
    [(0.0, 0.5), (2.0, 0.880797), (-2.0, 0.119203), (-100.0, 0.0), (100.0, 1.0)],
)
def test_sigmoid(logit: float, expected: float) -> None:
    assert sigmoid(np.array([logit]))[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_encode_decode_round_trip(dims: int) -> None:
    rng = np.random.default_rng(dims)
    gt, anchors = random_boxes(rng, 50, dims), random_boxes(rng, 50, dims)
    weights = [1.0, 2.0, 1.5, 1.0, 0.5, 1.0][: 2 * dims]
    codes = encode_boxes(gt, anchors, weights)
    np.testing.assert_allclose(decode_boxes(codes, anchors, weights), gt, rtol=1e-5, atol=1e-4)


def test_decode_clamps_log_size() -> None:
    anchors = np.array([[0, 0, 10, 10]], dtype=np.float32)
    codes = np.array([[0, 0, 100.0, 0]], dtype=np.float32)
    width = decode_boxes(codes, anchors)[0, 2] - decode_boxes(codes, anchors)[0, 0]
    assert width == pytest.approx(10 * 1000 / 16, rel=1e-5)


@pytest.mark.parametrize(
    ("boxes", "size", "expected", "keep"),
    [
        ([[-3, 2, 5, 9]], (8, 8), [[0, 2, 5, 8]], [True]),
        ([[2, 2, 2.5, 6]], (8, 8), np.zeros((0, 4)), [False]),  # under one voxel wide
        ([[9, 1, 12, 4]], (8, 8), np.zeros((0, 4)), [False]),  # outside
        ([[1, 1, 1, 7, 7, 3]], (6, 6, 2), [[1, 1, 1, 6, 6, 2]], [True]),
    ],
)
def test_clip_boxes(boxes, size, expected, keep) -> None:
    clipped, mask = clip_boxes_to_image(np.asarray(boxes, dtype=np.float32), size)
    np.testing.assert_array_equal(mask, keep)
    np.testing.assert_allclose(
        clipped, np.asarray(expected, dtype=np.float32).reshape(-1, len(size) * 2)
    )


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.5, 0.9, 0.3, 0.8], np.float32)
    # IoU(0,1) = 81/119 = 0.68; IoU(1,3) = 72/118 = 0.61; IoU(0,3) = 0.9.
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.5), [1, 2])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.65), [1, 3, 2])
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, 0.65, max_proposals=2), [1, 3])
    labels = np.array([0, 1, 0, 0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), [1, 3, 2])


@pytest.mark.torch
@pytest.mark.parametrize(("seed", "thresh"), [(0, 0.1), (1, 0.22), (2, 0.5), (3, 0.7)])
def test_nms_matches_torchvision_2d(seed: int, thresh: float) -> None:
    import torch
    import torchvision

    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 400, 2)
    scores = rng.random(400).astype(np.float32)
    expected = torchvision.ops.nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), thresh
    ).numpy()
    np.testing.assert_array_equal(non_max_suppression(boxes, scores, thresh), expected)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("seed", "thresh", "max_proposals"), [(0, 0.22, -1), (1, 0.1, 30), (2, 0.5, -1)]
)
def test_batched_nms_matches_monai_3d(seed: int, thresh: float, max_proposals: int) -> None:
    import torch
    from monai.data.box_utils import batched_nms as monai_batched_nms

    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300, 3, extent=40)
    scores = rng.random(300).astype(np.float32)
    labels = rng.integers(0, 3, 300)
    expected = monai_batched_nms(
        torch.from_numpy(boxes),
        torch.from_numpy(scores),
        torch.from_numpy(labels),
        thresh,
        max_proposals=max_proposals,
    ).numpy()
    ours = batched_nms(boxes, scores, labels, thresh, max_proposals=max_proposals)
    assert len(expected) > 10
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.torch
@pytest.mark.parametrize("dims", [2, 3])
def test_box_iou_and_decode_match_monai(dims: int) -> None:
    import torch
    from monai.apps.detection.utils.box_coder import BoxCoder
    from monai.data.box_utils import box_iou as monai_box_iou

    rng = np.random.default_rng(10 + dims)
    a, b = random_boxes(rng, 40, dims), random_boxes(rng, 30, dims)
    np.testing.assert_allclose(
        box_iou(a, b), monai_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), atol=1e-6
    )
    codes = rng.normal(0, 1.5, size=(40, 2 * dims)).astype(np.float32)
    weights = tuple(float(w) for w in rng.uniform(0.5, 2.0, 2 * dims))
    expected = BoxCoder(weights=weights).decode_single(torch.from_numpy(codes), torch.from_numpy(a))
    np.testing.assert_allclose(
        decode_boxes(codes, a, weights), expected.numpy(), rtol=1e-6, atol=1e-4
    )


@pytest.mark.torch
@pytest.mark.parametrize(
    ("dims", "num_classes", "params"),
    [
        (
            3,
            1,
            {
                "score_thresh": 0.02,
                "topk_candidates_per_level": 1000,
                "nms_thresh": 0.22,
                "detections_per_img": 300,
            },
        ),
        (
            2,
            3,
            {
                "score_thresh": 0.3,
                "topk_candidates_per_level": 50,
                "nms_thresh": 0.5,
                "detections_per_img": 40,
            },
        ),
        (
            3,
            2,
            {
                "score_thresh": 0.9,
                "topk_candidates_per_level": 10,
                "nms_thresh": 0.1,
                "detections_per_img": 5,
            },
        ),
    ],
)
def test_box_selector_matches_monai(dims: int, num_classes: int, params: dict) -> None:
    import torch
    from monai.apps.detection.utils.box_selector import BoxSelector as MonaiBoxSelector

    rng = np.random.default_rng(dims * 10 + num_classes)
    sizes = [600, 150, 40]
    boxes = [random_boxes(rng, n, dims, extent=60) - 5 for n in sizes]  # some cross the border
    logits = [rng.normal(0, 2, size=(n, num_classes)).astype(np.float32) for n in sizes]
    spatial = (56,) * dims
    ref = MonaiBoxSelector(**params).select_boxes_per_image(
        [torch.from_numpy(b) for b in boxes], [torch.from_numpy(lg) for lg in logits], spatial
    )
    ours = BoxSelector(**params).select_boxes_per_image(boxes, logits, spatial)
    assert len(ours[0]) > 0
    np.testing.assert_allclose(ours[0], ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(ours[1], ref[1].numpy(), atol=1e-6)
    np.testing.assert_array_equal(ours[2], ref[2].numpy())


def test_reshape_head_outputs_orders_locations_then_anchors() -> None:
    # (B=1, A*K = 2*1, X=2, Y=1): channel a at location x -> value 10*a + x.
    level = np.array([[[[0], [1]], [[10], [11]]]], dtype=np.float32)
    flat = reshape_head_outputs([level], num_anchors=2, spatial_dims=2)
    np.testing.assert_array_equal(flat[0, :, 0], [0, 10, 1, 11])
