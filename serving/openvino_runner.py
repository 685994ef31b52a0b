"""OpenVINO as the embedded inference backend (``ONCOTRIAGE_INFERENCE_BACKEND=openvino``).

The same ``model.onnx`` as ONNX Runtime, read by OpenVINO's ONNX frontend and compiled for the
CPU; the numpy pre- and post-processing of :mod:`oncotriage.models.pipeline` is unchanged, only
the network call differs. Threads are sized as for ONNX Runtime
(:func:`~oncotriage.serving.inference.ort_intra_op_threads`). No torch.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from oncotriage.models.pipeline import NetworkRunner
    from oncotriage.models.registry import ResolvedModel
    from oncotriage.serving.inference import RunnerFactory
    from oncotriage.serving.settings import Settings

logger = logging.getLogger(__name__)


class OpenVinoRunner:
    """An ONNX detector compiled by OpenVINO for the CPU, as a ``NetworkRunner``.

    Args:
        onnx_path: the ``model.onnx`` file.
        threads: CPU inference threads (``None``: OpenVINO's default).
        precision: OpenVINO's inference precision hint; ``"f32"`` (the default) keeps the
            arithmetic of the exported model even on CPUs where OpenVINO would pick bf16.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the network does not have exactly one input.
    """

    def __init__(self, onnx_path: Path, threads: int | None = None, precision: str = "f32") -> None:
        import openvino as ov

        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
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
        self.precision = precision
        # An infer request is not safe to share between threads: one per calling thread.
        self._local = threading.local()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self.compiled.create_infer_request()
            self._local.request = request
        request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]


def make_runner_factory(settings: Settings, model_threads: int = 1) -> RunnerFactory:
    """OpenVINO runners with the thread count ONNX Runtime would get; ``model_threads``
    workers share each compiled model."""
    from oncotriage.serving.inference import ort_intra_op_threads

    threads = ort_intra_op_threads(settings, model_threads)
    logger.info(
        "OpenVINO compiled models: %s thread(s) each, %d worker(s) sharing them, fp32",
        threads if threads is not None else "OpenVINO's default",
        model_threads,
    )

    def factory(resolved: ResolvedModel) -> NetworkRunner:
        return OpenVinoRunner(resolved.onnx_path, threads=threads)

    return factory
