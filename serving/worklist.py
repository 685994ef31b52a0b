"""The specialists' worklist: flagged, undecided studies of their centre's hospitals.

Claims on its cases are in :mod:`oncotriage.serving.claims`, decisions in
:mod:`oncotriage.serving.decisions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from oncotriage.serving.db.models import Study
from oncotriage.serving.enums import Priority, ReviewStatus, StudyStatus
from oncotriage.serving.security import Principal, study_visibility_clause
from oncotriage.serving.settings import Settings
from oncotriage.serving.studies import CountedStudy, counts_for

FLAGGED = (Priority.URGENT, Priority.SUSPICIOUS, Priority.NEEDS_MANUAL_REVIEW)


@dataclass(frozen=True)
class WorklistEntry:
    """A flagged study with how long it has waited against its SLA and its live claim."""

    counted: CountedStudy
    waiting_minutes: float
    sla_minutes: float
    overdue: bool
    claimed_by: str | None
    claim_expires_at: datetime | None


def _rank() -> sa.Case[int]:
    return sa.case(
        {priority.value: priority.rank for priority in Priority},
        value=Study.priority,
        else_=len(Priority),
    )


def _overdue(settings: Settings, now: datetime) -> sa.Case[int]:
    """0 for a study waiting longer than its priority's SLA, else 1 (sorts overdue first)."""
    whens = [
        (
            sa.and_(
                Study.priority == priority,
                Study.received_at < now - timedelta(minutes=settings.sla_minutes(priority)),
            ),
            0,
        )
        for priority in Priority
    ]
    return sa.case(*whens, else_=1)


def worklist(
    session: Session,
    principal: Principal,
    settings: Settings,
    *,
    now: datetime,
    hospital_id: int | None = None,
    priority: Priority | None = None,
    status: StudyStatus | None = None,
    include_decided: bool = False,
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[WorklistEntry], int]:
    """The caller's worklist: flagged, undecided studies of their centre's hospitals.

    Order: studies past their SLA first, then by priority (urgent, suspicious,
    needs_manual_review, routine), then the longest waiting first.
    """
    conditions: list[sa.ColumnElement[bool]] = [study_visibility_clause(session, principal)]
    conditions.append(
        Study.priority == priority if priority is not None else Study.priority.in_(FLAGGED)
    )
    if not include_decided:
        conditions.append(Study.review_status == ReviewStatus.PENDING)
    if hospital_id is not None:
        conditions.append(Study.hospital_id == hospital_id)
    if status is not None:
        conditions.append(Study.status == status)
    total = session.scalar(sa.select(sa.func.count()).select_from(Study).where(*conditions)) or 0
    rows = list(
        session.scalars(
            sa.select(Study)
            .options(joinedload(Study.hospital), joinedload(Study.claimed_by))
            .where(*conditions)
            .order_by(_overdue(settings, now), _rank(), Study.received_at, Study.id)
            .offset(skip)
            .limit(limit)
        )
    )
    counts = counts_for(session, [row.id for row in rows])
    items = []
    for row in rows:
        waiting = max(0.0, (now - row.received_at).total_seconds() / 60)
        sla = settings.sla_minutes(row.priority or Priority.NEEDS_MANUAL_REVIEW)
        live_claim = row.claim_expires_at is not None and row.claim_expires_at > now
        items.append(
            WorklistEntry(
                CountedStudy(row, counts[row.id]),
                waiting_minutes=round(waiting, 2),
                sla_minutes=sla,
                overdue=waiting > sla,
                claimed_by=row.claimed_by.username if live_claim and row.claimed_by else None,
                claim_expires_at=row.claim_expires_at if live_claim else None,
            )
        )
    return items, int(total)
