"""Input statistics and the training fingerprint (models/fingerprint.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.config import IntensityConfig
from oncotriage.models.fingerprint import (
    HISTOGRAM_BINS,
    fingerprint_from_images,
    histogram_distance,
    image_stats,
)
from oncotriage.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


def test_image_stats_see_intensities_as_the_model_does() -> None:
    # CT in HU through the CT model's window: -1024 -> 0, 300 -> 1
    ct = IntensityConfig(a_min=-1024.0, a_max=300.0)
    array = np.full((10, 20, 4), -1024.0, dtype=np.float32)
    array[:5] = 300.0  # half air, half at the window's top
    stats = image_stats(ImageVolume(array=array, spacing=(0.7, 0.7, 1.25), modality="CT"), ct)
    assert stats.intensity_mean == pytest.approx(0.5)
    assert stats.histogram[0] == pytest.approx(0.5) and stats.histogram[-1] == pytest.approx(0.5)
    assert len(stats.histogram) == HISTOGRAM_BINS
    assert (stats.spacing_mm, stats.pixels) == (pytest.approx(0.7), 200)
    # a percentile-normalised model does not see a global darkening at all
    percentile = IntensityConfig(mode="percentile", lower=0.0, upper=100.0)
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    bright = image_stats(ImageVolume(array=ramp, spacing=(0.5, 0.5)), percentile)
    dark = image_stats(ImageVolume(array=ramp * 0.5, spacing=(0.5, 0.5)), percentile)
    assert dark.intensity_mean == pytest.approx(bright.intensity_mean, abs=1e-6)


def test_fingerprint_and_distance() -> None:
    unit = IntensityConfig(a_min=0.0, a_max=1.0)
    images = [
        ImageVolume(array=np.full((8, 8), level, dtype=np.float32), spacing=(s, s))
        for level, s in ((0.25, 0.5), (0.75, 0.7))
    ]
    fp = fingerprint_from_images(images, unit)
    assert fp.images == 2
    assert (fp.intensity_mean, fp.intensity_sd) == (pytest.approx(0.5), pytest.approx(0.25))
    assert (fp.spacing_mm_mean, fp.spacing_mm_sd) == (pytest.approx(0.6), pytest.approx(0.1))
    assert fp.log_pixels_mean == pytest.approx(math.log(64))
    assert sum(fp.histogram) == pytest.approx(1.0)
    # each image is half of the pooled histogram away from it
    assert fp.histogram_distance_mean == pytest.approx(0.5)
    assert histogram_distance([1, 0], [0, 1]) == 1.0
    with pytest.raises(ValueError, match="at least one image"):
        fingerprint_from_images([], unit)


def test_the_demo_model_carries_its_training_fingerprint() -> None:
    spec = ModelSpec.load(REPO / "models" / "demo")
    fp = spec.input_fingerprint
    assert fp is not None and fp.images >= 40
    assert 0.2 < fp.intensity_mean < 0.8 and fp.intensity_sd > 0
