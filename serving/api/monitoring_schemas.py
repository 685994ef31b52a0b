"""Schemas of the monitoring routes: performance, champion/challenger, drift alarms."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from oncotriage.serving.enums import AlarmAction


class IntervalPublic(BaseModel):
    """A proportion k / n with its Wilson 95 % interval (null when n is 0)."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None


class ScoresPublic(BaseModel):
    histogram: list[int] = Field(description="Studies per tenth of the score, 0..1.")
    quartiles: list[float] | None
    n: int


class TallyPublic(BaseModel):
    studies: int
    flagged: int
    labelled_positives: int
    flag_rate: IntervalPublic
    manual_review_rate: IntervalPublic
    sensitivity: IntervalPublic
    ppv: IntervalPublic
    scores: ScoresPublic


class PerformanceRow(TallyPublic):
    model: str
    version: str
    hospital: str
    manufacturer: str
    device_model: str
    modality: str


class PerformancePublic(BaseModel):
    data: list[PerformanceRow]
    count: int


class PairPublic(BaseModel):
    champion_version: str
    challenger_version: str
    studies: int
    both_flagged: int
    champion_only: int
    challenger_only: int
    neither: int
    agreement: IntervalPublic
    labelled_positives: int
    champion: TallyPublic
    challenger: TallyPublic
    challenger_median_s: float | None


class ComparisonPublic(BaseModel):
    model: str
    pairs: list[PairPublic]


class AlarmPublic(BaseModel):
    id: int
    hospital_id: int
    hospital: str
    device: str = Field(description="'manufacturer | model', or empty for the whole hospital.")
    model: str
    metric: str
    direction: str
    studies: int = Field(description="Studies charted until the chart crossed its limit.")
    action: AlarmAction
    raised_at: datetime
    cleared_at: datetime | None
    cleared_by: str | None
    detail: dict[str, Any] | None


class AlarmsPublic(BaseModel):
    data: list[AlarmPublic]
    count: int


class AlarmUpdate(BaseModel):
    action: Literal["warn", "hold", "clear"] = Field(
        description="warn: banner only; hold: the hospital's new studies go to people "
        "unscored; clear: the alarm ends and its chart restarts."
    )


class UnreadyModel(BaseModel):
    route: str
    reason: str


class MonitorStatusPublic(BaseModel):
    models_unready: list[UnreadyModel] = Field(
        description="Routes whose model this process cannot load now: their studies wait "
        "in the queue (queued_jobs) until one loads."
    )
    queued_jobs: int
    submitted: int
    recorded: int
    dropped: int
    backlog: int
    challenger_scored: int
    alarms: int
