"""Synthetic PA chest radiographs with pulmonary nodules (DX For Presentation).

The image is an attenuation-like "density" map in which higher is brighter
(MONOCHROME2): air outside the body, soft tissue of the torso, two darker lungs with
vessel markings, a brighter mediastinum and heart, the spine, posterior and anterior
ribs, clavicles, low-frequency soft-tissue texture and detector noise. Nodules of
4-30 mm (round, elliptical, lobulated or spiculated, varied contrast) are added only
inside the lungs. Each case draws from three independent random streams (anatomy,
nodules, noise), so the same case rendered without its nodules differs from it only
inside the nodules' boxes: the ground-truth test relies on that.

Array convention here: ``density[row, column]``; boxes are stored in index space as
``xyxy`` with ``x`` the column and ``y`` the row (the axis order of
:class:`~oncotriage.datasets.image.ImageVolume`), with box edges on pixel edges
(``first - 0.5`` .. ``last + 0.5``), and in detector-plane millimetres as
``index * pixel spacing`` (what ``ImageVolume.box_index_to_world`` gives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from oncotriage.datasets.dicom_writer import ds_round

NODULE_SHAPES = ("round", "ellipse", "lobulated", "spiculated")
MIN_DIAMETER_MM = 4.0
MAX_DIAMETER_MM = 30.0


@dataclass(frozen=True)
class CxrNodule:
    """One synthetic nodule of a radiograph.

    Attributes:
        center_index: ``(x, y)`` = (column, row) of the nodule centre, index space.
        diameter_mm: largest diameter.
        contrast: peak added density (the image spans roughly ``0..1``).
        shape: one of :data:`NODULE_SHAPES`.
        box_index: ``xyxy`` index-space box on the edges of the pixels it covers.
    """

    center_index: tuple[float, float]
    diameter_mm: float
    contrast: float
    shape: str
    box_index: tuple[float, float, float, float]


@dataclass(frozen=True)
class CxrCase:
    """A rendered radiograph ready to be written as DICOM.

    Attributes:
        pixels: ``(rows, columns)`` uint16 stored values (MONOCHROME2).
        pixel_spacing_mm: square pixel size (DS-rounded, as written).
        bits_stored: 12 or 16.
        window_center, window_width: VOI window that presents density ``0..1``.
        include_pixel_spacing: whether Pixel Spacing is written besides Imager Pixel Spacing.
        detector_type: DX Detector Type.
        nodules: the nodules drawn (empty for a negative case or ``include_nodules=False``).
    """

    pixels: np.ndarray
    pixel_spacing_mm: float
    bits_stored: int
    window_center: float
    window_width: float
    include_pixel_spacing: bool
    detector_type: str
    nodules: tuple[CxrNodule, ...]

    def boxes_world(self) -> np.ndarray:
        """``(N, 4)`` ``ccwh`` boxes in detector-plane mm (``index * spacing``)."""
        if not self.nodules:
            return np.zeros((0, 4))
        xyxy = np.array([n.box_index for n in self.nodules], dtype=float) * self.pixel_spacing_mm
        return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-variance low-frequency noise, made on a coarse grid for speed."""
    factor = max(1, int(sigma_px // 3))
    coarse = (shape[0] // factor + 2, shape[1] // factor + 2)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma_px / factor, mode="wrap")
    zoomed = ndimage.zoom(noise, factor, order=1)[: shape[0], : shape[1]]
    return ((zoomed - zoomed.mean()) / (zoomed.std() + 1e-9)).astype(np.float32)


def _segment_distance(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]
) -> np.ndarray:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * dx, y - p0[1] - t * dy)


@dataclass(frozen=True)
class _Anatomy:
    density: np.ndarray  # (rows, cols) float32, roughly 0..1
    lung_mask: np.ndarray  # (rows, cols) bool, where nodules may lie


def _render_anatomy(rng: np.random.Generator, rows: int, cols: int, spacing: float) -> _Anatomy:
    half_w_mm = (cols - 1) / 2 * spacing
    half_h_mm = (rows - 1) / 2 * spacing
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    x_mm = (xx - (cols - 1) / 2) * spacing  # + towards the patient's left
    y_mm = (yy - (rows - 1) / 2) * spacing  # + towards the feet
    u, v = x_mm / half_w_mm, y_mm / half_h_mm

    # Torso with rounded shoulders and a neck.
    body_half = rng.uniform(0.80, 0.94)
    shoulder_v = rng.uniform(-0.80, -0.66)
    neck_half = rng.uniform(0.22, 0.30)
    shoulder = body_half * np.sqrt(np.clip(1 - ((shoulder_v - v) / 0.22) ** 2, 0, 1))
    width = np.where(v >= shoulder_v, body_half, np.maximum(neck_half, shoulder))
    body = 1 / (1 + np.exp(-(width - np.abs(u)) * half_w_mm / 4.0))

    # Lungs: apex under the clavicle, dome-shaped diaphragm, costophrenic angle laterally.
    lung_top = shoulder_v + rng.uniform(-0.02, 0.08)
    lungs = np.zeros((rows, cols), bool)
    heart_cu = rng.uniform(0.13, 0.20) * body_half
    lung_bottom = {-1: 0.0, 1: 0.0}
    for side in (-1, 1):
        centre_u = side * rng.uniform(0.40, 0.47) * body_half
        half_u = rng.uniform(0.27, 0.32) * body_half
        bottom = rng.uniform(0.48, 0.66) - (0.05 if side == -1 else 0.0)  # liver lifts right
        lung_bottom[side] = bottom
        p = (u - centre_u) / half_u
        q = (v - lung_top) / (bottom - lung_top)
        profile = np.sqrt(np.clip(q / 0.28, 0, 1)) * (1 - 0.08 * q)
        dome = 1 - 0.16 * (1 - np.clip(p, -1, 1) ** 2) + 0.05 * side * p
        lungs |= (np.abs(p) < profile) & (q >= 0) & (q < dome)
    mediastinum_half = rng.uniform(0.10, 0.14) * body_half
    lungs &= np.abs(u - 0.02) > mediastinum_half
    heart_v = lung_bottom[1] - rng.uniform(0.18, 0.26)
    heart = ((u - heart_cu) / (rng.uniform(0.32, 0.40) * body_half)) ** 2 + (
        (v - heart_v) / rng.uniform(0.20, 0.27)
    ) ** 2 < 1
    lungs &= ~heart
    lung_soft = ndimage.gaussian_filter(lungs.astype(np.float32), 2.0 / spacing)
    heart_soft = ndimage.gaussian_filter(heart.astype(np.float32), 5.0 / spacing)

    density = 0.04 + 0.60 * body
    density -= rng.uniform(0.30, 0.38) * lung_soft * (0.85 + 0.15 * np.clip(v + 0.5, 0, 1))
    density += 0.04 * heart_soft * body
    # Spine, with vertebral bodies every ~25-30 mm.
    spine_half_mm = rng.uniform(14, 20)
    pitch = rng.uniform(24, 30)
    spine = np.exp(-((x_mm / spine_half_mm) ** 4)) * (1 + 0.25 * np.cos(2 * np.pi * y_mm / pitch))
    density += 0.08 * spine * body
    # Posterior ribs (arches over each hemithorax) and fainter anterior ribs.
    rib_amp = rng.uniform(0.04, 0.08)
    rib_half_mm = rng.uniform(4.0, 6.0)
    span = lung_bottom[1] - lung_top + 0.12
    u_cols, v_rows = u[0], v[:, 0]
    margin = 2.5 * rib_half_mm / half_h_mm
    for k in range(10):
        base_v = lung_top - 0.06 + k * span / 10
        rows_in = slice(
            int(np.searchsorted(v_rows, base_v - 0.08 - margin)),
            int(np.searchsorted(v_rows, base_v + 0.34 + margin)),
        )
        v_band = v_rows[rows_in, None]
        for side in (-1, 1):
            t = (side * u_cols - spine_half_mm / half_w_mm) / (body_half * 0.95)
            cols_in = np.flatnonzero((t >= 0) & (t <= 1.02))
            window = (rows_in, slice(int(cols_in.min()), int(cols_in.max()) + 1))
            t = t[window[1]][None, :]
            centre_v = base_v - 0.07 * np.sin(np.pi * t) + 0.16 * t**2
            dist = np.abs(v_band - centre_v) * (half_h_mm / rib_half_mm)
            band = np.exp(-(dist**6)) * (0.7 + 0.3 * np.minimum(dist, 1) ** 2)
            anterior_v = base_v + 0.10 + 0.22 * (1 - t)
            dist = np.abs(v_band - anterior_v) * (half_h_mm / (rib_half_mm * 1.3))
            band += 0.35 * np.exp(-(dist**4)) * (t > 0.3)
            density[window] += rib_amp * band * body[window]
    # Clavicles.
    for side in (-1, 1):
        p0 = (side * 0.06 * half_w_mm, (shoulder_v + 0.03) * half_h_mm)
        p1 = (
            side * 0.58 * body_half * half_w_mm,
            (shoulder_v - rng.uniform(0.03, 0.09)) * half_h_mm,
        )
        dist = _segment_distance(x_mm, y_mm, p0, p1) / rng.uniform(5.0, 7.0)
        density += 0.09 * np.exp(-(dist**4)) * body
    # Soft-tissue texture and vessel markings (ridges of band-limited noise).
    density += 0.02 * _smooth_noise(rng, (rows, cols), 18.0 / spacing) * body
    ridges = np.exp(-((_smooth_noise(rng, (rows, cols), 2.5 / spacing) / 0.22) ** 2))
    hilum = np.exp(-np.hypot(np.abs(x_mm) - 0.17 * half_w_mm, y_mm - 0.0 * half_h_mm) / 90.0)
    density += rng.uniform(0.035, 0.06) * ridges * lung_soft * (0.35 + 0.65 * hilum)
    density *= 1 + 0.05 * v  # heel effect / exposure gradient
    return _Anatomy(density=density.astype(np.float32), lung_mask=lungs)


def _nodule_profile(
    rng: np.random.Generator, shape: str, radius_px: float, offset: tuple[float, float]
) -> tuple[np.ndarray, int]:
    """Projected nodule thickness in ``0..1`` on a square patch; returns (patch, half size)."""
    half = int(np.ceil(radius_px)) + 2
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    dx -= offset[0]
    dy -= offset[1]
    angle = rng.uniform(0, np.pi)
    rx = dx * np.cos(angle) + dy * np.sin(angle)
    ry = -dx * np.sin(angle) + dy * np.cos(angle)
    axis_ratio = rng.uniform(0.6, 0.9) if shape == "ellipse" else rng.uniform(0.88, 1.0)
    core = radius_px * (rng.uniform(0.72, 0.85) if shape == "spiculated" else 1.0)
    phi = np.arctan2(ry, rx)
    rel_radius = np.hypot(rx, ry / axis_ratio)
    if shape in ("lobulated", "spiculated"):
        k1, k2 = rng.integers(3, 6), rng.integers(5, 9)
        a1, a2 = rng.uniform(0.06, 0.14), rng.uniform(0.03, 0.07)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        lobes = 1 + a1 * np.sin(k1 * phi + p1) + a2 * np.sin(k2 * phi + p2)
        core_radius = core * lobes / (1 + a1 + a2)
    else:
        core_radius = np.full_like(phi, core)
    profile = np.sqrt(np.clip(1 - (rel_radius / core_radius) ** 2, 0, None))
    if shape == "spiculated":
        for spike_angle in rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))):
            along = dx * np.cos(spike_angle) + dy * np.sin(spike_angle)
            across = np.abs(-dx * np.sin(spike_angle) + dy * np.cos(spike_angle))
            tip = radius_px * rng.uniform(0.9, 1.0)
            taper = np.clip(1 - along / tip, 0, 1) * (along >= 0)
            spike = 0.45 * taper * (across < 0.45 + 0.9 * taper)
            profile = np.maximum(profile, spike)
    return profile, half


def _place_nodules(
    rng: np.random.Generator, lung_mask: np.ndarray, spacing: float, density_shape: tuple[int, int]
) -> tuple[np.ndarray, tuple[CxrNodule, ...]]:
    layer = np.zeros(density_shape, np.float32)
    depth = ndimage.distance_transform_edt(lung_mask)
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    nodules: list[CxrNodule] = []
    for _ in range(count):
        diameter = float(np.exp(rng.uniform(np.log(MIN_DIAMETER_MM), np.log(MAX_DIAMETER_MM))))
        shape = str(rng.choice(NODULE_SHAPES, p=[0.35, 0.25, 0.25, 0.15]))
        contrast = float(
            rng.uniform(0.05, 0.11) + 0.11 * min(1.0, diameter / 20) * rng.uniform(0.5, 1)
        )
        while True:
            radius_px = diameter / 2 / spacing
            free = depth >= radius_px + 2
            for other in nodules:
                ox, oy = other.center_index
                yy, xx = np.ogrid[: free.shape[0], : free.shape[1]]
                reach = radius_px + other.diameter_mm / 2 / spacing + 3
                free &= (xx - ox) ** 2 + (yy - oy) ** 2 > reach**2
            candidates = np.flatnonzero(free)
            if candidates.size or diameter <= MIN_DIAMETER_MM:
                break
            diameter = max(MIN_DIAMETER_MM, diameter * 0.8)
        if not candidates.size:
            continue
        row, col = np.unravel_index(candidates[rng.integers(candidates.size)], free.shape)
        offset = (float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5)))
        profile, half = _nodule_profile(rng, shape, radius_px, offset)
        layer[row - half : row + half + 1, col - half : col + half + 1] += contrast * profile
        ys, xs = np.nonzero(profile > 0)
        box = (
            float(col - half + xs.min() - 0.5),
            float(row - half + ys.min() - 0.5),
            float(col - half + xs.max() + 0.5),
            float(row - half + ys.max() + 0.5),
        )
        nodules.append(
            CxrNodule(
                center_index=(float(col + offset[0]), float(row + offset[1])),
                diameter_mm=round(diameter, 2),
                contrast=round(contrast, 4),
                shape=shape,
                box_index=box,
            )
        )
    return layer, tuple(nodules)


def render_cxr_case(
    entropy: Sequence[int], *, positive: bool, include_nodules: bool = True
) -> CxrCase:
    """Render one synthetic PA chest radiograph.

    Args:
        entropy: integers seeding the case (e.g. ``(seed, case_index)``); same entropy,
            same image, bit for bit.
        positive: draw 1-3 nodules (otherwise none).
        include_nodules: ``False`` renders the same case without its nodules (same
            anatomy, same noise); used to check ground truth.

    Returns:
        The case with stored pixel values and the nodules' boxes.
    """
    anatomy_rng, nodule_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(list(entropy)).spawn(3)
    )
    spacing = ds_round(anatomy_rng.uniform(0.5, 0.9), 3)
    cols = int(np.clip(round(anatomy_rng.uniform(340, 430) / spacing), 384, 640))
    rows = int(np.clip(round(anatomy_rng.uniform(340, 430) / spacing), 384, 640))
    anatomy = _render_anatomy(anatomy_rng, rows, cols, spacing)
    bits_stored = int(anatomy_rng.choice([12, 16]))
    full_scale = (1 << bits_stored) - 1
    offset = anatomy_rng.uniform(0.04, 0.12) * full_scale
    gain = anatomy_rng.uniform(0.60, 0.78) * full_scale
    window_center = ds_round(offset + gain * anatomy_rng.uniform(0.46, 0.54), 1)
    window_width = ds_round(gain * anatomy_rng.uniform(0.95, 1.15), 1)
    include_pixel_spacing = bool(anatomy_rng.random() < 0.5)
    detector_type = str(anatomy_rng.choice(["DIRECT", "SCINTILLATOR"]))

    density = anatomy.density
    nodules: tuple[CxrNodule, ...] = ()
    if positive and include_nodules:
        layer, nodules = _place_nodules(nodule_rng, anatomy.lung_mask, spacing, density.shape)
        density = density + layer
    noise_sigma = noise_rng.uniform(0.006, 0.014)
    density = density + noise_sigma * noise_rng.standard_normal(density.shape).astype(np.float32)
    pixels = np.clip(np.rint(offset + gain * density), 0, full_scale).astype(np.uint16)
    return CxrCase(
        pixels=pixels,
        pixel_spacing_mm=spacing,
        bits_stored=bits_stored,
        window_center=window_center,
        window_width=window_width,
        include_pixel_spacing=include_pixel_spacing,
        detector_type=detector_type,
        nodules=nodules,
    )
