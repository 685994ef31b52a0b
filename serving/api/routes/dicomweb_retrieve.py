"""DICOMweb WADO-RS (PS3.18 10.4): retrieve the caller's studies, series and instances, their
metadata, frames and rendered pictures.

What a path holds comes from :func:`oncotriage.serving.dicomweb_retrieve.retrievable_instances`
(stored instances and the service's own objects); a UID the caller cannot see is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status

from oncotriage.serving.api.deps import (
    DicomwebPrincipal,
    SessionDep,
    SettingsDep,
    StoreDep,
    TrailDep,
)
from oncotriage.serving.api.routes.dicomweb import UidPath, base_url
from oncotriage.serving.dicomweb import DICOM_JSON, encode_multipart, parse_media_type
from oncotriage.serving.dicomweb_retrieve import (
    FRAME_TRANSFER_SYNTAX,
    RenderOptions,
    RetrievableInstance,
    RetrieveError,
    frames,
    metadata_json,
    parse_frame_list,
    rendered,
    retrievable_instances,
)
from oncotriage.serving.enums import AuditAction
from oncotriage.serving.security import Principal, study_visibility_clause

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

BOUNDARY = "oncotriage-wado-boundary"
FramesPath = Annotated[
    str,
    Path(pattern=r"^[0-9]+(,[0-9]+)*$", max_length=8000, description="1-based, e.g. `1,2`."),
]
WindowParam = Annotated[
    str | None,
    Query(max_length=100, description="`centre,width[,function]` in the image's units."),
]
ViewportParam = Annotated[
    str | None, Query(max_length=20, description="`width,height` of the picture, at most.")
]
QualityParam = Annotated[int | None, Query(ge=1, le=100, description="JPEG quality.")]

_MULTIPART: dict[int | str, dict[str, Any]] = {
    200: {"description": "The objects as multipart/related.", "content": {"multipart/related": {}}},
    400: {
        "description": "A frame or rendering parameter the instance cannot answer.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    },
}
_METADATA: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Each instance's attributes as DICOM JSON (pixel data as BulkDataURI).",
        "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
}
_RENDERED: dict[int | str, dict[str, Any]] = {
    200: {"description": "A picture of the frame.", "content": {"image/jpeg": {}, "image/png": {}}},
    400: _MULTIPART[400],
}
_RENDERED_MULTIPART: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A picture of each instance's first frame, as multipart/related.",
        "content": {"multipart/related": {}},
    },
    400: _MULTIPART[400],
}


def _instances(
    session: SessionDep,
    store: StoreDep,
    principal: Principal,
    trail: TrailDep,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[RetrievableInstance]:
    found = retrievable_instances(
        session, store, study_visibility_clause(session, principal), study_uid, series_uid, sop_uid
    )
    if not found:
        session.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    for study_id in dict.fromkeys(instance.study_id for instance in found):
        trail.add(principal, AuditAction.STUDY_READ, study_id=study_id, detail={"via": "wado-rs"})
    return found


def _multipart(parts: list[bytes], part_type: str, part_headers: str = "") -> Response:
    body = encode_multipart(parts, part_type + part_headers, BOUNDARY)
    return Response(body, media_type=f'multipart/related; type="{part_type}"; boundary={BOUNDARY}')


def _dicom(found: list[RetrievableInstance], session: SessionDep) -> Response:
    parts = [instance.load() for instance in found]
    session.rollback()
    return _multipart(parts, "application/dicom")


def _metadata(
    found: list[RetrievableInstance], session: SessionDep, request: Request, settings: SettingsDep
) -> Response:
    root = f"{base_url(request, settings.public_base_url)}/dicomweb"
    body = metadata_json(found, root)
    session.commit()  # headers indexed on the way (instances stored before the index)
    return Response(body, media_type=DICOM_JSON)


def _render_type(accept: str | None, *, multipart: bool) -> str:
    """image/jpeg unless the client prefers image/png (PS3.18 8.7.4: JPEG is the default)."""
    for item in (accept or "").split(","):
        media, params = parse_media_type(item)
        if multipart and media == "multipart/related":
            media = params.get("type", "image/jpeg").lower()
        if media in ("image/png", "image/jpeg"):
            return media
    return "image/jpeg"


def _guarded(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except RetrieveError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None


@router.get(
    "/studies/{study_instance_uid}",
    summary="Retrieve a study's instances (WADO-RS)",
    response_class=Response,
    responses=_MULTIPART,
)
def retrieve_study(
    study_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """The study's instances as ``multipart/related; type="application/dicom"``."""
    return _dicom(_instances(session, store, principal, trail, study_instance_uid), session)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}",
    summary="Retrieve a series' instances (WADO-RS)",
    response_class=Response,
    responses=_MULTIPART,
)
def retrieve_series(
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """The series' instances as ``multipart/related; type="application/dicom"``."""
    found = _instances(session, store, principal, trail, study_instance_uid, series_instance_uid)
    return _dicom(found, session)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}",
    summary="Retrieve one instance (WADO-RS)",
    response_class=Response,
    responses=_MULTIPART,
)
def retrieve_instance(
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    sop_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """One instance as a single-part ``multipart/related`` response."""
    found = _instances(
        session, store, principal, trail, study_instance_uid, series_instance_uid, sop_instance_uid
    )
    return _dicom(found, session)


@router.get(
    "/studies/{study_instance_uid}/metadata",
    summary="Retrieve a study's metadata (WADO-RS)",
    response_class=Response,
    responses=_METADATA,
)
def retrieve_study_metadata(
    request: Request,
    study_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """Every instance's header as DICOM JSON."""
    found = _instances(session, store, principal, trail, study_instance_uid)
    return _metadata(found, session, request, settings)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/metadata",
    summary="Retrieve a series' metadata (WADO-RS)",
    response_class=Response,
    responses=_METADATA,
)
def retrieve_series_metadata(
    request: Request,
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """The series' instance headers as DICOM JSON."""
    found = _instances(session, store, principal, trail, study_instance_uid, series_instance_uid)
    return _metadata(found, session, request, settings)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
    "/metadata",
    summary="Retrieve an instance's metadata (WADO-RS)",
    response_class=Response,
    responses=_METADATA,
)
def retrieve_instance_metadata(
    request: Request,
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    sop_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """The instance's header as DICOM JSON (an array of one)."""
    found = _instances(
        session, store, principal, trail, study_instance_uid, series_instance_uid, sop_instance_uid
    )
    return _metadata(found, session, request, settings)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
    "/frames/{frame_list}",
    summary="Retrieve frames (WADO-RS)",
    response_class=Response,
    responses=_MULTIPART,
)
def retrieve_frames(
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    sop_instance_uid: UidPath,
    frame_list: FramesPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
) -> Response:
    """Frames as uncompressed pixel data: ``multipart/related;
    type="application/octet-stream"``, one part per frame in the order asked."""
    numbers = _guarded(lambda: parse_frame_list(frame_list))
    (instance,) = _instances(
        session, store, principal, trail, study_instance_uid, series_instance_uid, sop_instance_uid
    )
    session.rollback()
    parts = _guarded(lambda: frames(instance, numbers))
    return _multipart(
        parts, "application/octet-stream", f"; transfer-syntax={FRAME_TRANSFER_SYNTAX}"
    )


def _rendered_one(
    instance: RetrievableInstance,
    frame: int,
    accept: str | None,
    window: str | None,
    viewport: str | None,
    quality: int | None,
) -> Response:
    media_type = _render_type(accept, multipart=False)
    options = _guarded(lambda: RenderOptions.parse(media_type, window, viewport, quality))
    return Response(_guarded(lambda: rendered(instance, frame, options)), media_type=media_type)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
    "/rendered",
    summary="Retrieve a rendered instance (WADO-RS)",
    response_class=Response,
    responses=_RENDERED,
)
def retrieve_instance_rendered(
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    sop_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
    window: WindowParam = None,
    viewport: ViewportParam = None,
    quality: QualityParam = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The first frame as JPEG (default) or PNG (``Accept: image/png``), windowed by the
    ``window`` parameter or the header's Window Center/Width."""
    (instance,) = _instances(
        session, store, principal, trail, study_instance_uid, series_instance_uid, sop_instance_uid
    )
    session.rollback()
    return _rendered_one(instance, 1, accept, window, viewport, quality)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
    "/frames/{frame_list}/rendered",
    summary="Retrieve a rendered frame (WADO-RS)",
    response_class=Response,
    responses=_RENDERED,
)
def retrieve_frame_rendered(
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    sop_instance_uid: UidPath,
    frame_list: FramesPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
    window: WindowParam = None,
    viewport: ViewportParam = None,
    quality: QualityParam = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """One frame as JPEG or PNG (a rendered response holds one picture: name one frame)."""
    numbers = _guarded(lambda: parse_frame_list(frame_list))
    if len(numbers) != 1:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "name one frame to render, e.g. /frames/1")
    (instance,) = _instances(
        session, store, principal, trail, study_instance_uid, series_instance_uid, sop_instance_uid
    )
    session.rollback()
    return _rendered_one(instance, numbers[0], accept, window, viewport, quality)


def _rendered_many(
    found: list[RetrievableInstance],
    accept: str | None,
    window: str | None,
    viewport: str | None,
    quality: int | None,
) -> Response:
    media_type = _render_type(accept, multipart=True)
    options = _guarded(lambda: RenderOptions.parse(media_type, window, viewport, quality))
    pictures = []
    for instance in found:
        try:
            pictures.append(rendered(instance, 1, options))
        except RetrieveError:
            continue  # no pixel data (an SR, a dose report): nothing to render
    if not pictures:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "nothing here holds an image to render")
    return _multipart(pictures, media_type)


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/rendered",
    summary="Retrieve a rendered series (WADO-RS)",
    response_class=Response,
    responses=_RENDERED_MULTIPART,
)
def retrieve_series_rendered(
    study_instance_uid: UidPath,
    series_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
    window: WindowParam = None,
    viewport: ViewportParam = None,
    quality: QualityParam = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Each image instance's first frame, rendered, as ``multipart/related``."""
    found = _instances(session, store, principal, trail, study_instance_uid, series_instance_uid)
    session.rollback()
    return _rendered_many(found, accept, window, viewport, quality)


@router.get(
    "/studies/{study_instance_uid}/rendered",
    summary="Retrieve a rendered study (WADO-RS)",
    response_class=Response,
    responses=_RENDERED_MULTIPART,
)
def retrieve_study_rendered(
    study_instance_uid: UidPath,
    session: SessionDep,
    store: StoreDep,
    principal: DicomwebPrincipal,
    trail: TrailDep,
    window: WindowParam = None,
    viewport: ViewportParam = None,
    quality: QualityParam = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Each image instance's first frame, rendered, as ``multipart/related``."""
    found = _instances(session, store, principal, trail, study_instance_uid)
    session.rollback()
    return _rendered_many(found, accept, window, viewport, quality)
