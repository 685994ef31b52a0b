"""OpenVINO as a network runner: the same ``model.onnx`` as ONNX Runtime, compiled for the CPU.

The numpy pre- and post-processing of :mod:`oncotriage.models.pipeline` is unchanged, only the
network call differs. A model's precision (:mod:`oncotriage.models.precision`) sets how it is
compiled: ``fp32`` and ``int8`` (a QDQ graph, whose int8 layers OpenVINO runs with int8 kernels)
with the ``f32`` inference precision hint, so nothing else is lowered behind the evaluation's
back; ``bf16`` with the ``bf16`` hint. The service's backend is
:mod:`oncotriage.serving.openvino_runner`; ``oncotriage optimize`` evaluates variants with this
class. No torch.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OpenVinoRunner", "openvino_version"]

#: OpenVINO inference precision hint for each model precision.
_HINT = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "f32": "f32"}


def openvino_version() -> str:
    import openvino as ov

    return str(ov.__version__).split("-")[0]


class OpenVinoRunner:
    """An ONNX detector compiled by OpenVINO for the CPU, as a ``NetworkRunner``.

    Args:
        onnx_path: the ``model.onnx`` file.
        threads: CPU inference threads (``None``: OpenVINO's default).
        precision: the model's precision, ``fp32`` (default), ``bf16`` or ``int8`` (``f32`` is
            read as ``fp32``). ``fp32`` keeps the exported arithmetic even on CPUs where
            OpenVINO would pick bf16 by itself.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the network does not have exactly one input, or the precision is unknown.
    """

    def __init__(
        self, onnx_path: Path, threads: int | None = None, precision: str = "fp32"
    ) -> None:
        import openvino as ov

        if precision not in _HINT:
            raise ValueError(f"precision must be fp32, bf16 or int8, got {precision!r}")
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINT[precision]}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = core.read_model(str(path))
        if len(model.inputs) != 1:
            raise ValueError(
                f"{path} has {len(model.inputs)} inputs; a detector has one image input"
            )
        self.input_name: str = model.inputs[0].get_any_name()
        self.compiled = core.compile_model(model, "CPU", config)
        self.output_names: list[str] = [o.get_any_name() for o in self.compiled.outputs]
        self.precision = "fp32" if precision == "f32" else precision
        # An infer request is not safe to share between threads: one per calling thread.
        self._local = threading.local()

    def convolution_precisions(self) -> dict[str, int]:
        """How many convolutions the compiled model runs at each precision (``f32``, ``bf16``,
        ``u8``/``i8``): what the CPU actually does, whatever was asked for."""
        counts: Counter[str] = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == "Convolution":
                counts[info["runtimePrecision"].astype(str)] += 1
        return dict(counts)

    def runs_at(self) -> str:
        """The precision most convolutions run at: ``fp32``, ``bf16`` or ``int8``."""
        counts = self.convolution_precisions()
        if not counts:
            return "fp32"
        top = max(counts, key=lambda k: counts[k])
        return {"u8": "int8", "i8": "int8", "bf16": "bf16"}.get(top, "fp32")

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self.compiled.create_infer_request()
            self._local.request = request
        request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]
