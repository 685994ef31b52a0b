"""Reading studies with tenancy applied: a study outside the caller's reach does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from oncotriage.serving.api.schemas import HospitalRef, StudyPublic
from oncotriage.serving.db.models import Hospital, Instance, Series, Study
from oncotriage.serving.enums import Priority, ReviewStatus, StudyStatus
from oncotriage.serving.errors import NotFoundError
from oncotriage.serving.security import Principal, study_visibility_clause
from oncotriage.serving.urls import study_url


class StudyNotFoundError(NotFoundError):
    """No such study for this caller (also when it belongs to another hospital)."""

    kind = "study"


def get_visible_study(
    session: Session, principal: Principal, study_id: str, *, for_update: bool = False
) -> Study:
    """The study if ``principal`` may see it.

    Raises:
        StudyNotFoundError: unknown, or another hospital's (the same answer, so a caller
            cannot learn that a study exists elsewhere).
    """
    query = (
        sa.select(Study)
        .options(joinedload(Study.hospital))
        .where(Study.id == study_id, study_visibility_clause(session, principal))
    )
    if for_update:
        query = query.with_for_update(of=Study)
    study = session.scalar(query)
    if study is None:
        raise StudyNotFoundError(study_id)
    return study


@dataclass(frozen=True)
class StudyCounts:
    series: int
    instances: int


def counts_for(session: Session, study_ids: Sequence[str]) -> dict[str, StudyCounts]:
    """Series and instance counts per study, in two grouped queries."""
    if not study_ids:
        return {}
    series = dict(
        session.execute(
            sa.select(Series.study_id, sa.func.count())
            .where(Series.study_id.in_(study_ids))
            .group_by(Series.study_id)
        ).all()
    )
    instances = dict(
        session.execute(
            sa.select(Instance.study_id, sa.func.count())
            .where(Instance.study_id.in_(study_ids))
            .group_by(Instance.study_id)
        ).all()
    )
    return {
        study_id: StudyCounts(int(series.get(study_id, 0)), int(instances.get(study_id, 0)))
        for study_id in study_ids
    }


def study_fields(study: Study, counts: StudyCounts) -> dict[str, object]:
    """The :class:`StudyPublic` fields of a study row."""
    hospital: Hospital = study.hospital
    return {
        "id": study.id,
        "url": study_url(study.id),
        "study_instance_uid": study.study_instance_uid,
        "hospital": HospitalRef(id=hospital.id, name=hospital.name),
        "modality": study.modality,
        "status": study.status,
        "priority": study.priority,
        "suspicion_score": study.suspicion_score,
        "model_name": study.model_name,
        "model_version": study.model_version,
        "failure_reason": study.failure_reason,
        "review_status": study.review_status,
        "decision": study.decision,
        "series_count": counts.series,
        "instance_count": counts.instances,
        "received_at": study.received_at,
        "queued_at": study.queued_at,
        "processing_started_at": study.processing_started_at,
        "triaged_at": study.triaged_at,
        "time_to_triage_s": study.time_to_triage_s,
        "decided_at": study.decided_at,
    }


def study_public(session: Session, study: Study) -> StudyPublic:
    counts = counts_for(session, [study.id])[study.id]
    return StudyPublic.model_validate(study_fields(study, counts))


def list_studies(
    session: Session,
    principal: Principal,
    *,
    status: StudyStatus | None = None,
    priority: Priority | None = None,
    review_status: ReviewStatus | None = None,
    hospital_id: int | None = None,
    study_instance_uid: str | None = None,
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[StudyPublic], int]:
    """Studies the caller may see, newest first, with the total count."""
    conditions = [study_visibility_clause(session, principal)]
    if study_instance_uid is not None:
        conditions.append(Study.study_instance_uid == study_instance_uid)
    if status is not None:
        conditions.append(Study.status == status)
    if priority is not None:
        conditions.append(Study.priority == priority)
    if review_status is not None:
        conditions.append(Study.review_status == review_status)
    if hospital_id is not None:
        conditions.append(Study.hospital_id == hospital_id)
    total = session.scalar(sa.select(sa.func.count()).select_from(Study).where(*conditions)) or 0
    rows = list(
        session.scalars(
            sa.select(Study)
            .options(joinedload(Study.hospital))
            .where(*conditions)
            .order_by(Study.received_at.desc(), Study.id)
            .offset(skip)
            .limit(limit)
        )
    )
    counts = counts_for(session, [row.id for row in rows])
    data = [StudyPublic.model_validate(study_fields(row, counts[row.id])) for row in rows]
    return data, int(total)
