"""Claims: a specialist's lease on a case of the worklist.

A claim is a lease held in the study row itself (``claimed_by_id``, ``claim_expires_at``)
and taken with one conditional ``UPDATE``: the row is claimable when nobody holds it,
the holder's lease has expired, or the caller holds it already (renewal). PostgreSQL
re-checks the condition after a concurrent claim commits, and SQLite has one writer at a
time, so of two specialists claiming together exactly one gets the row; the other gets
:class:`ClaimConflictError` (HTTP 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving import audit
from oncotriage.serving.db.models import Claim, Study, User
from oncotriage.serving.enums import AuditAction, ClaimOutcome, ReviewStatus, StudyStatus
from oncotriage.serving.errors import ConflictError
from oncotriage.serving.security import Principal
from oncotriage.serving.studies import get_visible_study


class ClaimConflictError(ConflictError):
    """Someone else holds the case, it is decided already, or the caller holds no claim."""


@dataclass(frozen=True)
class Lease:
    """A specialist's live claim on a case."""

    study_id: str
    claimed_by: str
    claimed_at: datetime
    expires_at: datetime


def specialist_user(session: Session, principal: Principal) -> User:
    """The caller's own account (claims and decisions are a person's)."""
    user = session.get(User, principal.user_id) if principal.user_id is not None else None
    if user is None:
        raise ClaimConflictError("only a specialist can claim a case")
    return user


#: A case can be claimed and decided once the model has scored it or flagged it for manual
#: review; before that a decision would race the model's own result.
DECIDABLE_STATUSES = (StudyStatus.TRIAGED, StudyStatus.FAILED)


def not_yet_triaged(status: StudyStatus | str) -> str:
    return (
        f"this study is still {StudyStatus(status).value}: it can be claimed and decided once "
        "the model has triaged it or flagged it for manual review"
    )


def claim(
    session: Session, principal: Principal, study_id: str, *, lease_s: float, now: datetime
) -> Lease:
    """Take (or renew) the lease on a case; commits.

    Raises:
        StudyNotFoundError: not the caller's to see.
        ClaimConflictError: another specialist holds it, or it is decided.
    """
    study = get_visible_study(session, principal, study_id)
    user = specialist_user(session, principal)
    expires = now + timedelta(seconds=lease_s)
    result = session.execute(
        sa.update(Study)
        .where(
            Study.id == study.id,
            Study.review_status == ReviewStatus.PENDING,
            Study.status.in_(DECIDABLE_STATUSES),
            sa.or_(
                Study.claimed_by_id.is_(None),
                Study.claim_expires_at.is_(None),
                Study.claim_expires_at <= now,
                Study.claimed_by_id == user.id,
            ),
        )
        .values(claimed_by_id=user.id, claim_expires_at=expires),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        session.expire_all()
        current = session.get(Study, study_id)
        if current is not None and current.review_status is ReviewStatus.DECIDED:
            raise ClaimConflictError("this case has been decided already")
        if current is not None and current.status not in DECIDABLE_STATUSES:
            raise ClaimConflictError(not_yet_triaged(current.status))
        holder = current.claimed_by.username if current and current.claimed_by else "someone"
        until = current.claim_expires_at.isoformat() if current and current.claim_expires_at else ""
        raise ClaimConflictError(f"claimed by {holder} until {until}")
    open_claims = list(
        session.scalars(
            sa.select(Claim).where(Claim.study_id == study.id, Claim.ended_at.is_(None))
        )
    )
    mine = None
    for row in open_claims:
        if row.user_id == user.id and mine is None:
            mine = row
        else:
            row.ended_at, row.outcome = now, ClaimOutcome.EXPIRED
    if mine is None:
        mine = Claim(study_id=study.id, user_id=user.id, claimed_at=now, expires_at=expires)
        session.add(mine)
    mine.expires_at = expires
    audit.record(session, principal, AuditAction.CLAIM, study_id=study.id)
    session.commit()
    return Lease(
        study_id=study.id, claimed_by=user.username, claimed_at=mine.claimed_at, expires_at=expires
    )


def release(session: Session, principal: Principal, study_id: str, *, now: datetime) -> None:
    """Give a claimed case back to the worklist; commits.

    Raises:
        ClaimConflictError: the caller does not hold it (administrators may release any).
    """
    study = get_visible_study(session, principal, study_id)
    holder = [] if principal.is_admin else [Study.claimed_by_id == principal.user_id]
    result = session.execute(
        sa.update(Study)
        .where(Study.id == study.id, Study.claimed_by_id.is_not(None), *holder)
        .values(claimed_by_id=None, claim_expires_at=None),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        raise ClaimConflictError("you do not hold a claim on this case")
    for row in session.scalars(
        sa.select(Claim).where(Claim.study_id == study.id, Claim.ended_at.is_(None))
    ):
        row.ended_at, row.outcome = now, ClaimOutcome.RELEASED
    audit.record(session, principal, AuditAction.RELEASE, study_id=study.id)
    session.commit()
