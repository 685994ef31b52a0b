"""Events for hospitals: rows in the webhook outbox, written in the same transaction as the
change they announce (so an event is never lost nor sent for a change that rolled back).

Two kinds of row share the outbox and its delivery machinery (leases, retries, backoff):
webhook events (a signed JSON POST) and result pushes (``result.sr``: the study's DICOM SR
sent to the hospital's PACS, see :mod:`oncotriage.serving.push`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import (
    Hospital,
    ResultDestination,
    Review,
    Study,
    WebhookDelivery,
)
from oncotriage.serving.enums import JobState, WebhookEvent
from oncotriage.serving.urls import study_url


def study_payload(study: Study, event: WebhookEvent, *, now: datetime) -> dict[str, Any]:
    """The JSON body announcing a study's status or decision (no patient identifiers)."""
    return {
        "type": event.value,
        "occurred_at": now.isoformat(),
        "study": {
            "id": study.id,
            "study_instance_uid": study.study_instance_uid,
            "status": study.status.value,
            "priority": study.priority.value if study.priority else None,
            "suspicion_score": study.suspicion_score,
            "model_name": study.model_name,
            "model_version": study.model_version,
            "failure_reason": study.failure_reason,
            "review_status": study.review_status.value,
            "decision": study.decision.value if study.decision else None,
            "url": study_url(study.id),
        },
    }


def enqueue_webhook(
    session: Session,
    study: Study,
    event: WebhookEvent,
    *,
    now: datetime,
    max_attempts: int,
    review: Review | None = None,
) -> WebhookDelivery | None:
    """Queue ``event`` for the study's hospital; ``None`` when it has no webhook URL."""
    hospital = session.get(Hospital, study.hospital_id)
    if hospital is None or not hospital.webhook_url:
        return None
    payload = study_payload(study, event, now=now)
    # the X-Oncotriage-Delivery id, stored with the event: the same on every retry
    payload["delivery_id"] = str(uuid.uuid4())
    if review is not None:
        payload["review"] = {
            "id": review.id,
            "decision": review.decision.value,
            "note": review.note,
            "decided_at": review.created_at.isoformat() if review.created_at else None,
        }
    delivery = WebhookDelivery(
        hospital_id=hospital.id,
        study_id=study.id,
        event=event,
        payload=payload,
        state=JobState.QUEUED,
        max_attempts=max_attempts,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    return delivery


def enqueue_result_push(
    session: Session,
    study: Study,
    *,
    now: datetime,
    max_attempts: int,
    review: Review | None = None,
) -> WebhookDelivery | None:
    """Queue the study's SR for the hospital's result destination; ``None`` when it has none.

    Without ``review`` the AI result version is pushed (after triage); with it, the verified
    version of that decision. The SR itself is built when the row is sent (from the stored
    result: the same object on every retry).
    """
    kind = session.scalar(
        sa.select(ResultDestination.kind).where(ResultDestination.hospital_id == study.hospital_id)
    )
    if kind is None:
        return None
    payload: dict[str, Any] = {
        "type": WebhookEvent.RESULT_SR.value,
        "study_id": study.id,
        "version": "verified" if review is not None else "ai",
    }
    if review is not None:
        payload["review_id"] = review.id
    delivery = WebhookDelivery(
        hospital_id=study.hospital_id,
        study_id=study.id,
        event=WebhookEvent.RESULT_SR,
        payload=payload,
        destination_kind=kind,
        state=JobState.QUEUED,
        max_attempts=max_attempts,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    return delivery
