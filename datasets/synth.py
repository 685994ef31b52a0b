"""Synthetic screening data: DICOM studies plus a MONAI detection datalist.

``run_synth`` writes ``n`` studies of one kind under ``out``:

- ``cxr``: one DX For Presentation chest radiograph per study, ``out/cxr_0000/image.dcm``;
- ``ldct``: one low-dose chest CT series per study, one file per slice,
  ``out/ldct_0000/slice_0001.dcm`` ... (Instance Number 1 is the most superior slice);

and ``out/datalist.json`` in MONAI's detection datalist style::

    {"box_mode": "ccwh" | "cccwhd", "coordinates": "world_mm", "spatial_dims": 2 | 3,
     "kind": "cxr" | "ldct", "labels": {"0": "nodule"},
     "training": [...], "validation": [...], "test": [...]}

Each entry is ``{"image": <path relative to the datalist's folder>, "box": [[...], ...],
"label": [0, ...], "study_uid": ..., "series_uid": ..., ...}``. Boxes are world
coordinates: for CT, LPS millimetres (``cccwhd``: centre x, y, z, then width, height,
depth), i.e. what ``ImageVolume.index_to_world`` of the series read back gives; for
radiographs, detector-plane millimetres ``index * pixel spacing`` (``ccwh``), i.e.
``ImageVolume.box_index_to_world``. Everything is deterministic by ``seed``: the same
seed gives byte-identical files and the same UIDs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oncotriage.datasets.dicom_writer import (
    MANUFACTURER,
    SYNTHETIC_NOTICE,
    build_ct_slice_dataset,
    build_dx_dataset,
    make_identity,
    save_dataset,
)
from oncotriage.datasets.synth_cxr import CxrCase, render_cxr_case
from oncotriage.datasets.synth_cxr_v2 import NO_SHIFT, CxrCaseV2, CxrShift, render_cxr_case_v2
from oncotriage.datasets.synth_ldct import CtCase, render_ct_case
from oncotriage.datasets.synth_ldct_v2 import (
    CtCaseV2,
    datalist_fields,
    render_ldct_case_v2,
    slice_datasets,
)
from oncotriage.progress import progress_bar

logger = logging.getLogger(__name__)

KINDS = ("cxr", "ldct")
SPLITS = ("training", "validation", "test")
#: generator versions: 1 as it always was (old seeds reproduce); 2 adds 3D nodules, distractors
#: and acquisition variety (radiographs and CT)
GENERATOR_VERSIONS = (1, 2)
_KIND_CODE = {"cxr": 2, "ldct": 3}
_SPLIT_STREAM = 0x5B117


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def case_entropy(kind: str, seed: int, case_index: int) -> tuple[int, int, int]:
    """Integers seeding case ``case_index`` of a ``kind`` set made with ``seed``."""
    _check_kind(kind)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return (seed, _KIND_CODE[kind], case_index)


def _check_version(generator_version: int, shift: CxrShift = NO_SHIFT) -> None:
    if generator_version not in GENERATOR_VERSIONS:
        raise ValueError(f"generator version must be one of {GENERATOR_VERSIONS}")
    if not shift.is_identity and generator_version != 2:
        raise ValueError(
            "shifts (nodule contrast, noise scale, diameters) need --generator-version 2"
        )


def render_case(
    kind: str,
    seed: int,
    case_index: int,
    *,
    positive: bool,
    include_nodules: bool = True,
    generator_version: int = 1,
    shift: CxrShift = NO_SHIFT,
) -> CxrCase | CxrCaseV2 | CtCase | CtCaseV2:
    """Render (without writing) case ``case_index`` of a synthetic set.

    Args:
        kind: ``cxr`` or ``ldct``.
        seed: the set's seed.
        case_index: 0-based case number.
        positive: whether the case has nodules.
        include_nodules: ``False`` renders the identical case without its nodules.
        generator_version: 1 (default) or 2 (see :mod:`oncotriage.datasets.synth_cxr_v2` and
            :mod:`oncotriage.datasets.synth_ldct_v2`).
        shift: version 2 only: fainter or smaller nodules, more noise (default: none).
    """
    _check_version(generator_version, shift)
    entropy = case_entropy(kind, seed, case_index)
    if generator_version == 2 and kind == "ldct":
        return render_ldct_case_v2(
            entropy, positive=positive, include_nodules=include_nodules, shift=shift
        )
    if generator_version == 2:
        return render_cxr_case_v2(
            entropy, positive=positive, include_nodules=include_nodules, shift=shift
        )
    if kind == "cxr":
        return render_cxr_case(entropy, positive=positive, include_nodules=include_nodules)
    return render_ct_case(entropy, positive=positive, include_nodules=include_nodules)


def _clear_dicom(folder: Path) -> None:
    """Remove DICOM files a previous run left in a case folder we are about to rewrite."""
    if folder.is_dir():
        for stale in folder.glob("*.dcm"):
            stale.unlink()


def write_case(
    kind: str,
    seed: int,
    case_index: int,
    *,
    positive: bool,
    out: Path,
    include_nodules: bool = True,
    case_id: str | None = None,
    case: CxrCase | CxrCaseV2 | CtCase | CtCaseV2 | None = None,
    generator_version: int = 1,
    shift: CxrShift = NO_SHIFT,
) -> dict[str, Any]:
    """Render one case, write its DICOM under ``out`` and return its datalist entry.

    Args:
        kind: ``cxr`` or ``ldct``.
        seed: the set's seed.
        case_index: 0-based case number (selects identity, UIDs and content).
        positive: whether the case has nodules.
        out: the set's folder; the case goes to ``out/<case_id>``.
        include_nodules: ``False`` writes the same case without nodules (for tests).
        case_id: folder name; ``<kind>_<case_index:04d>`` by default.
        case: the already rendered case (from :func:`render_case` with the same
            arguments), to avoid rendering it twice.

    Returns:
        The datalist entry: ``image`` (relative to ``out``), ``box`` (world mm, ``ccwh``
        or ``cccwhd``), ``label``, UIDs and per-nodule descriptions.
    """
    case_id = case_id or f"{kind}_{case_index:04d}"
    case_dir = out / case_id
    _clear_dicom(case_dir)
    identity = make_identity(kind, seed, case_index)
    if case is None:
        case = render_case(
            kind,
            seed,
            case_index,
            positive=positive,
            include_nodules=include_nodules,
            generator_version=generator_version,
            shift=shift,
        )
    extra: dict[str, Any]
    if isinstance(case, CxrCaseV2):
        image_path = case_dir / "image.dcm"
        ds = build_dx_dataset(
            identity,
            case.pixels,
            pixel_spacing_mm=case.pixel_spacing_mm,
            bits_stored=case.bits_stored,
            window_center=case.window_center,
            window_width=case.window_width,
            include_pixel_spacing=case.include_pixel_spacing,
            detector_type=case.detector_type,
        )
        ds.PhotometricInterpretation = case.photometric
        ds.PresentationLUTShape = "INVERSE" if case.photometric == "MONOCHROME1" else "IDENTITY"
        ds.ManufacturerModelName = case.manufacturer_model
        ds.Manufacturer = f"{MANUFACTURER} ({case.params['vendor']})"
        ds.ViewPosition = case.view_position
        save_dataset(ds, image_path)
        image = f"{case_id}/image.dcm"
        extra = {
            "nodule_type": [n.nodule_type for n in case.nodules],
            "margin": [n.margin for n in case.nodules],
            "peak_density": [n.peak_density for n in case.nodules],
            "distractor_box": [
                [round(float(v), 4) for v in box] for box in case.distractor_boxes_world()
            ],
            "distractor_kind": [d.kind for d in case.distractors],
            "generator": case.params,
        }
    elif isinstance(case, CtCaseV2):
        for instance, ds in slice_datasets(identity, case):
            save_dataset(ds, case_dir / f"slice_{instance:04d}.dcm")
        image = case_id
        extra = datalist_fields(case)
    elif isinstance(case, CxrCase):
        image_path = case_dir / "image.dcm"
        ds = build_dx_dataset(
            identity,
            case.pixels,
            pixel_spacing_mm=case.pixel_spacing_mm,
            bits_stored=case.bits_stored,
            window_center=case.window_center,
            window_width=case.window_width,
            include_pixel_spacing=case.include_pixel_spacing,
            detector_type=case.detector_type,
        )
        save_dataset(ds, image_path)
        image = f"{case_id}/image.dcm"
        extra = {
            "shape": [n.shape for n in case.nodules],
            "contrast": [n.contrast for n in case.nodules],
        }
    else:
        slices = case.stored.shape[0]
        for index in range(slices):
            instance = slices - index  # instance 1 at the top, as scanners number them
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
            save_dataset(ds, case_dir / f"slice_{instance:04d}.dcm")
        image = case_id
        extra = {
            "nodule_type": [n.nodule_type for n in case.nodules],
            "hu": [n.hu for n in case.nodules],
        }
    boxes = case.boxes_world()
    return {
        "image": image,
        "box": [[round(float(v), 4) for v in box] for box in boxes],
        "label": [0] * len(boxes),
        "study_uid": identity.study_uid,
        "series_uid": identity.series_uid,
        "patient_id": identity.patient_id,
        "case_id": case_id,
        "diameter_mm": [n.diameter_mm for n in case.nodules],
        **extra,
    }


def assign_splits(positive: Sequence[bool], seed: int) -> list[str]:
    """Deterministic, stratified 70/15/15 split of cases into training/validation/test.

    Positives and negatives are each shuffled and interleaved by their rank, so every
    split holds both in about the set's proportion. With ``n >= 3`` cases every split
    gets at least one; with 2, one training and one validation; with 1, training only.

    Args:
        positive: per case, whether it has nodules.
        seed: the set's seed.

    Returns:
        Per case, ``training``, ``validation`` or ``test``.
    """
    n = len(positive)
    if n >= 3:
        n_val = n_test = max(1, round(0.15 * n))
    else:
        n_val, n_test = (1, 0) if n == 2 else (0, 0)
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    rank = np.zeros(n)
    for group in (True, False):
        members = np.flatnonzero(np.asarray(positive, bool) == group)
        rank[rng.permutation(members)] = (np.arange(members.size) + 0.5) / max(members.size, 1)
    order = sorted(range(n), key=lambda i: (rank[i], not positive[i], i))
    splits = ["training"] * n
    for i in order[:n_test]:
        splits[i] = "test"
    for i in order[n_test : n_test + n_val]:
        splits[i] = "validation"
    return splits


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def dump_datalist_json(datalist: dict[str, Any]) -> str:
    """JSON text of a datalist, indented, with each box and label list on one line."""
    text = json.dumps(datalist, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s*", ", ", m.group(1)) + "]", text) + "\n"


def run_synth(
    kind: str,
    n: int,
    seed: int,
    out: Path,
    negative_fraction: float = 0.3,
    generator_version: int = 1,
    shift: CxrShift = NO_SHIFT,
    only_splits: Sequence[str] | None = None,
) -> Path:
    """Write ``n`` synthetic studies of ``kind`` and their datalist under ``out``.

    Args:
        kind: ``cxr`` (DX chest radiographs) or ``ldct`` (low-dose chest CT series).
        n: number of studies (>= 1).
        seed: random seed (>= 0); the output is deterministic.
        out: output folder (created).
        negative_fraction: share of studies without nodules (rounded to whole studies).
        generator_version: 1 (default) or 2.
        shift: version 2 only: a distribution shift (see
            :class:`~oncotriage.datasets.synth_cxr_v2.CxrShift`); recorded in the datalist.
        only_splits: write only the cases of these splits (e.g. ``["test"]`` for the
            held-out split alone); the cases, their splits and UIDs are those of the full set.

    Returns:
        Path of ``out/datalist.json``.
    """
    _check_kind(kind)
    _check_version(generator_version, shift)
    if only_splits is not None and not set(only_splits) <= set(SPLITS):
        raise ValueError(f"splits must be among {', '.join(SPLITS)}, got {list(only_splits)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be within 0..1, got {negative_fraction}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _KIND_CODE[kind], _SPLIT_STREAM])
    negatives = set(rng.permutation(n)[: round(n * negative_fraction)].tolist())
    positive = [i not in negatives for i in range(n)]
    splits = assign_splits(positive, seed)
    datalist: dict[str, Any] = {
        "name": f"oncotriage synthetic {kind}",
        "description": f"{SYNTHETIC_NOTICE}; seed {seed}",
        "kind": kind,
        "seed": seed,
        "negative_fraction": negative_fraction,
        "spatial_dims": 2 if kind == "cxr" else 3,
        "box_mode": "ccwh" if kind == "cxr" else "cccwhd",
        "coordinates": "world_mm",
        "world_frame": "detector_plane_mm" if kind == "cxr" else "LPS",
        "labels": {"0": "nodule"},
        **{split: [] for split in SPLITS},
    }
    if generator_version != 1:
        # version 1 datalists stay byte-identical; version 2 says which generator made it
        datalist["generator_version"] = generator_version
        datalist["distractors"] = (
            "distractor_box/distractor_kind: benign look-alikes, not nodules (not in box)"
        )
    if not shift.is_identity:
        datalist["shift"] = shift.as_params()
    chosen = [i for i in range(n) if only_splits is None or splits[i] in only_splits]
    with progress_bar() as progress:
        task = progress.add_task(f"synth {kind}", total=len(chosen))
        for index in chosen:
            entry = write_case(
                kind,
                seed,
                index,
                positive=positive[index],
                out=out,
                generator_version=generator_version,
                shift=shift,
            )
            datalist[splits[index]].append(entry)
            progress.advance(task)
    path = out / "datalist.json"
    path.write_text(dump_datalist_json(datalist))
    logger.info(
        "wrote %d %s studies (%d without nodules) and %s",
        len(chosen),
        kind,
        sum(not positive[i] for i in chosen),
        path,
    )
    return path


def write_example_study(
    out: Path, kind: str = "cxr", seed: int = 2024, generator_version: int = 1
) -> Path:
    """Write one positive synthetic study, e.g. for a README demo.

    Args:
        out: folder to write into; the study goes to ``out/<kind>_example``.
        kind: ``cxr`` or ``ldct``.
        seed: seed of the study; the first case of that seed with a nodule is used.
        generator_version: 1 (default) or 2.

    Returns:
        The DICOM file (``cxr``) or the series folder (``ldct``). The nodules' boxes go to
        ``out/<kind>_example.truth.json`` (world millimetres, the datalist's box mode).
    """
    _check_kind(kind)
    out = Path(out)
    for index in range(16):
        case = render_case(kind, seed, index, positive=True, generator_version=generator_version)
        if case.nodules:
            entry = write_case(
                kind,
                seed,
                index,
                positive=True,
                out=out,
                case_id=f"{kind}_example",
                case=case,
                generator_version=generator_version,
            )
            logger.info("example %s study %s with boxes %s", kind, entry["image"], entry["box"])
            # What a model should find, beside (not inside) the study folder that is pushed.
            truth: dict[str, Any] = {key: entry[key] for key in ("box", "label") if key in entry}
            truth["box_mode"] = "cccwhd" if kind == "ldct" else "ccwh"
            truth["coordinates"] = "world_mm"
            (out / f"{kind}_example.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
            return out / entry["image"]
    raise RuntimeError(f"no case of seed {seed} got a nodule; try another seed")
