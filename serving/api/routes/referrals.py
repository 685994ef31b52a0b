"""Referrals from community hospitals to their centre, seen by both sides."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from oncotriage.serving.api.deps import CurrentPrincipal, Limit, SessionDep, Skip
from oncotriage.serving.api.schemas import ReferralsPublic
from oncotriage.serving.enums import ReferralStatus
from oncotriage.serving.worklist import referrals

router = APIRouter(prefix="/v1/referrals", tags=["referrals"])


@router.get("", response_model=ReferralsPublic)
def read_referrals(
    session: SessionDep,
    principal: CurrentPrincipal,
    status_: Annotated[ReferralStatus | None, Query(alias="status")] = None,
    skip: Skip = 0,
    limit: Limit = 100,
) -> ReferralsPublic:
    """A hospital sees the referrals it sent (a centre also those it received); a
    specialist sees their centre's."""
    data, count = referrals(session, principal, status=status_, skip=skip, limit=limit)
    session.rollback()
    return ReferralsPublic(data=data, count=count)
