"""Read what hospitals send: radiographs, multi-frame CT and CT series, as :class:`ImageVolume`.

Public API:

- :func:`read_dataset` parses one DICOM file (bytes, stream or path).
- :func:`validate_instance` is the cheap per-instance check used at upload time.
- :func:`read_image` turns one radiograph, one multi-frame CT object or all slices of one
  CT series into an :class:`~oncotriage.datasets.image.ImageVolume` (``(x, y[, z])`` arrays,
  LPS geometry, CT in HU, radiographs as ``0..1`` presentation values).
- :func:`group_series` finds DICOM files under folders and groups them by series.

Everything refused raises :class:`~oncotriage.datasets.image.UnsupportedImageError` with a
message a hospital can act on and a short ``code``, a
:class:`~oncotriage.datasets.image.RefusalCode` (``not_found``, ``not_dicom``, ``corrupt``,
``modality``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID, MediaStorageDirectoryStorage

from oncotriage.datasets.image import ImageVolume, RefusalCode, UnsupportedImageError
from oncotriage.datasets.instance import (
    CT_MULTIFRAME_CLASSES,
    CT_SLICE_CLASSES,
    MAX_FRAMES,
    MAX_PIXELS_PER_FRAME,
    MAX_TOTAL_PIXELS,
    RADIOGRAPH_CLASSES,
    SCREENING_SOP_CLASSES,
    is_valid_uid,
    radiograph_spacing,
    read_dataset,
    refuse_bad_values,
    spacing_is_estimated,
    validate_instance,
)
from oncotriage.datasets.pixels import (
    CT_PADDING_HU,
    decode_frames,
    number_of_frames,
    padding_mask,
    radiograph_presentation,
    rescale,
    rescale_of,
    transfer_syntax_of,
)
from oncotriage.datasets.series import (
    functional_group,
    has_functional_groups,
    plane_of_slice,
    planes_of_multiframe,
    stack_geometry,
)

__all__ = [
    "MAX_FRAMES",
    "MAX_PIXELS_PER_FRAME",
    "MAX_TOTAL_PIXELS",
    "SCREENING_SOP_CLASSES",
    "ImageSource",
    "ImageVolume",
    "SeriesGroups",
    "UnsupportedImageError",
    "group_series",
    "is_valid_uid",
    "read_dataset",
    "read_image",
    "validate_instance",
]

logger = logging.getLogger(__name__)

ImageSource = Path | str | pydicom.Dataset | Sequence[Path | str | pydicom.Dataset]


def _volume(
    ds: pydicom.Dataset,
    array: np.ndarray,
    spacing: tuple[float, ...],
    sop_instance_uids: tuple[str, ...],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction: np.ndarray | None = None,
    *,
    spacing_estimated: bool = False,
) -> ImageVolume:
    """An :class:`ImageVolume` of ``array`` with the UIDs and modality of ``ds``."""
    frame_of_reference = ds.get("FrameOfReferenceUID")
    return ImageVolume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        spacing=spacing,
        origin=origin,
        direction=np.eye(3) if direction is None else direction,
        modality=str(ds.get("Modality") or SCREENING_SOP_CLASSES[str(ds.SOPClassUID)]),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        frame_of_reference_uid=str(frame_of_reference) if frame_of_reference else None,
        sop_instance_uids=sop_instance_uids,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(transfer_syntax_of(ds)),
        spacing_estimated=spacing_estimated,
    )


def _read_radiograph(ds: pydicom.Dataset, field_of_view_mm: float | None) -> ImageVolume:
    frames = number_of_frames(ds)
    if frames > 1:
        raise UnsupportedImageError(
            f"multi-frame radiograph ({frames} frames) is not supported; send single images",
            code=RefusalCode.MULTIPLE_IMAGES,
        )
    presentation = radiograph_presentation(ds, decode_frames(ds)[0])
    return _volume(
        ds,
        presentation.T,
        radiograph_spacing(ds, field_of_view_mm=field_of_view_mm),
        (str(ds.SOPInstanceUID),),
        spacing_estimated=spacing_is_estimated(ds, field_of_view_mm),
    )


def _to_hu(stored: np.ndarray, ds: pydicom.Dataset, slope: float, intercept: float) -> np.ndarray:
    hu = rescale(stored, slope, intercept)
    mask = padding_mask(stored, ds)
    if mask is not None:
        hu[mask] = CT_PADDING_HU
    return hu


def _too_few(count: int, min_slices: int, what: str) -> UnsupportedImageError:
    noun = "frame" if what.startswith("multi-frame") else "slice"
    return UnsupportedImageError(
        f"{what} has {count} {noun}{'s' if count != 1 else ''}, need at least {min_slices}; "
        "send the complete CT series",
        code=RefusalCode.TOO_FEW_SLICES,
    )


def _read_multiframe_ct(ds: pydicom.Dataset, min_slices: int) -> ImageVolume:
    what = "multi-frame image"
    frames = number_of_frames(ds)
    if frames < min_slices:
        raise _too_few(frames, min_slices, what)
    planes = planes_of_multiframe(ds, frames)
    thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    geometry = stack_geometry(
        planes, what=what, single_slice_spacing=float(thickness) if thickness else None
    )
    stored = decode_frames(ds)
    slices = []
    for frame in geometry.order:
        transform = functional_group(ds, frame, "PixelValueTransformationSequence")
        slope, intercept = rescale_of(transform if transform is not None else ds)
        slices.append(_to_hu(stored[frame], ds, slope, intercept))
    volume = np.stack(slices, axis=0)  # (z, rows, columns)
    return _volume(
        ds,
        volume.transpose(2, 1, 0),
        geometry.spacing,
        (str(ds.SOPInstanceUID),),
        geometry.origin,
        geometry.direction,
    )


def _same_instance(first: pydicom.Dataset, second: pydicom.Dataset) -> bool:
    return bool(
        first.get("ImagePositionPatient") == second.get("ImagePositionPatient")
        and first.get("PixelData") == second.get("PixelData")
    )


def _read_ct_series(datasets: Sequence[pydicom.Dataset], min_slices: int) -> ImageVolume:
    unique: dict[str, pydicom.Dataset] = {}
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in unique:
            if not _same_instance(unique[uid], ds):
                raise UnsupportedImageError(
                    f"instance {uid} was sent twice with different content; each slice needs "
                    "its own SOP Instance UID",
                    code=RefusalCode.DUPLICATE_SLICES,
                )
            logger.info("dropping a second copy of instance %s", uid)
            continue
        unique[uid] = ds
    slices = [
        ds for ds in unique.values() if "LOCALIZER" not in [str(v) for v in ds.get("ImageType", [])]
    ]
    if len(slices) < len(unique):
        logger.info("ignoring %d localizer image(s) in the series", len(unique) - len(slices))
    for keyword, label in (
        ("StudyInstanceUID", "Study Instance UIDs"),
        ("FrameOfReferenceUID", "Frame of Reference UIDs"),
    ):
        values = {str(ds.get(keyword, "")) for ds in slices}
        if len(values) > 1:
            raise UnsupportedImageError(
                f"series mixes {len(values)} {label}; send one series at a time",
                code=RefusalCode.MIXED_SERIES,
            )
    if len(slices) < min_slices:
        raise _too_few(len(slices), min_slices, "series")
    first = slices[0]
    thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    geometry = stack_geometry(
        [plane_of_slice(ds) for ds in slices],
        what="series",
        single_slice_spacing=float(thickness) if thickness else None,
    )
    ordered = [slices[i] for i in geometry.order]
    hu = [_to_hu(decode_frames(ds)[0], ds, *rescale_of(ds)) for ds in ordered]
    volume = np.stack(hu, axis=0)  # (z, rows, columns)
    return _volume(
        ordered[0],
        volume.transpose(2, 1, 0),
        geometry.spacing,
        tuple(str(ds.SOPInstanceUID) for ds in ordered),
        geometry.origin,
        geometry.direction,
    )


def _load(item: Path | str | pydicom.Dataset, field_of_view_mm: float | None) -> pydicom.Dataset:
    if isinstance(item, pydicom.Dataset):
        validate_instance(item, field_of_view_mm=field_of_view_mm)
        return item
    try:
        ds = read_dataset(item)
        validate_instance(ds, field_of_view_mm=field_of_view_mm)
    except UnsupportedImageError as error:
        raise UnsupportedImageError(f"{Path(item).name}: {error}", code=error.code) from None
    return ds


def _datasets_of(source: ImageSource, field_of_view_mm: float | None) -> list[pydicom.Dataset]:
    if isinstance(source, pydicom.Dataset):
        return [_load(source, field_of_view_mm)]
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_dir():
            return [_load(path, field_of_view_mm)]
        groups = group_series([path])
        if groups.unreadable:
            bad, error = next(iter(groups.unreadable.items()))
            raise UnsupportedImageError(f"{bad}: {error}", code=error.code)
        if len(groups.series) != 1:
            raise UnsupportedImageError(
                f"{path} holds {len(groups.series)} series; read one series at a time",
                code=RefusalCode.MIXED_SERIES if groups.series else RefusalCode.NOT_FOUND,
            )
        return [_load(p, field_of_view_mm) for p in next(iter(groups.series.values()))]
    return [_load(item, field_of_view_mm) for item in source]


def read_image(
    source: ImageSource, *, min_slices: int = 16, field_of_view_mm: float | None = None
) -> ImageVolume:
    """Read one radiograph, one multi-frame CT object or all the slices of one CT series.

    Args:
        source: a file path or dataset (radiograph, multi-frame CT, or a single CT slice),
            a folder holding exactly one series, or a sequence of paths/datasets that are
            the slices of one CT series (any order; identical copies are dropped; localizer
            images are ignored).
        min_slices: fewest slices (or frames) a CT volume may have.
        field_of_view_mm: estimate the spacing of a CR/DX radiograph that has none from
            this field of view (see :func:`~oncotriage.datasets.instance.radiograph_spacing`);
            the volume then says ``spacing_estimated``. ``None``: refuse such images.

    Returns:
        An :class:`ImageVolume`: arrays ``(X, Y)`` or ``(X, Y, Z)``, float32 (CT in HU with
        Pixel Padding set to -1024; radiographs ``0..1`` presentation values), spacing in mm
        in array-axis order, LPS origin/direction for CT (identity and zero for radiographs).

    Raises:
        UnsupportedImageError: for anything the pipeline cannot use, with a reason code.
    """
    with refuse_bad_values():
        return _read_image(source, min_slices, field_of_view_mm)


def _read_image(
    source: ImageSource, min_slices: int, field_of_view_mm: float | None
) -> ImageVolume:
    datasets = _datasets_of(source, field_of_view_mm)
    if not datasets:
        raise UnsupportedImageError("no DICOM instances given", code=RefusalCode.NOT_FOUND)
    classes = {str(ds.SOPClassUID) for ds in datasets}
    series = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(series) > 1:
        raise UnsupportedImageError(
            f"series mixes {len(series)} Series Instance UIDs; send one series at a time",
            code=RefusalCode.MIXED_SERIES,
        )
    if len(datasets) == 1:
        ds = datasets[0]
        sop_class = str(ds.SOPClassUID)
        if sop_class in RADIOGRAPH_CLASSES:
            return _read_radiograph(ds, field_of_view_mm)
        if (
            sop_class in CT_MULTIFRAME_CLASSES
            or number_of_frames(ds) > 1
            or has_functional_groups(ds)
        ):
            return _read_multiframe_ct(ds, min_slices)
        return _read_ct_series(datasets, min_slices)
    if classes != set(CT_SLICE_CLASSES) or any(number_of_frames(ds) > 1 for ds in datasets):
        names = ", ".join(sorted(UID(c).name for c in classes))
        raise UnsupportedImageError(
            f"got {len(datasets)} instances of {names}; only single-frame CT slices form a "
            "series: read radiographs and multi-frame images one at a time",
            code=RefusalCode.MULTIPLE_IMAGES,
        )
    return _read_ct_series(datasets, min_slices)


@dataclass
class SeriesGroups:
    """DICOM files found under some paths, grouped by Series Instance UID.

    Attributes:
        series: Series Instance UID -> its files, sorted by path; series in the order found.
        unreadable: files (or missing paths) that could not be read, with the reason.
        ignored: files skipped on purpose (hidden files, DICOMDIR), with why.
    """

    series: dict[str, list[Path]] = field(default_factory=dict)
    unreadable: dict[Path, UnsupportedImageError] = field(default_factory=dict)
    ignored: dict[Path, str] = field(default_factory=dict)


NON_DICOM_SUFFIXES = frozenset(
    {".json", ".csv", ".txt", ".md", ".yaml", ".yml", ".png", ".jpg", ".jpeg", ".pdf", ".xml"}
)


def group_series(paths: Sequence[Path]) -> SeriesGroups:
    """Find DICOM files (folders are searched recursively) and group them by series.

    Only headers are read (no Pixel Data), so this is fast; reading the images may still
    refuse them.
    """
    groups = SeriesGroups()
    seen: set[Path] = set()
    for root in paths:
        root = Path(root)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file())
            for file in files:
                if any(part.startswith(".") for part in file.relative_to(root).parts):
                    groups.ignored[file] = "hidden file"
                elif file.suffix.lower() in NON_DICOM_SUFFIXES:
                    # Datalists, reports and pictures beside the images, found only when a
                    # folder is searched; a file named on the command line is still read.
                    groups.ignored[file] = f"not an image file ({file.suffix.lower()})"
            files = [f for f in files if f not in groups.ignored]
        elif root.is_file():
            files = [root]
        else:
            groups.unreadable[root] = UnsupportedImageError(
                "no such file or folder", code=RefusalCode.NOT_FOUND
            )
            continue
        for file in files:
            resolved = file.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                header = read_dataset(file, stop_before_pixels=True)
            except UnsupportedImageError as error:
                groups.unreadable[file] = error
                continue
            if str(header.get("SOPClassUID", "")) == MediaStorageDirectoryStorage:
                groups.ignored[file] = "DICOMDIR (an index of the media, not an image)"
                continue
            series_uid = str(header.get("SeriesInstanceUID", ""))
            if not is_valid_uid(series_uid):
                groups.unreadable[file] = UnsupportedImageError(
                    f"missing or invalid Series Instance UID {series_uid!r}",
                    code=RefusalCode.INVALID_UID,
                )
                continue
            groups.series.setdefault(series_uid, []).append(file)
    for files in groups.series.values():
        files.sort()
    logger.debug(
        "found %d series, %d unreadable, %d ignored files",
        len(groups.series),
        len(groups.unreadable),
        len(groups.ignored),
    )
    return groups
