"""Training data: configs with ``extends``, dataset fingerprints, box-aware augmentation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from oncotriage.training.config import AugmentationConfig, load_training_config, training_config
from oncotriage.training.data import dataset_fingerprint, is_synthetic

ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_extends_the_light_detector() -> None:
    cfg = load_training_config(ROOT / "configs" / "train_cxr2d_demo.yaml")
    light = load_training_config(ROOT / "configs" / "detector_cxr2d_light.yaml")
    assert cfg.name == "oncotriage-cxr2d"
    assert cfg.backbone == light.backbone and cfg.fpn_channels == light.fpn_channels
    assert cfg.preprocessing.input_size == [384, 384]
    assert cfg.preprocessing.intensity == light.preprocessing.intensity
    assert "synthetic" in cfg.description
    train = training_config(cfg)
    assert train.patch_size == [96, 96] and train.epochs == 20
    # keys of the base training section that the demo does not repeat are kept
    assert train.detector.hard_negative_positive_fraction == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epoch=3", "epoch"),
        ("training.patch_size=[100,100]", "divisible"),
        ("training.pos=0", None),
    ],
)
def test_bad_training_sections_fail_before_training(override: str, message: str | None) -> None:
    path = ROOT / "configs" / "detector_tiny_2d.yaml"
    if message is None:  # pos=0 alone is fine (negatives only)
        assert training_config(load_training_config(path, [override])).pos == 0
        return
    with pytest.raises(ValueError, match=message):
        load_training_config(path, [override])


def test_extends_cycle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="extends itself"):
        load_training_config(tmp_path / "a.yaml")


def _tiny_datalist(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in (("a.dcm", b"first"), ("b.dcm", b"second")):
        (folder / name).write_bytes(payload)
    datalist = {
        "description": "SYNTHETIC - not for clinical use",
        "training": [{"image": "a.dcm", "box": [], "label": []}],
        "test": [{"image": "b.dcm", "box": [], "label": []}],
    }
    path = folder / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


def test_dataset_fingerprint_follows_contents_not_location(tmp_path: Path) -> None:
    first = _tiny_datalist(tmp_path / "one")
    fingerprint = dataset_fingerprint(first)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64
    copy = tmp_path / "two"
    shutil.copytree(first.parent, copy)
    assert dataset_fingerprint(copy / "datalist.json") == fingerprint
    (copy / "b.dcm").write_bytes(b"changed")
    assert dataset_fingerprint(copy / "datalist.json") != fingerprint
    assert dataset_fingerprint(copy / "datalist.json", ["training"]) == dataset_fingerprint(
        first, ["training"]
    )
    assert is_synthetic(first)
    (copy / "b.dcm").unlink()
    with pytest.raises(FileNotFoundError, match="b.dcm"):
        dataset_fingerprint(copy / "datalist.json")


@pytest.mark.torch
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_augmentation_keeps_boxes_on_their_lesions(seed: int) -> None:
    """Crops, flips and rotations move the box exactly with the bright square it marks."""
    pytest.importorskip("monai")
    from oncotriage.models.preprocess import IndexMapping
    from oncotriage.training.data import DetectionSample
    from oncotriage.training.transforms import AugmentedDetectionDataset, build_train_transform

    image = np.zeros((1, 64, 48), dtype=np.float32)
    image[0, 10:16, 30:39] = 1.0  # voxels x 10..15, y 30..38
    box = np.array([[9.5, 29.5, 15.5, 38.5]], dtype=np.float32)  # edges, centre convention
    mapping = IndexMapping((64, 48), (0, 1), (False, False), (1.0, 1.0), (64, 48), (64, 48))
    sample = DetectionSample(image, box, np.array([0]), "s", "x", mapping)
    no_intensity = AugmentationConfig(
        flip_prob=0.5,
        rotate90_prob=0.75,
        zoom_prob=0.0,
        gaussian_noise_prob=0.0,
        gaussian_smooth_prob=0.0,
        scale_intensity_prob=0.0,
        shift_intensity_prob=0.0,
        adjust_contrast_prob=0.0,
    )
    transform = build_train_transform(2, [32, 32], no_intensity, samples_per_image=3, pos=1, neg=0)
    dataset = AugmentedDetectionDataset([sample], transform, seed=seed)
    for crop in dataset[0]:
        pixels = np.argwhere(crop["image"][0].numpy() > 0.5)
        assert crop["image"].shape == (1, 32, 32)
        assert crop["box"].shape == (1, 4)
        expected = np.concatenate([pixels.min(0) - 0.5, pixels.max(0) + 0.5])
        np.testing.assert_allclose(crop["box"][0].numpy(), expected, atol=1e-4)
        assert crop["label"].tolist() == [0]
