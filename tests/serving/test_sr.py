from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.findings import Finding
from oncotriage.serving.enums import Priority
from oncotriage.serving.reports import build_sr, sr_to_bytes
from oncotriage.serving.reports.sr import FINDING_SCORE, PRIORITY_CODES, SUSPICION_SCORE

STUDY_UID = generate_uid()
ROWS, COLS = 16, 20
PIXEL_SPACING = (0.8, 0.7)  # (between rows = y, between columns = x)
SLICE_SPACING = 2.5
ORIGIN = (-10.0, -20.0, 30.0)


def _base(sop_class: str, modality: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = "SYNTH-001"
    ds.PatientName = "Synthetic^Patient"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.zeros((ROWS, COLS), np.int16).tobytes()
    return ds


def _ct_series(n_slices: int = 5) -> list[Dataset]:
    series_uid = generate_uid()
    slices = []
    for k in range(n_slices):
        ds = _base(CTImageStorage, "CT", series_uid)
        ds.FrameOfReferenceUID = "1.2.3.4"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SLICE_SPACING]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.InstanceNumber = k + 1
        slices.append(ds)
    return slices


def _ct_volume(slices: list[Dataset]) -> ImageVolume:
    return ImageVolume(
        array=np.zeros((COLS, ROWS, len(slices)), np.float32),
        spacing=(PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING),
        origin=ORIGIN,
        modality="CT",
        sop_instance_uids=tuple(ds.SOPInstanceUID for ds in slices),
    )


def _radiograph() -> Dataset:
    ds = _base(DigitalXRayImageStorageForPresentation, "DX", generate_uid())
    ds.ImagerPixelSpacing = [0.2, 0.2]
    return ds


def _round_trip(sr: Dataset) -> hd.sr.Comprehensive3DSR:
    raw = sr_to_bytes(sr)
    assert raw[128:132] == b"DICM"
    reread = pydicom.dcmread(io.BytesIO(raw))
    assert reread.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    via_srread = hd.sr.srread(io.BytesIO(raw))
    assert isinstance(via_srread, hd.sr.Comprehensive3DSR)
    return hd.sr.Comprehensive3DSR.from_dataset(reread)


def _text_values(group: Dataset, code: pydicom.sr.coding.Code) -> list[str]:
    return [item.value for item in hd.sr.utils.find_content_items(group[0], name=code)]


def _sorted_groups(sr: hd.sr.Comprehensive3DSR) -> list:
    groups = sr.content.get_planar_roi_measurement_groups()
    return sorted(groups, key=lambda g: int(g.tracking_identifier.split()[-1]))


def test_radiograph_findings_round_trip() -> None:
    image = _radiograph()
    findings = [
        Finding(
            label=0, score=0.42, box_index=(1.0, 2.0, 5.0, 6.0), box_world=(0.2, 0.4, 1.0, 1.2)
        ),
        Finding(
            label=0, score=0.91, box_index=(10.0, 3.0, 18.0, 9.5), box_world=(2, 0.6, 3.6, 1.9)
        ),
    ]
    sr = build_sr(
        [image],
        {image.SeriesInstanceUID: findings},
        algorithm_name="cxr-nodule-retinanet",
        algorithm_version="7",
        suspicion_score=0.91,
        priority=Priority.URGENT,
        institution_name="Synthetic Union Hospital",
    )
    doc = _round_trip(sr)

    groups = _sorted_groups(doc)
    assert len(groups) == 2
    # numbered by descending score
    expected = [
        (0.91, [[10.5, 3.5], [18.5, 3.5], [18.5, 10.0], [10.5, 10.0], [10.5, 3.5]]),
        (0.42, [[1.5, 2.5], [5.5, 2.5], [5.5, 6.5], [1.5, 6.5], [1.5, 2.5]]),
    ]
    for group, (score, polyline) in zip(groups, expected, strict=True):
        assert group.finding_type == codes.SCT.Nodule
        roi = group.roi
        assert roi is not None
        assert roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        np.testing.assert_allclose(roi.value, polyline, atol=1e-5)
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
        (measurement,) = group.get_measurements(name=FINDING_SCORE)
        assert measurement.value == pytest.approx(score, abs=1e-9)
        assert measurement.unit == codes.UCUM.NoUnits
        assert _text_values(group, codes.DCM.AlgorithmName) == ["cxr-nodule-retinanet"]
        assert _text_values(group, codes.DCM.AlgorithmVersion) == ["7"]

    assert doc.InstitutionName == "Synthetic Union Hospital"
    assert doc.PatientID == "SYNTH-001"
    assert doc.StudyInstanceUID == STUDY_UID
    assert doc.Modality == "SR"
    evidence = doc.get_evidence(current_procedure_only=True)
    assert [e[2] for e in evidence] == [image.SOPInstanceUID]


def test_study_level_score_priority_and_observer() -> None:
    image = _radiograph()
    sr = build_sr(
        [image],
        {image.SeriesInstanceUID: [Finding(0, 0.6, (1, 1, 4, 4), (0, 0, 1, 1))]},
        algorithm_name="cxr-nodule-retinanet",
        algorithm_version="7",
        suspicion_score=0.6,
        priority="suspicious",
    )
    doc = _round_trip(sr)
    (study_group,) = doc.content.get_image_measurement_groups()
    (score,) = study_group.get_measurements(name=SUSPICION_SCORE)
    assert score.value == pytest.approx(0.6)
    (evaluation,) = study_group.get_qualitative_evaluations(name=codes.SCT.Priority)
    assert evaluation.value == PRIORITY_CODES[Priority.SUSPICIOUS]
    assert _text_values(study_group, codes.DCM.AlgorithmName) == ["cxr-nodule-retinanet"]
    (observer,) = doc.content.get_observer_contexts()
    assert observer.observer_type == codes.DCM.Device
    assert observer.observer_identifying_attributes.model_name == "cxr-nodule-retinanet 7"
    # the local coding scheme is declared
    assert [item.CodingSchemeDesignator for item in doc.CodingSchemeIdentificationSequence] == [
        "99ONCOTRIAGE"
    ]


@pytest.mark.parametrize(
    ("z_range", "expected_slice"),
    [((1.0, 3.0), 2), ((1.8, 3.0), 2), ((2.2, 3.0), 3), ((0.0, 0.5), 0), ((4.0, 4.0), 4)],
)
def test_ct_finding_is_drawn_on_the_slice_through_its_centre(
    z_range: tuple[float, float], expected_slice: int
) -> None:
    slices = _ct_series()
    volume = _ct_volume(slices)
    box_index = (2.0, 3.0, z_range[0], 6.0, 8.0, z_range[1])
    finding = Finding(
        label=0,
        score=0.77,
        box_index=box_index,
        box_world=tuple(volume.box_index_to_world(np.array(box_index)).tolist()),
    )
    shuffled = [slices[i] for i in (3, 0, 4, 1, 2)]  # the SR must not depend on list order
    sr = build_sr(
        shuffled,
        {slices[0].SeriesInstanceUID: [finding]},
        algorithm_name="ldct-nodule-retinanet",
        algorithm_version="2",
        suspicion_score=0.77,
        priority="urgent",
    )
    doc = _round_trip(sr)
    (group,) = _sorted_groups(doc)
    roi = group.roi
    np.testing.assert_allclose(
        roi.value, [[2.5, 3.5], [6.5, 3.5], [6.5, 8.5], [2.5, 8.5], [2.5, 3.5]], atol=1e-5
    )
    ref = roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == slices[expected_slice].SOPInstanceUID
    assert ref.ReferencedSOPClassUID == CTImageStorage
    evidence = {e[2] for e in doc.get_evidence(current_procedure_only=True)}
    assert evidence == {ds.SOPInstanceUID for ds in slices}


def test_multiframe_ct_references_the_frame() -> None:
    ds = _base(EnhancedCTImageStorage, "CT", generate_uid())
    ds.NumberOfFrames = 4
    ds.FrameOfReferenceUID = "1.2.3.4"
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for k in range(4):
        frame = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, -k * 2.0]  # descending z
        frame.PlanePositionSequence = [position]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    finding = Finding(0, 0.5, (1, 1, 0, 3, 3, 1), (1.0, 1.0, -4.4, 3.0, 3.0, -3.6))
    doc = _round_trip(
        build_sr(
            [ds],
            {ds.SeriesInstanceUID: [finding]},
            algorithm_name="a",
            algorithm_version="1",
            suspicion_score=0.5,
            priority="suspicious",
        )
    )
    (group,) = _sorted_groups(doc)
    ref = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert int(ref.ReferencedFrameNumber) == 3  # z = -4.0 is the third frame


def test_negative_study_still_gives_a_valid_report() -> None:
    slices = _ct_series(3)
    sr = build_sr(
        slices,
        {slices[0].SeriesInstanceUID: []},
        algorithm_name="ldct-nodule-retinanet",
        algorithm_version="2",
        suspicion_score=0.03,
        priority=Priority.ROUTINE,
    )
    doc = _round_trip(sr)
    assert doc.content.get_planar_roi_measurement_groups() == []
    (study_group,) = doc.content.get_image_measurement_groups()
    assert study_group.get_measurements(name=SUSPICION_SCORE)[0].value == pytest.approx(0.03)
    (evaluation,) = study_group.get_qualitative_evaluations(name=codes.SCT.Priority)
    assert evaluation.value == PRIORITY_CODES[Priority.ROUTINE]
    assert {e[2] for e in doc.get_evidence()} == {ds.SOPInstanceUID for ds in slices}


def test_missing_type2_header_attributes_are_tolerated() -> None:
    image = _radiograph()
    del image.PatientName
    del image.StudyDate
    doc = _round_trip(
        build_sr(
            [image],
            {},
            algorithm_name="a",
            algorithm_version="1",
            suspicion_score=0.0,
            priority="routine",
        )
    )
    assert doc.PatientName == ""


def _kwargs() -> dict:
    return {
        "algorithm_name": "a",
        "algorithm_version": "1",
        "suspicion_score": 0.5,
        "priority": "urgent",
    }


def test_rejects_sources_from_two_studies() -> None:
    first, second = _radiograph(), _radiograph()
    second.StudyInstanceUID = generate_uid()
    with pytest.raises(ValueError, match="2 studies"):
        build_sr([first, second], {}, **_kwargs())


def test_rejects_findings_of_an_unknown_series() -> None:
    with pytest.raises(ValueError, match="neither a SeriesInstanceUID"):
        build_sr(
            [_radiograph()], {"1.2.3": [Finding(0, 0.5, (0, 0, 1, 1), (0, 0, 1, 1))]}, **_kwargs()
        )


def test_two_radiographs_in_one_series_are_keyed_by_instance() -> None:
    first = _radiograph()
    second = _radiograph()
    second.SeriesInstanceUID = first.SeriesInstanceUID
    finding = Finding(0, 0.5, (0, 0, 1, 1), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="key radiograph findings by SOPInstanceUID"):
        build_sr([first, second], {first.SeriesInstanceUID: [finding]}, **_kwargs())
    doc = _round_trip(build_sr([first, second], {second.SOPInstanceUID: [finding]}, **_kwargs()))
    (group,) = _sorted_groups(doc)
    ref = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == second.SOPInstanceUID


def test_rejects_a_ct_finding_outside_the_volume() -> None:
    slices = _ct_series(3)
    finding = Finding(0, 0.5, (0, 0, 0, 1, 1, 1), (0.0, 0.0, 100.0, 1.0, 1.0, 101.0))
    with pytest.raises(ValueError, match="does not match the images"):
        build_sr(slices, {slices[0].SeriesInstanceUID: [finding]}, **_kwargs())


@pytest.mark.parametrize(
    ("override", "message"),
    [({"priority": "whenever"}, "unknown priority"), ({"suspicion_score": 1.5}, "0..1")],
)
def test_rejects_bad_study_values(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_sr([_radiograph()], {}, **{**_kwargs(), **override})


@pytest.mark.parametrize(
    "charset", ["NOT_A_CHARSET", ["ISO_IR 100", "NOT_A_CHARSET"], "ISO_IR 192", "GB18030"]
)
def test_a_source_with_any_character_set_gives_a_report(charset) -> None:
    """A stored instance whose Specific Character Set pydicom does not know (the probe's
    ``NOT_A_CHARSET``) made report.dcm a 500 (ValueError in highdicom). The report is written
    in UTF-8 and keeps the patient's name."""
    image = _radiograph()
    image.SpecificCharacterSet = charset
    image.PatientName = "Zhang^San"
    stored = pydicom.dcmread(io.BytesIO(_to_file_bytes(image)))
    sr = build_sr([stored], {image.SeriesInstanceUID: []}, **_kwargs())
    doc = _round_trip(sr)
    assert str(doc.PatientName) == "Zhang^San"
    if charset in ("NOT_A_CHARSET", ["ISO_IR 100", "NOT_A_CHARSET"]):
        assert doc.SpecificCharacterSet == "ISO_IR 192"


def _to_file_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_study_without_a_model_score_says_why() -> None:
    image = _radiograph()
    sr = build_sr(
        [image],
        {},
        algorithm_name="a",
        algorithm_version="1",
        suspicion_score=None,
        priority=Priority.NEEDS_MANUAL_REVIEW,
        no_score_reason="image_quality: the image is blank after windowing",
    )
    doc = _round_trip(sr)
    (group,) = doc.content.get_image_measurement_groups()
    assert group.get_measurements(name=SUSPICION_SCORE) == []
    assert _text_values(group, codes.DCM.Comment) == [
        "No suspicion score: image_quality: the image is blank after windowing"
    ]
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.Priority)
    assert evaluation.value == PRIORITY_CODES[Priority.NEEDS_MANUAL_REVIEW]
