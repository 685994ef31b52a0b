"""Sliding-window inference in numpy for networks with several outputs at lower resolutions.

A port of MONAI ``monai.inferers.sliding_window_inference`` (non-buffered path) as
``RetinaNetDetector`` uses it: the predictor returns one map per output (RetinaNet: the
classification maps of every level, then the box-regression maps), each at its own
resolution; window outputs are weighted by the importance map (nearest-exact resized to each
output resolution, as MONAI does), summed into the full-size outputs and divided by the summed
weights. Window positions, order, padding and cropping follow MONAI so the stitched maps match.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "compute_importance_map",
    "dense_patch_slices",
    "scan_interval",
    "sliding_window_inference",
]

FloatArray = npt.NDArray[np.float32]
Predictor = Callable[[np.ndarray], Sequence[np.ndarray]]

_NP_PAD_MODES = {
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


def scan_interval(
    image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]
) -> tuple[int, ...]:
    """Window step per axis: ``int(roi * (1 - overlap))`` (>= 1), or ``roi`` if it spans it."""
    out = []
    for size, roi, ovl in zip(image_size, roi_size, overlap, strict=True):
        if roi == size:
            out.append(int(roi))
        else:
            step = int(roi * (1 - ovl))
            out.append(step if step > 0 else 1)
    return tuple(out)


def dense_patch_slices(
    image_size: Sequence[int], patch_size: Sequence[int], interval: Sequence[int]
) -> list[tuple[slice, ...]]:
    """Window slices covering the image (MONAI ``dense_patch_slices``), first axis slowest."""
    dims = len(image_size)
    patch = [min(int(i), int(p) or int(i)) for i, p in zip(image_size, patch_size, strict=True)]
    starts: list[list[int]] = []
    for d in range(dims):
        if interval[d] == 0:
            count = 1
        else:
            num = int(math.ceil(float(image_size[d]) / interval[d]))
            last = next(
                (k for k in range(num) if k * interval[d] + patch[d] >= image_size[d]), None
            )
            count = last + 1 if last is not None else 1
        axis_starts = []
        for k in range(count):
            start = k * interval[d]
            start -= max(start + patch[d] - image_size[d], 0)
            axis_starts.append(start)
        starts.append(axis_starts)
    grid = np.asarray([m.flatten() for m in np.meshgrid(*starts, indexing="ij")]).T
    return [tuple(slice(int(s), int(s) + patch[d]) for d, s in enumerate(row)) for row in grid]


def compute_importance_map(
    patch_size: Sequence[int], mode: str = "constant", sigma_scale: float | Sequence[float] = 0.125
) -> FloatArray:
    """Per-voxel window weight (MONAI ``compute_importance_map``), float32."""
    if mode == "constant":
        return np.ones(tuple(patch_size), dtype=np.float32)
    if mode != "gaussian":
        raise ValueError(f"sliding window mode must be 'constant' or 'gaussian', got {mode!r}")
    scales = (
        [sigma_scale] * len(patch_size) if isinstance(sigma_scale, float | int) else sigma_scale
    )
    weights: np.ndarray | None = None
    for axis, (size, scale) in enumerate(zip(patch_size, scales, strict=True)):
        sigma = size * scale
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / np.float32(-2 * sigma**2)).astype(np.float32)
        weights = g if axis == 0 else weights[..., None] * g[(None,) * axis]  # type: ignore[index]
    assert weights is not None
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def _resize_nearest_exact(weights: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``torch.nn.functional.interpolate(mode="nearest-exact")`` over all axes of ``weights``."""
    out = weights
    for axis, (src, dst) in enumerate(zip(weights.shape, shape, strict=True)):
        if src == dst:
            continue
        idx = np.floor((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst)).astype(np.int64)
        out = np.take(out, np.minimum(idx, src - 1), axis=axis)
    return out


def sliding_window_inference(
    inputs: np.ndarray,
    roi_size: Sequence[int],
    sw_batch_size: int,
    predictor: Predictor,
    overlap: float | Sequence[float] = 0.25,
    mode: str = "constant",
    sigma_scale: float | Sequence[float] = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
) -> list[FloatArray]:
    """Run ``predictor`` on overlapping windows and stitch every output.

    Args:
        inputs: ``(B, C, *S)`` float32 input.
        roi_size: window size, one value per spatial axis (non-positive: the whole axis).
        sw_batch_size: windows per predictor call (windows of all images are batched together).
        predictor: maps ``(n, C, *roi_size)`` to a list of ``(n, K_j, *S_j)`` maps.
        overlap: window overlap fraction per axis, in ``[0, 1)``.
        mode: ``constant`` or ``gaussian`` blending.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        padding_mode: ``constant``, ``reflect``, ``replicate`` or ``circular``, for inputs smaller
            than the window.
        cval: constant padding value.

    Returns:
        One ``(B, K_j, *S_j_full)`` float32 map per predictor output, where
        ``S_j_full = int(S * S_j / roi_size)`` (cropped back if the input was padded).
    """
    x = np.asarray(inputs, dtype=np.float32)
    dims = x.ndim - 2
    if len(roi_size) != dims:
        raise ValueError(f"roi_size {list(roi_size)} has {len(roi_size)} axes, input has {dims}")
    overlaps = [float(overlap)] * dims if isinstance(overlap, float | int) else list(overlap)
    if any(o < 0 or o >= 1 for o in overlaps):
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")
    batch, _, *orig_size = x.shape
    roi = [
        int(r) if r is not None and r > 0 else int(s)
        for r, s in zip(roi_size, orig_size, strict=True)
    ]
    image_size = tuple(max(orig_size[i], roi[i]) for i in range(dims))

    # MONAI pad_size: pairs from the last spatial axis to the first, each (before, after).
    pad_size: list[int] = []
    for k in range(x.ndim - 1, 1, -1):
        diff = max(roi[k - 2] - x.shape[k], 0)
        half = diff // 2
        pad_size.extend([half, diff - half])
    if any(pad_size):
        widths = [(0, 0), (0, 0)] + [
            (pad_size[2 * (dims - 1 - d)], pad_size[2 * (dims - 1 - d) + 1]) for d in range(dims)
        ]
        np_mode = _NP_PAD_MODES.get(padding_mode)
        if np_mode is None:
            raise ValueError(
                f"unknown padding_mode {padding_mode!r}; use one of {sorted(_NP_PAD_MODES)}"
            )
        if np_mode == "constant":
            x = np.pad(x, widths, mode="constant", constant_values=cval)
        else:
            x = np.pad(x, widths, mode=np_mode)  # type: ignore[call-overload]

    interval = scan_interval(image_size, roi, overlaps)
    slices = dense_patch_slices(image_size, roi, interval)
    num_win = len(slices)
    total = num_win * batch
    importance = compute_importance_map(
        [min(i, r) for i, r in zip(image_size, roi, strict=True)], mode, sigma_scale
    )

    outputs: list[FloatArray] = []
    counts: list[FloatArray] = []
    for first in range(0, total, sw_batch_size):
        window_ids = range(first, min(first + sw_batch_size, total))
        locations = [(idx // num_win, slices[idx % num_win]) for idx in window_ids]
        window = np.concatenate(
            [x[(slice(b, b + 1), slice(None), *sl)] for b, sl in locations], axis=0
        )
        results = list(predictor(np.ascontiguousarray(window)))
        weights = importance
        for ss, result in enumerate(results):
            result = np.asarray(result, dtype=np.float32)
            seg_shape = tuple(result.shape[2:])
            z_scale: list[float] | None = None
            if seg_shape != tuple(roi):
                z_scale = [o / float(i) for o, i in zip(seg_shape, roi, strict=True)]
                # MONAI resizes the weight map it used for the previous output, not the original.
                weights = _resize_nearest_exact(weights, seg_shape)
            if len(outputs) <= ss:
                shape = [batch, result.shape[1]]
                if z_scale is not None:
                    shape += [int(i * z) for i, z in zip(image_size, z_scale, strict=True)]
                else:
                    shape += list(image_size)
                outputs.append(np.zeros(shape, dtype=np.float32))
                count = np.zeros([1, 1, *shape[2:]], dtype=np.float32)
                for sl in slices:
                    count[(slice(None), slice(None), *_scale_slices(sl, z_scale))] += weights
                counts.append(count)
            weighted = result * weights
            for (b, sl), patch in zip(locations, weighted, strict=True):
                outputs[ss][(slice(b, b + 1), slice(None), *_scale_slices(sl, z_scale))] += patch

    for ss in range(len(outputs)):
        outputs[ss] /= counts[ss]

    if any(pad_size):
        for ss, out in enumerate(outputs):
            zoom = [s / r for s, r in zip(out.shape[2:], roi, strict=True)]
            crop: list[slice] = []
            for sp in range(dims):
                si = dims - sp - 1
                crop.insert(
                    0,
                    slice(
                        int(round(pad_size[sp * 2] * zoom[si])),
                        int(round((pad_size[sp * 2] + orig_size[si]) * zoom[si])),
                    ),
                )
            outputs[ss] = out[(slice(None), slice(None), *crop)]
    return outputs


def _scale_slices(window: tuple[slice, ...], z_scale: Sequence[float] | None) -> tuple[slice, ...]:
    if z_scale is None:
        return window
    return tuple(
        slice(int(s.start * z), int(s.stop * z)) for s, z in zip(window, z_scale, strict=True)
    )
