from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from oncotriage.datasets.datalist import convert_box_mode
from oncotriage.datasets.image import ImageVolume
from oncotriage.datasets.synth import (
    assign_splits,
    render_case,
    run_synth,
    write_case,
    write_example_study,
)

CXR_SEED = 11
# Seeds whose first CT case is small (128-144 px, ~50-57 slices), to keep the tests fast;
# seed 4 draws a part-solid nodule, seed 72 a part-solid and two ground-glass ones.
CT_SEED_POSITIVE = 4
CT_SEED_GROUND_GLASS = 72
CT_SEED_NEGATIVE = 6


def _read(path: Path) -> ImageVolume:
    from oncotriage.datasets.reader import read_image

    return read_image(path)


def _index_boxes(volume: ImageVolume, world_boxes: list[list[float]]) -> np.ndarray:
    """World boxes (ccwh / cccwhd) to index-space corner boxes through the read geometry."""
    dims = volume.spatial_dims
    mode = "ccwh" if dims == 2 else "cccwhd"
    corners = convert_box_mode(
        np.array(world_boxes, float).reshape(-1, 2 * dims), mode, "xyxy" if dims == 2 else "xyzxyz"
    )
    result = []
    for box in corners:
        lo, hi = np.zeros(3), np.zeros(3)
        lo[:dims], hi[:dims] = box[:dims], box[dims:]
        index = volume.world_to_index(np.stack([lo, hi]))
        result.append(np.concatenate([index.min(axis=0), index.max(axis=0)]))
    return np.array(result).reshape(-1, 2 * dims)


def _box_slices(box: np.ndarray, dims: int) -> tuple[slice, ...]:
    """Voxels whose centres lie inside an index-space corner box."""
    lo, hi = box[:dims], box[dims:]
    return tuple(
        slice(int(np.ceil(lo[d] - 1e-6)), int(np.floor(hi[d] + 1e-6)) + 1) for d in range(dims)
    )


def _check_boxes_cover_exactly_the_nodules(
    with_nodules: ImageVolume, without: ImageVolume, world_boxes: list[list[float]], min_peak: float
) -> np.ndarray:
    dims = with_nodules.spatial_dims
    assert with_nodules.array.shape == without.array.shape
    difference = with_nodules.array.astype(np.float64) - without.array
    boxes = _index_boxes(with_nodules, world_boxes)
    inside = np.zeros(difference.shape, bool)
    for box in boxes:
        region = _box_slices(box, dims)
        inside[region] = True
        nodule = np.abs(difference[region])
        assert nodule.max() >= min_peak
        # the box is tight: the changed voxels reach (within a voxel) every side of the box
        changed = np.argwhere(nodule > 0)
        size = np.array([s.stop - s.start for s in region])
        assert np.all(changed.min(axis=0) <= 1)
        assert np.all(changed.max(axis=0) >= size - 2)
    # nothing changed anywhere outside the boxes
    assert np.count_nonzero(difference[~inside]) == 0
    return boxes


@pytest.mark.parametrize("case_index", [0, 1, 2, 3, 4])
def test_cxr_world_boxes_read_back_cover_exactly_the_nodules(
    tmp_path: Path, case_index: int
) -> None:
    entry = write_case("cxr", CXR_SEED, case_index, positive=True, out=tmp_path / "with")
    plain = write_case(
        "cxr", CXR_SEED, case_index, positive=True, out=tmp_path / "without", include_nodules=False
    )
    assert entry["box"] and plain["box"] == []
    assert entry["label"] == [0] * len(entry["box"])
    image = _read(tmp_path / "with" / entry["image"])
    without = _read(tmp_path / "without" / plain["image"])
    assert image.modality == "DX" and image.study_uid == entry["study_uid"]
    boxes = _check_boxes_cover_exactly_the_nodules(image, without, entry["box"], min_peak=0.03)
    # world box size agrees with the nodule diameter (box of the drawn shape, >= 4 mm)
    sizes = np.array(entry["box"])[:, 2:]
    assert np.all(sizes.max(axis=1) <= np.array(entry["diameter_mm"]) + 2 * max(image.spacing))
    assert np.all(sizes.max(axis=1) >= 3.0)
    # the nodule is brighter than what surrounds its box in the image itself
    difference = image.array - without.array
    for box in boxes:
        region = _box_slices(box, 2)
        assert difference[region].mean() > 0.01


@pytest.mark.parametrize("seed", [CT_SEED_POSITIVE, CT_SEED_GROUND_GLASS])
def test_ct_world_boxes_read_back_cover_exactly_the_nodules(tmp_path: Path, seed: int) -> None:
    entry = write_case("ldct", seed, 0, positive=True, out=tmp_path / "with")
    plain = write_case(
        "ldct", seed, 0, positive=True, out=tmp_path / "without", include_nodules=False
    )
    if seed == CT_SEED_GROUND_GLASS:
        assert "ground-glass" in entry["nodule_type"]
    volume = _read(tmp_path / "with" / entry["image"])
    without = _read(tmp_path / "without" / plain["image"])
    assert volume.modality == "CT" and volume.series_uid == entry["series_uid"]
    boxes = _check_boxes_cover_exactly_the_nodules(volume, without, entry["box"], min_peak=100.0)
    for box, nodule_type in zip(boxes, entry["nodule_type"], strict=True):
        region = _box_slices(box, 3)
        centre = tuple(
            slice(s.start + (s.stop - s.start) // 3, s.stop - (s.stop - s.start) // 3)
            for s in region
        )
        ring = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in region)
        ring_mask = np.ones(volume.array[ring].shape, bool)
        ring_mask[
            tuple(
                slice(r.start - q.start, r.stop - q.start)
                for r, q in zip(region, ring, strict=True)
            )
        ] = False
        core_hu = volume.array[centre].mean()
        around_hu = np.median(volume.array[ring][ring_mask])
        # nodule core is denser than the lung around it; the lung around is near -850 HU
        assert core_hu - around_hu > (100 if nodule_type == "ground-glass" else 300)
        assert around_hu < -500
        # underneath the nodule there was lung
        assert np.median(without.array[region]) < -600


def test_negative_cases_have_no_boxes_and_no_nodules(tmp_path: Path) -> None:
    for kind, seed in (("cxr", CXR_SEED), ("ldct", CT_SEED_NEGATIVE)):
        entry = write_case(kind, seed, 0, positive=False, out=tmp_path / kind)
        assert entry["box"] == [] and entry["label"] == [] and entry["diameter_mm"] == []
        case = render_case(kind, seed, 0, positive=False)
        plain = render_case(kind, seed, 0, positive=True, include_nodules=False)
        assert case.nodules == ()
        stored = case.pixels if kind == "cxr" else case.stored  # type: ignore[union-attr]
        plain_stored = plain.pixels if kind == "cxr" else plain.stored  # type: ignore[union-attr]
        np.testing.assert_array_equal(stored, plain_stored)


def test_ct_series_geometry_and_hounsfield_units(tmp_path: Path) -> None:
    entry = write_case("ldct", CT_SEED_NEGATIVE, 0, positive=False, out=tmp_path)
    case = render_case("ldct", CT_SEED_NEGATIVE, 0, positive=False)
    volume = _read(tmp_path / entry["image"])
    slices = sorted((tmp_path / entry["image"]).glob("*.dcm"))
    assert len(slices) == case.stored.shape[0] == volume.array.shape[2]  # type: ignore[union-attr]
    datasets = [pydicom.dcmread(p) for p in slices]
    assert {ds.StudyInstanceUID for ds in datasets} == {entry["study_uid"]}
    assert {ds.SeriesInstanceUID for ds in datasets} == {entry["series_uid"]}
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    np.testing.assert_allclose(volume.spacing, case.spacing_xyz, atol=1e-6)  # type: ignore[union-attr]
    np.testing.assert_allclose(volume.origin, case.origin, atol=1e-6)  # type: ignore[union-attr]
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-9)
    assert 0.6 <= volume.spacing[0] <= 0.9 and 1.0 <= volume.spacing[2] <= 2.5
    hu = volume.array
    lung = np.mean((hu > -950) & (hu < -750))
    air = np.mean(hu < -950)
    soft = np.mean((hu > -150) & (hu < 100))
    bone = np.mean(hu > 200)
    assert lung > 0.08 and air > 0.1 and soft > 0.15 and 0.001 < bone < 0.1
    lung_values = hu[(hu > -950) & (hu < -750)]
    assert -880 < np.median(lung_values) < -820


def test_synthetic_identity_and_notices(tmp_path: Path) -> None:
    entry = write_case("cxr", CXR_SEED, 2, positive=True, out=tmp_path)
    ds = pydicom.dcmread(tmp_path / entry["image"])
    assert str(ds.PatientName) == "SYNTH^0003"
    assert ds.PatientID.startswith("SYNTH-")
    assert ds.BurnedInAnnotation == "NO"
    assert "SYNTHETIC - not for clinical use" in ds.SeriesDescription
    assert "SYNTHETIC - not for clinical use" in ds.ImageComments
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.BitsStored in (12, 16)
    assert int(ds.pixel_array.max()) < 2**ds.BitsStored
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert len(uid) <= 64 and uid.is_valid


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = run_synth("cxr", 3, 5, tmp_path / "a", 0.34)
    second = run_synth("cxr", 3, 5, tmp_path / "b", 0.34)
    other = run_synth("cxr", 3, 6, tmp_path / "c", 0.34)
    assert first.read_text() == second.read_text()
    files = sorted(p.relative_to(first.parent) for p in first.parent.rglob("*.dcm"))
    assert len(files) == 3
    for relative in files:
        assert (first.parent / relative).read_bytes() == (second.parent / relative).read_bytes()
        assert (first.parent / relative).read_bytes() != (other.parent / relative).read_bytes()
    uids = {
        e["study_uid"]
        for s in ("training", "validation", "test")
        for e in json.loads(first.read_text())[s]
    }
    other_uids = {
        e["study_uid"]
        for s in ("training", "validation", "test")
        for e in json.loads(other.read_text())[s]
    }
    assert len(uids) == 3 and not uids & other_uids


def test_ct_same_seed_gives_identical_pixels() -> None:
    first = render_case("ldct", CT_SEED_POSITIVE, 0, positive=True)
    second = render_case("ldct", CT_SEED_POSITIVE, 0, positive=True)
    np.testing.assert_array_equal(first.stored, second.stored)  # type: ignore[union-attr]
    assert first.nodules == second.nodules


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (1, 0, 0)),
        (2, (1, 1, 0)),
        (3, (1, 1, 1)),
        (10, (6, 2, 2)),
        (20, (14, 3, 3)),
        (40, (28, 6, 6)),
    ],
)
def test_splits_are_70_15_15_with_at_least_one_each(n: int, expected: tuple[int, int, int]) -> None:
    positive = [i % 3 != 0 for i in range(n)]
    splits = assign_splits(positive, seed=3)
    counts = tuple(splits.count(s) for s in ("training", "validation", "test"))
    assert counts == expected
    assert splits == assign_splits(positive, seed=3)
    if n >= 20:  # stratified: held-out splits see positives and negatives
        for split in ("validation", "test"):
            members = [positive[i] for i in range(n) if splits[i] == split]
            assert any(members) and not all(members)


def test_run_synth_datalist(tmp_path: Path) -> None:
    path = run_synth("cxr", 12, 2, tmp_path, negative_fraction=0.25)
    assert path == tmp_path / "datalist.json"
    datalist = json.loads(path.read_text())
    assert datalist["box_mode"] == "ccwh" and datalist["spatial_dims"] == 2
    assert datalist["coordinates"] == "world_mm" and datalist["kind"] == "cxr"
    entries = [e for s in ("training", "validation", "test") for e in datalist[s]]
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [8, 2, 2]
    assert sum(1 for e in entries if not e["box"]) == 3
    assert sorted(e["case_id"] for e in entries) == [f"cxr_{i:04d}" for i in range(12)]
    for entry in entries:
        assert (tmp_path / entry["image"]).is_file()
        assert len(entry["label"]) == len(entry["box"]) == len(entry["diameter_mm"]) <= 3
        assert all(4.0 <= d <= 30.0 for d in entry["diameter_mm"])
        assert all(len(b) == 4 and b[2] > 0 and b[3] > 0 for b in entry["box"])


def test_rerun_into_the_same_folder_replaces_stale_slices(tmp_path: Path) -> None:
    case_dir = tmp_path / "ldct_0000"
    case_dir.mkdir()
    (case_dir / "slice_0999.dcm").write_bytes(b"stale")
    write_case("ldct", CT_SEED_NEGATIVE, 0, positive=False, out=tmp_path)
    assert not (case_dir / "slice_0999.dcm").exists()


def test_example_study_is_positive_and_readable(tmp_path: Path) -> None:
    path = write_example_study(tmp_path, kind="cxr", seed=2024)
    assert path == tmp_path / "cxr_example" / "image.dcm"
    volume = _read(path)
    assert volume.modality == "DX" and 384 <= volume.array.shape[0] <= 640


def test_example_study_from_generator_version_2_is_that_case(tmp_path: Path) -> None:
    path = write_example_study(tmp_path, kind="cxr", seed=2024, generator_version=2)
    volume = _read(path)
    case = next(
        c
        for c in (
            render_case("cxr", 2024, i, positive=True, generator_version=2) for i in range(16)
        )
        if c.nodules
    )
    ds = pydicom.dcmread(path)
    assert volume.modality == "DX" and (ds.Rows, ds.Columns) == case.pixels.shape
    truth = json.loads((tmp_path / "cxr_example.truth.json").read_text())
    assert len(truth["box"]) == len(case.nodules) and truth["box_mode"] == "ccwh"
    # not version 1's radiograph of the same seed
    old = _read(write_example_study(tmp_path / "v1", kind="cxr", seed=2024))
    assert old.array.shape != volume.array.shape or not np.array_equal(old.array, volume.array)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "mri"}, "kind must be one of"),
        ({"n": 0}, "n must be at least 1"),
        ({"negative_fraction": 1.5}, "negative_fraction"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_run_synth_refuses_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"kind": "cxr", "n": 1, "seed": 0, "out": tmp_path, "negative_fraction": 0.0}
    with pytest.raises(ValueError, match=message):
        run_synth(**{**arguments, **kwargs})


def test_cli_synth_writes_datalist(tmp_path: Path) -> None:
    from oncotriage.cli import app

    result = CliRunner().invoke(
        app,
        ["datasets", "synth", "--kind", "cxr", "--n", "2", "--seed", "1", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert f"datalist: {tmp_path / 'datalist.json'}" in result.output
    assert len(list(tmp_path.glob("cxr_*/image.dcm"))) == 2
