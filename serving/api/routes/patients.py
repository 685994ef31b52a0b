"""Patients: find a study's patient, and the patient's timeline."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel

from oncotriage.serving.api.care_schemas import (
    FollowUpPublic,
    OutcomeCreate,
    OutcomePublic,
    TimelineEntryPublic,
    TimelinePublic,
)
from oncotriage.serving.api.deps import CurrentPrincipal, RowId, SessionDep
from oncotriage.serving.api.schemas import Message
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import User
from oncotriage.serving.outcomes import OutcomeInput, record_outcome
from oncotriage.serving.patients import patient_of_study, timeline
from oncotriage.serving.studies import get_visible_study
from oncotriage.serving.urls import study_url

router = APIRouter(prefix="/v1", tags=["patients"])


class StudyPatientPublic(BaseModel):
    study_id: str
    patient_id: int | None
    timeline_url: str | None


@router.get(
    "/studies/{study_id}/patient",
    response_model=StudyPatientPublic,
    responses={404: {"model": Message, "description": "No such study (or not yours)."}},
)
def read_study_patient(
    study_id: str, session: SessionDep, principal: CurrentPrincipal
) -> StudyPatientPublic:
    """The patient a study is of (``null`` when it carried no Patient ID)."""
    study = get_visible_study(session, principal, study_id)
    patient_id = patient_of_study(session, study.id)
    return StudyPatientPublic(
        study_id=study_id,
        patient_id=patient_id,
        timeline_url=f"/v1/patients/{patient_id}/timeline" if patient_id is not None else None,
    )


@router.get(
    "/patients/{patient_id}/timeline",
    response_model=TimelinePublic,
    responses={404: {"model": Message, "description": "No such patient of yours."}},
)
def read_timeline(
    patient_id: RowId, session: SessionDep, principal: CurrentPrincipal
) -> TimelinePublic:
    """Studies, AI results, decisions, referral steps, follow-ups and outcomes in order.
    A hospital sees its own patients' entries; the centre sees its union's."""
    entries, open_followups = timeline(session, principal, patient_id)
    return TimelinePublic(
        patient_id=patient_id,
        data=[TimelineEntryPublic(**entry.__dict__) for entry in entries],
        count=len(entries),
        open_followups=[FollowUpPublic(**followup) for followup in open_followups],
    )


@router.post(
    "/patients/{patient_id}/outcomes",
    response_model=OutcomePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"model": Message, "description": "A hospital's system token."},
        404: {"model": Message, "description": "No such patient of yours."},
        422: {"model": Message, "description": "The study is not one of this patient's."},
    },
)
def create_outcome(
    patient_id: RowId, body: OutcomeCreate, session: SessionDep, principal: CurrentPrincipal
) -> OutcomePublic:
    """Record an outcome outside a referral (e.g. "no cancer at 12 months" for a patient
    returned down): malignant (site, histology, stage), benign or no_cancer_12_months, against
    the patient and the study that led to it. It links back to the study's AI result and the
    latest decision on it, shows on the timeline and counts in the figures. Audited."""
    given = OutcomeInput(
        study_id=body.study_id,
        kind=body.kind,
        site=body.site,
        histology=body.histology,
        cancer_stage=body.stage,
    )
    outcome, study, review = record_outcome(session, principal, patient_id, given, now=utcnow())
    recorder = session.get(User, outcome.recorded_by_id)
    reply = OutcomePublic(
        id=outcome.id,
        patient_id=patient_id,
        study_id=study.id,
        study_url=study_url(study.id),
        referral_id=outcome.referral_id,
        kind=outcome.kind,
        site=outcome.site,
        histology=outcome.histology,
        stage=outcome.cancer_stage,
        ai_priority=study.priority.value if study.priority else None,
        ai_suspicion_score=study.suspicion_score,
        model=f"{study.model_name}:{study.model_version}" if study.model_name else None,
        review_id=review.id if review else None,
        decision=review.decision.value if review else None,
        recorded_by=recorder.username if recorder else "",
        recorded_at=outcome.recorded_at,
    )
    return reply
