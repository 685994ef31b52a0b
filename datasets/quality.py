"""The input-quality gate: images no model can read go to a person, never to "routine".

A 1x1 or 4x4 image, an all-zero image, or one that is blank in its display window used to
be scored 0.0 and triaged routine. :func:`image_quality_problem` runs before the network on
every series and names what is wrong; the study then ends ``needs_manual_review`` with
reason ``image_quality: ...`` (a permanent failure: retrying cannot mend the image).

Thresholds (documented in docs/api.md, tested on generated bad images):

- **too small**: an in-plane side under :data:`MIN_SIDE_PX` pixels;
- **invalid values**: NaN or infinite pixels after decoding;
- **constant**: every pixel has one value;
- **blank or saturated after windowing**: under :data:`MIN_INFORMATIVE_FRACTION` of the
  network input's voxels lie strictly inside its intensity range (more than
  :data:`EDGE_MARGIN` from either end): the image is black (or white) as the model sees it;
- **near-constant**: the network input's standard deviation is under
  :data:`MIN_CONTRAST` of its intensity range.
"""

from __future__ import annotations

import numpy as np

#: Fewest pixels along an in-plane side: below this no nodule can be told from noise.
MIN_SIDE_PX = 32
#: Share of the intensity range at each end that counts as black (white).
EDGE_MARGIN = 0.02
#: Least share of voxels between black and white for the image to carry anything.
MIN_INFORMATIVE_FRACTION = 0.01
#: Least standard deviation of the network input, as a share of its intensity range.
MIN_CONTRAST = 0.005
#: Voxels looked at, at most (a strided subsample of large CT volumes).
_SAMPLE = 2_000_000


def _sample(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / _SAMPLE) ** (1 / max(array.ndim, 1)))))
    return array[(slice(None, None, step),) * array.ndim] if step > 1 else array


def image_quality_problem(
    source: np.ndarray | None,
    network_input: np.ndarray | None = None,
    *,
    low: float = 0.0,
    high: float = 1.0,
) -> str | None:
    """Why an image cannot be read, in words for the worklist, or ``None``.

    Args:
        source: decoded pixels, ``(X, Y)`` or ``(X, Y, Z)`` (radiographs already in their
            display window, CT in Hounsfield units); ``None`` checks the network input alone
            (the source was checked before preprocessing).
        network_input: the preprocessed image the model would see (any shape), intensities
            in ``low..high``; ``None`` checks the source alone.
        low, high: the network input's intensity range (the spec's ``b_min``/``b_max``).
    """
    problem = None if source is None else _source_problem(source)
    if problem is not None or network_input is None:
        return problem
    if high <= low:
        raise ValueError(f"the intensity range {low}..{high} is empty")
    scaled = (_sample(network_input).astype(np.float64) - low) / (high - low)
    inside = float(np.mean((scaled > EDGE_MARGIN) & (scaled < 1 - EDGE_MARGIN)))
    if inside < MIN_INFORMATIVE_FRACTION:
        if float(np.mean(scaled)) < 0.5:
            return (
                "the image is black in its display window: check Window Center/Width and "
                "Photometric Interpretation"
            )
        return "the image is white (saturated) in its display window: check the exposure"
    if float(scaled.std()) < MIN_CONTRAST:
        return "the image is nearly uniform: no structure to read"
    return None


def _source_problem(source: np.ndarray) -> str | None:
    sides = source.shape[:2]
    if min(sides) < MIN_SIDE_PX:
        return (
            f"the image is {sides[1]} x {sides[0]} pixels; at least {MIN_SIDE_PX} pixels a "
            "side are needed to read it"
        )
    sample = _sample(source)
    if not np.isfinite(sample).all():
        return "the image holds invalid pixel values (not a number or infinite)"
    if float(sample.max()) == float(sample.min()):
        return (
            "the image is blank: every pixel shows the same value (check the exposure, "
            "Window Center/Width and Photometric Interpretation)"
        )
    return None
