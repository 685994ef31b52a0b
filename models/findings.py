"""What a detector reports about one image."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One detected lesion candidate.

    Attributes:
        label: class index (0 = nodule/mass).
        score: detector confidence in ``0..1``.
        box_index: box in the source image's index space, ``xyxy`` (2D) or ``xyzxyz`` (3D),
            voxel units (see :class:`oncotriage.datasets.image.ImageVolume`).
        box_world: the same box in millimetres: LPS ``xyzxyz`` for volumes, detector-plane
            ``xyxy`` for radiographs.
    """

    label: int
    score: float
    box_index: tuple[float, ...]
    box_world: tuple[float, ...]
