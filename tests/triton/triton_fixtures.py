"""Helpers for the Triton tests: tiny detector bundles and input batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_2D = ROOT / "configs" / "detector_tiny_2d.yaml"

#: Model names in the session repository: one for parity/restart, one for version swaps.
MODEL = "tiny-2d"
SWAP_MODEL = "tiny-2d-swap"


def export_tiny_bundle(out_dir: Path, *, seed: int, cls_bias: float, version: str) -> Path:
    """Export a random-weight tiny 2D RetinaNet bundle (``model.onnx`` + ``model_spec.json``)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from oncotriage.models.build import build_network
    from oncotriage.models.config import load_config
    from oncotriage.models.export import export_onnx

    cfg = load_config(TINY_2D)
    torch.manual_seed(seed)
    network = build_network(cfg)
    with torch.no_grad():
        network.classification_head.cls_logits.bias.fill_(cls_bias)
    export_onnx(network, cfg, out_dir, version=version, seed=seed)
    return out_dir


def random_batch(batch: int, seed: int) -> np.ndarray:
    """``(batch, 1, 64, 64)`` float32 in ``0..1``."""
    return np.random.default_rng(seed).random((batch, 1, 64, 64), dtype=np.float32)
