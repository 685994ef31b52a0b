from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from iod_check import check_iod, check_iod_file, check_value_representations
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from oncotriage.datasets.synth import write_case

CT_SEED = 6  # a small (128 x 128 x 56) series


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("iod")
    cxr = [out / write_case("cxr", 7, i, positive=i != 1, out=out)["image"] for i in range(3)]
    ldct = sorted(
        (out / write_case("ldct", CT_SEED, 0, positive=True, out=out)["image"]).glob("*.dcm")
    )
    return {"cxr": cxr, "ldct": ldct}


@pytest.fixture
def dx(synthetic_files: dict[str, list[Path]]) -> Dataset:
    return pydicom.dcmread(synthetic_files["cxr"][0])


@pytest.fixture
def ct(synthetic_files: dict[str, list[Path]]) -> Dataset:
    return pydicom.dcmread(synthetic_files["ldct"][0])


def test_every_synthetic_instance_is_valid(synthetic_files: dict[str, list[Path]]) -> None:
    files = synthetic_files["cxr"] + synthetic_files["ldct"]
    assert len(files) > 50
    problems = {str(path): check_iod_file(path) for path in files}
    assert {path: p for path, p in problems.items() if p} == {}


@pytest.mark.parametrize(
    ("kind", "keyword", "module"),
    [
        ("dx", "StudyInstanceUID", "General Study"),
        ("dx", "SOPInstanceUID", "SOP Common"),
        ("dx", "PresentationIntentType", "DX Series"),
        ("dx", "ImagerPixelSpacing", "DX Detector"),
        ("dx", "BurnedInAnnotation", "DX Image"),
        ("dx", "PresentationLUTShape", "DX Image"),
        ("dx", "ImageLaterality", "DX Anatomy Imaged"),
        ("dx", "WindowCenter", "DX Image"),
        ("dx", "Rows", "Image Pixel"),
        ("ct", "FrameOfReferenceUID", "Frame of Reference"),
        ("ct", "ImagePositionPatient", "Image Plane"),
        ("ct", "ImageOrientationPatient", "Image Plane"),
        ("ct", "PixelSpacing", "Image Plane"),
        ("ct", "RescaleIntercept", "CT Image"),
        ("ct", "SeriesInstanceUID", "General Series"),
    ],
)
def test_missing_type_1_attribute_is_reported_by_name(
    request: pytest.FixtureRequest, kind: str, keyword: str, module: str
) -> None:
    ds: Dataset = request.getfixturevalue(kind)
    assert check_iod(ds) == []
    delattr(ds, keyword)
    problems = check_iod(ds)
    assert any(
        p.startswith(f"{module} module") and "Type 1" in p and keyword in p and "missing" in p
        for p in problems
    ), problems


@pytest.mark.parametrize(
    ("kind", "keyword"),
    [
        ("dx", "PatientName"),
        ("dx", "AccessionNumber"),
        ("dx", "DetectorType"),
        ("dx", "AcquisitionContextSequence"),
        ("ct", "KVP"),
        ("ct", "SliceThickness"),
        ("ct", "PatientPosition"),
        ("ct", "PositionReferenceIndicator"),
    ],
)
def test_missing_type_2_attribute_is_reported(
    request: pytest.FixtureRequest, kind: str, keyword: str
) -> None:
    ds: Dataset = request.getfixturevalue(kind)
    delattr(ds, keyword)
    assert [p for p in check_iod(ds) if keyword in p and "Type 2" in p and "missing" in p]


def test_empty_type_1_is_reported_but_empty_type_2_is_fine(dx: Dataset) -> None:
    dx.PatientName = ""
    dx.Manufacturer = ""
    dx.AnatomicRegionSequence = Sequence([])
    assert check_iod(dx) == []
    dx.ImageLaterality = ""
    assert check_iod(dx) == [
        "DX Anatomy Imaged module (PS3.3 C.8.11.2): Type 1 attribute ImageLaterality "
        "(0020,0062) is empty"
    ]


def _set(keyword: str, value: object) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        with warnings.catch_warnings():  # pydicom warns about invalid values on assignment
            warnings.simplefilter("ignore")
            setattr(ds, keyword, value)

    return change


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("dx", _set("RescaleIntercept", "5"), "RescaleIntercept is 5; must be 0"),
        ("dx", _set("PresentationLUTShape", "INVERSE"), "must be 'IDENTITY' for MONOCHROME2"),
        ("dx", _set("HighBit", 10), "must be BitsStored - 1"),
        ("dx", _set("Modality", "CR"), "Modality is 'CR'; allowed: 'DX'"),
        (
            "dx",
            _set("PresentationIntentType", "FOR PROCESSING"),
            "this SOP Class needs 'FOR PRESENTATION'",
        ),
        ("dx", _set("PixelRepresentation", 1), "PixelRepresentation is 1"),
        ("dx", _set("ImagerPixelSpacing", ["0", "0.5"]), "values must be positive"),
        ("ct", _set("BitsAllocated", 8), "BitsAllocated is 8; allowed: 16"),
        (
            "ct",
            _set("ImageOrientationPatient", ["1", "0", "0", "1", "0", "0"]),
            "orthogonal unit vectors",
        ),
        ("ct", _set("Rows", 100), "PixelData holds 32768 bytes; the header describes 25600"),
        ("ct", _set("ImageType", ["REPRODUCED", "PRIMARY"]), "ImageType[0] is 'REPRODUCED'"),
    ],
)
def test_enumerated_and_consistency_violations(
    request: pytest.FixtureRequest, kind: str, change: Callable[[Dataset], None], expected: str
) -> None:
    ds: Dataset = request.getfixturevalue(kind)
    change(ds)
    problems = check_iod(ds)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("StudyDate", "2024131", "Invalid value for VR DA"),
        ("PatientID", "X" * 70, "exceeds the maximum length of 64 allowed for VR LO"),
        ("WindowCenter", "12345678901234567", "maximum length of 16 allowed for VR DS"),
        ("SeriesInstanceUID", "1.2.03.4", "Invalid value for VR UI"),
        ("Modality", "dx", "Invalid value for VR CS"),
        ("ImagerPixelSpacing", ["0.5", "0.5", "0.5"], "3 values where the dictionary allows VM 2"),
    ],
)
def test_value_representation_problems(
    dx: Dataset, keyword: str, value: object, expected: str
) -> None:
    _set(keyword, value)(dx)
    problems = check_value_representations(dx)
    assert len(problems) == 1 and keyword in problems[0] and expected in problems[0], problems
    assert any(expected in p for p in check_iod(dx))


def test_window_is_required_only_without_a_voi_lut_sequence(dx: Dataset) -> None:
    del dx.WindowCenter, dx.WindowWidth
    assert any("WindowCenter" in p for p in check_iod(dx))
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.add_new(0x00283006, "US", [0, 100, 200, 300])  # LUT Data, VR 'US or OW'
    dx.VOILUTSequence = Sequence([lut])
    assert check_iod(dx) == []


def test_unknown_sop_class_and_unreadable_file(tmp_path: Path, dx: Dataset) -> None:
    dx.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
    dx.file_meta.MediaStorageSOPClassUID = dx.SOPClassUID
    (problem,) = check_iod(dx)
    assert "Ultrasound Image Storage: no IOD table here" in problem
    path = tmp_path / "not.dcm"
    path.write_bytes(b"hello")
    (problem,) = check_iod_file(path)
    assert "cannot be read as DICOM" in problem


def test_file_meta_must_match_the_dataset(ct: Dataset) -> None:
    ct.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    assert check_iod(ct) == [
        "file meta MediaStorageSOPInstanceUID differs from the dataset's SOPInstanceUID"
    ]
