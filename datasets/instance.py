"""One DICOM instance: parse it, and check cheaply that the pipeline can use it.

:func:`read_dataset` and :func:`validate_instance` are what the service runs at upload time,
before anything is stored or decoded. Re-exported by :mod:`oncotriage.datasets.reader`.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from oncotriage.datasets.image import RefusalCode, UnsupportedImageError
from oncotriage.datasets.pixels import (
    check_decodable,
    expected_native_length,
    number_of_frames,
    transfer_syntax_of,
)
from oncotriage.datasets.series import plane_of_slice

logger = logging.getLogger(__name__)

#: Largest Rows x Columns accepted (a decompression-bomb guard; mammograms are ~30 M).
MAX_PIXELS_PER_FRAME = 8192 * 8192
#: Most frames accepted in one multi-frame object.
MAX_FRAMES = 2048
#: Most pixels accepted in one object (all frames): 2048 slices of 512 x 512.
MAX_TOTAL_PIXELS = 2048 * 512 * 512

CT_SLICE_CLASSES = frozenset({CTImageStorage})
CT_MULTIFRAME_CLASSES = frozenset({EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage})
RADIOGRAPH_CLASSES = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        DigitalMammographyXRayImageStorageForPresentation,
        DigitalMammographyXRayImageStorageForProcessing,
    }
)
#: SOP Class UID -> Modality of every class the screening pipeline reads.
SCREENING_SOP_CLASSES: dict[str, str] = {
    CTImageStorage: "CT",
    EnhancedCTImageStorage: "CT",
    LegacyConvertedEnhancedCTImageStorage: "CT",
    ComputedRadiographyImageStorage: "CR",
    DigitalXRayImageStorageForPresentation: "DX",
    DigitalXRayImageStorageForProcessing: "DX",
    DigitalMammographyXRayImageStorageForPresentation: "MG",
    DigitalMammographyXRayImageStorageForProcessing: "MG",
}

_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_REQUIRED_UIDS = (
    ("SOPInstanceUID", "SOP Instance UID"),
    ("StudyInstanceUID", "Study Instance UID"),
    ("SeriesInstanceUID", "Series Instance UID"),
)
_PADDING_TAG = 0xFFFCFFFC  # Data Set Trailing Padding: may be cut without harm
_UNDEFINED_LENGTH = 0xFFFFFFFF


def is_valid_uid(uid: object) -> bool:
    """Whether ``uid`` is a syntactically valid DICOM UID (PS3.5 9.1).

    Only digits and dots, at most 64 characters, no empty components and no leading
    zeros in a component (``"0"`` itself is allowed).
    """
    if not isinstance(uid, str) or not 0 < len(uid) <= 64:
        return False
    return _UID_PATTERN.fullmatch(uid) is not None


def _check_complete(ds: pydicom.Dataset) -> None:
    """Refuse a file whose last element was cut short (pydicom reads such files silently)."""
    tags = [tag for tag in ds.keys() if tag != _PADDING_TAG]
    if not tags:
        raise UnsupportedImageError(
            "the file ends right after its meta header (truncated?); send the complete file",
            code=RefusalCode.CORRUPT,
        )
    last = ds.get_item(tags[-1])
    if (
        isinstance(last, RawDataElement)
        and last.length != _UNDEFINED_LENGTH
        and last.value is not None
        and len(last.value) < last.length
    ):
        name = keyword_for_tag(last.tag) or str(last.tag)
        raise UnsupportedImageError(
            f"the file is truncated: {name} {last.tag} has {len(last.value)} of "
            f"{last.length} bytes; send the complete file",
            code=RefusalCode.CORRUPT,
        )


def read_dataset(
    source: Path | str | bytes | BinaryIO, *, stop_before_pixels: bool = False
) -> pydicom.Dataset:
    """Parse one DICOM Part 10 file (with its 128-byte preamble and ``DICM`` prefix).

    Args:
        source: a path, the file's bytes, or a binary stream positioned at its start.
        stop_before_pixels: skip Pixel Data (for headers only, e.g. grouping).

    Returns:
        The dataset, with ``file_meta``.

    Raises:
        UnsupportedImageError: ``not_found`` (no such file), ``not_dicom`` (no DICOM
            preamble/meta header), ``corrupt`` (unparsable or truncated).
    """
    stream: str | BinaryIO
    if isinstance(source, bytes | bytearray | memoryview):
        stream = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            raise UnsupportedImageError(
                f"{path} is a folder, not a file", code=RefusalCode.NOT_DICOM
            )
        if not path.is_file():
            raise UnsupportedImageError(f"{path}: no such file", code=RefusalCode.NOT_FOUND)
        stream = str(path)
    else:
        stream = source
    try:
        ds = pydicom.dcmread(stream, force=False, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise UnsupportedImageError(
            "not a DICOM file (no DICOM preamble and 'DICM' prefix); send DICOM Part 10 files "
            "as exported by the modality or PACS",
            code=RefusalCode.NOT_DICOM,
        ) from None
    except OSError as error:
        if isinstance(source, str | Path):
            raise UnsupportedImageError(
                f"cannot read {source}: {error}", code=RefusalCode.NOT_FOUND
            ) from None
        raise UnsupportedImageError(
            f"cannot parse the DICOM file: {error}", code=RefusalCode.CORRUPT
        ) from None
    except Exception as error:  # pydicom raises struct.error, ValueError, ... on damaged files
        raise UnsupportedImageError(
            f"cannot parse the DICOM file (damaged or truncated): {error}", code=RefusalCode.CORRUPT
        ) from error
    _check_complete(ds)
    return ds


def _check_uid(ds: pydicom.Dataset, keyword: str, label: str, *, required: bool) -> None:
    value = ds.get(keyword)
    if value in (None, ""):
        if required:
            raise UnsupportedImageError(f"missing {label}", code=RefusalCode.INVALID_UID)
        return
    if not is_valid_uid(str(value)):
        raise UnsupportedImageError(
            f"{label} {str(value)!r} is not a valid UID (digits and dots only, at most 64 "
            "characters, no leading zeros in a component)",
            code=RefusalCode.INVALID_UID,
        )


#: Field of view assumed for a chest radiograph without a usable pixel spacing: the long
#: side of a 35 x 43 cm (14 x 17 inch) cassette or detector.
DEFAULT_CHEST_FIELD_OF_VIEW_MM = 430.0
#: Radiograph classes whose missing spacing may be estimated (chest CR/DX, not mammograms).
_ESTIMABLE_CLASSES = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
    }
)


def _usable_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if not (row > 0 and column > 0 and math.isfinite(row) and math.isfinite(column)):
            continue
        if keyword == "ImagerPixelSpacing":
            factor = ds.get("EstimatedRadiographicMagnificationFactor")
            if factor not in (None, "") and float(factor) > 0:
                row, column = row / float(factor), column / float(factor)
        return column, row
    return None


def spacing_is_estimated(ds: pydicom.Dataset, field_of_view_mm: float | None) -> bool:
    """Whether :func:`radiograph_spacing` estimates this radiograph's spacing."""
    return (
        field_of_view_mm is not None
        and str(ds.get("SOPClassUID") or "") in _ESTIMABLE_CLASSES
        and _usable_spacing(ds) is None
    )


def radiograph_spacing(
    ds: pydicom.Dataset, *, field_of_view_mm: float | None = None
) -> tuple[float, float]:
    """``(x, y)`` pixel spacing of a radiograph in mm (between columns, between rows).

    Pixel Spacing when present (calibrated to the patient); else Imager Pixel Spacing
    divided by Estimated Radiographic Magnification Factor when that is present. Zero,
    negative or malformed values count as absent (older CR writes ``0\\0``).

    Args:
        field_of_view_mm: when given, a CR/DX radiograph with no usable spacing gets square
            pixels of ``field_of_view_mm / max(rows, columns)``: the image is taken to span
            that many millimetres along its long side. Millimetres measured on it are
            approximate (:func:`spacing_is_estimated`).

    Raises:
        UnsupportedImageError: ``missing_attribute`` when no spacing is usable and none
            may be estimated.
    """
    spacing = _usable_spacing(ds)
    if spacing is not None:
        return spacing
    if field_of_view_mm is not None and spacing_is_estimated(ds, field_of_view_mm):
        longest = max(int(ds.get("Rows") or 0), int(ds.get("Columns") or 0), 1)
        estimate = float(field_of_view_mm) / longest
        return estimate, estimate
    raise UnsupportedImageError(
        "the radiograph has neither Pixel Spacing nor Imager Pixel Spacing, so its physical "
        "size is unknown; send the image as exported by the modality",
        code=RefusalCode.MISSING_ATTRIBUTE,
    )


#: Body Part Examined values of a chest radiograph (PS3.16 CID 4031 and common vendor
#: spellings); a radiograph that names no body part is taken as a chest.
CHEST_BODY_PARTS = frozenset({"", "CHEST", "THORAX", "LUNG", "CHEST_LAT", "CHEST PA", "TORAX"})


def _check_chest_radiograph(ds: pydicom.Dataset) -> None:
    """CR/DX images are screened as chest radiographs: another body part is refused."""
    part = str(ds.get("BodyPartExamined") or "").strip().upper()
    if part not in CHEST_BODY_PARTS:
        raise UnsupportedImageError(
            f"this radiograph is of the {part.lower()} (Body Part Examined {part}); this "
            "service screens chest radiographs only: send chest PA/AP images",
            code=RefusalCode.BODY_PART,
        )


@contextmanager
def refuse_bad_values() -> Iterator[None]:
    """Turn errors raised by malformed attribute values into ``corrupt`` refusals."""
    try:
        yield
    except UnsupportedImageError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        OverflowError,
        BytesLengthException,
    ) as error:
        logger.debug("malformed attribute values", exc_info=True)
        raise UnsupportedImageError(
            f"malformed or inconsistent attribute values ({type(error).__name__}: {error})",
            code=RefusalCode.CORRUPT,
        ) from error


def validate_instance(ds: pydicom.Dataset, *, field_of_view_mm: float | None = None) -> None:
    """Cheap checks that one instance is something the pipeline can read (no decoding).

    Checks the SOP class is a screening class, the UIDs are present and valid, the transfer
    syntax is decodable here, Pixel Data is present, grayscale and not absurdly large (a
    decompression-bomb guard: :data:`MAX_PIXELS_PER_FRAME`, :data:`MAX_FRAMES`,
    :data:`MAX_TOTAL_PIXELS`), uncompressed Pixel Data is long enough, and the geometry a
    CT slice or radiograph needs is there (``field_of_view_mm``: see
    :func:`radiograph_spacing`).

    Raises:
        UnsupportedImageError: the first problem found.
    """
    with refuse_bad_values():
        _validate(ds, field_of_view_mm)


def _validate(ds: pydicom.Dataset, field_of_view_mm: float | None) -> None:
    sop_class = ds.get("SOPClassUID")
    _check_uid(ds, "SOPClassUID", "SOP Class UID", required=True)
    if str(sop_class) not in SCREENING_SOP_CLASSES:
        name = UID(str(sop_class)).name
        what = name if name != str(sop_class) else f"SOP Class {sop_class}"
        raise UnsupportedImageError(
            f"{what} is not a screening modality (SOP Class UID {sop_class}); send CT, "
            "CR, DX or mammography (MG) images",
            code=RefusalCode.MODALITY,
        )
    for keyword, label in _REQUIRED_UIDS:
        _check_uid(ds, keyword, label, required=True)
    _check_uid(ds, "FrameOfReferenceUID", "Frame of Reference UID", required=False)

    check_decodable(transfer_syntax_of(ds))

    if "PixelData" not in ds:
        floating = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        raise UnsupportedImageError(
            "float Pixel Data is not supported; send integer Pixel Data"
            if floating
            else "no Pixel Data in the file: it is not an image, or it was cut short; send "
            "the complete image",
            code=RefusalCode.NO_PIXEL_DATA,
        )
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = number_of_frames(ds)
    if rows <= 0 or columns <= 0:
        raise UnsupportedImageError(
            f"invalid image size {rows}x{columns}", code=RefusalCode.CORRUPT
        )
    if rows * columns > MAX_PIXELS_PER_FRAME or frames > MAX_FRAMES:
        raise UnsupportedImageError(
            f"image of {rows}x{columns} pixels x {frames} frames exceeds the limits "
            f"({MAX_PIXELS_PER_FRAME} pixels per frame, {MAX_FRAMES} frames)",
            code=RefusalCode.TOO_LARGE,
        )
    if rows * columns * frames > MAX_TOTAL_PIXELS:
        raise UnsupportedImageError(
            f"image of {rows}x{columns}x{frames} pixels exceeds the limit of "
            f"{MAX_TOTAL_PIXELS} pixels per object",
            code=RefusalCode.TOO_LARGE,
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImageError(
            f"Photometric Interpretation {photometric or 'missing'} with {samples} sample(s) "
            "per pixel is not supported; send the original grayscale (MONOCHROME1/2) image",
            code=RefusalCode.PHOTOMETRIC,
        )
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (8, 16, 32):
        raise UnsupportedImageError(
            f"Bits Allocated {bits} is not supported (8, 16 or 32)", code=RefusalCode.PHOTOMETRIC
        )
    if not transfer_syntax_of(ds).is_encapsulated:
        expected, found = expected_native_length(ds), len(ds.PixelData)
        if found < expected:
            raise UnsupportedImageError(
                f"Pixel Data is truncated: {found} of {expected} bytes; send the complete file",
                code=RefusalCode.CORRUPT,
            )
    if str(sop_class) in CT_SLICE_CLASSES and frames == 1:
        plane_of_slice(ds)
    elif str(sop_class) in RADIOGRAPH_CLASSES:
        if SCREENING_SOP_CLASSES[str(sop_class)] != "MG":
            _check_chest_radiograph(ds)
        radiograph_spacing(ds, field_of_view_mm=field_of_view_mm)
