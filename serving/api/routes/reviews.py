"""Specialists' decisions on studies: refer, return or ask for more imaging."""

from __future__ import annotations

from fastapi import APIRouter, status

from oncotriage.serving.api.deps import (
    CurrentPrincipal,
    CurrentSpecialist,
    SessionDep,
    SettingsDep,
    TrailDep,
)
from oncotriage.serving.api.public import review_public
from oncotriage.serving.api.schemas import (
    Message,
    ReviewCreate,
    ReviewPublic,
    ReviewsPublic,
    ValidationErrorsPublic,
)
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.decisions import review, reviews_of
from oncotriage.serving.enums import AuditAction
from oncotriage.serving.studies import get_visible_study
from oncotriage.serving.urls import STUDIES_PATH

router = APIRouter(prefix=STUDIES_PATH, tags=["reviews"])


@router.post(
    "/{study_id}/review",
    status_code=status.HTTP_201_CREATED,
    response_model=ReviewPublic,
    responses={
        403: {"model": Message, "description": "``refer`` without a referral licence."},
        404: {"model": Message, "description": "No such study on your worklist."},
        409: {"model": Message, "description": "You do not hold a live claim, or it is decided."},
        422: {"model": ValidationErrorsPublic, "description": "Invalid decision or boxes."},
    },
)
def create_review(
    study_id: str,
    body: ReviewCreate,
    session: SessionDep,
    principal: CurrentSpecialist,
    settings: SettingsDep,
) -> ReviewPublic:
    """Decide a claimed case. ``refer`` opens a referral to the centre; the hospital is told
    through its webhook; corrected boxes become training labels (``oncotriage datasets
    from-reviews``)."""
    return review_public(review(session, principal, study_id, body, settings, now=utcnow()))


@router.get(
    "/{study_id}/reviews",
    response_model=ReviewsPublic,
    responses={404: {"model": Message, "description": "No such study (or not yours)."}},
)
def read_reviews(
    study_id: str, session: SessionDep, principal: CurrentPrincipal, trail: TrailDep
) -> ReviewsPublic:
    """Decisions on a study (its hospital sees them too)."""
    study = get_visible_study(session, principal, study_id)
    data = [review_public(record) for record in reviews_of(session, study)]
    trail.add(principal, AuditAction.STUDY_READ, study_id=study.id, detail={"reviews": True})
    return ReviewsPublic(data=data, count=len(data))
