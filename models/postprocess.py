"""RetinaNet post-processing in numpy: box decoding, score selection, clipping and NMS.

A line-by-line port of MONAI's ``BoxCoder.decode_single``, ``BoxSelector`` and
``box_utils.batched_nms`` / ``non_max_suppression`` / ``clip_boxes_to_image`` as
``RetinaNetDetector.postprocess_detections`` uses them, computed in float32 as MONAI does,
so that ONNX Runtime + this module gives MONAI's detections (tests compare them).

Boxes are ``xyxy`` (2D) / ``xyzxyz`` (3D) in network-input voxel coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BoxSelector",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "decode_boxes",
    "encode_boxes",
    "non_max_suppression",
    "reshape_head_outputs",
    "sigmoid",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

_EPS = np.float32(np.finfo(np.float32).eps)
#: MONAI ``BoxCoder`` default ``boxes_xform_clip``.
BOXES_XFORM_CLIP = math.log(1000.0 / 16)


def sigmoid(logits: np.ndarray) -> FloatArray:
    """Logistic function in float32, stable for large negative logits."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = np.float32(1.0) / (np.float32(1.0) + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (np.float32(1.0) + ex)
    return out


def decode_boxes(
    rel_codes: np.ndarray,
    anchors: np.ndarray,
    weights: Sequence[float] | None = None,
    boxes_xform_clip: float = BOXES_XFORM_CLIP,
) -> FloatArray:
    """MONAI ``BoxCoder.decode_single``: regression offsets + anchors -> boxes.

    Args:
        rel_codes: ``(N, 2D)`` offsets ``(dx, dy(, dz), dw, dh(, dd))``.
        anchors: ``(N, 2D)`` reference boxes, ``xyxy``/``xyzxyz``.
        weights: box-coder weights (default all ones).
        boxes_xform_clip: upper clamp of the log-size offsets before ``exp``.

    Returns:
        ``(N, 2D)`` float32 boxes, ``xyxy``/``xyzxyz``.
    """
    rel = np.asarray(rel_codes, dtype=np.float32)
    ref = np.asarray(anchors, dtype=np.float32)
    dims = ref.shape[-1] // 2
    w = [1.0] * (2 * dims) if weights is None else list(weights)
    centre = (ref[:, :dims] + ref[:, dims:]) / np.float32(2.0)
    size = ref[:, dims:] - ref[:, :dims]
    lows, highs = [], []
    for axis in range(dims):
        d_ctr = rel[:, axis] / np.float32(w[axis])
        d_size = rel[:, dims + axis] / np.float32(w[dims + axis])
        d_size = np.minimum(d_size, np.float32(boxes_xform_clip))
        ctr = d_ctr * size[:, axis] + centre[:, axis]
        half = np.float32(0.5) * (np.exp(d_size) * size[:, axis])
        lows.append(ctr - half)
        highs.append(ctr + half)
    return np.stack(lows + highs, axis=1).astype(np.float32)


def encode_boxes(
    gt_boxes: np.ndarray, anchors: np.ndarray, weights: Sequence[float] | None = None
) -> FloatArray:
    """MONAI ``encode_boxes``: offsets that :func:`decode_boxes` turns back into ``gt_boxes``."""
    gt = np.asarray(gt_boxes, dtype=np.float32)
    ref = np.asarray(anchors, dtype=np.float32)
    dims = ref.shape[-1] // 2
    w = np.asarray([1.0] * (2 * dims) if weights is None else weights, dtype=np.float32)
    ref_ctr = (ref[:, :dims] + ref[:, dims:]) / 2
    ref_size = ref[:, dims:] - ref[:, :dims]
    gt_ctr = (gt[:, :dims] + gt[:, dims:]) / 2
    gt_size = gt[:, dims:] - gt[:, :dims]
    d_ctr = w[:dims] * (gt_ctr - ref_ctr) / ref_size
    d_size = w[dims:] * np.log(gt_size / ref_size)
    return np.concatenate([d_ctr, d_size], axis=1).astype(np.float32)


def box_area(boxes: np.ndarray) -> FloatArray:
    """Area (2D) or volume (3D) of ``(N, 2D)`` boxes, float32."""
    b = np.asarray(boxes, dtype=np.float32)
    dims = b.shape[1] // 2
    area = b[:, dims] - b[:, 0]
    for axis in range(1, dims):
        area = area * (b[:, dims + axis] - b[:, axis])
    return area.astype(np.float32)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> FloatArray:
    """``(N, M)`` IoU of two box sets in float32 (MONAI ``box_iou``, ``TO_REMOVE = 0``)."""
    b1 = np.asarray(boxes1, dtype=np.float32)
    b2 = np.asarray(boxes2, dtype=np.float32)
    dims = b1.shape[1] // 2
    area1, area2 = box_area(b1), box_area(b2)
    lt = np.maximum(b1[:, None, :dims], b2[None, :, :dims])
    rb = np.minimum(b1[:, None, dims:], b2[None, :, dims:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0]
    for axis in range(1, dims):
        inter = inter * wh[..., axis]
    union = area1[:, None] + area2[None, :] - inter
    return (inter / (union + _EPS)).astype(np.float32)


def clip_boxes_to_image(
    boxes: np.ndarray, spatial_size: Sequence[int], remove_empty: bool = True
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """MONAI ``clip_boxes_to_image``: clamp to ``[0, size]`` and drop boxes under one voxel wide.

    Returns:
        The kept clipped boxes and the ``(N,)`` boolean keep mask.
    """
    b = np.array(boxes, dtype=np.float32, copy=True)
    dims = len(spatial_size)
    for axis in range(dims):
        hi = np.float32(spatial_size[axis])
        b[:, axis] = np.clip(b[:, axis], 0, hi)
        b[:, axis + dims] = np.clip(b[:, axis + dims], 0, hi)
    if not remove_empty:
        return b, np.ones(b.shape[0], dtype=bool)
    keep = np.ones(b.shape[0], dtype=bool)
    for axis in range(dims):
        keep &= b[:, axis + dims] >= b[:, axis] + np.float32(1.0)
    return b[keep], keep


def non_max_suppression(
    boxes: np.ndarray, scores: np.ndarray, nms_thresh: float, max_proposals: int = -1
) -> IntArray:
    """Greedy NMS exactly as MONAI ``non_max_suppression``.

    Boxes are visited in descending score order (stable for ties); a box is dropped when its
    IoU with an already kept box is ``> nms_thresh``.

    Args:
        boxes: ``(N, 2D)`` boxes.
        scores: ``(N,)`` scores.
        nms_thresh: IoU threshold.
        max_proposals: stop after this many kept boxes (``-1``: no limit).

    Returns:
        Indices into ``boxes`` of the kept boxes, highest score first (int64).
    """
    b = np.asarray(boxes, dtype=np.float32)
    s = np.asarray(scores, dtype=np.float32)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    order = np.argsort(-s, kind="stable")
    sorted_boxes = b[order]
    dims = b.shape[1] // 2
    areas = box_area(sorted_boxes)
    thresh = np.float32(nms_thresh)
    remaining = np.arange(sorted_boxes.shape[0])
    picked: list[int] = []
    while remaining.size > 0:
        i = int(remaining[0])
        picked.append(i)
        if len(picked) >= max_proposals >= 1:
            break
        rest = sorted_boxes[remaining]
        lt = np.maximum(rest[:, :dims], sorted_boxes[i, :dims])
        rb = np.minimum(rest[:, dims:], sorted_boxes[i, dims:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0]
        for axis in range(1, dims):
            inter = inter * wh[:, axis]
        iou = inter / ((areas[remaining] + areas[i] - inter) + _EPS)
        keep = iou <= thresh
        keep[0] = False
        remaining = remaining[keep]
    return order[np.asarray(picked, dtype=np.int64)].astype(np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    nms_thresh: float,
    max_proposals: int = -1,
) -> IntArray:
    """Class-wise NMS (MONAI ``batched_nms``): boxes of other labels never suppress each other."""
    b = np.asarray(boxes, dtype=np.float32)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.asarray(labels).astype(np.float32) * (b.max() + np.float32(1.0))
    return non_max_suppression(b + offsets[:, None], scores, nms_thresh, max_proposals)


def reshape_head_outputs(
    maps: Sequence[np.ndarray], num_anchors: int, spatial_dims: int
) -> FloatArray:
    """MONAI ``RetinaNetDetector._reshape_maps``.

    Per-level ``(B, A*K, *S)`` maps become one ``(B, sum(prod(S)*A), K)`` array.
    """
    out = []
    for level in maps:
        batch = level.shape[0]
        channels = level.shape[1] // num_anchors
        spatial = level.shape[2:]
        if len(spatial) != spatial_dims:
            raise ValueError(
                f"expected {spatial_dims} spatial axes, got map of shape {level.shape}"
            )
        view = level.reshape((batch, num_anchors, channels, *spatial))
        axes = (0, *range(3, 3 + spatial_dims), 1, 2)
        out.append(np.transpose(view, axes).reshape(batch, -1, channels))
    return np.concatenate(out, axis=1).astype(np.float32, copy=False)


@dataclass(frozen=True)
class BoxSelector:
    """MONAI ``BoxSelector``: score threshold and top-k per level, clip, class-wise NMS, cap.

    Attributes:
        score_thresh: scores ``<= score_thresh`` are dropped.
        topk_candidates_per_level: candidates kept per level (highest scores).
        nms_thresh: IoU threshold of NMS.
        detections_per_img: detections kept per image.
        apply_sigmoid: logits -> scores with a sigmoid.
    """

    score_thresh: float = 0.05
    topk_candidates_per_level: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    apply_sigmoid: bool = True

    def select_top_score_idx_per_level(
        self, logits: np.ndarray
    ) -> tuple[IntArray, FloatArray, IntArray]:
        """Anchor indices, scores and labels of one level's kept candidates.

        Args:
            logits: ``(N, num_classes)`` logits of one level.
        """
        num_classes = logits.shape[-1]
        flat = logits.reshape(-1)
        scores = sigmoid(flat) if self.apply_sigmoid else flat.astype(np.float32)
        keep_idxs = np.flatnonzero(scores > np.float32(self.score_thresh))
        kept = scores[keep_idxs]
        num_topk = min(self.topk_candidates_per_level, keep_idxs.size)
        if num_topk < kept.size:
            part = np.argpartition(-kept, num_topk - 1)[:num_topk]
            order = part[np.argsort(-kept[part], kind="stable")]
        else:
            order = np.argsort(-kept, kind="stable")
        flat_idxs = keep_idxs[order].astype(np.int64)
        return flat_idxs // num_classes, kept[order], flat_idxs % num_classes

    def select_boxes_per_image(
        self,
        boxes_list: Sequence[np.ndarray],
        logits_list: Sequence[np.ndarray],
        spatial_size: Sequence[int],
    ) -> tuple[FloatArray, FloatArray, IntArray]:
        """Detections of one image.

        Args:
            boxes_list: per level, ``(N_i, 2D)`` decoded boxes.
            logits_list: per level, ``(N_i, num_classes)`` logits.
            spatial_size: the unpadded input size boxes are clipped to.

        Returns:
            ``boxes (P, 2D)``, ``scores (P,)`` and ``labels (P,)``, highest score first.
        """
        if len(boxes_list) != len(logits_list):
            raise ValueError(f"{len(boxes_list)} box levels but {len(logits_list)} logit levels")
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, logits in zip(boxes_list, logits_list, strict=True):
            idxs, scores, labels = self.select_top_score_idx_per_level(logits)
            clipped, keep = clip_boxes_to_image(boxes[idxs], spatial_size, remove_empty=True)
            all_boxes.append(clipped)
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        image_boxes = np.concatenate(all_boxes, axis=0)
        image_scores = np.concatenate(all_scores, axis=0)
        image_labels = np.concatenate(all_labels, axis=0)
        keep_idx = batched_nms(
            image_boxes,
            image_scores,
            image_labels,
            self.nms_thresh,
            max_proposals=self.detections_per_img,
        )
        return image_boxes[keep_idx], image_scores[keep_idx], image_labels[keep_idx]
