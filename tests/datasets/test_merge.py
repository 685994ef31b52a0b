"""``oncotriage datasets merge``: one datalist from several; mismatches and leaks refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from oncotriage.cli import app
from oncotriage.datasets.datalist import load_datalist
from oncotriage.datasets.merge import merge_datalists, shift_label
from oncotriage.datasets.synth import run_synth
from oncotriage.datasets.synth_cxr_v2 import CxrShift
from oncotriage.training.subgroups import _study_value

SPLITS = ("training", "validation", "test")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small version-2 radiograph sets: seed 5 as generated, seed 6 fainter and smaller."""
    root = tmp_path_factory.mktemp("merge")
    plain = run_synth("cxr", 8, 5, root / "plain", generator_version=2)
    shifted = run_synth(
        "cxr",
        8,
        6,
        root / "nested" / "shifted",
        generator_version=2,
        shift=CxrShift(nodule_contrast=0.6, diameter_mm=(4.0, 8.0)),
    )
    return plain, shifted


def test_merged_datalist_loads_the_same_images_boxes_and_splits(
    sources: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, shifted = sources
    out = tmp_path / "mix" / "datalist.json"
    merged = merge_datalists([plain, shifted], out)
    written = json.loads(out.read_text())
    assert written == merged
    for split in SPLITS:
        originals = load_datalist(plain, split) + load_datalist(shifted, split)
        loaded = load_datalist(out, split)
        assert [e.image for e in loaded] == [e.image for e in originals]
        assert all(e.image.exists() for e in loaded)
        for got, want in zip(loaded, originals, strict=True):
            np.testing.assert_array_equal(got.boxes, want.boxes)
            np.testing.assert_array_equal(got.labels, want.labels)
    assert sum(len(merged[s]) for s in SPLITS) == 16
    # sources are recorded relative to the merged datalist
    assert [(out.parent / s).resolve() for s in merged["sources"]] == [
        plain.resolve(),
        shifted.resolve(),
    ]
    plain_ref, shifted_ref = merged["sources"]
    entries = [e for s in SPLITS for e in merged[s]]
    assert [e["source"] for e in entries].count(plain_ref) == 8
    assert [e["source"] for e in entries].count(shifted_ref) == 8
    assert all("shift" not in e for e in entries if e["source"] == plain_ref)
    shifted_entries = [e for e in entries if "shift" in e]
    assert len(shifted_entries) == 8
    assert shifted_entries[0]["shift"] == {
        "nodule_contrast": 0.6,
        "noise_scale": 1.0,
        "diameter_mm": [4.0, 8.0],
    }
    assert merged["spatial_dims"] == 2 and merged["box_mode"] == "ccwh"
    assert "shift none" in merged["description"]
    assert "shift contrast x0.6, 4-8 mm" in merged["description"]
    assert "SYNTHETIC" in merged["description"]  # train records it as synthetic data
    # evaluate --by shift reads the entry's shift
    assert _study_value("shift", shifted_entries[0]) == "contrast x0.6, 4-8 mm"
    assert _study_value("shift", entries[0]) == "none"


def test_shift_label_names_only_what_changed() -> None:
    assert shift_label(None) == "none"
    assert shift_label(CxrShift().as_params()) == "none"
    assert shift_label(CxrShift(noise_scale=1.5).as_params()) == "noise x1.5"
    assert (
        shift_label(CxrShift(nodule_contrast=0.6, diameter_mm=(4.0, 12.0)).as_params())
        == "contrast x0.6, 4-12 mm"
    )


def test_datalists_that_describe_boxes_differently_are_refused(
    sources: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, _ = sources
    other = json.loads(plain.read_text())
    other["box_mode"] = "xyxy"
    for split in SPLITS:  # other studies, so only the box mode differs
        for entry in other[split]:
            entry["study_uid"] += ".9"
            entry["image"] = str((plain.parent / entry["image"]).resolve()) + ".copy"
    copy = tmp_path / "xyxy.json"
    copy.write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"box_mode 'xyxy' but .* has 'ccwh'"):
        merge_datalists([plain, copy], tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_the_same_study_twice_is_refused(sources: tuple[Path, Path], tmp_path: Path) -> None:
    plain, _ = sources
    with pytest.raises(ValueError, match="is already in"):
        merge_datalists([plain, plain], tmp_path / "out.json")
    # a copy of the set elsewhere: other image paths, the same study UIDs
    copy = tmp_path / "copy"
    shutil.copytree(plain.parent, copy)
    with pytest.raises(ValueError, match="training and test at once"):
        merge_datalists([plain, copy / "datalist.json"], tmp_path / "out.json")


def test_merge_command(sources: tuple[Path, Path], tmp_path: Path) -> None:
    plain, shifted = sources
    out = tmp_path / "datalist.json"
    result = CliRunner().invoke(
        app, ["datasets", "merge", str(plain), str(shifted), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    merged = json.loads(out.read_text())
    counts = ", ".join(f"{len(merged[s])} {s}" for s in SPLITS)
    assert f"({counts})" in result.output
    assert sum(len(merged[s]) for s in SPLITS) == 16

    refused = CliRunner().invoke(app, ["datasets", "merge", str(plain), "--out", str(out)])
    assert refused.exit_code == 2
    assert "at least two datalists" in refused.output
    missing = CliRunner().invoke(
        app, ["datasets", "merge", str(plain), str(tmp_path / "nope.json"), "--out", str(out)]
    )
    assert missing.exit_code == 2
    assert "not a readable datalist" in missing.output
