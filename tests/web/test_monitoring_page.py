"""Browser test of the monitoring page and the worklist's drift banner (Debian chromium).

Its own ``oncotriage serve``: the fixture model registered in MLflow as champion (v1) and,
with stricter thresholds, as challenger (v2), so live studies are scored by both; v1's
training fingerprint says its images were much brighter than the synthetic radiographs, so
the first study trips the brightness alarm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import (
    LiveService,
    axe_violations,
    make_fixture_bundle,
    save_screenshot,
    serve_live,
    sign_in,
    submit_synthetic_study,
)

MODEL = "web-monitoring-fixture"


@pytest.fixture(scope="module")
def monitored_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    pytest.importorskip("mlflow")
    from oncotriage.models import registry
    from oncotriage.models.fingerprint import InputFingerprint
    from oncotriage.models.spec import ModelSpec

    root = tmp_path_factory.mktemp("web-monitoring")
    data_dir = root / "var"
    data_dir.mkdir()
    store = f"sqlite:///{data_dir / 'mlflow.db'}"
    champion = make_fixture_bundle(root / "v1")
    spec = ModelSpec.load(champion)
    bright = InputFingerprint(
        images=100,
        intensity_mean=0.95,
        intensity_sd=0.01,
        histogram=[0.0] * 15 + [1.0],
        histogram_distance_mean=0.0,
        histogram_distance_sd=0.01,
        spacing_mm_mean=0.5,
        spacing_mm_sd=0.5,
        log_pixels_mean=12.0,
        log_pixels_sd=3.0,
    )
    spec.model_copy(update={"input_fingerprint": bright}).save(champion)
    challenger = make_fixture_bundle(root / "v2")  # boxes 0.88: routine at 0.9
    spec2 = ModelSpec.load(challenger)
    spec2.model_copy(
        update={
            "thresholds": spec2.thresholds.model_copy(update={"operating": 0.9, "urgent": 0.95})
        }
    ).save(challenger)
    assert registry.register_bundle(champion, MODEL, tracking_uri=store) == 1
    assert registry.register_bundle(challenger, MODEL, tracking_uri=store) == 2
    registry.set_alias(MODEL, "champion", 1, tracking_uri=store)
    registry.set_alias(MODEL, "challenger", 2, tracking_uri=store)

    database_url = f"sqlite:///{data_dir / 'oncotriage.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ONCOTRIAGE_")}
    env.update(
        {
            "ONCOTRIAGE_ENVIRONMENT": "development",
            "ONCOTRIAGE_DATA_DIR": str(data_dir),
            "ONCOTRIAGE_DATABASE_URL": database_url,
            "ONCOTRIAGE_MODEL_URI": f"models:/{MODEL}@champion",
            "ONCOTRIAGE_MLFLOW_TRACKING_URI": store,
            "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
            "ONCOTRIAGE_EMBEDDED_WORKERS": "1",
            "ONCOTRIAGE_WORKER_POLL_INTERVAL_S": "0.2",
            "ONCOTRIAGE_HOLD_CHECK_INTERVAL_S": "0",
        }
    )
    with serve_live(root, env, data_dir, database_url) as service:
        yield service


def _get(service: LiveService, path: str) -> Any:
    with service.client(service.specialist_token) as client:
        return client.get(path).raise_for_status().json()


def _wait(predicate: Any, timeout_s: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def test_monitoring_page_shows_alarm_comparison_and_performance_and_holds(
    page: Any, monitored_service: LiveService, tmp_path: Path
) -> None:
    service = monitored_service
    first = submit_synthetic_study(service, tmp_path / "s1", seed=41)
    submit_synthetic_study(service, tmp_path / "s2", seed=42)
    _wait(lambda: _get(service, "/v1/monitoring/status")["recorded"] >= 2)
    _wait(lambda: _get(service, "/v1/monitoring/alarms")["count"] >= 1)
    with service.client(service.specialist_token) as client:
        client.post(f"/v1/worklist/{first}/claim").raise_for_status()
        client.post(f"/v1/studies/{first}/review", json={"decision": "refer"}).raise_for_status()
    alarms = _get(service, "/v1/monitoring/alarms")["data"]
    brightness = next(a for a in alarms if a["metric"] == "intensity_mean" and not a["device"])
    assert brightness["direction"] == "down"

    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    banner = page.locator(f'#alarm-banner p[data-alarm="{brightness["id"]}"]')
    banner.wait_for()
    assert "Riverside Community" in banner.inner_text()
    assert "image brightness fell" in banner.inner_text()

    page.goto(f"{service.base_url}/ui/monitoring")
    page.locator('body[data-ready="true"]').wait_for()
    # champion v1 flags both studies (0.88 >= 0.5); challenger v2 neither (0.88 < 0.9)
    section = page.locator(f'#comparison section[data-model="{MODEL}"]')
    assert "champion v1 against challenger v2 on 2 studies (1 labelled positive)" in (
        section.locator("h3").inner_text()
    )
    assert "champion only 2" in section.locator(".agreement").inner_text()
    dots = section.locator("circle.dot").evaluate_all("d => d.map(x => Number(x.dataset.value))")
    assert dots[:2] == [1.0, 0.0]  # flag rates: champion 2/2, challenger 0/2
    row = page.locator("#performance-body tr").first
    cells = row.locator("td").all_inner_texts()
    assert cells[0].startswith(f"{MODEL} v1 · Riverside Community")
    assert cells[1] == "2"
    assert cells[2].startswith("2/2 100.0 %")
    assert cells[4].startswith("1/1 100.0 %")  # sensitivity: the referred study was flagged
    assert page.locator("#sensitivity-chart circle.dot").count() == 1
    assert axe_violations(page) == []
    save_screenshot(page, "monitoring.png", tmp_path)

    # hold from the page: the hospital's next study goes to people unscored
    alarm_row = page.locator(f'#alarms-body tr[data-alarm="{brightness["id"]}"]')
    alarm_row.locator('button[data-do="hold"]').click()
    page.locator(f'#alarms-body tr[data-alarm="{brightness["id"]}"][data-action="hold"]').wait_for()
    held = submit_synthetic_study(service, tmp_path / "s3", seed=43)
    with httpx.Client(
        base_url=service.base_url, headers={"Authorization": f"Bearer {service.hospital_token}"}
    ) as client:
        study = client.get(f"/v1/studies/{held}").json()
    assert (study["status"], study["priority"]) == ("failed", "needs_manual_review")
    assert study["failure_reason"].startswith("held for manual review")
    page.goto(f"{service.base_url}/ui/worklist")
    held_banner = page.locator(
        f'#alarm-banner p[data-alarm="{brightness["id"]}"][data-action="hold"]'
    )
    held_banner.wait_for()
    assert "ON HOLD" in held_banner.inner_text()
