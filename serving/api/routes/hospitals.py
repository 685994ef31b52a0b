"""A hospital's own settings seen through the API: where its results are pushed, and how the
last push went (``/v1/hospitals/me/...`` for the hospital, ``/v1/hospitals/{id}/...`` for
administrators)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from oncotriage.serving.api.deps import (
    CurrentHospital,
    CurrentPrincipal,
    RowId,
    SessionDep,
    unprocessable,
)
from oncotriage.serving.api.schemas import (
    LastPushPublic,
    Message,
    ResultsDestinationPublic,
    ResultsDestinationUpdate,
    ResultsPushPublic,
    ValidationErrorsPublic,
)
from oncotriage.serving.db.models import Hospital
from oncotriage.serving.push import (
    Destination,
    DestinationError,
    PushStatus,
    clear_destination,
    push_status,
    set_destination,
)

router = APIRouter(prefix="/v1/hospitals", tags=["hospitals"])


def _public(push: PushStatus) -> ResultsPushPublic:
    destination = push.destination
    return ResultsPushPublic(
        destination=ResultsDestinationPublic(
            kind=destination.kind,
            description=destination.describe(),
            url=destination.url,
            auth=destination.auth,
            username=destination.username,
            ae_title=destination.ae_title,
            host=destination.host,
            port=destination.port,
            calling_ae_title=destination.calling_ae_title if destination.kind == "dimse" else None,
        )
        if destination is not None
        else None,
        last_push=LastPushPublic(
            state=push.last_state,
            study_id=push.last_study_id,
            version=push.last_version,
            attempts=push.last_attempts,
            error=push.last_error,
            at=push.last_at,
            delivered_at=push.delivered_at,
            next_attempt_at=push.next_attempt_at,
        )
        if push.last_state is not None
        else None,
        pending=push.pending,
        failed=push.failed,
    )


@router.get("/me/results-destination", response_model=ResultsPushPublic)
def read_own_destination(session: SessionDep, principal: CurrentHospital) -> ResultsPushPublic:
    """Where this hospital's result SRs are pushed, and how the last push went."""
    assert principal.hospital_id is not None
    push = push_status(session, principal.hospital_id)
    session.rollback()
    return _public(push)


def _admin_hospital(session: SessionDep, principal: CurrentPrincipal, hospital_id: int) -> str:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an administrator's token")
    hospital = session.get(Hospital, hospital_id)
    if hospital is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "hospital not found")
    return hospital.name


@router.put(
    "/{hospital_id}/results-destination",
    response_model=ResultsPushPublic,
    responses={
        403: {"model": Message, "description": "Not an administrator."},
        404: {"model": Message, "description": "No such hospital."},
        422: {"model": ValidationErrorsPublic, "description": "An unusable destination."},
    },
)
def update_destination(
    hospital_id: RowId,
    body: ResultsDestinationUpdate,
    session: SessionDep,
    principal: CurrentPrincipal,
) -> ResultsPushPublic:
    """Set where the hospital's result SRs are pushed (administrators)."""
    name = _admin_hospital(session, principal, hospital_id)
    try:
        set_destination(session, name, Destination(**body.model_dump()))
    except DestinationError as error:
        session.rollback()
        raise unprocessable(str(error), "body") from None
    session.commit()
    push = push_status(session, hospital_id)
    session.rollback()
    return _public(push)


@router.delete(
    "/{hospital_id}/results-destination",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        403: {"model": Message, "description": "Not an administrator."},
        404: {"model": Message, "description": "No such hospital."},
    },
)
def delete_destination(
    hospital_id: RowId, session: SessionDep, principal: CurrentPrincipal
) -> None:
    """Stop pushing the hospital's results (administrators)."""
    name = _admin_hospital(session, principal, hospital_id)
    clear_destination(session, name)
    session.commit()
