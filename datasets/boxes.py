"""Checks on boxes in a source image's index space (``xyxy`` or ``xyzxyz``).

A box drawn by a person (a specialist's correction) or read back from the database must be
usable as a training label: finite numbers, a positive size in-plane (across slices, a box
may lie on one slice), and inside the image. Index space puts voxel centres on integers,
so an image of ``n`` voxels along an axis spans ``-0.5 .. n - 0.5`` on that axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: How far past the outermost voxel edge a corner may lie (rounding of a drawn box).
EDGE_TOLERANCE = 0.5


def index_box_problem(box: Sequence[float], extent: Sequence[int] | None = None) -> str | None:
    """Why ``box`` is not a usable index-space box, or ``None`` when it is.

    Args:
        box: ``xyxy`` (2D) or ``xyzxyz`` (3D); axis 0 = image columns, axis 1 = rows,
            axis 2 = slices (the order of :class:`~oncotriage.datasets.image.ImageVolume`).
        extent: voxels along each axis (``(columns, rows[, slices])``); ``None`` skips the
            inside-the-image check.

    Returns:
        A sentence a person can act on, or ``None``.
    """
    if len(box) not in (4, 6):
        return f"a box has 4 numbers (xyxy) or 6 (xyzxyz), not {len(box)}"
    values = [float(v) for v in box]
    if not all(math.isfinite(v) for v in values):
        return "a box's coordinates must be finite numbers (no NaN or infinity)"
    half = len(values) // 2
    # In-plane a box needs an area; across slices one slice is enough (a box drawn on one CT
    # slice has z0 == z1: index space puts voxel centres on integers).
    if any(values[i] >= values[i + half] for i in range(2)) or (
        half == 3 and values[2] > values[5]
    ):
        return (
            "a box must have a positive size: each maximum corner above its minimum (across "
            "slices, at least equal)"
        )
    if extent is None:
        return None
    if len(extent) != half:
        kind = "radiograph" if len(extent) == 2 else "volume"
        mode = "xyxy" if len(extent) == 2 else "xyzxyz"
        return f"a box on a {kind} has {2 * len(extent)} numbers ({mode}), not {len(box)}"
    names = ("columns", "rows", "slices")
    for axis, size in enumerate(extent):
        low, high = values[axis], values[axis + half]
        if low < -EDGE_TOLERANCE or high > size - 1 + EDGE_TOLERANCE:
            return (
                f"the box runs outside the image: {names[axis]} {low:g}..{high:g}, "
                f"the image has {size} {names[axis]} (0..{size - 1})"
            )
    return None
