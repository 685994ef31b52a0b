"""Build and write the DICOM instances of synthetic screening studies.

Two IODs are written: Digital X-Ray Image Storage - For Presentation (chest
radiographs) and CT Image Storage (one instance per slice of a low-dose CT series).
Every value that could differ between runs (UIDs, dates, names) is derived from the
generator's seed, so the same seed gives byte-identical files. Every instance says
``SYNTHETIC - not for clinical use`` in its Series Description and Image Comments and
carries only synthetic patient identity.

Geometry values are rounded to what DICOM decimal strings hold *before* they are
written, and callers compute their ground-truth boxes from those rounded values, so
the boxes agree exactly with the geometry a reader recovers from the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

SYNTHETIC_NOTICE = "SYNTHETIC - not for clinical use"
MANUFACTURER = "oncotriage synthetic"
_IMPLEMENTATION_VERSION = "ONCOTRIAGE_SYN"
_UID_NAMESPACE = "oncotriage-synth-v1"


def synthetic_uid(*parts: object) -> str:
    """A UID derived only from ``parts``: same parts, same UID.

    ``generate_uid(prefix=None, ...)`` would ignore ``entropy_srcs`` and return a random
    UUID-derived ``2.25`` UID, so the UID is built under pydicom's root instead, where
    ``entropy_srcs`` are hashed (SHA-512) into the suffix deterministically.

    Args:
        parts: anything with a stable ``str()``, e.g. ``("cxr", seed, case, "study")``.

    Returns:
        A valid DICOM UID (at most 64 characters).
    """
    return str(generate_uid(entropy_srcs=[_UID_NAMESPACE, *map(str, parts)]))


def ds_value(value: float) -> str:
    """``value`` as a valid DICOM Decimal String (at most 16 characters)."""
    return format_number_as_ds(float(value))


def ds_round(value: float, decimals: int = 4) -> float:
    """``value`` rounded as it will read back from the Decimal String that encodes it."""
    return float(ds_value(round(float(value), decimals)))


@dataclass(frozen=True)
class StudyIdentity:
    """Synthetic patient, study and series identity of one study.

    Attributes:
        patient_name: DICOM PN, e.g. ``SYNTH^0001``.
        patient_id: synthetic patient ID.
        patient_birth_date: ``YYYYMMDD``.
        patient_sex: ``F`` or ``M``.
        study_uid, series_uid, frame_of_reference_uid: derived from the seed.
        study_date, study_time: ``YYYYMMDD``, ``HHMMSS`` (synthetic, seed-derived).
        accession_number, study_id: short identifiers.
    """

    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str

    def instance_uid(self, index: int) -> str:
        """SOP Instance UID of the ``index``-th instance of the series."""
        return synthetic_uid(self.series_uid, "instance", index)


def make_identity(kind: str, seed: int, case_index: int) -> StudyIdentity:
    """Deterministic synthetic identity of case ``case_index`` of a ``kind`` set with ``seed``."""
    number = case_index + 1
    key = (kind, seed, case_index)
    digest = int(synthetic_uid(*key, "dates").rsplit(".", 1)[-1])
    year = 1945 + digest % 30
    month = 1 + (digest // 30) % 12
    day = 1 + (digest // 360) % 28
    study_day = (digest // 10_080) % 365
    study_date = np.datetime64("2024-01-01") + np.timedelta64(study_day, "D")
    seconds = 8 * 3600 + (digest // 3_679_200) % (9 * 3600)
    return StudyIdentity(
        patient_name=f"SYNTH^{number:04d}",
        patient_id=f"SYNTH-{kind.upper()}-{seed}-{number:04d}",
        patient_birth_date=f"{year:04d}{month:02d}{day:02d}",
        patient_sex="F" if digest % 2 else "M",
        study_uid=synthetic_uid(*key, "study"),
        series_uid=synthetic_uid(*key, "series"),
        frame_of_reference_uid=synthetic_uid(*key, "frame-of-reference"),
        study_date=str(study_date).replace("-", ""),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession_number=f"SYN{seed % 1000:03d}{number:05d}",
        study_id=f"{number}",
    )


def _base_dataset(
    identity: StudyIdentity, sop_class_uid: str, sop_instance_uid: str, modality: str
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    # Patient module (PS3.3 C.7.1.1): synthetic identity only.
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.patient_birth_date
    ds.PatientSex = identity.patient_sex
    ds.PatientIdentityRemoved = "NO"  # nothing to remove: the identity is synthetic
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = identity.study_id
    ds.AccessionNumber = identity.accession_number
    ds.StudyDescription = f"Screening - {SYNTHETIC_NOTICE}"
    # General Series (C.7.3.1)
    ds.Modality = modality
    ds.SeriesInstanceUID = identity.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = identity.study_date
    ds.SeriesTime = identity.study_time
    ds.SeriesDescription = SYNTHETIC_NOTICE
    ds.BodyPartExamined = "CHEST"
    # General Equipment (C.7.5.1)
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "Synthetic Community Hospital"
    ds.ManufacturerModelName = "oncotriage-synth"
    ds.SoftwareVersions = "1"
    # General Image (C.7.6.1)
    ds.ContentDate = identity.study_date
    ds.ContentTime = identity.study_time
    ds.AcquisitionDate = identity.study_date
    ds.AcquisitionTime = identity.study_time
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = SYNTHETIC_NOTICE
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2D (rows, columns), got shape {pixels.shape}")
    signed = pixels.dtype == np.int16
    if pixels.dtype not in (np.uint16, np.int16):
        raise TypeError(f"pixels must be uint16 or int16, got {pixels.dtype}")
    lo, hi = (
        (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1)
        if signed
        else (
            0,
            (1 << bits_stored) - 1,
        )
    )
    if pixels.size and (int(pixels.min()) < lo or int(pixels.max()) > hi):
        raise ValueError(f"pixel values {pixels.min()}..{pixels.max()} exceed {bits_stored} bits")
    # Image Pixel module (C.7.6.3)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2" if signed else "<u2").tobytes()


def build_dx_dataset(
    identity: StudyIdentity,
    pixels: np.ndarray,
    *,
    pixel_spacing_mm: float,
    bits_stored: int,
    window_center: float,
    window_width: float,
    include_pixel_spacing: bool,
    detector_type: str = "DIRECT",
) -> FileDataset:
    """A DX For Presentation chest PA instance (PS3.3 A.26).

    Args:
        identity: synthetic patient/study/series identity.
        pixels: ``(rows, columns)`` uint16 stored values, MONOCHROME2 (higher is brighter).
        pixel_spacing_mm: square detector pixel size (already DS-rounded), written as
            Imager Pixel Spacing and, if ``include_pixel_spacing``, as Pixel Spacing too
            (same value: magnification 1, so either gives the same detector-plane mm).
        bits_stored: 12 or 16.
        window_center, window_width: the VOI window that presents the image.
        include_pixel_spacing: also write Pixel Spacing (Type 1C in the DX Detector module).
        detector_type: DX Detector module Detector Type.
    """
    ds = _base_dataset(
        identity, DigitalXRayImageStorageForPresentation, identity.instance_uid(1), "DX"
    )
    # DX Series (C.8.11.1)
    ds.PresentationIntentType = "FOR PRESENTATION"
    # General Image (C.7.6.1); Patient Orientation for a PA view: rows run to the
    # patient's left, columns to the feet.
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.ViewPosition = "PA"
    # DX Anatomy Imaged (C.8.11.2)
    ds.ImageLaterality = "U"
    region = Dataset()
    region.CodeValue = "43799004"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([region])
    # Acquisition Context (C.7.6.14)
    ds.AcquisitionContextSequence = Sequence([])
    _set_pixels(ds, pixels, bits_stored)
    # DX Image (C.8.11.3)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    # VOI LUT (C.11.2), required for a For Presentation image without a VOI LUT Sequence
    ds.WindowCenter = ds_value(window_center)
    ds.WindowWidth = ds_value(window_width)
    ds.VOILUTFunction = "LINEAR"
    # DX Detector (C.8.11.4)
    ds.DetectorType = detector_type
    ds.ImagerPixelSpacing = [ds_value(pixel_spacing_mm)] * 2
    if include_pixel_spacing:
        ds.PixelSpacing = [ds_value(pixel_spacing_mm)] * 2
    return ds


def build_ct_slice_dataset(
    identity: StudyIdentity,
    pixels: np.ndarray,
    *,
    instance_number: int,
    pixel_spacing_mm: tuple[float, float],
    image_position: tuple[float, float, float],
    slice_thickness_mm: float,
    spacing_between_slices_mm: float,
    rescale_intercept: float,
    bits_stored: int,
    ctdi_vol_mgy: float,
) -> FileDataset:
    """One axial slice of a low-dose chest CT (CT Image Storage, PS3.3 A.3).

    Args:
        identity: synthetic patient/study/series identity.
        pixels: ``(rows, columns)`` stored values, uint16 or int16; HU = stored + intercept.
        instance_number: 1-based; also selects the SOP Instance UID.
        pixel_spacing_mm: ``(row spacing, column spacing)`` as in Pixel Spacing.
        image_position: LPS position (mm) of the centre of the first transmitted pixel.
        slice_thickness_mm, spacing_between_slices_mm: nominal reconstruction values.
        rescale_intercept: Rescale Intercept (slope is 1).
        bits_stored: 12 or 16.
        ctdi_vol_mgy: CTDIvol, low for a screening protocol.
    """
    ds = _base_dataset(identity, CTImageStorage, identity.instance_uid(instance_number), "CT")
    ds.PatientPosition = "HFS"
    ds.ProtocolName = "Low-dose lung cancer screening"
    # Frame of Reference (C.7.4.1)
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Image (C.7.6.1)
    ds.InstanceNumber = instance_number
    # Image Plane (C.7.6.2)
    ds.PixelSpacing = [ds_value(v) for v in pixel_spacing_mm]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [ds_value(v) for v in image_position]
    ds.SliceThickness = ds_value(slice_thickness_mm)
    ds.SpacingBetweenSlices = ds_value(spacing_between_slices_mm)
    ds.SliceLocation = ds_value(image_position[2])
    _set_pixels(ds, pixels, bits_stored)
    # CT Image (C.8.2.1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = ds_value(rescale_intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.ConvolutionKernel = "LUNG"
    ds.CTDIvol = float(ctdi_vol_mgy)
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    return ds


def save_dataset(ds: FileDataset, path: Path) -> None:
    """Write ``ds`` as a DICOM Part 10 file (preamble, file meta), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
