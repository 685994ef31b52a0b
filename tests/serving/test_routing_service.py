"""Routing through real HTTP: a radiograph, a CT series and a mammogram in one session."""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Any

import sqlalchemy as sa
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, generate_uid
from service_utils.dicom import ct_series, dx_instance, to_bytes
from service_utils.server import stow, study_id_for

from oncotriage.serving.db.models import Finding, Job, Series


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
        assert mg["failure_reason"] == "no model for MG (the service reads DX/CR/CT)"
        assert mg["suspicion_score"] is None
        with service.db.session() as session:
            attempts = session.scalars(
                sa.select(Job.attempts).where(Job.study_id == mg["id"])
            ).all()
        assert attempts == [1]  # permanent: never retried
        ready = service.client("A").get("/readyz").json()
        routes_ready = ready["checks"]["model"]["routes"]
        assert {
            name: (route["model"], route["version"], route["precision"])
            for name, route in routes_ready.items()
        } == {
            "cxr": ("oncotriage-cxr-test", "4", "fp32"),
            "ldct": ("oncotriage-ct-test", "7", "fp32"),
        }
        metrics = service.client("root").get("/metrics").text
        assert (
            'oncotriage_model_route_info{model="oncotriage-ct-test",route="ldct",version="7"} 1.0'
            in metrics
        )


def _reconstruction(
    slices: list[Any], *, thickness_mm: float, kernel: str, new_series: bool
) -> list[Any]:
    """The same CT acquisition reconstructed again: another series of the same study, with
    its own slice thickness and kernel (as a scanner sends soft-tissue and lung series)."""
    series_uid = generate_uid() if new_series else slices[0].SeriesInstanceUID
    out = []
    for ds in slices:
        copy = deepcopy(ds)
        copy.SeriesInstanceUID = series_uid
        if new_series:
            copy.SOPInstanceUID = generate_uid()
            copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        copy.SliceThickness = thickness_mm
        copy.ConvolutionKernel = kernel
        out.append(copy)
    return out


def _jobs(service: Any, study_id: str) -> list[tuple[str, str, str | None]]:
    """(series UID, job state, last_error) of a study's series jobs, oldest first."""
    with service.db.session() as session:
        rows = session.execute(
            sa.select(Series.series_instance_uid, Job.state, Job.last_error)
            .join(Series, Series.id == Job.series_id)
            .where(Job.study_id == study_id)
            .order_by(Job.id)
        ).all()
    return [(uid, str(state), error) for uid, state, error in rows]


def test_a_ct_study_is_triaged_on_its_thin_lung_series(
    sqlite_service_factory, make_bundle, base_bundle_3d
) -> None:
    """Two reconstructions in one request: the thin lung-kernel series is scored, the thick
    soft-tissue one is kept but passed over with the reason (not a failure of the study)."""
    ldct = make_bundle(base=base_bundle_3d, name="oncotriage-ct-test", version="7")
    acquired = ct_series(71, slices=16)
    soft = _reconstruction(acquired, thickness_mm=2.5, kernel="STANDARD", new_series=False)
    lung = _reconstruction(acquired, thickness_mm=1.25, kernel="LUNG", new_series=True)
    with sqlite_service_factory(models=json.dumps({"ldct": str(ldct)})) as service:
        stow(service, "A", [to_bytes(ds) for ds in soft + lung]).raise_for_status()
        study_id = study_id_for(service, "A", acquired[0].StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert (study["status"], study["model_name"]) == ("triaged", "oncotriage-ct-test")
        jobs = {uid: (state, error) for uid, state, error in _jobs(service, study_id)}
        lung_uid, soft_uid = lung[0].SeriesInstanceUID, soft[0].SeriesInstanceUID
        assert jobs[lung_uid] == ("done", None)
        state, reason = jobs[soft_uid]
        assert state == "superseded"
        assert reason == (
            f"not scored: the study is triaged on series {lung_uid} (1.25 mm slices, kernel "
            "LUNG, 16 slices), chosen by the CT series rule (thinnest slices, then a lung kernel)"
        )
        with service.db.session() as session:
            scored = set(
                session.scalars(
                    sa.select(Series.series_instance_uid)
                    .join(Finding, Finding.series_id == Series.id)
                    .where(Finding.study_id == study_id)
                )
            )
        assert scored <= {lung_uid}


def test_a_thinner_series_sent_later_replaces_the_first_result(
    sqlite_service_factory, make_bundle, base_bundle_3d
) -> None:
    """A thick series triaged first, then the lung series of the same study arrives: the
    study is triaged again on the lung series alone, the first run retired."""
    ldct = make_bundle(base=base_bundle_3d, name="oncotriage-ct-test", version="7")
    acquired = ct_series(72, slices=16)
    soft = _reconstruction(acquired, thickness_mm=2.5, kernel="STANDARD", new_series=False)
    lung = _reconstruction(acquired, thickness_mm=1.0, kernel="B60f", new_series=True)
    with sqlite_service_factory(models=json.dumps({"ldct": str(ldct)})) as service:
        stow(service, "A", [to_bytes(ds) for ds in soft]).raise_for_status()
        study_id = study_id_for(service, "A", acquired[0].StudyInstanceUID)
        assert service.wait_for_study(study_id, "A")["status"] == "triaged"
        assert [state for _, state, _ in _jobs(service, study_id)] == ["done"]
        stow(service, "A", [to_bytes(ds) for ds in lung]).raise_for_status()
        study = service.wait_for_study(study_id, "A")
        assert study["status"] == "triaged"
        jobs = _jobs(service, study_id)
        assert [(uid, state) for uid, state, _ in jobs] == [
            (soft[0].SeriesInstanceUID, "superseded"),
            (lung[0].SeriesInstanceUID, "done"),
        ]
        assert jobs[0][2] == "not scored: series of job 2 chosen instead"


def test_a_route_whose_model_is_down_holds_back_only_what_may_be_its_own(
    tmp_path, make_bundle, base_bundle_3d
) -> None:
    """One route's model cannot be loaded (here: placeholder thresholds): a radiograph that a
    loaded route *before* it takes is scored; a CT, which may be the missing route's, waits
    (ModelUnavailableError: requeued, attempts untouched); with the order swapped, the
    radiograph waits too, since the first route might have taken it."""
    import pytest

    from oncotriage.datasets.reader import read_image
    from oncotriage.serving.inference import ModelManager, ModelUnavailableError
    from oncotriage.serving.modelset import ModelSet
    from oncotriage.serving.settings import Settings

    cxr = make_bundle(name="oncotriage-cxr-test", version="4")
    ldct = make_bundle(
        base=base_bundle_3d, name="oncotriage-ct-test", version="7", calibrated=False
    )
    settings = Settings(data_dir=tmp_path / "var", register_demo_model=False)
    radiograph = dx_instance(64)
    (tmp_path / "dx.dcm").write_bytes(to_bytes(radiograph))
    (tmp_path / "ct").mkdir()
    for index, ds in enumerate(ct_series(65, slices=16)):
        (tmp_path / "ct" / f"{index:02d}.dcm").write_bytes(to_bytes(ds))
    dx_image = read_image([tmp_path / "dx.dcm"])
    ct_image = read_image(sorted((tmp_path / "ct").glob("*.dcm")))

    def model_set(order: list[str]) -> ModelSet:
        uris = {"cxr": str(cxr), "ldct": str(ldct)}
        return ModelSet({name: ModelManager(settings, uri=uris[name]) for name in order})

    models = model_set(["cxr", "ldct"])
    assert models.any_loaded()
    assert models.for_image(dx_image, radiograph).name == "oncotriage-cxr-test"
    with pytest.raises(ModelUnavailableError, match="placeholder triage thresholds"):
        models.for_image(ct_image)
    swapped = model_set(["ldct", "cxr"])
    assert swapped.any_loaded()  # the radiograph model loads: the workers keep claiming
    with pytest.raises(ModelUnavailableError, match="oncotriage-ct-test version 7"):
        swapped.for_image(dx_image, radiograph)
