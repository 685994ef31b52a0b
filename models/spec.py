"""What travels with an exported model: ``model_spec.json`` beside ``model.onnx``.

A *model bundle* is a folder holding both files. The spec carries everything the numpy
pipeline needs to turn an image into findings (input layout, preprocessing, anchors,
post-processing, sliding window) plus what triage and the registry need (calibrated
thresholds, metrics, the dataset and training run it came from, intended use).
No torch, no MONAI.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from oncotriage.models.config import (
    DetectorConfig,
    PostprocessConfig,
    PreprocessingConfig,
    SlidingWindowConfig,
)
from oncotriage.models.fingerprint import InputFingerprint
from oncotriage.models.intended import IntendedInputs
from oncotriage.models.precision import Precision, PrecisionVariant

__all__ = [
    "MODEL_FILENAME",
    "SPEC_FILENAME",
    "AnchorSpec",
    "ModelBundle",
    "ModelSpec",
    "ScoreCalibration",
    "Thresholds",
    "UNTRAINED_INTENDED_USE",
]

MODEL_FILENAME = "model.onnx"
SPEC_FILENAME = "model_spec.json"
UNTRAINED_INTENDED_USE = (
    "NOT A MODEL: randomly initialised weights exported for plumbing and tests. "
    "Its scores mean nothing. Not for clinical use."
)


class ScoreCalibration(BaseModel):
    """Maps the detector's raw study score to a calibrated probability (numpy only).

    ``calibrated = sigmoid(slope * logit(raw) + intercept)``: Platt scaling fits both
    parameters, temperature scaling only ``slope = 1 / T`` (``intercept = 0``). Fitted on
    the validation split by ``oncotriage calibrate``. The map is increasing (``slope > 0``),
    so it keeps the order of studies and of the findings within one.

    Attributes:
        method: ``platt`` or ``temperature``.
        slope, intercept: the logistic map's parameters.
        fitted_on: what it was fitted on (split and number of studies), for the record.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["platt", "temperature"]
    slope: float = Field(gt=0)
    intercept: float = 0.0
    fitted_on: str = ""

    @model_validator(mode="after")
    def _finite(self) -> ScoreCalibration:
        if not (math.isfinite(self.slope) and math.isfinite(self.intercept)):
            raise ValueError("score calibration parameters must be finite")
        if self.method == "temperature" and self.intercept != 0.0:
            raise ValueError("temperature scaling has no intercept")
        return self

    def apply(self, raw: Any) -> Any:
        """Calibrated score(s) for raw score(s) in [0, 1] (a float for a float)."""
        values = np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            logit = np.log(values) - np.log1p(-values)
        z = self.slope * logit + self.intercept
        out = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, stable for +-inf
        if np.ndim(raw) == 0:
            return float(out)
        return out


class Thresholds(BaseModel):
    """Score thresholds that triage applies to this model's suspicion scores.

    Attributes:
        operating: a study scoring at least this is ``suspicious`` (chosen on validation data
            for ``target_sensitivity``).
        urgent: a study scoring at least this is ``urgent`` (high-specificity point).
        target_sensitivity: sensitivity the operating threshold was chosen for.
        calibrated: ``False`` until set from validation data; uncalibrated thresholds are
            placeholders.
        score_calibration: map from the raw study score to the calibrated one; when set,
            ``operating`` and ``urgent`` are on the calibrated scale and triage compares the
            calibrated score with them (``None``, as in older specs: raw scores).
    """

    model_config = ConfigDict(extra="forbid")

    operating: float = Field(ge=0, le=1)
    urgent: float = Field(ge=0, le=1)
    target_sensitivity: float = Field(default=0.95, gt=0, le=1)
    calibrated: bool = False
    score_calibration: ScoreCalibration | None = None

    def study_score(self, raw: float) -> float:
        """The score that triage compares with the thresholds, for a raw study score."""
        if self.score_calibration is None:
            return float(raw)
        return float(self.score_calibration.apply(float(raw)))

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.urgent < self.operating:
            raise ValueError(
                f"urgent threshold {self.urgent} is below the operating threshold {self.operating}"
            )
        return self


class AnchorSpec(BaseModel):
    """Anchors of MONAI ``AnchorGeneratorWithAnchorShape`` (``indexing="ij"``)."""

    model_config = ConfigDict(extra="forbid")

    base_anchor_shapes: list[list[float]]
    feature_map_scales: list[float]
    box_coder_weights: list[float]


class ModelSpec(BaseModel):
    """Everything about an exported detector except its weights.

    Attributes:
        name, version: registry name and version (``version`` is a string, e.g. ``"3"``).
        spatial_dims: 2 or 3.
        in_channels, num_classes, class_names: network input channels and classes.
        input_name: ONNX input name.
        input_shape: ONNX input shape ``[-1, C, *S]``; ``-1`` marks dynamic axes (batch always).
        output_names: ONNX outputs, ``cls_logits_<level>`` for every level then
            ``box_regression_<level>``; maps are ``(B, A*K, *S_l)`` and ``(B, A*2D, *S_l)``.
        size_divisible: network input sizes must be multiples of these.
        preprocessing: image -> network input (see :mod:`oncotriage.models.preprocess`).
        anchors: anchor shapes, scales and box-coder weights.
        postprocess: score threshold, top-k, NMS, detections per image.
        sliding_window: window inference for large volumes (``None``: always one pass).
        thresholds: triage thresholds.
        metrics: evaluation results (e.g. ``froc_sensitivity_at_1fp``, ``map``).
        dataset_fingerprint: identifier of the training data (hash of its datalist).
        training_run_id: MLflow run that produced the weights.
        intended_use: who may use it for what; synthetic-data models say so.
        intended_inputs: the images it reads (modality, body part, view, dimensionality,
            spacing, slices); ``None`` in older specs, read as :attr:`reads` says.
        input_fingerprint: statistics of the training images
            (:mod:`oncotriage.models.fingerprint`), the reference of the service's input
            drift checks; ``None`` when never computed (those checks are then skipped).
        created_at: export time (UTC ISO 8601).
        export: how the ONNX file was produced (opset, versions, optimisation, checks).
        precision: the arithmetic it is made to run at: ``fp32``, or ``bf16``/``int8`` for a
            reduced-precision variant (:mod:`oncotriage.models.precision`).
        variant: for a variant, its base, how it was built and how it compared with the base
            (``None`` for a model trained and exported as such).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str = "0"
    description: str = ""
    spatial_dims: int = Field(ge=2, le=3)
    in_channels: int = 1
    num_classes: int = 1
    class_names: list[str] = Field(default_factory=lambda: ["nodule"])
    input_name: str = "image"
    input_shape: list[int]
    output_names: list[str]
    num_anchors: int
    size_divisible: list[int]
    preprocessing: PreprocessingConfig
    anchors: AnchorSpec
    postprocess: PostprocessConfig
    sliding_window: SlidingWindowConfig | None = None
    thresholds: Thresholds
    metrics: dict[str, float] = Field(default_factory=dict)
    dataset_fingerprint: str | None = None
    training_run_id: str | None = None
    intended_use: str = UNTRAINED_INTENDED_USE
    intended_inputs: IntendedInputs | None = None
    input_fingerprint: InputFingerprint | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    export: dict[str, Any] = Field(default_factory=dict)
    precision: Precision = "fp32"
    variant: PrecisionVariant | None = None

    @property
    def reads(self) -> IntendedInputs:
        """The images this model is made for (the dimensionality's default when unstated)."""
        return self.intended_inputs or IntendedInputs.default_for(self.spatial_dims)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if len(self.input_shape) != self.spatial_dims + 2:
            raise ValueError(
                f"input_shape {self.input_shape} must be [batch, channels, *spatial] for "
                f"{self.spatial_dims}D"
            )
        if len(self.output_names) % 2 or not self.output_names:
            raise ValueError("output_names must list every level's cls_logits then box_regression")
        if len(self.anchors.feature_map_scales) != self.num_levels:
            raise ValueError(
                f"{len(self.anchors.feature_map_scales)} anchor scales for {self.num_levels} levels"
            )
        if self.intended_inputs and self.intended_inputs.spatial_dims != self.spatial_dims:
            raise ValueError(
                f"intended_inputs are {self.intended_inputs.spatial_dims}D for a "
                f"{self.spatial_dims}D model"
            )
        if self.variant is not None and self.variant.precision != self.precision:
            raise ValueError(
                f"a {self.precision} spec cannot describe a {self.variant.precision} variant"
            )
        for key, value in self.metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"metric {key} is not finite: {value}")
        return self

    @property
    def num_levels(self) -> int:
        return len(self.output_names) // 2

    @property
    def dynamic_spatial(self) -> bool:
        return any(s < 0 for s in self.input_shape[2:])

    @classmethod
    def from_config(
        cls,
        cfg: DetectorConfig,
        *,
        version: str = "0",
        name: str | None = None,
        thresholds: Thresholds | None = None,
        **fields: Any,
    ) -> ModelSpec:
        """Spec for a network built from ``cfg`` (uncalibrated thresholds unless given)."""
        if cfg.spatial_dims == 2 or not cfg.dynamic_spatial:
            if cfg.preprocessing.input_size is not None:
                spatial = list(cfg.preprocessing.input_size)
            elif cfg.inference.sliding_window is not None:
                spatial = list(cfg.inference.sliding_window.roi_size)
            else:
                raise ValueError(
                    "a fixed-size export needs preprocessing.input_size or a sliding window"
                )
        else:
            spatial = [-1] * cfg.spatial_dims
        if thresholds is None:
            thresholds = Thresholds(
                operating=0.5, urgent=0.9, target_sensitivity=0.95, calibrated=False
            )
        weights = cfg.box_coder_weights or [1.0] * (2 * cfg.spatial_dims)
        fields.setdefault(
            "intended_inputs",
            cfg.intended_inputs or IntendedInputs.default_for(cfg.spatial_dims),
        )
        return cls(
            name=name or cfg.name,
            version=version,
            description=cfg.description,
            spatial_dims=cfg.spatial_dims,
            in_channels=cfg.in_channels,
            num_classes=cfg.num_classes,
            class_names=list(cfg.class_names),
            input_shape=[-1, cfg.in_channels, *spatial],
            output_names=cfg.output_names(),
            num_anchors=cfg.num_anchors,
            size_divisible=cfg.size_divisible,
            preprocessing=cfg.preprocessing.model_copy(deep=True),
            anchors=AnchorSpec(
                base_anchor_shapes=[list(s) for s in cfg.base_anchor_shapes],
                feature_map_scales=list(cfg.feature_map_scales),
                box_coder_weights=list(weights),
            ),
            postprocess=cfg.postprocess.model_copy(deep=True),
            sliding_window=(
                cfg.inference.sliding_window.model_copy(deep=True)
                if cfg.inference.sliding_window
                else None
            ),
            thresholds=thresholds,
            **fields,
        )

    def save(self, directory: Path) -> Path:
        """Write ``directory/model_spec.json`` (creating the folder) and return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SPEC_FILENAME
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> ModelSpec:
        """Read ``directory/model_spec.json`` (or the file itself if given).

        Raises:
            FileNotFoundError: if there is no spec.
            ValueError: if it is not a valid spec.
        """
        path = Path(directory)
        if path.is_dir():
            path = path / SPEC_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a model bundle folder holds {MODEL_FILENAME} and "
                f"{SPEC_FILENAME} (create one with `oncotriage export`)"
            )
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ModelBundle:
    """A folder with ``model.onnx`` and ``model_spec.json``."""

    directory: Path
    spec: ModelSpec

    @property
    def onnx_path(self) -> Path:
        return self.directory / MODEL_FILENAME

    @property
    def spec_path(self) -> Path:
        return self.directory / SPEC_FILENAME

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        """Open a bundle folder.

        Raises:
            FileNotFoundError: if either file is missing.
        """
        directory = Path(directory)
        spec = ModelSpec.load(directory)
        if not (directory / MODEL_FILENAME).is_file():
            raise FileNotFoundError(
                f"{directory / MODEL_FILENAME} not found beside {SPEC_FILENAME}; "
                "re-export the model"
            )
        return cls(directory=directory, spec=spec)
