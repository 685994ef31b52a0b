"""Follow-ups (surveillance) due at community hospitals."""

from __future__ import annotations

from fastapi import APIRouter

from oncotriage.serving.api.care_schemas import FollowUpsPublic
from oncotriage.serving.api.deps import CurrentPrincipal, Limit, SessionDep, Skip
from oncotriage.serving.api.public import followup_public
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.followups import FollowUpState, list_followups

router = APIRouter(prefix="/v1/followups", tags=["followups"])


@router.get("", response_model=FollowUpsPublic)
def read_followups(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: FollowUpState = "open",
    skip: Skip = 0,
    limit: Limit = 100,
) -> FollowUpsPublic:
    """A hospital's follow-ups (a specialist: their union's), soonest due first; ``state``:
    ``open`` (default), ``overdue``, ``closed`` or ``all``. A new study of the patient at
    any hospital of the union closes a follow-up."""
    now = utcnow()
    rows, count = list_followups(session, principal, now=now, state=state, skip=skip, limit=limit)
    return FollowUpsPublic(
        data=[followup_public(followup, name, now=now) for followup, name in rows], count=count
    )
