"""Anchor boxes in numpy, identical to MONAI's ``AnchorGeneratorWithAnchorShape``.

MONAI's default ``indexing="ij"`` is used.

Anchors are in network-input voxel coordinates, box mode ``xyxy`` (2D) / ``xyzxyz`` (3D),
ordered as MONAI orders them: level by level; within a level, locations in C order of the
feature map (first spatial axis slowest), and at each location the anchor shapes in the order
given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["AnchorGenerator", "cell_anchors"]

FloatArray = npt.NDArray[np.float32]


def cell_anchors(
    base_anchor_shapes: Sequence[Sequence[float]], feature_map_scales: Sequence[float]
) -> list[FloatArray]:
    """Zero-centred anchors of every level.

    Args:
        base_anchor_shapes: ``(A, D)`` anchor shapes ``[w, h(, d)]`` in voxels.
        feature_map_scales: one scale per level.

    Returns:
        One ``(A, 2D)`` float32 array per level:
        ``round(-scale * shape / 2), round(scale * shape / 2)`` (half to even, as ``torch.round``).
    """
    shapes = np.asarray(base_anchor_shapes, dtype=np.float32)
    if shapes.ndim != 2 or shapes.shape[1] not in (2, 3):
        raise ValueError(f"base_anchor_shapes must be (A, 2) or (A, 3), got shape {shapes.shape}")
    out = []
    for scale in feature_map_scales:
        half = (np.float32(scale) * shapes) / np.float32(2.0)
        out.append(np.round(np.concatenate([-half, half], axis=1)).astype(np.float32))
    return out


class AnchorGenerator:
    """Anchors for a set of feature maps (MONAI ``AnchorGeneratorWithAnchorShape``).

    Args:
        feature_map_scales: scale of the anchors of each feature-map level.
        base_anchor_shapes: anchor shapes ``[w, h(, d)]`` in voxels.

    Example:
        >>> gen = AnchorGenerator([1, 2], [[8, 8, 4]])
        >>> [a.shape for a in gen((64, 64, 32), [(16, 16, 16), (8, 8, 8)])]
        [(4096, 6), (512, 6)]
    """

    def __init__(
        self, feature_map_scales: Sequence[float], base_anchor_shapes: Sequence[Sequence[float]]
    ) -> None:
        self.cell_anchors = cell_anchors(base_anchor_shapes, feature_map_scales)
        self.spatial_dims = self.cell_anchors[0].shape[1] // 2
        self._cache: dict[
            tuple[tuple[int, ...], tuple[tuple[int, ...], ...]], list[FloatArray]
        ] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return int(self.cell_anchors[0].shape[0])

    def __call__(
        self, image_shape: Sequence[int], feature_map_shapes: Sequence[Sequence[int]]
    ) -> list[FloatArray]:
        """Anchors of each level.

        Args:
            image_shape: spatial size of the (padded) network input.
            feature_map_shapes: spatial size of each level's output map.

        Returns:
            One ``(prod(feature_map_shape) * A, 2D)`` float32 array per level. Strides are
            ``image_shape // feature_map_shape`` and anchor centres ``i * stride + stride // 2``.
        """
        dims = self.spatial_dims
        image = tuple(int(s) for s in image_shape[-dims:])
        grids = tuple(tuple(int(s) for s in shape[-dims:]) for shape in feature_map_shapes)
        if len(grids) != len(self.cell_anchors):
            raise ValueError(
                f"{len(grids)} feature maps for {len(self.cell_anchors)} anchor levels "
                "(feature_map_scales must have one value per network output level)"
            )
        key = (image, grids)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        anchors = []
        for grid, base in zip(grids, self.cell_anchors, strict=True):
            strides = [image[axis] // grid[axis] for axis in range(dims)]
            centres = [
                np.arange(grid[axis], dtype=np.int32) * strides[axis] + strides[axis] // 2
                for axis in range(dims)
            ]
            mesh = [m.reshape(-1) for m in np.meshgrid(*centres, indexing="ij")]
            shifts = np.stack(mesh * 2, axis=1).astype(np.float32)  # (L, 2D)
            level = shifts[:, None, :] + base[None, :, :]
            anchors.append(level.reshape(-1, 2 * dims).astype(np.float32))
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = anchors
        return anchors
