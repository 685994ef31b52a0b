"""The result SR as stable versions: the AI result, then a verified version per decision.

Through the running service: the report fetched twice is the same object; a specialist's
decision makes a second, VERIFIED/COMPLETE/FINAL version in its own series naming the
specialist, the decision, the note and the corrected boxes, with the AI version as its
predecessor; both come with the study over WADO-RS; dcmtk's dsrdump reads both.
"""

from __future__ import annotations

import io
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for
from service_utils.sr_tools import assert_dsrdump_parses, multipart_datasets

from oncotriage.serving.reports.sr import DECISION_CODES, left_out_comment
from oncotriage.serving.reports.versions import result_uid

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _texts(group: Any, code: pydicom.sr.coding.Code) -> list[str]:
    return [item.value for item in hd.sr.utils.find_content_items(group[0], name=code)]


def _push_and_triage(service, instance: pydicom.Dataset) -> str:
    stow(service, "A", [to_bytes(instance)]).raise_for_status()
    study_id = study_id_for(service, "A", instance.StudyInstanceUID)
    service.wait_for_study(study_id, "A")
    return study_id


def test_report_is_one_object_and_a_decision_makes_a_verified_version(
    sqlite_service_factory, flagging_bundle
) -> None:
    instance = dx_instance(71)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        study_id = _push_and_triage(service, instance)
        with service.client("A") as hospital:
            first = hospital.get(f"/v1/studies/{study_id}/report.dcm")
            second = hospital.get(f"/v1/studies/{study_id}/report.dcm")
            findings = hospital.get(f"/v1/studies/{study_id}/result").json()["findings"]
            wado_before = hospital.get(f"/dicomweb/studies/{instance.StudyInstanceUID}")
        assert first.status_code == second.status_code == 200
        # the same version, built twice, is the same object byte for byte
        assert first.content == second.content
        ai = pydicom.dcmread(io.BytesIO(first.content))
        assert ai.SOPClassUID == COMPREHENSIVE_3D_SR
        assert ai.SOPInstanceUID.startswith("2.25.")
        assert ai.SeriesInstanceUID == result_uid(study_id, "ai-series")
        assert ai.SeriesInstanceUID != instance.SeriesInstanceUID
        assert ai.StudyInstanceUID == instance.StudyInstanceUID
        assert (ai.CompletionFlag, ai.VerificationFlag, ai.PreliminaryFlag) == (
            "COMPLETE",
            "UNVERIFIED",
            "PRELIMINARY",
        )
        assert ai.SeriesNumber == 9901
        assert "PredecessorDocumentsSequence" not in ai
        ai_doc = hd.sr.Comprehensive3DSR.from_dataset(ai)
        # flagging bundle: operating threshold 0, so every finding is reported, 0 left out
        assert len(ai_doc.content.get_planar_roi_measurement_groups()) == len(findings) == 3
        (study_group,) = ai_doc.content.get_image_measurement_groups()
        assert left_out_comment(0) in _texts(study_group, codes.DCM.Comment)
        # the study over WADO-RS: the radiograph and the AI result, the very same bytes
        assert wado_before.status_code == 200
        parts = multipart_datasets(wado_before)
        assert [p.SOPInstanceUID for p in parts] == [instance.SOPInstanceUID, ai.SOPInstanceUID]
        assert parts[1] == ai

        corrected = {
            "series_instance_uid": instance.SeriesInstanceUID,
            "sop_instance_uid": instance.SOPInstanceUID,
            "box_index": [10.0, 12.0, 30.0, 40.0],
            "label": 0,
        }
        note = "Spiculated 12 mm nodule, right upper lobe; CT within 2 weeks."
        with service.client("spec1") as specialist:
            specialist.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
            decided = specialist.post(
                f"/v1/studies/{study_id}/review",
                json={"decision": "refer", "note": note, "corrected_boxes": [corrected]},
            )
            assert decided.status_code == 201, decided.text
        with service.client("A") as hospital:
            verified_bytes = hospital.get(f"/v1/studies/{study_id}/report.dcm").content
            again = hospital.get(f"/v1/studies/{study_id}/report.dcm").content
            wado = hospital.get(f"/dicomweb/studies/{instance.StudyInstanceUID}")
    assert verified_bytes == again
    verified = pydicom.dcmread(io.BytesIO(verified_bytes))
    assert verified.SOPInstanceUID != ai.SOPInstanceUID
    assert verified.SeriesInstanceUID == result_uid(study_id, "verified-series")
    assert verified.SeriesInstanceUID != ai.SeriesInstanceUID
    assert verified.SeriesNumber == 9902
    assert (verified.CompletionFlag, verified.VerificationFlag, verified.PreliminaryFlag) == (
        "COMPLETE",
        "VERIFIED",
        "FINAL",
    )
    (observer,) = verified.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "spec1^"
    assert observer.VerifyingOrganization == "Centre"
    (predecessor_study,) = verified.PredecessorDocumentsSequence
    assert predecessor_study.StudyInstanceUID == instance.StudyInstanceUID
    (predecessor_series,) = predecessor_study.ReferencedSeriesSequence
    assert predecessor_series.SeriesInstanceUID == ai.SeriesInstanceUID
    (predecessor,) = predecessor_series.ReferencedSOPSequence
    assert predecessor.ReferencedSOPInstanceUID == ai.SOPInstanceUID
    # the AI result is the same object as before the decision
    ai_after = next(p for p in multipart_datasets(wado) if p.SOPInstanceUID == ai.SOPInstanceUID)
    assert ai_after == ai
    assert [p.SOPInstanceUID for p in multipart_datasets(wado)] == [
        instance.SOPInstanceUID,
        ai.SOPInstanceUID,
        verified.SOPInstanceUID,
    ]

    doc = hd.sr.Comprehensive3DSR.from_dataset(verified)
    groups = doc.content.get_image_measurement_groups()
    decision_group = next(g for g in groups if g.tracking_identifier == "Specialist decision")
    (evaluation,) = decision_group.get_qualitative_evaluations(name=codes.DCM.Recommendation)
    assert evaluation.value == DECISION_CODES["refer"]
    assert _texts(decision_group, codes.DCM.Comment) == [note]
    rois = doc.content.get_planar_roi_measurement_groups()
    ai_rois = [g for g in rois if g.tracking_identifier.startswith("Finding ")]
    specialist_rois = [g for g in rois if g.tracking_identifier.startswith("Specialist finding")]
    assert len(ai_rois) == 3 and len(specialist_rois) == 1
    region = specialist_rois[0].roi
    reference = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert reference.ReferencedSOPInstanceUID == instance.SOPInstanceUID
    # index box edges x0=10, y0=12, x1=30, y1=40 as SCOORD (pixel corners: +0.5)
    np.testing.assert_allclose(
        region.value, [[10.5, 12.5], [30.5, 12.5], [30.5, 40.5], [10.5, 40.5], [10.5, 12.5]]
    )
    assert specialist_rois[0].finding_type == codes.SCT.Nodule
    # the specialist is a person observer of the verified document, beside the algorithm
    assert "spec1^" in str(verified.ContentSequence)

    ai_dump = assert_dsrdump_parses(first.content)
    verified_dump = assert_dsrdump_parses(verified_bytes)
    assert "UNVERIFIED" in ai_dump and "PRELIMINARY" in ai_dump
    assert "VERIFIED" in verified_dump.replace("UNVERIFIED", "") and "FINAL" in verified_dump
    assert note in verified_dump


def test_findings_below_the_operating_threshold_are_left_out_and_counted(
    sqlite_service_factory, make_bundle
) -> None:
    """Operating threshold 1.0: the tiny detector's three boxes all score below it, so the
    study is routine and its SR reports none of them, saying three were left out."""
    instance = dx_instance(72)
    bundle = make_bundle(operating=1.0, urgent=1.0)
    with sqlite_service_factory(model_uri=str(bundle)) as service:
        study_id = _push_and_triage(service, instance)
        with service.client("A") as hospital:
            result = hospital.get(f"/v1/studies/{study_id}/result").json()
            report = hospital.get(f"/v1/studies/{study_id}/report.dcm")
    assert result["priority"] == "routine"
    assert len(result["findings"]) == 3  # the JSON result keeps every box
    sr = pydicom.dcmread(io.BytesIO(report.content))
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr)
    assert doc.content.get_planar_roi_measurement_groups() == []
    (study_group,) = doc.content.get_image_measurement_groups()
    assert left_out_comment(3) in _texts(study_group, codes.DCM.Comment)
    assert "3 findings below the model's operating threshold" in left_out_comment(3)
    assert_dsrdump_parses(report.content)


def test_a_corrected_ct_box_is_drawn_on_its_slice_and_dsrdump_reads_the_verified_ct_sr() -> None:
    """A 3D corrected box (``xyzxyz``, axis 2 = slice index along the normal) is drawn on
    the slice through its centre; the series' slices run from z = 0 down to z = -30 mm, so
    index 6 (sorted along the normal, ascending) is the slice at z = -18 mm."""
    from datetime import UTC, datetime

    from service_utils.dicom import ct_series

    from oncotriage.models.findings import Finding
    from oncotriage.serving.reports.sr import (
        CorrectedRegion,
        Verification,
        build_sr,
        sr_to_bytes,
    )

    slices = ct_series(5, slices=16, size=32)
    series_uid = str(slices[0].SeriesInstanceUID)
    finding = Finding(
        label=0,
        score=0.8,
        box_index=(4.0, 5.0, 2.0, 12.0, 14.0, 5.0),
        box_world=(-12.0, -11.0, -10.0, -4.0, -2.0, -4.0),
    )
    common: dict[str, Any] = {
        "algorithm_name": "ct-nodule",
        "algorithm_version": "2",
        "suspicion_score": 0.8,
        "priority": "suspicious",
    }
    ai = build_sr(
        slices,
        {series_uid: [finding]},
        sop_instance_uid=result_uid("s", "ai"),
        series_instance_uid=result_uid("s", "ai-series"),
        content_datetime=datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
        **common,
    )
    verification = Verification(
        observer_name="Lovelace^Ada",
        organization="Lakeside Cancer Centre",
        verified_at=datetime(2026, 12, 3, 10, 30, 15, tzinfo=UTC),
        decision="more_imaging",
        note="Repeat low-dose CT in 3 months.",
        corrected_boxes=(
            CorrectedRegion(key=series_uid, label=0, box_index=(3.0, 4.0, 5.0, 9.0, 10.0, 7.0)),
        ),
    )
    verified = build_sr(
        slices,
        {series_uid: [finding]},
        sop_instance_uid=result_uid("s", "verified"),
        series_instance_uid=result_uid("s", "verified-series"),
        content_datetime=verification.verified_at,
        verification=verification,
        predecessors=[ai],
        **common,
    )
    payload = sr_to_bytes(verified)
    reread = pydicom.dcmread(io.BytesIO(payload))
    assert (reread.ContentDate, reread.ContentTime[:6]) == ("20261203", "103015")
    assert reread.VerifyingObserverSequence[0].VerificationDateTime.startswith("20261203103015")
    doc = hd.sr.Comprehensive3DSR.from_dataset(reread)
    (specialist,) = [
        g
        for g in doc.content.get_planar_roi_measurement_groups()
        if g.tracking_identifier == "Specialist finding 1"
    ]
    reference = specialist.roi.ContentSequence[0].ReferencedSOPSequence[0]
    on_slice = next(s for s in slices if s.SOPInstanceUID == reference.ReferencedSOPInstanceUID)
    assert float(on_slice.ImagePositionPatient[2]) == -18.0
    np.testing.assert_allclose(
        specialist.roi.value, [[3.5, 4.5], [9.5, 4.5], [9.5, 10.5], [3.5, 10.5], [3.5, 4.5]]
    )
    decision = next(
        g
        for g in doc.content.get_image_measurement_groups()
        if g.tracking_identifier == "Specialist decision"
    )
    (evaluation,) = decision.get_qualitative_evaluations(name=codes.DCM.Recommendation)
    assert evaluation.value == DECISION_CODES["more_imaging"]
    dump = assert_dsrdump_parses(payload)
    assert "Repeat low-dose CT in 3 months." in dump and "Lovelace^Ada" in dump
    # built again: the same bytes
    assert (
        sr_to_bytes(
            build_sr(
                slices,
                {series_uid: [finding]},
                sop_instance_uid=result_uid("s", "verified"),
                series_instance_uid=result_uid("s", "verified-series"),
                content_datetime=verification.verified_at,
                verification=verification,
                predecessors=[ai],
                **common,
            )
        )
        == payload
    )
