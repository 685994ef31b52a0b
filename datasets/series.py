"""Geometry of a stack of CT slices (single-frame instances or the frames of one object).

Slices are ordered by Image Position (Patient) projected on the slice normal (row cosine x
column cosine of Image Orientation (Patient)); the slice spacing comes from those positions,
never from Slice Thickness. Anything that would make a regular volume a lie is refused:
mixed sizes or orientations, two images at one position, missing slices, uneven gaps,
slices sheared off the normal (gantry tilt).

All positions are DICOM patient coordinates (LPS, millimetres).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom

from oncotriage.datasets.image import RefusalCode, UnsupportedImageError

logger = logging.getLogger(__name__)

#: Largest difference between direction cosines still counted as the same orientation.
ORIENTATION_TOLERANCE = 1e-3
#: Two slices closer than this along the normal (mm) occupy the same position.
DUPLICATE_TOLERANCE_MM = 0.01
#: A gap larger than this multiple of the typical spacing means slices are missing.
MISSING_SLICE_FACTOR = 1.5
#: Largest distance of a slice from the uniform grid, as a fraction of the spacing.
SPACING_TOLERANCE = 0.1
#: Largest sideways drift of a slice off the normal, as a fraction of the pixel spacing.
SHEAR_TOLERANCE = 0.5


@dataclass(frozen=True)
class SlicePlane:
    """Where one slice (or frame) lies.

    Attributes:
        position: Image Position (Patient), LPS mm of the centre of the first pixel, ``(3,)``.
        row_cosine: LPS direction of increasing column index (first row), ``(3,)``.
        column_cosine: LPS direction of increasing row index (first column), ``(3,)``.
        pixel_spacing: DICOM Pixel Spacing, ``(between rows, between columns)`` in mm.
        rows, columns: image size.
        label: how messages name the slice (``"instance 1.2.3"`` or ``"frame 7"``).
    """

    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    label: str

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row_cosine, self.column_cosine)
        return np.asarray(normal / np.linalg.norm(normal))


@dataclass(frozen=True)
class StackGeometry:
    """A regular volume built from slices.

    Attributes:
        order: indices into the input planes, ascending along the slice normal.
        origin: LPS mm of voxel ``(0, 0, 0)``: the position of the first sorted slice.
        direction: ``3x3``; columns are the row cosine (array axis x), column cosine (axis y)
            and slice normal (axis z).
        spacing: ``(x, y, z)`` mm: column spacing, row spacing, slice spacing.
    """

    order: list[int]
    origin: tuple[float, float, float]
    direction: np.ndarray
    spacing: tuple[float, float, float]


def _floats(value: Any, count: int, what: str, label: str) -> np.ndarray:
    try:
        numbers = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        numbers = np.array([])
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise UnsupportedImageError(
            f"{label} has no valid {what} (need {count} numbers, got {value!r})",
            code=RefusalCode.MISSING_ATTRIBUTE,
        )
    return numbers


def make_plane(
    position: Any, orientation: Any, pixel_spacing: Any, rows: int, columns: int, label: str
) -> SlicePlane:
    """Build a :class:`SlicePlane` from raw DICOM values, checking them.

    Raises:
        UnsupportedImageError: ``missing_attribute`` for absent or malformed values,
            ``series_geometry`` when the orientation is not two orthogonal unit vectors.
    """
    if position is None or orientation is None or pixel_spacing is None:
        missing = [
            name
            for name, value in (
                ("Image Position (Patient)", position),
                ("Image Orientation (Patient)", orientation),
                ("Pixel Spacing", pixel_spacing),
            )
            if value is None
        ]
        raise UnsupportedImageError(
            f"{label} has no {', '.join(missing)}; a CT slice needs its position, "
            "orientation and pixel spacing",
            code=RefusalCode.MISSING_ATTRIBUTE,
        )
    ipp = _floats(position, 3, "Image Position (Patient)", label)
    iop = _floats(orientation, 6, "Image Orientation (Patient)", label)
    spacing = _floats(pixel_spacing, 2, "Pixel Spacing", label)
    if np.any(spacing <= 0):
        raise UnsupportedImageError(
            f"{label} has Pixel Spacing {spacing.tolist()}; both values must be > 0",
            code=RefusalCode.MISSING_ATTRIBUTE,
        )
    row, column = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 10 * ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(column) - 1) > 10 * ORIENTATION_TOLERANCE
        or abs(float(row @ column)) > 10 * ORIENTATION_TOLERANCE
    ):
        raise UnsupportedImageError(
            f"{label}: Image Orientation (Patient) {iop.tolist()} is not two orthogonal "
            "unit vectors",
            code=RefusalCode.SERIES_GEOMETRY,
        )
    return SlicePlane(
        position=ipp,
        row_cosine=row / np.linalg.norm(row),
        column_cosine=column / np.linalg.norm(column),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=int(rows),
        columns=int(columns),
        label=label,
    )


def plane_of_slice(ds: pydicom.Dataset) -> SlicePlane:
    """The plane of a single-frame CT instance."""
    return make_plane(
        ds.get("ImagePositionPatient"),
        ds.get("ImageOrientationPatient"),
        ds.get("PixelSpacing"),
        int(ds.Rows),
        int(ds.Columns),
        f"instance {ds.get('SOPInstanceUID', '?')}",
    )


def functional_group(ds: pydicom.Dataset, frame: int, keyword: str) -> pydicom.Dataset | None:
    """The ``keyword`` macro item for ``frame``: per-frame first, then shared; else ``None``."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        sequence = per_frame[frame].get(keyword)
        if sequence:
            return sequence[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        sequence = shared[0].get(keyword)
        if sequence:
            return sequence[0]
    return None


def has_functional_groups(ds: pydicom.Dataset) -> bool:
    return bool(
        ds.get("PerFrameFunctionalGroupsSequence") or ds.get("SharedFunctionalGroupsSequence")
    )


def planes_of_multiframe(ds: pydicom.Dataset, frames: int) -> list[SlicePlane]:
    """Planes of every frame of a multi-frame CT object.

    Enhanced / Legacy Converted Enhanced CT carry them in the Plane Position, Plane
    Orientation and Pixel Measures functional groups. A plain multi-frame object without
    functional groups is read as frames stacked from Image Position (Patient) along the
    normal at Spacing Between Slices (the only geometry it has).
    """
    rows, columns = int(ds.Rows), int(ds.Columns)
    if has_functional_groups(ds):
        planes = []
        for frame in range(frames):
            position = functional_group(ds, frame, "PlanePositionSequence")
            orientation = functional_group(ds, frame, "PlaneOrientationSequence")
            measures = functional_group(ds, frame, "PixelMeasuresSequence")
            planes.append(
                make_plane(
                    position.get("ImagePositionPatient") if position is not None else None,
                    orientation.get("ImageOrientationPatient") if orientation is not None else None,
                    measures.get("PixelSpacing") if measures is not None else None,
                    rows,
                    columns,
                    f"frame {frame + 1}",
                )
            )
        return planes
    first = make_plane(
        ds.get("ImagePositionPatient"),
        ds.get("ImageOrientationPatient"),
        ds.get("PixelSpacing"),
        rows,
        columns,
        "frame 1",
    )
    step = ds.get("SpacingBetweenSlices")
    if frames > 1 and (step in (None, "") or float(step) <= 0):
        raise UnsupportedImageError(
            "multi-frame image has neither per-frame positions (Per-frame Functional Groups) "
            "nor Spacing Between Slices; send it as Enhanced CT or as single-frame slices",
            code=RefusalCode.MISSING_ATTRIBUTE,
        )
    logger.warning("multi-frame CT without functional groups: frames assumed along the normal")
    step_mm = float(step) if frames > 1 else 0.0
    return [
        SlicePlane(
            position=first.position + k * step_mm * first.normal,
            row_cosine=first.row_cosine,
            column_cosine=first.column_cosine,
            pixel_spacing=first.pixel_spacing,
            rows=rows,
            columns=columns,
            label=f"frame {k + 1}",
        )
        for k in range(frames)
    ]


def _distinct(values: Sequence[np.ndarray], tolerance: float) -> list[np.ndarray]:
    kinds: list[np.ndarray] = []
    for value in values:
        if not any(np.max(np.abs(value - kind)) <= tolerance for kind in kinds):
            kinds.append(value)
    return kinds


def _check_consistent(planes: Sequence[SlicePlane], what: str) -> None:
    sizes = sorted({(p.rows, p.columns) for p in planes})
    if len(sizes) > 1:
        listed = ", ".join(f"{rows}x{cols}" for rows, cols in sizes)
        raise UnsupportedImageError(
            f"{what} mixes {len(sizes)} image sizes ({listed}); send one reconstruction per series",
            code=RefusalCode.MIXED_SERIES,
        )
    orientations = _distinct(
        [np.concatenate([p.row_cosine, p.column_cosine]) for p in planes], ORIENTATION_TOLERANCE
    )
    if len(orientations) > 1:
        raise UnsupportedImageError(
            f"{what} mixes {len(orientations)} orientations (a localizer or a second "
            "reconstruction in the series?); send the slices of one reconstruction only",
            code=RefusalCode.MIXED_SERIES,
        )
    spacings = _distinct([np.array(p.pixel_spacing) for p in planes], 1e-4)
    if len(spacings) > 1:
        listed = ", ".join(f"{s[0]:g}x{s[1]:g}" for s in spacings)
        raise UnsupportedImageError(
            f"{what} mixes {len(spacings)} pixel spacings ({listed} mm); send one "
            "reconstruction per series",
            code=RefusalCode.MIXED_SERIES,
        )


def stack_geometry(
    planes: Sequence[SlicePlane],
    *,
    what: str = "series",
    single_slice_spacing: float | None = None,
) -> StackGeometry:
    """Sort slices along their normal and check they form a regular volume.

    Args:
        planes: one per slice, in any order; at least one.
        what: how messages name the stack (``"series"``, ``"multi-frame image"``).
        single_slice_spacing: slice spacing to report when there is only one slice
            (no positions to measure it from); ``1.0`` when ``None``.

    Returns:
        The order, origin, direction and spacing of the volume.

    Raises:
        UnsupportedImageError: ``mixed_series``, ``duplicate_slices``, ``missing_slices``,
            ``uneven_spacing`` or ``series_geometry``, with the positions involved.
    """
    if not planes:
        raise UnsupportedImageError(f"{what} has no slices", code=RefusalCode.TOO_FEW_SLICES)
    _check_consistent(planes, what)
    first = planes[0]
    normal = first.normal
    direction = np.stack([first.row_cosine, first.column_cosine, normal], axis=1)
    in_plane = (first.pixel_spacing[1], first.pixel_spacing[0])
    depth = np.array([float(p.position @ normal) for p in planes])
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    sorted_depth = depth[order]
    x0, y0, z0 = (float(v) for v in planes[order[0]].position)
    origin = (x0, y0, z0)
    if len(planes) == 1:
        spacing_z = float(single_slice_spacing) if single_slice_spacing else 1.0
        return StackGeometry(order, origin, direction, (in_plane[0], in_plane[1], spacing_z))

    gaps = np.diff(sorted_depth)
    duplicate = np.flatnonzero(gaps < DUPLICATE_TOLERANCE_MM)
    if duplicate.size:
        k = int(duplicate[0])
        raise UnsupportedImageError(
            f"duplicate slice positions at z={sorted_depth[k]:.2f} mm "
            f"({planes[order[k]].label} and {planes[order[k + 1]].label}"
            f"{f', and {duplicate.size - 1} more' if duplicate.size > 1 else ''}): the series "
            "holds more than one image per position (two acquisitions or phases?); send one "
            "reconstruction per series",
            code=RefusalCode.DUPLICATE_SLICES,
        )

    start = planes[order[0]].position
    drift = max(
        float(np.linalg.norm((p.position - start) - float((p.position - start) @ normal) * normal))
        for p in planes
    )
    if drift > SHEAR_TOLERANCE * min(first.pixel_spacing):
        extent = float(sorted_depth[-1] - sorted_depth[0])
        angle = float(np.degrees(np.arctan2(drift, extent)))
        raise UnsupportedImageError(
            f"{what} slices are not stacked along their normal (sheared by {drift:.1f} mm over "
            f"{extent:.1f} mm, about {angle:.1f} degrees of gantry tilt); send a reconstruction "
            "without tilt",
            code=RefusalCode.SERIES_GEOMETRY,
        )

    typical = float(np.median(gaps))
    missing = np.flatnonzero(gaps > MISSING_SLICE_FACTOR * typical)
    if missing.size:
        k = int(missing[np.argmax(gaps[missing])])
        count = max(int(round(gaps[k] / typical)) - 1, 1)
        raise UnsupportedImageError(
            f"missing slices: gap of {gaps[k]:.2f} mm where spacing is {typical:.2f} mm "
            f"(about {count} slice{'s' if count > 1 else ''} missing after "
            f"z={sorted_depth[k]:.2f} mm); send the complete series",
            code=RefusalCode.MISSING_SLICES,
        )

    spacing_z = float(sorted_depth[-1] - sorted_depth[0]) / (len(planes) - 1)
    grid = sorted_depth[0] + spacing_z * np.arange(len(planes))
    off_grid = np.abs(sorted_depth - grid)
    if float(off_grid.max()) > SPACING_TOLERANCE * spacing_z:
        k = int(np.argmax(off_grid))
        raise UnsupportedImageError(
            f"uneven slice spacing: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm (the "
            f"slice at z={sorted_depth[k]:.2f} mm is {off_grid[k]:.2f} mm off a regular "
            f"{spacing_z:.2f} mm grid); send a reconstruction with constant spacing",
            code=RefusalCode.UNEVEN_SPACING,
        )
    return StackGeometry(order, origin, direction, (in_plane[0], in_plane[1], spacing_z))
