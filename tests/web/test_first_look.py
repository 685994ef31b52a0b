"""The README's first look, as a newcomer runs it: ``oncotriage serve --demo`` serves both
bundled demo models, ``oncotriage push`` sends the two example studies it wrote, and both
come back flagged; the 3D model's top box on the example CT sits on the nodule. The
README's first-look screenshots come from this test (ONCOTRIAGE_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest

from oncotriage.models.spec import ModelSpec
from oncotriage.serving.reports.sr import FINDING_SCORE

from .conftest import _free_port, save_screenshot

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from oncotriage.cli import main; main()"]
FLAGGED = ("suspicious", "urgent")


@contextmanager
def _demo_service(root: Path) -> Iterator[str]:
    """``oncotriage serve --demo`` in ``root`` (its ``./var``), as scripts/run.sh runs it,
    with nothing but the polling made quicker."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ONCOTRIAGE_") and not key.startswith("MLFLOW_")
    }
    env.update({"ONCOTRIAGE_WORKER_POLL_INTERVAL_S": "0.2", "ONCOTRIAGE_SERIES_SETTLE_S": "0.5"})
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = root / "serve.log"
    command = [*CLI, "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _push(base: str, token_file: Path, study: Path, root: Path) -> None:
    """The README's push command."""
    done = subprocess.run(
        [*CLI, "push", "--url", base, "--token-file", str(token_file), str(study)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _triaged(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        studies = client.get("/v1/studies").json()["data"]
        if len(studies) == count and all(s["status"] in ("triaged", "failed") for s in studies):
            return list(studies)
        time.sleep(0.5)
    raise AssertionError(f"not triaged in 240 s: {client.get('/v1/studies').text}")


def _centre_inside(box_world: list[float], truth: list[float]) -> bool:
    """Is the centre of an ``xyzxyz`` (``xyxy``) box inside a ``cccwhd`` (``ccwh``) truth box,
    both in millimetres?"""
    dims = len(truth) // 2
    corners = np.asarray(box_world, dtype=float).reshape(2, dims)
    centre = corners.mean(axis=0)
    truth_box = np.asarray(truth, dtype=float)
    return bool(np.all(np.abs(centre - truth_box[:dims]) <= truth_box[dims:] / 2))


def test_first_look_flags_both_examples_and_the_ct_box_is_on_the_nodule(
    page: Any, tmp_path: Path
) -> None:
    with _demo_service(tmp_path) as base:
        demo = tmp_path / "var" / "demo"
        ready = httpx.get(f"{base}/readyz").json()
        served = json.dumps(ready)
        assert "oncotriage-cxr2d" in served and "oncotriage-ct3d" in served, ready
        hospital_token = demo / "hospital.token"
        _push(base, hospital_token, demo / "example" / "cxr_example", tmp_path)
        _push(base, hospital_token, demo / "example-ct" / "ldct_example", tmp_path)
        token = hospital_token.read_text().strip()
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            studies = _triaged(client, 2)
            results = {
                study["id"]: client.get(f"/v1/studies/{study['id']}/result").json()
                for study in studies
            }
            reports = {
                study["id"]: client.get(f"/v1/studies/{study['id']}/report.dcm").content
                for study in studies
            }
        by_model = {result["model_name"]: result for result in results.values()}
        assert set(by_model) == {"oncotriage-cxr2d", "oncotriage-ct3d"}, results
        for result in by_model.values():
            assert result["status"] == "triaged", result
            assert result["priority"] in FLAGGED, result
        ct = by_model["oncotriage-ct3d"]
        assert [s["modality"] for s in ct["series"]] == ["CT"]
        truth = json.loads((demo / "example-ct" / "ldct_example.truth.json").read_text())
        assert truth["box_mode"] == "cccwhd" and truth["coordinates"] == "world_mm"
        top = max(ct["findings"], key=lambda finding: finding["score"])
        assert any(_centre_inside(top["box_world"], box) for box in truth["box"]), (top, truth)
        # the radiograph (generator version 2, as the 2D model's training data): top box on
        # one of its two nodules, scored urgent
        cxr = by_model["oncotriage-cxr2d"]
        cxr_truth = json.loads((demo / "example" / "cxr_example.truth.json").read_text())
        assert cxr_truth["box_mode"] == "ccwh" and len(cxr_truth["box"]) == 2
        cxr_top = max(cxr["findings"], key=lambda finding: finding["score"])
        assert any(_centre_inside(cxr_top["box_world"], box) for box in cxr_truth["box"]), cxr_top
        assert cxr["priority"] == "urgent", cxr
        # the detector keeps up to 300 candidates; the page shows those at or above the
        # operating threshold and says how many it leaves out
        reportable = [finding for finding in ct["findings"] if finding["reportable"]]
        below = len(ct["findings"]) - len(reportable)
        assert top["reportable"] and 1 <= len(reportable) < 20 and below > 100, len(reportable)

        # The pages: both on the worklist, flagged; the CT case opens on the top box.
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(f"{base}/ui/")
        page.get_by_label("Access token").fill((demo / "specialist.token").read_text().strip())
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/worklist")
        ct_id = next(key for key, value in results.items() if value is ct)
        for study_id, result in results.items():
            row = page.locator(f'tr[data-study-id="{study_id}"]')
            assert row.locator(".badge").inner_text().lower() == result["priority"]
        save_screenshot(page, "first-look-worklist.png", tmp_path)
        page.locator(f'tr[data-study-id="{ct_id}"]').get_by_role("link").click()
        page.locator('#viewport[data-ready="true"]').wait_for()
        top_slice = round((top["box_index"][2] + top["box_index"][5]) / 2)
        shown = page.evaluate("window.oncotriageCase.slice")
        assert abs(shown - top_slice) <= 1, (shown, top["box_index"])
        assert page.locator("#findings-list li").count() == len(reportable)
        assert page.locator("#findings-hidden").inner_text().startswith(f"{below} candidate boxes")
        save_screenshot(page, "first-look-ct-case.png", tmp_path)

        # The radiograph case: the boxes at or above the operating threshold, one per finding
        cxr_id = next(key for key, value in results.items() if value is cxr)
        page.goto(f"{base}/ui/cases/{cxr_id}")
        page.locator('#viewport[data-ready="true"]').wait_for()
        shown_cxr = [finding for finding in cxr["findings"] if finding["reportable"]]
        assert 1 <= len(shown_cxr) < 20 and cxr_top["reportable"], len(shown_cxr)
        assert page.locator("#findings-list li").count() == len(shown_cxr)
        # each box shows its score on the study score's scale (the model's Platt map): the
        # top box's is the study's suspicion score, not the detector's saturated raw score
        thresholds = ModelSpec.load(REPO / "models" / "demo").thresholds
        for finding in cxr["findings"]:
            calibrated = thresholds.study_score(finding["score"])
            assert finding["calibrated_score"] == pytest.approx(calibrated, abs=1e-9), finding
            assert finding["reportable"] == (calibrated >= thresholds.operating), finding
        assert cxr_top["calibrated_score"] == pytest.approx(cxr["suspicion_score"], abs=1e-9)
        assert cxr_top["calibrated_score"] < cxr_top["score"]
        # the DICOM SR states the same scores: Certainty of Finding of each reported box
        sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(reports[cxr_id])))
        certainties = [
            group.get_measurements(name=FINDING_SCORE)[0].value
            for group in sr.content.get_planar_roi_measurement_groups()
        ]
        assert sorted(map(float, certainties), reverse=True) == pytest.approx(
            sorted((f["calibrated_score"] for f in shown_cxr), reverse=True), abs=1e-6
        )
        texts = page.locator("#findings-list li .what").all_inner_texts()
        expected = sorted((f["calibrated_score"] for f in shown_cxr), reverse=True)
        assert [text.split(" · ")[0] for text in texts] == [
            f"Score {value:.2f}" for value in expected
        ], texts
        save_screenshot(page, "first-look-cxr-case.png", tmp_path)
