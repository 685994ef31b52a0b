"""DICOMweb STOW-RS intake (PS3.18 10.5); QIDO-RS and WADO-RS are in ``dicomweb_search`` and
``dicomweb_retrieve``. DICOMweb routes take HTTP Basic with the token as the password too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from oncotriage.serving.api.deps import DatabaseDep, DicomwebHospital, SettingsDep, StoreDep
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.dicomweb import (
    DICOM_JSON,
    DICOM_XML,
    MultipartError,
    StoreOutcome,
    StoreResponse,
    parse_media_type,
    to_dicom_json,
    to_dicom_xml,
)
from oncotriage.serving.intake import IntakeResult, ingest
from oncotriage.serving.uploads import multipart_parts, spool
from oncotriage.serving.urls import study_url

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
UidPath = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]

_STOW_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"description": "All instances stored.", "content": {DICOM_JSON: {}, DICOM_XML: {}}},
    202: {"description": "Some instances stored, some failed (see FailedSOPSequence)."},
    400: {"description": "Malformed multipart body."},
    409: {"description": "No instance stored (see FailedSOPSequence)."},
    413: {"description": "Request too large or too many instances."},
    415: {"description": 'Not multipart/related; type="application/dicom".'},
}


def base_url(request: Request, public_base_url: str | None) -> str:
    return (public_base_url or str(request.base_url)).rstrip("/")


def _response_type(accept: str | None) -> str:
    """DICOM JSON by default; XML when the client asks for it (PS3.18 10.5.2)."""
    if not accept:
        return DICOM_JSON
    accepted = [parse_media_type(item)[0] for item in accept.split(",")]
    for media in accepted:
        if media in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return DICOM_JSON
        if media in (DICOM_XML, "application/xml"):
            return DICOM_XML
    raise HTTPException(
        status.HTTP_406_NOT_ACCEPTABLE, f"responses are {DICOM_JSON} or {DICOM_XML}"
    )


def stow_response(
    result: IntakeResult, root: str, expected_study_uid: str | None, media_type: str
) -> Response:
    retrieve_study = expected_study_uid or next(
        (o.study_instance_uid for o in result.outcomes if o.stored), None
    )
    response = StoreResponse(
        retrieve_url=f"{root}/dicomweb/studies/{retrieve_study}" if retrieve_study else None
    )
    for outcome in result.outcomes:
        response.outcomes.append(
            StoreOutcome(
                sop_class_uid=outcome.sop_class_uid,
                sop_instance_uid=outcome.sop_instance_uid,
                stored=outcome.stored,
                failure_reason=outcome.failure_reason,
                message=outcome.message,
                warning=outcome.warning,
                retrieve_url=(
                    f"{root}/dicomweb/studies/{outcome.study_instance_uid}/series/"
                    f"{outcome.series_instance_uid}/instances/{outcome.sop_instance_uid}"
                )
                if outcome.stored
                else None,
            )
        )
    dataset = response.to_dataset()
    if media_type == DICOM_XML:
        http = Response(
            to_dicom_xml(dataset), status_code=response.http_status(), media_type=DICOM_XML
        )
    else:
        import json

        http = Response(
            json.dumps(to_dicom_json(dataset)).encode(),
            status_code=response.http_status(),
            media_type=DICOM_JSON,
        )
    for warning in response.warning_headers():
        http.headers.append("Warning", warning)
    study_ids = result.study_ids
    if len(study_ids) == 1:
        # Not part of STOW-RS: where the hospital follows the study's triage (JSON API).
        http.headers["Location"] = root + study_url(study_ids[0])
    return http


async def _stow(
    request: Request,
    principal: DicomwebHospital,
    db: DatabaseDep,
    store: StoreDep,
    settings: SettingsDep,
    content_type: str | None,
    accept: str | None,
    study_uid: str | None,
) -> Response:
    media_type = _response_type(accept)
    media, params = parse_media_type(content_type or "")
    part_type = params.get("type", "application/dicom").lower()
    if media != "multipart/related" or part_type != "application/dicom":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            'send multipart/related; type="application/dicom" (DICOM Part 10 files)',
        )
    # Spooled to disk and read a part at a time: memory stays bounded whatever the body size.
    with await spool(request.stream()) as spooled:
        try:
            with multipart_parts(
                spooled, params.get("boundary", ""), max_parts=settings.max_instances_per_request
            ) as parts:
                if not len(parts):
                    raise HTTPException(
                        status.HTTP_400_BAD_REQUEST, "the request holds no instances"
                    )
                result = await run_in_threadpool(
                    ingest,
                    db,
                    store,
                    settings,
                    principal,
                    parts,
                    expected_study_uid=study_uid,
                    declared_types=parts.declared_types(),
                    now=utcnow(),
                )
        except MultipartError as error:
            too_many = "parts in one request" in str(error)
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE if too_many else status.HTTP_400_BAD_REQUEST,
                str(error),
            ) from None
    return stow_response(result, base_url(request, settings.public_base_url), study_uid, media_type)


@router.post(
    "/studies",
    summary="Store instances (STOW-RS)",
    response_class=Response,
    responses=_STOW_RESPONSES,
)
async def store_instances(
    request: Request,
    principal: DicomwebHospital,
    db: DatabaseDep,
    store: StoreDep,
    settings: SettingsDep,
    content_type: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Store DICOM instances of any studies; each is validated and kept or refused."""
    return await _stow(request, principal, db, store, settings, content_type, accept, None)


@router.post(
    "/studies/{study_instance_uid}",
    summary="Store instances of one study (STOW-RS)",
    response_class=Response,
    responses=_STOW_RESPONSES,
)
async def store_study_instances(
    request: Request,
    study_instance_uid: UidPath,
    principal: DicomwebHospital,
    db: DatabaseDep,
    store: StoreDep,
    settings: SettingsDep,
    content_type: Annotated[str | None, Header()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Store DICOM instances of the study in the URL; others are refused (0xA900)."""
    return await _stow(
        request, principal, db, store, settings, content_type, accept, study_instance_uid
    )
