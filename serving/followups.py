"""Follow-ups as their hospital sees them: what is due, what is overdue, what was done."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

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
) -> tuple[list[tuple[FollowUp, str]], int]:
    """A hospital's follow-ups (the centre's specialists: their union's), soonest due first,
    each with its hospital's name, and how many there are in all."""
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
    data = [(followup, str(name)) for followup, name in rows]
    return data, int(total or 0)
