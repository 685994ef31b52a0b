"""Detector YAML configs: the bundle's values, overrides, validation (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_fixtures import CONFIGS

from oncotriage.models.config import apply_overrides, load_config

ALL_CONFIGS = sorted(CONFIGS.glob("detector_*.yaml"))


def test_every_config_loads() -> None:
    names = {p.stem for p in ALL_CONFIGS}
    assert {
        "detector_ct3d",
        "detector_ct3d_light",
        "detector_cxr2d",
        "detector_cxr2d_light",
    } <= names
    for path in ALL_CONFIGS:
        cfg = load_config(path)
        assert cfg.num_levels == len(cfg.feature_map_scales) == 3
        assert len(cfg.output_names()) == 2 * cfg.num_levels


def test_ct3d_is_the_monai_lung_nodule_bundle() -> None:
    cfg = load_config(CONFIGS / "detector_ct3d.yaml")
    assert cfg.spatial_dims == 3 and cfg.in_channels == 1 and cfg.num_classes == 1
    assert (cfg.backbone.depth, cfg.backbone.conv1_t_size, cfg.backbone.conv1_t_stride) == (
        50,
        [7, 7, 7],
        [2, 2, 1],
    )
    assert cfg.returned_layers == [1, 2] and cfg.fpn_channels == 256
    assert cfg.base_anchor_shapes == [[6, 8, 4], [8, 6, 5], [10, 10, 6]]
    assert cfg.feature_map_scales == [1, 2, 4]
    assert cfg.size_divisible == [16, 16, 8]
    pre = cfg.preprocessing
    assert pre.target_spacing == [0.703125, 0.703125, 1.25] and pre.orientation == "RAS"
    assert (pre.intensity.a_min, pre.intensity.a_max, pre.intensity.b_min, pre.intensity.b_max) == (
        -1024.0,
        300.0,
        0.0,
        1.0,
    )
    assert pre.intensity.clip
    pp = cfg.postprocess
    assert (pp.score_thresh, pp.topk_candidates_per_level, pp.nms_thresh) == (0.02, 1000, 0.22)
    assert pp.detections_per_img == 300
    window = cfg.inference.sliding_window
    assert window is not None
    assert (window.roi_size, window.overlap, window.sw_batch_size, window.mode) == (
        [512, 512, 192],
        0.25,
        1,
        "constant",
    )
    assert cfg.training["patch_size"] == [192, 192, 80]


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("postprocess.score_thresh=0.1", ("postprocess", "score_thresh"), 0.1),
        ("backbone.depth=18", ("backbone", "depth"), 18),
        (
            "inference.sliding_window.roi_size=[128, 128, 64]",
            ("inference", "sliding_window", "roi_size"),
            [128, 128, 64],
        ),
        ("training.epochs=3", ("training", "epochs"), 3),
        ("training.new.nested=yes", ("training", "new", "nested"), True),
        ("name=my-model", ("name",), "my-model"),
    ],
)
def test_overrides_are_applied(override: str, path: tuple[str, ...], expected: object) -> None:
    cfg = load_config(CONFIGS / "detector_ct3d.yaml", [override])
    value: object = cfg.model_dump()
    for part in path:
        assert isinstance(value, dict)
        value = value[part]
    assert value == expected


def test_apply_overrides_does_not_touch_the_input() -> None:
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2", "a.c=[1, 2]"]) == {"a": {"b": 2, "c": [1, 2]}}
    assert data == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["no_equals_sign"], "key.sub=value"),
        (["name.sub=1"], "not a mapping"),
        (["backbone.depth=20"], "depth"),
        (["backbone.conv1_t_stride=[2, 2]"], "one per spatial axis"),
        (["feature_map_scales=[1, 2]"], "feature_map_scales needs 3"),
        (["preprocessing.size_divisible=[8, 8, 8]"], "multiple of [16, 16, 8]"),
        (["inference.sliding_window.roi_size=[500, 512, 192]"], "divisible"),
        (["fpn_channels=20"], "multiple of 8"),
        (["preprocessing.orientation=RAP"], "orientation"),
        (["postprocess.nms_thresh=1.5"], "nms_thresh"),
        (["unknown_key=1"], "unknown_key"),
    ],
)
def test_invalid_configs_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        load_config(CONFIGS / "detector_ct3d.yaml", overrides)
    assert message in str(info.value)


def test_2d_needs_an_input_size(tmp_path: Path) -> None:
    text = (CONFIGS / "detector_tiny_2d.yaml").read_text().replace("  input_size: [64, 64]\n", "")
    path = tmp_path / "no_size.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="input_size"):
        load_config(path)


def test_missing_config_file_says_where_to_look(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="configs/detector_"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("name", "dynamic"),
    [("detector_ct3d", True), ("detector_cxr2d", False), ("detector_tiny_3d", True)],
)
def test_dynamic_spatial_default(name: str, dynamic: bool) -> None:
    assert load_config(CONFIGS / f"{name}.yaml").dynamic_spatial is dynamic
