"""Radiographs without a usable pixel spacing: triaged on an estimated spacing, marked so."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import ComputedRadiographyImageStorage
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import pretty, stow, study_id_for

from oncotriage.datasets.instance import radiograph_spacing, spacing_is_estimated
from oncotriage.serving.reports.sr import SPACING_ESTIMATED_COMMENT


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def _cr_without_spacing(case: int):
    cr = dx_instance(case)  # 64 x 64 pixels
    cr.SOPClassUID = ComputedRadiographyImageStorage
    cr.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    cr.Modality = "CR"
    cr.PixelSpacing = [0, 0]  # as older CR writes it
    cr.ImagerPixelSpacing = [0, 0]
    return cr


@pytest.mark.parametrize(("field_of_view_mm", "expected"), [(430.0, 430 / 64), (350.0, 350 / 64)])
def test_spacing_is_estimated_from_the_field_of_view(field_of_view_mm, expected) -> None:
    cr = _cr_without_spacing(70)
    assert spacing_is_estimated(cr, field_of_view_mm)
    assert radiograph_spacing(cr, field_of_view_mm=field_of_view_mm) == pytest.approx(
        (expected, expected), rel=1e-12
    )
    assert not spacing_is_estimated(cr, None)
    assert not spacing_is_estimated(dx_instance(71), field_of_view_mm)  # it has one


def test_cr_with_zero_spacing_is_triaged_with_spacing_estimated(
    sqlite_service_factory, flagging_bundle
) -> None:
    cr = _cr_without_spacing(72)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        response = stow(service, "A", [to_bytes(cr)])
        assert response.status_code == 200, pretty(response)
        study_id = study_id_for(service, "A", cr.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        with service.client("A") as client:
            result = client.get(f"/v1/studies/{study_id}/result").json()
            report = client.get(f"/v1/studies/{study_id}/report.dcm")
    assert report.status_code == 200
    assert study["status"] == "triaged", study
    [series] = result["series"]
    assert series["spacing_estimated"] is True
    assert result["findings"]
    assert all(finding["approximate_mm"] for finding in result["findings"])
    # 64 pixels over an assumed 430 mm: each pixel is 6.72 mm
    finding = result["findings"][0]
    width_px = finding["box_index"][2] - finding["box_index"][0]
    width_mm = finding["box_world"][2] - finding["box_world"][0]
    assert width_mm == pytest.approx(width_px * 430 / 64, rel=1e-6)
    # the SR says so too
    comments = [
        item.TextValue
        for item in _walk(pydicom.dcmread(io.BytesIO(report.content)))
        if "TextValue" in item
    ]
    assert SPACING_ESTIMATED_COMMENT in comments


def test_a_radiograph_with_its_spacing_is_not_marked(sqlite_service_factory, flagging_bundle):
    dx = dx_instance(73)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        assert stow(service, "A", [to_bytes(dx)]).status_code == 200
        study_id = study_id_for(service, "A", dx.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        with service.client("A") as client:
            result = client.get(f"/v1/studies/{study_id}/result").json()
    assert result["series"][0]["spacing_estimated"] is False
    assert not any(finding["approximate_mm"] for finding in result["findings"])
