"""Detector configuration: one YAML file describes the network, its pre/post-processing and
inference, and carries a training section through untouched for the training code.

Nothing here imports torch or MONAI: the serving path reads the same objects from a
model's ``model_spec.json``.

Shapes and spaces used throughout:

* spatial axes follow :class:`oncotriage.datasets.image.ImageVolume` (``x, y[, z]``);
* lists with one value per spatial axis (``conv1_t_stride``, ``target_spacing``,
  ``input_size``, ``roi_size``) are in that order;
* anchor shapes are ``[w, h]`` / ``[w, h, d]`` in network-input voxels.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from oncotriage.models.intended import IntendedInputs

__all__ = [
    "BackboneConfig",
    "DetectorConfig",
    "ExportConfig",
    "InferenceConfig",
    "IntensityConfig",
    "PostprocessConfig",
    "PreprocessingConfig",
    "SlidingWindowConfig",
    "apply_overrides",
    "load_config",
]

#: Blocks per ResNet stage for each supported depth (MONAI ``resnet10``...``resnet50``).
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class BackboneConfig(_Strict):
    """MONAI ``ResNet`` backbone.

    Attributes:
        kind: only ``resnet``.
        depth: 10, 18, 34 or 50 (MONAI ``resnet10``...``resnet50``).
        conv1_t_size: kernel size of the first convolution, one value per spatial axis.
        conv1_t_stride: stride of the first convolution, one value per spatial axis.
        widen_factor: multiplies the stage widths ``[64, 128, 256, 512]``; below 1 gives a light
            network.
        shortcut_type: MONAI ResNet shortcut (``B`` = 1x1 convolution).
        bias_downsample: bias in the shortcut convolution (MONAI default ``True``).
    """

    kind: Literal["resnet"] = "resnet"
    depth: Literal[10, 18, 34, 50] = 50
    conv1_t_size: list[int]
    conv1_t_stride: list[int]
    widen_factor: float = Field(default=1.0, gt=0)
    shortcut_type: Literal["A", "B"] = "B"
    bias_downsample: bool = True


class IntensityConfig(_Strict):
    """Intensity normalisation, applied after resampling.

    ``mode="range"`` is MONAI ``ScaleIntensityRange``: ``(v - a_min) / (a_max - a_min) *
    (b_max - b_min) + b_min``, then clipped to ``[b_min, b_max]`` if ``clip``. CT uses HU
    ``a_min=-1024, a_max=300``. ``mode="percentile"`` is MONAI ``ScaleIntensityRangePercentiles``
    (``a_min``/``a_max`` become the ``lower``/``upper`` percentiles of each image), useful for
    radiographs whose presentation range varies between sites.
    """

    mode: Literal["range", "percentile"] = "range"
    a_min: float = -1024.0
    a_max: float = 300.0
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = True
    lower: float = Field(default=0.5, ge=0, le=100)
    upper: float = Field(default=99.5, ge=0, le=100)

    @model_validator(mode="after")
    def _check_range(self) -> IntensityConfig:
        if self.mode == "range" and self.a_max <= self.a_min:
            raise ValueError(f"intensity.a_max ({self.a_max}) must exceed a_min ({self.a_min})")
        if self.mode == "percentile" and self.upper <= self.lower:
            raise ValueError(f"intensity.upper ({self.upper}) must exceed lower ({self.lower})")
        return self


class PreprocessingConfig(_Strict):
    """How a source image becomes the network input.

    Attributes:
        orientation: for volumes, reorder/flip the array axes so that they point along these
            anatomical directions (ITK/MONAI axis codes, e.g. ``RAS`` as in MONAI's
            ``lung_nodule_ct_detection`` bundle); ``None`` keeps the array order. Ignored for 2D.
        target_spacing: voxel spacing (mm) of the network input; ``None`` keeps the source
            spacing. For 2D with ``input_size`` this is ignored: the spacing follows from
            fitting the image into ``input_size``.
        input_size: 2D only: the fixed network input ``[X, Y]``. The image is resized keeping
            its physical aspect ratio so that it fits, then zero-padded at the end.
        intensity: intensity normalisation.
        interpolation_order: spline order for resampling (1 = linear, as MONAI ``Spacing``).
        antialias: Gaussian pre-filter before downsampling (sigma ``(factor - 1) / 2`` voxels).
        size_divisible: network input sizes must be multiples of this; derived from the backbone
            (``conv1_t_stride * 2 * 2**max(returned_layers)``, as MONAI's RetinaNet builder) and
            checked if given.
        pad_value: value of padded voxels after normalisation (MONAI pads with 0).
    """

    orientation: str | None = None
    target_spacing: list[float] | None = None
    input_size: list[int] | None = None
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    interpolation_order: int = Field(default=1, ge=0, le=5)
    antialias: bool = True
    size_divisible: list[int] | None = None
    pad_value: float = 0.0

    @model_validator(mode="after")
    def _check_orientation(self) -> PreprocessingConfig:
        if self.orientation is not None:
            codes = self.orientation.upper()
            pairs = [{"L", "R"}, {"P", "A"}, {"S", "I"}]
            used = [next((i for i, p in enumerate(pairs) if c in p), None) for c in codes]
            if None in used or len(set(used)) != len(codes):
                raise ValueError(
                    f"preprocessing.orientation {self.orientation!r} must use one letter of each "
                    "of L/R, P/A, S/I, e.g. 'RAS' or 'LPS'"
                )
            self.orientation = codes
        return self


class PostprocessConfig(_Strict):
    """MONAI ``BoxSelector`` parameters (``RetinaNetDetector.set_box_selector_parameters``).

    Per level: sigmoid, drop scores ``<= score_thresh``, keep the top
    ``topk_candidates_per_level``; per image: clip to the image, class-wise NMS at
    ``nms_thresh`` IoU, keep ``detections_per_img``.
    """

    score_thresh: float = Field(default=0.05, ge=0, le=1)
    topk_candidates_per_level: int = Field(default=1000, gt=0)
    nms_thresh: float = Field(default=0.5, ge=0, le=1)
    detections_per_img: int = Field(default=300, gt=0)
    apply_sigmoid: bool = True


class SlidingWindowConfig(_Strict):
    """MONAI ``SlidingWindowInferer`` parameters (``RetinaNetDetector.set_sliding_window_inferer``).

    As in MONAI's ``lung_nodule_ct_detection`` bundle, the window is used only for inputs with
    at least as many voxels as one window; smaller inputs run in one pass.

    Attributes:
        max_single_pass_voxels: a model with dynamic spatial axes runs inputs of up to this
            many voxels (network space, before padding) in one pass instead of overlapping
            windows (``None``: MONAI's rule alone). Overlapping windows compute the overlap
            twice: a 30 cm chest CT at the light 3D model's spacing (256 x 256 x 128 after
            padding) takes two 256 x 256 x 96 windows, 192 slices of network for 128
            (docs/benchmarks.md, whole CT); and a model trained on patches and calibrated on
            small volumes sees them in one pass.
    """

    roi_size: list[int]
    overlap: float = Field(default=0.25, ge=0, lt=1)
    sw_batch_size: int = Field(default=1, gt=0)
    mode: Literal["constant", "gaussian"] = "constant"
    sigma_scale: float = Field(default=0.125, gt=0)
    padding_mode: Literal["constant", "reflect", "replicate", "circular"] = "constant"
    cval: float = 0.0
    max_single_pass_voxels: int | None = Field(default=None, gt=0)


class InferenceConfig(_Strict):
    sliding_window: SlidingWindowConfig | None = None


class ExportConfig(_Strict):
    """ONNX export options.

    Attributes:
        opset: ONNX opset (>= 17).
        dynamic_spatial: spatial input axes dynamic in the ONNX graph. Default: dynamic for 3D
            (whole volumes of any size, or sliding-window patches), fixed for 2D (``input_size``).
        optimize: ``basic`` saves ONNX Runtime's offline basic graph optimisation (constant
            folding, redundant-node elimination, Conv fusions: results unchanged); ``none`` keeps
            the exported graph.
    """

    opset: int = Field(default=17, ge=17)
    dynamic_spatial: bool | None = None
    optimize: Literal["basic", "none"] = "basic"


class DetectorConfig(_Strict):
    """A RetinaNet detector (MONAI ``RetinaNet`` + ``RetinaNetDetector``) and its processing.

    Attributes:
        name: model name (registry name when registered).
        spatial_dims: 2 (radiographs) or 3 (CT volumes).
        in_channels: network input channels (grayscale images are repeated to fill them).
        num_classes: foreground classes (background excluded).
        class_names: one name per class.
        backbone: the ResNet.
        returned_layers: ResNet stages fed to the FPN (MONAI ``returned_layers``); the FPN adds one
            max-pooled level, so there are ``len(returned_layers) + 1`` output levels.
        fpn_channels: FPN and head width (MONAI fixes 256; smaller values give light variants;
            must be a multiple of 8 for the heads' GroupNorm).
        base_anchor_shapes: anchor shapes in voxels, ``[w, h]`` or ``[w, h, d]``.
        feature_map_scales: one scale per output level; level ``i`` anchors are
            ``feature_map_scales[i] * base_anchor_shapes``.
        box_coder_weights: MONAI ``BoxCoder`` weights, ``2 * spatial_dims`` values.
        preprocessing, postprocess, inference, export: see their classes.
        training: free-form section read by the training code (epochs, patch size, matcher...).
        intended_inputs: the images the model is made for (written into every exported
            spec; the dimensionality's default when absent).
    """

    name: str
    description: str = ""
    spatial_dims: Literal[2, 3]
    in_channels: int = Field(default=1, gt=0)
    num_classes: int = Field(default=1, gt=0)
    class_names: list[str] = Field(default_factory=lambda: ["nodule"])
    backbone: BackboneConfig
    returned_layers: list[int] = Field(default_factory=lambda: [1, 2])
    fpn_channels: int = Field(default=256, gt=0)
    base_anchor_shapes: list[list[float]]
    feature_map_scales: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    box_coder_weights: list[float] | None = None
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    training: dict[str, Any] = Field(default_factory=dict)
    intended_inputs: IntendedInputs | None = None

    @property
    def num_levels(self) -> int:
        """Number of FPN output levels (``len(returned_layers) + 1``)."""
        return len(self.returned_layers) + 1

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.base_anchor_shapes)

    @property
    def size_divisible(self) -> list[int]:
        """Network input sizes must be multiples of these, one per spatial axis."""
        given = self.preprocessing.size_divisible
        return list(given) if given is not None else self.derived_size_divisible()

    def derived_size_divisible(self) -> list[int]:
        """``conv1_t_stride * 2 * 2**max(returned_layers)``, as MONAI's RetinaNet builder."""
        top = max(self.returned_layers)
        return [int(s) * 2 * 2**top for s in self.backbone.conv1_t_stride]

    def output_names(self) -> list[str]:
        """ONNX outputs: ``cls_logits_<level>`` of every level, then ``box_regression_<level>``."""
        levels = range(self.num_levels)
        return [f"cls_logits_{i}" for i in levels] + [f"box_regression_{i}" for i in levels]

    @model_validator(mode="after")
    def _check(self) -> DetectorConfig:
        dims = self.spatial_dims
        per_axis: dict[str, Sequence[Any] | None] = {
            "backbone.conv1_t_size": self.backbone.conv1_t_size,
            "backbone.conv1_t_stride": self.backbone.conv1_t_stride,
            "preprocessing.target_spacing": self.preprocessing.target_spacing,
            "preprocessing.input_size": self.preprocessing.input_size,
        }
        if self.inference.sliding_window is not None:
            per_axis["inference.sliding_window.roi_size"] = self.inference.sliding_window.roi_size
        for key, value in per_axis.items():
            if value is not None and len(value) != dims:
                raise ValueError(f"{key} needs {dims} values (one per spatial axis), got {value}")
        for shape in self.base_anchor_shapes:
            if len(shape) != dims:
                raise ValueError(f"every base_anchor_shapes entry needs {dims} values, got {shape}")
        if not self.returned_layers or any(k < 1 or k > 4 for k in self.returned_layers):
            raise ValueError(
                f"returned_layers must be ResNet stages 1..4, got {self.returned_layers}"
            )
        if sorted(set(self.returned_layers)) != list(self.returned_layers):
            raise ValueError(f"returned_layers must be increasing, got {self.returned_layers}")
        if len(self.feature_map_scales) != self.num_levels:
            raise ValueError(
                f"feature_map_scales needs {self.num_levels} values (len(returned_layers) + 1 FPN "
                f"levels), got {self.feature_map_scales}"
            )
        if self.fpn_channels % 8:
            raise ValueError(
                f"fpn_channels must be a multiple of 8 (GroupNorm), got {self.fpn_channels}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for num_classes={self.num_classes}"
            )
        if self.box_coder_weights is None:
            self.box_coder_weights = [1.0] * (2 * dims)
        elif len(self.box_coder_weights) != 2 * dims:
            raise ValueError(
                f"box_coder_weights needs {2 * dims} values, got {self.box_coder_weights}"
            )
        derived = self.derived_size_divisible()
        given = self.preprocessing.size_divisible
        if given is None:
            self.preprocessing.size_divisible = derived
        elif len(given) != dims or any(g % d for g, d in zip(given, derived, strict=True)):
            raise ValueError(
                f"preprocessing.size_divisible {given} must be a multiple of {derived} "
                "(conv1_t_stride * 2 * 2**max(returned_layers)); remove it to use the derived value"
            )
        if dims == 2 and self.preprocessing.input_size is None:
            raise ValueError("2D detectors need preprocessing.input_size, e.g. [512, 512]")
        divisible = self.size_divisible
        for key, size in (
            ("preprocessing.input_size", self.preprocessing.input_size),
            (
                "inference.sliding_window.roi_size",
                self.inference.sliding_window.roi_size if self.inference.sliding_window else None,
            ),
        ):
            if size is not None and any(s % d for s, d in zip(size, divisible, strict=True)):
                raise ValueError(f"{key} {size} must be divisible by size_divisible {divisible}")
        return self

    @property
    def dynamic_spatial(self) -> bool:
        """Whether the exported ONNX graph has dynamic spatial axes (see :class:`ExportConfig`)."""
        if self.export.dynamic_spatial is not None:
            return self.export.dynamic_spatial
        return self.spatial_dims == 3


def _parse_override(override: str) -> tuple[list[str], Any]:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {override!r} must look like key.sub=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied.

    Values are parsed as YAML (``postprocess.score_thresh=0.1``,
    ``inference.sliding_window.roi_size=[64,64,32]``, ``backbone.depth=18``). A key may name a
    missing entry of a mapping (it is created), so ``training.epochs=3`` works.

    Raises:
        ValueError: on a malformed override or a path through a non-mapping value.
    """
    result = copy.deepcopy(data)
    for override in overrides:
        path, value = _parse_override(override)
        node: Any = result
        for depth, part in enumerate(path[:-1]):
            if not isinstance(node, dict):
                raise ValueError(
                    f"override {override!r}: {'.'.join(path[:depth])} is not a mapping"
                )
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {'.'.join(path[:-1])} is not a mapping")
        node[path[-1]] = value
    return result


def load_config(path: Path, overrides: Sequence[str] = ()) -> DetectorConfig:
    """Read a detector YAML file and apply ``key.sub=value`` overrides.

    Args:
        path: YAML file (e.g. ``configs/detector_ct3d.yaml``).
        overrides: strings such as ``"postprocess.score_thresh=0.1"``; values are YAML.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file or an override does not describe a valid detector
            (``pydantic.ValidationError`` is a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector config {path} not found (see configs/detector_*.yaml)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping")
    return DetectorConfig.model_validate(apply_overrides(data, overrides))
