"""Patients: studies of one person linked across the hospitals of a union, and their timeline.

A patient is known only by a keyed pseudonym, HMAC-SHA256 of Issuer of Patient ID + Patient
ID under ``Settings.patient_key``; neither identifier is stored, logged or counted. The
patient row belongs to one union (its centre), so nothing links across unions.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving import audit
from oncotriage.serving.db.models import (
    FollowUp,
    Hospital,
    Outcome,
    Patient,
    PatientStudy,
    Referral,
    Review,
    Study,
    User,
)
from oncotriage.serving.enums import AuditAction
from oncotriage.serving.errors import NotFoundError
from oncotriage.serving.security import Principal, centre_of, visible_hospital_ids
from oncotriage.serving.settings import Settings


class PatientNotFoundError(NotFoundError):
    """Unknown patient, or none of the caller's (the same answer: existence is not leaked)."""

    kind = "patient"


def _key(settings: Settings) -> bytes:
    if settings.patient_key is not None:
        return settings.patient_key.get_secret_value().encode("utf-8")
    # Domain-separated from every other use of the service's secret.
    secret = settings.secret_key.get_secret_value().encode("utf-8")
    return hmac.new(secret, b"oncotriage patient pseudonym", hashlib.sha256).digest()


def patient_pseudonym(settings: Settings, issuer: str, patient_id: str) -> str | None:
    """The keyed pseudonym of a patient; ``None`` without a Patient ID."""
    patient_id = patient_id.strip()
    if not patient_id:
        return None
    message = f"{issuer.strip()}\x00{patient_id}".encode()
    return hmac.new(_key(settings), message, hashlib.sha256).hexdigest()


def pseudonym_of_dataset(settings: Settings, ds: Any) -> str | None:
    """The pseudonym of a pydicom dataset's (0010,0021) Issuer + (0010,0020) Patient ID."""
    return patient_pseudonym(
        settings, str(ds.get("IssuerOfPatientID") or ""), str(ds.get("PatientID") or "")
    )


def link_study(session: Session, study: Study, pseudonym: str | None, *, now: datetime) -> Patient:
    """Link a newly accepted study to its patient (made on first sight) and close the
    patient's open follow-ups that this study answers. Flushes; the caller commits.

    A study without a Patient ID gets a patient of its own (so a referral of it can still
    end in an outcome); it links to no other study.
    """
    if pseudonym is None:
        pseudonym = hashlib.sha256(f"unlinked study\x00{study.id}".encode()).hexdigest()
    hospital = session.get(Hospital, study.hospital_id)
    assert hospital is not None
    centre_id = centre_of(hospital)
    patient = _patient(session, centre_id, pseudonym, now)
    if session.get(PatientStudy, study.id) is None:
        session.add(PatientStudy(study_id=study.id, patient_id=patient.id))
    for followup in session.scalars(
        sa.select(FollowUp).where(FollowUp.patient_id == patient.id, FollowUp.closed_at.is_(None))
    ):
        followup.closed_at, followup.closed_by_study_id = now, study.id
        audit.record(
            session,
            None,
            AuditAction.FOLLOWUP_CLOSED,
            study_id=study.id,
            detail={"followup_id": followup.id},
        )
    session.flush()
    return patient


def _patient(session: Session, centre_id: int, pseudonym: str, now: datetime) -> Patient:
    """The union's patient with this pseudonym, made if new. ``INSERT ... ON CONFLICT DO
    NOTHING`` first, so two hospitals sending the same person at once agree on one row."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    session.execute(
        insert(Patient)
        .values(centre_id=centre_id, pseudonym=pseudonym, created_at=now)
        .on_conflict_do_nothing(index_elements=["centre_id", "pseudonym"])
    )
    patient = session.scalar(
        sa.select(Patient).where(Patient.centre_id == centre_id, Patient.pseudonym == pseudonym)
    )
    assert patient is not None
    return patient


def patient_of_study(session: Session, study_id: str) -> int | None:
    return session.scalar(
        sa.select(PatientStudy.patient_id).where(PatientStudy.study_id == study_id)
    )


def visible_patient(session: Session, principal: Principal, patient_id: int) -> list[int] | None:
    """The hospitals whose entries ``principal`` sees on this patient's timeline
    (``None``: all). Raises :class:`PatientNotFoundError` when the caller has none of them."""
    hospitals = visible_hospital_ids(session, principal)
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise PatientNotFoundError(patient_id)
    if hospitals is None:
        return None
    studies_here = session.scalar(
        sa.select(sa.func.count())
        .select_from(PatientStudy)
        .join(Study, Study.id == PatientStudy.study_id)
        .where(PatientStudy.patient_id == patient_id, Study.hospital_id.in_(hospitals))
    )
    if not studies_here:
        raise PatientNotFoundError(patient_id)
    return hospitals


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str
    hospital: str
    study_id: str | None = None
    referral_id: int | None = None
    detail: dict[str, Any] | None = None


def timeline(
    session: Session, principal: Principal, patient_id: int
) -> tuple[list[TimelineEntry], list[dict[str, Any]]]:
    """The patient's studies, AI results, decisions, referral steps, follow-ups and outcomes
    in time order, limited to what the caller's hospitals may see; audited.

    Returns:
        the entries, and the patient's open follow-ups the caller sees.
    """
    hospitals = visible_patient(session, principal, patient_id)
    centre_id = session.scalar(sa.select(Patient.centre_id).where(Patient.id == patient_id))
    names = {row.id: row.name for row in session.execute(sa.select(Hospital.id, Hospital.name))}
    users = {row.id: row.username for row in session.execute(sa.select(User.id, User.username))}

    def seen(hospital_id: int | None) -> bool:
        return hospitals is None or hospital_id in hospitals

    entries: list[TimelineEntry] = []
    studies = session.scalars(
        sa.select(Study)
        .join(PatientStudy, PatientStudy.study_id == Study.id)
        .where(PatientStudy.patient_id == patient_id)
    ).all()
    visible_studies = {study.id for study in studies if seen(study.hospital_id)}
    for study in studies:
        if study.id not in visible_studies:
            continue
        where = names[study.hospital_id]
        entries.append(
            TimelineEntry(
                study.received_at,
                "study.received",
                where,
                study.id,
                detail={"modality": study.modality},
            )
        )
        if study.triaged_at is not None:
            entries.append(
                TimelineEntry(
                    study.triaged_at,
                    "study.triaged",
                    where,
                    study.id,
                    detail={
                        "priority": study.priority.value if study.priority else None,
                        "suspicion_score": study.suspicion_score,
                        "model": f"{study.model_name}:{study.model_version}",
                    },
                )
            )
    if visible_studies:
        for review in session.scalars(
            sa.select(Review).where(Review.study_id.in_(visible_studies))
        ):
            entries.append(
                TimelineEntry(
                    review.created_at,
                    "decision",
                    names[next(s.hospital_id for s in studies if s.id == review.study_id)],
                    review.study_id,
                    detail={"decision": review.decision.value, "by": users.get(review.user_id)},
                )
            )
    for referral in session.scalars(sa.select(Referral).where(Referral.patient_id == patient_id)):
        if not (seen(referral.from_hospital_id) or seen(referral.to_centre_id)):
            continue
        steps = [
            ("referral.requested", referral.created_at, referral.from_hospital_id),
            ("referral.scheduled", referral.scheduled_at, referral.to_centre_id),
            ("referral.seen", referral.seen_at, referral.to_centre_id),
            ("referral.diagnosed", referral.diagnosed_at, referral.to_centre_id),
            ("referral.returned", referral.returned_at, referral.to_centre_id),
            ("referral.acknowledged", referral.acknowledged_at, referral.from_hospital_id),
            ("referral.closed", referral.closed_at, referral.to_centre_id),
            ("referral.lost", referral.lost_at, referral.to_centre_id),
        ]
        for kind, at, hospital_id in steps:
            if at is None:
                continue
            detail: dict[str, Any] = {}
            if kind == "referral.scheduled" and referral.appointment_at is not None:
                detail["appointment_at"] = referral.appointment_at.isoformat()
            if kind == "referral.returned":
                detail["plan"] = referral.return_plan
            if kind == "referral.lost":
                detail["marked_by"] = users.get(referral.lost_by_id or -1)
            entries.append(
                TimelineEntry(
                    at, kind, names[hospital_id], referral.study_id, referral.id, detail or None
                )
            )
    outcomes = session.scalars(sa.select(Outcome).where(Outcome.patient_id == patient_id)).all()
    review_ids = [outcome.review_id for outcome in outcomes if outcome.review_id is not None]
    decisions = {
        row.id: row.decision.value
        for row in session.execute(
            sa.select(Review.id, Review.decision).where(Review.id.in_(review_ids))
        )
    }
    for outcome in outcomes:
        entries.append(
            TimelineEntry(
                outcome.recorded_at,
                "outcome",
                names[centre_id],
                outcome.study_id if outcome.study_id in visible_studies else None,
                outcome.referral_id,
                detail={
                    "kind": outcome.kind.value,
                    "site": outcome.site,
                    "histology": outcome.histology,
                    "stage": outcome.cancer_stage,
                    "review_id": outcome.review_id,
                    "decision": decisions.get(outcome.review_id or -1),
                    "recorded_by": users.get(outcome.recorded_by_id),
                },
            )
        )
    open_followups: list[dict[str, Any]] = []
    for followup in session.scalars(
        sa.select(FollowUp).where(FollowUp.patient_id == patient_id).order_by(FollowUp.id)
    ):
        where = names[followup.hospital_id]
        detail = {
            "followup_id": followup.id,
            "category": followup.category.value,
            "months": followup.months,
            "modality": followup.modality,
            "due_at": followup.due_at.isoformat(),
        }
        entries.append(TimelineEntry(followup.created_at, "followup.set", where, detail=detail))
        if followup.closed_at is not None:
            closing = followup.closed_by_study_id
            entries.append(
                TimelineEntry(
                    followup.closed_at,
                    "followup.closed",
                    where,
                    closing if closing in visible_studies else None,
                    detail={"followup_id": followup.id},
                )
            )
        elif seen(followup.hospital_id):
            open_followups.append(detail)
    order = {kind: rank for rank, kind in enumerate(_KIND_ORDER)}
    entries.sort(key=lambda entry: (entry.at, order.get(entry.kind, 99)))
    audit.record(session, principal, AuditAction.TIMELINE_READ, detail={"patient_id": patient_id})
    session.commit()
    return entries, open_followups


# Entries at the same instant (one request's changes) in the order they happen.
_KIND_ORDER = (
    "study.received",
    "study.triaged",
    "followup.closed",
    "decision",
    "referral.requested",
    "referral.scheduled",
    "referral.seen",
    "outcome",
    "referral.diagnosed",
    "referral.returned",
    "followup.set",
    "referral.acknowledged",
    "referral.closed",
    "referral.lost",
)
