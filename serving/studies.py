"""Reading studies with tenancy applied: a study outside the caller's reach does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from oncotriage.serving.db.models import Instance, Series, Study
from oncotriage.serving.enums import Priority, ReviewStatus, StudyStatus
from oncotriage.serving.errors import NotFoundError
from oncotriage.serving.security import Principal, study_visibility_clause


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


@dataclass(frozen=True)
class CountedStudy:
    """A study row with its series and instance counts."""

    study: Study
    counts: StudyCounts


def counted_study(session: Session, study: Study) -> CountedStudy:
    return CountedStudy(study, counts_for(session, [study.id])[study.id])


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
) -> tuple[list[CountedStudy], int]:
    """Studies the caller may see, newest first, with their counts, and the total count."""
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
    return [CountedStudy(row, counts[row.id]) for row in rows], int(total)
