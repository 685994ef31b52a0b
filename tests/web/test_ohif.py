"""The OHIF viewer (the prebuilt ``dist/`` of the npm package ``@ohif/app``, installed by
``scripts/install-ohif.sh``) reads a hospital's studies from the service over DICOMweb.

OHIF is served as static files from its own origin by a small local server, with an
``app-config.js`` whose DICOMweb data source points at the service's ``/dicomweb`` with the
hospital's token as HTTP Basic password (``requestOptions.auth``); the service allows that
origin (``ONCOTRIAGE_DICOMWEB_CORS_ORIGINS``). Every request that leaves 127.0.0.1 is
refused, so the test shows the viewer works offline.
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from .conftest import LiveService, save_screenshot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
OHIF_VERSION = os.environ.get("ONCOTRIAGE_OHIF_VERSION", "3.13.2")
OHIF_DIST = REPO / "build" / "ohif" / OHIF_VERSION / "dist"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


OHIF_PORT = _free_port()
OHIF_ORIGIN = f"http://127.0.0.1:{OHIF_PORT}"
#: read by the live_service fixture: the service lets OHIF's origin call /dicomweb
SERVICE_ENV = {"ONCOTRIAGE_DICOMWEB_CORS_ORIGINS": OHIF_ORIGIN}


def ohif_app_config(dicomweb_root: str, token: str) -> str:
    """The ``app-config.js`` of the test (and of docs/integration.md): one DICOMweb data
    source, the token sent as HTTP Basic password.

    OHIF 3's DICOMweb data source takes its ``Authorization`` header from the user
    authentication service, not from ``requestOptions.auth`` (only its legacy helpers read
    that): the data source's ``onConfiguration`` hook, called before its first request,
    installs the header there.
    """
    auth = json.dumps(f"ohif:{token}")
    root = json.dumps(dicomweb_root)
    return f"""const ONCOTRIAGE_AUTH = {auth};
function oncotriageAuthorization() {{
  return {{ Authorization: 'Basic ' + btoa(ONCOTRIAGE_AUTH) }};
}}
window.config = {{
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  maxNumberOfWebWorkers: 1,
  investigationalUseDialog: {{ option: 'never' }},
  defaultDataSourceName: 'oncotriage',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'oncotriage',
      configuration: {{
        friendlyName: 'oncotriage',
        name: 'oncotriage',
        qidoRoot: {root},
        wadoRoot: {root},
        wadoUriRoot: {root},
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        bulkDataURI: {{ enabled: false }},
        omitQuotationForMultipartRequest: true,
        requestOptions: {{ auth: ONCOTRIAGE_AUTH }},
        onConfiguration: (configuration) => {{
          window.services.userAuthenticationService.setServiceImplementation({{
            getAuthorizationHeader: oncotriageAuthorization,
          }});
          return configuration;
        }},
      }},
    }},
  ],
}};
"""


class _OhifHandler(SimpleHTTPRequestHandler):
    """OHIF's dist as static files; ``/app-config.js`` from memory; any other path that is
    not a file is the single-page app's ``index.html`` (its router handles /viewer etc.)."""

    app_config: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(self.app_config)))
            self.end_headers()
            self.wfile.write(self.app_config)
            return
        if not (OHIF_DIST / path.lstrip("/")).is_file():
            self.path = "/index.html"
        super().do_GET()

    def guess_type(self, path: Any) -> str:
        if str(path).endswith(".wasm"):
            return "application/wasm"
        if str(path).endswith((".js", ".mjs")):
            return "application/javascript"
        return super().guess_type(path)


@pytest.fixture(scope="module")
def ohif(live_service: LiveService) -> Iterator[str]:
    """OHIF served on ``OHIF_ORIGIN``, configured for the live service's hospital."""
    if not (OHIF_DIST / "index.html").is_file():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("OHIF is not installed: run ./scripts/install-ohif.sh", pytrace=False)
        pytest.skip("OHIF is not installed (./scripts/install-ohif.sh installs it)")
    config = ohif_app_config(f"{live_service.base_url}/dicomweb", live_service.hospital_token)
    handler = type("Handler", (_OhifHandler,), {"app_config": config.encode()})
    server = ThreadingHTTPServer(
        ("127.0.0.1", OHIF_PORT), functools.partial(handler, directory=str(OHIF_DIST))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield OHIF_ORIGIN
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _offline(page: Any) -> list[str]:
    """Refuse every request that leaves 127.0.0.1; returns the refused URLs."""
    refused: list[str] = []

    def route(route: Any) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", route)
    return refused


def test_ohif_lists_the_hospitals_study_and_shows_its_image(
    page: Any, live_service: LiveService, ohif: str, tmp_path: Path
) -> None:
    from oncotriage.datasets.synth import write_example_study

    written = write_example_study(tmp_path / "study", "cxr", seed=7)
    radiograph = pydicom.dcmread(written)
    # OHIF 3.13.2 cannot show an image that carries VOI LUT Function (0028,1056): its
    # image loader keeps the value's first letter ("L" of LINEAR) and the render throws
    # "Invalid VOI LUT function" (cornerstonejs/cornerstone3D#2844). LINEAR is the default
    # when the attribute is absent, so the picture is the same without it.
    del radiograph.VOILUTFunction
    header = radiograph
    _store_as_pacs(live_service, radiograph)
    refused = _offline(page)
    # the onboarding tour would cover the image
    page.add_init_script("localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))")
    # why an image did not load, in the log (OHIF's own handler drops the reason)
    page.add_init_script(
        """const watch = setInterval(() => {
            if (!window.cornerstone) return;
            clearInterval(watch);
            window.cornerstone.eventTarget.addEventListener('IMAGE_LOAD_ERROR', (event) => {
                const error = event.detail && event.detail.error;
                console.error('image load error: ' + (error && (error.stack || error.message)
                    || JSON.stringify(error)));
            });
        }, 20);"""
    )
    dicomweb_calls: list[str] = []
    page.on(
        "response",
        lambda response: (
            dicomweb_calls.append(f"{response.status} {response.url}")
            if "/dicomweb/" in response.url
            else None
        ),
    )
    page.set_default_timeout(60_000)

    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))

    page.goto(f"{ohif}/")
    # the study list shows the hospital's study: its accession number, patient, modality
    row = page.get_by_text(str(header.AccessionNumber), exact=True).first
    try:
        row.wait_for()
    except Exception:
        save_screenshot(page, "ohif-study-list-failed.png", tmp_path)
        raise AssertionError(
            f"study list without the study; DICOMweb calls {dicomweb_calls}, refused "
            f"{refused}, console {console[-20:]}, screenshot in {tmp_path}"
        ) from None
    page_text = page.inner_text("body")
    family, given = str(header.PatientName).split("^")
    assert f"{family}, {given}" in page_text, page_text[:2000]  # OHIF writes "SYNTH, 0001"
    assert str(header.StudyDescription) in page_text
    assert "1-1 of 1" in page_text  # one study: the hospital's only one
    assert any(
        call.startswith("200 ") and "/dicomweb/studies?" in call for call in dicomweb_calls
    ), dicomweb_calls

    page.goto(f"{ohif}/viewer?StudyInstanceUIDs={header.StudyInstanceUID}")
    viewport = page.locator(".cornerstone-viewport-element").first
    viewport.wait_for()
    # the image is drawn once its frame has come back; wait for that, then for the paint
    page.wait_for_function(
        """() => performance.getEntriesByType('resource')
                .some((entry) => entry.name.includes('/frames/1'))""",
        timeout=60_000,
    )
    picture = _wait_for_picture(page, viewport)
    save_screenshot(page, "ohif-viewer.png", tmp_path)
    (tmp_path / "ohif-log.txt").write_text("\n".join([*dicomweb_calls, *console]))
    context = f"DICOMweb calls and console in {tmp_path}/ohif-log.txt, screenshot there too"
    assert refused == [], f"OHIF tried to reach the network: {refused}"
    frame_calls = [c for c in dicomweb_calls if "/frames/1" in c]
    assert frame_calls and all(c.startswith("200 ") for c in frame_calls), context
    # the middle of the viewport shows a radiograph, not a blank or flat canvas: many grey
    # levels and a real spread
    assert picture.std() > 20, (picture.std(), context)
    assert len(np.unique(picture)) > 64, context
    # shown with the image's own window (the header's Window Width/Center, 3308/1791.2)
    overlay = " ".join(page.inner_text("body").split())
    width, centre = round(float(header.WindowWidth)), int(float(header.WindowCenter))
    assert f"W: {width} L: {centre}" in overlay, overlay


def _store_as_pacs(service: LiveService, radiograph: pydicom.Dataset) -> None:
    """STOW-RS with the hospital's token as HTTP Basic password, as a PACS forwards."""
    import httpx

    from oncotriage.serving.dicomweb import encode_multipart

    buffer = io.BytesIO()
    radiograph.save_as(buffer, enforce_file_format=True)
    boundary = "ohif-test-boundary"
    response = httpx.post(
        f"{service.base_url}/dicomweb/studies",
        content=encode_multipart([buffer.getvalue()], "application/dicom", boundary),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        auth=("pacs", service.hospital_token),
        timeout=60,
    )
    assert response.status_code == 200, response.text


def _wait_for_picture(page: Any, viewport: Any, timeout_s: float = 60) -> np.ndarray:
    """Screenshots of the viewport (WebGL canvases cannot be read back) until it shows an
    image: the frame decoded and painted, not OHIF's empty black viewport."""
    import time

    from PIL import Image

    deadline = time.monotonic() + timeout_s
    while True:
        shot = np.asarray(
            Image.open(io.BytesIO(viewport.screenshot())).convert("L"), dtype=np.float64
        )
        height, width = shot.shape
        # the middle half of each side: inside the image, clear of the corner overlays
        picture = shot[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4]
        if picture.std() > 20 or time.monotonic() > deadline:
            return picture
        page.wait_for_timeout(250)
