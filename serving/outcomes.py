"""Outcomes recorded outside a referral: a diagnosis, or "no cancer at 12 months", against a
patient and the study that led to it (e.g. for a patient returned down and followed up).

An outcome links back to the study's AI result (``study_id``) and the specialist's latest
decision on it (``review_id``); the timeline shows it and the union's figures count it
(flags with an outcome, confirmed cancers, PPV). A referral's diagnosis step records its own
(serving/referrals.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving import audit
from oncotriage.serving.db.models import Outcome, PatientStudy, Review, Study
from oncotriage.serving.enums import AuditAction, OutcomeKind
from oncotriage.serving.errors import ForbiddenError, InputError
from oncotriage.serving.patients import visible_patient
from oncotriage.serving.security import Principal


class OutcomeInputError(InputError):
    """The outcome cannot be recorded as asked (the message says why)."""


@dataclass(frozen=True)
class OutcomeInput:
    study_id: str
    kind: OutcomeKind
    site: str = ""
    histology: str = ""
    cancer_stage: str = ""


def record_outcome(
    session: Session, principal: Principal, patient_id: int, given: OutcomeInput, *, now: datetime
) -> tuple[Outcome, Study, Review | None]:
    """Record ``given`` against the patient and one of their studies the caller sees; audited;
    commits.

    Raises:
        ForbiddenError: a hospital's system token (outcomes are recorded by clinicians).
        PatientNotFoundError: no such patient of the caller's.
        OutcomeInputError: the study is not one of this patient's that the caller sees.
    """
    if principal.is_hospital or principal.user_id is None:
        raise ForbiddenError(
            "outcomes are recorded by a clinician's own account, not a hospital's system token"
        )
    hospitals = visible_patient(session, principal, patient_id)
    study = session.scalar(
        sa.select(Study)
        .join(PatientStudy, PatientStudy.study_id == Study.id)
        .where(PatientStudy.patient_id == patient_id, Study.id == given.study_id)
    )
    if study is None or (hospitals is not None and study.hospital_id not in hospitals):
        raise OutcomeInputError(
            f"study {given.study_id} is not one of this patient's studies that you can see; "
            "record the outcome against the study that led to it"
        )
    review = session.scalars(
        sa.select(Review)
        .where(Review.study_id == study.id)
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(1)
    ).first()
    malignant = given.kind is OutcomeKind.MALIGNANT
    outcome = Outcome(
        patient_id=patient_id,
        referral_id=None,
        study_id=study.id,
        review_id=review.id if review else None,
        kind=given.kind,
        site=given.site if malignant else "",
        histology=given.histology if malignant else "",
        cancer_stage=given.cancer_stage if malignant else "",
        recorded_by_id=principal.user_id,
        recorded_at=now,
    )
    session.add(outcome)
    session.flush()
    detail: dict[str, Any] = {"outcome_id": outcome.id, "kind": given.kind.value}
    audit.record(session, principal, AuditAction.OUTCOME_RECORDED, study_id=study.id, detail=detail)
    session.commit()
    return outcome, study, review
