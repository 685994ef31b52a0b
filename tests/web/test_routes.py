"""The page routes without a browser: shells, the page config, static assets and their guard."""

from __future__ import annotations

import json
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncotriage.serving.settings import Settings
from oncotriage.serving.web.routes import DEFAULT_REFRESH_S, router


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.state.settings = Settings(sla_urgent_minutes=45.0)
    app.include_router(router)
    return TestClient(app)


def _page_config(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="page-config">(.*?)</script>', html)
    assert match, "page-config script missing"
    return json.loads(match.group(1))


@pytest.mark.parametrize(
    ("path", "page", "script"),
    [
        ("/ui/", "signin", "/ui/static/signin.js"),
        ("/ui/worklist", "worklist", "/ui/static/worklist.js"),
        ("/ui/cases/3f2b0c1e-0000-4000-8000-000000000001", "case", "/ui/static/case.js"),
        ("/ui/hospital", "hospital", "/ui/static/hospital.js"),
    ],
)
def test_page_shell_names_its_script_and_config(
    client: TestClient, path: str, page: str, script: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert f'src="{script}"' in response.text
    config = _page_config(response.text)
    assert config["page"] == page
    assert config["refresh_s"] == DEFAULT_REFRESH_S
    # SLA minutes come from the app's settings (used to colour waiting times).
    assert config["sla_minutes"]["urgent"] == 45.0
    assert config["sla_minutes"]["suspicious"] == 24 * 60.0
    # Nothing is loaded from another origin.
    assert not re.search(r'(src|href)="(https?:)?//', response.text)


def test_case_page_carries_the_study_id(client: TestClient) -> None:
    config = _page_config(client.get("/ui/cases/abc-123").text)
    assert config["study_id"] == "abc-123"


@pytest.mark.parametrize(
    ("query", "expected"), [("", 15), ("5", 5), ("0", 1), ("99999", 600), ("x", 15)]
)
def test_refresh_interval_is_clamped(client: TestClient, query: str, expected: int) -> None:
    suffix = f"?refresh={query}" if query else ""
    assert _page_config(client.get(f"/ui/worklist{suffix}").text)["refresh_s"] == expected


def test_ui_root_redirects_to_sign_in(client: TestClient) -> None:
    response = client.get("/ui", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


@pytest.mark.parametrize(
    ("asset", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("case.js", "text/javascript; charset=utf-8"),
        ("viewer.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_static_assets_are_served_with_their_type(
    client: TestClient, asset: str, content_type: str
) -> None:
    response = client.get(f"/ui/static/{asset}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert len(response.content) > 100


@pytest.mark.parametrize(
    "asset",
    [
        "../routes.py",
        "..%2Froutes.py",
        "%2e%2e/routes.py",
        "templates/../../routes.py",
        "nope.js",
        "",
    ],
)
def test_static_route_refuses_anything_outside_the_folder(client: TestClient, asset: str) -> None:
    response = client.get(f"/ui/static/{asset}")
    assert response.status_code == 404
    assert "APIRouter" not in response.text


def test_every_module_import_in_the_scripts_resolves(client: TestClient) -> None:
    """The pages are ES modules: a misspelt import breaks a page silently in the browser."""
    for script in ("signin.js", "worklist.js", "case.js", "hospital.js", "viewer.js"):
        text = client.get(f"/ui/static/{script}").text
        for block in re.findall(r"import\s*\{([^}]*)\}\s*from\s*\"\./(\w+\.js)\"", text):
            names, module = block
            exported = client.get(f"/ui/static/{module}").text
            for name in (n.strip() for n in names.split(",") if n.strip()):
                assert re.search(
                    rf"export (async )?(function|class|const|let) {name}\b", exported
                ), f"{script} imports {name} from {module}, which does not export it"
