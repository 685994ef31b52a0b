"""The image a detector sees: voxels plus the geometry that maps them to the patient.

Array axes follow MONAI/ITK spatial order: axis 0 is x (image columns), axis 1 is y
(image rows) and, for volumes, axis 2 is z (slices). A box in index space is therefore
``xyxy`` (2D) or ``xyzxyz`` (3D), the box modes MONAI's detection code uses.
World coordinates are DICOM patient coordinates (LPS, millimetres).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class RefusalCode(StrEnum):
    """Why an image was refused (:attr:`UnsupportedImageError.code`); values are wire strings."""

    NOT_FOUND = "not_found"
    """No DICOM file or instance where one was expected."""
    NOT_DICOM = "not_dicom"
    """The bytes are not DICOM."""
    CORRUPT = "corrupt"
    """DICOM whose values or pixel data cannot be decoded."""
    MODALITY = "modality"
    """A modality or SOP class the service does not screen."""
    BODY_PART = "body_part"
    """A radiograph of something other than the chest."""
    INVALID_UID = "invalid_uid"
    """A UID that breaks the DICOM UID rules."""
    TRANSFER_SYNTAX = "transfer_syntax"
    """A transfer syntax the service cannot decode."""
    NO_PIXEL_DATA = "no_pixel_data"
    """An instance without pixel data."""
    TOO_LARGE = "too_large"
    """Image dimensions beyond the service's limits."""
    PHOTOMETRIC = "photometric"
    """A photometric interpretation other than monochrome."""
    VOI = "voi"
    """A VOI LUT or window that cannot be applied."""
    MISSING_ATTRIBUTE = "missing_attribute"
    """A required attribute is missing or empty."""
    TOO_FEW_SLICES = "too_few_slices"
    """A CT series with fewer slices than a volume needs."""
    MIXED_SERIES = "mixed_series"
    """Instances of more than one series (or study) sent as one."""
    DUPLICATE_SLICES = "duplicate_slices"
    """Two different slices at the same position."""
    MISSING_SLICES = "missing_slices"
    """Gaps in a CT series."""
    UNEVEN_SPACING = "uneven_spacing"
    """CT slices unevenly spaced."""
    SERIES_GEOMETRY = "series_geometry"
    """CT slices whose orientation, size or spacing disagree."""
    MULTIPLE_IMAGES = "multiple_images"
    """More than one image where one radiograph was expected."""
    NOT_VOLUME = "not_volume"
    """A file that is not a NIfTI or MetaImage volume."""
    INTERNAL = "internal"
    """An unexpected error while reading (a bug, reported as a refusal by inspect)."""
    UNSUPPORTED = "unsupported"
    """Anything else the pipeline cannot use (the default)."""


class UnsupportedImageError(ValueError):
    """An input the screening pipeline cannot use.

    The message is written for the person at the hospital who sent the file: it says
    what is wrong and, where possible, what to send instead. ``code`` is a short
    machine-readable reason, a :class:`RefusalCode`.
    """

    def __init__(self, message: str, *, code: RefusalCode = RefusalCode.UNSUPPORTED) -> None:
        super().__init__(message)
        self.code = RefusalCode(code)

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class ImageVolume:
    """A 2D radiograph or a 3D volume with its geometry.

    Attributes:
        array: float32 voxels, shape ``(X, Y)`` or ``(X, Y, Z)``. CT in Hounsfield units;
            radiographs as presentation values scaled to ``0..1`` (VOI applied,
            MONOCHROME1 inverted so that higher is brighter).
        spacing: millimetres between voxel centres along each array axis.
        origin: LPS position (mm) of the centre of voxel ``(0, 0[, 0])``. ``(0, 0, 0)``
            for projection radiographs, which have no patient frame.
        direction: ``3x3`` matrix whose column ``k`` is the unit LPS direction of array
            axis ``k`` (for 2D images only the first two columns are used).
        modality: DICOM Modality (``CT``, ``DX``, ``CR``, ``MG``).
        study_uid, series_uid, frame_of_reference_uid: DICOM UIDs.
        sop_instance_uids: instances the array was built from, in array order
            (one per slice for CT series; one for a radiograph or a multi-frame object).
        sop_class_uid: SOP Class UID of the source instances.
        transfer_syntax_uid: transfer syntax the pixel data was encoded with.
        spacing_estimated: the radiograph carried no usable pixel spacing and ``spacing``
            was estimated from an assumed field of view: millimetres are approximate.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = ""
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uid: str = ""
    transfer_syntax_uid: str = ""
    spacing_estimated: bool = False

    def __post_init__(self) -> None:
        if self.array.ndim not in (2, 3):
            raise ValueError(f"array must be 2D or 3D, got shape {self.array.shape}")
        if len(self.spacing) != self.array.ndim:
            raise ValueError(
                f"spacing has {len(self.spacing)} values for a {self.array.ndim}D array"
            )
        if np.asarray(self.direction).shape != (3, 3):
            raise ValueError("direction must be a 3x3 matrix")

    @property
    def spatial_dims(self) -> int:
        return int(self.array.ndim)

    @property
    def affine(self) -> np.ndarray:
        """``4x4`` matrix mapping homogeneous ``(i, j, k, 1)`` indices to LPS millimetres."""
        spacing = np.ones(3)
        spacing[: self.spatial_dims] = self.spacing
        affine = np.eye(4)
        affine[:3, :3] = np.asarray(self.direction, dtype=float) * spacing[None, :]
        affine[:3, 3] = self.origin
        return affine

    def index_to_world(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, D)`` index coordinates to ``(N, 3)`` LPS millimetres."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        padded = np.zeros((points.shape[0], 4))
        padded[:, : points.shape[1]] = points
        padded[:, 3] = 1.0
        return (padded @ self.affine.T)[:, :3]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` LPS millimetres to ``(N, D)`` index coordinates."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        padded = np.concatenate([points, np.ones((points.shape[0], 1))], axis=1)
        index = padded @ np.linalg.inv(self.affine).T
        return index[:, : self.spatial_dims]

    def box_index_to_world(self, box: np.ndarray) -> np.ndarray:
        """Axis-aligned LPS bounding box (``xyzxyz``, mm) of an index-space box.

        For 2D images the result is ``xyxy`` in millimetres on the detector plane.
        """
        box = np.asarray(box, dtype=float)
        dims = self.spatial_dims
        lo, hi = box[:dims], box[dims:]
        corners = np.array(np.meshgrid(*[[lo[d], hi[d]] for d in range(dims)])).reshape(dims, -1).T
        world = self.index_to_world(corners)
        if dims == 2:
            world = world[:, :2]
        return np.concatenate([world.min(axis=0), world.max(axis=0)])
