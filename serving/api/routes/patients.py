"""Patients: find a study's patient, and the patient's timeline."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from oncotriage.serving.api.care_schemas import (
    FollowUpPublic,
    TimelineEntryPublic,
    TimelinePublic,
)
from oncotriage.serving.api.deps import CurrentPrincipal, SessionDep
from oncotriage.serving.api.schemas import Message
from oncotriage.serving.patients import PatientNotFoundError, patient_of_study, timeline
from oncotriage.serving.studies import StudyNotFoundError, get_visible_study

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
    try:
        study = get_visible_study(session, principal, study_id)
    except StudyNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "study not found") from None
    patient_id = patient_of_study(session, study.id)
    session.rollback()
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
    patient_id: int, session: SessionDep, principal: CurrentPrincipal
) -> TimelinePublic:
    """Studies, AI results, decisions, referral steps, follow-ups and outcomes in order.
    A hospital sees its own patients' entries; the centre sees its union's."""
    try:
        entries, open_followups = timeline(session, principal, patient_id)
    except PatientNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "patient not found") from None
    return TimelinePublic(
        patient_id=patient_id,
        data=[TimelineEntryPublic(**entry.__dict__) for entry in entries],
        count=len(entries),
        open_followups=[FollowUpPublic(**followup) for followup in open_followups],
    )
