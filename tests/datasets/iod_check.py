"""Test helper: check DICOM instances against the required attributes of their IOD.

Hand-written tables of the Type 1 and Type 2 (and evaluable 1C/2C) attributes of the
modules that PS3.3 makes mandatory for:

- the Digital X-Ray Image IOD (PS3.3 A.26; For Presentation and For Processing), and
- the CT Image IOD (PS3.3 A.3),

plus the enumerated values those modules fix (e.g. DX Rescale Intercept 0, CT Bits
Allocated 16), value representation and multiplicity of every element (pydicom's
validators, as with ``validation_mode = RAISE``) and writing the dataset as a DICOM
file with ``enforce_file_format=True``.

Type 1: present with a value. Type 2: present, may be empty. Type 1C/2C: as 1/2 when
their condition holds. Type 3 attributes are not listed. Only conditions that can be
decided from the dataset itself are evaluated (e.g. "required if Presentation Intent
Type is FOR PRESENTATION"); those that depend on the real world ("required if the
image has been calibrated") are left out.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom import config
from pydicom.datadict import dictionary_VM, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
from pydicom.valuerep import validate_value

Condition = Callable[[Dataset], bool]
ValueCheck = Callable[[Dataset], list[str]]


@dataclass(frozen=True)
class Requirement:
    """One attribute a module requires.

    Attributes:
        keyword: DICOM keyword, e.g. ``StudyInstanceUID``.
        type: ``1``, ``2``, ``1C`` or ``2C``.
        condition: for 1C/2C, when the attribute is required.
    """

    keyword: str
    type: str
    condition: Condition | None = None


@dataclass(frozen=True)
class Module:
    """A module of an IOD with its required attributes and value constraints."""

    name: str
    section: str
    requirements: tuple[Requirement, ...]
    checks: tuple[ValueCheck, ...] = field(default=())


def _t1(*keywords: str) -> tuple[Requirement, ...]:
    return tuple(Requirement(k, "1") for k in keywords)


def _t2(*keywords: str) -> tuple[Requirement, ...]:
    return tuple(Requirement(k, "2") for k in keywords)


def _number(ds: Dataset, keyword: str, index: int = 0) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list):
        if len(value) <= index:
            return None
        value = value[index]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _enumerated(keyword: str, allowed: tuple[object, ...], index: int | None = None) -> ValueCheck:
    """Check that ``keyword`` (or its value ``index``) is one of ``allowed`` when present."""

    def check(ds: Dataset) -> list[str]:
        value = ds.get(keyword)
        if value is None or value == "":
            return []
        if index is not None:
            values = list(value) if isinstance(value, MultiValue | list) else [value]
            if len(values) <= index:
                return []
            value = values[index]
        if value in allowed:
            return []
        where = f"{keyword}[{index}]" if index is not None else keyword
        options = ", ".join(repr(a) for a in allowed)
        return [f"{where} is {value!r}; allowed: {options}"]

    return check


def _high_bit(ds: Dataset) -> list[str]:
    stored, high = _number(ds, "BitsStored"), _number(ds, "HighBit")
    if stored is not None and high is not None and high != stored - 1:
        return [f"HighBit is {high:g}; must be BitsStored - 1 = {stored - 1:g}"]
    return []


def _bits_stored_range(low: int, high: int) -> ValueCheck:
    def check(ds: Dataset) -> list[str]:
        stored = _number(ds, "BitsStored")
        if stored is not None and not low <= stored <= high:
            return [f"BitsStored is {stored:g}; must be {low}..{high}"]
        return []

    return check


def _positive(keyword: str) -> ValueCheck:
    def check(ds: Dataset) -> list[str]:
        value = ds.get(keyword)
        if value is None or value == "":
            return []
        values = list(value) if isinstance(value, MultiValue | list) else [value]
        try:
            if all(float(v) > 0 for v in values):
                return []
        except (TypeError, ValueError):
            pass
        return [f"{keyword} is {value!r}; values must be positive numbers"]

    return check


def _equals_number(keyword: str, expected: float) -> ValueCheck:
    def check(ds: Dataset) -> list[str]:
        value = _number(ds, keyword)
        if value is not None and value != expected:
            return [f"{keyword} is {value:g}; must be {expected:g}"]
        return []

    return check


def _pixel_data_length(ds: Dataset) -> list[str]:
    """Native (uncompressed) Pixel Data must hold exactly the pixels the header describes."""
    if "PixelData" not in ds or getattr(ds, "file_meta", None) is None:
        return []
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or syntax.is_compressed:
        return []
    numbers = [_number(ds, k) for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")]
    if any(n is None for n in numbers):
        return []
    rows, columns, samples, bits = (int(n) for n in numbers)  # type: ignore[arg-type]
    frames = int(_number(ds, "NumberOfFrames") or 1)
    expected = math.ceil(rows * columns * samples * frames * bits / 8)
    actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):  # one byte of padding to an even length
        return [f"PixelData holds {actual} bytes; the header describes {expected}"]
    return []


def _presentation_lut_shape(ds: Dataset) -> list[str]:
    # PS3.3 C.8.11.3.1.2: IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1.
    photometric = str(ds.get("PhotometricInterpretation", ""))
    expected = {"MONOCHROME2": "IDENTITY", "MONOCHROME1": "INVERSE"}.get(photometric)
    shape = ds.get("PresentationLUTShape")
    if expected and shape not in (None, "", expected):
        return [f"PresentationLUTShape is {shape!r}; must be {expected!r} for {photometric}"]
    return []


def _presentation_intent_matches(ds: Dataset) -> list[str]:
    expected = {
        DigitalXRayImageStorageForPresentation: "FOR PRESENTATION",
        DigitalXRayImageStorageForProcessing: "FOR PROCESSING",
    }.get(ds.get("SOPClassUID"))
    intent = ds.get("PresentationIntentType")
    if expected and intent not in (None, "", expected):
        return [f"PresentationIntentType is {intent!r}; this SOP Class needs {expected!r}"]
    return []


def _image_plane_geometry(ds: Dataset) -> list[str]:
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return [] if orientation is None else ["ImageOrientationPatient must have 6 values"]
    try:
        row, col = [float(v) for v in orientation[:3]], [float(v) for v in orientation[3:]]
    except (TypeError, ValueError):
        return ["ImageOrientationPatient values must be numbers"]
    norms = [math.sqrt(sum(v * v for v in vec)) for vec in (row, col)]
    dot = sum(a * b for a, b in zip(row, col, strict=True))
    if any(abs(n - 1) > 1e-3 for n in norms) or abs(dot) > 1e-3:
        return ["ImageOrientationPatient row and column cosines must be orthogonal unit vectors"]
    return []


def _for_presentation(ds: Dataset) -> bool:
    return ds.get("PresentationIntentType") == "FOR PRESENTATION"


def _multiple_samples(ds: Dataset) -> bool:
    return (_number(ds, "SamplesPerPixel") or 1) > 1


# Patient Module, PS3.3 C.7.1.1
PATIENT = Module(
    "Patient", "C.7.1.1", _t2("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
)
# General Study Module, PS3.3 C.7.2.1
GENERAL_STUDY = Module(
    "General Study",
    "C.7.2.1",
    _t1("StudyInstanceUID")
    + _t2("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
)
# General Series Module, PS3.3 C.7.3.1 (Patient Position is 2C: required for CT and MR
# when Patient Orientation Code Sequence is absent).
GENERAL_SERIES = Module(
    "General Series",
    "C.7.3.1",
    _t1("Modality", "SeriesInstanceUID")
    + _t2("SeriesNumber")
    + (
        Requirement(
            "PatientPosition",
            "2C",
            lambda ds: (
                ds.get("SOPClassUID") == CTImageStorage
                and "PatientOrientationCodeSequence" not in ds
            ),
        ),
    ),
)
# Frame of Reference Module, PS3.3 C.7.4.1
FRAME_OF_REFERENCE = Module(
    "Frame of Reference", "C.7.4.1", _t1("FrameOfReferenceUID") + _t2("PositionReferenceIndicator")
)
# General Equipment Module, PS3.3 C.7.5.1
GENERAL_EQUIPMENT = Module("General Equipment", "C.7.5.1", _t2("Manufacturer"))
# General Image Module, PS3.3 C.7.6.1 (Patient Orientation 2C: required when the image
# has no Image Orientation/Position (Patient), i.e. projection images).
GENERAL_IMAGE = Module(
    "General Image",
    "C.7.6.1",
    _t2("InstanceNumber")
    + (Requirement("PatientOrientation", "2C", lambda ds: "ImageOrientationPatient" not in ds),),
)
# Image Plane Module, PS3.3 C.7.6.2
IMAGE_PLANE = Module(
    "Image Plane",
    "C.7.6.2",
    _t1("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient") + _t2("SliceThickness"),
    (_positive("PixelSpacing"), _image_plane_geometry),
)
# Image Pixel Module, PS3.3 C.7.6.3 (Pixel Data is 1C: required unless Pixel Data
# Provider URL is present, which these storage SOP classes do not use).
IMAGE_PIXEL = Module(
    "Image Pixel",
    "C.7.6.3",
    _t1(
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    )
    + (
        Requirement("PixelData", "1C", lambda ds: "PixelDataProviderURL" not in ds),
        Requirement("PlanarConfiguration", "1C", _multiple_samples),
    ),
    (_positive("Rows"), _positive("Columns"), _high_bit, _pixel_data_length),
)
# Acquisition Context Module, PS3.3 C.7.6.14
ACQUISITION_CONTEXT = Module("Acquisition Context", "C.7.6.14", _t2("AcquisitionContextSequence"))
# SOP Common Module, PS3.3 C.12.1
SOP_COMMON = Module("SOP Common", "C.12.1", _t1("SOPClassUID", "SOPInstanceUID"))

# DX Series Module, PS3.3 C.8.11.1
DX_SERIES = Module(
    "DX Series",
    "C.8.11.1",
    _t1("Modality", "PresentationIntentType"),
    (
        _enumerated("Modality", ("DX",)),
        _enumerated("PresentationIntentType", ("FOR PRESENTATION", "FOR PROCESSING")),
        _presentation_intent_matches,
    ),
)
# DX Anatomy Imaged Module, PS3.3 C.8.11.2 (with the General Anatomy Required Macro,
# PS3.3 Table 10-6: Anatomic Region Sequence Type 2).
DX_ANATOMY_IMAGED = Module(
    "DX Anatomy Imaged",
    "C.8.11.2",
    _t1("ImageLaterality") + _t2("AnatomicRegionSequence"),
    (_enumerated("ImageLaterality", ("R", "L", "U", "B")),),
)
# DX Image Module, PS3.3 C.8.11.3
DX_IMAGE = Module(
    "DX Image",
    "C.8.11.3",
    _t1(
        "ImageType",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelIntensityRelationship",
        "PixelIntensityRelationshipSign",
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "PresentationLUTShape",
        "LossyImageCompression",
        "BurnedInAnnotation",
    )
    + (
        Requirement(
            "LossyImageCompressionRatio", "1C", lambda ds: ds.get("LossyImageCompression") == "01"
        ),
        Requirement(
            "PatientOrientation", "1C", lambda ds: "PatientOrientationCodeSequence" not in ds
        ),
        Requirement(
            "WindowCenter",
            "1C",
            lambda ds: _for_presentation(ds) and "VOILUTSequence" not in ds,
        ),
        Requirement("WindowWidth", "1C", lambda ds: "WindowCenter" in ds),
    ),
    (
        _enumerated("ImageType", ("ORIGINAL", "DERIVED"), 0),
        _enumerated("ImageType", ("PRIMARY", "SECONDARY"), 1),
        _enumerated("SamplesPerPixel", (1,)),
        _enumerated("PhotometricInterpretation", ("MONOCHROME1", "MONOCHROME2")),
        _enumerated("BitsAllocated", (8, 16)),
        _bits_stored_range(6, 16),
        _enumerated("PixelRepresentation", (0,)),
        _enumerated("PixelIntensityRelationship", ("LIN", "LOG")),
        _enumerated("PixelIntensityRelationshipSign", (1, -1)),
        _equals_number("RescaleIntercept", 0.0),
        _equals_number("RescaleSlope", 1.0),
        _enumerated("RescaleType", ("US",)),
        _presentation_lut_shape,
        _enumerated("LossyImageCompression", ("00", "01")),
        _enumerated("BurnedInAnnotation", ("YES", "NO")),
        _positive("WindowWidth"),
    ),
)
# DX Detector Module, PS3.3 C.8.11.4
DX_DETECTOR = Module(
    "DX Detector",
    "C.8.11.4",
    _t1("ImagerPixelSpacing") + _t2("DetectorType"),
    (_positive("ImagerPixelSpacing"), _positive("PixelSpacing")),
)
# CT Image Module, PS3.3 C.8.2.1
CT_IMAGE = Module(
    "CT Image",
    "C.8.2.1",
    _t1(
        "ImageType",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "RescaleIntercept",
        "RescaleSlope",
    )
    + _t2("KVP", "AcquisitionNumber"),
    (
        _enumerated("Modality", ("CT",)),
        _enumerated("ImageType", ("ORIGINAL", "DERIVED"), 0),
        _enumerated("ImageType", ("PRIMARY", "SECONDARY"), 1),
        _enumerated("SamplesPerPixel", (1,)),
        _enumerated("PhotometricInterpretation", ("MONOCHROME1", "MONOCHROME2")),
        _enumerated("BitsAllocated", (16,)),
        _bits_stored_range(12, 16),
    ),
)

# PS3.3 A.26.3 (DX Image IOD module table). Frame of Reference is U and not checked.
DX_IOD = (
    PATIENT,
    GENERAL_STUDY,
    GENERAL_SERIES,
    DX_SERIES,
    GENERAL_EQUIPMENT,
    GENERAL_IMAGE,
    IMAGE_PIXEL,
    DX_ANATOMY_IMAGED,
    DX_IMAGE,
    DX_DETECTOR,
    ACQUISITION_CONTEXT,
    SOP_COMMON,
)
# PS3.3 A.3.3 (CT Image IOD module table).
CT_IOD = (
    PATIENT,
    GENERAL_STUDY,
    GENERAL_SERIES,
    FRAME_OF_REFERENCE,
    GENERAL_EQUIPMENT,
    GENERAL_IMAGE,
    IMAGE_PLANE,
    IMAGE_PIXEL,
    CT_IMAGE,
    SOP_COMMON,
)
IODS: dict[str, tuple[str, tuple[Module, ...]]] = {
    DigitalXRayImageStorageForPresentation: ("DX Image IOD (PS3.3 A.26)", DX_IOD),
    DigitalXRayImageStorageForProcessing: ("DX Image IOD (PS3.3 A.26)", DX_IOD),
    CTImageStorage: ("CT Image IOD (PS3.3 A.3)", CT_IOD),
}


def _is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes | list | MultiValue | Sequence):
        return len(value) == 0
    return str(value) == ""


def _check_requirements(ds: Dataset, module: Module) -> list[str]:
    problems = []
    where = f"{module.name} module (PS3.3 {module.section})"
    for requirement in module.requirements:
        if requirement.condition is not None and not requirement.condition(ds):
            continue
        tag = tag_for_keyword(requirement.keyword)
        label = (
            f"{requirement.keyword} {pydicom.tag.Tag(tag)}"
            if tag is not None
            else requirement.keyword
        )
        if requirement.keyword not in ds:
            problems.append(f"{where}: Type {requirement.type} attribute {label} is missing")
        elif requirement.type.startswith("1") and _is_empty(ds[requirement.keyword].value):
            problems.append(f"{where}: Type {requirement.type} attribute {label} is empty")
    return problems


def _vm_allows(vm: str, count: int) -> bool:
    """Whether ``count`` values satisfy a data dictionary VM such as ``1``, ``1-3``, ``2-2n``."""
    if count == 0:
        return True
    if "-" not in vm:
        return vm == "n" or (vm.isdigit() and count == int(vm))
    low, high = vm.split("-", 1)
    if not low.isdigit() or count < int(low):
        return False
    if high.isdigit():
        return count <= int(high)
    step = int(high[:-1] or 1)  # "n" -> 1, "2n" -> 2
    return count % step == 0


def check_value_representations(ds: Dataset) -> list[str]:
    """VR and VM problems of every element (nested sequences included).

    Values are validated with pydicom's VR validators as under ``validation_mode =
    RAISE`` (length, character repertoire, format of DA/TM/UI/CS/DS/IS ...); the number of
    values is checked against the data dictionary's VM. Bulk binary data is skipped.
    """
    problems = []
    for element in ds.iterall():
        if element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN") or element.tag.is_private:
            continue
        values = list(element.value) if isinstance(element.value, MultiValue) else [element.value]
        values = [v for v in values if v not in (None, "")]
        label = f"{element.keyword or 'element'} {element.tag}"
        try:
            vm = dictionary_VM(element.tag)
        except KeyError:
            vm = ""
        if vm and not _vm_allows(vm, len(values)):
            problems.append(f"{label}: {len(values)} values where the dictionary allows VM {vm}")
        for value in values:
            if element.VR in ("DS", "IS"):
                original = getattr(value, "original_string", None)
                value = original if original is not None else str(value)
            try:
                validate_value(element.VR, value, config.RAISE)
            except ValueError as error:
                problems.append(f"{label} ({element.VR}): {str(error).split(' Please see')[0]}")
    return problems


def check_file_format(ds: Dataset) -> list[str]:
    """Problems writing ``ds`` as a Part 10 file with ``enforce_file_format=True``."""
    problems = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for meta_keyword, keyword in (
            ("MediaStorageSOPClassUID", "SOPClassUID"),
            ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
        ):
            if (
                meta_keyword in meta
                and keyword in ds
                and meta[meta_keyword].value != ds[keyword].value
            ):
                problems.append(f"file meta {meta_keyword} differs from the dataset's {keyword}")
    try:
        pydicom.dcmwrite(io.BytesIO(), ds, enforce_file_format=True)
    except Exception as error:  # pydicom raises ValueError, AttributeError, OSError, ...
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        problems.append(f"cannot be written as a DICOM file: {first_line}")
    return problems


def check_iod(ds: Dataset) -> list[str]:
    """List what keeps ``ds`` from being a valid instance of its IOD.

    The IOD is chosen by SOP Class UID (DX For Presentation/Processing, CT Image). For each
    mandatory module: missing Type 1/2 (and applicable 1C/2C) attributes, empty Type 1
    attributes and violated enumerated values; then VR/VM problems of every element and
    problems writing the dataset with ``enforce_file_format=True``.

    Args:
        ds: the dataset (as read with ``pydicom.dcmread`` or built in memory).

    Returns:
        Human-readable problems, each naming the module (with its PS3.3 section) or the
        attribute keyword; empty when none were found.
    """
    sop_class = ds.get("SOPClassUID")
    if sop_class not in IODS:
        name = getattr(sop_class, "name", "")
        known = ", ".join(sorted({title for title, _ in IODS.values()}))
        return [f"SOP Class UID {sop_class} {name}: no IOD table here (checks {known})"]
    _, modules = IODS[sop_class]
    problems: list[str] = []
    for module in modules:
        problems += _check_requirements(ds, module)
        for check in module.checks:
            problems += [f"{module.name} module (PS3.3 {module.section}): {p}" for p in check(ds)]
    problems += check_value_representations(ds)
    problems += check_file_format(ds)
    return list(dict.fromkeys(problems))  # modules share attributes; report each once


def check_iod_file(path: Path | str) -> list[str]:
    """:func:`check_iod` of a DICOM file (read with ``pydicom.dcmread``)."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # not DICOM, truncated, unreadable
        return [f"{path}: cannot be read as DICOM: {error}"]
    return check_iod(ds)
