"""OpenVINO as the embedded inference backend (``ONCOTRIAGE_INFERENCE_BACKEND=openvino``).

The same ``model.onnx`` as ONNX Runtime, compiled for the CPU by
:class:`~oncotriage.models.openvino_runner.OpenVinoRunner` at the precision of the model version
(fp32, or an accepted bf16/int8 variant that :class:`~oncotriage.serving.inference.ModelManager`
chose for this CPU). Threads are sized as for ONNX Runtime
(:func:`~oncotriage.serving.inference.ort_intra_op_threads`). No torch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from oncotriage.models.openvino_runner import OpenVinoRunner

if TYPE_CHECKING:
    from oncotriage.models.pipeline import NetworkRunner
    from oncotriage.models.registry import ResolvedModel
    from oncotriage.serving.inference import RunnerFactory
    from oncotriage.serving.settings import Settings

__all__ = ["OpenVinoRunner", "make_runner_factory"]

logger = logging.getLogger(__name__)


def make_runner_factory(settings: Settings, model_threads: int = 1) -> RunnerFactory:
    """OpenVINO runners with the thread count ONNX Runtime would get; ``model_threads``
    workers share each compiled model, compiled at the model version's precision."""
    from oncotriage.serving.inference import ort_intra_op_threads

    threads = ort_intra_op_threads(settings, model_threads)
    logger.info(
        "OpenVINO compiled models: %s thread(s) each, %d worker(s) sharing them",
        threads if threads is not None else "OpenVINO's default",
        model_threads,
    )

    def factory(resolved: ResolvedModel) -> NetworkRunner:
        runner = OpenVinoRunner(
            resolved.onnx_path, threads=threads, precision=resolved.spec.precision
        )
        logger.info(
            "OpenVINO: %s compiled at %s (convolutions: %s)",
            resolved.label,
            resolved.spec.precision,
            runner.convolution_precisions(),
        )
        return runner

    return factory
