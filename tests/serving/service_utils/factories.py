"""Test bundles and services built from a database URL: shared by fixtures of any scope."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oncotriage.models.spec import ModelSpec


def derive_bundle(
    base: Path,
    out: Path,
    *,
    operating: float = 0.0,
    urgent: float = 1.0,
    name: str = "oncotriage-test",
    version: str = "1",
    detections_per_img: int = 3,
    calibrated: bool = True,
    **spec_updates: Any,
) -> Path:
    """A copy of ``base`` with the given triage thresholds (and score threshold 0), marked
    calibrated: the test chose them (the service serves no version with placeholders);
    ``calibrated=False`` makes them placeholders, as an uncalibrated model's."""
    shutil.copytree(base, out)
    spec = ModelSpec.load(out)
    postprocess = spec.postprocess.model_copy(
        update={"score_thresh": 0.0, "detections_per_img": detections_per_img}
    )
    thresholds = spec.thresholds.model_copy(
        update={"operating": operating, "urgent": urgent, "calibrated": calibrated}
    )
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


def service_factory_for(database_url: str, tmp_path: Path) -> Callable[..., Any]:
    from service_utils.server import running_service, service_settings

    def factory(**overrides: Any) -> Any:
        create_kwargs = {
            key: overrides.pop(key)
            for key in ("runner_factory", "webhook_sender", "webhook_url", "accounts")
            if key in overrides
        }
        data_dir = overrides.pop("data_dir", tmp_path / "var")
        settings = service_settings(database_url, data_dir, **overrides)
        return running_service(settings, **create_kwargs)

    return factory
