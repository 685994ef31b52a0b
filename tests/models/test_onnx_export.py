"""ONNX export: graph validity, dynamic axes, the spec beside it, and ``oncotriage export``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from model_fixtures import TINY_2D, tiny_config, tiny_network

from oncotriage.models.pipeline import OrtRunner
from oncotriage.models.spec import ModelBundle, ModelSpec, Thresholds


@pytest.mark.torch
def test_export_writes_a_valid_bundle(tiny3d) -> None:
    model = onnx.load(str(tiny3d.bundle / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] >= 17
    assert [o.name for o in model.graph.output] == tiny3d.cfg.output_names()
    spec = ModelSpec.load(tiny3d.bundle)
    assert spec.input_shape == [-1, 1, -1, -1, -1] and spec.version == "1"
    assert spec.size_divisible == [16, 16, 8] and spec.num_anchors == 3
    assert spec.thresholds.calibrated is False
    assert "NOT A MODEL" in spec.intended_use
    assert spec.export["max_abs_diff_vs_torch"] < 1e-3
    assert spec.export["nodes"] < spec.export["nodes_before_optimization"]


@pytest.mark.torch
@pytest.mark.parametrize(("batch", "spatial"), [(1, (32, 32, 16)), (3, (48, 32, 24))])
def test_dynamic_batch_and_volume_size_match_torch(tiny3d, batch, spatial) -> None:
    import torch

    x = np.random.default_rng(batch).random((batch, 1, *spatial), dtype=np.float32)
    runner = OrtRunner(tiny3d.bundle / "model.onnx", intra_op_threads=1)
    with torch.no_grad():
        tiny3d.network.use_list_output = True
        try:
            expected = [t.numpy() for t in tiny3d.network(torch.from_numpy(x))]
        finally:
            tiny3d.network.use_list_output = False
    got = runner(x)
    assert runner.output_names == tiny3d.cfg.output_names()
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-4)


@pytest.mark.torch
def test_2d_export_has_a_fixed_input_size(tiny2d) -> None:
    spec = ModelSpec.load(tiny2d.bundle)
    assert spec.input_shape == [-1, 1, 64, 64]
    runner = OrtRunner(tiny2d.bundle / "model.onnx")
    outputs = runner(np.zeros((2, 1, 64, 64), np.float32))
    assert [o.shape for o in outputs[:3]] == [(2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
    assert [o.shape[1] for o in outputs[3:]] == [12, 12, 12]


@pytest.mark.torch
def test_opset_below_17_is_refused(tmp_path: Path) -> None:
    from oncotriage.models.export import export_onnx

    cfg = tiny_config(2)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_network(cfg), cfg, tmp_path, opset=16)


@pytest.mark.torch
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    import torch

    from oncotriage.models.build import build_network, load_network_weights

    cfg = tiny_config(2)
    trained = tiny_network(cfg, seed=5)
    torch.save({"model": trained.state_dict()}, tmp_path / "ckpt.pt")
    fresh = load_network_weights(build_network(cfg), tmp_path / "ckpt.pt")
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    wrong = tiny_config(2, ("fpn_channels=24",))
    with pytest.raises(ValueError, match="do not fit"):
        load_network_weights(build_network(wrong), tmp_path / "ckpt.pt")


@pytest.mark.torch
def test_export_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oncotriage.cli import app

    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--config",
            str(TINY_2D),
            "--out",
            str(out),
            "--set",
            "postprocess.score_thresh=0.3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    bundle = ModelBundle.load(out)
    assert bundle.onnx_path.is_file()
    assert bundle.spec.postprocess.score_thresh == 0.3
    bad = CliRunner().invoke(
        app, ["export", "--config", str(TINY_2D), "--out", str(out), "--set", "backbone.depth=7"]
    )
    assert bad.exit_code == 2 and "export failed" in bad.output


def test_spec_round_trip_and_bundle_errors(tmp_path: Path) -> None:
    from oncotriage.models.config import load_config

    cfg = load_config(TINY_2D)
    spec = ModelSpec.from_config(
        cfg,
        version="7",
        thresholds=Thresholds(operating=0.3, urgent=0.8, calibrated=True),
        metrics={"froc": 0.8},
        dataset_fingerprint="sha256:abc",
        training_run_id="run-1",
    )
    spec.save(tmp_path)
    loaded = ModelSpec.load(tmp_path)
    assert loaded == spec
    assert loaded.thresholds.operating == 0.3 and loaded.metrics == {"froc": 0.8}
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        ModelBundle.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="oncotriage export"):
        ModelSpec.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="urgent"):
        Thresholds(operating=0.5, urgent=0.4)
