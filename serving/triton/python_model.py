"""Triton Python-backend model running ``model.onnx`` with ONNX Runtime (the portable flavour).

This file is copied to ``<repository>/<model>/<version>/model.py`` by
:func:`oncotriage.serving.triton.repository.write_model`; Triton's Python backend imports it in
its stub process, where ``triton_python_backend_utils`` exists. It must therefore import nothing
from ``oncotriage`` and nothing beyond numpy and onnxruntime.

Requests gathered by Triton's dynamic batcher arrive together in one ``execute`` call. Requests
whose inputs share a shape (all of them for the 2D detectors' fixed input) are concatenated
along the batch axis and run as one ONNX Runtime call; the outputs are split back per request.

Tensors cross the stub boundary via DLPack, not ``Tensor.as_numpy()``/``Tensor(name, array)``:
the stub's pybind11 numpy bindings were built against NumPy 1 and, under NumPy 2, read inputs as
zeros and send outputs as empty buffers. DLPack avoids NumPy's C structures and works with both.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _to_numpy(tensor: Any) -> np.ndarray:
    """A numpy view of a Triton tensor (copy-free via DLPack)."""
    return np.from_dlpack(tensor)


def _to_triton(name: str, array: np.ndarray) -> Any:
    """A Triton output tensor holding ``array`` (via a legacy DLPack capsule)."""
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array).__dlpack__())


class TritonPythonModel:
    """ONNX Runtime session per model instance; see the module docstring."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        filename = params.get("onnx_model_filename", "model.onnx")
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_thread_count", "0") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        # Idle ONNX Runtime threads spin by default; here they would take the CPU that the
        # server's gRPC and batching threads need between requests.
        spinning = params.get("allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.output_dtypes = {
            tensor["name"]: pb_utils.triton_string_to_numpy(tensor["data_type"])
            for tensor in config["output"]
        }
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs: list[dict[str, np.ndarray] | None] = []
        responses: list[Any] = [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                inputs.append(
                    {
                        name: _to_numpy(pb_utils.get_input_tensor_by_name(request, name))
                        for name in self.input_names
                    }
                )
            except Exception as exc:  # a malformed request fails alone
                inputs.append(None)
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"cannot read inputs: {exc}")
                )
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, feeds in enumerate(inputs):
            if feeds is not None:
                groups.setdefault(self._group_key(index, feeds), []).append(index)
        for members in groups.values():
            try:
                self._run_group(members, inputs, responses)
            except Exception as exc:
                for index in members:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
                    )
        return responses

    def _group_key(self, index: int, feeds: dict[str, np.ndarray]) -> tuple[object, ...]:
        """Requests with equal per-item input shapes can share one ONNX Runtime call."""
        if not self.batched:
            return ("request", index)
        return tuple(feeds[name].shape[1:] for name in self.input_names)

    def _run_group(
        self,
        members: list[int],
        inputs: list[dict[str, np.ndarray] | None],
        responses: list[Any],
    ) -> None:
        feeds_list = [inputs[i] for i in members]
        if len(members) == 1:
            feeds = dict(feeds_list[0] or {})
        else:
            feeds = {
                name: np.concatenate([f[name] for f in feeds_list if f is not None], axis=0)
                for name in self.input_names
            }
        outputs = self.session.run(self.output_names, feeds)
        if len(members) == 1:
            per_request = [outputs]
        else:
            sizes = [int((f or {})[self.input_names[0]].shape[0]) for f in feeds_list]
            offsets = np.cumsum([0, *sizes])
            per_request = [
                [value[offsets[k] : offsets[k + 1]] for value in outputs]
                for k in range(len(members))
            ]
        for index, values in zip(members, per_request, strict=True):
            tensors = [
                _to_triton(name, np.asarray(value, dtype=self.output_dtypes[name]))
                for name, value in zip(self.output_names, values, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
