"""Follow-ups as their hospital sees them: what is due, what is overdue, what was done."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.api.care_schemas import FollowUpItemPublic
from oncotriage.serving.api.schemas import HospitalRef
from oncotriage.serving.db.models import FollowUp, Hospital
from oncotriage.serving.security import Principal, visible_hospital_ids

FollowUpState = Literal["open", "overdue", "closed", "all"]


def list_followups(
    session: Session,
    principal: Principal,
    *,
    now: datetime,
    state: FollowUpState = "open",
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[FollowUpItemPublic], int]:
    """A hospital's follow-ups (the centre's specialists: their union's), soonest due first."""
    hospitals = visible_hospital_ids(session, principal)
    conditions: list[sa.ColumnElement[bool]] = []
    if hospitals is not None:
        conditions.append(FollowUp.hospital_id.in_(hospitals))
    if state == "open":
        conditions.append(FollowUp.closed_at.is_(None))
    elif state == "overdue":
        conditions += [FollowUp.closed_at.is_(None), FollowUp.due_at < now]
    elif state == "closed":
        conditions.append(FollowUp.closed_at.is_not(None))
    total = session.scalar(sa.select(sa.func.count()).select_from(FollowUp).where(*conditions))
    rows = session.execute(
        sa.select(FollowUp, Hospital.name)
        .join(Hospital, Hospital.id == FollowUp.hospital_id)
        .where(*conditions)
        .order_by(FollowUp.due_at, FollowUp.id)
        .offset(skip)
        .limit(limit)
    ).all()
    data = [
        FollowUpItemPublic(
            id=followup.id,
            patient_id=followup.patient_id,
            timeline_url=f"/v1/patients/{followup.patient_id}/timeline",
            hospital=HospitalRef(id=followup.hospital_id, name=name),
            referral_id=followup.referral_id,
            category=followup.category,
            months=followup.months,
            modality=followup.modality,
            due_at=followup.due_at,
            overdue=followup.closed_at is None and followup.due_at < now,
            closed_at=followup.closed_at,
        )
        for followup, name in rows
    ]
    return data, int(total or 0)
