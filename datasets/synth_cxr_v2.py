"""Generator version 2 of synthetic chest radiographs: 3D nodules, distractors, acquisitions.

Version 1 (:mod:`oncotriage.datasets.synth_cxr`) stays as it is so old seeds reproduce.
Version 2 keeps its anatomy (torso, lungs with a dome-shaped diaphragm and costophrenic
angles, heart and mediastinum, spine, curved posterior and anterior ribs, clavicles) and adds:

- **vessels branching from the hila**: a tree of tapering segments per lung, each adding
  attenuation in proportion to its projected width (a tube's chord length);
- **breast or pectoral soft-tissue shadows** over the lower lung fields;
- **nodules as 3D objects**, as the NODE21 generation track inserts them
  (``DIAGNijmegen/node21``, ``nodulegeneration``): a voxel object of 4-30 mm (solid,
  part-solid, ground-glass or calcified; smooth, lobulated or spiculated) is projected through
  its depth (sum of attenuation x path length) and blended into the radiograph by attenuation:
  the image is a log-attenuation map (higher is more attenuating), so a nodule in front of or
  behind other structures adds its line integral to theirs;
- **distractors, labelled benign** (not in the nodule boxes): vessels seen end-on, nipple
  shadows, bone islands, rib crossings (marked where the drawn posterior and anterior ribs
  cross), calcified granulomas;
- **acquisition variety**: vendor header profiles, MONOCHROME1 or MONOCHROME2, pixel spacing,
  bits stored (10-16), dose (quantum noise), exposure (gain/offset), collimation (unexposed
  borders), patient rotation, PA or AP view, portable (AP, lower dose, wider heart).

Every parameter drawn for a case is in :attr:`CxrCaseV2.params` and goes into the datalist,
so results can be broken down by subgroup. Like version 1, each case draws from independent
streams (anatomy/acquisition, nodules, distractors, noise): the same case rendered without
nodules differs from it only inside the nodules' boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from oncotriage.datasets.dicom_writer import ds_round
from oncotriage.datasets.synth_cxr import (
    MAX_DIAMETER_MM,
    MIN_DIAMETER_MM,
    _render_anatomy,
    _segment_distance,
)

NODULE_TYPES = ("solid", "part-solid", "ground-glass", "calcified")
NODULE_MARGINS = ("smooth", "lobulated", "spiculated")
DISTRACTOR_KINDS = (
    "end-on vessel",
    "nipple shadow",
    "bone island",
    "rib crossing",
    "calcified granuloma",
)
#: attenuation per mm of path relative to soft tissue, in the image's density units
_DENSITY_PER_MM = 0.011
_TYPE_ATTENUATION = {"solid": 1.0, "part-solid": 1.0, "ground-glass": 0.35, "calcified": 1.0}

#: vendor header profiles: (manufacturer, model, photometric, bits stored, detector, spacing)
VENDOR_PROFILES: dict[str, dict[str, Any]] = {
    "vendor-a": {
        "model": "SYNTH-DR-A",
        "photometric": "MONOCHROME2",
        "bits": 12,
        "detector": "SCINTILLATOR",
        "spacing": (0.6, 0.8),
        "pixel_spacing_tag": True,
    },
    "vendor-b": {
        "model": "SYNTH-DR-B",
        "photometric": "MONOCHROME1",
        "bits": 14,
        "detector": "DIRECT",
        "spacing": (0.5, 0.7),
        "pixel_spacing_tag": False,
    },
    "vendor-c": {
        "model": "SYNTH-CR-C",
        "photometric": "MONOCHROME2",
        "bits": 10,
        "detector": "STORAGE",
        "spacing": (0.7, 0.9),
        "pixel_spacing_tag": True,
    },
    "vendor-d": {
        "model": "SYNTH-DR-D",
        "photometric": "MONOCHROME1",
        "bits": 16,
        "detector": "SCINTILLATOR",
        "spacing": (0.55, 0.75),
        "pixel_spacing_tag": True,
    },
}


@dataclass(frozen=True)
class CxrShift:
    """A distribution shift of a version-2 set, for robustness checks (the default: none).

    The shift changes values only, not what the random streams draw, so a shifted set holds
    the same patients (anatomy, acquisition, distractors, noise pattern) and the same number
    of nodules at the same draws as the unshifted set of the same seed.

    Attributes:
        nodule_contrast: factor on every nodule's added attenuation, applied after the
            visibility floor (0.6: fainter nodules than the generator otherwise allows).
        noise_scale: factor on the quantum noise (1.5: a 0.44 x dose), applied after the
            nodules are sized against the unshifted noise.
        diameter_mm: ``(low, high)`` range of nodule diameters (log-uniform), within 4-30 mm.
    """

    nodule_contrast: float = 1.0
    noise_scale: float = 1.0
    diameter_mm: tuple[float, float] = (MIN_DIAMETER_MM, MAX_DIAMETER_MM)

    def __post_init__(self) -> None:
        if not 0.0 < self.nodule_contrast <= 2.0:
            raise ValueError(f"nodule contrast must be within (0, 2], got {self.nodule_contrast}")
        if not 0.0 < self.noise_scale <= 5.0:
            raise ValueError(f"noise scale must be within (0, 5], got {self.noise_scale}")
        low, high = self.diameter_mm
        if not MIN_DIAMETER_MM <= low <= high <= MAX_DIAMETER_MM:
            raise ValueError(
                f"nodule diameters must satisfy {MIN_DIAMETER_MM:g} <= low <= high <= "
                f"{MAX_DIAMETER_MM:g} mm, got {low:g}-{high:g}"
            )

    @property
    def is_identity(self) -> bool:
        return self == CxrShift()

    def as_params(self) -> dict[str, Any]:
        return {
            "nodule_contrast": self.nodule_contrast,
            "noise_scale": self.noise_scale,
            "diameter_mm": list(self.diameter_mm),
        }


NO_SHIFT = CxrShift()


@dataclass(frozen=True)
class CxrNoduleV2:
    """One inserted 3D nodule.

    Attributes:
        center_index: ``(x, y)`` = (column, row) of its projected centre.
        diameter_mm: largest diameter of the 3D object.
        nodule_type: one of :data:`NODULE_TYPES`.
        margin: one of :data:`NODULE_MARGINS`.
        peak_density: the largest added density (projected attenuation).
        box_index: ``xyxy`` index box on the edges of the pixels it covers.
    """

    center_index: tuple[float, float]
    diameter_mm: float
    nodule_type: str
    margin: str
    peak_density: float
    box_index: tuple[float, float, float, float]


@dataclass(frozen=True)
class Distractor:
    """A nodule look-alike that is not a nodule (benign)."""

    kind: str
    center_index: tuple[float, float]
    diameter_mm: float
    box_index: tuple[float, float, float, float]


@dataclass(frozen=True)
class CxrCaseV2:
    """A rendered version-2 radiograph (see :class:`oncotriage.datasets.synth_cxr.CxrCase`).

    ``pixels`` are stored values in the case's photometric interpretation (MONOCHROME1:
    higher is darker). ``density`` is the final log-attenuation image (noise included)
    before quantisation, kept for tests; ``noise_sigma`` is its quantum noise level.
    """

    pixels: np.ndarray
    pixel_spacing_mm: float
    bits_stored: int
    window_center: float
    window_width: float
    include_pixel_spacing: bool
    detector_type: str
    photometric: str
    manufacturer_model: str
    view_position: str
    nodules: tuple[CxrNoduleV2, ...]
    distractors: tuple[Distractor, ...]
    noise_sigma: float
    density: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def boxes_world(self) -> np.ndarray:
        """``(N, 4)`` ``ccwh`` nodule boxes in detector-plane mm."""
        return _ccwh([n.box_index for n in self.nodules], self.pixel_spacing_mm)

    def distractor_boxes_world(self) -> np.ndarray:
        """``(M, 4)`` ``ccwh`` distractor boxes in detector-plane mm."""
        return _ccwh([d.box_index for d in self.distractors], self.pixel_spacing_mm)


def _ccwh(boxes: Sequence[tuple[float, float, float, float]], spacing: float) -> np.ndarray:
    if not boxes:
        return np.zeros((0, 4))
    xyxy = np.array(boxes, dtype=float) * spacing
    return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def _vessel_tree(
    rng: np.random.Generator, lung_mask: np.ndarray, spacing: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Tapering branches from each hilum; returns the added density and end-on points."""
    rows, cols = lung_mask.shape
    layer = np.zeros((rows, cols), np.float32)
    ends: list[tuple[float, float]] = []
    ys, xs = np.nonzero(lung_mask)
    if xs.size == 0:
        return layer, ends
    mid = cols / 2
    for side in (-1, 1):
        in_side = (xs - mid) * side > 0
        if not in_side.any():
            continue
        lung_x = xs[in_side]
        lung_y = ys[in_side]
        hilum = (
            float(mid + side * (np.abs(lung_x - mid).min() + 6 / spacing)),
            float(np.percentile(lung_y, 45)),
        )
        stack = [(hilum, float(rng.uniform(-0.6, 0.6) + (np.pi if side < 0 else 0.0)), 5.0, 0)]
        stack += [(hilum, float(np.pi / 2 + rng.uniform(-0.5, 0.5)), 5.0, 0)]
        stack += [(hilum, float(-np.pi / 2 + rng.uniform(-0.5, 0.5)), 4.5, 0)]
        while stack:
            start, angle, width_mm, depth = stack.pop()
            length_px = rng.uniform(25, 45) / spacing * (0.8**depth)
            end = (start[0] + np.cos(angle) * length_px, start[1] + np.sin(angle) * length_px)
            x0, x1 = sorted((start[0], end[0]))
            y0, y1 = sorted((start[1], end[1]))
            pad = width_mm / spacing + 2
            r0, r1 = max(0, int(y0 - pad)), min(rows, int(y1 + pad) + 1)
            c0, c1 = max(0, int(x0 - pad)), min(cols, int(x1 + pad) + 1)
            if r1 > r0 and c1 > c0:
                yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
                dist = _segment_distance(xx, yy, start, end) * spacing
                radius = width_mm / 2
                chord = 2 * np.sqrt(np.clip(radius**2 - dist**2, 0, None))
                layer[r0:r1, c0:c1] = np.maximum(layer[r0:r1, c0:c1], 1.3 * _DENSITY_PER_MM * chord)
            er, ec = int(end[1]), int(end[0])
            inside = bool(0 <= er < rows and 0 <= ec < cols and lung_mask[er, ec])
            if depth < 4 and width_mm > 1.2 and inside:
                for turn in (-1, 1):
                    stack.append(
                        (end, angle + turn * rng.uniform(0.25, 0.6), width_mm * 0.72, depth + 1)
                    )
            elif inside:
                ends.append(end)
    return layer * lung_mask, ends


def _nodule_object(
    rng: np.random.Generator, nodule_type: str, margin: str, radius_px: float
) -> tuple[np.ndarray, int]:
    """A voxel nodule (pixel-sized voxels) projected through its depth: attenuation x mm."""
    half = int(np.ceil(radius_px * 1.25)) + 2
    grid = np.arange(-half, half + 1, dtype=np.float32)
    zz, yy, xx = np.meshgrid(grid, grid, grid, indexing="ij")
    axes = rng.uniform(0.8, 1.0, 3)
    r = np.sqrt((xx / axes[0]) ** 2 + (yy / axes[1]) ** 2 + (zz / axes[2]) ** 2)
    theta = np.arctan2(yy, xx)
    phi = np.arctan2(zz, np.hypot(xx, yy))
    surface = np.full_like(r, radius_px)
    if margin in ("lobulated", "spiculated"):
        k1 = int(rng.integers(3, 6))
        surface = (
            radius_px
            * (1 + 0.12 * np.sin(k1 * theta + rng.uniform(0, 6.3)) * np.cos(2 * phi))
            / 1.12
        )
    inside = (r <= surface).astype(np.float32)
    if margin == "spiculated":
        for _ in range(int(rng.integers(6, 12))):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            along = zz * direction[0] + yy * direction[1] + xx * direction[2]
            across = np.sqrt(np.clip(r**2 * 0 + xx**2 + yy**2 + zz**2 - along**2, 0, None))
            length = radius_px * rng.uniform(1.0, 1.25)
            spike = (along > 0) & (along < length) & (across < 0.6 + 0.6 * (1 - along / length))
            inside = np.maximum(inside, spike.astype(np.float32))
    attenuation = inside * _TYPE_ATTENUATION[nodule_type]
    if nodule_type == "part-solid":
        attenuation = np.where(r <= surface * rng.uniform(0.35, 0.6), 1.0, 0.35) * inside
    elif nodule_type == "calcified":
        attenuation = np.where(r <= surface * rng.uniform(0.3, 0.7), 2.8, 1.0) * inside
    projected = attenuation.sum(axis=0)  # through the depth, one voxel = one pixel
    return projected, half


def _free_position(
    rng: np.random.Generator, allowed: np.ndarray, radius_px: float, taken: list[tuple[float, ...]]
) -> tuple[int, int] | None:
    free = allowed.copy()
    yy, xx = np.ogrid[: free.shape[0], : free.shape[1]]
    for x0, y0, x1, y1 in taken:
        free &= ~(
            (xx > x0 - radius_px - 3)
            & (xx < x1 + radius_px + 3)
            & (yy > y0 - radius_px - 3)
            & (yy < y1 + radius_px + 3)
        )
    candidates = np.flatnonzero(free)
    if not candidates.size:
        return None
    row, col = np.unravel_index(candidates[rng.integers(candidates.size)], free.shape)
    return int(row), int(col)


def _box(row: int, col: int, half: int, patch: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(patch > 0)
    return (
        float(col - half + xs.min() - 0.5),
        float(row - half + ys.min() - 0.5),
        float(col - half + xs.max() + 0.5),
        float(row - half + ys.max() + 0.5),
    )


def _stamp(layer: np.ndarray, row: int, col: int, half: int, patch: np.ndarray) -> None:
    layer[row - half : row + half + 1, col - half : col + half + 1] += patch


def _place_nodules(
    rng: np.random.Generator,
    lung_mask: np.ndarray,
    spacing: float,
    min_peak: float,
    shift: CxrShift = NO_SHIFT,
) -> tuple[np.ndarray, tuple[CxrNoduleV2, ...]]:
    """Nodules in the lungs; one whose projection peaks below ``min_peak`` (a small
    ground-glass nodule at a low dose) is made denser until it reaches it: every labelled
    nodule is visible above the noise. ``shift`` then scales the contrast (after that floor)
    and narrows the diameters."""
    low, high = np.log(shift.diameter_mm[0]), np.log(shift.diameter_mm[1])
    layer = np.zeros(lung_mask.shape, np.float32)
    depth = ndimage.distance_transform_edt(lung_mask)
    nodules: list[CxrNoduleV2] = []
    taken: list[tuple[float, ...]] = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))):
        diameter = float(np.exp(rng.uniform(low, high)))
        nodule_type = str(rng.choice(NODULE_TYPES, p=[0.5, 0.15, 0.2, 0.15]))
        margin = str(rng.choice(NODULE_MARGINS, p=[0.5, 0.25, 0.25]))
        radius_px = diameter / 2 / spacing
        position = _free_position(rng, depth >= radius_px * 1.3 + 2, radius_px * 1.3, taken)
        if position is None:
            continue
        projected, half = _nodule_object(rng, nodule_type, margin, radius_px)
        patch = (_DENSITY_PER_MM * spacing * projected).astype(np.float32)
        if patch.max() < min_peak:
            patch *= np.float32(min_peak / patch.max())
        if shift.nodule_contrast != 1.0:
            patch *= np.float32(shift.nodule_contrast)
        row, col = position
        _stamp(layer, row, col, half, patch)
        box = _box(row, col, half, patch)
        taken.append(box)
        nodules.append(
            CxrNoduleV2(
                center_index=(float(col), float(row)),
                diameter_mm=round(diameter, 2),
                nodule_type=nodule_type,
                margin=margin,
                peak_density=round(float(patch.max()), 4),
                box_index=box,
            )
        )
    return layer, tuple(nodules)


def _disc(radius_px: float, peak: float, sharp: float) -> tuple[np.ndarray, int]:
    half = int(np.ceil(radius_px)) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    r = np.hypot(xx, yy) / max(radius_px, 0.5)
    return (peak * np.clip(1 - r**sharp, 0, None)).astype(np.float32), half


def _place_distractors(
    rng: np.random.Generator,
    lung_mask: np.ndarray,
    spacing: float,
    vessel_ends: list[tuple[float, float]],
    rib_crossings: list[tuple[int, int]],
    avoid: list[tuple[float, ...]],
) -> tuple[np.ndarray, tuple[Distractor, ...]]:
    layer = np.zeros(lung_mask.shape, np.float32)
    out: list[Distractor] = []
    taken = list(avoid)
    rows, cols = lung_mask.shape
    lung_depth = ndimage.distance_transform_edt(lung_mask)
    count = int(rng.integers(1, 4))
    kinds = [str(k) for k in rng.choice(DISTRACTOR_KINDS, size=count)]
    for kind in kinds:
        if kind == "end-on vessel":
            diameter, peak, sharp = rng.uniform(3, 6), 0.0, 2.0
            peak = float(_DENSITY_PER_MM * diameter * 0.9)
        elif kind == "nipple shadow":
            diameter, sharp = rng.uniform(6, 11), 6.0
            peak = float(_DENSITY_PER_MM * rng.uniform(2.5, 4.0))
        elif kind == "bone island":
            diameter, sharp = rng.uniform(2, 5), 4.0
            peak = float(_DENSITY_PER_MM * diameter * 2.2)
        elif kind == "rib crossing":
            diameter, peak, sharp = 0.0, 0.0, 1.0
        else:  # calcified granuloma
            diameter, sharp = rng.uniform(2, 5), 8.0
            peak = float(_DENSITY_PER_MM * diameter * 3.0)
        radius_px = diameter / 2 / spacing
        allowed = lung_mask.copy()
        if kind == "end-on vessel" and vessel_ends:
            allowed = np.zeros_like(lung_mask)
            for x, y in vessel_ends:
                if 0 <= int(y) < rows and 0 <= int(x) < cols:
                    allowed[int(y), int(x)] = True
            allowed &= lung_mask
        elif kind == "nipple shadow":
            yy, xx = np.ogrid[:rows, :cols]
            allowed = lung_mask & (yy > rows * 0.55) & (np.abs(xx - cols / 2) > cols * 0.18)
        elif kind == "rib crossing":
            if not rib_crossings:
                continue
            row, col = rib_crossings[int(rng.integers(len(rib_crossings)))]
            size = 8.0 / spacing
            box = (col - size, row - size, col + size, row + size)
            if any(_overlap(box, other) for other in taken):
                continue
            taken.append(box)
            out.append(Distractor(kind, (float(col), float(row)), 16.0, box))
            continue
        allowed &= lung_depth > radius_px + 2
        position = _free_position(rng, allowed, radius_px, taken)
        if position is None:
            continue
        patch, half = _disc(radius_px, peak, sharp)
        row, col = position
        _stamp(layer, row, col, half, patch)
        box = _box(row, col, half, patch)
        taken.append(box)
        out.append(Distractor(kind, (float(col), float(row)), round(float(diameter), 2), box))
    return layer, tuple(out)


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _rib_crossings(density: np.ndarray, lung_mask: np.ndarray) -> list[tuple[int, int]]:
    """Bright local maxima inside the lungs: where ribs overlap (posterior over anterior)."""
    smooth = ndimage.gaussian_filter(density, 2.0)
    detail = smooth - ndimage.gaussian_filter(density, 12.0)
    peaks = (detail == ndimage.maximum_filter(detail, size=25)) & lung_mask
    ys, xs = np.nonzero(peaks & (detail > np.percentile(detail[lung_mask], 97)))
    return [(int(y), int(x)) for y, x in zip(ys, xs, strict=True)][:20]


def render_cxr_case_v2(
    entropy: Sequence[int],
    *,
    positive: bool,
    include_nodules: bool = True,
    shift: CxrShift = NO_SHIFT,
) -> CxrCaseV2:
    """Render one version-2 synthetic chest radiograph (deterministic by ``entropy``).

    ``shift`` (default: none) makes the nodules fainter or smaller or the noise stronger for
    robustness checks; the unshifted case is unchanged by its existence.
    """
    acq_rng, nodule_rng, distractor_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([*entropy, 2]).spawn(4)
    )
    vendor = str(acq_rng.choice(sorted(VENDOR_PROFILES)))
    profile = VENDOR_PROFILES[vendor]
    portable = bool(acq_rng.random() < 0.2)
    view = "AP" if portable or acq_rng.random() < 0.1 else "PA"
    spacing = ds_round(acq_rng.uniform(*profile["spacing"]), 3)
    cols = int(np.clip(round(acq_rng.uniform(340, 430) / spacing), 384, 640))
    rows = int(np.clip(round(acq_rng.uniform(340, 430) / spacing), 384, 640))
    anatomy = _render_anatomy(acq_rng, rows, cols, spacing)
    density = anatomy.density.copy()
    lung_mask = anatomy.lung_mask
    rotation = float(acq_rng.uniform(-6, 6))
    if abs(rotation) > 0.5:
        density = ndimage.rotate(density, rotation, reshape=False, order=1, mode="nearest")
        turned = ndimage.rotate(lung_mask.astype(np.float32), rotation, reshape=False, order=1)
        lung_mask = turned > 0.5
    collimation = [int(acq_rng.integers(0, max(1, n // 12))) for n in (rows, rows, cols, cols)]
    collimated = np.zeros((rows, cols), bool)
    collimated[: collimation[0], :] = True
    collimated[rows - collimation[1] :, :] = True
    collimated[:, : collimation[2]] = True
    collimated[:, cols - collimation[3] :] = True
    # nodules and distractors only where the beam reaches, 6 mm from the collimator edge
    lung_mask = lung_mask & (ndimage.distance_transform_edt(~collimated) > 6 / spacing)
    vessels, vessel_ends = _vessel_tree(acq_rng, lung_mask, spacing)
    density += vessels
    female = bool(acq_rng.random() < 0.5)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    for side in (-1, 1):
        cx = cols / 2 + side * cols * acq_rng.uniform(0.22, 0.3)
        cy = rows * acq_rng.uniform(0.68, 0.78)
        radius = (acq_rng.uniform(55, 85) if female else acq_rng.uniform(40, 60)) / spacing
        shadow = np.clip(1 - ((xx - cx) ** 2 + ((yy - cy) * 1.3) ** 2) / radius**2, 0, None)
        density += (0.05 if female else 0.025) * np.sqrt(shadow)
    if portable:
        # AP portable: heart magnified, lungs less inflated (more density at the bases)
        density += 0.03 * np.clip((yy / rows - 0.55) * 3, 0, 1) * lung_mask

    dose = float(acq_rng.uniform(0.4, 1.0) * (0.6 if portable else 1.0))
    noise_sigma = float(0.006 / np.sqrt(dose))
    crossings = _rib_crossings(density, lung_mask)
    nodules: tuple[CxrNoduleV2, ...] = ()
    taken: list[tuple[float, ...]] = []
    if positive:
        layer, drawn = _place_nodules(nodule_rng, lung_mask, spacing, 4.0 * noise_sigma, shift)
        taken = [n.box_index for n in drawn]
        if include_nodules:
            density = density + layer
            nodules = drawn
    distractor_layer, distractors = _place_distractors(
        distractor_rng, lung_mask, spacing, vessel_ends, crossings, taken
    )
    density = density + distractor_layer

    # the nodules were sized against the unshifted noise: a noise shift makes them harder
    noise_sigma *= shift.noise_scale
    density = density + noise_sigma * noise_rng.standard_normal(density.shape).astype(np.float32)
    density = np.where(collimated, 1.1, density)  # unexposed: as bright as bone

    bits = int(profile["bits"])
    full_scale = (1 << bits) - 1
    exposure = float(acq_rng.uniform(0.85, 1.15))
    offset = acq_rng.uniform(0.04, 0.10) * full_scale
    gain = acq_rng.uniform(0.55, 0.70) * full_scale * exposure / 1.15
    values = np.clip(np.rint(offset + gain * density), 0, full_scale)
    window_center = offset + gain * acq_rng.uniform(0.46, 0.54)
    window_width = ds_round(gain * acq_rng.uniform(0.95, 1.15), 1)
    photometric = str(profile["photometric"])
    if photometric == "MONOCHROME1":
        values = full_scale - values
        window_center = full_scale - window_center
    params = {
        "generator_version": 2,
        "vendor": vendor,
        "photometric": photometric,
        "bits_stored": bits,
        "pixel_spacing_mm": spacing,
        "view": view,
        "portable": portable,
        "dose": round(dose, 3),
        "noise_sigma": round(noise_sigma, 5),
        "exposure": round(exposure, 3),
        "rotation_deg": round(rotation, 2),
        "collimation_px": collimation,
        "sex": "F" if female else "M",
    }
    if not shift.is_identity:
        params["shift"] = shift.as_params()
    return CxrCaseV2(
        pixels=values.astype(np.uint16),
        pixel_spacing_mm=spacing,
        bits_stored=bits,
        window_center=ds_round(window_center, 1),
        window_width=window_width,
        include_pixel_spacing=bool(profile["pixel_spacing_tag"]),
        detector_type=str(profile["detector"]),
        photometric=photometric,
        manufacturer_model=str(profile["model"]),
        view_position=view,
        nodules=nodules,
        distractors=distractors,
        noise_sigma=noise_sigma,
        density=density.astype(np.float32),
        params=params,
    )
