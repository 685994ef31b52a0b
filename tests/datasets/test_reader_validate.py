"""Upload-time checks (validate_instance, is_valid_uid) and grouping files into series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    UltrasoundImageStorage,
    generate_uid,
)
from reader_fixtures import bundled, ct_pixels, ct_series, ct_slice, radiograph, reparse, to_bytes

from oncotriage.datasets.image import UnsupportedImageError
from oncotriage.datasets.reader import (
    MAX_FRAMES,
    MAX_PIXELS_PER_FRAME,
    group_series,
    is_valid_uid,
    read_dataset,
    validate_instance,
)


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.1.2", True),
        ("0", True),
        ("1.0.2", True),
        ("2.25.329800735698586629295641978511506172918", True),
        ("1." + "2" * 62, True),  # 64 characters
        ("1." + "2" * 63, False),  # 65 characters
        ("1.02", False),  # leading zero in a component
        ("01.2", False),
        ("1..2", False),
        (".1.2", False),
        ("1.2.", False),
        ("1.2.a", False),
        ("1.2 ", False),
        ("", False),
        (None, False),
        (12, False),
    ],
)
def test_is_valid_uid(uid: object, valid: bool) -> None:
    assert is_valid_uid(uid) is valid


def _ct() -> Dataset:
    return ct_slice((0.0, 0.0, 0.0), pixels=ct_pixels(0))


def _set(keyword: str, value: object) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        setattr(ds, keyword, value)

    return change


def _delete(keyword: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        delattr(ds, keyword)

    return change


def _syntax(uid: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = uid

    return change


def _no_file_meta(ds: Dataset) -> None:
    ds.file_meta = FileMetaDataset()


def _short_pixel_data(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[:-10]


def _rgb(ds: Dataset) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"


def _many_frames(ds: Dataset) -> None:
    ds.NumberOfFrames = MAX_FRAMES + 1


def _huge_frame(ds: Dataset) -> None:
    ds.Rows = ds.Columns = int(np.sqrt(MAX_PIXELS_PER_FRAME)) + 1


def _huge_volume(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = 1024


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            _set("SOPClassUID", UltrasoundImageStorage),
            "modality",
            "Ultrasound Image Storage is not a screening modality",
        ),
        (
            _set("SOPClassUID", "1.2.3.4"),
            "modality",
            "SOP Class 1.2.3.4 is not a screening modality",
        ),
        (_delete("SOPClassUID"), "invalid_uid", "missing SOP Class UID"),
        (_delete("SeriesInstanceUID"), "invalid_uid", "missing Series Instance UID"),
        (
            _set("StudyInstanceUID", "1.2.03"),
            "invalid_uid",
            "Study Instance UID '1.2.03' is not a valid UID",
        ),
        (_set("SOPInstanceUID", "1.2." + "3" * 70), "invalid_uid", "SOP Instance UID"),
        (_set("FrameOfReferenceUID", "1.2.x"), "invalid_uid", "Frame of Reference UID"),
        (
            _syntax(MPEG2MPML),
            "transfer_syntax",
            "transfer syntax 1.2.840.10008.1.2.4.100 (MPEG2 Main Profile / Main Level) "
            "not supported",
        ),
        (
            _syntax("1.2.3.99"),
            "transfer_syntax",
            "transfer syntax 1.2.3.99 (unknown) not supported",
        ),
        (_no_file_meta, "transfer_syntax", "no Transfer Syntax UID"),
        (_delete("PixelData"), "no_pixel_data", "no Pixel Data"),
        (_huge_frame, "too_large", "exceeds the limits"),
        (_many_frames, "too_large", "exceeds the limits"),
        (_huge_volume, "too_large", "pixels per object"),
        (_rgb, "photometric", "Photometric Interpretation RGB"),
        (_set("BitsAllocated", 1), "photometric", "Bits Allocated 1"),
        (_short_pixel_data, "corrupt", "Pixel Data is truncated: 86 of 96 bytes"),
        (_delete("ImagePositionPatient"), "missing_attribute", "no Image Position (Patient)"),
        (_set("PixelSpacing", [0.0, 0.5]), "missing_attribute", "Pixel Spacing"),
        (
            _set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
            "series_geometry",
            "not two orthogonal unit vectors",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
def test_validate_instance_refuses(
    change: Callable[[Dataset], None], code: str, message: str
) -> None:
    ds = _ct()
    change(ds)
    with pytest.raises(UnsupportedImageError) as caught:
        validate_instance(ds)
    assert caught.value.code == code
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "make",
    [
        _ct,
        lambda: reparse(_ct()),
        lambda: pydicom.dcmread(bundled("CT_small.dcm")),
        lambda: pydicom.dcmread(bundled("693_J2KI.dcm")),
        lambda: radiograph(np.zeros((4, 5), np.uint16)),
    ],
)
def test_validate_instance_accepts(make: Callable[[], Dataset]) -> None:
    validate_instance(make())


def test_radiograph_needs_a_spacing_at_upload() -> None:
    ds = radiograph(np.zeros((4, 5), np.uint16))
    del ds.ImagerPixelSpacing
    with pytest.raises(UnsupportedImageError) as caught:
        validate_instance(ds)
    assert caught.value.code == "missing_attribute"


def _dicomdir() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MediaStorageDirectoryStorage
    ds.FileSetID = "SYNTH"
    return ds


def test_group_series_finds_groups_and_reasons(tmp_path: Path) -> None:
    big = ct_series(16)
    small = ct_series(3)
    xray = radiograph(np.zeros((4, 5), np.uint16))
    nested = tmp_path / "study" / "series1"
    nested.mkdir(parents=True)
    for k, ds in enumerate(big):
        (nested / f"slice{15 - k:02d}.dcm").write_bytes(to_bytes(ds))
    for k, ds in enumerate(small):
        (tmp_path / f"small{k}.dcm").write_bytes(to_bytes(ds))
    (tmp_path / "xray.dcm").write_bytes(to_bytes(xray))
    (tmp_path / "notes.txt").write_text("not an image")  # ignored by its suffix
    (tmp_path / "IMG0001").write_text("not an image")  # no suffix: read, and refused
    (tmp_path / "cut.dcm").write_bytes(to_bytes(big[0])[:400])
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "DICOMDIR").write_bytes(to_bytes(_dicomdir()))
    no_series = reparse(small[0])
    del no_series.SeriesInstanceUID
    (tmp_path / "no_series.dcm").write_bytes(to_bytes(no_series))
    missing = tmp_path / "does-not-exist"

    groups = group_series([tmp_path, nested / "slice03.dcm", missing])

    assert set(groups.series) == {
        str(big[0].SeriesInstanceUID),
        str(small[0].SeriesInstanceUID),
        str(xray.SeriesInstanceUID),
    }
    big_files = groups.series[str(big[0].SeriesInstanceUID)]
    assert big_files == sorted(nested.glob("*.dcm"))  # sorted, and slice03 not listed twice
    assert len(groups.series[str(small[0].SeriesInstanceUID)]) == 3
    reasons = {path.name: error.code for path, error in groups.unreadable.items()}
    assert reasons == {
        "IMG0001": "not_dicom",
        "cut.dcm": "corrupt",
        "no_series.dcm": "invalid_uid",
        "does-not-exist": "not_found",
    }
    assert {path.name for path in groups.ignored} == {".DS_Store", "DICOMDIR", "notes.txt"}


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_malformed_values_are_refused_not_raised_as_other_errors() -> None:
    ds = radiograph(np.zeros((4, 5), np.uint16))
    ds.EstimatedRadiographicMagnificationFactor = "1.25"
    data = to_bytes(ds)
    assert data.count(b"1.25") == 1
    broken = read_dataset(data.replace(b"1.25", b"1,25"))  # a comma: not a DS
    with pytest.raises(UnsupportedImageError) as caught:
        validate_instance(broken)
    assert caught.value.code == "corrupt"
    assert "malformed or inconsistent attribute values" in str(caught.value)
