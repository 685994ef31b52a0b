"""Routes of the browser pages: ``/ui/...`` HTML shells and their static assets.

The pages hold no patient data when served: each page's script fetches what it shows from
the JSON API (``/v1/...``) with the bearer token kept in the tab's ``sessionStorage``, so the
same authorisation rules apply to a person in a browser as to any API client. Every asset is
served from ``serving/web/static`` (nothing is loaded from the internet).

Two small JSON routes under ``/ui-api`` give the pages what the public API does not carry:
who the token belongs to (to pick the page and show the name) and, for the image viewer, each
series' geometry (columns, rows, slices) and the live claim on a case. They authenticate and
check visibility exactly as ``/v1`` does.
"""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from oncotriage import __version__
from oncotriage.serving.api.deps import CurrentPrincipal, SessionDep
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import Instance, Series, User
from oncotriage.serving.enums import Priority
from oncotriage.serving.studies import StudyNotFoundError, get_visible_study

router = APIRouter(tags=["web pages"], include_in_schema=False)

_WEB_DIR = Path(__file__).resolve().parent
_STATIC_DIR = _WEB_DIR / "static"

#: Seconds between refreshes of the worklist and hospital pages; ``?refresh=N`` overrides.
DEFAULT_REFRESH_S = 15
_REFRESH_RANGE_S = (1, 600)

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@functools.cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(_WEB_DIR / "templates"))


def _sla_minutes(request: Request) -> dict[str, float]:
    """SLA per priority from the app's settings (used to colour waiting times)."""
    settings: Any = getattr(request.app.state, "settings", None)
    if settings is None:
        from oncotriage.serving.settings import get_settings

        settings = get_settings()
    return {str(p): float(settings.sla_minutes(p)) for p in Priority}


def _refresh_s(request: Request) -> int:
    raw = request.query_params.get("refresh")
    try:
        value = int(raw) if raw is not None else DEFAULT_REFRESH_S
    except ValueError:
        value = DEFAULT_REFRESH_S
    low, high = _REFRESH_RANGE_S
    return min(max(value, low), high)


def _page(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
    base: dict[str, Any] = {
        "title": title,
        "version": __version__,
        "refresh_s": _refresh_s(request),
        "sla_minutes": _sla_minutes(request),
    }
    base.update(context)
    response = _templates().TemplateResponse(request, template, base)
    # The shells are the same for everyone, but never let a shared cache keep them.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/ui", response_class=RedirectResponse)
def ui_root() -> RedirectResponse:
    """``/ui`` -> the sign-in page (which forwards a signed-in person to their page)."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", response_class=HTMLResponse)
def sign_in_page(request: Request) -> HTMLResponse:
    """Sign in with an API token (specialist or hospital)."""
    return _page(request, "signin.html", "Sign in", page="signin")


@router.get("/ui/worklist", response_class=HTMLResponse)
def worklist_page(request: Request) -> HTMLResponse:
    """The flagged queue, most urgent first, refreshed by polling ``GET /v1/worklist``."""
    return _page(request, "worklist.html", "Worklist", page="worklist")


@router.get("/ui/cases/{study_id}", response_class=HTMLResponse)
def case_page(request: Request, study_id: str) -> HTMLResponse:
    """One case: image viewer with the model's boxes, claim/release and the decision."""
    return _page(request, "case.html", "Case", page="case", study_id=study_id)


@router.get("/ui/hospital", response_class=HTMLResponse)
def hospital_page(request: Request) -> HTMLResponse:
    """A hospital's own studies with status, priority, result, SR download and referrals."""
    return _page(request, "hospital.html", "Studies", page="hospital")


@router.get("/ui/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(request: Request, patient_id: int) -> HTMLResponse:
    """One patient's timeline (``GET /v1/patients/{id}/timeline``)."""
    return _page(request, "patient.html", "Patient", page="patient")


@router.get("/ui/figures", response_class=HTMLResponse)
def figures_page(request: Request) -> HTMLResponse:
    """The union's figures with charts and CSV export (``GET /v1/figures``)."""
    return _page(request, "figures.html", "Figures", page="figures")


@router.get("/ui/monitoring", response_class=HTMLResponse)
def monitoring_page(request: Request) -> HTMLResponse:
    """Models in the field: drift alarms, performance, champion against challenger
    (``GET /v1/monitoring/...``)."""
    return _page(request, "monitoring.html", "Monitoring", page="monitoring")


@router.get("/ui/static/{asset_path:path}")
def static_asset(asset_path: str) -> FileResponse:
    """Serve a file from ``serving/web/static`` (path traversal is refused)."""
    target = (_STATIC_DIR / asset_path).resolve()
    if not target.is_file() or not target.is_relative_to(_STATIC_DIR):
        raise HTTPException(status_code=404, detail="No such asset")
    media_type = _CONTENT_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
    return FileResponse(
        target,
        media_type=media_type or "application/octet-stream",
        headers={"Cache-Control": "no-cache"},
    )


# ---------------------------------------------------------------- JSON for the pages


class WhoAmI(BaseModel):
    """Who a token stands for.

    ``role`` is ``specialist``, ``admin`` or ``hospital``; ``username`` is what worklist
    claims name (``claimed_by``); ``name`` is for display.
    """

    role: str
    name: str
    username: str | None
    hospital: str | None


class ImageGeometry(BaseModel):
    """One picture the viewer can ask ``render.png`` for (a radiograph instance)."""

    sop_instance_uid: str
    columns: int
    rows: int


class SeriesGeometry(BaseModel):
    """A series as the viewer needs it.

    ``columns``/``rows`` are the source image's size (index space of the findings' boxes);
    ``slices`` is the volume depth (axis 2, ``render.png?slice=``) or 1; ``images`` lists a
    radiograph series' instances (``render.png?instance=``).
    """

    series_instance_uid: str
    modality: str
    is_volume: bool
    columns: int
    rows: int
    slices: int
    images: list[ImageGeometry]


class ClaimState(BaseModel):
    claimed_by: str | None
    claimed_by_me: bool
    expires_at: str | None


class ViewerInfo(BaseModel):
    study_id: str
    series: list[SeriesGeometry]
    claim: ClaimState


@router.get("/ui-api/me", response_model=WhoAmI)
def who_am_i(principal: CurrentPrincipal, session: SessionDep) -> WhoAmI:
    """The signed-in principal, so the sign-in page can send a person to the right page."""
    if principal.is_hospital:
        return WhoAmI(role="hospital", name=principal.name, username=None, hospital=principal.name)
    user = session.get(User, principal.user_id) if principal.user_id is not None else None
    hospital = user.hospital.name if user is not None and user.hospital is not None else None
    name = (user.display_name or user.username) if user is not None else principal.name
    role = str(principal.role) if principal.role is not None else "user"
    username = user.username if user is not None else None
    session.rollback()
    return WhoAmI(role=role, name=name, username=username, hospital=hospital)


@router.get("/ui-api/studies/{study_id}/viewer", response_model=ViewerInfo)
def viewer_info(study_id: str, principal: CurrentPrincipal, session: SessionDep) -> ViewerInfo:
    """Series geometry and the live claim of one study the caller may see (404 otherwise)."""
    try:
        study = get_visible_study(session, principal, study_id)
    except StudyNotFoundError:
        raise HTTPException(status_code=404, detail="study not found") from None
    series_rows = session.scalars(
        sa.select(Series).where(Series.study_id == study.id).order_by(Series.id)
    ).all()
    series = [_series_geometry(session, row) for row in series_rows]
    now = utcnow()
    live = (
        study.claimed_by_id is not None
        and study.claim_expires_at is not None
        and study.claim_expires_at > now
    )
    holder = study.claimed_by.username if live and study.claimed_by is not None else None
    claim = ClaimState(
        claimed_by=holder,
        claimed_by_me=bool(live and study.claimed_by_id == principal.user_id),
        expires_at=study.claim_expires_at.isoformat() if live and study.claim_expires_at else None,
    )
    session.rollback()
    return ViewerInfo(study_id=study.id, series=series, claim=claim)


def _series_geometry(session: Any, row: Series) -> SeriesGeometry:
    instances = session.scalars(
        sa.select(Instance).where(Instance.series_id == row.id).order_by(Instance.id)
    ).all()
    first = instances[0] if instances else None
    if row.is_volume:
        # One instance per slice, or one multi-frame object holding them all.
        slices = len(instances) if len(instances) > 1 else (first.frames if first else 1)
        images: list[ImageGeometry] = []
    else:
        slices = 1
        images = [
            ImageGeometry(sop_instance_uid=i.sop_instance_uid, columns=i.columns, rows=i.rows)
            for i in instances
        ]
    return SeriesGeometry(
        series_instance_uid=row.series_instance_uid,
        modality=row.modality,
        is_volume=row.is_volume,
        columns=first.columns if first else 0,
        rows=first.rows if first else 0,
        slices=max(1, int(slices)),
        images=images,
    )
