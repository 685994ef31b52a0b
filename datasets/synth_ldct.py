"""Synthetic low-dose chest CT series with pulmonary nodules (CT Image Storage).

The volume is built in Hounsfield units: air, subcutaneous fat, chest-wall muscle,
mediastinal soft tissue, two lungs near -850 HU (denser posteriorly) whose apex
narrows and whose base sits on a diaphragm dome, the heart, the descending aorta,
branching pulmonary vessels, vertebrae with discs, sternum and ribs, a mild
reconstruction blur and correlated scanner noise. Nodules of 4-30 mm (ellipsoids,
lobulated; solid, part-solid or ground-glass) lie only inside the lungs. As for the
radiographs, anatomy, nodules and noise come from independent random streams, so a
case rendered without its nodules differs from it only inside their boxes.

Array convention here: ``hu[slice, row, column]`` (``z, y, x``) with slices in
ascending patient z (inferior to superior). Boxes are kept in index space as
``xyzxyz`` (``x`` column, ``y`` row, ``z`` slice: the axis order of
:class:`~oncotriage.datasets.image.ImageVolume`), edges on voxel edges, and in LPS
millimetres through the series' affine (axial slices, rows along +x (L), columns
along +y (P), slices along +z (S)): ``world = origin + index * spacing``, which is
what ``ImageVolume.index_to_world`` of the series read back gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from oncotriage.datasets.dicom_writer import ds_round

NODULE_TYPES = ("solid", "part-solid", "ground-glass")
MIN_DIAMETER_MM = 4.0
MAX_DIAMETER_MM = 30.0


@dataclass(frozen=True)
class CtNodule:
    """One synthetic nodule of a CT series.

    Attributes:
        center_index: ``(x, y, z)`` index-space centre.
        diameter_mm: largest diameter.
        nodule_type: one of :data:`NODULE_TYPES`.
        hu: attenuation of the solid part (or of the ground glass when there is none).
        box_index: ``xyzxyz`` index-space box on the edges of the voxels it covers.
    """

    center_index: tuple[float, float, float]
    diameter_mm: float
    nodule_type: str
    hu: float
    box_index: tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class CtCase:
    """A rendered CT series ready to be written slice by slice.

    Attributes:
        stored: ``(slices, rows, columns)`` stored values (uint16 or int16), slices in
            ascending z; HU = stored + ``rescale_intercept``.
        pixel_spacing_mm: ``(row spacing, column spacing)`` as in Pixel Spacing.
        slice_spacing_mm: distance between slice positions.
        slice_thickness_mm: nominal Slice Thickness.
        origin: LPS position (mm) of the centre of voxel ``(0, 0, 0)`` (first slice).
        rescale_intercept: Rescale Intercept (slope 1).
        bits_stored: 12 or 16.
        ctdi_vol_mgy: CTDIvol of the synthetic low-dose protocol.
        nodules: the nodules drawn.
    """

    stored: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    slice_thickness_mm: float
    origin: tuple[float, float, float]
    rescale_intercept: float
    bits_stored: int
    ctdi_vol_mgy: float
    nodules: tuple[CtNodule, ...]

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        """Voxel spacing along ``(x, y, z)`` = (columns, rows, slices)."""
        return (self.pixel_spacing_mm[1], self.pixel_spacing_mm[0], self.slice_spacing_mm)

    def slice_position(self, index: int) -> tuple[float, float, float]:
        """Image Position (Patient) of slice ``index`` (0 = most inferior)."""
        x, y, z = self.origin
        return (x, y, round(z + index * self.slice_spacing_mm, 4))

    def boxes_world(self) -> np.ndarray:
        """``(N, 6)`` ``cccwhd`` boxes in LPS millimetres."""
        if not self.nodules:
            return np.zeros((0, 6))
        xyzxyz = np.array([n.box_index for n in self.nodules], dtype=float)
        spacing = np.array(self.spacing_xyz * 2)
        origin = np.array(self.origin * 2)
        world = origin + xyzxyz * spacing
        return np.concatenate([(world[:, :3] + world[:, 3:]) / 2, world[:, 3:] - world[:, :3]], 1)


@dataclass(frozen=True)
class CtGrid:
    x: np.ndarray  # (1, 1, X) mm from the image centre, + = patient left
    y: np.ndarray  # (1, Y, 1) mm from the image centre, + = posterior
    zn: np.ndarray  # (Z, 1, 1) 0 at the most inferior slice .. 1 at the most superior
    z: np.ndarray  # (Z, 1, 1) mm from the most inferior slice
    shape: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]


def capsule_occupancy(
    grid: CtGrid, p0: np.ndarray, p1: np.ndarray, radius: float, edge: float
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Soft occupancy (0..1) of a capsule between ``p0`` and ``p1`` (``z, y, x`` mm)."""
    lo = np.minimum(p0, p1) - radius - edge
    hi = np.maximum(p0, p1) + radius + edge
    axes = (grid.z[:, 0, 0], grid.y[0, :, 0], grid.x[0, 0, :])
    window = []
    for axis, a_lo, a_hi in zip(axes, lo, hi, strict=True):
        start = int(np.searchsorted(axis, a_lo))
        window.append(slice(start, max(start, int(np.searchsorted(axis, a_hi, side="right")))))
    zz = axes[0][window[0]][:, None, None]
    yy = axes[1][window[1]][None, :, None]
    xx = axes[2][window[2]][None, None, :]
    d = p1 - p0
    t = ((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / max(d @ d, 1e-9)
    t = np.clip(t, 0, 1)
    dist = np.sqrt(
        (zz - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (xx - p0[2] - t * d[2]) ** 2
    )
    return (window[0], window[1], window[2]), np.clip((radius - dist) / edge + 0.5, 0, 1)


@dataclass(frozen=True)
class Torso:
    """The body ellipse a CT phantom is built in (mm; see :func:`render_torso_and_lungs`).

    Attributes:
        ax, ay: semi-axes of the body ellipse (x: left-right, y: front-back).
        cy: its centre's y offset from the image centre.
        fat, muscle: subcutaneous fat and chest-wall muscle as fractions of the radius.
        rho: ``(1, Y, X)`` normalised elliptic radius (1 at the skin).
    """

    ax: float
    ay: float
    cy: float
    fat: float
    muscle: float
    rho: np.ndarray

    @property
    def inner_ax(self) -> float:
        return self.ax * (1 - self.fat - self.muscle)

    @property
    def inner_ay(self) -> float:
        return self.ay * (1 - self.fat - self.muscle)


def render_torso_and_lungs(
    rng: np.random.Generator, grid: CtGrid
) -> tuple[np.ndarray, np.ndarray, Torso]:
    """Body, lungs (textured, denser posteriorly) on diaphragm domes, heart and aorta in HU.

    Returns:
        ``(hu, lungs, torso)``: the ``(Z, Y, X)`` float32 HU volume, the lung mask and the
        body ellipse.
    """
    x, y, zn = grid.x, grid.y, grid.zn
    fov_x = grid.shape[2] * grid.spacing_zyx[2]
    fov_y = grid.shape[1] * grid.spacing_zyx[1]
    ax, ay = rng.uniform(0.40, 0.46) * fov_x, rng.uniform(0.30, 0.36) * fov_y
    cy = rng.uniform(-0.03, 0.05) * fov_y
    rho = np.sqrt((x / ax) ** 2 + ((y - cy) / ay) ** 2)  # (1, Y, X)
    fat = rng.uniform(0.05, 0.10)
    muscle = rng.uniform(0.04, 0.07)
    hu = np.full(grid.shape, -1000.0, np.float32)
    hu = np.where(rho < 1, -100.0, hu)
    hu = np.where(rho < 1 - fat, 45.0, hu)
    hu = np.where(rho < 1 - fat - muscle, 35.0, hu).astype(np.float32)
    inner_ax, inner_ay = ax * (1 - fat - muscle), ay * (1 - fat - muscle)

    # Lungs, per side (-1: patient right, +1: patient left).
    lungs = np.zeros(grid.shape, bool)
    for side in (-1, 1):
        lcx = side * rng.uniform(0.44, 0.52) * inner_ax
        lcy = cy + rng.uniform(-0.08, 0.02) * inner_ay
        lax, lay = rng.uniform(0.34, 0.40) * inner_ax, rng.uniform(0.66, 0.76) * inner_ay
        apex = np.sqrt(np.clip((1.0 - zn) / 0.3, 0.05, 1))
        r = np.sqrt(((x - lcx) / (lax * apex)) ** 2 + ((y - lcy) / (lay * apex)) ** 2)
        dome = (
            rng.uniform(-0.02, 0.06)
            + (0.05 if side == -1 else 0.0)
            + rng.uniform(0.12, 0.2)
            * np.clip(1 - ((x - lcx) / lax) ** 2 - ((y - lcy) / lay) ** 2, 0, 1)
        )
        lungs |= (r < 1) & (zn > dome) & (zn < 0.97)
    # Heart and descending aorta displace the left lung and the mediastinum.
    heart = (
        ((x - rng.uniform(0.10, 0.20) * ax) / (rng.uniform(0.28, 0.34) * ax)) ** 2
        + ((y - cy + rng.uniform(0.08, 0.16) * ay) / (rng.uniform(0.34, 0.42) * ay)) ** 2
        + ((zn - rng.uniform(0.12, 0.28)) / rng.uniform(0.25, 0.35)) ** 2
    ) < 1
    aorta_r = rng.uniform(0.06, 0.08) * ax
    aorta = np.hypot(x - 0.14 * ax, y - cy - 0.42 * ay) < aorta_r
    aorta = np.broadcast_to(aorta, grid.shape)
    lungs &= ~heart & ~aorta
    dependent = 40 * np.clip((y - cy) / ay, -1, 1)  # posterior lung is denser
    texture = ndimage.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32), 1.5)
    texture /= texture.std() + 1e-6
    lung_hu = -860 + rng.uniform(-20, 20) + dependent + 18 * texture
    hu = np.where(lungs, lung_hu, hu)
    hu = np.where(heart | aorta, 40.0, hu).astype(np.float32)
    torso = Torso(ax=ax, ay=ay, cy=cy, fat=fat, muscle=muscle, rho=rho)
    return hu, lungs, torso


def _vessel_occupancy(
    rng: np.random.Generator, grid: CtGrid, torso: Torso, lungs: np.ndarray
) -> np.ndarray:
    """Version 1's pulmonary vessels: a few branching trees from each hilum (0..1)."""
    z_len = float(grid.z.max())
    cy, inner_ax = torso.cy, torso.inner_ax
    vessels = np.zeros(grid.shape, np.float32)
    edge = max(grid.spacing_zyx[1], 0.5 * grid.spacing_zyx[0])
    for side in (-1, 1):
        hilum = np.array([rng.uniform(0.45, 0.6) * z_len, cy, side * 0.24 * inner_ax])
        stack = [(hilum, rng.uniform(0.045, 0.065) * inner_ax, 0) for _ in range(5)]
        while stack:
            start, radius, level = stack.pop()
            direction = rng.normal(size=3) * np.array([1.2, 0.8, 0.6])
            direction[2] += side * 0.8  # outwards
            direction /= np.linalg.norm(direction)
            length = rng.uniform(0.25, 0.40) * inner_ax * 0.8**level
            end = start + direction * length
            window, occupancy = capsule_occupancy(grid, start, end, radius, edge)
            vessels[window] = np.maximum(vessels[window], occupancy)
            if level < 4 and radius * 0.72 >= 0.5:
                stack += [(end, radius * 0.72, level + 1) for _ in range(2)]
    return vessels * lungs


def add_bones(rng: np.random.Generator, grid: CtGrid, hu: np.ndarray, torso: Torso) -> np.ndarray:
    """Spine (vertebral bodies with discs, canal), sternum and ribs drawn into ``hu``."""
    x, y, zn, z = grid.x, grid.y, grid.zn, grid.z
    ax, ay, cy, fat, muscle, rho = torso.ax, torso.ay, torso.cy, torso.fat, torso.muscle, torso.rho
    mean_r = (ax + ay) / 2
    vx, vy = rng.uniform(0.11, 0.14) * ax, rng.uniform(0.10, 0.13) * ay
    vcy = cy + rng.uniform(0.58, 0.64) * ay
    vert = np.sqrt((x / vx) ** 2 + ((y - vcy) / vy) ** 2)
    pitch = rng.uniform(22, 28)
    disc = (np.mod(z + rng.uniform(0, pitch), pitch) < 4.0).astype(np.float32)
    bone = np.where(vert < 0.8, 230.0, 650.0) * (1 - disc) + 80.0 * disc
    hu = np.where(vert < 1, bone, hu)
    canal = np.hypot(x / (0.5 * vx), (y - vcy - 1.55 * vy) / (0.5 * vy)) < 1
    hu = np.where(np.broadcast_to(canal, grid.shape), 25.0, hu)
    process = (np.abs(x) < 0.25 * vx) & (y > vcy + 2.1 * vy) & (rho < 1 - fat)
    hu = np.where(np.broadcast_to(process, grid.shape), 500.0, hu)
    sternum = (np.hypot(x / (0.09 * ax), (y - cy + 0.90 * ay) / (0.035 * ay)) < 1) & (zn > 0.25)
    hu = np.where(sternum, 400.0, hu)
    rib_r = rng.uniform(2.5, 4.0)
    rib_rho = 1 - fat - muscle * 0.4
    anteriority = (1 - (y - cy) / np.maximum(np.hypot(x, y - cy), 1e-6)) / 2  # 0 back .. 1 front
    angle = np.degrees(np.arctan2(y - cy, x))
    gap = (np.abs(angle - 90) < 14) | (np.abs(angle + 90) < 22)
    radial = (rho - rib_rho) * mean_r / rib_r  # (1, Y, X)
    rib_pitch = rng.uniform(16, 24)
    slope = rng.uniform(10, 20)
    phase = np.mod(z + slope * anteriority + rng.uniform(0, rib_pitch), rib_pitch) - rib_pitch / 2
    rib_dist = np.sqrt(radial**2 + (phase / (rib_r * 1.3)) ** 2)
    ribs = (rib_dist < 1) & ~gap & (zn > 0.08)
    return np.where(ribs, np.where(rib_dist < 0.6, 260.0, 700.0), hu)


def add_soft_tissue_texture(rng: np.random.Generator, grid: CtGrid, hu: np.ndarray) -> np.ndarray:
    """Low-frequency texture (+-8 HU) on soft tissue (-200..100 HU)."""
    soft = (hu > -200) & (hu < 100)
    in_plane = ndimage.zoom(rng.standard_normal((8, 8)), np.array(grid.shape[1:]) / 8, order=1)
    along_z = np.interp(np.linspace(0, 7, grid.shape[0]), np.arange(8), rng.standard_normal(8))
    texture = in_plane[None, : grid.shape[1], : grid.shape[2]] + 0.5 * along_z[:, None, None]
    return hu + 8.0 * soft * texture


def _render_anatomy(rng: np.random.Generator, grid: CtGrid) -> tuple[np.ndarray, np.ndarray]:
    """HU volume ``(Z, Y, X)`` float32 and the lung mask where nodules may lie."""
    hu, lungs, torso = render_torso_and_lungs(rng, grid)
    vessels = _vessel_occupancy(rng, grid, torso, lungs)
    hu = hu * (1 - vessels) + 40.0 * vessels
    hu = add_bones(rng, grid, hu, torso)
    hu = add_soft_tissue_texture(rng, grid, hu)
    # the scanner's resolution
    hu = ndimage.gaussian_filter(hu.astype(np.float32), (0.4, 0.6, 0.6))
    return hu.astype(np.float32), lungs


def _find_place(
    rng: np.random.Generator,
    lung_mask: np.ndarray,
    lung_voxels: np.ndarray,
    grid: CtGrid,
    diameter: float,
    nodules: list[CtNodule],
    attempts: int = 300,
) -> tuple[int, int, int] | None:
    """A lung voxel whose ball of radius ``diameter / 2 + 1.5`` mm lies in the lungs.

    Rejection sampling over uniformly drawn lung voxels (uniform over the valid centres,
    like picking from a distance transform, at a fraction of its cost); also keeps 2 mm
    between nodules. Returns ``(k, j, i)`` = (slice, row, column) or ``None``.
    """
    if lung_voxels.size == 0:
        return None
    spacing = np.array(grid.spacing_zyx)
    reach = diameter / 2 + 1.5
    half = np.ceil(reach / spacing).astype(int)
    offsets = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    ball = (
        offsets[0][:, None, None] ** 2
        + offsets[1][None, :, None] ** 2
        + offsets[2][None, None, :] ** 2
    ) <= reach**2
    for _ in range(attempts):
        centre = np.array(np.unravel_index(lung_voxels[rng.integers(lung_voxels.size)], grid.shape))
        lo, hi = centre - half, centre + half + 1
        if np.any(lo < 0) or np.any(hi > grid.shape):
            continue
        if any(
            np.linalg.norm((centre - np.array(n.center_index[::-1])) * spacing)
            <= (diameter + n.diameter_mm) / 2 + 2
            for n in nodules
        ):
            continue
        patch = lung_mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if patch[ball].all():
            return int(centre[0]), int(centre[1]), int(centre[2])
    return None


def _add_nodules(
    rng: np.random.Generator, grid: CtGrid, hu: np.ndarray, lung_mask: np.ndarray
) -> tuple[np.ndarray, tuple[CtNodule, ...]]:
    dz, dy, dx = grid.spacing_zyx
    lung_voxels = np.flatnonzero(lung_mask)
    hu = hu.copy()
    nodules: list[CtNodule] = []
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    for _ in range(count):
        diameter = float(np.exp(rng.uniform(np.log(MIN_DIAMETER_MM), np.log(MAX_DIAMETER_MM))))
        nodule_type = str(rng.choice(NODULE_TYPES, p=[0.6, 0.25, 0.15]))
        where = _find_place(rng, lung_mask, lung_voxels, grid, diameter, nodules)
        while where is None and diameter > MIN_DIAMETER_MM:
            diameter = max(MIN_DIAMETER_MM, diameter * 0.8)
            where = _find_place(rng, lung_mask, lung_voxels, grid, diameter, nodules)
        if where is None:
            continue
        k, j, i = where
        centre = np.array([k, j, i], float) + rng.uniform(-0.5, 0.5, 3)
        radius = diameter / 2
        half = np.ceil((radius + 1.0) / np.array(grid.spacing_zyx)).astype(int) + 1
        lo = np.maximum(np.array([k, j, i]) - half, 0)
        hi = np.minimum(np.array([k, j, i]) + half + 1, grid.shape)
        kk, jj, ii = np.meshgrid(
            *(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"
        )
        offset = np.stack(
            [(kk - centre[0]) * dz, (jj - centre[1]) * dy, (ii - centre[2]) * dx], axis=-1
        )
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        axes = radius * np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)])
        local = offset @ rotation
        dist = np.linalg.norm(local, axis=-1) + 1e-9
        theta = np.arccos(np.clip(local[..., 2] / dist, -1, 1))
        phi = np.arctan2(local[..., 1], local[..., 0])
        lobe_amp = rng.uniform(0.0, 0.15)
        lobes = 1 + lobe_amp * np.sin(rng.integers(2, 5) * theta + rng.uniform(0, 6.3)) * np.sin(
            rng.integers(2, 5) * phi + rng.uniform(0, 6.3)
        )
        rel = np.linalg.norm(local / axes, axis=-1) / (lobes / (1 + lobe_amp))
        edge = 0.6 * min(dx, dz)
        outer = np.clip((1 - rel) * radius / edge + 0.5, 0, 1)
        region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        background = hu[region]
        if nodule_type == "solid":
            nodule_hu = float(rng.uniform(-60, 80))
            blended = background * (1 - outer) + nodule_hu * outer
        else:
            glass_hu = float(rng.uniform(-700, -450))
            blended = background * (1 - outer) + np.maximum(background, glass_hu) * outer
            nodule_hu = glass_hu
            if nodule_type == "part-solid":
                core = rng.uniform(0.35, 0.6)
                inner = np.clip((core - rel) * radius / edge + 0.5, 0, 1)
                nodule_hu = float(rng.uniform(-40, 60))
                blended = blended * (1 - inner) + nodule_hu * inner
        hu[region] = blended
        support = np.argwhere(outer > 0) + lo  # (n, 3) as (z, y, x)
        first, last = support.min(axis=0) - 0.5, support.max(axis=0) + 0.5
        nodules.append(
            CtNodule(
                center_index=(float(centre[2]), float(centre[1]), float(centre[0])),
                diameter_mm=round(diameter, 2),
                nodule_type=nodule_type,
                hu=round(nodule_hu, 1),
                box_index=(
                    float(first[2]),
                    float(first[1]),
                    float(first[0]),
                    float(last[2]),
                    float(last[1]),
                    float(last[0]),
                ),
            )
        )
    return hu, tuple(nodules)


def render_ct_case(
    entropy: Sequence[int], *, positive: bool, include_nodules: bool = True
) -> CtCase:
    """Render one synthetic low-dose chest CT series.

    Args:
        entropy: integers seeding the case; same entropy, same series bit for bit.
        positive: draw 1-3 nodules (otherwise none).
        include_nodules: ``False`` renders the same case without its nodules.

    Returns:
        The case with stored values, geometry and nodule boxes.
    """
    anatomy_rng, nodule_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(list(entropy)).spawn(3)
    )
    size = int(anatomy_rng.choice(np.arange(128, 193, 16)))
    spacing = ds_round(anatomy_rng.uniform(0.6, 0.9), 3)
    slices = int(anatomy_rng.integers(48, 97))
    slice_spacing = ds_round(anatomy_rng.uniform(1.0, 2.5), 2)
    thickness = ds_round(slice_spacing * anatomy_rng.choice([1.0, 1.0, 1.25]), 3)
    origin = (
        ds_round(-(size - 1) / 2 * spacing + anatomy_rng.uniform(-5, 5), 3),
        ds_round(-(size - 1) / 2 * spacing + anatomy_rng.uniform(-5, 5), 3),
        ds_round(anatomy_rng.uniform(-260, -140), 2),
    )
    signed = bool(anatomy_rng.random() < 0.3)
    ctdi = ds_round(anatomy_rng.uniform(0.8, 2.5), 2)
    centre = (size - 1) / 2
    grid = CtGrid(
        # float32 keeps the full-volume arithmetic of the phantom half as heavy
        x=((np.arange(size) - centre) * spacing).astype(np.float32)[None, None, :],
        y=((np.arange(size) - centre) * spacing).astype(np.float32)[None, :, None],
        zn=(np.arange(slices) / (slices - 1)).astype(np.float32)[:, None, None],
        z=(np.arange(slices) * slice_spacing).astype(np.float32)[:, None, None],
        shape=(slices, size, size),
        spacing_zyx=(slice_spacing, spacing, spacing),
    )
    hu, lungs = _render_anatomy(anatomy_rng, grid)
    nodules: tuple[CtNodule, ...] = ()
    if positive and include_nodules:
        hu, nodules = _add_nodules(nodule_rng, grid, hu, lungs)
    noise = ndimage.gaussian_filter(noise_rng.standard_normal(grid.shape), (0, 0.6, 0.6))
    hu = hu + noise_rng.uniform(15, 40) / (noise.std() + 1e-9) * noise
    if signed:
        intercept, bits = 0.0, 16
        stored = np.clip(np.rint(hu), -2048, 4095).astype(np.int16)
    else:
        intercept, bits = -1024.0, 12
        stored = np.clip(np.rint(hu - intercept), 0, 4095).astype(np.uint16)
    return CtCase(
        stored=stored,
        pixel_spacing_mm=(spacing, spacing),
        slice_spacing_mm=slice_spacing,
        slice_thickness_mm=thickness,
        origin=origin,
        rescale_intercept=intercept,
        bits_stored=bits,
        ctdi_vol_mgy=ctdi,
        nodules=nodules,
    )
