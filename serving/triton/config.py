"""One description of a detector served by Triton, rendered as either flavour of ``config.pbtxt``.

``gpu``: Triton's native ``onnxruntime`` backend on ``KIND_GPU`` instances with the TensorRT
execution accelerator (FP16, engine cache). ``portable``: the same ``model.onnx`` run by ONNX
Runtime inside a Python-backend model (``KIND_CPU``), which the ``tritonserver`` shipped in the
``nvidia-pytriton`` wheel can run without a GPU. Both configurations come from one
:class:`TritonModelDescription` and are checked by parsing them back into Triton's
``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``).

Tensor dims follow Triton's convention: with ``max_batch_size > 0`` they exclude the batch axis;
``-1`` marks a dynamic axis. For the detectors the input is ``(C, *spatial)`` and the outputs are
the per-level ``cls_logits_<i>`` ``(A*K, *level_spatial)`` and ``box_regression_<i>``
``(A*2*D, *level_spatial)`` of MONAI's RetinaNet, in the ONNX model's own axis order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_PREFERRED_BATCH_SIZES",
    "Flavor",
    "TensorSpec",
    "TritonModelDescription",
    "onnx_io",
    "parse_model_config",
    "render_model_config",
]

#: Preferred batch sizes of the dynamic batcher unless told otherwise.
DEFAULT_PREFERRED_BATCH_SIZES: tuple[int, ...] = (4, 8)

#: ONNX ``TensorProto`` element type name -> Triton ``DataType`` name.
_ONNX_TO_TRITON: dict[str, str] = {
    "FLOAT": "TYPE_FP32",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "DOUBLE": "TYPE_FP64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "BOOL": "TYPE_BOOL",
    "STRING": "TYPE_STRING",
}


class Flavor(StrEnum):
    """Which Triton backend runs ``model.onnx``."""

    GPU = "gpu"
    PORTABLE = "portable"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it.

    Attributes:
        name: tensor name in the ONNX graph (``input``, ``cls_logits_0``...).
        data_type: Triton data type name, e.g. ``TYPE_FP32``.
        dims: shape without the batch axis when the model batches; ``-1`` = dynamic.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tensor name must not be empty")
        if self.data_type not in _ONNX_TO_TRITON.values():
            raise ValueError(
                f"tensor {self.name!r}: data_type {self.data_type!r} is not a Triton type "
                f"(one of {sorted(_ONNX_TO_TRITON.values())})"
            )
        if any(d == 0 or d < -1 for d in self.dims):
            raise ValueError(f"tensor {self.name!r}: dims {self.dims} must be positive or -1")


@dataclass(frozen=True)
class TritonModelDescription:
    """Everything both ``config.pbtxt`` flavours are rendered from.

    Attributes:
        name: Triton model name (the MLflow registered-model name).
        inputs: input tensors (dims without the batch axis if ``max_batch_size > 0``).
        outputs: output tensors, in the order the runner returns them.
        versions: versions Triton should serve (``version_policy { specific }``), in promotion
            order: the last one is the current version. Triton versions are MLflow versions.
        max_batch_size: largest batch Triton forms; 0 disables batching (dims then include
            the batch axis).
        dynamic_batching: let Triton merge concurrent requests into batches.
        preferred_batch_sizes: batch sizes the dynamic batcher aims for (each <= max_batch_size).
        max_queue_delay_us: longest a request waits for a batch to fill, in microseconds.
        instances: model instances per device (GPU flavour) or in total (portable flavour).
        trt_precision: TensorRT precision for the GPU flavour (``FP16``, ``FP32``; ``None``
            disables the TensorRT accelerator and leaves ONNX Runtime's CUDA provider).
        trt_engine_cache_path: where TensorRT engines are cached inside the Triton container, so
            a restart does not rebuild them (minutes for 3D models).
        trt_max_workspace_bytes: TensorRT builder workspace.
        intra_op_threads: ONNX Runtime threads per instance (0 = ONNX Runtime's default).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    versions: tuple[int, ...]
    max_batch_size: int = 8
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = 2000
    instances: int = 1
    trt_precision: str | None = "FP16"
    trt_engine_cache_path: str | None = None
    trt_max_workspace_bytes: int = 1 << 30
    intra_op_threads: int = 0
    extra_parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"Triton model name {self.name!r} must be a plain folder name")
        if not self.inputs or not self.outputs:
            raise ValueError(f"model {self.name!r} needs at least one input and one output")
        if not self.versions or any(v < 1 for v in self.versions):
            raise ValueError(f"versions {self.versions} must be one or more integers >= 1")
        if len(set(self.versions)) != len(self.versions):
            raise ValueError(f"versions {self.versions} must not repeat")
        if self.max_batch_size < 0:
            raise ValueError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        if self.dynamic_batching and self.max_batch_size == 0:
            raise ValueError("dynamic_batching needs max_batch_size > 0")
        too_big = [b for b in self.preferred_batch_sizes if b < 1 or b > self.max_batch_size]
        if self.dynamic_batching and too_big:
            raise ValueError(
                f"preferred_batch_sizes {too_big} must lie in 1..max_batch_size "
                f"({self.max_batch_size})"
            )
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.trt_precision not in (None, "FP16", "FP32", "INT8"):
            raise ValueError(
                f"trt_precision must be FP16, FP32, INT8 or None, not {self.trt_precision!r}"
            )

    @property
    def current_version(self) -> int:
        """The most recently promoted version (last of :attr:`versions`)."""
        return self.versions[-1]

    def to_model_config(self, flavor: Flavor | str) -> Any:
        """Build Triton's ``ModelConfig`` protobuf for ``flavor``.

        Returns:
            ``tritonclient.grpc.model_config_pb2.ModelConfig``.
        """
        from tritonclient.grpc import model_config_pb2 as pb

        flavor = Flavor(flavor)
        config = pb.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        config.version_policy.specific.versions.extend(self.versions)
        for tensor, target in ((t, config.input.add()) for t in self.inputs):
            target.name, target.dims[:] = tensor.name, tensor.dims
            target.data_type = pb.DataType.Value(tensor.data_type)
        for tensor, out in ((t, config.output.add()) for t in self.outputs):
            out.name, out.dims[:] = tensor.name, tensor.dims
            out.data_type = pb.DataType.Value(tensor.data_type)
        if self.dynamic_batching:
            config.dynamic_batching.preferred_batch_size.extend(self.preferred_batch_sizes)
            config.dynamic_batching.max_queue_delay_microseconds = self.max_queue_delay_us
        group = config.instance_group.add()
        group.count = self.instances
        params = {"intra_op_thread_count": str(self.intra_op_threads), **self.extra_parameters}
        if flavor is Flavor.GPU:
            config.backend = "onnxruntime"
            config.default_model_filename = "model.onnx"
            group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_GPU")
            if self.trt_precision is not None:
                trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
                trt.name = "tensorrt"
                trt.parameters["precision_mode"] = self.trt_precision
                trt.parameters["max_workspace_size_bytes"] = str(self.trt_max_workspace_bytes)
                if self.trt_engine_cache_path:
                    trt.parameters["trt_engine_cache_enable"] = "1"
                    trt.parameters["trt_engine_cache_path"] = self.trt_engine_cache_path
        else:
            config.backend = "python"
            group.kind = pb.ModelInstanceGroup.Kind.Value("KIND_CPU")
            params["onnx_model_filename"] = "model.onnx"
        for key, value in sorted(params.items()):
            config.parameters[key].string_value = value
        return config

    def render(self, flavor: Flavor | str) -> str:
        """``config.pbtxt`` text for ``flavor``, checked by parsing it back.

        Raises:
            ValueError: if the text does not parse as the same ``ModelConfig`` (a bug here).
        """
        return render_model_config(self.to_model_config(flavor))


def render_model_config(config: Any) -> str:
    """Serialise a ``ModelConfig`` protobuf to ``config.pbtxt`` text and check the round trip."""
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    if parse_model_config(text) != config:
        raise ValueError(
            f"config.pbtxt for {config.name!r} does not round-trip through ModelConfig"
        )
    return str(text)


def parse_model_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text as Triton's ``ModelConfig`` protobuf.

    Raises:
        ValueError: with the parser's line/column message if the text is not a valid
            ``ModelConfig`` (``google.protobuf.text_format.ParseError`` is re-raised as such).
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton ModelConfig: {exc}") from exc
    return config


def flavor_of(config: Any) -> Flavor:
    """The flavour a parsed ``ModelConfig`` was rendered as (by its backend)."""
    if config.backend == "onnxruntime":
        return Flavor.GPU
    if config.backend == "python":
        return Flavor.PORTABLE
    raise ValueError(f"model {config.name!r} uses backend {config.backend!r}, not one of ours")


def onnx_io(
    onnx_path: Path, *, batched: bool = True
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Read input and output tensors of an ONNX model as Triton tensor specs.

    Args:
        onnx_path: the ``model.onnx`` file (weights are not loaded).
        batched: strip the leading batch axis, which must then be dynamic in the graph.

    Returns:
        ``(inputs, outputs)``; dims use ``-1`` for symbolic or unknown axes.

    Raises:
        FileNotFoundError: if ``onnx_path`` is missing.
        ValueError: if a tensor is not a plain tensor, or ``batched`` and its first axis is fixed.
    """
    import onnx

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} not found")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def convert(values: Sequence[Any]) -> tuple[TensorSpec, ...]:
        specs = []
        for value in values:
            if value.name in initializers:
                continue
            if not value.type.HasField("tensor_type"):
                raise ValueError(f"{onnx_path}: {value.name!r} is not a tensor")
            tensor_type = value.type.tensor_type
            type_name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            if type_name not in _ONNX_TO_TRITON:
                raise ValueError(f"{onnx_path}: {value.name!r} has unsupported type {type_name}")
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            if batched:
                if not dims or dims[0] != -1:
                    raise ValueError(
                        f"{onnx_path}: {value.name!r} has a fixed batch axis {dims[:1]}; export "
                        "with a dynamic batch axis, or write the model with max_batch_size=0"
                    )
                dims = dims[1:]
            specs.append(TensorSpec(value.name, _ONNX_TO_TRITON[type_name], tuple(dims)))
        return tuple(specs)

    return convert(graph.input), convert(graph.output)
