"""Results through a real Triton server equal the embedded ONNX Runtime backend's."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from triton_fixtures import MODEL, random_batch

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.pipeline import DetectionPipeline, OrtRunner
from oncotriage.models.spec import ModelSpec
from oncotriage.serving.triton.runner import (
    AsyncTritonRunner,
    TritonInferenceError,
    TritonRunner,
    TritonUnavailableError,
)
from oncotriage.serving.triton.server import TritonServer

pytestmark = pytest.mark.triton


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture()
def runner(running_triton: TritonServer) -> TritonRunner:
    return TritonRunner(running_triton.grpc_url, MODEL, "1", timeout_s=30)


def synthetic_radiograph(seed: int, shape: tuple[int, int] = (96, 80)) -> ImageVolume:
    """A 0..1 image with a few bright blobs on smooth noise (synthetic, no patient data)."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    array = 0.2 * rng.random(shape)
    for _ in range(3):
        cx, cy, r = (
            rng.uniform(10, shape[0] - 10),
            rng.uniform(10, shape[1] - 10),
            rng.uniform(3, 8),
        )
        array += 0.7 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r**2))
    return ImageVolume(np.clip(array, 0, 1).astype(np.float32), spacing=(0.5, 0.5), modality="DX")


def test_runner_reads_tensor_names_from_triton(running_triton: TritonServer) -> None:
    runner = TritonRunner(running_triton.grpc_url, MODEL, "1")
    assert runner.input_name == "image"
    assert runner.output_names == [
        "cls_logits_0",
        "cls_logits_1",
        "cls_logits_2",
        "box_regression_0",
        "box_regression_1",
        "box_regression_2",
    ]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_outputs_equal_embedded_onnxruntime(
    runner: TritonRunner, tiny_bundles: dict[int, Path], batch: int
) -> None:
    embedded = OrtRunner(tiny_bundles[1] / "model.onnx")
    x = random_batch(batch, seed=batch)
    result = runner.infer(x)
    assert result.model_version == "1"
    assert result.attempts == 1
    assert [o.shape[0] for o in result.outputs] == [batch] * 6
    assert max_abs_diff(result.outputs, embedded(x)) <= 1e-6


def test_concurrent_requests_batched_by_triton_equal_embedded(
    runner: TritonRunner, tiny_bundles: dict[int, Path], running_triton: TritonServer
) -> None:
    """Dynamic batching merges concurrent requests in model.py; each gets its own outputs."""
    embedded = OrtRunner(tiny_bundles[1] / "model.onnx")
    batches = [random_batch(1, seed=100 + i) for i in range(32)]
    before = _inference_stats(running_triton)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(runner, batches))
    after = _inference_stats(running_triton)
    for x, outputs in zip(batches, results, strict=True):
        assert max_abs_diff(outputs, embedded(x)) <= 1e-6
    requests = after["requests"] - before["requests"]
    executions = after["executions"] - before["executions"]
    assert requests == 32
    # Fewer model executions than single-image requests: Triton merged requests into batches.
    assert executions < requests


def _inference_stats(server: TritonServer) -> dict[str, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        [stats] = client.get_inference_statistics(MODEL, "1").model_stats
    finally:
        client.close()
    return {"requests": int(stats.inference_count), "executions": int(stats.execution_count)}


def test_detection_pipeline_findings_identical_with_both_runners(
    runner: TritonRunner, tiny_bundles: dict[int, Path]
) -> None:
    spec = ModelSpec.load(tiny_bundles[1])
    embedded = DetectionPipeline(spec, OrtRunner(tiny_bundles[1] / "model.onnx"))
    served = DetectionPipeline(spec, runner)
    counts = []
    for seed in range(4):
        image = synthetic_radiograph(seed)
        expected, got = embedded.detect(image), served.detect(image)
        assert got == expected
        counts.append(len(got))
    assert min(counts) > 0, "the fixture network should produce findings to compare"


def test_async_runner_equals_embedded(
    running_triton: TritonServer, tiny_bundles: dict[int, Path]
) -> None:
    embedded = OrtRunner(tiny_bundles[1] / "model.onnx")
    batches = [random_batch(2, seed=200 + i) for i in range(6)]

    async def run() -> list[list[np.ndarray]]:
        runner = await AsyncTritonRunner(running_triton.grpc_url, MODEL, "1").start()
        try:
            results = await asyncio.gather(*(runner.infer(x) for x in batches))
        finally:
            await runner.close()
        assert {r.model_version for r in results} == {"1"}
        return [r.outputs for r in results]

    # its own thread and loop: the browser tests' sync Playwright leaves a loop running in
    # this one when they run first (pytest tests/web tests/triton)
    with ThreadPoolExecutor(1) as pool:
        answers = pool.submit(asyncio.run, run()).result()
    for x, outputs in zip(batches, answers, strict=True):
        assert max_abs_diff(outputs, embedded(x)) <= 1e-6


def test_wrong_input_shape_fails_at_once_with_triton_message(runner: TritonRunner) -> None:
    with pytest.raises(TritonInferenceError, match="unexpected shape") as caught:
        runner(np.zeros((1, 1, 32, 32), np.float32))
    assert caught.value.status == "StatusCode.INVALID_ARGUMENT"
    assert not isinstance(caught.value, TritonUnavailableError)


def test_unloaded_version_is_reported_after_retries(running_triton: TritonServer) -> None:
    with pytest.raises(TritonUnavailableError, match="version 9 .* is not ready"):
        TritonRunner(
            running_triton.grpc_url, MODEL, "9", "image", ["cls_logits_0"], retries=1, backoff=0.05
        )
