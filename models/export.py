"""Export a MONAI RetinaNet to an ONNX model bundle (``model.onnx`` + ``model_spec.json``).

The network is traced (``torch.jit.script`` of MONAI's RetinaNet fails) with
``use_list_output=True``: outputs ``cls_logits_<level>`` for every level, then
``box_regression_<level>``, each ``(B, A*K, *S_l)`` / ``(B, A*2D, *S_l)``. The batch axis is
dynamic; spatial axes too for 3D (whole volumes or windows). The graph is checked with
``onnx.checker``, optionally saved after ONNX Runtime's offline *basic* optimisation
(constant folding, redundant-node elimination, Conv fusions), and its outputs are compared
with torch before the bundle is written. Imports torch: never used by serving.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from oncotriage.models.config import DetectorConfig
from oncotriage.models.spec import MODEL_FILENAME, ModelSpec, Thresholds

__all__ = ["ExportCheckError", "export_from_config", "export_onnx"]

logger = logging.getLogger(__name__)

#: ONNX Runtime vs torch tolerance on head outputs accepted at export.
EXPORT_ATOL = 1e-3
EXPORT_RTOL = 1e-3


class ExportCheckError(RuntimeError):
    """The exported graph does not reproduce the torch network."""


def _example_spatial(cfg: DetectorConfig) -> list[int]:
    if cfg.preprocessing.input_size is not None:
        return list(cfg.preprocessing.input_size)
    if not cfg.dynamic_spatial and cfg.inference.sliding_window is not None:
        return list(cfg.inference.sliding_window.roi_size)
    # Two blocks of size_divisible: enough for every level to have >1 voxel, cheap to trace.
    return [2 * d for d in cfg.size_divisible]


def _ort_outputs(path: Path, x: np.ndarray, *, optimize: bool = False) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, {session.get_inputs()[0].name: x}))


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ExportCheckError(
            f"output shapes differ: {[x.shape for x in a]} vs {[y.shape for y in b]}"
        )
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def _check_close(name: str, got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    diff = _max_diff(got, ref)
    for g, r in zip(got, ref, strict=True):
        if not np.allclose(g, r, atol=EXPORT_ATOL, rtol=EXPORT_RTOL):
            raise ExportCheckError(f"{name}: outputs differ from torch by up to {diff:.3g}")
    return diff


def _optimize_basic(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), sess_options=options, providers=["CPUExecutionProvider"])


def export_onnx(
    network: torch.nn.Module,
    cfg: DetectorConfig,
    out_dir: Path,
    *,
    opset: int | None = None,
    model_name: str | None = None,
    version: str = "0",
    thresholds: Thresholds | None = None,
    metrics: dict[str, float] | None = None,
    dataset_fingerprint: str | None = None,
    training_run_id: str | None = None,
    intended_use: str | None = None,
    seed: int = 0,
) -> Path:
    """Write ``out_dir/model.onnx`` and ``out_dir/model_spec.json`` for ``network``.

    Args:
        network: a MONAI ``RetinaNet`` built from ``cfg`` (weights as they are; it is copied,
            put in eval mode and switched to list outputs, the original is left untouched).
        cfg: the detector config the network was built from.
        out_dir: bundle folder (created).
        opset: ONNX opset (default ``cfg.export.opset``, at least 17).
        model_name: registry name (default ``cfg.name``).
        version: model version string.
        thresholds: calibrated triage thresholds (default: uncalibrated placeholders).
        metrics, dataset_fingerprint, training_run_id, intended_use: recorded in the spec.
        seed: seed of the random input used to check the export.

    Returns:
        Path of ``model.onnx``.

    Raises:
        ExportCheckError: if ONNX Runtime does not reproduce the torch outputs.
        ValueError: if ``opset`` is below 17.
    """
    opset = int(opset if opset is not None else cfg.export.opset)
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or newer")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / MODEL_FILENAME

    net = copy.deepcopy(network).cpu().float().eval()
    if hasattr(net, "use_list_output"):
        setattr(net, "use_list_output", True)  # noqa: B010 - nn.Module attribute typing
    output_names = cfg.output_names()
    dims = cfg.spatial_dims
    axes: dict[int, str] = {0: "batch"}
    if cfg.dynamic_spatial:
        axes.update({2 + d: f"spatial_{d}" for d in range(dims)})
    dynamic_axes = {"image": axes} | {name: {0: "batch"} for name in output_names}

    spatial = _example_spatial(cfg)
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand((1, cfg.in_channels, *spatial), generator=generator)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of dynamo, which cannot
            # export MONAI's RetinaNet yet; the traced NaN/Inf checks are no-ops at inference.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (example,),
                str(raw_path),
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(raw_path), full_check=True)

        # Check on a batch of two, at another size when spatial axes are dynamic.
        check_spatial = (
            [s + d for s, d in zip(spatial, cfg.size_divisible, strict=True)]
            if cfg.dynamic_spatial
            else spatial
        )
        check = torch.rand((2, cfg.in_channels, *check_spatial), generator=generator)
        with torch.no_grad():
            reference = [t.numpy() for t in net(check)]
        x = check.numpy()
        raw_diff = _check_close("exported graph", _ort_outputs(raw_path, x), reference)

        info: dict[str, Any] = {
            "opset": opset,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "exporter": "torch.onnx.export(dynamo=False), traced with use_list_output=True",
            "dynamic_axes": {"image": axes},
            "max_abs_diff_vs_torch": raw_diff,
        }
        try:
            import monai

            info["monai"] = monai.__version__
        except ImportError:  # pragma: no cover - build needs MONAI anyway
            pass
        chosen = raw_path
        if cfg.export.optimize == "basic":
            import onnxruntime as ort

            opt_path = Path(tmp) / "optimized.onnx"
            _optimize_basic(raw_path, opt_path)
            onnx.checker.check_model(str(opt_path), full_check=True)
            opt_diff = _check_close("optimised graph", _ort_outputs(opt_path, x), reference)
            info.update(
                {
                    "graph_optimization": "onnxruntime ORT_ENABLE_BASIC (offline)",
                    "onnxruntime": ort.__version__,
                    "max_abs_diff_vs_torch": opt_diff,
                    "nodes_before_optimization": len(onnx.load(str(raw_path)).graph.node),
                }
            )
            chosen = opt_path
        model = onnx.load(str(chosen))
        info["nodes"] = len(model.graph.node)
        model.producer_name = "oncotriage"
        model.doc_string = (
            f"{model_name or cfg.name} v{version}: MONAI RetinaNet, outputs {output_names}"
        )
        onnx.save(model, str(onnx_path))

    spec = ModelSpec.from_config(
        cfg,
        version=version,
        name=model_name,
        thresholds=thresholds,
        metrics=dict(metrics or {}),
        dataset_fingerprint=dataset_fingerprint,
        training_run_id=training_run_id,
        export=info,
        **({"intended_use": intended_use} if intended_use else {}),
    )
    spec.save(out_dir)
    logger.info(
        "exported %s v%s to %s (%d nodes, max |onnx - torch| = %.2g)",
        spec.name,
        version,
        onnx_path,
        info["nodes"],
        info["max_abs_diff_vs_torch"],
    )
    return onnx_path


#: Intended use recorded for exports of trained weights unless the caller says more.
TRAINED_INTENDED_USE = (
    "Research use only: flags studies for specialist review, never a diagnosis. "
    "Not for clinical use until validated on local data."
)


def export_from_config(
    config_path: Path,
    out_dir: Path,
    *,
    checkpoint: Path | None = None,
    overrides: Sequence[str] = (),
    model_name: str | None = None,
    version: str = "0",
    opset: int | None = None,
    seed: int = 0,
) -> Path:
    """Build the network of a config file, load weights, export the bundle (``oncotriage export``).

    Without ``checkpoint`` the weights are MONAI's random initialisation (seeded): such a bundle
    runs end to end but is **not a model**; its spec says so in ``intended_use``.

    Returns:
        Path of ``model.onnx``.
    """
    from oncotriage.models.build import build_network, load_network_weights
    from oncotriage.models.config import load_config
    from oncotriage.models.spec import UNTRAINED_INTENDED_USE

    cfg = load_config(Path(config_path), overrides)
    torch.manual_seed(seed)
    network = build_network(cfg)
    if checkpoint is not None:
        load_network_weights(network, Path(checkpoint))
        intended_use = TRAINED_INTENDED_USE
    else:
        logger.warning(
            "NO CHECKPOINT: exporting randomly initialised weights. This bundle is NOT A MODEL; "
            "its scores are meaningless. Use it only to test the plumbing."
        )
        intended_use = UNTRAINED_INTENDED_USE
    return export_onnx(
        network,
        cfg,
        Path(out_dir),
        opset=opset,
        model_name=model_name,
        version=version,
        intended_use=intended_use,
        training_run_id=None,
    )
