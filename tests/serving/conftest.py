"""Fixtures of the service tests: tiny exported detectors and a running service.

The detectors are MONAI RetinaNets exported to ONNX from seeded random weights (the
``tiny-2d``/``tiny-3d`` test configs): not models, but real bundles that run end to end.
Their score threshold is set to 0 so that every image yields findings, and their triage
thresholds are set per test, so outcomes are known without hard-coding any score.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oncotriage.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


def _export(config: str, out: Path) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from oncotriage.models.export import export_from_config

    export_from_config(REPO / "configs" / config, out, seed=0)
    return out


@pytest.fixture(scope="session")
def base_bundle_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export("detector_tiny_2d.yaml", tmp_path_factory.mktemp("tiny2d") / "bundle")


@pytest.fixture(scope="session")
def base_bundle_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export("detector_tiny_3d.yaml", tmp_path_factory.mktemp("tiny3d") / "bundle")


def derive_bundle(
    base: Path,
    out: Path,
    *,
    operating: float = 0.0,
    urgent: float = 1.0,
    name: str = "oncotriage-test",
    version: str = "1",
    detections_per_img: int = 3,
    **spec_updates: Any,
) -> Path:
    """A copy of ``base`` with the given triage thresholds (and score threshold 0)."""
    shutil.copytree(base, out)
    spec = ModelSpec.load(out)
    postprocess = spec.postprocess.model_copy(
        update={"score_thresh": 0.0, "detections_per_img": detections_per_img}
    )
    thresholds = spec.thresholds.model_copy(update={"operating": operating, "urgent": urgent})
    spec = spec.model_copy(
        update={
            "name": name,
            "version": version,
            "postprocess": postprocess,
            "thresholds": thresholds,
            **spec_updates,
        }
    )
    spec.save(out)
    return out


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
def service_factory(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``service_factory(model_uri=..., **settings)`` -> a context manager of a running service."""
    from service_utils.server import running_service, service_settings

    def factory(**overrides: Any) -> Any:
        create_kwargs = {
            key: overrides.pop(key)
            for key in ("runner_factory", "webhook_sender", "webhook_url", "accounts")
            if key in overrides
        }
        data_dir = overrides.pop("data_dir", tmp_path / "var")
        settings = service_settings(db_url, data_dir, **overrides)
        return running_service(settings, **create_kwargs)

    yield factory
