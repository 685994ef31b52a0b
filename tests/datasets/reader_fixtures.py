"""Small synthetic DICOM objects for the reader tests, built with pydicom (and gdcm to encode JPEG).

Pixel values are chosen so that a test can tell which slice, row and column a voxel came
from: see :func:`ct_pixels`.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ROWS, COLUMNS = 6, 8
PIXEL_SPACING = (0.8, 0.7)  # between rows, between columns


def bundled(name: str) -> Path:
    """A pydicom test file that ships with the installed package (never downloaded)."""
    path = TEST_FILES / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not bundled with this pydicom")
    return path


def _file_meta(
    sop_class: str, sop_instance: str, syntax: str = ExplicitVRLittleEndian
) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    return meta


def ct_pixels(slice_index: int, rows: int = ROWS, columns: int = COLUMNS) -> np.ndarray:
    """Stored values ``100 * slice + 10 * row + column``: each voxel says where it belongs."""
    row, column = np.mgrid[:rows, :columns]
    return (100 * slice_index + 10 * row + column).astype(np.int16)


def ct_slice(
    position: Sequence[float],
    *,
    pixels: np.ndarray,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = PIXEL_SPACING,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    series_uid: str = "1.2.826.0.1.3680043.8.498.2",
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.3",
    sop_instance_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    instance_number: int = 1,
) -> Dataset:
    """One single-frame CT Image Storage instance, signed 16-bit, Explicit VR Little Endian."""
    sop_instance_uid = sop_instance_uid or generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(CTImageStorage, sop_instance_uid)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = 5.0  # deliberately not the spacing: the reader must not use it
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds


def ct_series(
    count: int = 18,
    *,
    spacing: float = 1.25,
    origin: Sequence[float] = (-10.0, 20.0, -50.0),
    orientation: Sequence[float] = AXIAL,
    positions: Sequence[float] | None = None,
    **kwargs: object,
) -> list[Dataset]:
    """A CT series in slice order: slice ``k`` at ``origin + offset_k * normal``.

    Args:
        count: number of slices.
        spacing: distance between slices along the normal (mm).
        origin: position of slice 0 (LPS mm).
        orientation: Image Orientation (Patient).
        positions: offsets along the normal (mm) instead of ``k * spacing``.
    """
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    offsets = positions if positions is not None else [k * spacing for k in range(count)]
    series_uid = str(kwargs.pop("series_uid", generate_uid()))
    return [
        ct_slice(
            np.asarray(origin) + offset * normal,
            pixels=ct_pixels(k),
            orientation=orientation,
            series_uid=series_uid,
            instance_number=k + 1,
            **kwargs,  # type: ignore[arg-type]
        )
        for k, offset in enumerate(offsets)
    ]


def radiograph(
    stored: np.ndarray,
    *,
    sop_class: str = DigitalXRayImageStorageForPresentation,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    **attributes: object,
) -> Dataset:
    """A single-frame projection radiograph with ``stored`` values (rows, columns)."""
    sop_instance_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits_allocated = 8 if stored.dtype.itemsize == 1 else 16
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    ds.ImagerPixelSpacing = [0.2, 0.2]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def reparse(ds: Dataset) -> Dataset:
    """Write and read back, as a file received from a hospital would be."""
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def gdcm_transcode(ds: Dataset, gdcm_syntax_name: str) -> Dataset:
    """Re-encode with python-gdcm, e.g. ``"JPEGBaselineProcess1"``, ``"JPEGLosslessProcess14_1"``.

    pydicom has no JPEG encoder, so JPEG test data is made with GDCM's codecs.
    """
    import gdcm

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.dcm", Path(folder) / "out.dcm"
        source.write_bytes(to_bytes(ds))
        reader = gdcm.ImageReader()
        reader.SetFileName(str(source))
        if not reader.Read():
            raise RuntimeError("gdcm could not read the test file")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(
            gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, gdcm_syntax_name))
        )
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"gdcm could not encode {gdcm_syntax_name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(target))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("gdcm could not write the test file")
        return pydicom.dcmread(target)


def enhanced_ct(slices: Sequence[Dataset], frame_order: Sequence[int]) -> Dataset:
    """An Enhanced CT object whose frame ``f`` is ``slices[frame_order[f]]``.

    Orientation, pixel measures and rescale go in the Shared Functional Groups; each
    frame's position in its Per-frame Functional Groups.
    """
    first = slices[0]
    sop_instance_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(EnhancedCTImageStorage, sop_instance_uid)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality"):
        setattr(ds, keyword, getattr(first, keyword))
    for keyword in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    ):
        setattr(ds, keyword, getattr(first, keyword))
    ds.NumberOfFrames = len(frame_order)

    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    transform = Dataset()
    transform.RescaleSlope = first.RescaleSlope
    transform.RescaleIntercept = first.RescaleIntercept
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    per_frame = []
    for index in frame_order:
        position = Dataset()
        position.ImagePositionPatient = slices[index].ImagePositionPatient
        item = Dataset()
        item.PlanePositionSequence = DicomSequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = b"".join(slices[index].PixelData for index in frame_order)
    return ds
