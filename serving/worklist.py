"""The specialists' worklist, claims (leases on a case) and decisions.

A claim is a lease held in the study row itself (``claimed_by_id``, ``claim_expires_at``)
and taken with one conditional ``UPDATE``: the row is claimable when nobody holds it,
the holder's lease has expired, or the caller holds it already (renewal). PostgreSQL
re-checks the condition after a concurrent claim commits, and SQLite has one writer at a
time, so of two specialists claiming together exactly one gets the row; the other gets
:class:`ClaimConflictError` (HTTP 409). A decision is written under the same condition,
so only the holder of a live claim can decide, and only once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from oncotriage.datasets.boxes import index_box_problem
from oncotriage.serving import audit
from oncotriage.serving.api.schemas import (
    ClaimPublic,
    CorrectedBox,
    HospitalRef,
    ReferralPublic,
    ReviewCreate,
    ReviewPublic,
    WorklistItemPublic,
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
    Priority,
    ReferralStatus,
    ReviewStatus,
    StudyStatus,
    WebhookEvent,
)
from oncotriage.serving.errors import ConflictError, FieldInputError
from oncotriage.serving.outbox import enqueue_webhook
from oncotriage.serving.referrals import require_licence, start_referral
from oncotriage.serving.security import Principal, centre_of, study_visibility_clause
from oncotriage.serving.settings import Settings
from oncotriage.serving.studies import counts_for, get_visible_study, study_fields
from oncotriage.serving.urls import study_url

FLAGGED = (Priority.URGENT, Priority.SUSPICIOUS, Priority.NEEDS_MANUAL_REVIEW)


class ClaimConflictError(ConflictError):
    """Someone else holds the case, it is decided already, or the caller holds no claim."""


class ReviewInputError(FieldInputError):
    """A decision whose content does not fit the study (e.g. a box on a foreign series)."""

    loc = ("body", "corrected_boxes")


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
) -> tuple[list[WorklistItemPublic], int]:
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
            WorklistItemPublic.model_validate(
                {
                    **study_fields(row, counts[row.id]),
                    "waiting_minutes": round(waiting, 2),
                    "sla_minutes": sla,
                    "overdue": waiting > sla,
                    "claimed_by": row.claimed_by.username
                    if live_claim and row.claimed_by
                    else None,
                    "claim_expires_at": row.claim_expires_at if live_claim else None,
                }
            )
        )
    return items, int(total)


def _user(session: Session, principal: Principal) -> User:
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
) -> ClaimPublic:
    """Take (or renew) the lease on a case; commits.

    Raises:
        StudyNotFoundError: not the caller's to see.
        ClaimConflictError: another specialist holds it, or it is decided.
    """
    study = get_visible_study(session, principal, study_id)
    user = _user(session, principal)
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
    return ClaimPublic(
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
) -> ReviewPublic:
    """Record the decision of the specialist holding the claim; commits.

    ``refer`` also opens a referral from the study's hospital to its centre. The hospital
    is told through its webhook.

    Raises:
        StudyNotFoundError, ClaimConflictError, ReviewInputError.
    """
    study = get_visible_study(session, principal, study_id)
    user = _user(session, principal)
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
    session.commit()
    return review_public(row, user.username, referral.id if referral else None)


def review_public(row: Review, reviewer: str, referral_id: int | None) -> ReviewPublic:
    return ReviewPublic(
        id=row.id,
        study_id=row.study_id,
        decision=row.decision,
        note=row.note,
        corrected_boxes=_stored_boxes(row.corrected_boxes),
        reviewer=reviewer,
        model_name=row.model_name,
        model_version=row.model_version,
        created_at=row.created_at,
        referral_id=referral_id,
    )


def _stored_boxes(stored: list[dict[str, Any]] | None) -> list[CorrectedBox] | None:
    """Stored corrections as the API shows them; a box stored before boxes were checked
    (NaN, infinite, inverted) is left out rather than break the response's schema."""
    if stored is None:
        return None
    return [
        CorrectedBox.model_validate(box)
        for box in stored
        if index_box_problem(box.get("box_index", [])) is None
    ]


def reviews_of(session: Session, study: Study) -> list[ReviewPublic]:
    rows = session.execute(
        sa.select(Review, User.username, Referral.id)
        .join(User, User.id == Review.user_id)
        .outerjoin(Referral, Referral.review_id == Review.id)
        .where(Review.study_id == study.id)
        .order_by(Review.created_at, Review.id)
    ).all()
    return [review_public(row, username, referral_id) for row, username, referral_id in rows]


def referrals(
    session: Session,
    principal: Principal,
    *,
    status: ReferralStatus | None = None,
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[ReferralPublic], int]:
    """Referrals the caller is party to: a hospital's own (sent, or received by a centre),
    a specialist's centre's, or all for administrators."""
    conditions: list[sa.ColumnElement[bool]] = []
    if not principal.is_admin:
        if principal.hospital_id is None:
            return [], 0
        if principal.on_hospital_side:
            conditions.append(
                sa.or_(
                    Referral.from_hospital_id == principal.hospital_id,
                    Referral.to_centre_id == principal.hospital_id,
                )
            )
        else:
            conditions.append(Referral.to_centre_id == principal.hospital_id)
    if status is not None:
        conditions.append(Referral.status == status)
    total = session.scalar(sa.select(sa.func.count()).select_from(Referral).where(*conditions)) or 0
    referrer = sa.orm.aliased(User)
    rows = session.execute(
        sa.select(Referral, referrer.username)
        .join(referrer, referrer.id == Referral.created_by_id)
        .options(joinedload(Referral.from_hospital), joinedload(Referral.to_centre))
        .where(*conditions)
        .order_by(Referral.created_at.desc(), Referral.id.desc())
        .offset(skip)
        .limit(limit)
    ).all()
    data = [
        ReferralPublic(
            id=row.id,
            study_id=row.study_id,
            study_url=study_url(row.study_id),
            from_hospital=HospitalRef(id=row.from_hospital.id, name=row.from_hospital.name),
            to_centre=HospitalRef(id=row.to_centre.id, name=row.to_centre.name),
            status=row.status,
            note=row.note,
            referred_by=username,
            created_at=row.created_at,
        )
        for row, username in rows
    ]
    return data, int(total)
