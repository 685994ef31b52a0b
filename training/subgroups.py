"""Results at the operating threshold broken down by subgroup, and on benign distractors.

A synthetic datalist records how each case was made (version 2: ``generator`` with vendor,
dose, view, ...; per nodule ``diameter_mm``, ``nodule_type``, ``margin``; benign look-alikes
in ``distractor_box`` / ``distractor_kind``). Given a model's findings on a split
(:class:`~oncotriage.training.evaluate.SplitPredictions`) and its thresholds, this module
says, per subgroup:

- per-nodule keys (``size``, ``type``, ``margin``): the share of nodules *found at the
  operating threshold*: some finding whose calibrated score reaches the threshold hits the
  nodule (IoU >= 0.1, the FROC's hit rule);
- per-study keys (radiographs: ``vendor``, ``dose``, ``view``, ``portable``,
  ``photometric``, ``sex``; CT: ``vendor``, ``ctdi`` (CTDIvol band), ``kernel``
  (reconstruction kernel class), ``thickness`` (slice thickness); any merged datalist:
  ``shift``, the generator shift of the entry's source, ``datasets merge``): study
  sensitivity and
  specificity at the operating threshold (a study is flagged when its calibrated suspicion
  score reaches it);
- for distractors (:func:`distractor_rows`): the share of look-alikes, by kind, that a
  finding at the operating threshold lands on (a false positive a radiographer would see).

All proportions carry Wilson 95 % intervals. numpy only, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from oncotriage.datasets.merge import shift_label
from oncotriage.models.spec import Thresholds
from oncotriage.training.metrics import ImageDetections, box_iou
from oncotriage.training.operating_points import Proportion, wilson_interval

if TYPE_CHECKING:
    from oncotriage.training.evaluate import SplitPredictions

#: nodule diameter bands (mm), lower bound inclusive
SIZE_BANDS_MM = ((4.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 30.0))
#: relative dose bands of version-2 radiographs (portable images get 0.6 x)
DOSE_BANDS = ((0.0, 0.5), (0.5, 0.75), (0.75, 1.0))
#: CTDIvol bands (mGy) of version-2 low-dose CT (the generator draws 0.6-3 mGy)
CTDI_BANDS_MGY = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0))
LESION_KEYS = ("size", "type", "margin")
STUDY_KEYS = (
    "vendor",
    "dose",
    "view",
    "portable",
    "photometric",
    "sex",
    "ctdi",
    "kernel",
    "thickness",
    "shift",
)
#: per-study keys read from another field of the datalist's ``generator`` record
_GENERATOR_FIELDS = {
    "ctdi": "ctdi_vol_mgy",
    "kernel": "kernel_class",
    "thickness": "slice_thickness_mm",
}
SUBGROUP_KEYS = LESION_KEYS + STUDY_KEYS


@dataclass(frozen=True)
class SubgroupRow:
    """One subgroup's results at the operating threshold.

    Attributes:
        key: the breakdown (``size``, ``vendor``, ...).
        value: the subgroup (``4-6 mm``, ``vendor-a``, ...).
        nodules: nodules found at the operating threshold (``None`` for distractor rows).
        sensitivity: positive studies flagged (``None`` for per-nodule keys).
        specificity: negative studies not flagged (``None`` for per-nodule keys).
    """

    key: str
    value: str
    nodules: Proportion | None = None
    sensitivity: Proportion | None = None
    specificity: Proportion | None = None


def _band(value: float, bands: Sequence[tuple[float, float]], unit: str = "") -> str:
    for low, high in bands:
        if low <= value < high:
            return f"{low:g}-{high:g}{unit}"
    low, high = bands[-1]
    return f"{low:g}-{high:g}{unit}" if value == high else f"other{unit}"


def calibrated_scores(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """Scores on the thresholds' scale (the spec's score calibration applied, if any)."""
    raw = np.asarray(scores, dtype=np.float64)
    if thresholds.score_calibration is None:
        return raw
    return np.asarray(thresholds.score_calibration.apply(raw), dtype=np.float64).reshape(raw.shape)


def boxes_hit(
    prediction: ImageDetections,
    boxes: np.ndarray,
    thresholds: Thresholds,
    iou_threshold: float = 0.1,
) -> np.ndarray:
    """``(G,)`` bool: which ``boxes`` (``xyxy``/``xyzxyz``, the predictions' space) a finding
    at or above the operating threshold overlaps with IoU >= ``iou_threshold``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape[0] == 0:
        return np.zeros(0, bool)
    keep = calibrated_scores(prediction.scores, thresholds) >= thresholds.operating
    if not keep.any():
        return np.zeros(boxes.shape[0], bool)
    iou = box_iou(prediction.boxes[keep], boxes)
    return np.asarray((iou >= iou_threshold).any(axis=0), dtype=bool)


def _lesion_value(key: str, meta: dict[str, Any], index: int) -> str:
    field = {"size": "diameter_mm", "type": "nodule_type", "margin": "margin"}[key]
    values = meta.get(field)
    if values is None or index >= len(values):
        return "n/a"
    if key == "size":
        return _band(float(values[index]), SIZE_BANDS_MM, " mm")
    return str(values[index])


def _study_value(key: str, meta: dict[str, Any]) -> str:
    if key == "shift":
        return shift_label(meta.get("shift"))
    generator = meta.get("generator") or {}
    field = _GENERATOR_FIELDS.get(key, key)
    if field not in generator:
        return "n/a"
    value = generator[field]
    if key == "dose":
        return _band(float(value), DOSE_BANDS)
    if key == "ctdi":
        return _band(float(value), CTDI_BANDS_MGY, " mGy")
    if key == "thickness":
        return f"{float(value):g} mm"
    return str(value).lower() if key == "portable" else str(value)


def _order(values: Sequence[str]) -> list[str]:
    def sort_key(value: str) -> tuple[float, str]:
        head = value.split("-")[0]
        try:
            return (float(head), value)
        except ValueError:
            return (float("inf"), value)

    return sorted(set(values), key=sort_key)


def subgroup_rows(
    split: SplitPredictions,
    thresholds: Thresholds,
    key: str,
    *,
    iou_threshold: float = 0.1,
) -> list[SubgroupRow]:
    """Results at the operating threshold per subgroup of ``key`` (see the module doc).

    Raises:
        ValueError: for an unknown key.
    """
    if key not in SUBGROUP_KEYS:
        raise ValueError(f"unknown subgroup {key!r}; use one of {', '.join(SUBGROUP_KEYS)}")
    if key in LESION_KEYS:
        found: dict[str, list[bool]] = {}
        for entry, prediction, target in zip(
            split.entries, split.predictions, split.targets, strict=True
        ):
            hits = boxes_hit(prediction, target.boxes, thresholds, iou_threshold)
            for index, hit in enumerate(hits):
                found.setdefault(_lesion_value(key, entry.meta, index), []).append(bool(hit))
        return [
            SubgroupRow(key, value, nodules=wilson_interval(sum(found[value]), len(found[value])))
            for value in _order(list(found))
        ]
    groups: dict[str, list[int]] = {}
    for index, entry in enumerate(split.entries):
        groups.setdefault(_study_value(key, entry.meta), []).append(index)
    return [
        _study_row(split, thresholds, key, value, groups[value], iou_threshold)
        for value in _order(list(groups))
    ]


def _study_row(
    split: SplitPredictions,
    thresholds: Thresholds,
    key: str,
    value: str,
    images: list[int],
    iou_threshold: float,
) -> SubgroupRow:
    flagged: dict[str, bool] = {}
    positive: dict[str, bool] = {}
    found: list[bool] = []
    for index in images:
        prediction, target = split.predictions[index], split.targets[index]
        study = split.study_ids[index]
        score = thresholds.study_score(prediction.suspicion_score)
        flagged[study] = flagged.get(study, False) or score >= thresholds.operating
        positive[study] = positive.get(study, False) or len(target.boxes) > 0
        found += boxes_hit(prediction, target.boxes, thresholds, iou_threshold).tolist()
    pos = [s for s in flagged if positive[s]]
    neg = [s for s in flagged if not positive[s]]
    return SubgroupRow(
        key,
        value,
        nodules=wilson_interval(sum(found), len(found)),
        sensitivity=wilson_interval(sum(flagged[s] for s in pos), len(pos)),
        specificity=wilson_interval(sum(not flagged[s] for s in neg), len(neg)),
    )


def distractor_rows(
    split: SplitPredictions,
    thresholds: Thresholds,
    *,
    iou_threshold: float = 0.1,
) -> list[SubgroupRow]:
    """Per distractor kind (and ``all``): the share of benign look-alikes that a finding at
    the operating threshold lands on, in ``nodules`` (here: distractors hit, a false-positive
    rate). Needs ``split.distractors`` (index boxes), which :func:`predict_split` fills from
    the entries' ``distractor_box``."""
    hit: dict[str, list[bool]] = {}
    for entry, prediction, boxes in zip(
        split.entries, split.predictions, split.distractors, strict=True
    ):
        kinds = entry.meta.get("distractor_kind") or []
        for kind, was_hit in zip(
            kinds, boxes_hit(prediction, boxes, thresholds, iou_threshold), strict=True
        ):
            hit.setdefault(str(kind), []).append(bool(was_hit))
            hit.setdefault("all", []).append(bool(was_hit))
    return [
        SubgroupRow("distractor", kind, nodules=wilson_interval(sum(hit[kind]), len(hit[kind])))
        for kind in sorted(hit, key=lambda k: (k == "all", k))
    ]


def format_rows(rows: Sequence[SubgroupRow], fmt: Callable[[Proportion | None], str]) -> list[str]:
    """Markdown table lines for rows of one key."""
    lines = [
        "| subgroup | nodules found | study sensitivity | study specificity |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.key} {row.value} | {fmt(row.nodules)} | {fmt(row.sensitivity)} "
            f"| {fmt(row.specificity)} |"
        )
    return lines


def proportion_cell(proportion: Proportion | None) -> str:
    """``0.900 (45/50; 0.78-0.96)``, or ``-`` when absent or empty."""
    if proportion is None or proportion.total == 0:
        return "-"
    return (
        f"{proportion.value:.3f} ({proportion.successes}/{proportion.total}; "
        f"{proportion.low:.2f}-{proportion.high:.2f})"
    )
