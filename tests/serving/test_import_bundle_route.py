"""A Model Zoo bundle imported with ``import-bundle`` serves behind the ``ldct`` route.

The zoo-layout lung_nodule_ct_detection bundle (its real configs, seeded random weights:
``model_fixtures.build_zoo_bundle``) goes through :func:`import_bundle` into an MLflow
registry, gets the ``champion`` alias and is served as
``ldct -> models:/lung-nodule-ct-detection@champion`` next to a 2D test bundle as ``cxr``. A
radiograph and a small LDCT series pushed over STOW-RS are each scored by their own model.

The CT series is 32 x 32 pixels of 1 mm, 16 slices of 2 mm (the spec's minimum of 16 slices);
resampled to the bundle's 0.703 x 0.703 x 1.25 mm it is 46 x 46 x 26 voxels (48 x 48 x 32
padded), far fewer than one 512 x 512 x 192 window, so the network runs in one pass (the
bundle's rule, as MONAI's detection inferer): about 1 s on one CPU thread, where a full window
would take many minutes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from service_utils.dicom import ct_series, dx_instance, to_bytes
from service_utils.server import stow, study_id_for, wait_until

MODELS_TESTS = Path(__file__).resolve().parents[1] / "models"
if str(MODELS_TESTS) not in sys.path:
    sys.path.insert(0, str(MODELS_TESTS))  # model_fixtures (as tests/triton finds service_utils)

from model_fixtures import build_zoo_bundle  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

IMPORTED = "lung-nodule-ct-detection"


def test_the_imported_zoo_model_scores_ct_and_the_2d_model_the_radiograph(
    sqlite_service_factory, make_bundle, tmp_path: Path
) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("mlflow")
    from oncotriage.models import registry
    from oncotriage.models.import_bundle import import_bundle

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    zoo = build_zoo_bundle(tmp_path / "lung_nodule_ct_detection")
    imported = import_bundle(zoo, tmp_path / "imported", register=True, tracking_uri=tracking_uri)
    assert (imported.name, imported.registered_version) == (IMPORTED, 1)
    registry.set_alias(IMPORTED, "champion", 1, tracking_uri=tracking_uri)

    cxr = make_bundle(name="oncotriage-cxr-test", version="4")
    radiograph, volume = dx_instance(81), ct_series(82, slices=16)
    routes = {"cxr": str(cxr), "ldct": f"models:/{IMPORTED}@champion"}
    with sqlite_service_factory(
        models=json.dumps(routes), mlflow_tracking_uri=tracking_uri
    ) as service:
        # imported, its thresholds are placeholders: not served; the CT waits, says /readyz
        refused = service.client("A").get("/readyz")
        assert refused.status_code == 503
        error = refused.json()["checks"]["model"]["error"]
        assert f"model {IMPORTED} version 1" in error, error
        assert "placeholder triage thresholds" in error and "oncotriage calibrate" in error
        for datasets in ([radiograph], volume):
            stow(service, "A", [to_bytes(ds) for ds in datasets]).raise_for_status()
        dx_id = study_id_for(service, "A", radiograph.StudyInstanceUID)
        ct_id = study_id_for(service, "A", volume[0].StudyInstanceUID)
        assert service.wait_for_study(dx_id, "A")["status"] == "triaged"
        with service.client("A") as client:
            waiting = client.get(f"/v1/studies/{ct_id}").json()
        assert waiting["status"] not in ("triaged", "failed") and waiting["priority"] is None
        # what `oncotriage calibrate` records on the version; the service then serves it
        registry.record_thresholds(
            IMPORTED,
            1,
            {"operating": 0.5, "urgent": 0.9, "calibrated": True},
            tracking_uri=tracking_uri,
        )
        wait_until(lambda: service.client("A").get("/readyz").status_code == 200, 60)
        ready = service.client("A").get("/readyz").json()["checks"]["model"]["routes"]
        assert (ready["ldct"]["model"], ready["ldct"]["version"]) == (IMPORTED, "1")
        results = {}
        for kind, study_id in (("dx", dx_id), ("ct", ct_id)):
            study = service.wait_for_study(study_id, "A", timeout_s=120)
            assert study["status"] == "triaged", study
            assert study["priority"] != "needs_manual_review", study
            with service.client("A") as client:
                results[kind] = client.get(f"/v1/studies/{study_id}/result").json()

    ct, dx = results["ct"], results["dx"]
    assert (ct["model_name"], ct["model_version"]) == (IMPORTED, "1")
    assert (dx["model_name"], dx["model_version"]) == ("oncotriage-cxr-test", "4")
    assert [(s["model_name"], s["model_version"], s["status"]) for s in ct["series"]] == [
        (IMPORTED, "1", "done")
    ]
    assert ct["series"][0]["is_volume"] is True
    # the imported network's own detections (score threshold 0.02 kept from the bundle)
    assert ct["findings"], "the imported model found nothing on the CT"
    assert {(f["model_name"], f["model_version"]) for f in ct["findings"]} == {(IMPORTED, "1")}
    assert all(f["score"] >= 0.02 and len(f["box_index"]) == 6 for f in ct["findings"])
    assert {(f["model_name"], len(f["box_index"])) for f in dx["findings"]} == {
        ("oncotriage-cxr-test", 4)
    }
