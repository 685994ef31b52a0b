"""The API's schemas built from what the data-access modules return (rows, dataclasses):
the routes own what a caller is shown."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from oncotriage.datasets.boxes import index_box_problem
from oncotriage.serving.api.care_schemas import FollowUpItemPublic, ReferralPublic
from oncotriage.serving.api.schemas import (
    ClaimPublic,
    CorrectedBox,
    HospitalRef,
    ReviewPublic,
    StudyPublic,
    WorklistItemPublic,
)
from oncotriage.serving.claims import Lease
from oncotriage.serving.db.models import FollowUp, Hospital, Referral, User
from oncotriage.serving.decisions import DecisionRecord
from oncotriage.serving.enums import ReferralStage
from oncotriage.serving.studies import CountedStudy
from oncotriage.serving.urls import study_url
from oncotriage.serving.worklist import WorklistEntry


def study_fields(counted: CountedStudy) -> dict[str, object]:
    """The :class:`StudyPublic` fields of a study row."""
    study, counts = counted.study, counted.counts
    hospital: Hospital = study.hospital
    return {
        "id": study.id,
        "url": study_url(study.id),
        "study_instance_uid": study.study_instance_uid,
        "hospital": HospitalRef(id=hospital.id, name=hospital.name),
        "modality": study.modality,
        "status": study.status,
        "priority": study.priority,
        "suspicion_score": study.suspicion_score,
        "model_name": study.model_name,
        "model_version": study.model_version,
        "failure_reason": study.failure_reason,
        "review_status": study.review_status,
        "decision": study.decision,
        "series_count": counts.series,
        "instance_count": counts.instances,
        "received_at": study.received_at,
        "queued_at": study.queued_at,
        "processing_started_at": study.processing_started_at,
        "triaged_at": study.triaged_at,
        "time_to_triage_s": study.time_to_triage_s,
        "decided_at": study.decided_at,
    }


def study_public(counted: CountedStudy) -> StudyPublic:
    return StudyPublic.model_validate(study_fields(counted))


def worklist_item_public(entry: WorklistEntry) -> WorklistItemPublic:
    return WorklistItemPublic.model_validate(
        {
            **study_fields(entry.counted),
            "waiting_minutes": entry.waiting_minutes,
            "sla_minutes": entry.sla_minutes,
            "overdue": entry.overdue,
            "claimed_by": entry.claimed_by,
            "claim_expires_at": entry.claim_expires_at,
        }
    )


def claim_public(lease: Lease) -> ClaimPublic:
    return ClaimPublic(
        study_id=lease.study_id,
        claimed_by=lease.claimed_by,
        claimed_at=lease.claimed_at,
        expires_at=lease.expires_at,
    )


def review_public(record: DecisionRecord) -> ReviewPublic:
    row = record.review
    return ReviewPublic(
        id=row.id,
        study_id=row.study_id,
        decision=row.decision,
        note=row.note,
        corrected_boxes=_stored_boxes(row.corrected_boxes),
        reviewer=record.reviewer,
        model_name=row.model_name,
        model_version=row.model_version,
        created_at=row.created_at,
        referral_id=record.referral_id,
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


def referral_public(session: Session, referral: Referral, *, now: datetime) -> ReferralPublic:
    """A referral as both its sides see it (the owner and the referrer are looked up)."""

    def ref(hospital_id: int | None) -> HospitalRef | None:
        hospital = session.get(Hospital, hospital_id) if hospital_id is not None else None
        return HospitalRef(id=hospital.id, name=hospital.name) if hospital else None

    def party(hospital: Hospital) -> HospitalRef:
        return HospitalRef(id=hospital.id, name=hospital.name)

    stage = referral.stage or ReferralStage.REQUESTED
    referrer = session.get(User, referral.created_by_id)
    return ReferralPublic(
        id=referral.id,
        study_id=referral.study_id,
        study_url=study_url(referral.study_id),
        patient_id=referral.patient_id,
        from_hospital=party(referral.from_hospital),
        to_centre=party(referral.to_centre),
        status=referral.status,
        stage=stage,
        owner=ref(referral.owner_hospital_id),
        due_at=referral.due_at,
        overdue=bool(stage.is_open and referral.due_at is not None and referral.due_at < now),
        escalated_at=referral.escalated_at,
        note=referral.note,
        referred_by=referrer.username if referrer else "",
        created_at=referral.created_at,
        appointment_at=referral.appointment_at,
        scheduled_at=referral.scheduled_at,
        seen_at=referral.seen_at,
        diagnosed_at=referral.diagnosed_at,
        returned_at=referral.returned_at,
        return_plan=referral.return_plan,
        acknowledged_at=referral.acknowledged_at,
        closed_at=referral.closed_at,
        lost_at=referral.lost_at,
    )


def followup_public(followup: FollowUp, hospital_name: str, *, now: datetime) -> FollowUpItemPublic:
    """A follow-up as its hospital sees it (overdue: open past its due date)."""
    return FollowUpItemPublic(
        id=followup.id,
        patient_id=followup.patient_id,
        timeline_url=f"/v1/patients/{followup.patient_id}/timeline",
        hospital=HospitalRef(id=followup.hospital_id, name=hospital_name),
        referral_id=followup.referral_id,
        category=followup.category,
        months=followup.months,
        modality=followup.modality,
        due_at=followup.due_at,
        overdue=followup.closed_at is None and followup.due_at < now,
        closed_at=followup.closed_at,
    )
