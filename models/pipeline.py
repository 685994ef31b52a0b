"""Image -> findings with an exported detector: numpy pre/post-processing around any runner.

This is the serving inference path (and the one training-time evaluation uses): it imports
neither torch nor MONAI. The network itself runs behind :class:`NetworkRunner`: ONNX Runtime
in-process (:class:`OrtRunner`) or a Triton client that satisfies the same protocol.

Steps of :meth:`DetectionPipeline.detect`: preprocess (reorient, resample, normalise, resize/pad)
-> pad to ``size_divisible`` -> network (sliding window for volumes with at least as many voxels
as one window, as MONAI's ``lung_nodule_ct_detection`` bundle does) -> anchors, box decoding,
score threshold, top-k, NMS (MONAI ``RetinaNetDetector.postprocess_detections``) -> boxes mapped
back to the source image's index space and to world millimetres.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.anchors import AnchorGenerator
from oncotriage.models.findings import Finding
from oncotriage.models.postprocess import BoxSelector, decode_boxes, reshape_head_outputs
from oncotriage.models.preprocess import PreprocessedImage, pad_to_divisible, preprocess_image
from oncotriage.models.sliding_window import sliding_window_inference
from oncotriage.models.spec import MODEL_FILENAME, ModelBundle, ModelSpec

__all__ = [
    "DetectionPipeline",
    "Detections",
    "NetworkRunner",
    "OrtRunner",
    "PreparedInput",
    "available_providers",
]

logger = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
Provider = str | tuple[str, dict[str, Any]]


@runtime_checkable
class NetworkRunner(Protocol):
    """Runs the detector network on a batch.

    Attributes:
        input_name: name of the network input.
        output_names: names of the outputs, in the order ``__call__`` returns them.
    """

    input_name: str
    output_names: list[str]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """``(B, C, *S)`` float32 -> the network outputs, in ``output_names`` order."""
        ...


def available_providers(prefer_gpu: bool = True) -> list[str]:
    """ONNX Runtime execution providers present here, TensorRT/CUDA first when ``prefer_gpu``."""
    import onnxruntime as ort

    present = set(ort.get_available_providers())
    order = [*GPU_PROVIDERS, "CPUExecutionProvider"] if prefer_gpu else ["CPUExecutionProvider"]
    return [p for p in order if p in present]


class OrtRunner:
    """ONNX Runtime session as a :class:`NetworkRunner`.

    Args:
        onnx_path: the ``model.onnx`` file.
        providers: execution providers in priority order (names or ``(name, options)``); ``None``
            means CPU. Providers not present in this onnxruntime build are skipped with a warning;
            the CPU provider is always the last fallback.
        intra_op_threads: threads per operator (``None``: onnxruntime's default).
        allow_spinning: let idle intra-op threads spin waiting for work (onnxruntime's
            default). Off by default here: a service shares its cores with intake, the
            database and the web server, and spinning threads take CPU from them (measured
            in docs/benchmarks.md, Triton section). Turn it on for a dedicated inference box.
    """

    def __init__(
        self,
        onnx_path: Path,
        providers: Sequence[Provider] | None = None,
        intra_op_threads: int | None = None,
        allow_spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        present = set(ort.get_available_providers())
        chosen: list[Provider] = []
        for provider in providers or ["CPUExecutionProvider"]:
            name = provider if isinstance(provider, str) else provider[0]
            if name in present:
                chosen.append(provider)
            else:
                logger.warning(
                    "execution provider %s is not available in this onnxruntime build (have %s); "
                    "skipping it",
                    name,
                    ", ".join(sorted(present)),
                )
        if not any((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in chosen):
            chosen.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if allow_spinning else "0"
        )
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path} has {len(inputs)} inputs; a detector has one image input")
        self.input_name: str = inputs[0].name
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.providers: list[str] = list(self.session.get_providers())

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return list(self.session.run(self.output_names, feed))


@dataclass(frozen=True)
class PreparedInput:
    """An image made ready for the network (:meth:`DetectionPipeline.prepare`).

    Attributes:
        image: the source image (boxes go back to its index space and to world mm).
        pre: the preprocessed image and its mapping to the source.
        batch: ``(1, C, *S)`` float32, padded to the model's ``size_divisible``.
        sliding_window: whether the network runs by sliding window on it.
    """

    image: ImageVolume
    pre: PreprocessedImage
    batch: np.ndarray
    sliding_window: bool


@dataclass(frozen=True)
class Detections:
    """Detections of one image in network-input index space.

    Attributes:
        boxes: ``(N, 2D)`` float32, ``xyxy`` (2D) / ``xyzxyz`` (3D).
        scores: ``(N,)`` float32 in ``0..1``, highest first.
        labels: ``(N,)`` int64 class indices.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class DetectionPipeline:
    """A detector's numpy pipeline around a network runner.

    Args:
        spec: the model's spec (``model_spec.json``).
        runner: runs the network; its ``output_names`` must include the spec's.
    """

    def __init__(self, spec: ModelSpec, runner: NetworkRunner) -> None:
        missing = [n for n in spec.output_names if n not in runner.output_names]
        if missing:
            raise ValueError(
                f"the network has no outputs {missing} (it has {runner.output_names}); "
                "the ONNX file and model_spec.json do not belong together"
            )
        self.spec = spec
        self.runner = runner
        self.anchor_generator = AnchorGenerator(
            spec.anchors.feature_map_scales, spec.anchors.base_anchor_shapes
        )
        if self.anchor_generator.num_anchors_per_location != spec.num_anchors:
            raise ValueError(
                f"spec has {spec.num_anchors} anchors per location but "
                f"{self.anchor_generator.num_anchors_per_location} anchor shapes"
            )
        self.box_selector = BoxSelector(**spec.postprocess.model_dump())
        self._output_index = [runner.output_names.index(n) for n in spec.output_names]

    @classmethod
    def from_bundle(
        cls,
        directory: Path,
        providers: Sequence[Provider] | None = None,
        intra_op_threads: int | None = None,
    ) -> DetectionPipeline:
        """Pipeline over ONNX Runtime for a bundle folder (``model.onnx`` + ``model_spec.json``)."""
        bundle = ModelBundle.load(Path(directory))
        runner = OrtRunner(
            bundle.directory / MODEL_FILENAME,
            providers=providers,
            intra_op_threads=intra_op_threads,
        )
        return cls(bundle.spec, runner)

    # -- network -----------------------------------------------------------------------------

    def _run_network(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.runner(batch)
        return [np.asarray(outputs[i], dtype=np.float32) for i in self._output_index]

    def _uses_sliding_window(self, spatial: Sequence[int], requested: bool | None) -> bool:
        window = self.spec.sliding_window
        if requested is not None:
            if requested and window is None:
                raise ValueError(f"model {self.spec.name} has no sliding-window settings")
            return requested
        if window is None:
            return False
        if not self.spec.dynamic_spatial:
            return True  # a fixed-size graph takes windows only (smaller inputs are padded)
        voxels = math.prod(spatial)
        if window.max_single_pass_voxels is not None and voxels <= window.max_single_pass_voxels:
            return False  # one pass computes no overlap twice (SlidingWindowConfig)
        # MONAI bundle rule (scripts/detection_inferer.py): window only when the input has at
        # least as many voxels as one window.
        return voxels >= math.prod(window.roi_size)

    def head_outputs(self, padded: np.ndarray, use_sliding_window: bool) -> list[np.ndarray]:
        """Network maps for a padded ``(B, C, *S)`` batch, by sliding window or one pass."""
        if use_sliding_window:
            window = self.spec.sliding_window
            assert window is not None  # checked by _uses_sliding_window
            return sliding_window_inference(
                padded,
                window.roi_size,
                window.sw_batch_size,
                self._run_network,
                overlap=window.overlap,
                mode=window.mode,
                sigma_scale=window.sigma_scale,
                padding_mode=window.padding_mode,
                cval=window.cval,
            )
        fixed = self.spec.input_shape[2:]
        if not self.spec.dynamic_spatial and list(padded.shape[2:]) != list(fixed):
            raise ValueError(
                f"model {self.spec.name} takes inputs of spatial size {fixed}, got "
                f"{list(padded.shape[2:])}; preprocess with the model's spec"
            )
        return self._run_network(padded)

    # -- public API ----------------------------------------------------------------------------

    def predict_preprocessed(
        self,
        batch: np.ndarray,
        image_sizes: Sequence[Sequence[int]] | None = None,
        use_sliding_window: bool | None = None,
    ) -> list[Detections]:
        """Detections for already preprocessed images, as MONAI ``RetinaNetDetector`` in eval mode.

        Args:
            batch: ``(B, C, *S)`` float32 network input (not necessarily padded).
            image_sizes: per image, the size boxes are clipped to (default: ``S``, as MONAI).
            use_sliding_window: force the window on or off (default: the bundle rule, window when
                the input has at least as many voxels as one window; always for a model exported
                with fixed spatial axes).

        Returns:
            One :class:`Detections` per image, boxes in network-input index space.
        """
        x = np.asarray(batch, dtype=np.float32)
        dims = self.spec.spatial_dims
        if x.ndim != dims + 2:
            raise ValueError(f"expected a (B, C, *S) batch with {dims} spatial axes, got {x.shape}")
        if x.shape[1] != self.spec.in_channels:
            raise ValueError(f"model takes {self.spec.in_channels} channels, got {x.shape[1]}")
        spatial = [int(s) for s in x.shape[2:]]
        sizes = (
            [list(s) for s in image_sizes] if image_sizes is not None else [spatial] * x.shape[0]
        )
        if len(sizes) != x.shape[0]:
            raise ValueError(f"{len(sizes)} image sizes for a batch of {x.shape[0]}")
        padded = pad_to_divisible(x, self.spec.size_divisible)
        maps = self.head_outputs(padded, self._uses_sliding_window(spatial, use_sliding_window))
        return self.postprocess(maps, padded.shape[2:], sizes)

    def postprocess(
        self,
        maps: Sequence[np.ndarray],
        padded_shape: Sequence[int],
        image_sizes: Sequence[Sequence[int]],
    ) -> list[Detections]:
        """Head maps -> detections (MONAI ``RetinaNetDetector.postprocess_detections``).

        Args:
            maps: ``cls_logits`` maps of every level then ``box_regression`` maps.
            padded_shape: spatial size of the network input the maps came from.
            image_sizes: per image, the size boxes are clipped to.
        """
        levels = self.spec.num_levels
        dims = self.spec.spatial_dims
        num_anchors = self.spec.num_anchors
        cls_maps, box_maps = list(maps[:levels]), list(maps[levels:])
        anchors = self.anchor_generator(padded_shape, [m.shape[2:] for m in cls_maps])
        logits = reshape_head_outputs(cls_maps, num_anchors, dims)
        regression = reshape_head_outputs(box_maps, num_anchors, dims)
        splits = np.cumsum([a.shape[0] for a in anchors])[:-1]
        weights = self.spec.anchors.box_coder_weights
        results = []
        for index, size in enumerate(image_sizes):
            logits_levels = np.split(logits[index], splits)
            reg_levels = np.split(regression[index], splits)
            boxes_levels = [
                decode_boxes(r, a, weights) for r, a in zip(reg_levels, anchors, strict=True)
            ]
            boxes, scores, labels = self.box_selector.select_boxes_per_image(
                boxes_levels, logits_levels, size
            )
            results.append(Detections(boxes=boxes, scores=scores, labels=labels))
        return results

    def preprocess(self, image: ImageVolume) -> PreprocessedImage:
        """Network input for ``image`` (:func:`~oncotriage.models.preprocess.preprocess_image`)."""
        return preprocess_image(image, self.spec.preprocessing, in_channels=self.spec.in_channels)

    def detect(self, image: ImageVolume) -> list[Finding]:
        """Findings for one image, highest score first.

        Boxes are returned in the source image's index space (``box_index``, clipped to the
        image's extent ``[-0.5, n - 0.5]``) and in millimetres (``box_world``, via
        :meth:`ImageVolume.box_index_to_world`).

        The same as :meth:`prepare`, :meth:`run_network` and :meth:`findings` in turn; a
        service may run the three on different threads (the network, which releases the
        GIL, on its own; numpy before and after it elsewhere).

        Raises:
            UnsupportedImageError: if the image does not suit this model (e.g. 2D vs 3D).
        """
        prepared = self.prepare(image)
        return self.findings(prepared, self.run_network(prepared))

    def prepare(self, image: ImageVolume) -> PreparedInput:
        """Stage 1 of :meth:`detect`: the padded network input for ``image``.

        Raises:
            UnsupportedImageError: if the image does not suit this model (e.g. 2D vs 3D).
        """
        from oncotriage.datasets.image import RefusalCode, UnsupportedImageError

        if image.spatial_dims != self.spec.spatial_dims:
            raise UnsupportedImageError(
                f"model {self.spec.name} reads {self.spec.spatial_dims}D images; this image is "
                f"{image.spatial_dims}D",
                code=RefusalCode.MODALITY,
            )
        pre = self.preprocess(image)
        x = pre.array[None]
        spatial = [int(s) for s in x.shape[2:]]
        return PreparedInput(
            image=image,
            pre=pre,
            batch=pad_to_divisible(x, self.spec.size_divisible),
            sliding_window=self._uses_sliding_window(spatial, None),
        )

    def run_network(self, prepared: PreparedInput) -> list[np.ndarray]:
        """Stage 2 of :meth:`detect`: the network's head maps (one pass or sliding window)."""
        return self.head_outputs(prepared.batch, prepared.sliding_window)

    def findings(self, prepared: PreparedInput, maps: Sequence[np.ndarray]) -> list[Finding]:
        """Stage 3 of :meth:`detect`: boxes from the head maps, back in the source image."""
        image, pre = prepared.image, prepared.pre
        detections = self.postprocess(maps, prepared.batch.shape[2:], [pre.mapping.content_shape])[
            0
        ]
        boxes = pre.mapping.network_to_source_boxes(detections.boxes)
        dims = image.spatial_dims
        upper = np.asarray(image.array.shape, dtype=float) - 0.5
        boxes[:, :dims] = np.clip(boxes[:, :dims], -0.5, upper)
        boxes[:, dims:] = np.clip(boxes[:, dims:], -0.5, upper)
        findings = []
        for box, score, label in zip(boxes, detections.scores, detections.labels, strict=True):
            world = image.box_index_to_world(box)
            findings.append(
                Finding(
                    label=int(label),
                    score=float(score),
                    box_index=tuple(float(v) for v in box),
                    box_world=tuple(float(v) for v in world),
                )
            )
        return findings
