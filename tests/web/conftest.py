"""Fixtures of the browser tests: the real service on 127.0.0.1 and headless Chromium.

The service is ``oncotriage serve`` in a subprocess (real uvicorn, SQLite and image store in a
temporary folder, one embedded worker running ONNX Runtime). Its model is a fixture with the
tiny 2D detector's inputs and outputs that reports the same three boxes for every image
(:func:`make_fixture_bundle`): the pages are under test here, not the model.
Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (``scripts/install-browser.sh``
installs both). Without them the browser tests skip, except under CI (``CI=true``), where
they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ONCOTRIAGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1366, "height": 768}
AXE_JS = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOT_DIR = REPO / "docs" / "screenshots"


def _missing(reason: str) -> None:
    """Skip on a developer machine without the browser; fail under CI, where it must be."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}: run ./scripts/install-browser.sh", pytrace=False)
    pytest.skip(f"{reason} (./scripts/install-browser.sh installs it)")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} is missing")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (own sessionStorage) at 1366x768; page errors fail the test."""
    context = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(20_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: (level, anchor, x cell, y cell, logit) of the fixture model's boxes: scores 0.88, 0.60 and
#: 0.40, in the lungs of the synthetic radiographs (network axes are x then y).
FIXTURE_BOXES = ((1, 1, 2, 3, 2.0), (1, 1, 5, 4, 0.4), (1, 0, 5, 2, -0.4))
FIXTURE_THRESHOLDS = {"operating": 0.5, "urgent": 0.8}


def make_fixture_bundle(out: Path) -> Path:
    """A model bundle whose ONNX network ignores the image and always reports the same three
    boxes (see ``FIXTURE_BOXES``): every study is ``urgent`` (0.88) with boxes at known places.

    It is a real ONNX file with the tiny 2D detector's input and outputs (per level
    ``cls_logits`` ``(B, A*K, H_l, W_l)`` and ``box_regression`` ``(B, A*4, H_l, W_l)``), run
    by the service's real pipeline (anchors, decoding, NMS) under ONNX Runtime; built with
    ``onnx.helper`` in milliseconds, so the browser tests need neither torch nor an export.
    Its spec says it is a test fixture, not a model.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from oncotriage.models.config import load_config
    from oncotriage.models.spec import ModelSpec, Thresholds

    cfg = load_config(REPO / "configs" / "detector_tiny_2d.yaml")
    spec = ModelSpec.from_config(
        cfg,
        version="1",
        name="web-e2e-fixture",
        thresholds=Thresholds(**FIXTURE_THRESHOLDS, calibrated=True),  # chosen by the tests
        intended_use="Test fixture for the browser tests: constant boxes, NOT A MODEL.",
    )
    size = spec.input_shape[2:]
    anchors, classes = spec.num_anchors, spec.num_classes
    base_stride = 4  # the tiny detector's first level is 1/4 of the input
    nodes, initializers, outputs = [], [], []
    levels = spec.num_levels
    for level, scale in enumerate(spec.anchors.feature_map_scales):
        stride = int(base_stride * scale)
        grid = [n // stride for n in size]
        logits = np.full((1, anchors * classes, *grid), -12.0, dtype=np.float32)
        for box_level, anchor, x_cell, y_cell, logit in FIXTURE_BOXES:
            if box_level == level:
                logits[0, anchor * classes, x_cell, y_cell] = logit
        for kind, channels, constant in (
            ("cls", anchors * classes, logits),
            ("box", anchors * 4, np.zeros((1, anchors * 4, *grid), dtype=np.float32)),
        ):
            name = spec.output_names[level if kind == "cls" else levels + level]
            weight = numpy_helper.from_array(
                np.zeros((channels, 1, stride, stride), dtype=np.float32), f"{kind}{level}_w"
            )
            offset = numpy_helper.from_array(constant, f"{kind}{level}_c")
            initializers += [weight, offset]
            nodes.append(
                helper.make_node(
                    "Conv", ["image", weight.name], [f"{kind}{level}_zero"],
                    kernel_shape=[stride, stride], strides=[stride, stride],
                )
            )  # fmt: skip
            nodes.append(helper.make_node("Add", [f"{kind}{level}_zero", offset.name], [name]))
            outputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, *grid])
            )
    order = {name: index for index, name in enumerate(spec.output_names)}
    outputs.sort(key=lambda value: order[value.name])
    graph = helper.make_graph(
        nodes,
        "web_e2e_fixture",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, *size])],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "model.onnx")
    spec.save(out)
    return out


@dataclass(frozen=True)
class LiveService:
    """The running service and the accounts made for the tests."""

    base_url: str
    specialist_token: str
    specialist_username: str
    hospital_token: str
    hospital_name: str
    data_dir: Path
    log_path: Path

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _create_accounts(database_url: str) -> tuple[str, str]:
    from datetime import timedelta

    from oncotriage.serving.accounts import create_hospital, create_user, grant_licence, issue_token
    from oncotriage.serving.db.base import utcnow
    from oncotriage.serving.db.migrate import upgrade
    from oncotriage.serving.db.session import Database

    upgrade(database_url)
    db = Database(database_url)
    try:
        with db.session() as session:
            create_hospital(session, "Lakeside Cancer Centre", "centre")
            create_hospital(
                session, "Riverside Community", "community", centre="Lakeside Cancer Centre"
            )
            create_user(
                session,
                "dr.ada",
                "specialist",
                hospital="Lakeside Cancer Centre",
                display_name="Dr Ada Lovelace",
            )
            now = utcnow()
            grant_licence(session, "dr.ada", now + timedelta(days=365), now=now)
            specialist = issue_token(session, user="dr.ada", label="browser tests").token
            hospital = issue_token(
                session, hospital="Riverside Community", label="browser tests"
            ).token
        return specialist, hospital
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def live_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    """``oncotriage serve`` on a free 127.0.0.1 port with a fresh database and the test model
    (a test module's ``SERVICE_ENV`` dict adds ``ONCOTRIAGE_*`` settings)."""
    root = tmp_path_factory.mktemp("web-service")
    bundle = make_fixture_bundle(root / "bundle")
    data_dir = root / "var"
    data_dir.mkdir()
    database_url = f"sqlite:///{data_dir / 'oncotriage.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ONCOTRIAGE_")}
    env.update(
        {
            "ONCOTRIAGE_ENVIRONMENT": "development",
            "ONCOTRIAGE_DATA_DIR": str(data_dir),
            "ONCOTRIAGE_DATABASE_URL": database_url,
            "ONCOTRIAGE_MODEL_URI": str(bundle),
            "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
            "ONCOTRIAGE_EMBEDDED_WORKERS": "1",
            "ONCOTRIAGE_WORKER_POLL_INTERVAL_S": "0.2",
            "ONCOTRIAGE_SERIES_SETTLE_S": "0.5",
            "ONCOTRIAGE_JOB_BACKOFF_BASE_S": "0.2",
            # Manual-review cases are overdue after 1.2 s, so the pages' SLA colours show.
            "ONCOTRIAGE_SLA_NEEDS_MANUAL_REVIEW_MINUTES": "0.02",
            "MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
        }
    )
    env.update(getattr(request.module, "SERVICE_ENV", {}))
    with serve_live(root, env, data_dir, database_url) as service:
        yield service


@contextmanager
def serve_live(
    root: Path, env: dict[str, str], data_dir: Path, database_url: str
) -> Iterator[LiveService]:
    """``oncotriage serve`` with ``env`` on a free 127.0.0.1 port, its accounts made in
    ``database_url``; stopped on exit."""
    specialist_token, hospital_token = _create_accounts(database_url)
    port = _free_port()
    log_path = root / "service.log"
    command = [
        sys.executable, "-c", "from oncotriage.cli import main; main()",
        "serve", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    service = LiveService(
        base_url=f"http://127.0.0.1:{port}",
        specialist_token=specialist_token,
        specialist_username="dr.ada",
        hospital_token=hospital_token,
        hospital_name="Riverside Community",
        data_dir=data_dir,
        log_path=log_path,
    )
    try:
        _wait_until_ready(service, process)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_ready(service: LiveService, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"oncotriage serve exited ({process.returncode}):\n{service.log_tail()}"
            )
        try:
            response = httpx.get(f"{service.base_url}/readyz", timeout=2)
            last = response.text
            if response.status_code == 200:
                return
        except httpx.HTTPError as error:
            last = str(error)
        time.sleep(0.3)
    raise RuntimeError(f"service not ready after 60 s ({last}):\n{service.log_tail()}")


def submit_synthetic_study(service: LiveService, out: Path, seed: int, kind: str = "cxr") -> str:
    """Write one synthetic study with a nodule (``cxr``: a chest radiograph; ``ldct``: a
    low-dose CT series), POST it as the hospital and wait until the service is done with it
    (``triaged``, or ``failed`` for what the model cannot read); returns the study id."""
    from oncotriage.datasets.synth import write_example_study

    written = write_example_study(out, kind, seed=seed)
    paths = sorted(written.glob("*.dcm")) if written.is_dir() else [written]
    files = [("files", (path.name, path.read_bytes(), "application/dicom")) for path in paths]
    with service.client(service.hospital_token) as client:
        response = client.post("/v1/studies", files=files)
        assert response.status_code == 202, response.text
        study_id = str(response.json()["studies"][0]["id"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            study = client.get(f"/v1/studies/{study_id}").json()
            if study["status"] in ("triaged", "failed") and study["priority"] is not None:
                return study_id
            time.sleep(0.25)
    raise AssertionError(f"study {study_id} not triaged in 90 s:\n{service.log_tail()}")


def sign_in(page: Any, service: LiveService, token: str) -> None:
    """Sign in through the sign-in form."""
    page.goto(f"{service.base_url}/ui/")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """Run axe-core (vendored, served to the page by the test) and return the violations of
    the given impacts, each with the offending elements."""
    page.add_script_tag(content=AXE_JS.read_text())
    violations: list[dict] = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ") + " :: " + n.failureSummary),
            }));
        }"""
    )
    return [v for v in violations if v["impact"] in impacts]


def save_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Screenshot to ``tmp_path``; also to ``docs/screenshots`` when
    ``ONCOTRIAGE_UPDATE_SCREENSHOTS=1`` (how the README's pictures are refreshed)."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("ONCOTRIAGE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT_DIR / name)
    return path
