"""Schemas of the referral lifecycle, patients' timelines and the union's figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from oncotriage.serving.api.schemas import HospitalRef
from oncotriage.serving.enums import LungRads, OutcomeKind, ReferralStage, ReferralStatus


class ReferralPublic(BaseModel):
    id: int
    study_id: str
    study_url: str
    patient_id: int | None
    from_hospital: HospitalRef
    to_centre: HospitalRef
    status: ReferralStatus
    stage: ReferralStage
    owner: HospitalRef | None = Field(description="The hospital that must act next.")
    due_at: datetime | None
    overdue: bool
    escalated_at: datetime | None
    note: str
    referred_by: str
    created_at: datetime
    appointment_at: datetime | None
    scheduled_at: datetime | None
    seen_at: datetime | None
    diagnosed_at: datetime | None
    returned_at: datetime | None
    return_plan: str | None
    acknowledged_at: datetime | None
    closed_at: datetime | None
    lost_at: datetime | None


class ReferralsPublic(BaseModel):
    data: list[ReferralPublic]
    count: int


class FollowUpCreate(BaseModel):
    months: Literal[3, 6, 12]
    category: LungRads = Field(description="Lung-RADS-style category recorded with the plan.")
    modality: str = Field(default="CT", max_length=16)


class ReferralCreate(BaseModel):
    """A community doctor's request to refer one of their hospital's studies up."""

    study_id: str = Field(max_length=64)
    note: str = Field(default="", max_length=4000, description="why, for the centre")


class ReferralStepCreate(BaseModel):
    """The body of a step; each step reads only its own fields."""

    appointment_at: datetime | None = Field(default=None, description="schedule")
    outcome: OutcomeKind | None = Field(default=None, description="diagnosis")
    site: str = Field(default="", max_length=200, description="diagnosis (malignant)")
    histology: str = Field(default="", max_length=200, description="diagnosis (malignant)")
    stage: str = Field(default="", max_length=32, description="diagnosis: cancer stage")
    plan: str = Field(default="", max_length=4000, description="return: the plan")
    followup: FollowUpCreate | None = Field(default=None, description="return: surveillance")
    note: str = Field(default="", max_length=4000, description="lost: why")


class TimelineEntryPublic(BaseModel):
    at: datetime
    kind: str
    hospital: str
    study_id: str | None
    referral_id: int | None
    detail: dict[str, Any] | None


class FollowUpPublic(BaseModel):
    followup_id: int
    category: LungRads
    months: int
    modality: str
    due_at: datetime


class TimelinePublic(BaseModel):
    patient_id: int
    data: list[TimelineEntryPublic]
    count: int
    open_followups: list[FollowUpPublic]


class FigureRow(BaseModel):
    hospital: str
    month: str = Field(description="YYYY-MM of the studies' arrival")
    screened: int
    flagged: int
    referred_up: int
    returned_down: int
    confirmed_cancers: int
    flags_with_outcome: int
    ppv: float | None = Field(description="Confirmed cancers / flagged studies with an outcome.")
    median_days_flag_to_decision: float | None
    median_days_decision_to_seen: float | None
    median_days_seen_to_diagnosis: float | None
    overdue_steps: int
    lost_to_follow_up: int


class FiguresPublic(BaseModel):
    data: list[FigureRow]
    count: int


class FollowUpItemPublic(BaseModel):
    id: int
    patient_id: int
    timeline_url: str
    hospital: HospitalRef = Field(description="Where the repeat study is due.")
    referral_id: int | None
    category: LungRads
    months: int
    modality: str
    due_at: datetime
    overdue: bool
    closed_at: datetime | None = Field(description="When a new study of the patient arrived.")


class FollowUpsPublic(BaseModel):
    data: list[FollowUpItemPublic]
    count: int


class OutcomeCreate(BaseModel):
    """An outcome against the patient and the study that led to it."""

    study_id: str = Field(max_length=64, description="the study that led to the outcome")
    kind: OutcomeKind
    site: str = Field(default="", max_length=200, description="malignant: the site")
    histology: str = Field(default="", max_length=200, description="malignant: the histology")
    stage: str = Field(default="", max_length=32, description="malignant: the cancer stage")


class OutcomePublic(BaseModel):
    id: int
    patient_id: int
    study_id: str
    study_url: str
    referral_id: int | None
    kind: OutcomeKind
    site: str
    histology: str
    stage: str
    ai_priority: str | None = Field(description="the AI result on the study")
    ai_suspicion_score: float | None
    model: str | None
    review_id: int | None = Field(description="the specialist's latest decision on the study")
    decision: str | None
    recorded_by: str
    recorded_at: datetime
