"""The service serves the fastest accepted reduced-precision variant the CPU supports.

The registry holds the demo model as version 1, a real int8 QDQ quantization of it (v2) and a
bf16 variant (v3), both tagged with base 1 and accepted, plus a refused int8 record that is
never registered. CPUs are simulated by the flags given to the model manager; the compiled
OpenVINO model says what the CPU really runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("mlflow")

from oncotriage.models.precision import (
    ACCEPTED_TAG,
    BASE_VERSION_TAG,
    PRECISION_TAG,
    PrecisionVariant,
    cpu_supports,
)
from oncotriage.models.spec import ModelSpec
from oncotriage.serving.cpus import cpu_flags
from oncotriage.serving.inference import ModelManager, demo_bundle_dir
from oncotriage.serving.settings import Settings

MODEL = "precision-choice"
VNNI_BF16 = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}
BF16_ONLY = {"avx2", "fma", "avx512f", "avx512_bf16"}
AVX2_ONLY = {"avx2", "fma"}


def _variant_bundle(out: Path, precision: str, method: str) -> Path:
    import shutil

    from oncotriage.training.optimize import quantize_int8

    out.mkdir(parents=True)
    base = demo_bundle_dir()
    if precision == "int8":
        rng = np.random.default_rng(0)
        batches = [rng.random((1, 1, 384, 384), dtype=np.float32) for _ in range(4)]
        quantize_int8(base / "model.onnx", out / "model.onnx", batches, "image")
    else:
        shutil.copy2(base / "model.onnx", out / "model.onnx")
    spec = ModelSpec.load(base)
    record = PrecisionVariant(
        precision=precision,  # type: ignore[arg-type]
        base=f"{MODEL}/1",
        base_version="1",
        method=method,
        evaluated_on="not evaluated: a registry record for the choice test",
        runtime="none",
        figures={},
        accepted=True,
    )
    spec.model_copy(update={"precision": precision, "variant": record}).save(out)
    return out


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from oncotriage.models import registry

    root = tmp_path_factory.mktemp("precision")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert registry.register_bundle(demo_bundle_dir(), MODEL, tracking_uri=uri) == 1
    registry.set_alias(MODEL, "champion", 1, tracking_uri=uri)
    for version, precision in ((2, "int8"), (3, "bf16")):
        bundle = _variant_bundle(root / precision, precision, f"test {precision} variant")
        tags = {BASE_VERSION_TAG: "1", PRECISION_TAG: precision, ACCEPTED_TAG: "true"}
        assert registry.register_bundle(bundle, MODEL, tracking_uri=uri, tags=tags) == version
    return uri


def _manager(
    tmp_path: Path, tracking_uri: str, flags: set[str], **settings: object
) -> ModelManager:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "model_uri": f"models:/{MODEL}@champion",
        "mlflow_tracking_uri": tracking_uri,
        "register_demo_model": False,
        "inference_backend": "openvino",
        "ort_intra_op_threads": 1,
    }
    values.update(settings)
    return ModelManager(Settings(**values), cpu_flags=flags)  # type: ignore[arg-type]


def test_a_vnni_cpu_gets_the_int8_variant(tmp_path: Path, tracking_uri: str) -> None:
    manager = _manager(tmp_path, tracking_uri, VNNI_BF16)
    loaded = manager.current()
    assert (loaded.version, loaded.precision) == ("2", "int8")
    assert loaded.pipeline.runner.runs_at() == "int8"  # type: ignore[attr-defined]
    choice = manager.precision_choice
    assert choice is not None
    assert (choice.precision, choice.version, choice.base_version) == ("int8", "2", "1")


def test_a_bf16_cpu_without_vnni_gets_the_bf16_variant(tmp_path: Path, tracking_uri: str) -> None:
    manager = _manager(tmp_path, tracking_uri, BF16_ONLY)
    loaded = manager.current()
    assert (loaded.version, loaded.precision) == ("3", "bf16")
    assert loaded.pipeline.runner.precision == "bf16"  # type: ignore[attr-defined]
    assert manager.precision_choice is not None
    assert "int8 variant v2 not used: int8 needs one of" in manager.precision_choice.reason


def test_a_cpu_without_bf16_or_int8_falls_back_to_fp32(tmp_path: Path, tracking_uri: str) -> None:
    manager = _manager(tmp_path, tracking_uri, AVX2_ONLY)
    loaded = manager.current()
    assert (loaded.version, loaded.precision) == ("1", "fp32")
    assert loaded.pipeline.runner.runs_at() == "fp32"  # type: ignore[attr-defined]
    reason = manager.precision_choice.reason if manager.precision_choice else ""
    assert "avx512_vnni" in reason and "avx512_bf16" in reason


def test_the_setting_forbids_reduced_precision(tmp_path: Path, tracking_uri: str) -> None:
    manager = _manager(tmp_path, tracking_uri, VNNI_BF16, allow_reduced_precision=False)
    loaded = manager.current()
    assert (loaded.version, loaded.precision) == ("1", "fp32")
    assert manager.precision_choice is not None
    assert "ONCOTRIAGE_ALLOW_REDUCED_PRECISION" in manager.precision_choice.reason


def test_onnx_runtime_serves_the_fp32_version(tmp_path: Path, tracking_uri: str) -> None:
    manager = _manager(tmp_path, tracking_uri, VNNI_BF16, inference_backend="embedded")
    loaded = manager.current()
    assert (loaded.version, loaded.precision) == ("1", "fp32")


def test_readyz_shows_the_precision_this_cpu_gets(
    sqlite_service_factory, tracking_uri: str
) -> None:
    expected = "int8" if cpu_supports("int8", cpu_flags()) else "bf16"
    if expected == "bf16" and not cpu_supports("bf16", cpu_flags()):
        expected = "fp32"
    with sqlite_service_factory(
        model_uri=f"models:/{MODEL}@champion",
        mlflow_tracking_uri=tracking_uri,
        inference_backend="openvino",
    ) as service:
        with service.client() as client:
            response = client.get("/readyz")
    assert response.status_code == 200
    model = response.json()["checks"]["model"]
    assert model["precision"] == expected
    assert model["version"] == {"int8": "2", "bf16": "3", "fp32": "1"}[expected]
    assert model["base_version"] == "1"
    assert model["routes"]["default"]["precision"] == expected
