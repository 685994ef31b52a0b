from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from oncotriage.datasets.datalist import (
    BOX_MODE_DIMS,
    boxes_to_index,
    convert_box_mode,
    load_datalist,
    load_entry_image,
)
from oncotriage.datasets.synth import run_synth

# one 2D and one 3D box written in every mode
BOX_2D = {"xyxy": [1, 2, 5, 10], "ccwh": [3, 6, 4, 8], "xywh": [1, 2, 4, 8]}
BOX_3D = {
    "xyzxyz": [-10, 0, 4, -4, 6, 12],
    "cccwhd": [-7, 3, 8, 6, 6, 8],
    "xyzwhd": [-10, 0, 4, 6, 6, 8],
}


@pytest.mark.parametrize(
    ("src", "dst"),
    list(permutations(BOX_2D, 2)) + list(permutations(BOX_3D, 2)),
)
def test_convert_box_mode(src: str, dst: str) -> None:
    table = BOX_2D if src in BOX_2D else BOX_3D
    boxes = np.array([table[src], np.array(table[src]) * 2])
    expected = np.array([table[dst], np.array(table[dst]) * 2], float)
    np.testing.assert_allclose(convert_box_mode(boxes, src, dst), expected, atol=1e-12)
    np.testing.assert_allclose(convert_box_mode(convert_box_mode(boxes, src, dst), dst, src), boxes)


@pytest.mark.parametrize(
    ("boxes", "src", "dst", "message"),
    [
        ([[0, 0, 1, 1]], "xyxy", "cccwhd", "cannot convert 2D"),
        ([[0, 0, 1, 1]], "xyzxyz", "cccwhd", r"shape \(N, 6\)"),
        ([[0, 0, 1, 1]], "yxyx", "xyxy", "unknown box mode"),
    ],
)
def test_convert_box_mode_refuses(boxes: list, src: str, dst: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        convert_box_mode(np.array(boxes), src, dst)


def test_convert_empty_and_single_boxes() -> None:
    assert convert_box_mode(np.zeros((0, 6)), "cccwhd", "xyzxyz").shape == (0, 6)
    np.testing.assert_allclose(convert_box_mode([3, 6, 4, 8], "ccwh", "xyxy"), [[1, 2, 5, 10]])
    assert set(BOX_MODE_DIMS) == {"xyxy", "ccwh", "xywh", "xyzxyz", "cccwhd", "xyzwhd"}


def _luna_style_volume(
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    array = np.full(shape, -850.0, np.float32)
    lo, hi = (4, 6, 3), (9, 10, 7)  # inclusive voxel index ranges of a bright block
    array[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 40.0
    return array, lo, hi


@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_luna16_style_datalist_round_trip(tmp_path: Path, suffix: str) -> None:
    array, lo, hi = _luna_style_volume((16, 18, 12))
    spacing, origin = np.array([0.7, 0.8, 1.25]), np.array([-150.0, -120.0, -300.0])
    images = tmp_path / "images"
    images.mkdir()
    path = images / f"subset0_case{suffix}"
    if suffix == ".nii.gz":
        # how LUNA16 conversions store it: RAS affine with the x and y axes flipped
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
        affine[:3, 3] = [-origin[0], -origin[1], origin[2]]
        nib.save(nib.Nifti1Image(array, affine), str(path))
    else:
        image = sitk.GetImageFromArray(array.transpose())
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        sitk.WriteImage(image, str(path))
    # world box (LPS mm, cccwhd) of the block's voxel extent, as in LUNA16 annotations
    world_lo = origin + (np.array(lo) - 0.5) * spacing
    world_hi = origin + (np.array(hi) + 0.5) * spacing
    box = np.concatenate([(world_lo + world_hi) / 2, world_hi - world_lo])
    datalist_path = tmp_path / "datalist.json"
    datalist_path.write_text(
        json.dumps(
            {  # no box_mode/coordinates keys: MONAI's LUNA16 datalists omit them
                "training": [
                    {"image": f"images/{path.name}", "box": [box.tolist()], "label": [0]},
                    {"image": f"images/{path.name}", "box": [], "label": []},
                ],
                "validation": [],
            }
        )
    )
    entries = load_datalist(datalist_path, "training", box_mode="xyzxyz")
    assert len(entries) == 2
    entry = entries[0]
    assert entry.image == path.resolve() and entry.spatial_dims == 3
    assert entry.box_mode == "xyzxyz" and entry.coordinates == "world_mm"
    np.testing.assert_allclose(entry.boxes, [np.concatenate([world_lo, world_hi])], atol=1e-9)
    np.testing.assert_array_equal(entry.labels, [0])
    assert entries[1].boxes.shape == (0, 6) and entries[1].labels.shape == (0,)

    volume = load_entry_image(entry)
    np.testing.assert_allclose(volume.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(volume.origin, origin, atol=1e-5)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-9)
    index_box = boxes_to_index(entry, volume)
    np.testing.assert_allclose(
        index_box, [[*(np.array(lo) - 0.5), *(np.array(hi) + 0.5)]], atol=1e-5
    )
    inside = volume.array[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    assert np.all(inside == 40.0)
    assert np.count_nonzero(volume.array == 40.0) == inside.size


def test_loads_synthetic_datalist_with_dicom_images(tmp_path: Path) -> None:
    path = run_synth("cxr", 4, 3, tmp_path, negative_fraction=0.25)
    raw = json.loads(path.read_text())
    training = load_datalist(path, "training")
    assert len(training) == len(raw["training"]) == 2
    for entry, raw_entry in zip(training, raw["training"], strict=True):
        assert entry.box_mode == "ccwh" and entry.spatial_dims == 2
        assert entry.image == (tmp_path / raw_entry["image"]).resolve()
        np.testing.assert_allclose(entry.boxes, np.array(raw_entry["box"]).reshape(-1, 4))
        assert entry.meta["study_uid"] == raw_entry["study_uid"]
        assert entry.meta["split"] == "training"
        volume = load_entry_image(entry)
        index = boxes_to_index(entry, volume)
        # detector-plane mm = index * spacing
        xyxy = convert_box_mode(entry.boxes, "ccwh", "xyxy")
        np.testing.assert_allclose(index * volume.spacing[0], xyxy, atol=1e-6)


@pytest.mark.parametrize(
    ("datalist", "message"),
    [
        ({"validation": []}, "has no split 'training'; it has: validation"),
        ({"training": [{"box": [], "label": []}]}, r"training\[0\]: an entry needs an 'image'"),
        ({"training": [{"image": "a.nii", "box": [[1, 2, 3]], "label": [0]}]}, "list of 6 numbers"),
        (
            {"training": [{"image": "a.nii", "box": [[0, 0, 0, 1, 1, 1]], "label": []}]},
            "1 boxes but 0 labels",
        ),
        (
            {"training": [{"image": "a.nii", "box": [[0, 0, 0, -1, 1, 1]], "label": [0]}]},
            "negative size",
        ),
        ({"training": [], "box_mode": "xyxy", "spatial_dims": 3}, "does not describe 3D"),
        ({"training": [], "coordinates": "voxel"}, "coordinates must be one of"),
    ],
)
def test_malformed_datalists_are_refused(tmp_path: Path, datalist: dict, message: str) -> None:
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))
    with pytest.raises(ValueError, match=message):
        load_datalist(path, "training")


def test_missing_datalist_and_wrong_dimension_image(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_datalist(tmp_path / "nope.json", "training")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / "v.nii"))
    path = tmp_path / "datalist.json"
    path.write_text(
        json.dumps({"training": [{"image": "v.nii", "box": [[1, 1, 2, 2]], "label": [0]}]})
    )
    (entry,) = load_datalist(path, "training")
    assert entry.spatial_dims == 2 and entry.box_mode == "ccwh"
    with pytest.raises(ValueError, match="is 3D but its datalist boxes are 2D"):
        load_entry_image(entry)
