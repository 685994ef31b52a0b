"""From a source image to the network input, and boxes back: numpy + scipy only.

One implementation used by training-time evaluation, the embedded ONNX Runtime backend and
Triton, so what a model sees never depends on where it runs.

Coordinates: every mapping here is a point map between continuous index coordinates in
which integer values are voxel centres, the convention of
:meth:`oncotriage.datasets.image.ImageVolume.index_to_world`. A network-input voxel ``p``
along (oriented) axis ``k`` samples the source at ``q = p * factor[k]`` (voxel 0 keeps its
centre, like ITK/MONAI ``Spacing``), mirrored to ``n_k - 1 - q`` if that axis was flipped to
reach the configured orientation. Padding is always at the end, so it never shifts boxes.
Boxes are ``xyxy`` (2D) / ``xyzxyz`` (3D).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.config import IntensityConfig, PreprocessingConfig

__all__ = [
    "IndexMapping",
    "PreprocessedImage",
    "orientation_transform",
    "pad_to_divisible",
    "preprocess_image",
    "resample_linear",
    "scale_intensity",
]

FloatArray = npt.NDArray[np.float32]

# LPS world axis and sign of each anatomical direction code.
_CODE_AXIS = {
    "L": (0, 1.0),
    "R": (0, -1.0),
    "P": (1, 1.0),
    "A": (1, -1.0),
    "S": (2, 1.0),
    "I": (2, -1.0),
}


def orientation_transform(direction: np.ndarray, codes: str) -> tuple[list[int], list[bool]]:
    """Axis permutation and flips that make the array axes point along ``codes``.

    Args:
        direction: ``3x3`` matrix whose column ``k`` is the LPS direction of array axis ``k``.
        codes: target axis codes, e.g. ``RAS`` (axis 0 towards patient right, ...).

    Returns:
        ``perm`` (new axis ``k`` is source axis ``perm[k]``) and ``flips`` (new axis ``k`` runs
        opposite to source axis ``perm[k]``). Oblique axes go to the closest anatomical direction.
    """
    dirs = np.asarray(direction, dtype=float)
    dims = len(codes)
    perm: list[int] = []
    flips: list[bool] = []
    # Assign the most clearly aligned pairs first so that oblique volumes stay a permutation.
    world_axes = [_CODE_AXIS[c] for c in codes.upper()]
    cost = np.abs(dirs[[w for w, _ in world_axes]][:, :dims])  # (target k, source axis)
    assignment: dict[int, int] = {}
    for _ in range(dims):
        masked = cost.copy()
        masked[list(assignment), :] = -1
        masked[:, list(assignment.values())] = -1
        flat = int(np.argmax(masked))
        assignment[flat // masked.shape[1]] = flat % masked.shape[1]
    for k in range(dims):
        axis = assignment[k]
        world, sign = world_axes[k]
        perm.append(axis)
        flips.append(bool(dirs[world, axis] * sign < 0))
    return perm, flips


@dataclass(frozen=True)
class IndexMapping:
    """Point map between source-image index space and network-input index space.

    Attributes:
        source_shape: source array shape (source axis order).
        perm: network axis ``k`` comes from source axis ``perm[k]``.
        flips: whether network axis ``k`` runs opposite to source axis ``perm[k]``.
        factors: source voxels per network voxel along network axis ``k``.
        content_shape: network-space size of the resampled image before padding (boxes are
            clipped to it, as MONAI clips to the unpadded image size).
        network_shape: network-input spatial shape after padding.
    """

    source_shape: tuple[int, ...]
    perm: tuple[int, ...]
    flips: tuple[bool, ...]
    factors: tuple[float, ...]
    content_shape: tuple[int, ...]
    network_shape: tuple[int, ...]

    @property
    def spatial_dims(self) -> int:
        return len(self.perm)

    def network_to_source_points(self, points: np.ndarray) -> np.ndarray:
        """``(N, D)`` network-index points to source-index points (float64)."""
        p = np.atleast_2d(np.asarray(points, dtype=float))
        out = np.empty_like(p)
        for k, axis in enumerate(self.perm):
            q = p[:, k] * self.factors[k]
            if self.flips[k]:
                q = (self.source_shape[axis] - 1) - q
            out[:, axis] = q
        return out

    def source_to_network_points(self, points: np.ndarray) -> np.ndarray:
        """``(N, D)`` source-index points to network-index points (float64)."""
        q = np.atleast_2d(np.asarray(points, dtype=float))
        out = np.empty_like(q)
        for k, axis in enumerate(self.perm):
            v = q[:, axis]
            if self.flips[k]:
                v = (self.source_shape[axis] - 1) - v
            out[:, k] = v / self.factors[k]
        return out

    def _map_boxes(self, boxes: np.ndarray, to_source: bool) -> np.ndarray:
        b = np.asarray(boxes, dtype=float).reshape(-1, 2 * self.spatial_dims)
        dims = self.spatial_dims
        fn = self.network_to_source_points if to_source else self.source_to_network_points
        lo, hi = fn(b[:, :dims]), fn(b[:, dims:])
        return np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi)], axis=1)

    def network_to_source_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 2D)`` network-space boxes to source index space (float64, min/max ordered)."""
        return self._map_boxes(boxes, to_source=True)

    def source_to_network_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 2D)`` source-index boxes to network space (e.g. ground truth for training)."""
        return self._map_boxes(boxes, to_source=False)


@dataclass(frozen=True)
class PreprocessedImage:
    """Network input for one image.

    Attributes:
        array: ``(C, *S)`` float32, ``S = mapping.network_shape``.
        mapping: how network coordinates relate to the source image.
    """

    array: FloatArray
    mapping: IndexMapping


def resample_linear(
    array: np.ndarray,
    factors: Sequence[float],
    out_shape: Sequence[int],
    *,
    order: int = 1,
    antialias: bool = False,
) -> FloatArray:
    """Sample ``array`` at ``q = p * factors`` for every output voxel ``p`` (edge values outside).

    Args:
        array: source array (any number of axes).
        factors: source voxels per output voxel, one per axis.
        out_shape: output shape.
        order: spline order; 1 is separable linear interpolation in numpy, others use scipy.
        antialias: Gaussian pre-filter with sigma ``(factor - 1) / 2`` on downsampled axes.

    Returns:
        float32 array of ``out_shape``.
    """
    src = np.asarray(array, dtype=np.float32)
    if antialias:
        sigma = [max(0.0, (f - 1.0) / 2.0) for f in factors]
        if any(s > 0 for s in sigma):
            src = ndimage.gaussian_filter(src, sigma=sigma, mode="nearest").astype(np.float32)
    if tuple(out_shape) == src.shape and all(f == 1.0 for f in factors):
        return np.array(src, dtype=np.float32, copy=True)
    if order != 1:
        out = ndimage.affine_transform(
            src,
            np.asarray(factors, dtype=float),
            output_shape=tuple(int(s) for s in out_shape),
            order=order,
            mode="nearest",
        )
        return np.asarray(out, dtype=np.float32)
    out = src
    for axis, (factor, size) in enumerate(zip(factors, out_shape, strict=True)):
        n = out.shape[axis]
        if factor == 1.0 and size == n:
            continue
        q = np.clip(np.arange(size, dtype=np.float64) * factor, 0, n - 1)
        i0 = np.floor(q).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        w = (q - i0).astype(np.float32)
        shape = [1] * out.ndim
        shape[axis] = size
        w = w.reshape(shape)
        out = np.take(out, i0, axis=axis) * (np.float32(1) - w) + np.take(out, i1, axis=axis) * w
    return np.asarray(out, dtype=np.float32)


def scale_intensity(array: np.ndarray, cfg: IntensityConfig) -> FloatArray:
    """MONAI ``ScaleIntensityRange`` (``mode="range"``) or ``ScaleIntensityRangePercentiles``."""
    x = np.asarray(array, dtype=np.float32)
    if cfg.mode == "percentile":
        a_min, a_max = (float(v) for v in np.percentile(x, [cfg.lower, cfg.upper]))
        if a_max <= a_min:
            return np.full_like(x, np.float32(cfg.b_min))
    else:
        a_min, a_max = cfg.a_min, cfg.a_max
    out = (x - np.float32(a_min)) / np.float32(a_max - a_min)
    out = out * np.float32(cfg.b_max - cfg.b_min) + np.float32(cfg.b_min)
    if cfg.clip:
        out = np.clip(out, np.float32(cfg.b_min), np.float32(cfg.b_max))
    return out.astype(np.float32, copy=False)


def pad_to_divisible(
    batch: np.ndarray, size_divisible: Sequence[int], value: float = 0.0
) -> FloatArray:
    """Pad ``(B, C, *S)`` at the end of each spatial axis to multiples of ``size_divisible``
    (MONAI ``detector_utils.pad_images``)."""
    spatial = batch.shape[2:]
    target = [int(np.ceil(s / d) * d) for s, d in zip(spatial, size_divisible, strict=True)]
    if list(spatial) == target:
        return np.asarray(batch, dtype=np.float32)
    widths = [(0, 0), (0, 0)] + [(0, t - s) for s, t in zip(spatial, target, strict=True)]
    return np.pad(np.asarray(batch, dtype=np.float32), widths, constant_values=value)


def preprocess_image(
    image: ImageVolume, cfg: PreprocessingConfig, *, in_channels: int = 1
) -> PreprocessedImage:
    """Source image -> network input.

    3D: reorient to ``cfg.orientation``, resample to ``cfg.target_spacing`` (linear),
    normalise intensity. Sizes are not padded here; the detector pads to ``size_divisible``.

    2D: resample to the isotropic spacing that fits the whole image into ``cfg.input_size``
    keeping its physical aspect ratio, normalise intensity, pad at the end to ``input_size``.

    Args:
        image: source image (HU for CT; presentation values ``0..1`` for radiographs).
        cfg: preprocessing section of the detector config or model spec.
        in_channels: network input channels (the grayscale image is repeated).

    Raises:
        UnsupportedImageError: if the image dimensionality does not match the configuration.
    """
    from oncotriage.datasets.image import RefusalCode, UnsupportedImageError

    dims = image.spatial_dims
    if cfg.input_size is not None and len(cfg.input_size) != dims:
        raise UnsupportedImageError(
            f"this model takes {len(cfg.input_size)}D images, the study is {dims}D",
            code=RefusalCode.MODALITY,
        )
    if cfg.target_spacing is not None and len(cfg.target_spacing) != dims:
        raise UnsupportedImageError(
            f"this model takes {len(cfg.target_spacing)}D images, the study is {dims}D",
            code=RefusalCode.MODALITY,
        )
    array = np.asarray(image.array, dtype=np.float32)
    spacing = [float(s) for s in image.spacing]
    if any(s <= 0 or not np.isfinite(s) for s in spacing):
        raise UnsupportedImageError(
            f"image spacing {spacing} is not positive: the pixel or slice spacing is missing "
            "or corrupt",
            code=RefusalCode.SERIES_GEOMETRY,
        )

    perm = list(range(dims))
    flips = [False] * dims
    if dims == 3 and cfg.orientation:
        perm, flips = orientation_transform(np.asarray(image.direction), cfg.orientation[:dims])
        array = np.transpose(array, perm)
        flip_axes = tuple(k for k in range(dims) if flips[k])
        if flip_axes:
            array = np.flip(array, axis=flip_axes)
        spacing = [spacing[a] for a in perm]
    oriented_shape = array.shape

    if cfg.input_size is not None:
        out_spacing = max(
            n * s / t for n, s, t in zip(oriented_shape, spacing, cfg.input_size, strict=True)
        )
        factors = [out_spacing / s for s in spacing]
        content = [
            int(min(t, max(1, round(n * s / out_spacing))))
            for n, s, t in zip(oriented_shape, spacing, cfg.input_size, strict=True)
        ]
    elif cfg.target_spacing is not None:
        factors = [t / s for t, s in zip(cfg.target_spacing, spacing, strict=True)]
        content = [
            max(1, int(round(n * s / t)))
            for n, s, t in zip(oriented_shape, spacing, cfg.target_spacing, strict=True)
        ]
    else:
        factors = [1.0] * dims
        content = list(oriented_shape)

    resampled = resample_linear(
        array, factors, content, order=cfg.interpolation_order, antialias=cfg.antialias
    )
    normalised = scale_intensity(resampled, cfg.intensity)
    network_shape = list(content)
    if cfg.input_size is not None:
        network_shape = list(cfg.input_size)
        widths = [(0, t - c) for t, c in zip(network_shape, content, strict=True)]
        normalised = np.pad(normalised, widths, constant_values=np.float32(cfg.pad_value))
    channels = np.repeat(normalised[None], in_channels, axis=0).astype(np.float32, copy=False)
    mapping = IndexMapping(
        source_shape=tuple(int(s) for s in image.array.shape),
        perm=tuple(perm),
        flips=tuple(flips),
        factors=tuple(float(f) for f in factors),
        content_shape=tuple(int(c) for c in content),
        network_shape=tuple(int(s) for s in network_shape),
    )
    return PreprocessedImage(array=np.ascontiguousarray(channels), mapping=mapping)
