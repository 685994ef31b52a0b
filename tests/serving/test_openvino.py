"""The OpenVINO backend runs the committed demo model like ONNX Runtime does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.pipeline import DetectionPipeline, OrtRunner
from oncotriage.models.spec import ModelSpec
from oncotriage.serving.inference import demo_bundle_dir, make_runner_factory
from oncotriage.serving.openvino_runner import OpenVinoRunner
from oncotriage.serving.settings import Settings


def radiograph(seed: int, shape: tuple[int, int] = (384, 384)) -> ImageVolume:
    """A 0..1 image with a few small bright blobs on noise (synthetic, no patient data)."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    array = 0.3 + 0.1 * rng.random(shape)
    for _ in range(3):
        cx, cy, r = (
            rng.uniform(60, shape[0] - 60),
            rng.uniform(60, shape[1] - 60),
            rng.uniform(3, 6),
        )
        array += 0.5 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r**2))
    return ImageVolume(np.clip(array, 0, 1).astype(np.float32), spacing=(1.1, 1.1), modality="DX")


def test_outputs_match_onnxruntime_on_the_demo_model() -> None:
    onnx = demo_bundle_dir() / "model.onnx"
    ov_runner, ort_runner = OpenVinoRunner(onnx, threads=1), OrtRunner(onnx, intra_op_threads=1)
    assert ov_runner.output_names == ort_runner.output_names
    batch = np.random.default_rng(0).random((1, 1, 384, 384), dtype=np.float32)
    got, expected = ov_runner(batch), ort_runner(batch)
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_pipeline_findings_match_onnxruntime() -> None:
    spec = ModelSpec.load(demo_bundle_dir())
    onnx = demo_bundle_dir() / "model.onnx"
    with_ov = DetectionPipeline(spec, OpenVinoRunner(onnx, threads=1))
    with_ort = DetectionPipeline(spec, OrtRunner(onnx, intra_op_threads=1))
    total = 0
    for seed in range(2):
        image = radiograph(seed)
        got, expected = with_ov.detect(image), with_ort.detect(image)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.label == e.label
            assert g.score == pytest.approx(e.score, abs=1e-3)
            np.testing.assert_allclose(g.box_index, e.box_index, atol=0.05)
        total += len(got)
    assert total > 0, "the demo model should find something to compare"


def test_backend_setting_selects_openvino(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, inference_backend="openvino", ort_intra_op_threads=1)
    factory = make_runner_factory(settings)
    from oncotriage.models.registry import resolve

    runner = factory(resolve(str(demo_bundle_dir())))
    assert isinstance(runner, OpenVinoRunner)
    assert runner.precision == "fp32"
    assert runner.runs_at() == "fp32"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        OpenVinoRunner(tmp_path / "model.onnx")
