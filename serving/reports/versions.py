"""The versions of a study's result as DICOM SR objects, with stable UIDs.

A study's result has at most these versions, each its own object in its own series:

1. the AI result (series "AI triage result", number 9901): PRELIMINARY, UNVERIFIED;
2. one per specialist's decision (series "Specialist-verified result", number 9902): FINAL,
   VERIFIED, the specialist as Verifying Observer, the decision, note and corrected boxes,
   and the AI result as its predecessor.

Every UID is derived from the study and the version (:func:`result_uid`: a ``2.25`` UID of
a UUIDv5 in a fixed namespace), and every date and time comes from the stored result (the
triage, or the decision), never from the clock: the same version built twice, on any
process, is the same object byte for byte. A re-triage (new images for the study) is a new
result version (new jobs), hence new UIDs; its time is when the last of its jobs finished.

:func:`result_instances` is what WADO-RS and the push to a hospital's PACS use.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from oncotriage.datasets.roles import SeriesRole
from oncotriage.serving.db.models import (
    Finding,
    Hospital,
    Instance,
    Job,
    Review,
    Series,
    Study,
    User,
)
from oncotriage.serving.enums import JobState, Priority, StudyStatus
from oncotriage.serving.errors import ConflictError
from oncotriage.serving.storage import ContentStore

#: Namespace of the UUIDv5s behind the report UIDs (never change it: UIDs would change).
RESULT_UID_NAMESPACE = uuid.UUID("3f0b7f52-8c1e-5d0a-b7e4-2a9c6d1e4f70")
AI_SERIES_NUMBER = 9901
VERIFIED_SERIES_NUMBER = 9902
AI_SERIES_DESCRIPTION = "AI triage result"
VERIFIED_SERIES_DESCRIPTION = "Specialist-verified result"


class ResultNotReadyError(ConflictError):
    """The study has not been triaged yet (or holds nothing a model reads)."""


def result_uid(*parts: str) -> str:
    """A DICOM UID derived from ``parts``: ``2.25.<the UUIDv5's 128-bit integer>``
    (PS3.5 B.2), at most 44 characters."""
    return f"2.25.{uuid.uuid5(RESULT_UID_NAMESPACE, '/'.join(parts)).int}"


@dataclass(frozen=True)
class Decided:
    """A specialist's decision, as the verified version needs it."""

    review_id: int
    observer_name: str
    login_name: str
    organization: str
    decided_at: datetime
    decision: str
    note: str
    corrected: tuple[tuple[str, int, tuple[float, ...]], ...]  # (key, label, box_index)


@dataclass(frozen=True)
class ReportPlan:
    """What the SR versions need, gathered in one short transaction (files are read after).

    Attributes:
        findings_by_key: reportable findings (at or above the operating threshold) by
            SeriesInstanceUID (CT) or SOPInstanceUID (radiograph).
        left_out: findings below the operating threshold.
        result_version: what makes this AI result distinct (model and triage time).
    """

    study_id: str
    stored_paths: tuple[str, ...]
    findings_by_key: dict[str, list[object]]
    left_out: int
    model_name: str
    model_version: str
    suspicion_score: float | None
    priority: Priority
    triaged_at: datetime
    result_version: str
    institution_name: str
    no_score_reason: str | None = None
    spacing_estimated: bool = False
    decisions: tuple[Decided, ...] = ()

    @property
    def ai_series_uid(self) -> str:
        return result_uid(self.study_id, "ai-series")

    @property
    def ai_sop_uid(self) -> str:
        return result_uid(self.study_id, self.result_version, "ai")

    @property
    def verified_series_uid(self) -> str:
        return result_uid(self.study_id, "verified-series")

    def verified_sop_uid(self, review_id: int) -> str:
        return result_uid(self.study_id, self.result_version, "verified", str(review_id))


def _detected(finding: Finding) -> object:
    """A stored finding as the report states it: its score on the study score's scale (the
    model version's calibration), like the study's suspicion score, the thresholds and the case
    view; findings stored before calibrated scores were kept state the detector's score."""
    from oncotriage.models.findings import Finding as DetectedFinding

    return DetectedFinding(
        label=finding.label,
        score=finding.score if finding.calibrated_score is None else finding.calibrated_score,
        box_index=tuple(finding.box_index),
        box_world=tuple(finding.box_world),
    )


def _person_name(name: str) -> str:
    """A display name as a DICOM PN: ``Family^Given`` ("Ada Lovelace" -> "Lovelace^Ada")."""
    if "^" in name:
        return name
    parts = name.split()
    if len(parts) > 1:
        return f"{parts[-1]}^{' '.join(parts[:-1])}"
    return f"{name}^"


def plan_report(session: Session, study: Study) -> ReportPlan:
    """Collect the SR versions' inputs.

    Raises:
        ResultNotReadyError: the study is not triaged yet, or holds no image a model reads.
    """
    if study.status not in (StudyStatus.TRIAGED, StudyStatus.FAILED):
        raise ResultNotReadyError(f"study is {study.status.value}; the report follows triage")
    paths = tuple(
        session.scalars(
            sa.select(Instance.stored_path)
            .join(Series, Series.id == Instance.series_id)
            .where(Instance.study_id == study.id, Series.role == SeriesRole.DIAGNOSTIC)
            .order_by(Series.id, Instance.id)
        )
    )
    if not paths:
        raise ResultNotReadyError(
            "the study holds no CT, radiograph or mammogram (only objects kept for the "
            "record), so there is no AI result to report"
        )
    by_key: dict[str, list[object]] = defaultdict(list)
    volume_series: set[str] = set()
    left_out = 0
    rows = session.execute(
        sa.select(Finding, Series, Instance.sop_instance_uid)
        .join(Series, Series.id == Finding.series_id)
        .outerjoin(Instance, Instance.id == Finding.instance_id)
        .where(Finding.study_id == study.id)
        .order_by(Finding.score.desc(), Finding.id)
    ).all()
    for finding, series, sop_uid in rows:
        if not finding.reportable:
            left_out += 1
            continue
        # A CT finding belongs to its series; a radiograph finding to its image.
        key = series.series_instance_uid if series.is_volume or sop_uid is None else sop_uid
        by_key[key].append(_detected(finding))
    for uid in session.scalars(
        sa.select(Series.series_instance_uid).where(
            Series.study_id == study.id, Series.is_volume.is_(True)
        )
    ):
        volume_series.add(uid)
    # The result version is the set of jobs behind it (a re-triage makes new jobs); its time
    # is when the last of them finished (a refresh of the study row changes neither).
    last_job, job_count, finished = session.execute(
        sa.select(sa.func.max(Job.id), sa.func.count(), sa.func.max(Job.finished_at)).where(
            Job.study_id == study.id, Job.state != JobState.SUPERSEDED
        )
    ).one()
    triaged_at = finished or study.triaged_at or study.received_at
    hospital = session.get(Hospital, study.hospital_id)
    return ReportPlan(
        study_id=study.id,
        stored_paths=paths,
        findings_by_key=dict(by_key),
        left_out=left_out,
        model_name=study.model_name or "unknown",
        model_version=study.model_version or "unknown",
        suspicion_score=None if study.suspicion_score is None else float(study.suspicion_score),
        priority=study.priority or Priority.NEEDS_MANUAL_REVIEW,
        triaged_at=triaged_at,
        result_version=(
            f"{study.model_name or ''}:{study.model_version or ''}:jobs:{last_job}:{job_count}"
        ),
        institution_name=hospital.name if hospital else "",
        no_score_reason=None
        if study.suspicion_score is not None
        else (study.failure_reason or "no model scored this study"),
        spacing_estimated=bool(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(Series)
                .where(Series.study_id == study.id, Series.spacing_estimated.is_(True))
            )
        ),
        decisions=tuple(_decisions(session, study, volume_series)),
    )


def _decisions(session: Session, study: Study, volume_series: set[str]) -> list[Decided]:
    rows = session.execute(
        sa.select(Review, User, Hospital)
        .join(User, User.id == Review.user_id)
        .outerjoin(Hospital, Hospital.id == User.hospital_id)
        .where(Review.study_id == study.id)
        .order_by(Review.created_at, Review.id)
    ).all()
    decided = []
    for review, user, centre in rows:
        corrected = []
        for box in review.corrected_boxes or []:
            series_uid = str(box.get("series_instance_uid", ""))
            sop_uid = box.get("sop_instance_uid")
            key = series_uid if series_uid in volume_series or not sop_uid else str(sop_uid)
            corrected.append(
                (key, int(box.get("label", 0)), tuple(float(v) for v in box["box_index"]))
            )
        decided.append(
            Decided(
                review_id=review.id,
                observer_name=_person_name(user.display_name or user.username),
                login_name=user.username,
                organization=centre.name if centre is not None else "oncotriage",
                decided_at=review.created_at,
                decision=review.decision.value,
                note=review.note or "",
                corrected=tuple(corrected),
            )
        )
    return decided


def build_versions(store: ContentStore, plan: ReportPlan) -> list[Dataset]:
    """The AI result SR, then one verified SR per decision (oldest first)."""
    from oncotriage.datasets.reader import read_dataset
    from oncotriage.serving.reports.sr import CorrectedRegion, Verification, build_sr

    sources = [
        read_dataset(store.path(path), stop_before_pixels=True) for path in plan.stored_paths
    ]
    common = {
        "algorithm_name": plan.model_name,
        "algorithm_version": plan.model_version,
        "suspicion_score": plan.suspicion_score,
        "priority": plan.priority,
        "no_score_reason": plan.no_score_reason,
        "spacing_estimated": plan.spacing_estimated,
        "left_out": plan.left_out,
        "institution_name": plan.institution_name or None,
    }
    ai = build_sr(
        sources,
        plan.findings_by_key,  # type: ignore[arg-type]
        series_instance_uid=plan.ai_series_uid,
        sop_instance_uid=plan.ai_sop_uid,
        series_number=AI_SERIES_NUMBER,
        series_description=AI_SERIES_DESCRIPTION,
        content_datetime=plan.triaged_at,
        **common,  # type: ignore[arg-type]
    )
    versions: list[Dataset] = [ai]
    for decided in plan.decisions:
        verification = Verification(
            observer_name=decided.observer_name,
            organization=decided.organization,
            verified_at=decided.decided_at,
            decision=decided.decision,
            note=decided.note,
            corrected_boxes=tuple(
                CorrectedRegion(key=key, label=label, box_index=box)
                for key, label, box in decided.corrected
            ),
            login_name=decided.login_name,
        )
        versions.append(
            build_sr(
                sources,
                plan.findings_by_key,  # type: ignore[arg-type]
                series_instance_uid=plan.verified_series_uid,
                sop_instance_uid=plan.verified_sop_uid(decided.review_id),
                series_number=VERIFIED_SERIES_NUMBER,
                series_description=VERIFIED_SERIES_DESCRIPTION,
                content_datetime=decided.decided_at,
                verification=verification,
                predecessors=[versions[-1]],
                **common,  # type: ignore[arg-type]
            )
        )
    return versions


def result_instances(session: Session, store: ContentStore, study: Study) -> list[Dataset]:
    """The study's result SR objects (AI result, then verified versions); empty before triage.

    Reads the database in ``session`` (the caller ends its transaction), then the stored
    headers of the source images.
    """
    try:
        plan = plan_report(session, study)
    except ResultNotReadyError:
        return []
    return build_versions(store, plan)
