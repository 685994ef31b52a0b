"""Studies: submit (for scripts), list, status, result, DICOM SR report and PNG render."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from oncotriage.serving.api.deps import (
    MAX_DB_INT,
    CurrentHospital,
    CurrentPrincipal,
    DatabaseDep,
    HospitalFilter,
    Limit,
    SessionDep,
    SettingsDep,
    Skip,
    StoreDep,
    TrailDep,
    unprocessable,
)
from oncotriage.serving.api.public import study_public
from oncotriage.serving.api.routes.dicomweb import base_url
from oncotriage.serving.api.schemas import (
    InstanceResultPublic,
    Message,
    StudiesPublic,
    StudyPublic,
    StudyResultPublic,
    SubmissionPublic,
    ValidationErrorsPublic,
)
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.enums import AuditAction, Priority, ReviewStatus, StudyStatus
from oncotriage.serving.intake import ingest
from oncotriage.serving.results import (
    RenderRequest,
    build_report,
    plan_render,
    plan_report,
    render,
    study_result,
)
from oncotriage.serving.studies import (
    counted_study,
    get_visible_study,
    list_studies,
)
from oncotriage.serving.uploads import UploadedFiles, read_whole
from oncotriage.serving.urls import STUDIES_PATH

router = APIRouter(prefix=STUDIES_PATH, tags=["studies"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Message, "description": "No such study (or not yours)."}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SubmissionPublic,
    responses={
        422: {"model": SubmissionPublic, "description": "No file could be used."},
        413: {"model": Message, "description": "Too large or too many files."},
    },
)
async def submit_study(
    request: Request,
    files: list[UploadFile],
    principal: CurrentHospital,
    db: DatabaseDep,
    store: StoreDep,
    settings: SettingsDep,
    session: SessionDep,
    response: Response,
) -> SubmissionPublic | JSONResponse:
    """Submit DICOM files as ``multipart/form-data`` (field ``files``, repeated).

    Answers 202 with the studies they went to (``Location``: the first study's URL); every
    file is listed with whether it was kept and why not.
    """
    if len(files) > settings.max_instances_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"at most {settings.max_instances_per_request} files per request",
        )
    # each upload is read from its spooled file when intake reaches it
    payloads = UploadedFiles([upload.file for upload in files], read_whole)
    result = await run_in_threadpool(ingest, db, store, settings, principal, payloads, now=utcnow())
    studies: list[StudyPublic] = []
    for study_id in result.study_ids:
        study = get_visible_study(session, principal, study_id)
        studies.append(study_public(counted_study(session, study)))
    body = SubmissionPublic(
        studies=studies,
        instances=[
            InstanceResultPublic(
                sop_instance_uid=outcome.sop_instance_uid,
                sop_class_uid=outcome.sop_class_uid,
                stored=outcome.stored,
                duplicate=outcome.duplicate,
                failure_reason=int(outcome.failure_reason) if outcome.failure_reason else None,
                message=outcome.message,
                warning=outcome.warning or None,
            )
            for outcome in result.outcomes
        ],
        stored=sum(1 for outcome in result.outcomes if outcome.stored),
        failed=sum(1 for outcome in result.outcomes if not outcome.stored),
    )
    if not studies:
        return JSONResponse(body.model_dump(mode="json"), status_code=422)
    response.headers["Location"] = f"{base_url(request, settings.public_base_url)}{studies[0].url}"
    return body


@router.get("", response_model=StudiesPublic)
def read_studies(
    session: SessionDep,
    principal: CurrentPrincipal,
    status_: Annotated[StudyStatus | None, Query(alias="status")] = None,
    priority: Priority | None = None,
    review_status: ReviewStatus | None = None,
    hospital_id: HospitalFilter = None,
    study_instance_uid: Annotated[str | None, Query(max_length=64)] = None,
    skip: Skip = 0,
    limit: Limit = 100,
) -> StudiesPublic:
    """Studies the caller may see (a hospital: its own), newest first."""
    rows, count = list_studies(
        session,
        principal,
        status=status_,
        priority=priority,
        review_status=review_status,
        hospital_id=hospital_id,
        study_instance_uid=study_instance_uid,
        skip=skip,
        limit=limit,
    )
    return StudiesPublic(data=[study_public(row) for row in rows], count=count)


@router.get("/{study_id}", response_model=StudyPublic, responses=NOT_FOUND)
def read_study(
    study_id: str, session: SessionDep, principal: CurrentPrincipal, trail: TrailDep
) -> StudyPublic:
    """Status, priority, suspicion score, model version and timings of one study."""
    study = get_visible_study(session, principal, study_id)
    public = study_public(counted_study(session, study))
    trail.add(principal, AuditAction.STUDY_READ, study_id=study.id)
    return public


@router.get("/{study_id}/result", response_model=StudyResultPublic, responses=NOT_FOUND)
def read_result(
    study_id: str, session: SessionDep, principal: CurrentPrincipal, trail: TrailDep
) -> StudyResultPublic:
    """Findings in pixel (index) and world coordinates, per-series outcome, model version."""
    study = get_visible_study(session, principal, study_id)
    result = StudyResultPublic.model_validate(study_result(session, study), from_attributes=True)
    trail.add(principal, AuditAction.STUDY_RESULT_READ, study_id=study.id)
    return result


@router.get(
    "/{study_id}/report.dcm",
    response_class=Response,
    responses={
        200: {"content": {"application/dicom": {}}, "description": "DICOM Comprehensive 3D SR."},
        409: {"model": Message, "description": "Not triaged yet."},
        **NOT_FOUND,
    },
)
def read_report(
    study_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    store: StoreDep,
    trail: TrailDep,
) -> Response:
    """The result as a DICOM Comprehensive 3D SR (TID 1500) referencing the source images."""
    study = get_visible_study(session, principal, study_id)
    plan = plan_report(session, study)
    # Files are read outside the transaction (on SQLite it holds the write lock). The id is
    # kept first: the rollback expires the row, and reading it again would open a new one.
    key = study.id
    session.rollback()
    trail.add(principal, AuditAction.STUDY_REPORT_READ, study_id=key)
    payload = build_report(store, plan)
    return Response(
        payload,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="oncotriage-{key}.dcm"'},
    )


@router.get(
    "/{study_id}/render.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The image with the model's boxes."},
        422: {
            "model": ValidationErrorsPublic,
            "description": "No such series/instance/slice, or a bad window.",
        },
        **NOT_FOUND,
    },
)
def read_render(
    study_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    store: StoreDep,
    trail: TrailDep,
    series: Annotated[str | None, Query(max_length=64, description="SeriesInstanceUID")] = None,
    instance: Annotated[str | None, Query(max_length=64, description="SOPInstanceUID")] = None,
    slice_: Annotated[
        int | None, Query(alias="slice", ge=0, le=MAX_DB_INT, description="CT slice (axis 2)")
    ] = None,
    window: Annotated[
        str | None, Query(max_length=40, description="lung, mediastinum, bone, or CENTRE,WIDTH")
    ] = None,
    boxes: bool = True,
    size: Annotated[int, Query(ge=16, le=4096)] = 1024,
) -> Response:
    """One image or CT slice, windowed, with the model's boxes (default: the top finding's)."""
    study = get_visible_study(session, principal, study_id)
    parsed_window: str | tuple[float, float] | None = window
    if window and "," in window:
        try:
            centre, width = (float(part) for part in window.split(","))
        except ValueError:
            raise unprocessable(
                "window is a preset name or CENTRE,WIDTH", "query", "window"
            ) from None
        if not (math.isfinite(centre) and math.isfinite(width) and width > 0):
            raise unprocessable(
                "window CENTRE,WIDTH must be finite numbers with a positive width",
                "query",
                "window",
            )
        parsed_window = (centre, width)
    request = RenderRequest(
        series_instance_uid=series,
        sop_instance_uid=instance,
        slice_index=slice_,
        window=parsed_window,
        show_boxes=boxes,
        max_size=size,
    )
    plan = plan_render(session, study, request)
    key = study.id  # before the rollback expires the row (see read_report)
    session.rollback()  # files are read outside the transaction
    trail.add(principal, AuditAction.STUDY_RENDER_READ, study_id=key)
    payload = render(store, plan)
    return Response(payload, media_type="image/png", headers={"Cache-Control": "private, no-store"})
