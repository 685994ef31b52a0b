"""A model's training fingerprint: the statistics of the images it was trained on.

The service compares every image it scores with the fingerprint of the model that scored
it (:mod:`oncotriage.serving.monitoring.drift`): a hospital whose images suddenly come
darker, at another pixel spacing or at another size is an input the model has not seen,
and its scores stop meaning what the validation said they mean.

Per image (:func:`image_stats`), on the intensities *as the model sees them* (the model's
own intensity normalisation, :func:`oncotriage.models.preprocess.scale_intensity`, so a
percentile-normalised model is not alarmed by a brightness change it never sees):

- ``intensity_mean``: mean normalised intensity, 0..1;
- ``histogram``: :data:`HISTOGRAM_BINS` bins over 0..1, summing to 1;
- ``spacing_mm``: in-plane pixel spacing (mean of the two in-plane axes);
- ``pixels``: in-plane pixel count (rows x columns).

The fingerprint (:class:`InputFingerprint`) holds their mean and spread over the training
images, and the pooled histogram with the spread of each image's distance from it.
Numpy only: the serving path computes the same statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from oncotriage.models.preprocess import scale_intensity

if TYPE_CHECKING:
    from oncotriage.datasets.image import ImageVolume
    from oncotriage.models.config import IntensityConfig

__all__ = [
    "HISTOGRAM_BINS",
    "ImageStats",
    "InputFingerprint",
    "add_fingerprint",
    "fingerprint_from_datalist",
    "fingerprint_from_images",
    "histogram_distance",
    "image_stats",
]

#: Bins of the intensity histogram over the normalised range 0..1.
HISTOGRAM_BINS = 16
#: At most this many voxels are looked at per image (a regular subsample beyond it).
_MAX_VOXELS = 1 << 18


@dataclass(frozen=True)
class ImageStats:
    """The input statistics of one image (see the module docstring)."""

    intensity_mean: float
    histogram: tuple[float, ...]
    spacing_mm: float
    pixels: int


def _subsample(array: np.ndarray) -> np.ndarray:
    if array.size <= _MAX_VOXELS:
        return array
    step = int(math.ceil((array.size / _MAX_VOXELS) ** (1 / array.ndim)))
    return array[tuple(slice(None, None, step) for _ in range(array.ndim))]


def image_stats(image: ImageVolume, intensity: IntensityConfig) -> ImageStats:
    """The statistics of ``image`` as a model with intensity normalisation ``intensity``
    sees it (``array`` ``(X, Y)`` or ``(X, Y, Z)``; spacing in mm along the array axes)."""
    values = scale_intensity(_subsample(image.array), intensity)
    span = float(intensity.b_max - intensity.b_min) or 1.0
    unit = np.clip((values - np.float32(intensity.b_min)) / np.float32(span), 0.0, 1.0)
    counts, _ = np.histogram(unit, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    total = max(1, int(counts.sum()))
    return ImageStats(
        intensity_mean=float(unit.mean()) if unit.size else 0.0,
        histogram=tuple(float(c) / total for c in counts),
        spacing_mm=float(np.mean(image.spacing[:2])),
        pixels=int(image.array.shape[0] * image.array.shape[1]),
    )


def histogram_distance(a: Iterable[float], b: Iterable[float]) -> float:
    """Total variation distance between two histograms (half the L1 distance), 0..1."""
    return 0.5 * float(np.abs(np.asarray(list(a)) - np.asarray(list(b))).sum())


class InputFingerprint(BaseModel):
    """What the training images looked like, to compare live images with.

    Attributes:
        images: how many images it was computed from.
        intensity_mean, intensity_sd: mean and standard deviation over the images of
            their mean normalised intensity (0..1).
        histogram: pooled intensity histogram (:data:`HISTOGRAM_BINS` bins, sums to 1).
        histogram_distance_mean, histogram_distance_sd: of each image's histogram from
            the pooled one (:func:`histogram_distance`).
        spacing_mm_mean, spacing_mm_sd: in-plane pixel spacing (mm).
        log_pixels_mean, log_pixels_sd: natural log of the in-plane pixel count.
    """

    model_config = ConfigDict(extra="forbid")

    images: int = Field(ge=1)
    intensity_mean: float
    intensity_sd: float = Field(ge=0)
    histogram: list[float]
    histogram_distance_mean: float = Field(ge=0)
    histogram_distance_sd: float = Field(ge=0)
    spacing_mm_mean: float = Field(gt=0)
    spacing_mm_sd: float = Field(ge=0)
    log_pixels_mean: float
    log_pixels_sd: float = Field(ge=0)


def fingerprint_from_stats(stats: list[ImageStats]) -> InputFingerprint:
    """The fingerprint of images given their :func:`image_stats`."""
    if not stats:
        raise ValueError("a fingerprint needs at least one image")
    pooled = np.mean([s.histogram for s in stats], axis=0)
    distances = [histogram_distance(s.histogram, pooled) for s in stats]
    means = [s.intensity_mean for s in stats]
    spacings = [s.spacing_mm for s in stats]
    log_pixels = [math.log(max(1, s.pixels)) for s in stats]
    return InputFingerprint(
        images=len(stats),
        intensity_mean=float(np.mean(means)),
        intensity_sd=float(np.std(means)),
        histogram=[round(float(v), 6) for v in pooled],
        histogram_distance_mean=float(np.mean(distances)),
        histogram_distance_sd=float(np.std(distances)),
        spacing_mm_mean=float(np.mean(spacings)),
        spacing_mm_sd=float(np.std(spacings)),
        log_pixels_mean=float(np.mean(log_pixels)),
        log_pixels_sd=float(np.std(log_pixels)),
    )


def fingerprint_from_images(
    images: Iterable[ImageVolume], intensity: IntensityConfig
) -> InputFingerprint:
    """The fingerprint of ``images`` (e.g. a model's training datalist, read)."""
    return fingerprint_from_stats([image_stats(image, intensity) for image in images])


def fingerprint_from_datalist(
    datalist: Path | str,
    intensity: IntensityConfig,
    *,
    split: str = "training",
    limit: int = 200,
) -> InputFingerprint:
    """The fingerprint of the first ``limit`` images of a datalist split (read as the
    service reads them)."""
    from oncotriage.datasets.datalist import load_datalist, load_entry_image

    entries = load_datalist(datalist, split)[:limit]
    if not entries:
        raise ValueError(f"the {split!r} split of {datalist} has no images")
    return fingerprint_from_images((load_entry_image(entry) for entry in entries), intensity)


def add_fingerprint(
    bundle_dir: Path, datalist: Path | str, *, split: str = "training", limit: int = 200
) -> InputFingerprint:
    """Compute the fingerprint of a bundle's training images and store it in its spec."""
    from oncotriage.models.spec import ModelSpec

    spec = ModelSpec.load(bundle_dir)
    fingerprint = fingerprint_from_datalist(
        datalist, spec.preprocessing.intensity, split=split, limit=limit
    )
    spec.model_copy(update={"input_fingerprint": fingerprint}).save(bundle_dir)
    return fingerprint
