"""Routing through real HTTP: a radiograph, a CT series and a mammogram in one session."""

from __future__ import annotations

import json

import sqlalchemy as sa
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation
from service_utils.dicom import ct_series, dx_instance, to_bytes
from service_utils.server import stow, study_id_for

from oncotriage.serving.db.models import Job


def _mammogram(case: int):  # type: ignore[no-untyped-def]
    ds = dx_instance(case)
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.Modality = "MG"
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = "CC"
    ds.ImageLaterality = "L"
    return ds


def test_each_series_goes_to_its_model_and_a_mammogram_to_a_human(
    sqlite_service_factory, make_bundle, base_bundle_3d
) -> None:
    cxr = make_bundle(name="oncotriage-cxr-test", version="4")
    ldct = make_bundle(base=base_bundle_3d, name="oncotriage-ct-test", version="7")
    radiograph, volume, mammogram = dx_instance(61), ct_series(62, slices=16), _mammogram(63)
    routes = json.dumps({"cxr": str(cxr), "ldct": str(ldct)})
    with sqlite_service_factory(models=routes, job_max_attempts=3) as service:
        for datasets in ([radiograph], volume, [mammogram]):
            stow(service, "A", [to_bytes(ds) for ds in datasets]).raise_for_status()
        studies = {
            kind: service.wait_for_study(study_id_for(service, "A", ds.StudyInstanceUID), "A")
            for kind, ds in (("dx", radiograph), ("ct", volume[0]), ("mg", mammogram))
        }
        assert studies["dx"]["status"] == "triaged", studies["dx"]
        assert (studies["dx"]["model_name"], studies["dx"]["model_version"]) == (
            "oncotriage-cxr-test",
            "4",
        )
        assert studies["ct"]["status"] == "triaged", studies["ct"]
        assert (studies["ct"]["model_name"], studies["ct"]["model_version"]) == (
            "oncotriage-ct-test",
            "7",
        )
        mg = studies["mg"]
        assert (mg["status"], mg["priority"]) == ("failed", "needs_manual_review")
        assert mg["failure_reason"] == "no model for MG"
        assert mg["suspicion_score"] is None
        with service.db.session() as session:
            attempts = session.scalars(
                sa.select(Job.attempts).where(Job.study_id == mg["id"])
            ).all()
        assert attempts == [1]  # permanent: never retried
        ready = service.client("A").get("/readyz").json()
        routes_ready = ready["checks"]["model"]["routes"]
        assert routes_ready == {
            "cxr": {"model": "oncotriage-cxr-test", "version": "4"},
            "ldct": {"model": "oncotriage-ct-test", "version": "7"},
        }
        metrics = service.client("root").get("/metrics").text
        assert (
            'oncotriage_model_route_info{model="oncotriage-ct-test",route="ldct",version="7"} 1.0'
            in metrics
        )
