"""PNG views of an image with the model's boxes, for the specialist's worklist page.

Geometry: an :class:`~oncotriage.datasets.image.ImageVolume` array is ``(X, Y[, Z])`` (axis 0 =
image columns, axis 1 = rows), so a displayed slice is ``array[:, :, k].T``. Finding boxes are
index-space ``xyxy``/``xyzxyz`` whose integers are voxel centres. The picture is resampled so
that one display pixel covers the same millimetres along both axes and its longer side is at
most ``max_size``; boxes follow the same mapping.

Windowing uses the DICOM linear VOI function (PS3.3 C.11.2.1.2.1) with ``(centre, width)``
in the array's units (Hounsfield units for CT, ``0..1`` presentation values for radiographs).

Decoded series are kept in a :class:`SeriesCache` (least recently used, bounded by bytes), so
scrolling through a CT series decodes it once, not once per slice shown.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.findings import Finding

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
"""CT window presets as ``(centre, width)`` in Hounsfield units."""

DEFAULT_CT_WINDOW = "lung"
BOX_COLOUR: tuple[int, int, int] = (255, 48, 48)
LABEL_TEXT_COLOUR: tuple[int, int, int] = (0, 0, 0)


def apply_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Map values to ``uint8`` grey levels with the DICOM linear VOI function.

    Args:
        values: any shape, in the image's units.
        centre: window centre.
        width: window width (> 1 for the DICOM formula; smaller widths threshold at
            ``centre``).

    Returns:
        ``uint8`` array of the same shape; values below the window are 0, above it 255.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if width <= 1.0:
        # DICOM defines width >= 1; narrower windows (e.g. on 0..1 radiographs) scale linearly.
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
        scaled = (values - (centre - width / 2.0)) / width
    else:
        scaled = (values - (centre - 0.5)) / (width - 1.0) + 0.5
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_image(
    image: ImageVolume,
    findings: Sequence[Finding] = (),
    *,
    slice_index: int | None = None,
    window: tuple[float, float] | str | None = None,
    max_size: int = 1024,
    show_boxes: bool = True,
    show_labels: bool = True,
) -> Image.Image:
    """Render one image (or one CT slice) as an RGB picture with finding boxes.

    Args:
        image: radiograph ``(X, Y)`` or volume ``(X, Y, Z)``.
        findings: boxes in the image's index space; on a volume only those whose ``z`` extent
            covers the shown slice are drawn.
        slice_index: axial slice of a volume; default the centre slice of the highest-scoring
            finding, or the middle slice when there are none. Must be ``None`` for 2D images.
        window: ``(centre, width)`` in the array's units, or a CT preset name (``lung``,
            ``mediastinum``, ``bone``). Default: ``lung`` for CT, the full ``0..1`` range for
            radiographs.
        max_size: longest side of the output in pixels (images are never enlarged beyond
            the aspect correction).
        show_boxes: draw finding boxes.
        show_labels: write each box's score above it.

    Returns:
        An RGB :class:`PIL.Image.Image`.

    Raises:
        ValueError: bad slice index, unknown preset, preset on a non-CT image, a box whose
            dimension does not match the image, or ``max_size`` < 16.
    """
    if max_size < 16:
        raise ValueError(f"max_size must be at least 16 pixels, got {max_size}")
    dims = image.spatial_dims
    for finding in findings:
        if len(finding.box_index) != 2 * dims:
            raise ValueError(
                f"a finding box has {len(finding.box_index)} values but the image is {dims}D; "
                f"expected {2 * dims}"
            )
    centre, width = _resolve_window(image, window)
    if dims == 3:
        k = _choose_slice(image, findings, slice_index)
        plane = image.array[:, :, k]
        visible = [f for f in findings if f.box_index[2] <= k + 0.5 and k - 0.5 <= f.box_index[5]]
    else:
        if slice_index not in (None, 0):
            raise ValueError("slice_index applies to volumes only; this image is 2D")
        plane = image.array
        visible = list(findings)
    grey = apply_window(plane.T, centre, width)  # (rows, columns)
    rows, cols = grey.shape
    out_w, out_h = _display_size(cols, rows, image.spacing[0], image.spacing[1], max_size)
    picture = Image.fromarray(grey)
    if (out_w, out_h) != (cols, rows):
        picture = picture.resize((out_w, out_h), Image.Resampling.LANCZOS)
    picture = picture.convert("RGB")
    if show_boxes and visible:
        _draw_boxes(picture, visible, scale=(out_w / cols, out_h / rows), labels=show_labels)
    return picture


def render_png(
    image: ImageVolume,
    findings: Sequence[Finding] = (),
    *,
    slice_index: int | None = None,
    window: tuple[float, float] | str | None = None,
    max_size: int = 1024,
    show_boxes: bool = True,
) -> bytes:
    """PNG bytes of :func:`render_image` (with score labels); see there for the arguments."""
    picture = render_image(
        image,
        findings,
        slice_index=slice_index,
        window=window,
        max_size=max_size,
        show_boxes=show_boxes,
        show_labels=True,
    )
    return _png(picture)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _is_ct(image: ImageVolume) -> bool:
    modality = image.modality.upper()
    return modality == "CT" or (not modality and image.spatial_dims == 3)


def _resolve_window(
    image: ImageVolume, window: tuple[float, float] | str | None
) -> tuple[float, float]:
    if window is None:
        window = DEFAULT_CT_WINDOW if _is_ct(image) else (0.5, 1.0)
    if isinstance(window, str):
        preset = window.lower()
        if preset not in WINDOW_PRESETS:
            raise ValueError(
                f"unknown window preset {window!r}; use one of {', '.join(WINDOW_PRESETS)} "
                "or a (centre, width) pair"
            )
        if not _is_ct(image):
            raise ValueError(
                f"window preset {window!r} is in Hounsfield units and applies to CT only; "
                f"this image is {image.modality or 'not CT'} (values 0..1): pass (centre, width)"
            )
        return WINDOW_PRESETS[preset]
    centre, width = (float(v) for v in window)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return centre, width


def _choose_slice(image: ImageVolume, findings: Sequence[Finding], slice_index: int | None) -> int:
    depth = image.array.shape[2]
    if slice_index is not None:
        if not 0 <= slice_index < depth:
            raise ValueError(f"slice_index {slice_index} is outside 0..{depth - 1}")
        return int(slice_index)
    if findings:
        top = max(findings, key=lambda f: f.score)
        centre = (float(top.box_index[2]) + float(top.box_index[5])) / 2.0
        return int(np.clip(np.floor(centre + 0.5), 0, depth - 1))
    return depth // 2


def _display_size(
    cols: int, rows: int, column_spacing: float, row_spacing: float, max_size: int
) -> tuple[int, int]:
    """Output ``(width, height)`` with square display pixels and the longer side <= max_size."""
    width = float(cols)
    height = rows * (row_spacing / column_spacing) if column_spacing > 0 else float(rows)
    scale = min(1.0, max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draw_boxes(
    picture: Image.Image,
    findings: Sequence[Finding],
    *,
    scale: tuple[float, float],
    labels: bool,
) -> None:
    draw = ImageDraw.Draw(picture)
    out_w, out_h = picture.size
    line = max(1, round(max(out_w, out_h) / 400))
    font = ImageFont.load_default(size=max(10, round(max(out_w, out_h) / 50)))
    fx, fy = scale
    # lowest score first so the most suspicious box is drawn on top
    for finding in sorted(findings, key=lambda f: f.score):
        dims = len(finding.box_index) // 2
        x0, y0 = float(finding.box_index[0]), float(finding.box_index[1])
        x1, y1 = float(finding.box_index[dims]), float(finding.box_index[dims + 1])
        # index coordinate x (voxel centre) -> display pixel centre (x + 0.5) * fx - 0.5
        u0, u1 = (round((x + 0.5) * fx - 0.5) for x in (x0, x1))
        v0, v1 = (round((y + 0.5) * fy - 0.5) for y in (y0, y1))
        u0, u1 = sorted((int(np.clip(u0, 0, out_w - 1)), int(np.clip(u1, 0, out_w - 1))))
        v0, v1 = sorted((int(np.clip(v0, 0, out_h - 1)), int(np.clip(v1, 0, out_h - 1))))
        draw.rectangle((u0, v0, u1, v1), outline=BOX_COLOUR, width=line)
        if labels:
            text = f"{finding.score:.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            text_w, text_h = right - left, bottom - top
            pad = 2
            label_h = text_h + 2 * pad
            ty = v0 - label_h if v0 - label_h >= 0 else min(v1 + 1, out_h - label_h)
            tx = min(u0, max(0, out_w - text_w - 2 * pad))
            draw.rectangle((tx, ty, tx + text_w + 2 * pad, ty + label_h - 1), fill=BOX_COLOUR)
            draw.text((tx + pad - left, ty + pad - top), text, fill=LABEL_TEXT_COLOUR, font=font)


#: default bound of the decoded-series cache: a few large CT series
DEFAULT_SERIES_CACHE_BYTES = 512 * 1024 * 1024


class SeriesCache:
    """Decoded images by key (their instances' content hashes), least recently used out first.

    The arrays of all cached images together stay at most ``max_bytes``; an image larger than
    that is returned but not kept. Cached arrays are made read-only, since every reader shares
    them. Thread-safe; concurrent requests for the same missing key decode it once.

    Attributes:
        decodes: how many times ``load`` ran (misses).
        hits: how many requests were answered from the cache.
    """

    def __init__(self, max_bytes: int = DEFAULT_SERIES_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.decodes = 0
        self.hits = 0
        self._entries: OrderedDict[Hashable, ImageVolume] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of the cached arrays."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _lookup(self, key: Hashable) -> ImageVolume | None:
        # caller holds self._lock
        image = self._entries.get(key)
        if image is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return image

    def get(self, key: Hashable, load: Callable[[], ImageVolume]) -> ImageVolume:
        """The image cached under ``key``, else ``load()`` (kept when it fits the bound).

        Errors from ``load`` propagate and nothing is cached.
        """
        with self._lock:
            image = self._lookup(key)
            if image is not None:
                return image
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                image = self._lookup(key)
                if image is not None:
                    return image
            try:
                image = load()
                image.array.flags.writeable = False
                with self._lock:
                    self.decodes += 1
                    self._store(key, image)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return image

    def _store(self, key: Hashable, image: ImageVolume) -> None:
        # caller holds self._lock
        size = int(image.array.nbytes)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= int(old.array.nbytes)
        while self._entries and self._bytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= int(evicted.array.nbytes)
        self._entries[key] = image
        self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
