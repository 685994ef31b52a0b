"""Study sensitivity under distribution shift: the held-out split made fainter, noisier, smaller.

:func:`shifted_sensitivity` writes the held-out (``test``) split of one version-2 synthetic
radiograph or low-dose CT set once per shift
(:class:`~oncotriage.datasets.synth_cxr_v2.CxrShift`: the same patients, acquisitions,
distractors and noise pattern; only the nodules' contrast or size or the noise level differ)
and scores each through the serving pipeline. It reports study sensitivity and specificity at
the model's operating threshold for each, with Wilson 95 % intervals, and the change from the
unshifted split in percentage points.

The project's rule (issue 15): under each shift, study sensitivity at the operating threshold
stays within :data:`MAX_DROP_POINTS` points of the unshifted figure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oncotriage.datasets.datalist import CORNER_MODE, load_datalist
from oncotriage.datasets.synth import run_synth
from oncotriage.datasets.synth_cxr_v2 import NO_SHIFT, CxrShift
from oncotriage.models import registry
from oncotriage.training.evaluate import predict_split
from oncotriage.training.operating_points import (
    OperatingPoint,
    Proportion,
    operating_point,
    wilson_interval,
)
from oncotriage.training.subgroups import boxes_hit

logger = logging.getLogger(__name__)

#: the largest drop in study sensitivity (percentage points) a shift may cause
MAX_DROP_POINTS = 10.0

#: the synthetic kinds and their images' dimensionality
KIND_DIMS = {"cxr": 2, "ldct": 3}

#: the shifts of issue 15: fainter nodules, more noise, small nodules
STANDARD_SHIFTS: dict[str, CxrShift] = {
    "none (held-out split as generated)": NO_SHIFT,
    "fainter nodules (contrast x 0.6)": CxrShift(nodule_contrast=0.6),
    "more noise (noise x 1.5, dose x 0.44)": CxrShift(noise_scale=1.5),
    "small nodules (4-8 mm)": CxrShift(diameter_mm=(4.0, 8.0)),
}


@dataclass(frozen=True)
class ShiftResult:
    """One shifted copy of the held-out split, scored at the operating threshold.

    Attributes:
        name: what the shift is.
        shift: the generator's shift.
        point: study sensitivity and specificity at the operating threshold.
        nodules: share of nodules found at the operating threshold.
        drop_points: unshifted sensitivity minus this one, in percentage points (0 for the
            unshifted split).
    """

    name: str
    shift: CxrShift
    point: OperatingPoint
    nodules: Proportion
    drop_points: float

    @property
    def within_limit(self) -> bool:
        return self.drop_points <= MAX_DROP_POINTS


def shifted_sensitivity(
    model_uri: str | Path,
    work_dir: Path,
    *,
    n: int,
    seed: int,
    kind: str = "cxr",
    shifts: dict[str, CxrShift] | None = None,
    intra_op_threads: int | None = 1,
    on_shift: Callable[[str], None] | None = None,
) -> list[ShiftResult]:
    """Score the held-out split of a version-2 set under each shift.

    Args:
        model_uri: a calibrated model (bundle folder or registry URI).
        work_dir: where the shifted sets are written (one folder per shift).
        n: size of the whole set; its ``test`` split (15 %) is written and scored.
        seed: the set's seed.
        kind: ``cxr`` (radiographs) or ``ldct`` (low-dose CT), as ``datasets synth``.
        shifts: name -> shift; :data:`STANDARD_SHIFTS` by default. The first is the
            reference the drops are measured from (it should be :data:`NO_SHIFT`).
        intra_op_threads: ONNX Runtime threads.
        on_shift: called with each shift's name before it runs.

    Raises:
        ValueError: if the model's thresholds are not calibrated, or it does not read ``kind``.
    """
    if kind not in KIND_DIMS:
        raise ValueError(f"kind must be one of {', '.join(KIND_DIMS)}, got {kind!r}")
    model = registry.resolve(str(model_uri))
    if model.spec.spatial_dims != KIND_DIMS[kind]:
        raise ValueError(
            f"{model.label} is a {model.spec.spatial_dims}D model; {kind} images are "
            f"{KIND_DIMS[kind]}D"
        )
    thresholds = model.spec.thresholds
    if not thresholds.calibrated:
        raise ValueError(f"{model.label} has no calibrated thresholds: run calibrate first")
    shifts = shifts or STANDARD_SHIFTS
    results: list[ShiftResult] = []
    reference: float | None = None
    for number, (name, shift) in enumerate(shifts.items()):
        if on_shift is not None:
            on_shift(name)
        datalist = run_synth(
            kind,
            n,
            seed,
            work_dir / f"shift_{number}",
            generator_version=2,
            shift=shift,
            only_splits=["test"],
        )
        entries = load_datalist(datalist, "test", box_mode=CORNER_MODE[KIND_DIMS[kind]])
        split = predict_split(model.bundle_dir, entries, intra_op_threads=intra_op_threads)
        studies = split.studies()
        scores = np.array([thresholds.study_score(s) for s in studies.scores])
        point = operating_point(scores, studies.positive, thresholds.operating)
        found = [
            bool(hit)
            for prediction, target in zip(split.predictions, split.targets, strict=True)
            for hit in boxes_hit(prediction, target.boxes, thresholds)
        ]
        nodules = wilson_interval(sum(found), len(found))
        if reference is None:
            reference = point.sensitivity.value
        results.append(
            ShiftResult(
                name=name,
                shift=shift,
                point=point,
                nodules=nodules,
                drop_points=round(100.0 * (reference - point.sensitivity.value), 1),
            )
        )
        logger.info("%s: study sensitivity %s", name, point.sensitivity)
    return results
