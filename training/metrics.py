"""Detection metrics: FROC/CPM, COCO-style AP/AR and study-level ROC AUC, in numpy.

Boxes are in one index space per image, box mode ``xyxy`` (2D) or ``xyzxyz`` (3D)
(MONAI's ``StandardMode``); predictions and ground truth of an image must share it.

Matching follows MONAI's ``monai.apps.detection.metrics.matching.matching_batch``
(itself from the COCO API): per image and class, detections are visited in descending
score order, and each takes the still-unmatched ground-truth box of highest IoU that
reaches the IoU threshold. For AP/AR a detection left unmatched is a false positive,
including a second detection of an already-found lesion. ``coco_metrics`` reproduces MONAI's
``COCOMetric`` on those matches (101 recall points, interpolated precision); the tests
compare both with MONAI on the same predictions.

The FROC curve (LUNA16) plots lesion sensitivity against the mean number of false
positives per image while the score threshold falls. As in LUNA16's evaluation script, a
further detection of a lesion that a higher-scoring detection already found is ignored,
neither a hit nor a false positive (``ClassMatch.duplicate``); a false positive is a
detection that overlaps no lesion at the IoU threshold. The sensitivity reported at a FP
rate ``r`` is the highest sensitivity of any threshold whose FP rate is at most ``r``
(a step curve, no interpolation between thresholds); CPM is the mean over
``1/8, 1/4, 1/2, 1, 2, 4, 8`` FP per image.

This module imports only numpy, so evaluation can run wherever the ONNX pipeline runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per image at which FROC sensitivities are reported (LUNA16)."""

COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101, endpoint=True)
"""Recall points at which COCO-style precision is sampled."""


@dataclass(frozen=True)
class ImageDetections:
    """A detector's output for one image.

    Attributes:
        boxes: ``(D, 2 * spatial_dims)`` boxes, ``xyxy``/``xyzxyz``, image index space.
        scores: ``(D,)`` confidences in ``0..1``.
        labels: ``(D,)`` integer class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        _check_boxes(self.boxes, "prediction")
        if len(self.scores) != len(self.boxes) or len(self.labels) != len(self.boxes):
            raise ValueError(
                f"prediction has {len(self.boxes)} boxes, {len(self.scores)} scores and "
                f"{len(self.labels)} labels; give one score and one label per box"
            )

    @classmethod
    def empty(cls, spatial_dims: int) -> ImageDetections:
        return cls(np.zeros((0, 2 * spatial_dims)), np.zeros(0), np.zeros(0, dtype=int))

    @property
    def suspicion_score(self) -> float:
        """Highest finding score, 0 when the detector found nothing."""
        return float(np.max(self.scores)) if len(self.scores) else 0.0


@dataclass(frozen=True)
class ImageTargets:
    """Ground truth of one image.

    Attributes:
        boxes: ``(G, 2 * spatial_dims)`` boxes, ``xyxy``/``xyzxyz``, image index space.
        labels: ``(G,)`` integer class indices.
    """

    boxes: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        _check_boxes(self.boxes, "ground-truth")
        if len(self.labels) != len(self.boxes):
            raise ValueError(
                f"ground truth has {len(self.boxes)} boxes but {len(self.labels)} labels"
            )


def _check_boxes(boxes: np.ndarray, what: str) -> None:
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(
            f"{what} boxes must have shape (N, 4) for xyxy or (N, 6) for xyzxyz, got {boxes.shape}"
        )


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of every pair of boxes, as MONAI's ``box_iou``.

    Args:
        boxes1: ``(N, 2D)`` boxes, ``xyxy``/``xyzxyz``.
        boxes2: ``(M, 2D)`` boxes in the same mode and space.

    Returns:
        ``(N, M)`` float64 IoU values in ``0..1``.
    """
    boxes1 = np.asarray(boxes1, dtype=np.float64)
    boxes2 = np.asarray(boxes2, dtype=np.float64)
    dims = boxes1.shape[1] // 2
    if boxes2.shape[1] != boxes1.shape[1]:
        raise ValueError(f"box sizes differ: {boxes1.shape[1]} vs {boxes2.shape[1]}")
    area1 = np.prod(boxes1[:, dims:] - boxes1[:, :dims], axis=1)
    area2 = np.prod(boxes2[:, dims:] - boxes2[:, :dims], axis=1)
    lo = np.maximum(boxes1[:, None, :dims], boxes2[None, :, :dims])
    hi = np.minimum(boxes1[:, None, dims:], boxes2[None, :, dims:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    union = area1[:, None] + area2[None, :] - inter
    # The same epsilon MONAI adds (float32 machine epsilon), so matches agree at the margin.
    return inter / (union + float(np.finfo(np.float32).eps))


@dataclass(frozen=True)
class ClassMatch:
    """Greedy matching of one image's detections of one class at several IoU thresholds.

    Attributes:
        scores: ``(D,)`` detection scores, descending (at most ``max_detections``).
        matched: ``(T, D)`` bool, detection ``d`` found a lesion at IoU threshold ``t``.
        num_gt: number of ground-truth boxes of this class in the image.
        duplicate: ``(T, D)`` bool, detection ``d`` is unmatched but overlaps a lesion that a
            higher-scoring detection found (ignored by the FROC, a false positive for AP).
    """

    scores: np.ndarray
    matched: np.ndarray
    num_gt: int
    duplicate: np.ndarray | None = None

    @property
    def false_positive(self) -> np.ndarray:
        """``(T, D)`` bool: unmatched and not a duplicate of a found lesion."""
        if self.duplicate is None:
            return ~self.matched
        return ~self.matched & ~self.duplicate


def match_class(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    gt_boxes: np.ndarray,
    iou_thresholds: Sequence[float],
    max_detections: int = 100,
) -> ClassMatch:
    """Match one image's detections of one class to its ground truth of that class.

    Args:
        pred_boxes: ``(D, 2 * dims)`` boxes.
        pred_scores: ``(D,)`` scores.
        gt_boxes: ``(G, 2 * dims)`` boxes.
        iou_thresholds: IoU a detection needs to count as finding a lesion.
        max_detections: only the highest-scoring detections are matched (as COCO).

    Returns:
        the matches, detections sorted by descending score (stable).
    """
    order = np.argsort(-np.asarray(pred_scores), kind="mergesort")[:max_detections]
    scores = np.asarray(pred_scores, dtype=np.float64)[order]
    matched = np.zeros((len(iou_thresholds), len(order)), dtype=bool)
    duplicate = np.zeros_like(matched)
    num_gt = len(gt_boxes)
    if num_gt == 0 or len(order) == 0:
        return ClassMatch(scores=scores, matched=matched, num_gt=num_gt, duplicate=duplicate)
    ious = box_iou(np.asarray(pred_boxes)[order], gt_boxes)
    for t_index, threshold in enumerate(iou_thresholds):
        gt_taken = np.zeros(num_gt, dtype=bool)
        floor = min(threshold, 1 - 1e-10)
        for d_index in range(len(order)):
            candidates = np.where(gt_taken, -1.0, ious[d_index])
            # COCO's loop keeps the last of equally good ground-truth boxes
            best = num_gt - 1 - int(np.argmax(candidates[::-1]))
            if candidates[best] >= floor:
                gt_taken[best] = True
                matched[t_index, d_index] = True
            elif np.any(ious[d_index][gt_taken] >= floor):
                duplicate[t_index, d_index] = True
    return ClassMatch(scores=scores, matched=matched, num_gt=num_gt, duplicate=duplicate)


def match_dataset(
    predictions: Sequence[ImageDetections],
    targets: Sequence[ImageTargets],
    iou_thresholds: Sequence[float],
    max_detections: int = 100,
) -> list[dict[int, ClassMatch]]:
    """Match every image, class by class.

    Returns:
        one dict per image, from each class present in its predictions or ground truth
        to the :class:`ClassMatch` of that class.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    results: list[dict[int, ClassMatch]] = []
    for pred, gt in zip(predictions, targets, strict=True):
        per_class: dict[int, ClassMatch] = {}
        classes = np.union1d(pred.labels.astype(int), gt.labels.astype(int))
        for label in classes.tolist():
            pmask = pred.labels == label
            gmask = gt.labels == label
            per_class[int(label)] = match_class(
                pred.boxes[pmask],
                pred.scores[pmask],
                gt.boxes[gmask],
                iou_thresholds,
                max_detections,
            )
        results.append(per_class)
    return results


@dataclass(frozen=True)
class FrocResult:
    """A FROC curve and its summary.

    Attributes:
        fp_rates: false positives per image at which sensitivity is reported.
        sensitivities: lesion sensitivity at each of ``fp_rates``.
        cpm: competition performance metric, the mean of ``sensitivities``.
        curve_fp_per_image: FP per image at each distinct score threshold (ascending).
        curve_sensitivity: sensitivity at the same thresholds.
        curve_thresholds: the score thresholds (descending).
        num_images: images evaluated.
        num_lesions: ground-truth boxes.
        iou_threshold: IoU a detection needed to hit a lesion.
    """

    fp_rates: tuple[float, ...]
    sensitivities: tuple[float, ...]
    cpm: float
    curve_fp_per_image: np.ndarray
    curve_sensitivity: np.ndarray
    curve_thresholds: np.ndarray
    num_images: int
    num_lesions: int
    iou_threshold: float

    def sensitivity_at(self, fp_per_image: float) -> float:
        """Highest sensitivity of a threshold with at most ``fp_per_image`` FP per image."""
        ok = self.curve_fp_per_image <= fp_per_image + 1e-12
        return float(self.curve_sensitivity[ok].max()) if ok.any() else 0.0


def froc(
    predictions: Sequence[ImageDetections],
    targets: Sequence[ImageTargets],
    *,
    iou_threshold: float = 0.1,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    max_detections: int = 100,
) -> FrocResult:
    """Free-response ROC of a detector over a set of images (LUNA16 convention).

    Detections of all classes are pooled; a detection hits a lesion when it matches a
    ground-truth box of its own class at ``iou_threshold`` (see :func:`match_class`);
    further detections of an already-found lesion are ignored, all other detections are
    false positives. Equal scores form one threshold, so tied detections enter the curve
    together.

    Args:
        predictions: one :class:`ImageDetections` per image.
        targets: one :class:`ImageTargets` per image, same order.
        iou_threshold: IoU needed for a hit (0.1 as in MONAI's LUNA16 evaluation).
        fp_rates: FP per image at which to read the sensitivity.
        max_detections: detections per image considered (highest scores first).

    Returns:
        the curve, the sensitivities at ``fp_rates`` and their mean (CPM).
    """
    matches = match_dataset(predictions, targets, [iou_threshold], max_detections)
    num_images = len(predictions)
    if num_images == 0:
        raise ValueError("FROC needs at least one image")
    num_lesions = sum(m.num_gt for image in matches for m in image.values())
    scores = np.concatenate([np.zeros(0)] + [m.scores for image in matches for m in image.values()])
    per_class = [m for image in matches for m in image.values()]
    hits = np.concatenate([np.zeros(0, dtype=bool)] + [m.matched[0] for m in per_class])
    false = np.concatenate([np.zeros(0, dtype=bool)] + [m.false_positive[0] for m in per_class])
    order = np.argsort(-scores, kind="mergesort")
    scores, hits, false = scores[order], hits[order], false[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(false)
    # keep the last detection of each run of equal scores: one point per threshold
    last_of_tie = np.append(scores[1:] != scores[:-1], True) if len(scores) else np.zeros(0, bool)
    thresholds = scores[last_of_tie]
    sens = tp[last_of_tie] / num_lesions if num_lesions else np.zeros(int(last_of_tie.sum()))
    fppi = fp[last_of_tie] / num_images
    curve_fp = np.concatenate([[0.0], fppi])
    curve_sens = np.concatenate([[0.0], sens.astype(np.float64)])
    curve_thr = np.concatenate([[np.inf], thresholds])
    result = FrocResult(
        fp_rates=tuple(float(r) for r in fp_rates),
        sensitivities=(),
        cpm=0.0,
        curve_fp_per_image=curve_fp,
        curve_sensitivity=curve_sens,
        curve_thresholds=curve_thr,
        num_images=num_images,
        num_lesions=num_lesions,
        iou_threshold=iou_threshold,
    )
    sensitivities = tuple(result.sensitivity_at(r) for r in fp_rates)
    return FrocResult(
        fp_rates=result.fp_rates,
        sensitivities=sensitivities,
        cpm=float(np.mean(sensitivities)) if sensitivities else 0.0,
        curve_fp_per_image=curve_fp,
        curve_sensitivity=curve_sens,
        curve_thresholds=curve_thr,
        num_images=num_images,
        num_lesions=num_lesions,
        iou_threshold=iou_threshold,
    )


@dataclass(frozen=True)
class CocoResult:
    """COCO-style average precision and recall, as MONAI's ``COCOMetric`` computes them.

    Attributes:
        ap: AP at each IoU of ``iou_list`` (mean over classes with ground truth).
        ar: recall at each IoU of ``iou_list``.
        map_range: mAP over the IoU range.
        mar_range: mAR over the IoU range.
        iou_list, iou_range, max_detections: the settings.
    """

    ap: dict[float, float]
    ar: dict[float, float]
    map_range: float
    mar_range: float
    iou_list: tuple[float, ...]
    iou_range: tuple[float, float, float]
    max_detections: int

    def as_monai_keys(self) -> dict[str, float]:
        """The values under the key names MONAI's ``COCOMetric`` uses (``per_class=False``)."""
        lo, hi, step = self.iou_range
        rng = f"{lo:.2f}_{hi:.2f}_{step:.2f}"
        keys = {f"mAP_IoU_{rng}_MaxDet_{self.max_detections}": self.map_range}
        keys.update({f"AP_IoU_{t:.2f}_MaxDet_{self.max_detections}": v for t, v in self.ap.items()})
        keys[f"mAR_IoU_{rng}_MaxDet_{self.max_detections}"] = self.mar_range
        keys.update({f"AR_IoU_{t:.2f}_MaxDet_{self.max_detections}": v for t, v in self.ar.items()})
        return keys


def _coco_iou_thresholds(
    iou_list: Sequence[float], iou_range: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi, step = iou_range
    range_values = np.linspace(lo, hi, int(np.round((hi - lo) / step)) + 1, endpoint=True)
    list_values = np.asarray(iou_list, dtype=np.float64)
    thresholds = np.union1d(list_values, range_values)
    list_idx = np.nonzero(list_values[:, None] == thresholds[None])[1]
    range_idx = np.nonzero(range_values[:, None] == thresholds[None])[1]
    return thresholds, list_idx, range_idx


def coco_metrics(
    predictions: Sequence[ImageDetections],
    targets: Sequence[ImageTargets],
    *,
    num_classes: int | None = None,
    iou_list: Sequence[float] = (0.1,),
    iou_range: tuple[float, float, float] = (0.1, 0.5, 0.05),
    max_detections: int = 100,
) -> CocoResult:
    """COCO-style AP/AR at the IoUs of ``iou_list`` and averaged over ``iou_range``.

    Reproduces MONAI's ``COCOMetric(classes, iou_list, iou_range, max_detection=[N])``
    applied to ``matching_batch`` results, for classes ``0..num_classes-1``. Classes
    without ground truth are left out of the class mean (MONAI counts their AP as -1).

    Returns:
        AP and AR per IoU of ``iou_list``, mAP and mAR over the range. NaN when no
        class has ground truth.
    """
    thresholds, list_idx, range_idx = _coco_iou_thresholds(iou_list, iou_range)
    matches = match_dataset(predictions, targets, thresholds.tolist(), max_detections)
    if num_classes is None:
        labels = [t.labels for t in targets] + [p.labels for p in predictions]
        num_classes = int(max((int(x.max()) for x in labels if len(x)), default=-1)) + 1
    num_t = len(thresholds)
    precision = np.full((num_t, len(COCO_RECALL_THRESHOLDS), num_classes), np.nan)
    recall = np.full((num_t, num_classes), np.nan)
    for label in range(num_classes):
        per_image = [image[label] for image in matches if label in image]
        num_gt = sum(m.num_gt for m in per_image)
        if num_gt == 0:
            continue
        scores = np.concatenate([np.zeros(0)] + [m.scores for m in per_image])
        order = np.argsort(-scores, kind="mergesort")
        hits = np.concatenate([np.zeros((num_t, 0), bool)] + [m.matched for m in per_image], 1)
        hits = hits[:, order]
        # float32 cumulative sums as MONAI, so recall ties with the 0.01 grid break alike
        tp_sum = np.cumsum(hits, axis=1).astype(np.float32)
        fp_sum = np.cumsum(~hits, axis=1).astype(np.float32)
        for t in range(num_t):
            rc = tp_sum[t] / num_gt
            pr = tp_sum[t] / (fp_sum[t] + tp_sum[t] + np.spacing(1))
            recall[t, label] = rc[-1] if len(rc) else 0.0
            envelope = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
            idx = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
            inside = idx < len(envelope)
            sampled = np.zeros(len(COCO_RECALL_THRESHOLDS))
            sampled[inside] = envelope[idx[inside]]
            precision[t, :, label] = sampled

    def _mean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    ap = {float(thresholds[i]): _mean(precision[i]) for i in list_idx.tolist()}
    ar = {float(thresholds[i]): _mean(recall[i]) for i in list_idx.tolist()}
    return CocoResult(
        ap=ap,
        ar=ar,
        map_range=_mean(precision[range_idx]),
        mar_range=_mean(recall),
        iou_list=tuple(float(x) for x in iou_list),
        iou_range=(float(iou_range[0]), float(iou_range[1]), float(iou_range[2])),
        max_detections=max_detections,
    )


def roc_auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half).

    Args:
        scores: one suspicion score per study.
        positive: whether each study holds a lesion.

    Returns:
        the AUC, or NaN when either class is absent.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class StudyScores:
    """Study-level view: one suspicion score and one truth per study.

    Attributes:
        study_ids: study keys, in first-seen order.
        scores: suspicion score (highest finding score over the study's images).
        positive: the study holds at least one ground-truth lesion.
    """

    study_ids: tuple[str, ...]
    scores: np.ndarray
    positive: np.ndarray


def study_scores(
    predictions: Sequence[ImageDetections],
    targets: Sequence[ImageTargets],
    study_ids: Sequence[str] | None = None,
) -> StudyScores:
    """Group images into studies: score = max finding score, positive = any lesion.

    Args:
        study_ids: study key of each image; each image is its own study when omitted.
    """
    if study_ids is None:
        study_ids = [str(i) for i in range(len(predictions))]
    if not (len(study_ids) == len(predictions) == len(targets)):
        raise ValueError("give one study id, one prediction and one target per image")
    best: dict[str, float] = {}
    pos: dict[str, bool] = {}
    for sid, pred, gt in zip(study_ids, predictions, targets, strict=True):
        best[sid] = max(best.get(sid, 0.0), pred.suspicion_score)
        pos[sid] = pos.get(sid, False) or len(gt.boxes) > 0
    keys = tuple(best)
    return StudyScores(
        study_ids=keys,
        scores=np.array([best[k] for k in keys], dtype=np.float64),
        positive=np.array([pos[k] for k in keys], dtype=bool),
    )


@dataclass(frozen=True)
class DetectionMetrics:
    """Everything ``oncotriage evaluate`` reports for one model on one split."""

    froc: FrocResult
    coco: CocoResult
    study_auc: float
    num_studies: int
    num_positive_studies: int
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Flat metric names for MLflow and the model spec (``[A-Za-z0-9_.]`` only)."""
        out: dict[str, float] = {}
        for rate, sens in zip(self.froc.fp_rates, self.froc.sensitivities, strict=True):
            out[f"froc_sens_at_{rate:g}_fp"] = sens
        out["cpm"] = self.froc.cpm
        for iou, value in self.coco.ap.items():
            out[f"ap_iou_{iou:.2f}"] = value
        for iou, value in self.coco.ar.items():
            out[f"ar_iou_{iou:.2f}"] = value
        lo, hi, _ = self.coco.iou_range
        out[f"map_iou_{lo:.2f}_{hi:.2f}"] = self.coco.map_range
        out[f"mar_iou_{lo:.2f}_{hi:.2f}"] = self.coco.mar_range
        out["study_auc"] = self.study_auc
        out.update(self.extra)
        return out


def evaluate_detections(
    predictions: Sequence[ImageDetections],
    targets: Sequence[ImageTargets],
    *,
    study_ids: Sequence[str] | None = None,
    iou_threshold: float = 0.1,
    max_detections: int = 100,
    num_classes: int | None = None,
) -> DetectionMetrics:
    """FROC/CPM, COCO AP/AR at ``iou_threshold`` and the study-level ROC AUC."""
    froc_result = froc(
        predictions, targets, iou_threshold=iou_threshold, max_detections=max_detections
    )
    coco = coco_metrics(
        predictions,
        targets,
        num_classes=num_classes,
        iou_list=(iou_threshold,),
        max_detections=max_detections,
    )
    studies = study_scores(predictions, targets, study_ids)
    return DetectionMetrics(
        froc=froc_result,
        coco=coco,
        study_auc=roc_auc(studies.scores, studies.positive),
        num_studies=len(studies.study_ids),
        num_positive_studies=int(studies.positive.sum()),
    )
