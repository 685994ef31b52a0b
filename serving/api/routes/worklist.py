"""The specialists' worklist and claims on its cases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from oncotriage.serving.api.deps import (
    CurrentSpecialist,
    HospitalFilter,
    Limit,
    SessionDep,
    SettingsDep,
    Skip,
    TrailDep,
)
from oncotriage.serving.api.public import claim_public, worklist_item_public
from oncotriage.serving.api.schemas import ClaimPublic, Message, WorklistPublic
from oncotriage.serving.claims import claim, release
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.enums import AuditAction, Priority, StudyStatus
from oncotriage.serving.worklist import worklist

router = APIRouter(prefix="/v1/worklist", tags=["worklist"])

CLAIM_RESPONSES: dict[int | str, dict[str, object]] = {
    404: {"model": Message, "description": "No such study on your worklist."},
    409: {"model": Message, "description": "Claimed by someone else, or already decided."},
}


@router.get("", response_model=WorklistPublic)
def read_worklist(
    session: SessionDep,
    principal: CurrentSpecialist,
    settings: SettingsDep,
    trail: TrailDep,
    hospital_id: HospitalFilter = None,
    priority: Priority | None = None,
    status_: Annotated[StudyStatus | None, Query(alias="status")] = None,
    include_decided: bool = False,
    skip: Skip = 0,
    limit: Limit = 100,
) -> WorklistPublic:
    """Flagged, undecided studies of the centre's hospitals.

    Order: past their SLA first, then urgent, suspicious, needs_manual_review (and
    routine when asked for with ``priority=routine``), then longest waiting first.
    """
    entries, count = worklist(
        session,
        principal,
        settings,
        now=utcnow(),
        hospital_id=hospital_id,
        priority=priority,
        status=status_,
        include_decided=include_decided,
        skip=skip,
        limit=limit,
    )
    trail.add(principal, AuditAction.WORKLIST_READ, detail={"count": len(entries)})
    return WorklistPublic(data=[worklist_item_public(entry) for entry in entries], count=count)


@router.post("/{study_id}/claim", response_model=ClaimPublic, responses=CLAIM_RESPONSES)
def claim_study(
    study_id: str, session: SessionDep, principal: CurrentSpecialist, settings: SettingsDep
) -> ClaimPublic:
    """Take the case (a lease of ``claim_lease_s``); claiming again renews it. 409 when
    another specialist holds it."""
    lease = claim(session, principal, study_id, lease_s=settings.claim_lease_s, now=utcnow())
    return claim_public(lease)


@router.post(
    "/{study_id}/release",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=CLAIM_RESPONSES,
)
def release_study(study_id: str, session: SessionDep, principal: CurrentSpecialist) -> None:
    """Give the case back to the worklist."""
    release(session, principal, study_id, now=utcnow())
