"""DICOMweb QIDO-RS (PS3.18 10.6): search the caller's studies, series and instances.

A hospital finds its own studies; a specialist those of their centre and its hospitals (the
same scope as ``/v1/studies``). A study UID in the path that the caller cannot see is a 404.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from oncotriage.serving.api.deps import (
    MAX_DB_INT,
    DicomwebPrincipal,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from oncotriage.serving.api.routes.dicomweb import UidPath, base_url
from oncotriage.serving.db.models import Series, Study
from oncotriage.serving.dicomweb import DICOM_JSON
from oncotriage.serving.dicomweb_index import index_unindexed
from oncotriage.serving.dicomweb_query import QueryError, QueryLevel, parse_query, search
from oncotriage.serving.security import study_visibility_clause

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

#: Answers per page when the request names no ``limit``.
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
#: PS3.18 8.3.4.4: the Warning a page that stopped at the server's limit carries.
TRUNCATED_WARNING = (
    '299 oncotriage "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)

LimitParam = Annotated[
    int | None,
    Query(ge=1, le=MAX_LIMIT, description=f"Answers to return (default {DEFAULT_LIMIT})."),
]
OffsetParam = Annotated[int, Query(ge=0, le=MAX_DB_INT, description="Answers to skip.")]
IncludeParam = Annotated[
    list[str] | None,
    Query(
        max_length=64,
        description="More attributes to answer with (keywords or tags, comma-separated), or `all`.",
    ),
]
FuzzyParam = Annotated[
    bool | None, Query(description="Accepted and ignored: names match case-insensitively.")
]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Matching records as DICOM JSON (an empty array when none match).",
        "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
    },
    400: {
        "description": "A query key the service does not know or cannot match on, or a "
        "malformed value (the reason is in `detail`).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    },
}
_DESCRIPTION = (
    "Matching keys are DICOM keywords or tags as query parameters: single values, `*`/`?` "
    "wildcards, UID lists (`1.2,1.3`), date ranges (`20260101-20261231`)."
)


def _search(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    level: QueryLevel,
    limit: int | None,
    offset: int,
    includefield: list[str] | None,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Response:
    try:
        query = parse_query(level, list(request.query_params.multi_items()), includefield or [])
    except QueryError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None
    visible = study_visibility_clause(session, principal)
    index_unindexed(session, store, visible)
    scope: list[sa.ColumnElement[bool]] = [visible]
    if study_uid is not None:
        if (
            session.scalar(
                sa.select(Study.id).where(visible, Study.study_instance_uid == study_uid).limit(1)
            )
            is None
        ):
            session.rollback()
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such study")
        scope.append(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        scope.append(Series.series_instance_uid == series_uid)
    result = search(
        session,
        store,
        query,
        scope=scope,
        limit=limit or DEFAULT_LIMIT,
        offset=offset,
        retrieve_root=f"{base_url(request, settings.public_base_url)}/dicomweb",
    )
    session.commit()  # headers indexed on the way (rows stored before the index) are kept
    response = Response(json.dumps(result.records).encode(), media_type=DICOM_JSON)
    if result.truncated and limit is None:
        response.headers["Warning"] = TRUNCATED_WARNING
    return response


@router.get(
    "/studies",
    summary="Search for studies (QIDO-RS)",
    response_class=Response,
    responses=_RESPONSES,
    description=_DESCRIPTION,
)
def search_for_studies(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    limit: LimitParam = None,
    offset: OffsetParam = 0,
    includefield: IncludeParam = None,
    fuzzymatching: FuzzyParam = None,
) -> Response:
    """The caller's studies that match (e.g. ``PatientID``, ``PatientName``, ``StudyDate``,
    ``AccessionNumber``, ``ModalitiesInStudy``, ``StudyInstanceUID``)."""
    return _search(
        request, session, store, settings, principal, QueryLevel.STUDY, limit, offset, includefield
    )


@router.get(
    "/series",
    summary="Search for series (QIDO-RS)",
    response_class=Response,
    responses=_RESPONSES,
    description=_DESCRIPTION,
)
def search_for_series(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    limit: LimitParam = None,
    offset: OffsetParam = 0,
    includefield: IncludeParam = None,
    fuzzymatching: FuzzyParam = None,
) -> Response:
    """Series of any of the caller's studies (study and series keys)."""
    return _search(
        request, session, store, settings, principal, QueryLevel.SERIES, limit, offset, includefield
    )


@router.get(
    "/studies/{study_instance_uid}/series",
    summary="Search for a study's series (QIDO-RS)",
    response_class=Response,
    responses=_RESPONSES,
    description=_DESCRIPTION,
)
def search_for_study_series(
    request: Request,
    study_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    limit: LimitParam = None,
    offset: OffsetParam = 0,
    includefield: IncludeParam = None,
    fuzzymatching: FuzzyParam = None,
) -> Response:
    """The series of one study (e.g. ``Modality``, ``SeriesInstanceUID``)."""
    return _search(
        request,
        session,
        store,
        settings,
        principal,
        QueryLevel.SERIES,
        limit,
        offset,
        includefield,
        study_uid=study_instance_uid,
    )


@router.get(
    "/instances",
    summary="Search for instances (QIDO-RS)",
    response_class=Response,
    responses=_RESPONSES,
    description=_DESCRIPTION,
)
def search_for_instances(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    limit: LimitParam = None,
    offset: OffsetParam = 0,
    includefield: IncludeParam = None,
    fuzzymatching: FuzzyParam = None,
) -> Response:
    """Instances of any of the caller's studies (study, series and instance keys)."""
    return _search(
        request,
        session,
        store,
        settings,
        principal,
        QueryLevel.INSTANCE,
        limit,
        offset,
        includefield,
    )


@router.get(
    "/studies/{study_instance_uid}/instances",
    summary="Search for a study's instances (QIDO-RS)",
    response_class=Response,
    responses=_RESPONSES,
    description=_DESCRIPTION,
)
def search_for_study_instances(
    request: Request,
    study_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    limit: LimitParam = None,
    offset: OffsetParam = 0,
    includefield: IncludeParam = None,
    fuzzymatching: FuzzyParam = None,
) -> Response:
    """The instances of one study."""
    return _search(
        request,
        session,
        store,
        settings,
        principal,
        QueryLevel.INSTANCE,
        limit,
        offset,
        includefield,
        study_uid=study_instance_uid,
    )


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances",
    summary="Search for a series' instances (QIDO-RS)",
    response_class=Response,
    responses=_RESPONSES,
    description=_DESCRIPTION,
)
def search_for_series_instances(
    request: Request,
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    limit: LimitParam = None,
    offset: OffsetParam = 0,
    includefield: IncludeParam = None,
    fuzzymatching: FuzzyParam = None,
) -> Response:
    """The instances of one series (e.g. ``SOPInstanceUID``, ``InstanceNumber``)."""
    return _search(
        request,
        session,
        store,
        settings,
        principal,
        QueryLevel.INSTANCE,
        limit,
        offset,
        includefield,
        study_uid=study_instance_uid,
        series_uid=series_instance_uid,
    )
