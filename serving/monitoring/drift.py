"""Drift alarms: CUSUM charts over each hospital's (and device's) monitor records.

After each record, :func:`check_drift` replays the charts of its hospital, and of its
hospital and device (manufacturer + model name), over their latest records under the same
model version (at most ``drift_window_studies``, none older than the last cleared alarm of
that chart). Charts, and what each value is compared with:

==================  ==================================================  ===============
metric              value per study (series)                            reference
==================  ==================================================  ===============
intensity_mean      mean normalised intensity                           training fingerprint
intensity_histogram distance of its histogram from the training one     training fingerprint
spacing             in-plane pixel spacing (mm)                         training fingerprint
image_size          log of the in-plane pixel count                     training fingerprint
score               the champion's calibrated score                     first warm-up studies
flag_rate           flagged (score >= operating threshold) or not       first warm-up studies
==================  ==================================================  ===============

The first four are standardised against the fingerprint (``z = (x - mean) / sd``, the sd
floored at :data:`SD_FLOORS` so that a fingerprint of near-identical images does not turn
every scanner's noise into an alarm) and charted by
:func:`~oncotriage.serving.monitoring.stats.gaussian_cusum` (``drift_cusum_k``/``_h``);
``score`` likewise against the mean and sd of the chart's first ``drift_warmup_studies``;
``flag_rate`` by :func:`~oncotriage.serving.monitoring.stats.bernoulli_cusum` against the
warm-up's flag rate: the up chart from its Wilson upper bound, the down chart from its lower
bound (z ``drift_flag_margin_z``; within 2-98 %), so that the error of a rate estimated from
300 studies does not become alarms; ``drift_flag_odds``/``_h``; upward only when the
warm-up had no flag. A chart with an active alarm is not
replayed; clearing the alarm restarts it. Thresholds and measured run lengths:
docs/monitoring.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.models.fingerprint import InputFingerprint
from oncotriage.serving.db.models import DriftAlarm, MonitorRecord
from oncotriage.serving.enums import AlarmAction
from oncotriage.serving.monitoring.stats import (
    CusumResult,
    bernoulli_cusum,
    gaussian_cusum,
    wilson_interval,
)
from oncotriage.serving.settings import Settings

__all__ = [
    "INPUT_METRICS",
    "METRICS",
    "SD_FLOORS",
    "ChartFinding",
    "check_drift",
    "device_of",
    "input_z_values",
    "run_charts",
]

INPUT_METRICS = ("intensity_mean", "intensity_histogram", "spacing", "image_size")
METRICS = (*INPUT_METRICS, "score", "flag_rate")

#: The smallest standard deviation each standardised chart assumes (see the module docstring).
SD_FLOORS = {
    "intensity_mean": 0.02,  # of the 0..1 normalised intensity
    "intensity_histogram": 0.02,  # of the 0..1 total variation distance
    "spacing": 0.05,  # relative: 5 % of the mean spacing
    "image_size": 0.1,  # of log(pixels): about 10 % in pixel count
    "score": 0.02,
}


def device_of(manufacturer: str, device_model: str) -> str:
    """The device key of a record: ``manufacturer | model`` (empty when neither is known)."""
    manufacturer, device_model = manufacturer.strip(), device_model.strip()
    return f"{manufacturer} | {device_model}" if manufacturer or device_model else ""


def _z(value: float | None, mean: float, sd: float, floor: float) -> float | None:
    if value is None:
        return None
    return (value - mean) / max(sd, floor)


def input_z_values(
    records: Sequence[MonitorRecord], fingerprint: InputFingerprint
) -> dict[str, list[float]]:
    """Standardised input statistics of ``records`` against the training fingerprint."""
    out: dict[str, list[float]] = {metric: [] for metric in INPUT_METRICS}
    fp = fingerprint
    for record in records:
        values = {
            "intensity_mean": _z(
                record.intensity_mean,
                fp.intensity_mean,
                fp.intensity_sd,
                SD_FLOORS["intensity_mean"],
            ),
            "intensity_histogram": _z(
                record.histogram_distance,
                fp.histogram_distance_mean,
                fp.histogram_distance_sd,
                SD_FLOORS["intensity_histogram"],
            ),
            "spacing": _z(
                record.spacing_mm,
                fp.spacing_mm_mean,
                fp.spacing_mm_sd,
                SD_FLOORS["spacing"] * fp.spacing_mm_mean,
            ),
            "image_size": _z(
                math.log(record.pixels) if record.pixels else None,
                fp.log_pixels_mean,
                fp.log_pixels_sd,
                SD_FLOORS["image_size"],
            ),
        }
        for metric, z in values.items():
            if z is not None:
                out[metric].append(z)
    return out


@dataclass(frozen=True)
class ChartFinding:
    """A chart that crossed its decision interval.

    Attributes:
        metric: one of :data:`METRICS`.
        direction: ``up`` or ``down``.
        studies: records charted until the alarm (after the warm-up, for score/flag_rate).
        detail: the chart's reference values, for the alarm's record.
    """

    metric: str
    direction: str
    studies: int
    detail: dict[str, Any]


def run_charts(
    records: Sequence[MonitorRecord],
    fingerprint: InputFingerprint | None,
    settings: Settings,
    *,
    metrics: Sequence[str] = METRICS,
) -> list[ChartFinding]:
    """Replay the charts of ``metrics`` over ``records`` (oldest first); the ones that alarm."""
    found: list[ChartFinding] = []

    def note(metric: str, result: CusumResult, offset: int, detail: dict[str, Any]) -> None:
        if result.alarm_at is not None:
            found.append(
                ChartFinding(metric, result.direction or "", offset + result.alarm_at + 1, detail)
            )

    if fingerprint is not None:
        z_values = input_z_values(records, fingerprint)
        for metric in INPUT_METRICS:
            if metric in metrics:
                result = gaussian_cusum(
                    z_values[metric], k=settings.drift_cusum_k, h=settings.drift_cusum_h
                )
                note(metric, result, 0, {"reference": "training fingerprint"})
    warmup = settings.drift_warmup_studies
    if len(records) > warmup:
        base, rest = records[:warmup], records[warmup:]
        if "score" in metrics:
            scores = [r.champion_score for r in base]
            mean = sum(scores) / len(scores)
            sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
            scale = max(sd, SD_FLOORS["score"])
            result = gaussian_cusum(
                [(r.champion_score - mean) / scale for r in rest],
                k=settings.drift_cusum_k,
                h=settings.drift_cusum_h,
            )
            note("score", result, 0, {"warmup_mean": round(mean, 4), "warmup_sd": round(sd, 4)})
        if "flag_rate" in metrics:
            flags = sum(r.champion_priority.flagged for r in base)
            bounds = wilson_interval(flags, warmup, z=settings.drift_flag_margin_z)
            p_up = min(0.98, max(0.02, bounds.high or 0.0))
            p_down = min(0.98, max(0.02, bounds.low or 0.0))
            result = bernoulli_cusum(
                [r.champion_priority.flagged for r in rest],
                p0=p_up,
                p0_down=p_down,
                odds=settings.drift_flag_odds,
                h=settings.drift_flag_h,
                downward=flags > 0,  # no flag in the warm-up: a rate that cannot fall
            )
            note(
                "flag_rate",
                result,
                0,
                {
                    "warmup_flag_rate": round(flags / warmup, 4),
                    "reference_up": round(p_up, 4),
                    "reference_down": round(p_down, 4),
                },
            )
    return found


def _alarm_scope(hospital_id: int, device: str, model_name: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        DriftAlarm.hospital_id == hospital_id,
        DriftAlarm.device == device,
        DriftAlarm.model_name == model_name,
    )


def check_drift(
    session: Session,
    settings: Settings,
    record: MonitorRecord,
    fingerprint: InputFingerprint | None,
    *,
    now: datetime,
    on_alarm: Callable[[DriftAlarm], None] | None = None,
) -> list[DriftAlarm]:
    """Replay the charts of ``record``'s hospital, and of its hospital and device; add a
    :class:`DriftAlarm` for each that crosses (the caller commits). ``on_alarm`` is called
    with each new alarm after it is flushed."""
    raised: list[DriftAlarm] = []
    device = device_of(record.manufacturer, record.device_model)
    scopes: list[tuple[str, sa.ColumnElement[bool]]] = [("", sa.true())]
    if device:
        scopes.append(
            (
                device,
                sa.and_(
                    MonitorRecord.manufacturer == record.manufacturer,
                    MonitorRecord.device_model == record.device_model,
                ),
            )
        )
    for scope_device, device_clause in scopes:
        alarms = session.scalars(
            sa.select(DriftAlarm).where(
                _alarm_scope(record.hospital_id, scope_device, record.champion_name)
            )
        ).all()
        active = {alarm.metric for alarm in alarms if alarm.cleared_at is None}
        metrics = [metric for metric in METRICS if metric not in active]
        if not metrics:
            continue
        by_metric_since: dict[str, datetime] = {}
        for alarm in alarms:
            if alarm.cleared_at is not None:
                since = by_metric_since.get(alarm.metric)
                if since is None or alarm.cleared_at > since:
                    by_metric_since[alarm.metric] = alarm.cleared_at
        # One query for the scope; each metric's chart starts after its own last clearing.
        oldest = min(by_metric_since.values()) if len(by_metric_since) == len(metrics) else None
        query = (
            sa.select(MonitorRecord)
            .where(
                MonitorRecord.hospital_id == record.hospital_id,
                MonitorRecord.champion_name == record.champion_name,
                MonitorRecord.champion_version == record.champion_version,
                device_clause,
            )
            .order_by(MonitorRecord.id.desc())
            .limit(settings.drift_window_studies)
        )
        if oldest is not None:
            query = query.where(MonitorRecord.created_at > oldest)
        window = list(reversed(session.scalars(query).all()))
        for metric in metrics:
            since = by_metric_since.get(metric)
            charted = [r for r in window if since is None or r.created_at > since]
            for finding in run_charts(charted, fingerprint, settings, metrics=[metric]):
                alarm = DriftAlarm(
                    hospital_id=record.hospital_id,
                    device=scope_device,
                    model_name=record.champion_name,
                    metric=finding.metric,
                    direction=finding.direction,
                    studies=finding.studies,
                    action=AlarmAction(settings.drift_action),
                    detail={
                        **finding.detail,
                        "model_version": record.champion_version,
                        "k": settings.drift_cusum_k,
                        "h": settings.drift_cusum_h
                        if finding.metric != "flag_rate"
                        else settings.drift_flag_h,
                    },
                    raised_at=now,
                )
                session.add(alarm)
                session.flush()
                raised.append(alarm)
                if on_alarm is not None:
                    on_alarm(alarm)
    return raised
