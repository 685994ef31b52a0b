"""Triton model repository: both config flavours from one description, parsed as ModelConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from triton_fixtures import TINY_2D
from tritonclient.grpc import model_config_pb2 as pb
from typer.testing import CliRunner

from oncotriage.cli import app
from oncotriage.models.config import load_config
from oncotriage.models.spec import ModelSpec
from oncotriage.serving.triton.config import (
    Flavor,
    TensorSpec,
    TritonModelDescription,
    onnx_io,
    parse_model_config,
)
from oncotriage.serving.triton.repository import (
    RepositoryConflictError,
    live_versions,
    next_versions,
    set_live_versions,
    write_model,
)

pytestmark = pytest.mark.triton


def make_onnx(path: Path, *, batch: int | str = "batch", spatial: tuple[int, int] = (8, 8)) -> Path:
    """A two-output ONNX graph shaped like a one-level detector head (no torch needed)."""
    shape = [batch, 1, *spatial]
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["image"], ["cls_logits_0"]),
            helper.make_node("Neg", ["image"], ["box_regression_0"]),
        ],
        "head",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info("cls_logits_0", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("box_regression_0", TensorProto.FLOAT, shape),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    make_onnx(tmp_path / "bundle" / "model.onnx")
    ModelSpec.from_config(load_config(TINY_2D), name="head").save(tmp_path / "bundle")
    return tmp_path / "bundle"


def describe(**changes: object) -> TritonModelDescription:
    fields: dict[str, object] = {
        "name": "tiny-2d",
        "inputs": (TensorSpec("image", "TYPE_FP32", (1, 64, 64)),),
        "outputs": (
            TensorSpec("cls_logits_0", "TYPE_FP32", (3, 16, 16)),
            TensorSpec("box_regression_0", "TYPE_FP32", (12, 16, 16)),
        ),
        "versions": (1, 2),
    }
    fields.update(changes)
    return TritonModelDescription(**fields)  # type: ignore[arg-type]


def test_gpu_flavour_is_native_onnxruntime_with_tensorrt_fp16() -> None:
    description = describe(
        max_batch_size=16,
        preferred_batch_sizes=(4, 8, 16),
        max_queue_delay_us=500,
        instances=2,
        trt_engine_cache_path="/engine_cache/tiny-2d",
    )
    config = parse_model_config(description.render("gpu"))
    assert config.name == "tiny-2d"
    assert config.backend == "onnxruntime"
    assert config.default_model_filename == "model.onnx"
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    [group] = config.instance_group
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_GPU, 2)
    [trt] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert dict(trt.parameters) == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/engine_cache/tiny-2d",
    }
    assert list(config.version_policy.specific.versions) == [1, 2]
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [1, 64, 64])]
    assert [t.name for t in config.output] == ["cls_logits_0", "box_regression_0"]
    assert config.input[0].data_type == pb.TYPE_FP32


def test_portable_flavour_is_python_backend_on_cpu_with_same_tensors() -> None:
    description = describe()
    gpu = parse_model_config(description.render(Flavor.GPU))
    portable = parse_model_config(description.render(Flavor.PORTABLE))
    assert portable.backend == "python"
    assert portable.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert portable.parameters["onnx_model_filename"].string_value == "model.onnx"
    assert not portable.optimization.HasField("execution_accelerators")
    # One description: tensors, batching and versions are identical in both flavours.
    for field in ("input", "output", "max_batch_size", "dynamic_batching", "version_policy"):
        assert getattr(portable, field) == getattr(gpu, field), field


def test_without_dynamic_batching_and_without_tensorrt() -> None:
    config = parse_model_config(describe(dynamic_batching=False, trt_precision=None).render("gpu"))
    assert not config.HasField("dynamic_batching")
    assert not config.optimization.HasField("execution_accelerators")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "a/b"}, "plain folder name"),
        ({"versions": ()}, "one or more"),
        ({"versions": (0,)}, ">= 1"),
        ({"versions": (2, 2)}, "must not repeat"),
        ({"max_batch_size": 0}, "dynamic_batching needs max_batch_size > 0"),
        ({"max_batch_size": 4, "preferred_batch_sizes": (8,)}, "1..max_batch_size"),
        ({"instances": 0}, "instances"),
        ({"trt_precision": "FP8"}, "trt_precision"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
    ],
)
def test_invalid_descriptions_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        describe(**changes)


def test_parse_reports_invalid_config_text() -> None:
    with pytest.raises(ValueError, match="not a valid Triton ModelConfig"):
        parse_model_config('name: "x"\nmax_batch_size: "eight"\n')
    with pytest.raises(ValueError, match="not a valid Triton ModelConfig"):
        parse_model_config('name: "x"\nno_such_field: 1\n')


def test_onnx_io_reads_names_types_and_dims(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "m.onnx", spatial=(8, 6))
    inputs, outputs = onnx_io(path)
    assert inputs == (TensorSpec("image", "TYPE_FP32", (1, 8, 6)),)
    assert [o.name for o in outputs] == ["cls_logits_0", "box_regression_0"]
    unbatched_inputs, _ = onnx_io(path, batched=False)
    assert unbatched_inputs[0].dims == (-1, 1, 8, 6)


def test_onnx_io_refuses_fixed_batch_axis(tmp_path: Path) -> None:
    path = make_onnx(tmp_path / "m.onnx", batch=1)
    with pytest.raises(ValueError, match="fixed batch axis"):
        onnx_io(path)
    assert onnx_io(path, batched=False)[0][0].dims == (1, 1, 8, 8)


@pytest.mark.parametrize(
    ("previous", "new", "keep", "expected"),
    [
        ((), 1, 2, (1,)),
        ((1,), 2, 2, (1, 2)),
        ((1, 2), 3, 2, (2, 3)),
        ((2, 3), 2, 2, (3, 2)),  # rollback: the previous version becomes current again
        ((1, 2), 3, 1, (3,)),
        ((1, 2), 3, 3, (1, 2, 3)),
        ((1, 2), 2, 2, (1, 2)),  # promoting the current version again changes nothing
    ],
)
def test_next_versions(
    previous: tuple[int, ...], new: int, keep: int, expected: tuple[int, ...]
) -> None:
    assert next_versions(previous, new, keep) == expected


def test_write_model_layout_and_version_policy(tmp_path: Path, bundle: Path) -> None:
    repo = tmp_path / "repo"
    first = write_model(repo, bundle, model_name="head", version=1, flavor="portable")
    assert sorted(p.name for p in (repo / "head" / "1").iterdir()) == [
        "model.onnx",
        "model.py",
        "model_spec.json",
    ]
    assert first.versions == (1,)
    write_model(repo, bundle, model_name="head", version=2, flavor="portable")
    assert live_versions(repo, "head") == (1, 2)
    third = write_model(repo, bundle, model_name="head", version=3, flavor="portable")
    assert third.versions == (2, 3) == live_versions(repo, "head")
    assert parse_model_config(third.config_path.read_text()) == parse_model_config(
        third.config_text
    )
    # Version folders are kept on disk; only the policy retires them.
    assert sorted(p.name for p in (repo / "head").iterdir() if p.is_dir()) == ["1", "2", "3"]
    set_live_versions(repo, "head", [3])
    assert live_versions(repo, "head") == (3,)


def test_gpu_repository_has_no_python_model(tmp_path: Path, bundle: Path) -> None:
    written = write_model(tmp_path / "repo", bundle, model_name="head", version=4, flavor="gpu")
    assert not (written.model_dir / "4" / "model.py").exists()
    assert parse_model_config(written.config_text).backend == "onnxruntime"
    with pytest.raises(ValueError, match="gpu repository"):
        write_model(tmp_path / "repo", bundle, model_name="head", version=5, flavor="portable")


def test_same_version_with_other_weights_is_a_conflict(tmp_path: Path, bundle: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, bundle, model_name="head", version=1)
    other = tmp_path / "other"
    make_onnx(other / "model.onnx", spatial=(4, 4))
    with pytest.raises(RepositoryConflictError, match="different model.onnx"):
        write_model(repo, other, model_name="head", version=1)
    # Writing the identical version again is a no-op.
    assert write_model(repo, bundle, model_name="head", version=1).versions == (1,)


def test_missing_onnx_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model.onnx"):
        write_model(tmp_path / "repo", tmp_path, model_name="head", version=1)


def test_cli_deploy_triton_from_bundle_folder(tmp_path: Path, bundle: Path) -> None:
    repo = tmp_path / "repo"
    runner = CliRunner()
    args = ["deploy", "triton", "--model", str(bundle), "--repository", str(repo)]
    for version in (1, 2, 3):
        result = runner.invoke(
            app,
            [
                *args,
                "--name",
                "head",
                "--version",
                str(version),
                "--flavor",
                "portable",
                "--max-batch-size",
                "4",
                "--preferred-batch-size",
                "2",
                "--preferred-batch-size",
                "4",
            ],
        )
        assert result.exit_code == 0, result.output
    assert "live versions [2, 3]" in result.output
    config = parse_model_config((repo / "head" / "config.pbtxt").read_text())
    assert config.backend == "python"
    assert config.max_batch_size == 4
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert list(config.version_policy.specific.versions) == [2, 3]
    refused = runner.invoke(app, [*args, "--name", "head", "--version", "4", "--flavor", "gpu"])
    assert refused.exit_code == 2
    assert "portable repository" in refused.output


EXAMPLES = sorted((TINY_2D.parent / "triton").glob("*.config.pbtxt"))


def description_of(config: object) -> TritonModelDescription:
    """Rebuild the one description a parsed ``ModelConfig`` was rendered from."""
    c: Any = config
    tensors = {
        kind: tuple(
            TensorSpec(t.name, pb.DataType.Name(t.data_type), tuple(t.dims))
            for t in getattr(c, kind)
        )
        for kind in ("input", "output")
    }
    accelerators = c.optimization.execution_accelerators.gpu_execution_accelerator
    trt = dict(accelerators[0].parameters) if accelerators else {}
    return TritonModelDescription(
        name=c.name,
        inputs=tensors["input"],
        outputs=tensors["output"],
        versions=tuple(c.version_policy.specific.versions),
        max_batch_size=c.max_batch_size,
        dynamic_batching=c.HasField("dynamic_batching"),
        preferred_batch_sizes=tuple(c.dynamic_batching.preferred_batch_size),
        max_queue_delay_us=c.dynamic_batching.max_queue_delay_microseconds,
        instances=c.instance_group[0].count,
        trt_precision=trt.get("precision_mode", "FP16"),
        trt_engine_cache_path=trt.get("trt_engine_cache_path", f"/engine_cache/{c.name}"),
        trt_max_workspace_bytes=int(trt.get("max_workspace_size_bytes", 1 << 30)),
        intra_op_threads=int(c.parameters["intra_op_thread_count"].string_value),
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_committed_example_configs_match_the_generator(path: Path) -> None:
    config = parse_model_config(path.read_text(encoding="utf-8"))
    flavor = "gpu" if path.name.endswith(".gpu.config.pbtxt") else "portable"
    assert config.backend == {"gpu": "onnxruntime", "portable": "python"}[flavor]
    assert parse_model_config(description_of(config).render(flavor)) == config


@pytest.mark.parametrize("model", ["cxr2d-nodule", "ct3d-nodule"])
def test_example_flavours_share_tensors_and_batching(model: str) -> None:
    folder = TINY_2D.parent / "triton"
    gpu = parse_model_config((folder / f"{model}.gpu.config.pbtxt").read_text())
    portable = parse_model_config((folder / f"{model}.portable.config.pbtxt").read_text())
    for field in ("input", "output", "max_batch_size", "dynamic_batching", "version_policy"):
        assert getattr(gpu, field) == getattr(portable, field), field
    assert [t.name for t in gpu.output][:1] == ["cls_logits_0"]
    spatial = len(gpu.input[0].dims) - 1
    assert spatial == (2 if model.startswith("cxr2d") else 3)
