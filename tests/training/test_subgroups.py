"""Subgroup tables at the operating threshold: per nodule, per study (radiograph and CT
acquisition keys), and benign distractors; hand-built findings, so every count is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oncotriage.datasets.datalist import DatalistEntry
from oncotriage.models.spec import Thresholds
from oncotriage.training.evaluate import SplitPredictions
from oncotriage.training.metrics import ImageDetections, ImageTargets
from oncotriage.training.subgroups import distractor_rows, subgroup_rows

THRESHOLDS = Thresholds(operating=0.5, urgent=0.9, calibrated=True)


def _ct(
    name: str, ctdi: float, kernel: str, thickness: float, nodules: list[float], found: list[bool]
) -> tuple[DatalistEntry, ImageDetections, ImageTargets]:
    """A CT entry with a nodule of each diameter (boxes 10 voxels apart); a finding at 0.8
    on each nodule marked found, and one at 0.2 (below the threshold) on the others."""
    boxes = np.array([[10 * i, 0, 0, 10 * i + 6, 6, 6] for i in range(len(nodules))], float)
    boxes = boxes.reshape(-1, 6)
    scores = np.array([0.8 if hit else 0.2 for hit in found], float)
    meta = {
        "diameter_mm": nodules,
        "nodule_type": ["solid"] * len(nodules),
        "generator": {
            "generator_version": 2,
            "vendor": "vendor-a",
            "ctdi_vol_mgy": ctdi,
            "kernel_class": kernel,
            "slice_thickness_mm": thickness,
        },
    }
    entry = DatalistEntry(Path(name), boxes, np.zeros(len(boxes), int), 3, "xyzxyz", meta=meta)
    detections = ImageDetections(boxes.copy(), scores, np.zeros(len(boxes), int))
    return entry, detections, ImageTargets(boxes.copy(), np.zeros(len(boxes), int))


def _split(cases: list[tuple[DatalistEntry, ImageDetections, ImageTargets]]) -> SplitPredictions:
    entries, predictions, targets = (list(items) for items in zip(*cases, strict=True))
    return SplitPredictions(
        entries,
        predictions,
        targets,
        [str(entry.image) for entry in entries],
        [np.zeros((0, 6))] * len(entries),
    )


@pytest.fixture
def ct_split() -> SplitPredictions:
    return _split(
        [
            _ct("a", 0.8, "soft", 1.0, [5.0, 12.0], [False, True]),  # flagged, 1 of 2 found
            _ct("b", 1.5, "sharp", 2.5, [8.0], [False]),  # missed
            _ct("c", 2.6, "sharp", 1.0, [25.0], [True]),  # flagged
            _ct("d", 0.7, "soft", 2.5, [], []),  # negative, not flagged
        ]
    )


def _table(rows) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    def count(p):  # type: ignore[no-untyped-def]
        return None if p is None else (p.successes, p.total)

    return {r.value: (count(r.nodules), count(r.sensitivity), count(r.specificity)) for r in rows}


def test_ct_acquisition_subgroups(ct_split: SplitPredictions) -> None:
    assert _table(subgroup_rows(ct_split, THRESHOLDS, "ctdi")) == {
        "0-1 mGy": ((1, 2), (1, 1), (1, 1)),
        "1-2 mGy": ((0, 1), (0, 1), (0, 0)),
        "2-3 mGy": ((1, 1), (1, 1), (0, 0)),
    }
    assert _table(subgroup_rows(ct_split, THRESHOLDS, "kernel")) == {
        "sharp": ((1, 2), (1, 2), (0, 0)),
        "soft": ((1, 2), (1, 1), (1, 1)),
    }
    assert _table(subgroup_rows(ct_split, THRESHOLDS, "thickness")) == {
        "1 mm": ((2, 3), (2, 2), (0, 0)),
        "2.5 mm": ((0, 1), (0, 1), (1, 1)),
    }


def test_nodule_size_bands_and_missing_fields(ct_split: SplitPredictions) -> None:
    assert _table(subgroup_rows(ct_split, THRESHOLDS, "size")) == {
        "4-6 mm": ((0, 1), None, None),
        "6-10 mm": ((0, 1), None, None),
        "10-20 mm": ((1, 1), None, None),
        "20-30 mm": ((1, 1), None, None),
    }
    # a radiograph key on CT entries: one "n/a" group holding every study
    assert _table(subgroup_rows(ct_split, THRESHOLDS, "dose")) == {"n/a": ((2, 4), (2, 3), (1, 1))}
    with pytest.raises(ValueError, match="unknown subgroup 'scanner'"):
        subgroup_rows(ct_split, THRESHOLDS, "scanner")


def test_distractors_hit_by_kind() -> None:
    entry, detections, targets = _ct("e", 1.0, "soft", 1.0, [], [])
    entry.meta["distractor_kind"] = ["vessel bifurcation", "calcified granuloma"]
    distractors = np.array([[0, 0, 0, 6, 6, 6], [40, 40, 40, 46, 46, 46]], float)
    detections = ImageDetections(distractors[:1].copy(), np.array([0.7]), np.zeros(1, int))
    split = SplitPredictions([entry], [detections], [targets], ["e"], [distractors])
    assert _table(distractor_rows(split, THRESHOLDS)) == {
        "calcified granuloma": ((0, 1), None, None),
        "vessel bifurcation": ((1, 1), None, None),
        "all": ((1, 2), None, None),
    }
