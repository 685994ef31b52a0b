"""3D objects of the version-2 synthetic CT: tapering vessel trees, nodules, the scanner blur.

Coordinates here are millimetres in ``(z, y, x)`` order on a :class:`CtGrid` (``z`` from the
most inferior slice, ``y`` and ``x`` from the image centre, + = posterior and patient left),
and index boxes are ``xyzxyz`` on voxel edges, as in :mod:`oncotriage.datasets.synth_ldct`.
Objects are soft occupancies (0..1, a linear ramp one edge width wide at the surface), so
partial-volume voxels get intermediate values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from oncotriage.datasets.synth_ldct import CtGrid, Torso

NODULE_MARGINS = ("smooth", "lobulated", "spiculated")
#: the scanner blur's Gaussians stop at 2 sigma, so an inserted object changes a known box
BLUR_TRUNCATE = 2.0

IndexBox = tuple[float, float, float, float, float, float]


def tube_occupancy(
    zz: np.ndarray,
    yy: np.ndarray,
    xx: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    radii: tuple[float, float],
    edge: float,
) -> np.ndarray:
    """Soft occupancy of a tube from ``p0`` to ``p1`` whose radius tapers ``radii[0] -> [1]``.

    ``zz, yy, xx`` are broadcastable mm coordinates; the ends are rounded (a tapered capsule).
    """
    d = p1 - p0
    t = ((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / max(d @ d, 1e-9)
    t = np.clip(t, 0, 1)
    dist = np.sqrt(
        (zz - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (xx - p0[2] - t * d[2]) ** 2
    )
    radius = radii[0] + t * (radii[1] - radii[0])
    return np.clip((radius - dist) / edge + 0.5, 0, 1)


def _axes(grid: CtGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return grid.z[:, 0, 0], grid.y[0, :, 0], grid.x[0, 0, :]


def _window(grid: CtGrid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
    """Index window of the voxels whose centres lie within ``lo..hi`` (mm, ``z, y, x``)."""
    bounds = []
    for axis, a_lo, a_hi in zip(_axes(grid), lo, hi, strict=True):
        start = int(np.searchsorted(axis, a_lo))
        bounds.append(slice(start, max(start, int(np.searchsorted(axis, a_hi, side="right")))))
    return bounds[0], bounds[1], bounds[2]


def _point(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


@dataclass(frozen=True)
class VesselSegment:
    """One tapering tube of a vessel tree (mm, ``z, y, x``)."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    start_radius: float
    end_radius: float

    @property
    def direction(self) -> np.ndarray:
        d = np.subtract(self.end, self.start)
        return d / max(float(np.linalg.norm(d)), 1e-9)


@dataclass(frozen=True)
class VesselTree:
    """Pulmonary vessels: occupancy inside the lungs and the geometry that drew it.

    Attributes:
        occupancy: ``(Z, Y, X)`` float32 0..1, zero outside the lungs.
        segments: every tube drawn.
        bifurcations: ``(point, radius)`` where a vessel forks (mm, ``z, y, x``).
    """

    occupancy: np.ndarray
    segments: tuple[VesselSegment, ...]
    bifurcations: tuple[tuple[tuple[float, float, float], float], ...]


def grow_vessel_tree(
    rng: np.random.Generator, grid: CtGrid, torso: Torso, lungs: np.ndarray
) -> VesselTree:
    """Branching, tapering tubes from each hilum, forking until they are thin or leave the lung.

    Each segment narrows by 15 % along its length and each child starts at 0.8 x its parent's
    end radius (Murray's law for a symmetric fork gives 0.79); children leave at 20-45 degrees.
    Many segments run cranio-caudally, so they cross axial slices end-on, as round dots.
    """
    occupancy = np.zeros(grid.shape, np.float32)
    edge = max(grid.spacing_zyx[1], 0.5 * grid.spacing_zyx[0])
    z_len = float(grid.z.max())
    segments: list[VesselSegment] = []
    forks: list[tuple[tuple[float, float, float], float]] = []
    shape = np.array(grid.shape)
    spacing = np.array(grid.spacing_zyx)
    centre = (shape[1:] - 1) / 2

    def in_lung(point: np.ndarray) -> bool:
        index = np.rint([point[0] / spacing[0], *(point[1:] / spacing[1:] + centre)]).astype(int)
        return bool(np.all(index >= 0) and np.all(index < shape) and lungs[tuple(index)])

    for side in (-1, 1):
        hilum = np.array(
            [rng.uniform(0.45, 0.6) * z_len, torso.cy, side * 0.24 * torso.inner_ax], float
        )
        stack = []
        for _ in range(int(rng.integers(8, 13))):
            direction = rng.normal(size=3) * np.array([1.3, 0.8, 0.6])
            direction[2] += side * 0.8  # outwards
            stack.append((hilum, direction, rng.uniform(0.04, 0.06) * torso.inner_ax, 0))
        while stack:
            start, direction, radius, level = stack.pop()
            direction = direction / np.linalg.norm(direction)
            length = rng.uniform(0.15, 0.30) * torso.inner_ax * 0.85**level
            end = start + direction * length
            end_radius = radius * 0.85
            reach = radius + edge
            window = _window(grid, np.minimum(start, end) - reach, np.maximum(start, end) + reach)
            zz, yy, xx = (a[w] for a, w in zip(_axes(grid), window, strict=True))
            tube = tube_occupancy(
                zz[:, None, None],
                yy[None, :, None],
                xx[None, None, :],
                start,
                end,
                (radius, end_radius),
                edge,
            )
            occupancy[window] = np.maximum(occupancy[window], tube)
            segments.append(
                VesselSegment(
                    _point(start),
                    _point(end),
                    float(radius),
                    float(end_radius),
                )
            )
            if level < 7 and end_radius * 0.8 >= 0.35 and in_lung(end):
                forks.append((_point(end), float(end_radius)))
                normal = np.cross(direction, rng.normal(size=3))
                normal /= max(float(np.linalg.norm(normal)), 1e-9)
                for turn in (-1, 1):
                    angle = np.radians(rng.uniform(20, 45))
                    child = direction * np.cos(angle) + turn * normal * np.sin(angle)
                    stack.append((end, child, end_radius * 0.8, level + 1))
    return VesselTree(occupancy * lungs, tuple(segments), tuple(forks))


@dataclass(frozen=True)
class ScannerBlur:
    """The in-plane point spread of a reconstruction kernel and the slice profile, in voxels.

    Attributes:
        sigma_zyx: Gaussian sigma per axis (``z`` from the slice thickness: FWHM = thickness).
        sharpen: edge enhancement of sharp (lung) kernels: ``(1 + a) G(sigma) - a G(2 sigma)``
            in-plane, an overshoot at edges (0: none).
    """

    sigma_zyx: tuple[float, float, float]
    sharpen: float = 0.0

    @property
    def reach(self) -> tuple[int, int, int]:
        """Voxels an impulse spreads to on each side, per axis."""
        widest = (1.0, 2.0, 2.0) if self.sharpen else (1.0, 1.0, 1.0)
        z, y, x = (
            int(BLUR_TRUNCATE * s * w + 0.5) for s, w in zip(self.sigma_zyx, widest, strict=True)
        )
        return z, y, x

    def apply(self, volume: np.ndarray, mode: str = "nearest") -> np.ndarray:
        """Blur ``volume`` (``z, y, x``); ``mode="constant"`` for a zero-padded patch."""
        volume = volume.astype(np.float32)
        out = ndimage.gaussian_filter(volume, self.sigma_zyx, mode=mode, truncate=BLUR_TRUNCATE)
        if self.sharpen:
            sz, sy, sx = self.sigma_zyx
            wide = ndimage.gaussian_filter(
                volume, (sz, 2 * sy, 2 * sx), mode=mode, truncate=BLUR_TRUNCATE
            )
            out = (1 + self.sharpen) * out - self.sharpen * wide
        return out.astype(np.float32)

    def apply_to_object(self, added: np.ndarray) -> np.ndarray:
        """Blur the HU an object adds (a zero-padded patch), dropping changes under 1 HU.

        What is left changes every stored value it touches (a rounding step is at most
        1 HU), so the object's box, the support of the result, is exactly where the written
        image differs from the same case without it.
        """
        out = self.apply(added, mode="constant")
        out[np.abs(out) < 1.0] = 0.0
        return out


@dataclass(frozen=True)
class Patch:
    """A region of the volume (``z, y, x`` slices) and its voxel-centre mm coordinates."""

    region: tuple[slice, slice, slice]
    zz: np.ndarray  # (n, 1, 1) mm from the object's centre
    yy: np.ndarray  # (1, n, 1)
    xx: np.ndarray  # (1, 1, n)


def patch_around(
    grid: CtGrid, centre_index: np.ndarray, reach_mm: float, pad: Sequence[int]
) -> Patch:
    """Voxels within ``reach_mm`` (+ ``pad`` voxels) of ``centre_index`` (``k, j, i``), clipped."""
    spacing = np.array(grid.spacing_zyx)
    half = np.ceil(reach_mm / spacing).astype(int) + 1 + np.asarray(pad)
    base = np.floor(centre_index + 0.5).astype(int)
    lo = np.maximum(base - half, 0)
    hi = np.minimum(base + half + 1, grid.shape)
    offsets = [
        (np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre_index, spacing, strict=True)
    ]
    region = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    return Patch(
        region,
        offsets[0][:, None, None].astype(np.float32),
        offsets[1][None, :, None].astype(np.float32),
        offsets[2][None, None, :].astype(np.float32),
    )


def nodule_occupancy(
    rng: np.random.Generator, patch: Patch, radius: float, margin: str, edge: float
) -> tuple[np.ndarray, np.ndarray]:
    """A nodule of ``radius`` mm centred in ``patch``: its occupancy and normalised radius.

    Smooth: an ellipsoid (axes 0.8-1 x the radius, randomly turned). Lobulated: its surface
    bulges by 10-20 % in a few lobes. Spiculated: a lobulated body with 5-11 tapering spicules
    that reach 0.4-0.9 radii beyond the surface. The normalised radius (1 at the surface
    without spicules) lets a caller set a core (solid part, calcification) inside it.

    Returns:
        ``(occupancy, rel)`` arrays of the patch's shape.
    """
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    axes = radius * np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)])
    zz, yy, xx = np.broadcast_arrays(patch.zz, patch.yy, patch.xx)
    local = np.stack([zz, yy, xx], axis=-1) @ rotation
    rel = np.linalg.norm(local / axes, axis=-1)
    if margin != "smooth":
        dist = np.linalg.norm(local, axis=-1) + 1e-9
        theta = np.arccos(np.clip(local[..., 2] / dist, -1, 1))
        phi = np.arctan2(local[..., 1], local[..., 0])
        amplitude = rng.uniform(0.1, 0.2)
        lobes = 1 + amplitude * np.sin(rng.integers(2, 5) * theta + rng.uniform(0, 6.3)) * np.sin(
            rng.integers(2, 5) * phi + rng.uniform(0, 6.3)
        )
        rel = rel * (1 + amplitude) / lobes
    occupancy = np.clip((1 - rel) * radius / edge + 0.5, 0, 1)
    if margin == "spiculated":
        origin = np.zeros(3)
        for _ in range(int(rng.integers(5, 12))):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            tip = direction * radius * rng.uniform(1.4, 1.9)
            width = max(0.25 * radius, edge) * rng.uniform(0.5, 0.8)
            spike = tube_occupancy(
                patch.zz, patch.yy, patch.xx, origin + 0.5 * radius * direction, tip,
                (width, 0.1), edge,
            )  # fmt: skip
            occupancy = np.maximum(occupancy, spike)
    return occupancy.astype(np.float32), rel.astype(np.float32)


def support_box(values: np.ndarray, region: tuple[slice, slice, slice]) -> IndexBox:
    """``xyzxyz`` index box on the edges of the non-zero voxels of a patch at ``region``."""
    support = np.argwhere(values != 0) + [s.start for s in region]  # (n, 3) as (z, y, x)
    first, last = support.min(axis=0) - 0.5, support.max(axis=0) + 0.5
    return (
        float(first[2]),
        float(first[1]),
        float(first[0]),
        float(last[2]),
        float(last[1]),
        float(last[0]),
    )


def boxes_overlap(a: Sequence[float], b: Sequence[float], gap: float = 0.0) -> bool:
    """Whether two ``xyzxyz`` boxes overlap, or come closer than ``gap`` voxels."""
    return all(a[d] < b[d + 3] + gap and b[d] < a[d + 3] + gap for d in range(3))


def find_place(
    rng: np.random.Generator,
    lungs: np.ndarray,
    lung_voxels: np.ndarray,
    spacing_zyx: Sequence[float],
    reach_mm: float,
    extent_voxels: np.ndarray,
    taken: Sequence[IndexBox],
    attempts: int = 200,
) -> np.ndarray | None:
    """A lung voxel ``(k, j, i)`` whose ball of ``reach_mm`` lies in the lungs.

    Rejection sampling over the lung voxels (cheaper than a distance transform); the box of
    ``extent_voxels`` (``z, y, x`` half sizes) around it must stay 1 voxel clear of ``taken``.
    """
    if lung_voxels.size == 0:
        return None
    spacing = np.asarray(spacing_zyx, float)
    half = np.ceil(reach_mm / spacing).astype(int)
    offsets = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    ball = (
        offsets[0][:, None, None] ** 2
        + offsets[1][None, :, None] ** 2
        + offsets[2][None, None, :] ** 2
    ) <= reach_mm**2
    extent = np.asarray(extent_voxels)
    for _ in range(attempts):
        centre = np.array(
            np.unravel_index(lung_voxels[rng.integers(lung_voxels.size)], lungs.shape)
        )
        lo, hi = centre - half, centre + half + 1
        if np.any(lo < 0) or np.any(hi > lungs.shape):
            continue
        box_lo, box_hi = (centre - extent)[::-1] - 0.5, (centre + extent)[::-1] + 0.5
        if any(boxes_overlap((*box_lo, *box_hi), other, gap=1.0) for other in taken):
            continue
        if lungs[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][ball].all():
            return centre
    return None
