"""Generator version 2 of synthetic low-dose chest CT: 3D nodules, distractors, acquisitions.

Version 1 (:mod:`oncotriage.datasets.synth_ldct`) stays as it is so old seeds reproduce.
Version 2 keeps its anatomy in Hounsfield units (body ellipse with fat and muscle, textured
lungs near -850 HU, denser posteriorly, on diaphragm domes; heart, aorta, spine, sternum and
ribs) and adds:

- **vessels as branching, tapering tubes** from each hilum (40 HU), many running
  cranio-caudally so that they cross an axial slice as a round dot, like a nodule;
- **nodules as 3D objects** of 4-30 mm: solid, part-solid (a solid core in a ground-glass
  shell), ground-glass (-600..-300 HU) or calcified; smooth, lobulated or spiculated. A
  nodule whose peak, once blurred by the scanner, would stay below 4 x the case's noise SD
  (a small ground-glass nodule at the lowest dose with a sharp kernel) is made denser, so
  every labelled nodule is visible;
- **distractors, labelled benign** (never inside a nodule box): vessel bifurcations, vessels
  seen end-on and calcified granulomas (2-4 mm);
- **acquisition variety** (:mod:`oncotriage.datasets.synth_ldct_acquisition`): four vendor
  header profiles (Manufacturer, model, reconstruction
  kernel names, kVp, in-plane spacing, stored bits and sign, Rescale Slope/Intercept, Pixel
  Padding outside a circular field of view, slice numbering from the head or the feet); soft,
  standard or sharp kernels, each with its own blur and noise texture (a sharper kernel has
  more, finer-grained noise: the noise power spectrum is ``f x MTF(f)^2`` of the kernel);
  slice thickness 1-2.5 mm, contiguous or overlapping; dose (CTDIvol 0.6-3 mGy), which with
  the kernel, the thickness and kVp sets the noise SD.

Every parameter drawn for a case is in :attr:`CtCaseV2.params` and goes into the datalist.
Each case draws from independent streams (anatomy/acquisition, nodules, distractors, noise),
and objects are blurred on their own and added after the anatomy's blur: the same case
rendered without nodules differs from it only inside the nodules' boxes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset

from oncotriage.datasets.dicom_writer import StudyIdentity, build_ct_slice_dataset
from oncotriage.datasets.pixels import CT_PADDING_HU
from oncotriage.datasets.synth_cxr_v2 import NO_SHIFT, CxrShift
from oncotriage.datasets.synth_ldct import (
    MIN_DIAMETER_MM,
    CtCase,
    CtGrid,
    CtNodule,
    add_bones,
    add_soft_tissue_texture,
    render_torso_and_lungs,
)
from oncotriage.datasets.synth_ldct_acquisition import draw_acquisition, quantise, scanner_noise
from oncotriage.datasets.synth_ldct_objects import (
    NODULE_MARGINS,
    IndexBox,
    ScannerBlur,
    VesselTree,
    boxes_overlap,
    find_place,
    grow_vessel_tree,
    nodule_occupancy,
    patch_around,
    support_box,
    tube_occupancy,
)

NODULE_TYPES = ("solid", "part-solid", "ground-glass", "calcified")
DISTRACTOR_KINDS = ("vessel bifurcation", "end-on vessel", "calcified granuloma")
#: a labelled nodule's blurred peak is at least this many noise SDs above what it replaced
VISIBILITY_FLOOR = 4.0
VESSEL_HU = 40.0


@dataclass(frozen=True)
class CtNoduleV2(CtNodule):
    """A version-2 nodule (see :class:`CtNodule`; ``hu`` is its solid or ground-glass part).

    Attributes:
        margin: one of :data:`NODULE_MARGINS`.
        peak_hu: the largest HU it adds, after the scanner's blur.
    """

    margin: str
    peak_hu: float


@dataclass(frozen=True)
class CtDistractor:
    """A nodule look-alike that is not a nodule (benign); ``box_index`` is ``xyzxyz``."""

    kind: str
    center_index: tuple[float, float, float]
    diameter_mm: float
    box_index: IndexBox


@dataclass(frozen=True)
class CtCaseV2(CtCase):
    """A rendered version-2 series (see :class:`CtCase`): HU = stored x slope + intercept.

    Attributes:
        rescale_slope: Rescale Slope.
        distractors: benign look-alikes, outside every nodule box.
        noise_sd_hu: SD of the scanner noise added (HU).
        padding_value: Pixel Padding Value (stored) outside the field of view, or ``None``.
        first_instance: ``superior`` or ``inferior``: where Instance Number 1 is.
        header: DICOM attributes of the vendor profile (keyword -> value).
        params: every parameter drawn for the case (goes into the datalist).
    """

    nodules: tuple[CtNoduleV2, ...]
    rescale_slope: float
    distractors: tuple[CtDistractor, ...]
    noise_sd_hu: float
    padding_value: int | None
    first_instance: str
    header: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def hu(self) -> np.ndarray:
        """``(slices, rows, columns)`` float32 HU as a reader gets them (padding: -1024)."""
        hu = (self.stored.astype(np.float64) * self.rescale_slope + self.rescale_intercept).astype(
            np.float32
        )
        if self.padding_value is not None:
            hu[self.stored == self.padding_value] = CT_PADDING_HU
        return hu

    def _world(self, boxes: Sequence[IndexBox]) -> np.ndarray:
        if not boxes:
            return np.zeros((0, 6))
        xyzxyz = np.array(boxes, dtype=float)
        world = np.array(self.origin * 2) + xyzxyz * np.array(self.spacing_xyz * 2)
        return np.concatenate([(world[:, :3] + world[:, 3:]) / 2, world[:, 3:] - world[:, :3]], 1)

    def boxes_world(self) -> np.ndarray:
        """``(N, 6)`` ``cccwhd`` nodule boxes in LPS millimetres."""
        return self._world([n.box_index for n in self.nodules])

    def distractor_boxes_world(self) -> np.ndarray:
        """``(M, 6)`` ``cccwhd`` distractor boxes in LPS millimetres."""
        return self._world([d.box_index for d in self.distractors])

    def instance_number(self, index: int) -> int:
        """Instance Number of slice ``index`` (0 = most inferior)."""
        slices = self.stored.shape[0]
        return index + 1 if self.first_instance == "inferior" else slices - index


@dataclass(frozen=True)
class _Insert:
    region: tuple[slice, slice, slice]
    added: np.ndarray  # blurred HU to add


def _nodule_hu(
    rng: np.random.Generator,
    nodule_type: str,
    anatomy: np.ndarray,
    occupancy: np.ndarray,
    rel: np.ndarray,
    edge_rel: float,
) -> tuple[np.ndarray, float]:
    """HU the nodule adds to ``anatomy`` (before blur), and its solid/ground-glass HU."""
    if nodule_type in ("solid", "calcified"):
        solid = float(rng.uniform(-30, 80))
        blended = anatomy * (1 - occupancy) + solid * occupancy
        hu = solid
    else:
        glass = float(
            rng.uniform(-600, -300) if nodule_type == "ground-glass" else rng.uniform(-650, -400)
        )
        # ground glass does not hide the vessels running through it
        blended = anatomy * (1 - occupancy) + np.maximum(anatomy, glass) * occupancy
        hu = glass
    if nodule_type in ("part-solid", "calcified"):
        if nodule_type == "part-solid":
            core, core_hu = rng.uniform(0.35, 0.6), float(rng.uniform(-30, 60))
            hu = core_hu
        elif rng.random() < 0.3:  # diffuse calcification
            core, core_hu = 1.0, float(rng.uniform(200, 500))
        else:  # central calcification
            core, core_hu = rng.uniform(0.3, 0.7), float(rng.uniform(300, 900))
        inner = np.clip((core - rel) / edge_rel + 0.5, 0, 1) * occupancy
        blended = blended * (1 - inner) + core_hu * inner
    return (blended - anatomy).astype(np.float32), hu


def _place_nodules(
    rng: np.random.Generator,
    grid: CtGrid,
    anatomy: np.ndarray,
    lungs: np.ndarray,
    blur: ScannerBlur,
    floor_hu: float,
    shift: CxrShift = NO_SHIFT,
) -> tuple[list[_Insert], tuple[CtNoduleV2, ...]]:
    """1-3 nodules in the lungs, each made denser if its blurred peak stays below ``floor_hu``.
    ``shift`` then scales the contrast (after that floor) and narrows the diameters (the same
    draws, other values; a smaller nodule may land elsewhere in the lungs)."""
    low, high = np.log(shift.diameter_mm[0]), np.log(shift.diameter_mm[1])
    spacing = np.array(grid.spacing_zyx)
    edge = max(grid.spacing_zyx[1], 0.5 * grid.spacing_zyx[0])
    lung_voxels = np.flatnonzero(lungs)
    inserts: list[_Insert] = []
    nodules: list[CtNoduleV2] = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))):
        diameter = float(np.exp(rng.uniform(low, high)))
        nodule_type = str(rng.choice(NODULE_TYPES, p=[0.5, 0.15, 0.2, 0.15]))
        margin = str(rng.choice(NODULE_MARGINS, p=[0.5, 0.25, 0.25]))
        while True:
            reach = diameter / 2 * (1.9 if margin == "spiculated" else 1.0) + edge
            extent = np.ceil(reach / spacing).astype(int) + 1 + np.array(blur.reach)
            taken = [n.box_index for n in nodules]
            where = find_place(
                rng, lungs, lung_voxels, grid.spacing_zyx, reach + 1.5, extent, taken
            )
            if where is not None or diameter <= MIN_DIAMETER_MM:
                break
            diameter = max(MIN_DIAMETER_MM, diameter * 0.8)
        if where is None:
            continue
        centre = where + rng.uniform(-0.5, 0.5, 3)
        patch = patch_around(grid, centre, reach, blur.reach)
        occupancy, rel = nodule_occupancy(rng, patch, diameter / 2, margin, edge)
        background = anatomy[patch.region]
        added, hu = _nodule_hu(rng, nodule_type, background, occupancy, rel, edge / (diameter / 2))
        blurred = blur.apply_to_object(added)
        peak = float(blurred.max())
        lung = (
            float(np.median(background[occupancy >= 0.5])) if (occupancy >= 0.5).any() else -850.0
        )
        if peak < floor_hu:
            # as dense as it must be to be seen: scale the contrast over what it replaced
            scale = floor_hu / max(peak, 1e-6)
            blurred *= np.float32(scale)
            hu = lung + scale * (hu - lung)
            peak = float(blurred.max())
        if shift.nodule_contrast != 1.0:  # a shifted set: fainter (or denser) than the floor
            blurred *= np.float32(shift.nodule_contrast)
            hu = lung + shift.nodule_contrast * (hu - lung)
            peak = float(blurred.max())
        inserts.append(_Insert(patch.region, blurred))
        nodules.append(
            CtNoduleV2(
                center_index=(float(centre[2]), float(centre[1]), float(centre[0])),
                diameter_mm=round(diameter, 2),
                nodule_type=nodule_type,
                hu=round(hu, 1),
                box_index=support_box(blurred, patch.region),
                margin=margin,
                peak_hu=round(peak, 1),
            )
        )
    return inserts, tuple(nodules)


def _mm_box(grid: CtGrid, centre_mm: Sequence[float], half_mm: Sequence[float]) -> IndexBox:
    """``xyzxyz`` box on voxel edges around the voxels within ``centre +- half`` (mm, z y x)."""
    size = np.array(grid.shape)
    origin = np.array([0.0, *((size[1:] - 1) / 2)])
    spacing = np.array(grid.spacing_zyx)
    lo = np.asarray(centre_mm) / spacing + origin - np.asarray(half_mm) / spacing
    hi = np.asarray(centre_mm) / spacing + origin + np.asarray(half_mm) / spacing
    lo = np.clip(np.ceil(lo - 1e-6), 0, size - 1) - 0.5
    hi = np.clip(np.floor(hi + 1e-6), 0, size - 1) + 0.5
    return (float(lo[2]), float(lo[1]), float(lo[0]), float(hi[2]), float(hi[1]), float(hi[0]))


def _centre_index(box: IndexBox) -> tuple[float, float, float]:
    return ((box[0] + box[3]) / 2, (box[1] + box[4]) / 2, (box[2] + box[5]) / 2)


def _in_lung(grid: CtGrid, lungs: np.ndarray, point_mm: np.ndarray) -> bool:
    size = np.array(grid.shape)
    index = np.rint(
        np.asarray(point_mm) / np.array(grid.spacing_zyx) + [0.0, *((size[1:] - 1) / 2)]
    ).astype(int)
    return bool(np.all(index >= 0) and np.all(index < size) and lungs[tuple(index)])


def _place_distractors(
    rng: np.random.Generator,
    grid: CtGrid,
    lungs: np.ndarray,
    tree: VesselTree,
    blur: ScannerBlur,
    avoid: Sequence[IndexBox],
) -> tuple[list[_Insert], tuple[CtDistractor, ...]]:
    """1-4 benign look-alikes, none overlapping a nodule box (nor one another)."""
    taken = list(avoid)
    inserts: list[_Insert] = []
    out: list[CtDistractor] = []
    # vessels thick enough to stand out of the lung in thick slices as well as in thin ones
    min_radius = max(1.0, 0.5 * grid.spacing_zyx[0])
    forks = [f for f in tree.bifurcations if f[1] >= min_radius]
    end_on = [
        s
        for s in tree.segments
        if abs(s.direction[0]) >= 0.8
        and s.end_radius >= min_radius
        and _in_lung(grid, lungs, np.add(s.start, s.end) / 2)
    ]
    spacing = np.array(grid.spacing_zyx)
    edge = max(grid.spacing_zyx[1], 0.5 * grid.spacing_zyx[0])
    for kind in (str(k) for k in rng.choice(DISTRACTOR_KINDS, size=int(rng.integers(1, 5)))):
        box: IndexBox | None = None
        diameter = 0.0
        if kind in ("vessel bifurcation", "end-on vessel"):
            candidates: list[tuple[np.ndarray, np.ndarray, float]] = []
            if kind == "vessel bifurcation":
                candidates = [(np.array(p), np.full(3, 2 * r + 1.0), 2 * r) for p, r in forks]
            else:
                for s in end_on:
                    r = (s.start_radius + s.end_radius) / 2
                    half_length = float(np.linalg.norm(np.subtract(s.end, s.start))) / 2
                    half = np.array([min(half_length, 2 * r + 2.0), r + 1.0, r + 1.0])
                    candidates.append((np.add(s.start, s.end) / 2, half, 2 * r))
            for pick in rng.permutation(len(candidates)):
                centre_mm, half, diameter = candidates[pick]
                candidate = _mm_box(grid, centre_mm, half)
                if not any(boxes_overlap(candidate, other, gap=1.0) for other in taken):
                    box = candidate
                    break
        else:  # calcified granuloma
            radius = float(rng.uniform(1.0, 2.0))
            density = float(rng.uniform(300, 900))
            extent = np.ceil((radius + edge) / spacing).astype(int) + 1 + np.array(blur.reach)
            where = find_place(
                rng,
                lungs,
                np.flatnonzero(lungs),
                grid.spacing_zyx,
                radius + edge + 1.0,
                extent,
                taken,
            )
            if where is not None:
                centre = where + rng.uniform(-0.5, 0.5, 3)
                patch = patch_around(grid, centre, radius + edge, blur.reach)
                origin = np.zeros(3)
                occupancy = tube_occupancy(
                    patch.zz, patch.yy, patch.xx, origin, origin, (radius, radius), edge
                )
                # a sphere replaces the lung it sits in (about -850 HU)
                blurred = blur.apply_to_object((density + 850.0) * occupancy)
                inserts.append(_Insert(patch.region, blurred))
                box, diameter = support_box(blurred, patch.region), 2 * radius
        if box is None:
            continue
        taken.append(box)
        out.append(CtDistractor(kind, _centre_index(box), round(diameter, 2), box))
    return inserts, tuple(out)


def render_ldct_case_v2(
    entropy: Sequence[int],
    *,
    positive: bool,
    include_nodules: bool = True,
    shift: CxrShift = NO_SHIFT,
) -> CtCaseV2:
    """Render one version-2 synthetic low-dose chest CT series (deterministic by ``entropy``).

    Args:
        entropy: integers seeding the case; same entropy, same series bit for bit.
        positive: draw 1-3 nodules (otherwise none).
        include_nodules: ``False`` renders the same case without its nodules (the same
            distractors, noise and everything else).
        shift: a harder (or easier) set of the same patients: nodule contrast over the lung
            scaled after the visibility floor, scanner noise scaled, diameters narrowed. The
            acquisition, anatomy, distractors and noise pattern stay the same.
    """
    acq_rng, nodule_rng, distractor_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([*entropy, 2]).spawn(4)
    )
    acq = draw_acquisition(acq_rng)
    grid = acq.grid()
    anatomy, lungs, torso = render_torso_and_lungs(acq_rng, grid)
    tree = grow_vessel_tree(acq_rng, grid, torso, lungs)
    anatomy = anatomy * (1 - tree.occupancy) + VESSEL_HU * tree.occupancy
    anatomy = add_bones(acq_rng, grid, anatomy, torso)
    anatomy = add_soft_tissue_texture(acq_rng, grid, anatomy).astype(np.float32)
    blur = acq.blur()
    hu = blur.apply(anatomy)

    nodule_inserts: list[_Insert] = []
    drawn: tuple[CtNoduleV2, ...] = ()
    if positive:
        nodule_inserts, drawn = _place_nodules(
            nodule_rng, grid, anatomy, lungs, blur, VISIBILITY_FLOOR * acq.noise_sd, shift
        )
    distractor_inserts, distractors = _place_distractors(
        distractor_rng, grid, lungs, tree, blur, [n.box_index for n in drawn]
    )
    # nodules are drawn (and their boxes avoided) either way: only their voxels differ
    nodules = drawn if include_nodules else ()
    for insert in (nodule_inserts if include_nodules else []) + distractor_inserts:
        hu[insert.region] += insert.added
    noise = scanner_noise(noise_rng, acq)
    if shift.noise_scale != 1.0:
        noise *= np.float32(shift.noise_scale)
    hu += noise
    profile = acq.profile
    return CtCaseV2(
        stored=quantise(hu, acq),
        pixel_spacing_mm=(acq.pixel_spacing, acq.pixel_spacing),
        slice_spacing_mm=acq.slice_spacing,
        slice_thickness_mm=acq.thickness,
        origin=acq.origin,
        rescale_intercept=profile.rescale_intercept,
        bits_stored=profile.bits_stored,
        ctdi_vol_mgy=acq.ctdi,
        nodules=nodules,
        rescale_slope=profile.rescale_slope,
        distractors=distractors,
        noise_sd_hu=acq.noise_sd * shift.noise_scale,
        padding_value=profile.padding,
        first_instance=profile.first_instance,
        header=acq.header(),
        params=acq.params(),
    )


def slice_datasets(identity: StudyIdentity, case: CtCaseV2) -> Iterator[tuple[int, FileDataset]]:
    """The series' CT Image instances as ``(instance number, dataset)``, slice by slice."""
    for index in range(case.stored.shape[0]):
        instance = case.instance_number(index)
        ds = build_ct_slice_dataset(
            identity,
            case.stored[index],
            instance_number=instance,
            pixel_spacing_mm=case.pixel_spacing_mm,
            image_position=case.slice_position(index),
            slice_thickness_mm=case.slice_thickness_mm,
            spacing_between_slices_mm=case.slice_spacing_mm,
            rescale_intercept=case.rescale_intercept,
            bits_stored=case.bits_stored,
            ctdi_vol_mgy=case.ctdi_vol_mgy,
        )
        for keyword, value in case.header.items():
            setattr(ds, keyword, value)
        yield instance, ds


def datalist_fields(case: CtCaseV2) -> dict[str, Any]:
    """The per-entry datalist fields of a version-2 CT case (beside box, label, UIDs)."""
    return {
        "nodule_type": [n.nodule_type for n in case.nodules],
        "margin": [n.margin for n in case.nodules],
        "hu": [n.hu for n in case.nodules],
        "peak_hu": [n.peak_hu for n in case.nodules],
        "distractor_box": [
            [round(float(v), 4) for v in box] for box in case.distractor_boxes_world()
        ],
        "distractor_kind": [d.kind for d in case.distractors],
        "generator": case.params,
    }
