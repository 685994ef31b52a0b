"""Generator version 2: 3D nodules visible and boxed, benign distractors outside the boxes,
acquisition variety recorded, files that pass the IOD check and ``datasets inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncotriage.datasets.synth import render_case, run_synth
from oncotriage.datasets.synth_cxr_v2 import DISTRACTOR_KINDS, NODULE_TYPES, CxrCaseV2

SEED = 5
CASES = range(8)


def _render(index: int, include_nodules: bool = True) -> CxrCaseV2:
    case = render_case(
        "cxr", SEED, index, positive=True, include_nodules=include_nodules, generator_version=2
    )
    assert isinstance(case, CxrCaseV2)
    return case


def _inside(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """Pixels (row, column) whose centres lie inside an ``xyxy`` (x = column) index box."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (cols > box[0]) & (cols < box[2]) & (rows > box[1]) & (rows < box[3])


@pytest.mark.parametrize("index", CASES)
def test_every_nodule_is_visible_inside_its_box_and_distractors_are_outside(index: int) -> None:
    case = _render(index)
    bare = _render(index, include_nodules=False)
    assert case.nodules, "a positive case has at least one nodule"
    assert bare.distractors == case.distractors  # same case, same look-alikes
    added = case.density - bare.density
    in_boxes = np.zeros(added.shape, bool)
    for nodule in case.nodules:
        box_mask = _inside(nodule.box_index, added.shape)
        in_boxes |= box_mask
        # visible: the nodule's own added attenuation stands well above the quantum noise
        assert added[box_mask].max() > 3 * case.noise_sigma, (nodule, case.noise_sigma)
        # and the box is tight: the footprint touches every side of it
        rows, cols = np.nonzero(box_mask & (np.abs(added) > 1e-6))
        x0, y0, x1, y1 = nodule.box_index
        assert cols.min() - 0.5 == x0 and cols.max() + 0.5 == x1
        assert rows.min() - 0.5 == y0 and rows.max() + 0.5 == y1
        assert 4.0 <= nodule.diameter_mm <= 30.0 and nodule.nodule_type in NODULE_TYPES
    assert np.all(added[~in_boxes] == 0), "nodules change nothing outside their boxes"
    for distractor in case.distractors:
        assert distractor.kind in DISTRACTOR_KINDS
        for nodule in case.nodules:
            a, b = distractor.box_index, nodule.box_index
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_cases_cover_types_distractors_and_acquisitions() -> None:
    cases = [_render(i) for i in range(24)]
    types = {n.nodule_type for c in cases for n in c.nodules}
    kinds = {d.kind for c in cases for d in c.distractors}
    assert types == set(NODULE_TYPES)
    assert len(kinds) >= 4
    assert {c.photometric for c in cases} == {"MONOCHROME1", "MONOCHROME2"}
    assert len({c.bits_stored for c in cases}) >= 3
    assert {c.view_position for c in cases} == {"AP", "PA"}
    assert any(c.params["portable"] for c in cases)
    assert len({c.params["vendor"] for c in cases}) >= 3


def test_written_set_passes_the_iod_check_and_inspect(tmp_path: Path) -> None:
    from iod_check import check_iod_file

    from oncotriage.datasets.inspect import run_inspect
    from oncotriage.datasets.reader import read_image

    datalist = run_synth("cxr", 6, SEED, tmp_path, generator_version=2)
    data = json.loads(datalist.read_text())
    assert data["generator_version"] == 2
    entries = [e for split in ("training", "validation", "test") for e in data[split]]
    assert len(entries) == 6
    for entry in entries:
        path = tmp_path / entry["image"]
        assert check_iod_file(path) == [], path
        params = entry["generator"]
        assert params["generator_version"] == 2
        assert {"vendor", "photometric", "bits_stored", "dose", "view", "rotation_deg"} <= set(
            params
        )
        assert len(entry["distractor_box"]) == len(entry["distractor_kind"])
        assert len(entry["box"]) == len(entry["nodule_type"]) == len(entry["label"])
        image = read_image(path)
        # presentation values: lungs darker than the mediastinum whatever the photometric
        array = image.array
        centre = array[array.shape[0] // 2 - 5 : array.shape[0] // 2 + 5, :].mean()
        lateral = array[array.shape[0] // 4, array.shape[1] // 3]
        assert lateral < centre + 0.2
    assert run_inspect([tmp_path]) == 0


def test_version_1_is_unchanged_and_has_no_shifts(tmp_path: Path) -> None:
    from oncotriage.datasets.synth_cxr_v2 import CxrShift

    v1 = render_case("cxr", SEED, 0, positive=True)
    assert not isinstance(v1, CxrCaseV2)
    again = render_case("cxr", SEED, 0, positive=True, generator_version=1)
    assert np.array_equal(v1.pixels, again.pixels)
    # shifts are version 2's (CT too: tests/datasets/test_synth_ldct_v2.py)
    with pytest.raises(ValueError, match="need --generator-version 2"):
        run_synth("cxr", 1, 0, tmp_path, generator_version=1, shift=CxrShift(noise_scale=1.5))
    with pytest.raises(ValueError, match="generator version"):
        render_case("cxr", 0, 0, positive=True, generator_version=3)
