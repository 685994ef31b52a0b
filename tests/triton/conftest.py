"""Fixtures: tiny exported detectors and a real ``tritonserver`` on 127.0.0.1.

The bundles are random-weight MONAI RetinaNets exported by ``export_onnx`` (synthetic fixtures,
not models; see ``triton_fixtures``). Two versions with different weights let the swap test
tell which version answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from triton_fixtures import MODEL, SWAP_MODEL, export_tiny_bundle

from oncotriage.serving.triton.repository import write_model
from oncotriage.serving.triton.server import TritonServer


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Versions 1 and 2 of the tiny detector (different weights)."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        1: export_tiny_bundle(root / "v1", seed=1, cls_bias=0.0, version="1"),
        2: export_tiny_bundle(root / "v2", seed=2, cls_bias=-0.5, version="2"),
    }


@pytest.fixture(scope="session")
def triton_repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundles: dict[int, Path]
) -> Path:
    """Portable repository: ``tiny-2d`` v1, and ``tiny-2d-swap`` v1 (v2 is deployed by a test)."""
    repo = tmp_path_factory.mktemp("triton-repo")
    for name in (MODEL, SWAP_MODEL):
        write_model(
            repo,
            tiny_bundles[1],
            model_name=name,
            version=1,
            flavor="portable",
            max_batch_size=8,
            preferred_batch_sizes=(4, 8),
            max_queue_delay_us=2000,
            intra_op_threads=1,
        )
    return repo


@pytest.fixture(scope="session")
def triton_server(
    triton_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """A real ``tritonserver`` (nvidia-pytriton wheel, Python backend, CPU) on 127.0.0.1."""
    server = TritonServer(
        triton_repository,
        workdir=tmp_path_factory.mktemp("tritonserver"),
        exit_timeout_s=5,
        startup_timeout_s=120,
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def running_triton(triton_server: TritonServer) -> TritonServer:
    """The session server, started again if a previous test left it stopped."""
    if not triton_server.is_running():
        triton_server.start()
    return triton_server
