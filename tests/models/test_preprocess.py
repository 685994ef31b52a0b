"""Preprocessing (reorientation, resampling, intensity, resize/pad) and the inverse box mapping."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume, UnsupportedImageError
from oncotriage.models.config import IntensityConfig, PreprocessingConfig
from oncotriage.models.preprocess import (
    IndexMapping,
    orientation_transform,
    pad_to_divisible,
    preprocess_image,
    resample_linear,
    scale_intensity,
)

CT_INTENSITY = IntensityConfig(a_min=-1024, a_max=300, b_min=0, b_max=1, clip=True)


def _rotation(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.mark.parametrize(
    ("direction", "codes", "perm", "flips"),
    [
        (np.eye(3), "LPS", [0, 1, 2], [False, False, False]),
        (np.eye(3), "RAS", [0, 1, 2], [True, True, False]),
        (np.diag([1.0, 1.0, -1.0]), "RAS", [0, 1, 2], [True, True, True]),  # feet-first slices
        # sagittal acquisition: array axes point to P, S, L
        (np.array([[0, 0, 1.0], [1, 0, 0], [0, 1, 0]]), "LPS", [2, 0, 1], [False, False, False]),
        (_rotation(20), "LPS", [0, 1, 2], [False, False, False]),  # slightly oblique
        (_rotation(80), "LPS", [1, 0, 2], [True, False, False]),
    ],
)
def test_orientation_transform(direction, codes, perm, flips) -> None:
    assert orientation_transform(direction, codes) == (perm, flips)


@pytest.mark.parametrize(
    "mapping",
    [
        IndexMapping(
            (40, 30, 20),
            (0, 1, 2),
            (False, False, False),
            (1.5, 2.0, 0.5),
            (27, 15, 40),
            (32, 16, 40),
        ),
        IndexMapping(
            (40, 30, 20),
            (2, 0, 1),
            (True, False, True),
            (0.8, 1.0, 3.0),
            (25, 40, 10),
            (32, 48, 16),
        ),
        IndexMapping((300, 200), (0, 1), (False, False), (4.6875, 4.6875), (64, 43), (64, 64)),
    ],
)
def test_box_mapping_round_trip(mapping: IndexMapping) -> None:
    dims = mapping.spatial_dims
    rng = np.random.default_rng(dims)
    lo = rng.uniform(0, 10, size=(20, dims))
    boxes = np.concatenate([lo, lo + rng.uniform(1, 8, size=(20, dims))], axis=1)
    network = mapping.source_to_network_boxes(boxes)
    assert np.all(network[:, dims:] > network[:, :dims])  # flips keep boxes min/max ordered
    np.testing.assert_allclose(mapping.network_to_source_boxes(network), boxes, atol=1e-9)


def test_resample_linear_reproduces_a_linear_ramp() -> None:
    i, j, k = np.meshgrid(np.arange(20), np.arange(16), np.arange(10), indexing="ij")
    ramp = (3 * i + 2 * j - k).astype(np.float32)
    factors = (1.5, 0.5, 2.0)
    out = resample_linear(ramp, factors, (13, 30, 5))
    p, q, r = np.meshgrid(
        np.arange(13) * 1.5, np.arange(30) * 0.5, np.arange(5) * 2.0, indexing="ij"
    )
    np.testing.assert_allclose(out, 3 * p + 2 * q - r, atol=1e-4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(-2000.0, 0.0), (-1024.0, 0.0), (-362.0, 0.5), (300.0, 1.0), (3000.0, 1.0)],
)
def test_ct_intensity_window(value: float, expected: float) -> None:
    assert scale_intensity(np.array([value]), CT_INTENSITY)[0] == pytest.approx(expected, abs=1e-6)


def test_percentile_intensity() -> None:
    cfg = IntensityConfig(mode="percentile", lower=0, upper=100, b_min=0, b_max=1, clip=True)
    out = scale_intensity(np.array([2.0, 4.0, 6.0]), cfg)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_pad_to_divisible_pads_at_the_end() -> None:
    x = np.ones((1, 1, 10, 17), dtype=np.float32)
    padded = pad_to_divisible(x, (16, 8))
    assert padded.shape == (1, 1, 16, 24)
    assert padded[..., :10, :17].min() == 1 and padded.sum() == 170


def test_ct_volume_is_reoriented_resampled_and_normalised() -> None:
    # LPS-ordered volume with one bright voxel; RAS flips x and y.
    hu = np.full((40, 30, 12), -1024.0, dtype=np.float32)
    hu[11, 5, 6] = 300.0
    image = ImageVolume(array=hu, spacing=(0.7, 0.7, 2.5))
    cfg = PreprocessingConfig(
        orientation="RAS", target_spacing=[1.4, 1.4, 1.25], intensity=CT_INTENSITY, antialias=False
    )
    pre = preprocess_image(image, cfg)
    assert pre.array.shape == (1, 20, 15, 24)
    assert pre.mapping.content_shape == (20, 15, 24) and pre.mapping.flips == (True, True, False)
    assert 0.0 <= pre.array.min() and pre.array.max() <= 1.0
    # x: 39 - 11 = 28 -> 28 / 2; y: 29 - 5 = 24 -> 24 / 2; z: 6 -> 6 / 0.5.
    (target,) = pre.mapping.source_to_network_points(np.array([[11, 5, 6]]))
    np.testing.assert_allclose(target, [14.0, 12.0, 12.0])
    assert pre.array[0, 14, 12, 12] == pytest.approx(1.0, abs=1e-6)
    # z is upsampled 2x: the neighbours lie halfway to the next source slice.
    assert pre.array[0, 14, 12, 11] == pytest.approx(0.5, abs=1e-6)
    assert pre.array[0, 14, 12, 13] == pytest.approx(0.5, abs=1e-6)
    assert np.count_nonzero(pre.array) == 3


def test_radiograph_is_fitted_keeping_its_aspect_ratio() -> None:
    xray = np.random.default_rng(0).random((300, 200), dtype=np.float32)  # 150 x 100 mm
    image = ImageVolume(array=xray, spacing=(0.5, 0.5), modality="DX")
    cfg = PreprocessingConfig(
        input_size=[64, 64], intensity=IntensityConfig(a_min=0, a_max=1, b_min=0, b_max=1)
    )
    pre = preprocess_image(image, cfg, in_channels=2)
    assert pre.array.shape == (2, 64, 64)
    assert pre.mapping.content_shape == (64, 43)
    np.testing.assert_allclose(pre.mapping.factors, (300 / 64, 300 / 64))
    assert np.all(pre.array[:, :, 43:] == 0.0)  # padding after the content
    assert pre.array[:, :, :43].std() > 0.01
    # a box around the whole content maps back onto the whole image
    back = pre.mapping.network_to_source_boxes(np.array([[0, 0, 63, 42]]))
    np.testing.assert_allclose(back, [[0, 0, 295.3, 196.9]], atol=0.1)


def test_dimension_mismatch_is_an_unsupported_image() -> None:
    cfg = PreprocessingConfig(input_size=[64, 64])
    volume = ImageVolume(array=np.zeros((4, 4, 4), np.float32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(UnsupportedImageError, match="2D"):
        preprocess_image(volume, cfg)
