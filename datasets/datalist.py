"""MONAI-style detection datalists: load entries, convert box modes, load their images.

A datalist is JSON in the layout of MONAI's ``load_decathlon_datalist`` for detection
(the LUNA16 datalists of MONAI's detection tutorial, and what
:func:`oncotriage.datasets.synth.run_synth` writes)::

    {"training": [{"image": "a.nii.gz", "box": [[x, y, z, w, h, d], ...], "label": [0, ...]}],
     "validation": [...], "test": [...],
     "box_mode": "cccwhd", "coordinates": "world_mm", "spatial_dims": 3}

The top-level ``box_mode``, ``coordinates`` and ``spatial_dims`` keys are optional: without
them, ``spatial_dims`` comes from the box length, the mode is ``cccwhd`` (3D) or ``ccwh``
(2D) and the coordinates are world millimetres, as in MONAI's LUNA16 datalists (LPS).
Images may be DICOM (a file, or a folder holding one series), NIfTI or MetaImage; relative
paths are relative to the datalist's folder.

Box modes (MONAI's names; all numpy here):

- ``xyxy`` / ``xyzxyz``: corners ``(lo..., hi...)``;
- ``ccwh`` / ``cccwhd``: centre then size;
- ``xywh`` / ``xyzwhd``: low corner then size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oncotriage.datasets.image import ImageVolume

BOX_MODE_DIMS = {"xyxy": 2, "ccwh": 2, "xywh": 2, "xyzxyz": 3, "cccwhd": 3, "xyzwhd": 3}
CORNER_MODE = {2: "xyxy", 3: "xyzxyz"}
COORDINATES = ("world_mm", "index")
_ENTRY_KEYS = ("image", "box", "boxes", "label", "labels")


def _dims_of(mode: str) -> int:
    try:
        return BOX_MODE_DIMS[mode]
    except KeyError:
        raise ValueError(
            f"unknown box mode {mode!r}; use one of {', '.join(BOX_MODE_DIMS)}"
        ) from None


def convert_box_mode(boxes: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert boxes between MONAI box modes.

    Args:
        boxes: ``(N, 2*D)`` boxes in mode ``src`` (any real dtype; a single ``(2*D,)`` box
            is accepted too).
        src, dst: modes of the same dimensionality: ``xyxy``, ``ccwh``, ``xywh`` (2D) or
            ``xyzxyz``, ``cccwhd``, ``xyzwhd`` (3D).

    Returns:
        ``(N, 2*D)`` float64 boxes in mode ``dst``, in the same coordinate space.
    """
    dims = _dims_of(src)
    if _dims_of(dst) != dims:
        raise ValueError(f"cannot convert {dims}D box mode {src!r} to {_dims_of(dst)}D {dst!r}")
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 2 * dims:
        raise ValueError(f"{src} boxes must have shape (N, {2 * dims}), got {array.shape}")
    first, second = array[:, :dims], array[:, dims:]
    if src in ("xyxy", "xyzxyz"):
        lo, hi = first, second
    elif src in ("ccwh", "cccwhd"):
        lo, hi = first - second / 2, first + second / 2
    else:
        lo, hi = first, first + second
    if dst in ("xyxy", "xyzxyz"):
        return np.concatenate([lo, hi], axis=1)
    if dst in ("ccwh", "cccwhd"):
        return np.concatenate([(lo + hi) / 2, hi - lo], axis=1)
    return np.concatenate([lo, hi - lo], axis=1)


@dataclass(frozen=True)
class DatalistEntry:
    """One image of a detection datalist with its boxes.

    Attributes:
        image: absolute path: a DICOM file, a folder with one DICOM series, or a NIfTI /
            MetaImage file.
        boxes: ``(N, 2*D)`` float64 boxes in ``box_mode`` and ``coordinates`` space.
        labels: ``(N,)`` int64 class indices.
        spatial_dims: 2 or 3.
        box_mode: mode of ``boxes`` (the one requested from :func:`load_datalist`).
        coordinates: ``world_mm`` (LPS mm for volumes; detector-plane mm,
            ``index * spacing``, for radiographs) or ``index``.
        meta: the entry's other keys (UIDs, case id, nodule diameters, ...) plus ``split``;
            ``distractor_box`` (benign look-alikes), when present, is in ``box_mode`` too.
    """

    image: Path
    boxes: np.ndarray
    labels: np.ndarray
    spatial_dims: int
    box_mode: str
    coordinates: str = "world_mm"
    meta: dict[str, Any] = field(default_factory=dict)


def _datalist_settings(datalist: dict[str, Any], split: str) -> tuple[int, str, str]:
    entries = datalist[split]
    dims = datalist.get("spatial_dims")
    if dims is None:
        lengths = {
            len(box) for entry in entries for box in entry.get("box", entry.get("boxes", []))
        }
        # 4 numbers: 2D, 6: 3D; mixed or odd lengths default to 3D and fail per entry
        dims = {4: 2, 6: 3}.get(lengths.pop(), 3) if len(lengths) == 1 else 3
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {dims}")
    mode = datalist.get("box_mode") or ("cccwhd" if dims == 3 else "ccwh")
    if _dims_of(mode) != dims:
        raise ValueError(f"box_mode {mode!r} does not describe {dims}D boxes")
    coordinates = datalist.get("coordinates", "world_mm")
    if coordinates not in COORDINATES:
        raise ValueError(
            f"coordinates must be one of {', '.join(COORDINATES)}, got {coordinates!r}"
        )
    return int(dims), str(mode), str(coordinates)


def load_datalist(
    path: Path | str,
    split: str,
    *,
    box_mode: str | None = None,
    base_dir: Path | str | None = None,
) -> list[DatalistEntry]:
    """Read one split of a detection datalist.

    Args:
        path: the datalist JSON.
        split: key of the split, e.g. ``training``, ``validation`` or ``test``.
        box_mode: mode to return boxes in (e.g. ``xyzxyz``); ``None`` keeps the datalist's.
        base_dir: folder relative image paths start from; the datalist's folder by default.

    Returns:
        The split's entries, in file order, with absolute image paths.

    Raises:
        FileNotFoundError: no datalist at ``path``.
        ValueError: unknown split or box mode, or an entry whose boxes and labels are
            malformed (the message names the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no datalist at {path}")
    try:
        datalist = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(datalist, dict) or not isinstance(datalist.get(split), list):
        available = (
            [k for k, v in datalist.items() if isinstance(v, list)]
            if isinstance(datalist, dict)
            else []
        )
        raise ValueError(f"{path} has no split {split!r}; it has: {', '.join(available) or 'none'}")
    dims, src_mode, coordinates = _datalist_settings(datalist, split)
    dst_mode = box_mode or src_mode
    if _dims_of(dst_mode) != dims:
        raise ValueError(f"box_mode {dst_mode!r} is not a {dims}D mode")
    root = Path(base_dir) if base_dir is not None else path.parent
    entries = []
    for number, raw in enumerate(datalist[split]):
        where = f"{path.name} {split}[{number}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("image"), str):
            raise ValueError(f"{where}: an entry needs an 'image' path string")
        boxes = np.asarray(raw.get("box", raw.get("boxes", [])), dtype=np.float64)
        boxes = boxes.reshape(0, 2 * dims) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 2 * dims:
            raise ValueError(f"{where}: boxes must be a list of {2 * dims} numbers each")
        labels = np.asarray(raw.get("label", raw.get("labels", [])), dtype=np.int64).reshape(-1)
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"{where}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        corners = convert_box_mode(boxes, src_mode, CORNER_MODE[dims])
        if np.any(corners[:, dims:] < corners[:, :dims]):
            raise ValueError(f"{where}: a box has a negative size")
        image = Path(raw["image"])
        meta = {k: v for k, v in raw.items() if k not in _ENTRY_KEYS}
        meta["split"] = split
        if meta.get("distractor_box"):
            # benign look-alikes (synthetic version 2): returned in the boxes' mode too
            distractors = np.asarray(meta["distractor_box"], dtype=np.float64)
            meta["distractor_box"] = convert_box_mode(
                distractors.reshape(-1, 2 * dims), src_mode, dst_mode
            ).tolist()
        entries.append(
            DatalistEntry(
                image=(image if image.is_absolute() else root / image).resolve(),
                boxes=convert_box_mode(corners, CORNER_MODE[dims], dst_mode),
                labels=labels,
                spatial_dims=dims,
                box_mode=dst_mode,
                coordinates=coordinates,
                meta=meta,
            )
        )
    return entries


def load_entry_image(entry: DatalistEntry, *, min_slices: int = 16) -> ImageVolume:
    """Load the image of a datalist entry.

    NIfTI and MetaImage files go through :func:`~oncotriage.datasets.volume_io.read_volume_file`
    (modality from the entry's ``modality`` key, else ``CT`` for 3D and ``DX`` for 2D);
    anything else (a DICOM file, or a folder holding one series) through the DICOM reader.

    Args:
        entry: the entry.
        min_slices: fewest slices accepted for a DICOM CT series.

    Returns:
        The image with its geometry.

    Raises:
        UnsupportedImageError: the image is missing or unusable.
        ValueError: the image's dimensionality differs from the entry's boxes.
    """
    from oncotriage.datasets.volume_io import read_volume_file, volume_format

    if volume_format(entry.image) is not None:
        default = "CT" if entry.spatial_dims == 3 else "DX"
        volume = read_volume_file(entry.image, modality=str(entry.meta.get("modality", default)))
    else:
        from oncotriage.datasets.reader import read_image

        volume = read_image(entry.image, min_slices=min_slices)
    if volume.spatial_dims != entry.spatial_dims:
        raise ValueError(
            f"{entry.image} is {volume.spatial_dims}D but its datalist boxes are "
            f"{entry.spatial_dims}D"
        )
    return volume


def boxes_to_index(entry: DatalistEntry, volume: ImageVolume) -> np.ndarray:
    """The entry's boxes in the volume's index space, corner mode.

    World boxes are mapped corner by corner with ``volume.world_to_index`` and the
    axis-aligned hull is taken (exact for axis-aligned volumes; for oblique ones the
    index box encloses the world box).

    Args:
        entry: a datalist entry (any box mode, world or index coordinates).
        volume: its image, e.g. from :func:`load_entry_image`.

    Returns:
        ``(N, 2*D)`` float64 ``xyxy``/``xyzxyz`` boxes in voxel-centre index coordinates.
    """
    dims = entry.spatial_dims
    corners = convert_box_mode(entry.boxes, entry.box_mode, CORNER_MODE[dims])
    if entry.coordinates == "index" or corners.shape[0] == 0:
        return corners
    grid = np.array(np.meshgrid(*[[0, 1]] * dims, indexing="ij")).reshape(dims, -1).T
    result = np.zeros_like(corners)
    for row, box in enumerate(corners):
        points = np.where(grid == 0, box[:dims], box[dims:])  # (2**D, D)
        world = np.zeros((points.shape[0], 3))
        world[:, :dims] = points
        index = volume.world_to_index(world)
        result[row] = np.concatenate([index.min(axis=0), index.max(axis=0)])
    return result
