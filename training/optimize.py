"""``oncotriage optimize``: a reduced-precision variant of a model version, accepted on accuracy.

1. Build the variant bundle (:mod:`oncotriage.models.precision` says what each precision is):
   ``int8`` quantizes ``model.onnx`` statically (ONNX Runtime's quantizer, QDQ format, int8
   per-channel weights, uint8 activations), calibrated on network inputs of the training
   split made by the serving pipeline itself (sliding windows included); ``bf16`` and
   ``fp32`` keep the file.
2. Evaluate the base (ONNX Runtime fp32, the reference the thresholds were calibrated with)
   and the variant (OpenVINO at the variant's precision, as the service runs it) through
   :class:`~oncotriage.models.pipeline.DetectionPipeline` on the validation split, with
   :func:`oncotriage.training.evaluate.score_split` (FROC/CPM, study sensitivity at the base's
   operating threshold).
3. Judge (:func:`oncotriage.models.precision.judge`), write the figures and the verdict into the
   variant's ``model_spec.json``, and register an accepted variant as a new version of the
   base's model, tagged ``oncotriage.base_version``, ``oncotriage.precision`` and
   ``oncotriage.accepted``. A refused variant is never registered.

A precision this CPU cannot run natively is not evaluated at all (OpenVINO would quietly
compute bf16 in fp32 and the gate would measure nothing): :class:`PrecisionNotRunnableError`.
No torch.
"""

from __future__ import annotations

import logging
import platform
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oncotriage.datasets.datalist import CORNER_MODE, DatalistEntry, load_datalist
from oncotriage.datasets.datalist import load_entry_image as _load_entry_image
from oncotriage.models import registry
from oncotriage.models.precision import (
    ACCEPTED_TAG,
    BASE_VERSION_TAG,
    PRECISION_TAG,
    AccuracyGate,
    Precision,
    PrecisionVariant,
    judge,
)
from oncotriage.models.spec import MODEL_FILENAME, SPEC_FILENAME, ModelSpec
from oncotriage.training.evaluate import EvaluationReport, predict_split, score_split
from oncotriage.training.tracking import finite_metrics

__all__ = [
    "OptimizeReport",
    "PrecisionNotRunnableError",
    "calibration_batches",
    "optimize_model",
    "quantize_int8",
]

logger = logging.getLogger(__name__)


class PrecisionNotRunnableError(RuntimeError):
    """This CPU does not run the precision natively, so its accuracy cannot be measured here."""


@dataclass
class OptimizeReport:
    """What ``oncotriage optimize`` did.

    Attributes:
        base: the base model's label (``NAME/VERSION``).
        precision: the variant's precision.
        bundle_dir: the variant bundle written.
        variant: figures and verdict (also in the bundle's spec).
        registered_version: the new version, when accepted and registered.
        base_report, variant_report: the two evaluations.
    """

    base: str
    precision: str
    bundle_dir: Path
    variant: PrecisionVariant
    registered_version: int | None = None
    base_report: EvaluationReport | None = None
    variant_report: EvaluationReport | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.variant.accepted


class _RecordingRunner:
    """Passes batches to a runner and keeps a copy of each (the inputs int8 calibrates on)."""

    def __init__(self, runner: object, batches: list[np.ndarray], limit: int) -> None:
        self.runner = runner
        self.input_name: str = runner.input_name  # type: ignore[attr-defined]
        self.output_names: list[str] = runner.output_names  # type: ignore[attr-defined]
        self.batches = batches
        self.limit = limit

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        if len(self.batches) < self.limit:
            self.batches.append(np.array(batch, dtype=np.float32, copy=True))
        return self.runner(batch)  # type: ignore[operator]


def _spread(entries: Sequence[DatalistEntry], count: int) -> list[DatalistEntry]:
    """``count`` entries evenly spread over ``entries`` (all when fewer), in a fixed order."""
    if count >= len(entries):
        return list(entries)
    picks = np.linspace(0, len(entries) - 1, count).round().astype(int)
    return [entries[i] for i in sorted(set(picks.tolist()))]


def calibration_batches(
    bundle_dir: Path,
    entries: Sequence[DatalistEntry],
    *,
    images: int = 32,
    max_batches: int = 96,
    threads: int | None = None,
) -> list[np.ndarray]:
    """Network inputs of up to ``images`` training images, as the serving pipeline makes them
    (preprocessing, padding, sliding windows), at most ``max_batches`` of them."""
    from oncotriage.models.pipeline import DetectionPipeline, OrtRunner
    from oncotriage.models.spec import ModelBundle

    bundle = ModelBundle.load(bundle_dir)
    batches: list[np.ndarray] = []
    recorder = _RecordingRunner(
        OrtRunner(bundle.onnx_path, intra_op_threads=threads), batches, max_batches
    )
    pipeline = DetectionPipeline(bundle.spec, recorder)
    for entry in _spread(entries, images):
        if len(batches) >= max_batches:
            break
        pipeline.run_network(pipeline.prepare(_load_entry_image(entry)))
    if not batches:
        raise ValueError("no calibration inputs: the calibration split is empty")
    return batches


def output_convolutions(onnx_path: Path) -> list[str]:
    """The convolutions that make the network's outputs (the heads' last layers): walking back
    from every graph output to the first ``Conv``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    found: list[str] = []
    for output in graph.output:
        stack, seen = [output.name], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                if node.name not in found:
                    found.append(node.name)
                continue
            stack.extend(node.input)
    return found


def quantize_int8(
    source: Path, target: Path, batches: Sequence[np.ndarray], input_name: str
) -> str:
    """Static int8 quantization of an ONNX detector (QDQ, per-channel int8 weights, uint8
    activations, min-max calibration on ``batches``); the convolutions that make the outputs
    (class logits and box regressions) stay fp32. Returns the method in words."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        kept = output_convolutions(prepared)
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=kept,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    import onnxruntime

    return (
        f"ONNX Runtime {onnxruntime.__version__} quantize_static: QDQ, convolutions except the "
        f"{len(kept)} output layers, int8 per-channel weights, uint8 activations, min-max "
        "calibration"
    )


def _describe_split(datalist: Path, split: str, entries: Sequence[DatalistEntry]) -> str:
    from oncotriage.training.data import study_id

    studies = len({study_id(e) for e in entries})
    return f"{split} split of {Path(datalist).name}: {len(entries)} images, {studies} studies"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def optimize_model(
    uri: str,
    precision: Precision,
    datalist: Path,
    *,
    out: Path | None = None,
    calibration_split: str = "training",
    calibration_images: int = 32,
    evaluation_split: str = "validation",
    gate: AccuracyGate | None = None,
    register: bool = True,
    tracking_uri: str | None = None,
    threads: int | None = None,
    iou_threshold: float = 0.1,
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> OptimizeReport:
    """Build, evaluate, judge and (when accepted) register a ``precision`` variant of ``uri``.

    Args:
        uri: the base model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or a folder).
        precision: ``fp32``, ``bf16`` or ``int8``.
        datalist: detection datalist with the calibration and evaluation splits.
        out: variant bundle folder (default ``<data dir>/models/<name>-v<version>-<precision>``).
        calibration_split, calibration_images: int8 calibration data.
        evaluation_split: split both models are evaluated on.
        gate: accuracy limits (default: CPM -0.01, study sensitivity -1 point).
        register: register an accepted variant (only when the base is a registered version).
        tracking_uri: MLflow store.
        threads: inference threads of both runtimes.
        on_start, on_image: progress (images to run in all; one done).

    Raises:
        PrecisionNotRunnableError: this CPU does not run ``precision`` natively.
        ValueError: the base is not fp32, not calibrated, or a split is empty.
    """
    from oncotriage.models.openvino_runner import OpenVinoRunner, openvino_version
    from oncotriage.models.pipeline import DetectionPipeline

    gate = gate or AccuracyGate()
    base = registry.resolve(uri, tracking_uri=tracking_uri)
    if base.spec.precision != "fp32" or base.spec.variant is not None:
        raise ValueError(
            f"{base.label} is already a {base.spec.precision} variant; optimize its fp32 base"
        )
    if not base.spec.thresholds.calibrated:
        raise ValueError(
            f"{base.label} has no calibrated operating threshold; run oncotriage calibrate first"
        )
    box_mode = CORNER_MODE[base.spec.spatial_dims]
    evaluation = load_datalist(datalist, evaluation_split, box_mode=box_mode)
    if not evaluation:
        raise ValueError(f"{datalist} split {evaluation_split!r} is empty")
    version_part = f"v{base.version}" if base.version is not None else "local"
    target = (
        Path(out)
        if out is not None
        else (registry.data_dir() / "models" / f"{base.name}-{version_part}-{precision}")
    )
    if target.resolve() == base.bundle_dir.resolve():
        raise ValueError("--out must not be the base bundle's own folder")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)

    calibration = ""
    if precision == "int8":
        training = load_datalist(datalist, calibration_split, box_mode=box_mode)
        if not training:
            raise ValueError(f"{datalist} split {calibration_split!r} is empty")
        batches = calibration_batches(
            base.bundle_dir, training, images=calibration_images, threads=threads
        )
        method = quantize_int8(
            base.onnx_path, target / MODEL_FILENAME, batches, base.spec.input_name
        )
        used = min(calibration_images, len(training))
        calibration = (
            f"{len(batches)} network inputs from {used} images of the {calibration_split} "
            f"split of {Path(datalist).name}"
        )
    else:
        shutil.copy2(base.onnx_path, target / MODEL_FILENAME)
        method = (
            f"OpenVINO {openvino_version()} inference precision hint "
            f"{'bf16' if precision == 'bf16' else 'f32'}; model.onnx unchanged"
        )

    runner = OpenVinoRunner(target / MODEL_FILENAME, threads=threads, precision=precision)
    runs_at = runner.runs_at()
    if runs_at != precision:
        shutil.rmtree(target)
        raise PrecisionNotRunnableError(
            f"this CPU ({_cpu_model()}) runs the {precision} variant at {runs_at} "
            f"(convolutions: {runner.convolution_precisions()}), so its accuracy cannot be "
            f"measured here; run oncotriage optimize on a CPU that supports {precision}"
        )

    if on_start is not None:
        on_start(2 * len(evaluation))
    done = [0]

    def advance(_: int) -> None:
        done[0] += 1
        if on_image is not None:
            on_image(done[0])

    reports: list[EvaluationReport] = []
    for label, pipeline in (
        ("base", DetectionPipeline.from_bundle(base.bundle_dir, intra_op_threads=threads)),
        ("variant", DetectionPipeline(base.spec, runner)),
    ):
        predictions = predict_split(
            base.bundle_dir, evaluation, pipeline=pipeline, on_image=advance
        )
        reports.append(
            score_split(
                base.spec,
                predictions,
                iou_threshold=iou_threshold,
                model=f"{base.label} {label}",
                uri=str(uri),
                split=evaluation_split,
                datalist=Path(datalist),
            )
        )
    base_flat = finite_metrics(reports[0].flat_metrics())
    variant_flat = finite_metrics(reports[1].flat_metrics())
    figures, refusals = judge(base_flat, variant_flat, gate)

    variant = PrecisionVariant(
        precision=precision,
        base=base.label if base.version is not None else str(base.bundle_dir),
        base_version=str(base.version) if base.version is not None else None,
        method=method,
        calibration=calibration,
        evaluated_on=(
            _describe_split(datalist, evaluation_split, evaluation)
            + "; base: ONNX Runtime fp32, variant: OpenVINO, both through DetectionPipeline"
        ),
        runtime=f"OpenVINO {openvino_version()} on {_cpu_model()}, convolutions at {runs_at}",
        figures=figures,
        gate=gate,
        accepted=not refusals,
        refusals=refusals,
    )
    spec: ModelSpec = base.spec.model_copy(
        update={
            "precision": precision,
            "variant": variant,
            "description": f"{base.spec.description} [{precision} variant of {base.label}]",
            "metrics": {f"{evaluation_split}_{k}": v for k, v in variant_flat.items()},
        }
    )
    spec = ModelSpec.model_validate(spec.model_dump())
    spec.save(target)
    report = OptimizeReport(
        base=base.label,
        precision=precision,
        bundle_dir=target,
        variant=variant,
        base_report=reports[0],
        variant_report=reports[1],
    )
    if variant.accepted and register:
        if base.version is None:
            report.notes.append(
                "not registered: the base is a bundle folder, not a registered version "
                "(register the base, then optimize models:/NAME/VERSION)"
            )
        else:
            report.registered_version = registry.register_bundle(
                target,
                base.name,
                tracking_uri=tracking_uri,
                run_id=base.run_id,
                tags={
                    BASE_VERSION_TAG: str(base.version),
                    PRECISION_TAG: precision,
                    ACCEPTED_TAG: "true",
                },
                description=f"{precision} variant of version {base.version}: {method}",
            )
    logger.info(
        "%s variant of %s %s (%s)",
        precision,
        base.label,
        "accepted" if variant.accepted else "refused",
        target / SPEC_FILENAME,
    )
    return report
