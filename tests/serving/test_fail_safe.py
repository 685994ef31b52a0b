"""Fail-safe triage through real HTTP: an image no model is made for, or that no model can
read, goes to a person with the reason (``needs_manual_review``), at once and without
retries; never a score of 0.0 and "routine"."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for

from oncotriage.datasets.dicom_writer import build_dx_dataset, make_identity
from oncotriage.serving.db.models import Job


def _radiograph(case: int, pixels: np.ndarray, *, centre: float = 2048, width: float = 4096):
    return build_dx_dataset(
        make_identity("cxr", 7, case),
        pixels.astype(np.uint16),
        pixel_spacing_mm=0.5,
        bits_stored=12,
        window_center=centre,
        window_width=width,
        include_pixel_spacing=True,
    )


def _noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(200, 3800, size=(size, size))


def _few_in_window(base: np.ndarray, value: int, seed: int) -> np.ndarray:
    """``base`` with 0.5 % of its pixels set to ``value`` (the rest outside the window)."""
    marked = np.random.default_rng(seed).random(base.shape) < 0.005
    return np.where(marked, value, base)


BAD_RADIOGRAPHS = {
    "1x1": (_radiograph(1, np.full((1, 1), 1000)), "the image is 1 x 1 pixels"),
    "4x4": (_radiograph(2, _noise(4, 2)), "the image is 4 x 4 pixels"),
    "all zero": (_radiograph(3, np.zeros((96, 96))), "the image is blank: every pixel"),
    # every pixel below a narrow window: one value once windowed
    "blank after windowing": (
        _radiograph(4, _noise(96, 4) % 1000, centre=3500, width=100),
        "the image is blank: every pixel",
    ),
    # nearly every pixel below (above) the window: black (white) as the model sees it
    "black in its window": (
        _radiograph(5, _few_in_window(_noise(96, 5) % 1000, 3500, 5), centre=3500, width=100),
        "the image is black in its display window",
    ),
    "saturated": (
        _radiograph(6, _few_in_window(3000 + _noise(96, 6) % 800, 500, 6), centre=500, width=100),
        "the image is white (saturated) in its display window",
    ),
}


def test_bad_radiographs_go_to_a_person_with_the_reason(service_factory, flagging_bundle) -> None:
    with service_factory(model_uri=str(flagging_bundle), job_max_attempts=3) as service:
        datasets = [ds for ds, _ in BAD_RADIOGRAPHS.values()]
        sent = stow(service, "A", [to_bytes(ds) for ds in datasets])
        assert sent.status_code == 200, sent.text
        for name, (ds, reason) in BAD_RADIOGRAPHS.items():
            study_id = study_id_for(service, "A", ds.StudyInstanceUID)
            study = service.wait_for_study(study_id, "A")
            assert (study["status"], study["priority"]) == ("failed", "needs_manual_review"), name
            assert study["failure_reason"].startswith("image_quality: "), (name, study)
            assert reason in study["failure_reason"], (name, study["failure_reason"])
            assert study["suspicion_score"] is None, name
        # a good radiograph beside them is scored as usual
        good = dx_instance(7)
        stow(service, "A", [to_bytes(good)]).raise_for_status()
        study = service.wait_for_study(study_id_for(service, "A", good.StudyInstanceUID), "A")
        assert study["status"] == "triaged" and study["suspicion_score"] is not None
        with service.db.session() as session:
            # permanent failures: one attempt each, never retried
            attempts = session.scalars(sa.select(Job.attempts)).all()
        assert sorted(attempts) == [1] * (len(BAD_RADIOGRAPHS) + 1)


def test_a_mammogram_has_no_model_and_goes_to_a_person(service_factory, flagging_bundle) -> None:
    """A mammogram was read as a radiograph and scored by the chest model (routine or
    urgent by chance). With no model for MG it is needs_manual_review, with no retry."""
    mammogram = dx_instance(8, size=96)
    mammogram.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    mammogram.file_meta.MediaStorageSOPClassUID = mammogram.SOPClassUID
    mammogram.Modality = "MG"
    mammogram.BodyPartExamined = "BREAST"
    with service_factory(model_uri=str(flagging_bundle), job_max_attempts=3) as service:
        stow(service, "A", [to_bytes(mammogram)]).raise_for_status()
        study_id = study_id_for(service, "A", mammogram.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert (study["status"], study["priority"]) == ("failed", "needs_manual_review")
        assert study["failure_reason"] == "no model for MG (the service reads DX/CR)"
        assert study["suspicion_score"] is None
        with service.db.session() as session:
            assert session.scalars(sa.select(Job.attempts)).all() == [1]
        with service.client("spec1") as spec:
            listed = spec.get("/v1/worklist").json()["data"]
            assert [(s["id"], s["priority"]) for s in listed] == [(study_id, "needs_manual_review")]


def test_a_radiograph_of_another_body_part_is_refused_in_words(
    sqlite_service_factory, flagging_bundle
) -> None:
    wrist = dx_instance(9)
    wrist.BodyPartExamined = "EXTREMITY"
    hand = dx_instance(10)
    hand.BodyPartExamined = "HAND"
    chest = dx_instance(11)
    chest.BodyPartExamined = "CHEST"
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        answer = stow(service, "A", [to_bytes(ds) for ds in (wrist, hand, chest)])
        assert answer.status_code == 202, answer.text
        warnings = answer.headers["warning"]
        assert "this radiograph is of the extremity (Body Part Examined EXTREMITY)" in warnings
        assert "this radiograph is of the hand" in warnings
        assert "screens chest radiographs only" in warnings
        with service.client("A") as client:
            listed = client.get("/v1/studies").json()["data"]
        assert [s["study_instance_uid"] for s in listed] == [chest.StudyInstanceUID]


def test_a_view_the_model_is_not_made_for_goes_to_a_person(service_factory, make_bundle) -> None:
    """One route served: a lateral chest radiograph for a model that reads PA/AP views is
    needs_manual_review with the model's reason, after one attempt (the fit was checked
    without the header's view when a single model was served)."""
    from oncotriage.models.intended import IntendedInputs

    reads = IntendedInputs(modalities=["DX", "CR"], views=["PA", "AP"], spatial_dims=2)
    bundle = make_bundle(operating=0.0, urgent=1.0, intended_inputs=reads)
    lateral, frontal = dx_instance(12), dx_instance(13)
    lateral.ViewPosition = "LL"
    frontal.ViewPosition = "PA"
    with service_factory(model_uri=str(bundle), job_max_attempts=3) as service:
        stow(service, "A", [to_bytes(lateral), to_bytes(frontal)]).raise_for_status()
        refused = service.wait_for_study(study_id_for(service, "A", lateral.StudyInstanceUID), "A")
        assert (refused["status"], refused["priority"]) == ("failed", "needs_manual_review")
        assert refused["failure_reason"] == (
            "no model for this DX series: the default model takes PA/AP views, not LL"
        )
        scored = service.wait_for_study(study_id_for(service, "A", frontal.StudyInstanceUID), "A")
        assert scored["status"] == "triaged" and scored["suspicion_score"] is not None
        with service.db.session() as session:
            assert sorted(session.scalars(sa.select(Job.attempts)).all()) == [1, 1]
