"""Detection metrics against hand-computed values and MONAI's own implementations."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.training.metrics import (
    FROC_FP_RATES,
    ImageDetections,
    ImageTargets,
    box_iou,
    coco_metrics,
    evaluate_detections,
    froc,
    match_dataset,
    roc_auc,
    study_scores,
)


def _det(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None):
    arr = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return ImageDetections(
        arr, np.asarray(scores, float), np.asarray(labels or [0] * len(arr), dtype=int)
    )


def _gt(boxes: list[list[float]], labels: list[int] | None = None):
    arr = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return ImageTargets(arr, np.asarray(labels or [0] * len(arr), dtype=int))


# Image A: lesions g1, g2. Detections 0.9 hits g1, 0.8 misses, 0.6 hits g2.
# Image B: no lesion. Detections 0.7 and 0.5 are false positives.
# Descending: 0.9 TP (sens 1/2, 0 FP) | 0.8 FP (0.5 FP/img) | 0.7 FP (1.0) |
#             0.6 TP (sens 2/2, 1.0 FP/img) | 0.5 FP (1.5).
HAND_PREDS = [
    _det([[10, 10, 20, 20], [50, 50, 60, 60], [80, 10, 90, 20]], [0.9, 0.8, 0.6]),
    _det([[5, 5, 15, 15], [30, 30, 40, 40]], [0.7, 0.5]),
]
HAND_TARGETS = [_gt([[11, 11, 21, 21], [81, 11, 91, 21]]), _gt([])]


@pytest.mark.parametrize(
    ("fp_rate", "expected"),
    [(0.125, 0.5), (0.25, 0.5), (0.5, 0.5), (1.0, 1.0), (2.0, 1.0), (4.0, 1.0), (8.0, 1.0)],
)
def test_froc_hand_computed(fp_rate: float, expected: float) -> None:
    result = froc(HAND_PREDS, HAND_TARGETS)
    assert result.sensitivity_at(fp_rate) == pytest.approx(expected)
    assert result.sensitivities[FROC_FP_RATES.index(fp_rate)] == pytest.approx(expected)


def test_froc_hand_computed_curve_and_cpm() -> None:
    result = froc(HAND_PREDS, HAND_TARGETS)
    assert result.cpm == pytest.approx(5.5 / 7)
    np.testing.assert_allclose(result.curve_fp_per_image, [0, 0, 0.5, 1.0, 1.0, 1.5])
    np.testing.assert_allclose(result.curve_sensitivity, [0, 0.5, 0.5, 0.5, 1.0, 1.0])
    assert result.num_lesions == 2 and result.num_images == 2


def test_froc_tied_scores_enter_together() -> None:
    # A TP and a FP share score 0.8 in one image of two: no threshold separates them.
    preds = [_det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.8, 0.8]), _det([], [])]
    targets = [_gt([[0, 0, 10, 10]]), _gt([])]
    result = froc(preds, targets)
    assert result.sensitivity_at(0.25) == 0.0  # 0.5 FP/img is the cost of the hit
    assert result.sensitivity_at(0.5) == 1.0


def test_froc_ignores_duplicate_detections_as_luna16() -> None:
    # 0.9 finds the lesion; 0.8 overlaps the same lesion (ignored, not a FP);
    # 0.7 overlaps nothing (FP).
    preds = [_det([[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 50]], [0.9, 0.8, 0.7])]
    result = froc(preds, [_gt([[0, 0, 10, 10]])])
    np.testing.assert_allclose(result.curve_fp_per_image, [0, 0, 0, 1])
    np.testing.assert_allclose(result.curve_sensitivity, [0, 1, 1, 1])
    [[match]] = [list(m.values()) for m in match_dataset(preds, [_gt([[0, 0, 10, 10]])], [0.1])]
    assert match.matched[0].tolist() == [True, False, False]
    assert match.duplicate is not None and match.duplicate[0].tolist() == [False, True, False]
    assert match.false_positive[0].tolist() == [False, False, True]


def test_duplicates_cost_precision_in_coco_ap_but_not_in_froc() -> None:
    # lesions A and B: 0.9 finds A, 0.8 repeats A, 0.7 finds B
    preds = [_det([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.9, 0.8, 0.7])]
    targets = [_gt([[0, 0, 10, 10], [50, 50, 60, 60]])]
    # COCO: TP, FP, TP -> precision 1 up to recall 0.5, then 2/3
    assert coco_metrics(preds, targets).ap[0.1] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # FROC: the repeat is ignored -> both lesions at 0 FP per image
    assert froc(preds, targets).sensitivity_at(0.0) == 1.0


@pytest.mark.parametrize(
    ("scores", "positive", "expected"),
    [
        ([0.9, 0.7], [True, False], 1.0),
        ([0.1, 0.7], [True, False], 0.0),
        ([0.5, 0.5], [True, False], 0.5),
        ([0.9, 0.4, 0.6, 0.2], [True, True, False, False], 0.75),
        ([0.3, 0.3, 0.3], [True, True, True], float("nan")),
    ],
)
def test_roc_auc_values(scores: list[float], positive: list[bool], expected: float) -> None:
    value = roc_auc(scores, positive)
    if np.isnan(expected):
        assert np.isnan(value)
    else:
        assert value == pytest.approx(expected)


def test_roc_auc_agrees_with_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(200), 2)  # rounded: plenty of ties
    positive = rng.random(200) < 0.4
    assert roc_auc(scores, positive) == pytest.approx(metrics.roc_auc_score(positive, scores))


def test_study_scores_take_max_over_images() -> None:
    preds = [_det([[0, 0, 1, 1]], [0.4]), _det([[0, 0, 1, 1]], [0.9]), _det([], [])]
    targets = [_gt([]), _gt([[0, 0, 1, 1]]), _gt([])]
    studies = study_scores(preds, targets, ["s1", "s1", "s2"])
    assert studies.study_ids == ("s1", "s2")
    np.testing.assert_allclose(studies.scores, [0.9, 0.0])
    assert studies.positive.tolist() == [True, False]


def _random_case(seed: int, dims: int = 2, num_classes: int = 2, num_images: int = 12):
    """Predictions scattered around ground truth: some hits, misses and duplicates."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(num_images):
        n_gt = int(rng.integers(0, 4))
        lo = rng.uniform(0, 80, (n_gt, dims))
        gt_boxes = np.concatenate([lo, lo + rng.uniform(4, 20, (n_gt, dims))], axis=1)
        gt_labels = rng.integers(0, num_classes, n_gt)
        jitter = rng.normal(0, 3, gt_boxes.shape)
        keep = rng.random(n_gt) < 0.8
        hit_boxes = (gt_boxes + jitter)[keep]
        n_fp = int(rng.integers(0, 5))
        lo = rng.uniform(0, 80, (n_fp, dims))
        fp_boxes = np.concatenate([lo, lo + rng.uniform(4, 20, (n_fp, dims))], axis=1)
        boxes = np.concatenate([hit_boxes, fp_boxes])
        boxes = np.concatenate(
            [np.minimum(boxes[:, :dims], boxes[:, dims:] - 1), boxes[:, dims:]], axis=1
        )
        labels = np.concatenate([gt_labels[keep], rng.integers(0, num_classes, n_fp)])
        scores = np.round(rng.random(len(boxes)), 3)
        preds.append(ImageDetections(boxes, scores, labels.astype(int)))
        targets.append(ImageTargets(gt_boxes, gt_labels.astype(int)))
    return preds, targets


@pytest.mark.torch
@pytest.mark.parametrize(("seed", "dims"), [(0, 2), (1, 2), (2, 3), (3, 3)])
def test_box_iou_agrees_with_monai(seed: int, dims: int) -> None:
    box_utils = pytest.importorskip("monai.data.box_utils")
    preds, targets = _random_case(seed, dims)
    a = np.concatenate([p.boxes for p in preds])
    b = np.concatenate([t.boxes for t in targets])
    np.testing.assert_allclose(box_iou(a, b), box_utils.box_iou(a, b), atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize(("seed", "dims"), [(0, 2), (1, 2), (2, 3), (4, 2), (5, 3)])
def test_matching_agrees_with_monai_matching_batch(seed: int, dims: int) -> None:
    matching = pytest.importorskip("monai.apps.detection.metrics.matching")
    box_utils = pytest.importorskip("monai.data.box_utils")
    preds, targets = _random_case(seed, dims)
    thresholds = [0.1, 0.3, 0.5]
    ours = match_dataset(preds, targets, thresholds, max_detections=100)
    theirs = matching.matching_batch(
        iou_fn=box_utils.box_iou,
        iou_thresholds=thresholds,
        pred_boxes=[p.boxes for p in preds],
        pred_classes=[p.labels for p in preds],
        pred_scores=[p.scores for p in preds],
        gt_boxes=[t.boxes for t in targets],
        gt_classes=[t.labels for t in targets],
    )
    for our_image, their_image in zip(ours, theirs, strict=True):
        assert sorted(our_image) == sorted(int(k) for k in their_image)
        for label, match in our_image.items():
            ref = their_image[label]
            np.testing.assert_allclose(match.scores, ref["dtScores"])
            np.testing.assert_array_equal(match.matched, ref["dtMatches"].astype(bool))
            assert match.num_gt == ref["gtMatches"].shape[1]


@pytest.mark.torch
@pytest.mark.parametrize(
    ("seed", "dims", "num_classes"), [(0, 2, 1), (1, 2, 2), (2, 3, 1), (6, 3, 2), (7, 2, 1)]
)
def test_coco_metrics_agree_with_monai_coco_metric(seed: int, dims: int, num_classes: int) -> None:
    coco = pytest.importorskip("monai.apps.detection.metrics.coco")
    matching = pytest.importorskip("monai.apps.detection.metrics.matching")
    box_utils = pytest.importorskip("monai.data.box_utils")
    preds, targets = _random_case(seed, dims, num_classes=num_classes, num_images=20)
    metric = coco.COCOMetric(
        classes=[f"c{i}" for i in range(num_classes)],
        iou_list=[0.1],
        max_detection=[100],
        per_class=False,
        verbose=False,
    )
    matches = matching.matching_batch(
        iou_fn=box_utils.box_iou,
        iou_thresholds=metric.iou_thresholds,
        pred_boxes=[p.boxes for p in preds],
        pred_classes=[p.labels for p in preds],
        pred_scores=[p.scores for p in preds],
        gt_boxes=[t.boxes for t in targets],
        gt_classes=[t.labels for t in targets],
        max_detections=100,
    )
    reference = metric(matches)[0]
    ours = coco_metrics(preds, targets, num_classes=num_classes).as_monai_keys()
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    assert 0.0 < ours["AP_IoU_0.10_MaxDet_100"] <= 1.0


def test_evaluate_detections_flat_names() -> None:
    result = evaluate_detections(HAND_PREDS, HAND_TARGETS).as_dict()
    assert result["cpm"] == pytest.approx(5.5 / 7)
    assert result["froc_sens_at_1_fp"] == 1.0
    assert result["froc_sens_at_0.125_fp"] == 0.5
    assert result["study_auc"] == 1.0
    # AP at IoU 0.1: precision envelope 1.0 up to recall 0.5, then 2/4 up to recall 1.0
    assert result["ap_iou_0.10"] == pytest.approx((51 * 1.0 + 50 * 0.5) / 101)
    assert result["ar_iou_0.10"] == 1.0
