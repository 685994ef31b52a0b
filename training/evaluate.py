"""``oncotriage evaluate``: a model version on a datalist split, through the serving pipeline.

The model is resolved as the service resolves it (:func:`oncotriage.models.registry.resolve`)
and run by :class:`oncotriage.models.pipeline.DetectionPipeline` (ONNX Runtime + numpy pre-
and post-processing), so the numbers describe what serving will do. Boxes are compared in
each source image's index space. Reported: FROC sensitivities at 1/8 ... 8 false positives
per image and their mean (CPM), AP/AR at IoU 0.1 and mAP/mAR over IoU 0.1-0.5 (MONAI's
``COCOMetric``), the study-level ROC AUC of the suspicion score, and, when the model's
thresholds are calibrated, study-level sensitivity and specificity at its operating and
urgent thresholds with Wilson 95 % intervals.

Results go to an MLflow run (experiment ``oncotriage-evaluation``) with a FROC plot; on a
registered version they are also recorded as ``metric.<split>_<name>`` tags, and in a
local bundle folder they are written into ``model_spec.json``.

No torch: evaluation runs wherever the serving install runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oncotriage.datasets.datalist import CORNER_MODE, DatalistEntry, boxes_to_index, load_datalist
from oncotriage.datasets.datalist import load_entry_image as _load_entry_image
from oncotriage.models import registry
from oncotriage.training.metrics import (
    DetectionMetrics,
    ImageDetections,
    ImageTargets,
    StudyScores,
    evaluate_detections,
    study_scores,
)
from oncotriage.training.operating_points import OperatingPoint, operating_point
from oncotriage.training.subgroups import (
    SUBGROUP_KEYS,
    SubgroupRow,
    distractor_rows,
    subgroup_rows,
)
from oncotriage.training.tracking import finite_metrics, log_metrics, log_params

if TYPE_CHECKING:
    from oncotriage.models.pipeline import DetectionPipeline
    from oncotriage.models.spec import ModelSpec

logger = logging.getLogger(__name__)

EVALUATION_EXPERIMENT = "oncotriage-evaluation"


@dataclass
class SplitPredictions:
    """A model's findings on every image of a split, with the ground truth.

    Attributes:
        entries: the datalist entries, in order.
        predictions: findings per image (source index space, ``xyxy``/``xyzxyz``).
        targets: ground truth per image (same space).
        study_ids: study key per image.
        distractors: per image, the benign look-alikes' boxes (``distractor_box`` of
            version-2 synthetic entries) in the same space; empty when there are none.
    """

    entries: list[DatalistEntry]
    predictions: list[ImageDetections]
    targets: list[ImageTargets]
    study_ids: list[str]
    distractors: list[np.ndarray] = field(default_factory=list)

    def studies(self) -> StudyScores:
        return study_scores(self.predictions, self.targets, self.study_ids)


def predict_split(
    bundle_dir: Path,
    entries: Sequence[DatalistEntry],
    *,
    intra_op_threads: int | None = None,
    on_image: Callable[[int], None] | None = None,
    pipeline: DetectionPipeline | None = None,
) -> SplitPredictions:
    """Run a bundle's ONNX pipeline on datalist entries.

    ``pipeline`` runs them instead of ONNX Runtime over ``bundle_dir`` (e.g. OpenVINO at a
    variant's precision, as the service would run it).

    Raises:
        UnsupportedImageError: if an image cannot be read (its path is in the message).
    """
    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.models.pipeline import DetectionPipeline
    from oncotriage.training.data import study_id

    if pipeline is None:
        pipeline = DetectionPipeline.from_bundle(bundle_dir, intra_op_threads=intra_op_threads)
    dims = pipeline.spec.spatial_dims
    predictions, targets, studies, distractors = [], [], [], []
    for index, entry in enumerate(entries):
        try:
            volume = _load_entry_image(entry)
        except UnsupportedImageError as exc:
            raise UnsupportedImageError(f"{entry.image}: {exc}", code=exc.code) from exc
        findings = pipeline.detect(volume)
        predictions.append(
            ImageDetections(
                boxes=np.array([f.box_index for f in findings], dtype=np.float64).reshape(
                    -1, 2 * dims
                ),
                scores=np.array([f.score for f in findings], dtype=np.float64),
                labels=np.array([f.label for f in findings], dtype=np.int64),
            )
        )
        targets.append(ImageTargets(boxes_to_index(entry, volume), np.asarray(entry.labels)))
        studies.append(study_id(entry))
        distractors.append(_distractor_boxes(entry, volume))
        if on_image is not None:
            on_image(index)
    return SplitPredictions(list(entries), predictions, targets, studies, distractors)


def _distractor_boxes(entry: DatalistEntry, volume: Any) -> np.ndarray:
    """The entry's ``distractor_box`` (datalist mode and coordinates) in index space."""
    dims = entry.spatial_dims
    raw = np.asarray(entry.meta.get("distractor_box") or [], dtype=np.float64)
    if raw.size == 0:
        return np.zeros((0, 2 * dims))
    boxes = raw.reshape(-1, 2 * dims)  # load_datalist gave them in the entry's box mode
    decoy = replace(entry, boxes=boxes, labels=np.zeros(len(boxes), np.int64))
    return boxes_to_index(decoy, volume)


@dataclass
class EvaluationReport:
    """What ``oncotriage evaluate`` found.

    Attributes:
        model: ``NAME/VERSION`` or the bundle's name.
        uri: the model URI evaluated.
        split: datalist split.
        datalist: datalist path.
        metrics: detection metrics.
        operating, urgent: study-level performance at the model's thresholds (``None``
            when its thresholds are not calibrated).
        run_id: MLflow run holding the results (``None`` if not logged).
        dataset_fingerprint: fingerprint of the datalist and its images.
    """

    model: str
    uri: str
    split: str
    datalist: Path
    metrics: DetectionMetrics
    operating: OperatingPoint | None = None
    urgent: OperatingPoint | None = None
    run_id: str | None = None
    dataset_fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    subgroups: dict[str, list[SubgroupRow]] = field(default_factory=dict)

    def flat_metrics(self) -> dict[str, float]:
        """Detection metrics plus study sensitivity/specificity at the thresholds."""
        out = dict(self.metrics.as_dict())
        for name, point in (("operating", self.operating), ("urgent", self.urgent)):
            if point is None:
                continue
            out[f"{name}_threshold"] = point.threshold
            for kind, prop in (
                ("sensitivity", point.sensitivity),
                ("specificity", point.specificity),
            ):
                out[f"{name}_{kind}"] = prop.value
                out[f"{name}_{kind}_ci_low"] = prop.low
                out[f"{name}_{kind}_ci_high"] = prop.high
        out["num_images"] = float(self.metrics.froc.num_images)
        out["num_lesions"] = float(self.metrics.froc.num_lesions)
        out["num_studies"] = float(self.metrics.num_studies)
        out["num_positive_studies"] = float(self.metrics.num_positive_studies)
        return out


def _predictions_json(split_predictions: SplitPredictions) -> list[dict[str, Any]]:
    return [
        {
            "image": str(entry.image),
            "study": sid,
            "boxes": pred.boxes.round(3).tolist(),
            "scores": pred.scores.round(5).tolist(),
            "labels": pred.labels.tolist(),
            "gt_boxes": gt.boxes.round(3).tolist(),
            "gt_labels": gt.labels.tolist(),
        }
        for entry, sid, pred, gt in zip(
            split_predictions.entries,
            split_predictions.study_ids,
            split_predictions.predictions,
            split_predictions.targets,
            strict=True,
        )
    ]


def score_split(
    spec: ModelSpec,
    split_predictions: SplitPredictions,
    *,
    iou_threshold: float,
    model: str,
    uri: str,
    split: str,
    datalist: Path,
) -> EvaluationReport:
    """Detection metrics of predictions on a split and, when ``spec``'s thresholds are
    calibrated, study sensitivity/specificity at them (on the calibrated scale, as serving)."""
    metrics = evaluate_detections(
        split_predictions.predictions,
        split_predictions.targets,
        study_ids=split_predictions.study_ids,
        iou_threshold=iou_threshold,
        num_classes=spec.num_classes,
    )
    report = EvaluationReport(
        model=model, uri=uri, split=split, datalist=Path(datalist), metrics=metrics
    )
    thresholds = spec.thresholds
    if thresholds.calibrated:
        studies = split_predictions.studies()
        scores = np.asarray(studies.scores, dtype=np.float64)
        if thresholds.score_calibration is not None:
            # the thresholds are on the calibrated scale, as in serving
            scores = np.asarray(thresholds.score_calibration.apply(scores), dtype=np.float64)
        report.operating = operating_point(scores, studies.positive, thresholds.operating)
        report.urgent = operating_point(scores, studies.positive, thresholds.urgent)
    return report


def evaluate_model(
    uri: str,
    datalist: Path,
    *,
    split: str = "test",
    tracking_uri: str | None = None,
    log_to_mlflow: bool = True,
    record: bool = True,
    iou_threshold: float = 0.1,
    intra_op_threads: int | None = None,
    on_image: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    by: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate a model on one split of a datalist.

    Args:
        uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/ID/bundle`` or a
            bundle folder.
        datalist: detection datalist JSON.
        split: split to evaluate (``test`` by default).
        tracking_uri: MLflow store.
        log_to_mlflow: log an evaluation run with metrics and the FROC plot.
        record: store the metrics with the model (version tags, or a local spec file).
        iou_threshold: IoU for a hit (0.1, as MONAI's LUNA16 evaluation).
        intra_op_threads: ONNX Runtime threads.
        on_start, on_image: progress callbacks (number of images; index of each done).
        by: subgroup breakdowns at the operating threshold (``size``, ``type``, ``vendor``,
            ``dose``, ...; see :mod:`oncotriage.training.subgroups`), in
            ``report.subgroups``; a split with benign distractors also gets ``distractor``.
            Needs calibrated thresholds.
    """
    unknown = [key for key in by if key not in SUBGROUP_KEYS]
    if unknown:
        raise ValueError(f"unknown subgroup {', '.join(unknown)}; use {', '.join(SUBGROUP_KEYS)}")
    from oncotriage.training.data import dataset_fingerprint

    model = registry.resolve(uri, tracking_uri=tracking_uri)
    entries = load_datalist(datalist, split, box_mode=CORNER_MODE[model.spec.spatial_dims])
    if not entries:
        raise ValueError(f"{datalist} split {split!r} is empty")
    if on_start is not None:
        on_start(len(entries))
    split_predictions = predict_split(
        model.bundle_dir, entries, intra_op_threads=intra_op_threads, on_image=on_image
    )
    report = score_split(
        model.spec,
        split_predictions,
        iou_threshold=iou_threshold,
        model=model.label,
        uri=str(uri),
        split=split,
        datalist=Path(datalist),
    )
    report.dataset_fingerprint = dataset_fingerprint(Path(datalist), [split])
    thresholds = model.spec.thresholds
    if thresholds.calibrated:
        for key in by:
            report.subgroups[key] = subgroup_rows(
                split_predictions, thresholds, key, iou_threshold=iou_threshold
            )
        if by and any(len(boxes) for boxes in split_predictions.distractors):
            report.subgroups["distractor"] = distractor_rows(
                split_predictions, thresholds, iou_threshold=iou_threshold
            )
    elif by:
        raise ValueError("subgroups are reported at calibrated thresholds: run calibrate first")
    flat = finite_metrics(report.flat_metrics())
    if log_to_mlflow:
        report.run_id = _log_evaluation(report, model, split_predictions, flat, tracking_uri)
    if record:
        _record(model, {f"{split}_{k}": v for k, v in flat.items()}, tracking_uri)
    return report


def _log_evaluation(
    report: EvaluationReport,
    model: registry.ResolvedModel,
    split_predictions: SplitPredictions,
    flat: dict[str, float],
    tracking_uri: str | None,
) -> str:
    from oncotriage.training.plots import plot_froc

    store = tracking_uri or registry.default_tracking_uri()
    client = registry.get_client(store)
    experiment_id = registry.get_or_create_experiment(EVALUATION_EXPERIMENT, store)
    tags = {
        "oncotriage.model": model.label,
        "oncotriage.model_uri": report.uri,
        "oncotriage.split": report.split,
        "oncotriage.dataset_fingerprint": report.dataset_fingerprint,
    }
    if model.run_id:
        tags["oncotriage.training_run_id"] = str(model.run_id)
    run = client.create_run(
        experiment_id, run_name=f"evaluate {model.label} on {report.split}", tags=tags
    )
    run_id = str(run.info.run_id)
    try:
        log_params(
            client,
            run_id,
            {
                "model": model.label,
                "model_uri": report.uri,
                "model_version": str(model.version),
                "split": report.split,
                "datalist": str(report.datalist),
                "iou_threshold": str(report.metrics.froc.iou_threshold),
            },
        )
        log_metrics(client, run_id, flat)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            plot_froc(
                report.metrics.froc,
                folder / f"froc_{report.split}.png",
                title=f"{model.label} on {report.split}",
            )
            (folder / f"metrics_{report.split}.json").write_text(
                json.dumps(flat, indent=2, sort_keys=True)
            )
            (folder / f"predictions_{report.split}.json").write_text(
                json.dumps(_predictions_json(split_predictions))
            )
            client.log_artifacts(run_id, str(folder), artifact_path="evaluation")
    finally:
        client.set_terminated(run_id)
    return run_id


def _record(
    model: registry.ResolvedModel, metrics: dict[str, float], tracking_uri: str | None
) -> None:
    if model.version is not None:
        registry.record_metrics(model.name, model.version, metrics, tracking_uri=tracking_uri)
    elif registry.parse_model_uri(model.uri).kind == "local":
        spec = registry.load_spec(model.bundle_dir)
        spec = spec.model_copy(update={"metrics": {**spec.metrics, **metrics}})
        registry.save_spec(model.bundle_dir, spec)
        logger.info("metrics written to %s", model.bundle_dir / registry.SPEC_FILENAME)
