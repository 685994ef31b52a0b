"""Two models in one Triton repository: a radiograph and a CT series, each to its own model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from oncotriage.models.spec import ModelSpec
from oncotriage.serving.triton.backend import make_runner_factory
from oncotriage.serving.triton.server import TritonServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))  # service_utils

from service_utils.dicom import ct_series, dx_instance, to_bytes  # noqa: E402
from service_utils.server import running_service, service_settings, stow, study_id_for  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _renamed(base: Path, out: Path, name: str) -> Path:
    import shutil

    shutil.copytree(base, out)
    spec = ModelSpec.load(out)
    spec.model_copy(
        update={
            "name": name,
            "version": "1",
            "postprocess": spec.postprocess.model_copy(update={"score_thresh": 0.0}),
            "thresholds": spec.thresholds.model_copy(
                update={"operating": 0.0, "urgent": 1.0, "calibrated": True}  # chosen here
            ),
        }
    ).save(out)
    return out


def test_a_radiograph_and_a_ct_series_go_to_their_own_models_in_one_repository(
    running_triton: TritonServer,
    triton_repository: Path,
    tiny_bundles: dict[int, Path],
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    from oncotriage.models.export import export_from_config

    base_3d = tmp_path / "tiny3d"
    export_from_config(REPO / "configs" / "detector_tiny_3d.yaml", base_3d, seed=0)
    cxr = _renamed(tiny_bundles[1], tmp_path / "cxr", "tiny-route-cxr")
    ldct = _renamed(base_3d, tmp_path / "ldct", "tiny-route-ldct")
    settings = service_settings(
        f"sqlite:///{tmp_path / 'oncotriage.db'}",
        tmp_path / "var",
        models=json.dumps({"cxr": str(cxr), "ldct": str(ldct)}),
        inference_backend="triton",
        triton_url=running_triton.grpc_url,
        triton_model_repository=triton_repository,
    )
    factory = make_runner_factory(settings, flavor="portable")
    radiograph, volume = dx_instance(950), ct_series(951, slices=16)
    with running_service(settings, runner_factory=factory) as service:
        stow(service, "A", [to_bytes(radiograph)]).raise_for_status()
        stow(service, "A", [to_bytes(ds) for ds in volume]).raise_for_status()
        dx = service.wait_for_study(
            study_id_for(service, "A", radiograph.StudyInstanceUID), "A", timeout_s=180
        )
        ct = service.wait_for_study(
            study_id_for(service, "A", volume[0].StudyInstanceUID), "A", timeout_s=180
        )
        ready = service.client("A").get("/readyz").json()
    assert (dx["status"], dx["model_name"]) == ("triaged", "tiny-route-cxr"), dx
    assert (ct["status"], ct["model_name"]) == ("triaged", "tiny-route-ldct"), ct
    assert set(ready["checks"]["model"]["routes"]) == {"cxr", "ldct"}
    # Both live in the one repository Triton reads.
    assert (triton_repository / "tiny-route-cxr" / "1" / "model.onnx").is_file()
    assert (triton_repository / "tiny-route-ldct" / "1" / "model.onnx").is_file()
