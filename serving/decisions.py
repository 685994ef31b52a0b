"""Decisions: a specialist's review of a claimed case (refer, return, more imaging).

A decision is written under the claim's condition (:mod:`oncotriage.serving.claims`), so
only the holder of a live claim can decide, and only once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.datasets.boxes import index_box_problem
from oncotriage.serving import audit
from oncotriage.serving.api.schemas import CorrectedBox, ReviewCreate
from oncotriage.serving.claims import (
    DECIDABLE_STATUSES,
    ClaimConflictError,
    not_yet_triaged,
    specialist_user,
)
from oncotriage.serving.db.models import (
    Claim,
    Hospital,
    Instance,
    Referral,
    Review,
    Series,
    Study,
    User,
)
from oncotriage.serving.enums import (
    AuditAction,
    ClaimOutcome,
    Decision,
    ReferralStatus,
    ReviewStatus,
    WebhookEvent,
)
from oncotriage.serving.errors import FieldInputError
from oncotriage.serving.outbox import enqueue_result_push, enqueue_webhook
from oncotriage.serving.referrals import require_licence, start_referral
from oncotriage.serving.security import Principal, centre_of
from oncotriage.serving.settings import Settings
from oncotriage.serving.studies import get_visible_study


class ReviewInputError(FieldInputError):
    """A decision whose content does not fit the study (e.g. a box on a foreign series)."""

    loc = ("body", "corrected_boxes")


@dataclass(frozen=True)
class DecisionRecord:
    """A decision row with who made it and the referral it opened (``refer``)."""

    review: Review
    reviewer: str
    referral_id: int | None


def _check_boxes(session: Session, study: Study, boxes: list[CorrectedBox]) -> None:
    """Each box names a series (and, on radiographs, an image) of this study and lies inside
    that image (:func:`~oncotriage.datasets.boxes.index_box_problem`)."""
    series_by_uid = {
        series.series_instance_uid: series
        for series in session.scalars(sa.select(Series).where(Series.study_id == study.id))
    }
    for box in boxes:
        series = series_by_uid.get(box.series_instance_uid)
        if series is None:
            raise ReviewInputError(f"series {box.series_instance_uid} is not part of this study")
        query = sa.select(Instance.rows, Instance.columns, Instance.frames).where(
            Instance.series_id == series.id
        )
        if box.sop_instance_uid is not None:
            query = query.where(Instance.sop_instance_uid == box.sop_instance_uid)
        sizes = session.execute(query).all()
        if not sizes:
            raise ReviewInputError(f"instance {box.sop_instance_uid} is not in that series")
        extent: tuple[int, ...] = (
            max(size.columns for size in sizes),
            max(size.rows for size in sizes),
        )
        if series.is_volume:
            extent = (*extent, sum(size.frames for size in sizes))
        problem = index_box_problem(box.box_index, extent)
        if problem is not None:
            raise ReviewInputError(f"series {box.series_instance_uid}: {problem}")


def review(
    session: Session,
    principal: Principal,
    study_id: str,
    body: ReviewCreate,
    settings: Settings,
    *,
    now: datetime,
) -> DecisionRecord:
    """Record the decision of the specialist holding the claim; commits.

    ``refer`` also opens a referral from the study's hospital to its centre. The hospital
    is told through its webhook.

    Raises:
        StudyNotFoundError, ClaimConflictError, ReviewInputError.
    """
    study = get_visible_study(session, principal, study_id)
    user = specialist_user(session, principal)
    if body.decision is Decision.REFER:
        require_licence(session, user.id, now=now)  # LicenceError: 403
    if body.corrected_boxes:
        _check_boxes(session, study, body.corrected_boxes)
    result = session.execute(
        sa.update(Study)
        .where(
            Study.id == study.id,
            Study.review_status == ReviewStatus.PENDING,
            Study.status.in_(DECIDABLE_STATUSES),
            Study.claimed_by_id == user.id,
            Study.claim_expires_at > now,
        )
        .values(
            review_status=ReviewStatus.DECIDED,
            decision=body.decision,
            decided_at=now,
            claimed_by_id=None,
            claim_expires_at=None,
        ),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        if study.status not in DECIDABLE_STATUSES:
            raise ClaimConflictError(not_yet_triaged(study.status))
        raise ClaimConflictError(
            "claim the case first (POST /v1/worklist/{id}/claim); your claim may have expired, "
            "or the case is decided already"
        )
    session.refresh(study)
    row = Review(
        study_id=study.id,
        user_id=user.id,
        decision=body.decision,
        note=body.note,
        corrected_boxes=[box.model_dump() for box in body.corrected_boxes]
        if body.corrected_boxes is not None
        else None,
        model_name=study.model_name,
        model_version=study.model_version,
        created_at=now,
    )
    session.add(row)
    session.flush()
    referral = None
    if body.decision is Decision.REFER:
        hospital = session.get(Hospital, study.hospital_id)
        assert hospital is not None
        referral = Referral(
            study_id=study.id,
            review_id=row.id,
            from_hospital_id=hospital.id,
            to_centre_id=centre_of(hospital),
            status=ReferralStatus.OPEN,
            note=body.note,
            created_by_id=user.id,
            created_at=now,
        )
        session.add(referral)
        start_referral(session, settings, referral, now=now)
    for claim_row in session.scalars(
        sa.select(Claim).where(Claim.study_id == study.id, Claim.ended_at.is_(None))
    ):
        claim_row.ended_at, claim_row.outcome = now, ClaimOutcome.DECIDED
    audit.record(
        session,
        principal,
        AuditAction.REVIEW,
        study_id=study.id,
        detail={"decision": body.decision.value, "boxes": len(body.corrected_boxes or [])},
    )
    session.flush()
    enqueue_webhook(
        session,
        study,
        WebhookEvent.STUDY_DECISION,
        now=now,
        max_attempts=settings.webhook_max_attempts,
        review=row,
    )
    enqueue_result_push(
        session, study, now=now, max_attempts=settings.webhook_max_attempts, review=row
    )
    session.commit()
    return DecisionRecord(row, user.username, referral.id if referral else None)


def reviews_of(session: Session, study: Study) -> list[DecisionRecord]:
    """The decisions on a study, oldest first."""
    rows = session.execute(
        sa.select(Review, User.username, Referral.id)
        .join(User, User.id == Review.user_id)
        .outerjoin(Referral, Referral.review_id == Review.id)
        .where(Review.study_id == study.id)
        .order_by(Review.created_at, Review.id)
    ).all()
    return [DecisionRecord(row, username, referral_id) for row, username, referral_id in rows]
