"""Statistics of the monitoring: Wilson score intervals and CUSUM charts. Pure functions.

CUSUM (Page, 1954) accumulates evidence of a shift and forgets evidence against one:

- :func:`gaussian_cusum` on standardised values ``z = (x - mean) / sd``, two-sided:
  ``S+ = max(0, S+ + z - k)``, ``S- = max(0, S- - z - k)``, alarm when either exceeds ``h``.
  With the classic ``k = 0.5``, ``h = 5`` a one-sided chart's in-control average run length
  is about 930 observations and a shift of one standard deviation is found in about 10;
- :func:`bernoulli_cusum` on 0/1 events (a study flagged or not) against a rate ``p0``,
  two one-sided log-likelihood-ratio charts: for the rate multiplied by ``odds`` in the
  odds, and divided by it.

The thresholds the service uses, and the false-alarm rates measured with them, are in
docs/monitoring.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CusumResult",
    "Interval",
    "bernoulli_cusum",
    "gaussian_cusum",
    "wilson_interval",
]

#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A proportion ``k / n`` with its Wilson score interval (``None`` when ``n == 0``)."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"k": self.k, "n": self.n, "value": self.value, "low": self.low, "high": self.high}


def wilson_interval(k: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of ``k`` successes in ``n`` trials (95 % by default).

    Unlike the normal approximation it stays inside 0..1 and is usable for small ``n`` and
    proportions near 0 or 1 (a sensitivity of 19/20).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Interval(0, 0, None, None, None)
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return Interval(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class CusumResult:
    """Where a CUSUM chart stands after a sequence.

    Attributes:
        upper, lower: the two one-sided statistics after the last value.
        alarm_at: index (0-based) of the first value at which a chart crossed ``h``, or
            ``None``; the charts restart from 0 after an alarm.
        direction: ``"up"`` or ``"down"`` for the chart that crossed first.
        alarms: how many times a chart crossed over the whole sequence.
    """

    upper: float
    lower: float
    alarm_at: int | None
    direction: str | None
    alarms: int


def gaussian_cusum(z_values: Iterable[float], *, k: float = 0.5, h: float = 5.0) -> CusumResult:
    """Two-sided CUSUM of standardised values (see the module docstring)."""
    upper = lower = 0.0
    alarm_at: int | None = None
    direction: str | None = None
    alarms = 0
    for index, z in enumerate(z_values):
        upper = max(0.0, upper + z - k)
        lower = max(0.0, lower - z - k)
        if upper > h or lower > h:
            alarms += 1
            if alarm_at is None:
                alarm_at, direction = index, "up" if upper > h else "down"
            upper = lower = 0.0
    return CusumResult(upper, lower, alarm_at, direction, alarms)


def bernoulli_cusum(
    events: Iterable[bool],
    *,
    p0: float,
    odds: float = 2.0,
    h: float = 4.0,
    downward: bool = True,
    p0_down: float | None = None,
) -> CusumResult:
    """Two-sided Bernoulli CUSUM of 0/1 ``events`` against the in-control rate ``p0``.

    The upward chart tests the odds of an event multiplied by ``odds``, the downward one
    divided by it; each adds the log-likelihood ratio of every event and alarms above ``h``.
    ``downward=False`` keeps the upward chart only (a rate seen as 0 cannot fall).
    ``p0_down`` is the downward chart's in-control rate when it differs from the upward
    one's (an estimated rate: the up chart from its upper bound, the down chart from its
    lower bound).
    """
    base_down = p0 if p0_down is None else p0_down
    for name, value in (("p0", p0), ("p0_down", base_down)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")
    if odds <= 1:
        raise ValueError(f"odds must be above 1, got {odds}")

    def shifted(base: float, factor: float) -> float:
        odds0 = base / (1 - base) * factor
        return odds0 / (1 + odds0)

    steps = []
    for base, p1 in ((p0, shifted(p0, odds)), (base_down, shifted(base_down, 1 / odds))):
        steps.append((math.log(p1 / base), math.log((1 - p1) / (1 - base))))
    (up_yes, up_no), (down_yes, down_no) = steps
    upper = lower = 0.0
    alarm_at: int | None = None
    direction: str | None = None
    alarms = 0
    for index, event in enumerate(events):
        upper = max(0.0, upper + (up_yes if event else up_no))
        if downward:
            lower = max(0.0, lower + (down_yes if event else down_no))
        if upper > h or lower > h:
            alarms += 1
            if alarm_at is None:
                alarm_at, direction = index, "up" if upper > h else "down"
            upper = lower = 0.0
    return CusumResult(upper, lower, alarm_at, direction, alarms)
