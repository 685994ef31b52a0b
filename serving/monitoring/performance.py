"""Real-world performance: per model version x hospital x device x modality, from the
specialists' decisions and the recorded outcomes, with Wilson 95 % intervals.

A study's label (:func:`study_labels`): an outcome when one is recorded (``malignant``:
positive; ``benign`` or ``no_cancer_12_months``: negative), else the specialist's decision
(``refer``: positive, ``return``: negative; ``more_imaging`` and no decision: unlabelled).

Per group of triaged studies:

- ``flag_rate``: urgent or suspicious, of all studies;
- ``manual_review_rate``: ``needs_manual_review``, of all studies;
- ``sensitivity``: flagged positives, of the labelled positives;
- ``ppv``: positives, of the labelled flagged studies;
- ``scores``: the champion's calibrated study scores in :data:`SCORE_BINS` bins over 0..1,
  with their quartiles.

Mind the verification bias: specialists decide on the flagged studies, so an unflagged
cancer is only counted when an outcome (a later diagnosis) is recorded against it; the
sensitivity here is an upper bound until outcomes come in. docs/monitoring.md says more.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Hospital, MonitorRecord, Outcome, Study
from oncotriage.serving.enums import Decision, OutcomeKind, Priority
from oncotriage.serving.monitoring.stats import Interval, wilson_interval

__all__ = [
    "GROUP_KEYS",
    "SCORE_BINS",
    "Tally",
    "export_to_mlflow",
    "performance",
    "study_labels",
]

SCORE_BINS = 10
GROUP_KEYS = ("model", "version", "hospital", "manufacturer", "device_model", "modality")
_FLAGS = (Priority.URGENT, Priority.SUSPICIOUS)


def study_labels(session: Session, study_ids: Iterable[str]) -> dict[str, bool]:
    """Study id -> positive (True) or negative (False), for the labelled ones among
    ``study_ids`` (outcomes first, then decisions; see the module docstring)."""
    ids = list(dict.fromkeys(study_ids))
    labels: dict[str, bool] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for study_id, decision in session.execute(
            sa.select(Study.id, Study.decision).where(Study.id.in_(chunk))
        ):
            if decision is Decision.REFER:
                labels[study_id] = True
            elif decision is Decision.RETURN:
                labels[study_id] = False
        outcomes: dict[str, bool] = {}
        for outcome_study, kind in session.execute(
            sa.select(Outcome.study_id, Outcome.kind).where(Outcome.study_id.in_(chunk))
        ):
            if outcome_study is None:
                continue
            positive = kind is OutcomeKind.MALIGNANT
            outcomes[outcome_study] = outcomes.get(outcome_study, False) or positive
        labels.update(outcomes)
    return labels


@dataclass
class Tally:
    """Counts of one group (or one model on one set of studies)."""

    studies: int = 0
    flagged: int = 0
    manual_review: int = 0
    positives: int = 0
    flagged_positives: int = 0
    flagged_labelled: int = 0
    scores: list[float] = field(default_factory=list)

    def add(self, priority: Priority | None, score: float | None, label: bool | None) -> None:
        self.studies += 1
        flagged = priority in _FLAGS
        self.flagged += flagged
        self.manual_review += priority is Priority.NEEDS_MANUAL_REVIEW
        if label is not None:
            self.positives += label
            self.flagged_positives += label and flagged
            self.flagged_labelled += flagged
        if score is not None:
            self.scores.append(float(score))

    @property
    def flag_rate(self) -> Interval:
        return wilson_interval(self.flagged, self.studies)

    @property
    def manual_review_rate(self) -> Interval:
        return wilson_interval(self.manual_review, self.studies)

    @property
    def sensitivity(self) -> Interval:
        return wilson_interval(self.flagged_positives, self.positives)

    @property
    def ppv(self) -> Interval:
        return wilson_interval(self.flagged_positives, self.flagged_labelled)

    def score_summary(self) -> dict[str, Any]:
        histogram = [0] * SCORE_BINS
        for score in self.scores:
            histogram[min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS)))] += 1
        quartiles: list[float] | None = None
        if len(self.scores) >= 2:
            quartiles = [round(q, 4) for q in statistics.quantiles(self.scores, n=4)]
        return {"histogram": histogram, "quartiles": quartiles, "n": len(self.scores)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "flagged": self.flagged,
            "labelled_positives": self.positives,
            "flag_rate": self.flag_rate.as_dict(),
            "manual_review_rate": self.manual_review_rate.as_dict(),
            "sensitivity": self.sensitivity.as_dict(),
            "ppv": self.ppv.as_dict(),
            "scores": self.score_summary(),
        }


def performance(session: Session, hospitals: Sequence[int] | None) -> list[dict[str, Any]]:
    """One row per model version x hospital x device x modality over the triaged studies of
    ``hospitals`` (None: all), ordered by those keys."""
    scope = sa.true() if hospitals is None else Study.hospital_id.in_(list(hospitals))
    device = (
        sa.select(
            MonitorRecord.study_id,
            sa.func.min(MonitorRecord.manufacturer).label("manufacturer"),
            sa.func.min(MonitorRecord.device_model).label("device_model"),
        )
        .group_by(MonitorRecord.study_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(
            Study.id,
            Study.model_name,
            Study.model_version,
            Hospital.name,
            device.c.manufacturer,
            device.c.device_model,
            Study.modality,
            Study.priority,
            Study.suspicion_score,
        )
        .join(Hospital, Hospital.id == Study.hospital_id)
        .outerjoin(device, device.c.study_id == Study.id)
        .where(scope, Study.priority.is_not(None))
    ).all()
    labels = study_labels(session, [row[0] for row in rows])
    groups: dict[tuple[str, ...], Tally] = defaultdict(Tally)
    for study_id, name, version, hospital, manufacturer, model, modality, priority, score in rows:
        key = (
            name or "(none)",
            version or "",
            hospital,
            manufacturer or "",
            model or "",
            modality or "",
        )
        groups[key].add(priority, score, labels.get(study_id))
    return [
        dict(zip(GROUP_KEYS, key, strict=True)) | groups[key].as_dict() for key in sorted(groups)
    ]


def export_to_mlflow(
    session: Session, *, tracking_uri: str | None = None
) -> dict[tuple[str, int], dict[str, float]]:
    """Record each registered version's field performance on the version in the registry
    (``metric.field.*`` tags: overall, and per hospital as ``field.<hospital id>.*``).

    Returns the metrics written, by (model, version).
    """
    from oncotriage.models import registry

    rows = session.execute(
        sa.select(
            Study.id,
            Study.model_name,
            Study.model_version,
            Study.hospital_id,
            Study.priority,
            Study.suspicion_score,
        ).where(Study.priority.is_not(None), Study.model_name.is_not(None))
    ).all()
    labels = study_labels(session, [row[0] for row in rows])
    tallies: dict[tuple[str, str], dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
    for study_id, name, version, hospital_id, priority, score in rows:
        for scope in ("all", str(hospital_id)):
            tallies[(str(name), str(version))][scope].add(priority, score, labels.get(study_id))
    written: dict[tuple[str, int], dict[str, float]] = {}
    for (name, version), scopes in tallies.items():
        if not str(version).isdigit():
            continue  # a bundle folder, not a registered version
        metrics: dict[str, float] = {}
        for scope, tally in scopes.items():
            prefix = "field." if scope == "all" else f"field.h{scope}."
            metrics[f"{prefix}studies"] = float(tally.studies)
            for metric in ("flag_rate", "manual_review_rate", "sensitivity", "ppv"):
                interval: Interval = getattr(tally, metric)
                if interval.value is not None:
                    metrics[f"{prefix}{metric}"] = round(interval.value, 6)
                    metrics[f"{prefix}{metric}_low"] = round(interval.low or 0.0, 6)
                    metrics[f"{prefix}{metric}_high"] = round(interval.high or 0.0, 6)
        registry.record_metrics(name, int(version), metrics, tracking_uri=tracking_uri)
        written[(name, int(version))] = metrics
    return written
