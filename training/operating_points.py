"""Study-level operating points: sensitivity and specificity with Wilson intervals.

Shared by :mod:`oncotriage.training.calibrate` (which chooses the thresholds) and
:mod:`oncotriage.training.evaluate` (which reports them), so neither imports the other for
it. numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Proportion:
    """``successes / total`` with a Wilson score confidence interval.

    Attributes:
        successes: count of successes.
        total: count of trials.
        value: ``successes / total`` (NaN when ``total`` is 0).
        low, high: bounds of the interval at ``confidence``.
        confidence: the interval's coverage (0.95).
    """

    successes: int
    total: int
    value: float
    low: float
    high: float
    confidence: float = 0.95

    def __str__(self) -> str:
        if self.total == 0:
            return "n/a (0 studies)"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.successes}/{self.total})"


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> Proportion:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: number of successes, ``0 <= successes <= total``.
        total: number of trials.
        confidence: two-sided coverage, e.g. 0.95.

    Returns:
        the proportion with its interval; value and bounds are NaN when ``total`` is 0.
    """
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes}/{total}")
    if total == 0:
        nan = float("nan")
        return Proportion(successes, total, nan, nan, nan, confidence)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return Proportion(
        successes=successes,
        total=total,
        value=p,
        low=max(0.0, centre - half),
        high=min(1.0, centre + half),
        confidence=confidence,
    )


@dataclass(frozen=True)
class OperatingPoint:
    """Sensitivity and specificity of flagging studies whose score is ``>= threshold``."""

    threshold: float
    sensitivity: Proportion
    specificity: Proportion


def operating_point(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    threshold: float,
    confidence: float = 0.95,
) -> OperatingPoint:
    """Study-level sensitivity/specificity at ``threshold`` (flag when ``score >= threshold``)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    flagged = scores >= threshold
    return OperatingPoint(
        threshold=float(threshold),
        sensitivity=wilson_interval(
            int((flagged & positive).sum()), int(positive.sum()), confidence
        ),
        specificity=wilson_interval(
            int((~flagged & ~positive).sum()), int((~positive).sum()), confidence
        ),
    )
