"""Referrals from community hospitals to their centre and back, seen by both sides."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from oncotriage.serving.api.care_schemas import (
    ReferralCreate,
    ReferralPublic,
    ReferralsPublic,
    ReferralStepCreate,
)
from oncotriage.serving.api.deps import (
    CurrentPrincipal,
    Limit,
    RowId,
    SessionDep,
    SettingsDep,
    Skip,
)
from oncotriage.serving.api.public import referral_public
from oncotriage.serving.api.schemas import Message
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.enums import ReferralStage, ReferralStatus
from oncotriage.serving.referrals import (
    FollowUpPlan,
    Step,
    escalate_overdue,
    list_referrals,
    request_referral,
    take_step,
    visible_referral,
)

router = APIRouter(prefix="/v1/referrals", tags=["referrals"])

StepName = Literal["schedule", "seen", "diagnosis", "return", "acknowledge", "close", "lost"]


@router.get("", response_model=ReferralsPublic)
def read_referrals(
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    status_: Annotated[ReferralStatus | None, Query(alias="status")] = None,
    stage: ReferralStage | None = None,
    owned: Annotated[bool, Query(description="Only those waiting on your hospital.")] = False,
    overdue: bool | None = None,
    skip: Skip = 0,
    limit: Limit = 100,
) -> ReferralsPublic:
    """A hospital sees the referrals it sent (a centre also those it received); a
    specialist sees their centre's. Overdue steps come first (and escalate on the way)."""
    now = utcnow()
    escalate_overdue(session, settings, now=now)
    rows, count = list_referrals(
        session,
        principal,
        now=now,
        status=status_,
        stage=stage,
        owned=owned,
        overdue=overdue,
        skip=skip,
        limit=limit,
    )
    return ReferralsPublic(
        data=[referral_public(session, row, now=now) for row in rows], count=count
    )


@router.post(
    "",
    response_model=ReferralPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"model": Message, "description": "Not a community doctor, or no licence."},
        404: {"model": Message, "description": "No such study of your hospital."},
        409: {"model": Message, "description": "The study already has an open referral."},
    },
)
def create_referral(
    body: ReferralCreate,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
) -> ReferralPublic:
    """A community doctor (licensed) requests a referral of one of their hospital's studies
    up to its centre; the centre then owns the next step (schedule). Audited."""
    now = utcnow()
    referral = request_referral(
        session, settings, principal, body.study_id, note=body.note, now=now
    )
    return referral_public(session, referral, now=now)


@router.get(
    "/{referral_id}",
    response_model=ReferralPublic,
    responses={404: {"model": Message, "description": "No such referral of yours."}},
)
def read_referral(
    referral_id: RowId, session: SessionDep, principal: CurrentPrincipal
) -> ReferralPublic:
    referral = visible_referral(session, principal, referral_id)
    return referral_public(session, referral, now=utcnow())


@router.post(
    "/{referral_id}/{step}",
    response_model=ReferralPublic,
    responses={
        403: {"model": Message, "description": "No referral licence, or the other side's step."},
        404: {"model": Message, "description": "No such referral of yours."},
        409: {"model": Message, "description": "The step does not follow the referral's stage."},
        422: {"description": "The step lacks what it records (appointment, outcome, plan)."},
    },
)
def create_step(
    referral_id: RowId,
    step: StepName,
    body: ReferralStepCreate,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
) -> ReferralPublic:
    """Move a referral on: the centre schedules, records the visit and the diagnosis,
    returns the patient down (with a plan and a follow-up) or closes; the referring
    hospital acknowledges a return; either marks a patient lost to follow-up."""
    followup = (
        FollowUpPlan(body.followup.months, body.followup.category, body.followup.modality)
        if body.followup is not None
        else None
    )
    now = utcnow()
    referral = take_step(
        session,
        settings,
        principal,
        referral_id,
        Step(
            action=step,
            appointment_at=body.appointment_at,
            outcome=body.outcome,
            site=body.site,
            histology=body.histology,
            cancer_stage=body.stage,
            plan=body.plan,
            followup=followup,
            note=body.note,
        ),
        now=now,
    )
    return referral_public(session, referral, now=now)
