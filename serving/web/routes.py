"""Routes of the browser pages: ``/ui/...`` HTML shells and their static assets.

The pages hold no patient data when served: each page's script fetches what it shows from
the JSON API (``/v1/...``) with the bearer token kept in the tab's ``sessionStorage``, so the
same authorisation rules apply to a person in a browser as to any API client. Every asset is
served from ``serving/web/static`` (nothing is loaded from the internet).
"""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from oncotriage import __version__
from oncotriage.serving.enums import Priority

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
