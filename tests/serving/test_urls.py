"""The one study link the service hands out leads to the study's own GET route."""

from __future__ import annotations

from starlette.routing import Match

from oncotriage.serving.api.routes.studies import router
from oncotriage.serving.urls import study_url


def test_study_url_is_the_get_study_route() -> None:
    study_id = "3f2b8c1e-0000-4000-8000-000000000001"
    url = study_url(study_id)
    assert url == f"/v1/studies/{study_id}"
    scope = {"type": "http", "path": url, "method": "GET", "root_path": ""}
    matched = [route for route in router.routes if route.matches(scope)[0] is Match.FULL]
    assert len(matched) == 1
    assert matched[0].matches(scope)[1]["path_params"] == {"study_id": study_id}
