"""Fixtures shared by the models tests: tiny exported detectors (built once per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from model_fixtures import tiny_config, tiny_network

from oncotriage.models.config import DetectorConfig


@dataclass
class TinyDetector:
    """A tiny MONAI detector and its exported bundle (same weights)."""

    cfg: DetectorConfig
    network: Any  # monai RetinaNet, eval mode
    detector: Any  # monai RetinaNetDetector, eval mode
    bundle: Path


def _tiny(spatial_dims: int, tmp_path_factory: pytest.TempPathFactory) -> TinyDetector:
    from oncotriage.models.build import build_detector
    from oncotriage.models.export import export_onnx

    cfg = tiny_config(spatial_dims)
    network = tiny_network(cfg)
    detector = build_detector(cfg, network).eval()
    bundle = tmp_path_factory.mktemp(f"tiny{spatial_dims}d")
    export_onnx(network, cfg, bundle, version="1")
    return TinyDetector(cfg=cfg, network=network, detector=detector, bundle=bundle)


@pytest.fixture(scope="session")
def tiny2d(tmp_path_factory: pytest.TempPathFactory) -> TinyDetector:
    return _tiny(2, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny3d(tmp_path_factory: pytest.TempPathFactory) -> TinyDetector:
    return _tiny(3, tmp_path_factory)
