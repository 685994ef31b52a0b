"""From findings to a priority: the suspicion score and the thresholds of one model version.

- A series' (job's) suspicion score is its highest finding score (0 when it has none),
  mapped through the model version's score calibration when its spec has one (Platt or
  temperature scaling fitted on validation studies, see
  :class:`oncotriage.models.spec.ScoreCalibration`); the findings keep the detector's scores.
- A study's suspicion score is the highest over its series.
- Priority comes from the calibrated thresholds of the model version that scored it:
  ``urgent`` at or above ``thresholds.urgent``, ``suspicious`` at or above
  ``thresholds.operating``, else ``routine``.
- Fail-safe: a series whose inference failed for good makes the study
  ``needs_manual_review`` (unless another series already makes it more urgent), with the
  reason kept; a study is never ``routine`` because something broke.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Job, Study
from oncotriage.serving.enums import JobState, Priority, StudyStatus


class HasScore(Protocol):
    @property
    def score(self) -> float: ...


class HasThresholds(Protocol):
    @property
    def operating(self) -> float: ...

    @property
    def urgent(self) -> float: ...


class HasStudyScore(Protocol):
    def study_score(self, raw: float) -> float: ...


def suspicion_score(findings: Iterable[HasScore]) -> float:
    """The highest finding score, or 0.0 for no findings."""
    return max((float(finding.score) for finding in findings), default=0.0)


def calibrated_suspicion_score(findings: Iterable[HasScore], thresholds: HasStudyScore) -> float:
    """The series' suspicion score on the scale of the model's thresholds (calibrated)."""
    return thresholds.study_score(suspicion_score(findings))


def priority_for(score: float, thresholds: HasThresholds) -> Priority:
    """``urgent`` / ``suspicious`` / ``routine`` for ``score`` under a model's thresholds."""
    if score >= thresholds.urgent:
        return Priority.URGENT
    if score >= thresholds.operating:
        return Priority.SUSPICIOUS
    return Priority.ROUTINE


def most_urgent(priorities: Iterable[Priority]) -> Priority | None:
    """The priority that sorts first in the worklist, or ``None`` for none."""
    return min(priorities, key=lambda priority: priority.rank, default=None)


@dataclass(frozen=True)
class StudyOutcome:
    """What a study's jobs add up to (see :func:`aggregate`)."""

    status: StudyStatus
    priority: Priority | None
    suspicion_score: float | None
    model_name: str | None
    model_version: str | None
    failure_reason: str | None


def aggregate(jobs: Sequence[Job]) -> StudyOutcome:
    """Combine the current (not superseded) jobs of a study.

    The study is ``triaged`` (or ``failed``) only when every job has finished; until then
    it is ``processing`` (some job started) or ``queued``. The model named is the one
    that gave the highest score (or the latest to finish when every score is 0).
    """
    current = [job for job in jobs if job.state is not JobState.SUPERSEDED]
    if not current:
        return StudyOutcome(StudyStatus.RECEIVED, None, None, None, None, None)
    done = [job for job in current if job.state is JobState.DONE]
    failed = [job for job in current if job.state is JobState.FAILED]
    pending = [job for job in current if job.state in (JobState.QUEUED, JobState.RUNNING)]
    if pending:
        started = any(job.state is JobState.RUNNING or job.attempts > 0 for job in pending)
        status = StudyStatus.PROCESSING if started or done or failed else StudyStatus.QUEUED
        return StudyOutcome(status, None, None, None, None, None)

    priorities = [job.priority for job in done if job.priority is not None]
    failure_reason = None
    if failed:
        priorities.append(Priority.NEEDS_MANUAL_REVIEW)
        failure_reason = "; ".join(sorted({job.last_error or "inference failed" for job in failed}))
    score = max((job.suspicion_score or 0.0 for job in done), default=None)
    best = max(
        done,
        key=lambda job: (job.suspicion_score or 0.0, job.finished_at or datetime.min),
        default=None,
    )
    return StudyOutcome(
        status=StudyStatus.FAILED if failed else StudyStatus.TRIAGED,
        priority=most_urgent(priorities),
        suspicion_score=score,
        model_name=best.model_name if best else None,
        model_version=best.model_version if best else None,
        failure_reason=failure_reason,
    )


def refresh_study(session: Session, study: Study, *, now: datetime) -> StudyStatus:
    """Recompute a study's status, score, priority and model from its jobs.

    Returns the new status. Sets ``triaged_at`` and ``time_to_triage_s`` (from the
    study's arrival) the first time the study reaches ``triaged`` or ``failed``.
    """
    jobs = session.scalars(sa.select(Job).where(Job.study_id == study.id)).all()
    outcome = aggregate(jobs)
    study.status = outcome.status
    if outcome.status in (StudyStatus.TRIAGED, StudyStatus.FAILED):
        study.priority = outcome.priority
        study.suspicion_score = outcome.suspicion_score
        study.model_name = outcome.model_name
        study.model_version = outcome.model_version
        study.failure_reason = outcome.failure_reason
        if study.triaged_at is None:
            study.time_to_triage_s = max(0.0, (now - study.received_at).total_seconds())
        study.triaged_at = now
    elif outcome.status is StudyStatus.PROCESSING and study.processing_started_at is None:
        study.processing_started_at = now
    return outcome.status
