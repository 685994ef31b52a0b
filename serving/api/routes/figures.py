"""The union's figures per hospital and month, as JSON and CSV."""

from __future__ import annotations

from fastapi import APIRouter, Response

from oncotriage.serving.api.care_schemas import FigureRow, FiguresPublic
from oncotriage.serving.api.deps import CurrentPrincipal, SessionDep
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.figures import figures, figures_csv

router = APIRouter(prefix="/v1/figures", tags=["figures"])


@router.get("", response_model=FiguresPublic)
def read_figures(session: SessionDep, principal: CurrentPrincipal) -> FiguresPublic:
    """Per hospital and month: studies screened, flagged, referred up, returned down,
    confirmed cancers, PPV of flags, median days flag → decision → seen → diagnosis,
    overdue steps and lost to follow-up. The centre sees its union; a hospital itself."""
    rows = figures(session, principal, now=utcnow())
    return FiguresPublic(data=[FigureRow(**row) for row in rows], count=len(rows))


@router.get(".csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def read_figures_csv(session: SessionDep, principal: CurrentPrincipal) -> Response:
    """The same figures as CSV (one header line, one line per hospital and month)."""
    rows = figures(session, principal, now=utcnow())
    return Response(
        figures_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="oncotriage-figures.csv"'},
    )
