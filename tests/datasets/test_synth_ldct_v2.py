"""Generator version 2 for CT: 3D nodules visible and boxed, benign distractors outside the
boxes, kernels with their noise, vendors' headers, files that pass the IOD check and
``datasets inspect`` and read back as the datalist says; version 1 unchanged."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from oncotriage.datasets import synth_ldct_v2
from oncotriage.datasets.synth import render_case, run_synth
from oncotriage.datasets.synth_cxr_v2 import NO_SHIFT, CxrShift
from oncotriage.datasets.synth_ldct_acquisition import (
    KERNEL_CLASSES,
    VENDOR_PROFILES,
    draw_acquisition,
    noise_sd_hu,
    scanner_noise,
)
from oncotriage.datasets.synth_ldct_objects import NODULE_MARGINS
from oncotriage.datasets.synth_ldct_v2 import (
    DISTRACTOR_KINDS,
    NODULE_TYPES,
    VISIBILITY_FLOOR,
    CtCaseV2,
)

# Seed 4's first eight cases are small (40-79 slices of 128-176 pixels) and hold all four
# nodule types, all three margins, all three distractor kinds, all vendors and kernel classes.
SEED = 4
CASES = range(8)


@functools.cache
def _render(index: int, include_nodules: bool = True, shift: CxrShift = NO_SHIFT) -> CtCaseV2:
    case = render_case(
        "ldct",
        SEED,
        index,
        positive=True,
        include_nodules=include_nodules,
        generator_version=2,
        shift=shift,
    )
    assert isinstance(case, CtCaseV2)
    return case


def _inside(box: tuple[float, ...], shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """``(z, y, x)`` slices of the voxels whose centres lie inside an ``xyzxyz`` index box."""
    x0, y0, z0, x1, y1, z1 = (int(np.ceil(v)) for v in box)
    return slice(max(z0, 0), z1), slice(max(y0, 0), y1), slice(max(x0, 0), x1)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(a[d] < b[d + 3] and b[d] < a[d + 3] for d in range(3))


@pytest.mark.parametrize("index", CASES)
def test_every_nodule_is_visible_inside_its_box_and_distractors_are_outside(index: int) -> None:
    case, bare = _render(index), _render(index, include_nodules=False)
    assert case.nodules, "a positive case has at least one nodule"
    assert bare.nodules == () and bare.distractors == case.distractors
    added = case.hu.astype(np.float64) - bare.hu
    in_boxes = np.zeros(added.shape, bool)
    for nodule in case.nodules:
        region = _inside(nodule.box_index, added.shape)
        in_boxes[region] = True
        peak = added[region].max()
        # visible: what it adds peaks at 4 noise SDs or more (1 HU: rounding to stored values)
        assert peak >= VISIBILITY_FLOOR * case.noise_sd_hu - 1.0, (nodule, case.noise_sd_hu)
        assert peak == pytest.approx(nodule.peak_hu, abs=1.0)
        # the nodule lies inside its box, and the box is tight: it touches every side
        changed = np.argwhere(added[region] != 0)
        assert changed.min(axis=0).tolist() == [0, 0, 0]
        assert changed.max(axis=0).tolist() == [s.stop - s.start - 1 for s in region]
        # it sits in the lung: what it replaced is mostly lung
        assert np.median(bare.hu[region]) < -500
        assert 4.0 <= nodule.diameter_mm <= 30.0
        assert nodule.nodule_type in NODULE_TYPES and nodule.margin in NODULE_MARGINS
    assert np.count_nonzero(added[~in_boxes]) == 0, "nodules change nothing outside their boxes"
    for distractor in case.distractors:
        assert distractor.kind in DISTRACTOR_KINDS
        assert not any(_overlap(distractor.box_index, n.box_index) for n in case.nodules)
        # something dense (a vessel or a calcification) is in its box
        assert bare.hu[_inside(distractor.box_index, added.shape)].max() > -300, distractor


def test_nodule_types_have_their_attenuation() -> None:
    """Peak added HU by type: ground glass is faint, calcified the densest (over the lung)."""
    peaks: dict[str, list[float]] = {}
    for index in CASES:
        for nodule in _render(index).nodules:
            peaks.setdefault(nodule.nodule_type, []).append(nodule.peak_hu)
            if nodule.nodule_type == "ground-glass":
                assert -600 <= nodule.hu <= -300 or nodule.peak_hu == pytest.approx(
                    VISIBILITY_FLOOR * _render(index).noise_sd_hu, abs=0.1
                )
    assert set(peaks) == set(NODULE_TYPES)
    assert max(peaks["ground-glass"]) < 600
    assert min(peaks["solid"]) > 700
    assert min(peaks["part-solid"]) > 500  # a small solid core, blurred
    assert min(peaks["calcified"]) > 1000


def test_cases_cover_types_margins_distractors_and_acquisitions() -> None:
    cases = [_render(i) for i in CASES]
    assert {n.nodule_type for c in cases for n in c.nodules} == set(NODULE_TYPES)
    assert {n.margin for c in cases for n in c.nodules} == set(NODULE_MARGINS)
    assert {d.kind for c in cases for d in c.distractors} == set(DISTRACTOR_KINDS)
    assert {c.params["vendor"] for c in cases} == set(VENDOR_PROFILES)
    assert {c.params["kernel_class"] for c in cases} == set(KERNEL_CLASSES)
    assert len({c.slice_thickness_mm for c in cases}) >= 3
    assert any(c.slice_spacing_mm < c.slice_thickness_mm for c in cases)  # overlapping slices
    # acquisitions over many draws: every thickness, and spacing/dose within their ranges
    draws = [draw_acquisition(np.random.default_rng(i)) for i in range(200)]
    assert {a.thickness for a in draws} == {1.0, 1.25, 2.0, 2.5}
    assert {a.kernel_class for a in draws} == set(KERNEL_CLASSES)
    assert all(0.55 <= a.pixel_spacing <= 0.95 and 0.6 <= a.ctdi <= 3.0 for a in draws)
    assert all(40 <= a.slices <= 104 and 128 <= a.size <= 192 for a in draws)


@pytest.mark.parametrize(
    ("kernel_class", "ctdi", "thickness", "kvp", "expected"),
    [
        ("soft", 1.5, 1.25, 120, 16.0),
        ("standard", 1.5, 1.25, 120, 24.0),
        ("sharp", 1.5, 1.25, 120, 42.0),
        ("sharp", 0.375, 1.25, 120, 84.0),  # a quarter of the dose: twice the noise
        ("soft", 1.5, 2.5, 120, 16.0 / np.sqrt(2)),  # twice the thickness
        ("standard", 1.5, 1.25, 100, 24.0 * np.sqrt(1.2)),
    ],
)
def test_noise_sd_follows_dose_thickness_kvp_and_kernel(
    kernel_class: str, ctdi: float, thickness: float, kvp: int, expected: float
) -> None:
    assert noise_sd_hu(kernel_class, ctdi, thickness, kvp) == pytest.approx(expected, rel=1e-9)


def test_sharper_kernel_has_finer_grained_noise_of_the_drawn_sd() -> None:
    acq = dataclasses.replace(
        draw_acquisition(np.random.default_rng(0)), size=128, slices=8, pixel_spacing=0.7
    )
    high: dict[str, float] = {}
    for kernel_class in ("soft", "standard", "sharp"):
        noise = scanner_noise(
            np.random.default_rng(1), dataclasses.replace(acq, kernel_class=kernel_class)
        )
        assert noise.std() == pytest.approx(acq.noise_sd, rel=1e-3)
        power = np.abs(np.fft.rfft2(noise)) ** 2
        f = np.hypot(
            np.fft.fftfreq(128, 0.7)[:, None], np.fft.rfftfreq(128, 0.7)[None, :]
        )  # cycles/mm
        high[kernel_class] = float(power[:, f > 0.3].sum() / power.sum())
    # measured: soft 0.27, standard 0.54, sharp 0.82 of the power above 0.3 cycles/mm
    assert high["soft"] < 0.35 < high["standard"] < 0.65 < high["sharp"], high


def test_a_faint_nodule_is_made_denser_up_to_the_visibility_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a floor no nodule reaches by itself, every nodule is raised exactly to it."""
    normal = _render(1)  # two ground-glass nodules and a calcified one
    monkeypatch.setattr(synth_ldct_v2, "VISIBILITY_FLOOR", 60.0)
    raised = render_case("ldct", SEED, 1, positive=True, generator_version=2)
    assert isinstance(raised, CtCaseV2)
    floor = 60.0 * raised.noise_sd_hu
    assert len(raised.nodules) == len(normal.nodules)
    for before, after in zip(normal.nodules, raised.nodules, strict=True):
        assert after.center_index == before.center_index  # the same nodule, denser
        if before.peak_hu < floor:
            assert after.peak_hu == pytest.approx(floor, abs=0.1)
            assert after.hu > before.hu
        else:
            assert after == before


def _check_series(folder: Path, case: CtCaseV2) -> None:
    """The IOD check on a few slices, the vendor's header, and the HU read back."""
    from iod_check import check_iod_file

    from oncotriage.datasets.reader import read_image

    params = case.params
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == case.stored.shape[0]
    for file in files[:: max(1, len(files) // 4)]:
        assert check_iod_file(file) == [], file
    ds = pydicom.dcmread(files[0])
    profile = VENDOR_PROFILES[params["vendor"]]
    assert ds.Manufacturer.endswith(f"({params['vendor']})")
    assert ds.ManufacturerModelName == profile.model
    assert ds.ConvolutionKernel == params["kernel"] and ds.ConvolutionKernel in profile.kernels
    assert float(ds.RescaleSlope) == profile.rescale_slope
    assert ds.BitsStored == profile.bits_stored and ds.PixelRepresentation == profile.signed
    assert ds.get("PixelPaddingValue") == profile.padding
    assert float(ds.SliceThickness) == params["slice_thickness_mm"]
    assert int(ds.KVP) == params["kvp"] and float(ds.CTDIvol) == params["ctdi_vol_mgy"]
    z_of_instance = {
        int(h.InstanceNumber): float(h.ImagePositionPatient[2])
        for h in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)
    }
    ends = (max if profile.first_instance == "superior" else min)(z_of_instance.values())
    assert z_of_instance[1] == ends
    volume = read_image(folder)
    np.testing.assert_array_equal(volume.array, case.hu.transpose(2, 1, 0))


def test_written_set_passes_the_iod_check_inspect_and_reads_back_as_rendered(
    tmp_path: Path,
) -> None:
    from oncotriage.datasets.datalist import boxes_to_index, load_datalist, load_entry_image
    from oncotriage.datasets.inspect import run_inspect
    from oncotriage.datasets.synth import write_case

    path = run_synth("ldct", 3, SEED, tmp_path, negative_fraction=0.34, generator_version=2)
    data = json.loads(path.read_text())
    assert data["generator_version"] == 2 and data["box_mode"] == "cccwhd"
    assert data["spatial_dims"] == 3 and data["kind"] == "ldct"
    entries = [
        entry
        for split in ("training", "validation", "test")
        for entry in load_datalist(path, split, box_mode="xyzxyz")
    ]
    assert len(entries) == 3 and sum(1 for e in entries if len(e.boxes) == 0) == 1
    for entry in entries:
        meta = entry.meta
        params = meta["generator"]
        assert params["generator_version"] == 2
        assert {"vendor", "kernel", "kernel_class", "kvp", "ctdi_vol_mgy", "noise_sd_hu"} <= set(
            params
        )
        assert {"slice_thickness_mm", "slice_spacing_mm", "pixel_spacing_mm"} <= set(params)
        n = len(entry.boxes)
        assert len(meta["nodule_type"]) == len(meta["margin"]) == len(meta["diameter_mm"]) == n
        assert len(meta["distractor_box"]) == len(meta["distractor_kind"])
        index = int(meta["case_id"].split("_")[1])
        case = render_case("ldct", SEED, index, positive=n > 0, generator_version=2)
        assert isinstance(case, CtCaseV2) and params == case.params
        _check_series(entry.image, case)
        # read back as training reads it: the rendered boxes
        volume = load_entry_image(entry)
        np.testing.assert_allclose(
            boxes_to_index(entry, volume),
            np.array([nodule.box_index for nodule in case.nodules]).reshape(-1, 6),
            atol=1e-3,
        )
    # the other two vendors: rescale slope 0.5 (c); signed with padding outside the FOV (d)
    for index, vendor in ((4, "vendor-c"), (7, "vendor-d")):
        write_case("ldct", SEED, index, positive=True, out=tmp_path, generator_version=2)
        assert _render(index).params["vendor"] == vendor
        _check_series(tmp_path / f"ldct_{index:04d}", _render(index))
    assert run_inspect([tmp_path]) == 0


def test_version_1_ct_is_unchanged() -> None:
    """sha256 of version 1's stored voxels, recorded before version 2 existed."""
    expected = {
        (4, True): "96802edfc2ff0fcaaabd2c8287bcaf77a367f7f5a3b0d7846f98c14a05096e57",
        (6, False): "3d716a0622338721e6d529a252b64a8c35ff731075550f3dfc5bac6f67d70b01",
    }
    for (seed, positive), digest in expected.items():
        case = render_case("ldct", seed, 0, positive=positive)
        assert not isinstance(case, CtCaseV2)
        assert hashlib.sha256(case.stored.tobytes()).hexdigest() == digest  # type: ignore[union-attr]


def test_cli_writes_version_2_ct_and_its_shifts(tmp_path: Path) -> None:
    from oncotriage.cli import app

    base = ["datasets", "synth", "--kind", "ldct", "--n", "1", "--generator-version", "2"]
    result = CliRunner().invoke(app, [*base, "--seed", str(SEED), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "datalist.json").read_text())
    assert data["generator_version"] == 2 and "shift" not in data
    assert data["training"][0]["generator"]["vendor"] in VENDOR_PROFILES
    assert len(list((tmp_path / "ldct_0000").glob("slice_*.dcm"))) >= 40
    harder = tmp_path / "harder"
    options = ["--seed", str(SEED), "--nodule-contrast", "0.6", "--out", str(harder)]
    shifted = CliRunner().invoke(app, [*base, *options])
    assert shifted.exit_code == 0, shifted.output
    shift = json.loads((harder / "datalist.json").read_text())["shift"]
    assert shift == {"nodule_contrast": 0.6, "noise_scale": 1.0, "diameter_mm": [4.0, 30.0]}
    version_1 = ["datasets", "synth", "--kind", "ldct", "--n", "1", "--noise-scale", "1.5"]
    refused = CliRunner().invoke(app, [*version_1, "--out", str(tmp_path / "v1")])
    assert refused.exit_code == 2 and "--generator-version 2" in refused.output


def test_a_shift_changes_only_the_nodules_or_the_noise() -> None:
    """The harder CT sets a retrained 3D model needs: the same patients, acquisitions,
    look-alikes and noise pattern; nodule contrast over the lung x 0.6 (after the visibility
    floor), noise x 1.5, or 4-8 mm nodules."""
    index = 1
    plain, plain_empty = _render(index), _render(index, include_nodules=False)
    assert plain.nodules
    fainter = _render(index, True, CxrShift(nodule_contrast=0.6))
    # the same series without its nodules, voxel for voxel; the nodules at the same places
    fainter_empty = _render(index, False, CxrShift(nodule_contrast=0.6))
    assert np.array_equal(fainter_empty.stored, plain_empty.stored)
    assert [n.box_index for n in fainter.nodules] == [n.box_index for n in plain.nodules]
    assert [n.nodule_type for n in fainter.nodules] == [n.nodule_type for n in plain.nodules]
    for old, new in zip(plain.nodules, fainter.nodules, strict=True):
        assert new.peak_hu == pytest.approx(0.6 * old.peak_hu, rel=0.01, abs=0.2)
    slope = plain.rescale_slope
    added_plain = (plain.stored.astype(float) - plain_empty.stored) * slope
    added_fainter = (fainter.stored.astype(float) - plain_empty.stored) * slope
    inside = _inside(plain.nodules[0].box_index, plain.stored.shape)
    assert added_fainter[inside].sum() == pytest.approx(0.6 * added_plain[inside].sum(), rel=0.02)

    noisier = _render(index, False, CxrShift(noise_scale=1.5))
    assert noisier.noise_sd_hu == pytest.approx(1.5 * plain.noise_sd_hu)
    extra = (noisier.stored.astype(float) - plain_empty.stored) * slope
    body = plain_empty.stored != plain_empty.stored.min()  # not the padding around the body
    # what the shift adds is 0.5 x the drawn noise: its SD about half the series' noise SD
    assert 0.35 * plain.noise_sd_hu < extra[body].std() < 0.65 * plain.noise_sd_hu

    small = [_render(i, True, CxrShift(diameter_mm=(4.0, 8.0))) for i in CASES]
    diameters = [n.diameter_mm for case in small for n in case.nodules]
    assert diameters and all(4.0 <= d <= 8.0 for d in diameters), diameters
    assert [c.noise_sd_hu for c in small] == [_render(i).noise_sd_hu for i in CASES]
