"""The referral lifecycle, up to the centre and back down, with licences and escalation.

A specialist's ``refer`` opens a referral (``decisions.review`` calls :func:`start_referral`).
Every open stage has an owner (the hospital that must act) and a due date:

========== ========================================= ===================== =================
stage      next step                                 owner                 due
========== ========================================= ===================== =================
requested  the centre accepts it with an appointment centre                requested + accept
scheduled  the patient is seen                       centre                the appointment
seen       the diagnosis is recorded                 centre                seen + diagnosis
diagnosed  returned down (plan, follow-up) or closed centre                diagnosed + accept
returned   the community hospital acknowledges it    referring hospital    returned + ack
acknowledged  closed                                 centre                acknowledged + accept
========== ========================================= ===================== =================

A step past its due date escalates once (:func:`escalate_overdue`): a ``referral.overdue``
webhook to the owner through the outbox, ``overdue`` on the owner's list and in ``/metrics``.
Nothing silently ends: a referral ends ``closed`` after a recorded outcome, or ``lost`` with
who marked it. Creating, accepting and returning referrals needs a referral licence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving import audit
from oncotriage.serving.db.models import (
    FollowUp,
    Hospital,
    Outcome,
    Referral,
    ReferralLicence,
    WebhookDelivery,
)
from oncotriage.serving.enums import (
    AuditAction,
    JobState,
    LungRads,
    OutcomeKind,
    ReferralStage,
    ReferralStatus,
    WebhookEvent,
)
from oncotriage.serving.errors import ConflictError, FieldInputError, ForbiddenError, NotFoundError
from oncotriage.serving.patients import patient_of_study
from oncotriage.serving.security import Principal, centre_of
from oncotriage.serving.settings import Settings
from oncotriage.serving.studies import get_visible_study

#: Average month for follow-up due dates (3/6/12 months).
_DAYS_PER_MONTH = 30.4375


class LicenceError(ForbiddenError):
    """The user holds no valid referral licence (the message says why)."""


class ReferralNotFoundError(NotFoundError):
    """Unknown referral, or not one the caller is party to."""

    kind = "referral"


class StepError(ConflictError, ValueError):
    """The step does not follow from the referral's stage (the message says what does)."""


class StepInputError(FieldInputError, StepError):
    """The step lacks what it records (an appointment date, an outcome, a plan)."""


def require_licence(session: Session, user_id: int | None, *, now: datetime) -> None:
    """Raise :class:`LicenceError` unless the user holds a live referral licence."""
    licences = session.scalars(
        sa.select(ReferralLicence).where(
            ReferralLicence.user_id == user_id, ReferralLicence.revoked_at.is_(None)
        )
    ).all()
    if not licences:
        raise LicenceError(
            "you hold no referral licence; only licensed staff may create, accept or return "
            "referrals (an administrator records one with `oncotriage admin grant-licence`)"
        )
    latest = max(licence.valid_until for licence in licences)
    if latest <= now:
        raise LicenceError(
            f"your referral licence expired on {latest.date().isoformat()}; ask an "
            "administrator to renew it"
        )


def _set_stage(
    referral: Referral, stage: ReferralStage, owner: int | None, due: datetime | None
) -> None:
    referral.stage, referral.owner_hospital_id, referral.due_at = stage, owner, due
    referral.escalated_at = None
    if stage is ReferralStage.REQUESTED:
        referral.status = ReferralStatus.OPEN
    elif stage.is_open:
        referral.status = ReferralStatus.ACCEPTED
    else:
        referral.status = ReferralStatus.CLOSED


def start_referral(
    session: Session, settings: Settings, referral: Referral, *, now: datetime
) -> None:
    """Open the lifecycle of a new up-referral (owner: the centre, to accept it)."""
    referral.patient_id = patient_of_study(session, referral.study_id)
    _set_stage(
        referral,
        ReferralStage.REQUESTED,
        referral.to_centre_id,
        now + timedelta(days=settings.referral_accept_days),
    )


class ReferralConflictError(StepError):
    """The study already has an open referral."""


def request_referral(
    session: Session,
    settings: Settings,
    principal: Principal,
    study_id: str,
    *,
    note: str = "",
    now: datetime,
) -> Referral:
    """A community doctor requests a referral of one of their hospital's studies up to its
    centre (no specialist's decision behind it: ``review_id`` is None). Audited; commits.

    Raises:
        ForbiddenError: not a community doctor.
        StudyNotFoundError: not a study of the doctor's hospital.
        LicenceError: no live referral licence.
        ReferralConflictError: the study already has an open referral.
    """
    if not principal.is_community_doctor:
        raise ForbiddenError(
            "a referral is requested by a community doctor at the study's hospital; the "
            "centre's specialists refer from the worklist (decision `refer`)"
        )
    study = get_visible_study(session, principal, study_id)
    require_licence(session, principal.user_id, now=now)
    open_referral = session.scalar(
        sa.select(Referral.id).where(
            Referral.study_id == study.id,
            Referral.stage.not_in([ReferralStage.CLOSED, ReferralStage.LOST]),
        )
    )
    if open_referral is not None:
        raise ReferralConflictError(
            f"this study already has an open referral (/v1/referrals/{open_referral})"
        )
    hospital = session.get(Hospital, study.hospital_id)
    assert hospital is not None and principal.user_id is not None
    referral = Referral(
        study_id=study.id,
        review_id=None,
        from_hospital_id=hospital.id,
        to_centre_id=centre_of(hospital),
        status=ReferralStatus.OPEN,
        note=note,
        created_by_id=principal.user_id,
        created_at=now,
    )
    session.add(referral)
    start_referral(session, settings, referral, now=now)
    session.flush()
    audit.record(
        session,
        principal,
        AuditAction.REFERRAL_STEP,
        study_id=study.id,
        detail={"referral_id": referral.id, "step": "requested"},
    )
    session.commit()
    return referral


@dataclass(frozen=True)
class FollowUpPlan:
    months: int
    category: LungRads
    modality: str = "CT"


@dataclass(frozen=True)
class Step:
    """One step on a referral; which fields apply depends on ``action``."""

    action: str  # schedule | seen | diagnosis | return | acknowledge | close | lost
    appointment_at: datetime | None = None
    outcome: OutcomeKind | None = None
    site: str = ""
    histology: str = ""
    cancer_stage: str = ""
    plan: str = ""
    followup: FollowUpPlan | None = None
    note: str = ""


def visible_referral(session: Session, principal: Principal, referral_id: int) -> Referral:
    """The referral if ``principal`` is party to it (its centre or its referring hospital)."""
    referral = session.get(Referral, referral_id)
    if referral is None:
        raise ReferralNotFoundError(referral_id)
    if principal.is_admin:
        return referral
    if principal.hospital_id not in (referral.to_centre_id, referral.from_hospital_id):
        raise ReferralNotFoundError(referral_id)
    if not principal.on_hospital_side and principal.hospital_id != referral.to_centre_id:
        raise ReferralNotFoundError(referral_id)
    return referral


_CENTRE_STEPS = {
    # action: stages it may follow
    "schedule": (ReferralStage.REQUESTED,),
    "seen": (ReferralStage.SCHEDULED,),
    "diagnosis": (ReferralStage.SEEN,),
    "return": (ReferralStage.DIAGNOSED,),
    "close": (ReferralStage.DIAGNOSED, ReferralStage.ACKNOWLEDGED),
    "lost": tuple(stage for stage in ReferralStage if stage.is_open),
}
_LICENSED = {"schedule", "return"}


def take_step(
    session: Session,
    settings: Settings,
    principal: Principal,
    referral_id: int,
    step: Step,
    *,
    now: datetime,
) -> Referral:
    """Move a referral on by one step; audited; commits.

    Raises:
        ReferralNotFoundError, LicenceError, StepError, ForbiddenError (wrong side).
    """
    referral = visible_referral(session, principal, referral_id)
    stage = referral.stage or ReferralStage.REQUESTED
    if step.action == "acknowledge":
        if principal.hospital_id != referral.from_hospital_id:
            raise ForbiddenError("only the referring hospital acknowledges a returned patient")
        allowed: tuple[ReferralStage, ...] = (ReferralStage.RETURNED,)
    elif step.action in _CENTRE_STEPS:
        if principal.on_hospital_side:
            raise ForbiddenError(f"{step.action!r} is recorded by the centre's specialists")
        allowed = _CENTRE_STEPS[step.action]
    else:
        raise StepError(f"unknown step {step.action!r}")
    if stage not in allowed:
        raise StepError(
            f"the referral is {stage.value}; {step.action!r} follows "
            + " or ".join(s.value for s in allowed)
        )
    if step.action in _LICENSED:
        require_licence(session, principal.user_id, now=now)
    accept = timedelta(days=settings.referral_accept_days)
    centre, home = referral.to_centre_id, referral.from_hospital_id
    detail: dict[str, Any] = {"referral_id": referral.id, "step": step.action}
    if step.action == "schedule":
        if step.appointment_at is None:
            raise StepInputError("scheduling needs the appointment date (appointment_at)")
        referral.scheduled_at, referral.appointment_at = now, step.appointment_at
        _set_stage(referral, ReferralStage.SCHEDULED, centre, step.appointment_at)
    elif step.action == "seen":
        referral.seen_at = now
        _set_stage(
            referral,
            ReferralStage.SEEN,
            centre,
            now + timedelta(days=settings.referral_diagnosis_days),
        )
    elif step.action == "diagnosis":
        if step.outcome is None:
            raise StepInputError(
                "a diagnosis needs an outcome: malignant, benign or no_cancer_12_months"
            )
        if referral.patient_id is None:
            raise StepError("the referred study is not linked to a patient (no Patient ID)")
        referral.diagnosed_at = now
        outcome = Outcome(
            patient_id=referral.patient_id,
            referral_id=referral.id,
            study_id=referral.study_id,
            review_id=referral.review_id,
            kind=step.outcome,
            site=step.site,
            histology=step.histology,
            cancer_stage=step.cancer_stage,
            recorded_by_id=principal.user_id,
            recorded_at=now,
        )
        session.add(outcome)
        detail["outcome"] = step.outcome.value
        _set_stage(referral, ReferralStage.DIAGNOSED, centre, now + accept)
    elif step.action == "return":
        if not step.plan.strip():
            raise StepInputError("returning a patient needs a plan for the community hospital")
        referral.returned_at, referral.return_plan = now, step.plan
        if step.followup is not None:
            _add_followup(session, principal, referral, step.followup, now=now)
            detail["followup_months"] = step.followup.months
        _set_stage(
            referral,
            ReferralStage.RETURNED,
            home,
            now + timedelta(days=settings.referral_acknowledge_days),
        )
    elif step.action == "acknowledge":
        referral.acknowledged_at = now
        _set_stage(referral, ReferralStage.ACKNOWLEDGED, centre, now + accept)
    elif step.action == "close":
        referral.closed_at = now
        _set_stage(referral, ReferralStage.CLOSED, None, None)
    else:  # lost
        referral.lost_at, referral.lost_by_id = now, principal.user_id
        detail["note"] = step.note
        _set_stage(referral, ReferralStage.LOST, None, None)
    audit.record(
        session, principal, AuditAction.REFERRAL_STEP, study_id=referral.study_id, detail=detail
    )
    session.commit()
    return referral


def _add_followup(
    session: Session, principal: Principal, referral: Referral, plan: FollowUpPlan, *, now: datetime
) -> FollowUp:
    if plan.months not in (3, 6, 12):
        raise StepInputError("a follow-up is in 3, 6 or 12 months")
    assert referral.patient_id is not None
    followup = FollowUp(
        patient_id=referral.patient_id,
        hospital_id=referral.from_hospital_id,
        referral_id=referral.id,
        category=plan.category,
        months=plan.months,
        modality=plan.modality,
        due_at=now + timedelta(days=plan.months * _DAYS_PER_MONTH),
        created_by_id=principal.user_id,
        created_at=now,
    )
    session.add(followup)
    session.flush()
    audit.record(
        session,
        principal,
        AuditAction.FOLLOWUP_SET,
        study_id=referral.study_id,
        detail={"followup_id": followup.id, "months": plan.months, "category": plan.category},
    )
    return followup


def party_clause(principal: Principal) -> sa.ColumnElement[bool]:
    """Referrals the caller is party to: a hospital's own (sent, or received by a centre),
    a specialist's centre's, or all for administrators."""
    if principal.is_admin:
        return sa.true()
    if principal.hospital_id is None:
        return sa.false()
    if principal.on_hospital_side:
        return sa.or_(
            Referral.from_hospital_id == principal.hospital_id,
            Referral.to_centre_id == principal.hospital_id,
        )
    return Referral.to_centre_id == principal.hospital_id


def overdue_clause(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        Referral.due_at.is_not(None),
        Referral.due_at < now,
        Referral.stage.not_in([ReferralStage.CLOSED, ReferralStage.LOST]),
    )


def escalate_overdue(session: Session, settings: Settings, *, now: datetime) -> int:
    """Escalate every step that went past its due date and was not escalated yet: a
    ``referral.overdue`` webhook to its owner (through the outbox) and an audit event.
    Idempotent; commits. Returns how many steps it escalated."""
    rows = session.scalars(
        sa.select(Referral)
        .where(overdue_clause(now), Referral.escalated_at.is_(None))
        .with_for_update(skip_locked=True)
    ).all()
    for referral in rows:
        referral.escalated_at = now
        owner = session.get(Hospital, referral.owner_hospital_id)
        if owner is not None and owner.webhook_url:
            session.add(
                WebhookDelivery(
                    hospital_id=owner.id,
                    study_id=referral.study_id,
                    event=WebhookEvent.REFERRAL_OVERDUE,
                    payload=overdue_payload(referral, now=now),
                    state=JobState.QUEUED,
                    max_attempts=settings.webhook_max_attempts,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        audit.record(
            session,
            None,
            AuditAction.REFERRAL_STEP,
            study_id=referral.study_id,
            detail={"referral_id": referral.id, "step": "escalated"},
        )
    session.commit()
    return len(rows)


def overdue_payload(referral: Referral, *, now: datetime) -> dict[str, Any]:
    """The JSON body of ``referral.overdue`` (no patient identifiers)."""
    assert referral.stage is not None and referral.due_at is not None
    return {
        "type": WebhookEvent.REFERRAL_OVERDUE.value,
        "occurred_at": now.isoformat(),
        "referral": {
            "id": referral.id,
            "stage": referral.stage.value,
            "due_at": referral.due_at.isoformat(),
            "overdue_days": round((now - referral.due_at).total_seconds() / 86400, 2),
            "study_id": referral.study_id,
            "url": f"/v1/referrals/{referral.id}",
        },
    }


def overdue_counts(session: Session, *, now: datetime) -> dict[tuple[int, str], int]:
    """Overdue steps by (owner hospital id, stage), for ``/metrics`` (ids, not names)."""
    rows = session.execute(
        sa.select(Referral.owner_hospital_id, Referral.stage, sa.func.count())
        .where(overdue_clause(now), Referral.owner_hospital_id.is_not(None))
        .group_by(Referral.owner_hospital_id, Referral.stage)
    ).all()
    return {
        (int(owner or 0), stage.value if stage else ""): int(count) for owner, stage, count in rows
    }


def list_referrals(
    session: Session,
    principal: Principal,
    *,
    now: datetime,
    status: ReferralStatus | None = None,
    stage: ReferralStage | None = None,
    owned: bool = False,
    overdue: bool | None = None,
    skip: int = 0,
    limit: int = 100,
) -> tuple[list[Referral], int]:
    """Referrals the caller is party to, overdue first, then newest; ``owned`` keeps those
    waiting on the caller's hospital (its to-do list)."""
    conditions = [party_clause(principal)]
    if status is not None:
        conditions.append(Referral.status == status)
    if stage is not None:
        conditions.append(Referral.stage == stage)
    if owned:
        conditions.append(Referral.owner_hospital_id == principal.hospital_id)
    if overdue is not None:
        conditions.append(overdue_clause(now) if overdue else sa.not_(overdue_clause(now)))
    total = session.scalar(sa.select(sa.func.count()).select_from(Referral).where(*conditions))
    rows = session.scalars(
        sa.select(Referral)
        .where(*conditions)
        .order_by(
            sa.case((overdue_clause(now), 0), else_=1),
            Referral.created_at.desc(),
            Referral.id.desc(),
        )
        .offset(skip)
        .limit(limit)
    ).all()
    return list(rows), int(total or 0)
