"""End to end in a real browser: a hospital's study is flagged, a specialist works it from the
worklist page, the hospital page shows the decision.

Everything runs for real: ``oncotriage serve`` (uvicorn, SQLite, one embedded ONNX Runtime
worker), the pages' scripts in headless Chromium, axe-core in the page.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import LiveService, axe_violations, save_screenshot, sign_in, submit_synthetic_study

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL_YELLOW = (255, 212, 0)


def _api(service: LiveService, token: str, path: str) -> Any:
    with service.client(token) as client:
        response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


def _overlay_pixels(
    page: Any, points: list[tuple[float, float]], across: int = 0
) -> list[list[int]]:
    """RGBA of the overlay canvas at picture coordinates (through the viewer's transform);
    with ``across`` > 0, every pixel from ``x - across`` to ``x + across`` of each point (a
    2-pixel line at a fractional position is anti-aliased over its neighbours)."""
    return page.evaluate(
        """([points, across]) => {
            const viewer = window.oncotriageViewer;
            const ctx = viewer.overlayCanvas.getContext("2d");
            return points.flatMap(([u, v]) => {
                const [x, y] = viewer.imageToCanvasPixel(u, v);
                const data = ctx.getImageData(x - across, y, 2 * across + 1, 1).data;
                const out = [];
                for (let i = 0; i < data.length; i += 4) out.push(Array.from(data.slice(i, i + 4)));
                return out;
            });
        }""",
        [points, across],
    )


def _near(rgba: list[int], rgb: tuple[int, int, int], tolerance: int = 40) -> bool:
    return rgba[3] > 200 and all(abs(a - b) <= tolerance for a, b in zip(rgba, rgb, strict=False))


def _edge_points(box: list[float], scale: tuple[float, float]) -> dict[str, list]:
    """Picture coordinates on the left edge of an index-space ``xyxy`` box (3 points along
    it, so a label or a neighbouring box cannot decide the check) and at its centre."""
    fx, fy = scale
    x0, y0, x1, y1 = box
    u0 = (x0 + 0.5) * fx
    v_top, v_bottom = (y0 + 0.5) * fy, (y1 + 0.5) * fy
    u_centre, v_centre = (x0 + x1 + 1) / 2 * fx, (y0 + y1 + 1) / 2 * fy
    return {
        "edge": [(u0, v_top + (v_bottom - v_top) * t) for t in (0.3, 0.5, 0.7)],
        "centre": [(u_centre, v_centre)],
    }


def test_specialist_refers_a_flagged_study_and_the_hospital_sees_it(
    page: Any, live_service: LiveService, tmp_path: Path
) -> None:
    service = live_service
    study_id = submit_synthetic_study(service, tmp_path / "study", seed=11)
    study = _api(service, service.specialist_token, f"/v1/studies/{study_id}")
    assert study["status"] == "triaged"
    result = _api(service, service.specialist_token, f"/v1/studies/{study_id}/result")
    # The fixture model reports the same three boxes everywhere; its best scores 0.88: urgent.
    assert study["priority"] == "urgent"
    assert sorted(round(f["score"], 2) for f in result["findings"]) == [0.4, 0.6, 0.88]

    # --- sign in; the worklist shows the study with its facts
    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    row = page.locator(f'tr[data-study-id="{study_id}"]')
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[0].lower() == "urgent"
    assert re.fullmatch(r"\d+ min", cells[1]), cells[1]  # waiting time, within its SLA
    assert row.locator(".wait").get_attribute("class") == "wait wait-ok"
    assert cells[2] == service.hospital_name
    assert cells[3] == "DX"
    assert cells[5] == f"{study['suspicion_score']:.2f}"
    assert cells[6] == "web-e2e-fixture v1"
    assert page.locator("#who").inner_text() == "Dr Ada Lovelace (specialist)"
    assert axe_violations(page) == []

    # --- open the case: the image and the model's boxes are drawn
    row.get_by_role("link").click()
    page.wait_for_url(f"**/ui/cases/{study_id}")
    page.locator('#viewport[data-ready="true"]').wait_for()
    geometry = _api(service, service.specialist_token, f"/ui-api/studies/{study_id}/viewer")
    image = geometry["series"][0]["images"][0]
    picture = page.evaluate(
        "[window.oncotriageViewer.image.width, window.oncotriageViewer.image.height]"
    )
    scale = (picture[0] / image["columns"], picture[1] / image["rows"])
    top = max(result["findings"], key=lambda f: f["score"])
    points = _edge_points(top["box_index"], scale)
    # Boxes at or above the operating threshold (0.5) are drawn; the 0.4 candidate is not.
    assert [f["reportable"] for f in sorted(result["findings"], key=lambda f: f["score"])] == [
        False,
        True,
        True,
    ]
    for finding in result["findings"]:
        edge = _overlay_pixels(page, _edge_points(finding["box_index"], scale)["edge"], across=2)
        drawn = any(_near(rgba, MODEL_YELLOW) for rgba in edge)
        assert drawn == finding["reportable"], (finding, edge)
    # Inside a box (away from its label) the overlay is transparent: the image shows through.
    assert _overlay_pixels(page, points["centre"])[0][3] == 0
    assert page.locator("#findings-list li").count() == 2
    assert page.locator("#findings-hidden").inner_text() == (
        "1 candidate box below the model's operating threshold is not shown."
    )
    # The image itself is on the image canvas (not black everywhere).
    grey = page.evaluate(
        """() => {
            const c = document.getElementById("image-canvas");
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let lit = 0;
            for (let i = 0; i < d.length; i += 4 * 97) if (d[i] > 30) lit++;
            return lit;
        }"""
    )
    assert grey > 500
    # Hiding the boxes clears the overlay; showing them draws them again.
    page.keyboard.press("h")
    assert not page.locator("#show-boxes").is_checked()
    assert all(rgba[3] == 0 for rgba in _overlay_pixels(page, points["edge"], across=3))
    page.keyboard.press("h")
    assert any(_near(rgba, MODEL_YELLOW) for rgba in _overlay_pixels(page, points["edge"], 2))
    assert axe_violations(page) == []
    save_screenshot(page, "case.png", tmp_path)

    # --- correct the model: delete the lowest-scoring box shown, draw one
    # The list is sorted by score; delete the lowest-scoring box.
    texts = page.locator("#findings-list li .what").all_inner_texts()
    assert [text.split(" · ")[0] for text in texts] == ["Score 0.88", "Score 0.60"]
    shown = [f for f in result["findings"] if f["reportable"]]
    lowest = min(shown, key=lambda f: f["score"])
    item = page.locator(f'#findings-list li[data-key="m{lowest["id"]}"]')
    item.get_by_role("button", name=re.compile("^Delete")).click()
    assert "(deleted)" in item.inner_text()
    lowest_edge = _edge_points(lowest["box_index"], scale)["edge"]
    assert all(rgba[3] == 0 for rgba in _overlay_pixels(page, lowest_edge, across=3))
    page.keyboard.press("b")
    assert page.locator("#draw-mode").get_attribute("aria-pressed") == "true"
    viewport = page.locator("#viewport").bounding_box()
    start = (viewport["x"] + viewport["width"] * 0.45, viewport["y"] + viewport["height"] * 0.45)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + 60, start[1] + 40, steps=6)
    page.mouse.up()
    assert page.locator("#findings-list li", has_text="Added box").count() == 1

    # --- claim, write a note, refer (r, then Enter to confirm)
    page.keyboard.press("Escape")  # leaves draw mode
    page.keyboard.press("c")
    page.locator("#claim-state", has_text="You hold this case.").wait_for()
    worklist = _api(service, service.specialist_token, "/v1/worklist")
    assert [i["claimed_by"] for i in worklist["data"] if i["id"] == study_id] == ["dr.ada"]
    page.locator("#note").fill("Solitary nodule, please see in clinic.")
    page.locator("#note").blur()
    page.keyboard.press("r")
    assert page.locator("#confirm").is_visible()
    page.keyboard.press("Enter")
    page.locator("#decision-state", has_text="Referred to the centre").wait_for()

    reviews = _api(service, service.specialist_token, f"/v1/studies/{study_id}/reviews")["data"]
    assert len(reviews) == 1
    review = reviews[0]
    assert review["decision"] == "refer"
    assert review["note"] == "Solitary nodule, please see in clinic."
    assert review["reviewer"] in ("dr.ada", "Dr Ada Lovelace")
    # the boxes the specialist saw and kept; the hidden candidate is not endorsed
    kept = {tuple(round(v, 3) for v in f["box_index"]) for f in shown if f is not lowest}
    sent = [tuple(round(v, 3) for v in b["box_index"]) for b in review["corrected_boxes"]]
    assert kept <= set(sent) and len(sent) == len(kept) + 1
    drawn = next(
        b
        for b in review["corrected_boxes"]
        if tuple(round(v, 3) for v in b["box_index"]) not in kept
    )
    assert drawn["series_instance_uid"] == geometry["series"][0]["series_instance_uid"]
    assert drawn["sop_instance_uid"] == image["sop_instance_uid"]
    x0, y0, x1, y1 = drawn["box_index"]
    # 60 x 40 screen pixels at the viewer's zoom, in source pixels.
    zoom = page.evaluate("window.oncotriageViewer.scale")
    assert x1 - x0 == pytest.approx(60 / zoom / scale[0], abs=1.5)
    assert y1 - y0 == pytest.approx(40 / zoom / scale[1], abs=1.5)
    assert 0 <= x0 < x1 <= image["columns"] and 0 <= y0 < y1 <= image["rows"]

    # --- the case has left the queue (the page moves on by itself)
    page.wait_for_url(re.compile(r".*/ui/(worklist|cases/.*)$"))
    page.goto(f"{service.base_url}/ui/worklist")
    page.locator("#last-updated", has_text="updated").wait_for()
    assert page.locator(f'tr[data-study-id="{study_id}"]').count() == 0

    # --- the hospital sees the decision, the referral and can download the SR
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/")
    sign_in(page, service, service.hospital_token)
    page.wait_for_url("**/ui/hospital")
    hospital_row = page.locator(f'#studies-body tr[data-study-id="{study_id}"]')
    hospital_row.wait_for()
    decision = hospital_row.locator("td[data-decision]")
    assert decision.get_attribute("data-decision") == "refer"
    assert "Referred to the centre" in decision.inner_text()
    decision.locator(".decision-note", has_text="Solitary nodule").wait_for()
    referral = page.locator(f'#referrals-body tr[data-study-id="{study_id}"]')
    assert "Lakeside Cancer Centre" in referral.inner_text()
    assert "open" in referral.inner_text()
    with page.expect_download() as download_info:
        hospital_row.get_by_role("button", name=re.compile("Download SR")).click()
    report = Path(download_info.value.path()).read_bytes()
    assert report[128:132] == b"DICM"
    # after the decision the SR is the verified version
    assert b"FINAL" in report and b"UNVERIFIED" not in report
    # no PACS destination set for this hospital: the page says so, and who can set one
    page.locator("#push-status", has_text="Results are not sent to your PACS").wait_for()
    assert axe_violations(page) == []
    save_screenshot(page, "hospital.png", tmp_path)


def test_keyboard_moves_claims_releases_and_returns(
    page: Any, live_service: LiveService, tmp_path: Path
) -> None:
    service = live_service
    first = submit_synthetic_study(service, tmp_path / "a", seed=21)
    second = submit_synthetic_study(service, tmp_path / "b", seed=22)
    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    page.locator(f'tr[data-study-id="{second}"]').wait_for()
    order = page.locator("#worklist-body tr").evaluate_all(
        "rows => rows.map(r => r.dataset.studyId)"
    )
    assert {first, second} <= set(order)
    selected = page.locator('#worklist-body tr[aria-selected="true"]')
    assert selected.get_attribute("data-study-id") == order[0]
    page.keyboard.press("j")
    assert selected.get_attribute("data-study-id") == order[1]
    page.keyboard.press("k")
    assert selected.get_attribute("data-study-id") == order[0]
    target = order.index(first)
    for _ in range(target):
        page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/cases/{first}")
    page.locator('#viewport[data-ready="true"]').wait_for()
    # A radiograph has no Hounsfield windows.
    assert page.get_by_role("button", name="Lung").is_disabled()

    def claimed_by(study_id: str) -> str | None:
        items = _api(service, service.specialist_token, "/v1/worklist")["data"]
        return next(i["claimed_by"] for i in items if i["id"] == study_id)

    page.keyboard.press("c")
    page.locator("#claim-state", has_text="You hold this case.").wait_for()
    assert claimed_by(first) == "dr.ada"
    page.keyboard.press("Escape")
    page.locator("#claim-state", has_text="Not claimed.").wait_for()
    assert claimed_by(first) is None

    # t asks to return the case; the confirmation claims it first; Enter confirms.
    page.keyboard.press("t")
    assert "Claim this case and return" in page.locator("#confirm-text").inner_text()
    page.keyboard.press("Enter")
    page.locator("#decision-state", has_text="Returned to hospital").wait_for()
    study = _api(service, service.specialist_token, f"/v1/studies/{first}")
    assert (study["review_status"], study["decision"]) == ("decided", "return")
    # ... and the page opens the next case still waiting.
    deadline = time.monotonic() + 10
    while f"/ui/cases/{first}" in page.url and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert f"/ui/cases/{first}" not in page.url


def test_reloading_a_claimed_case_keeps_the_claim(
    page: Any, live_service: LiveService, tmp_path: Path
) -> None:
    service = live_service
    study_id = submit_synthetic_study(service, tmp_path / "r", seed=23)

    def claimed_by() -> str | None:
        items = _api(service, service.specialist_token, "/v1/worklist")["data"]
        return next(i["claimed_by"] for i in items if i["id"] == study_id)

    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{service.base_url}/ui/cases/{study_id}")
    page.locator('#viewport[data-ready="true"]').wait_for()
    page.locator("#claim-btn").click()
    page.locator("#claim-state", has_text="You hold this case.").wait_for()
    assert claimed_by() == "dr.ada"

    # The page releases its claim as it goes away, and takes it back after the reload.
    page.reload()
    page.locator('#viewport[data-ready="true"]').wait_for()
    page.locator("#claim-state", has_text="You hold this case.").wait_for()
    assert claimed_by() == "dr.ada"
    page.wait_for_timeout(500)  # a late release from the old page would land by now
    assert claimed_by() == "dr.ada"

    # Released on purpose, a reload leaves it in the queue.
    page.keyboard.press("Escape")
    page.locator("#claim-state", has_text="Not claimed.").wait_for()
    page.reload()
    page.locator('#viewport[data-ready="true"]').wait_for()
    page.locator("#claim-state", has_text="Not claimed.").wait_for()
    assert claimed_by() is None


def test_a_refused_token_is_explained(page: Any, live_service: LiveService) -> None:
    page.goto(f"{live_service.base_url}/ui/")
    assert axe_violations(page) == []
    sign_in(page, live_service, "otk_000000000000_not-a-real-token-at-all")
    alert = page.get_by_role("alert")
    alert.filter(has_text="not accepted").wait_for()
    assert page.url.endswith("/ui/")
    assert page.evaluate("sessionStorage.getItem('oncotriage.token')") is None
    # Pages need a token: without one they send the person to sign in.
    page.goto(f"{live_service.base_url}/ui/worklist")
    page.wait_for_url("**/ui/?next=%2Fui%2Fworklist")


def test_worklist_refreshes_by_itself(page: Any, live_service: LiveService, tmp_path: Path) -> None:
    service = live_service
    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{service.base_url}/ui/worklist?refresh=1")
    page.locator("#last-updated", has_text="updated").wait_for()
    page.evaluate("window.__sameDocument = true")
    study_id = submit_synthetic_study(service, tmp_path / "new", seed=41)
    page.locator(f'tr[data-study-id="{study_id}"]').wait_for(timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True  # polled, not reloaded
    # The shortcuts dialog opens with "?" and closes with Escape.
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    assert dialog.is_visible()
    assert axe_violations(page) == []
    page.keyboard.press("Escape")
    assert not dialog.is_visible()


def _image_checksum(page: Any) -> int:
    """A checksum of what the image canvas shows (to tell slices and windows apart)."""
    return int(
        page.evaluate(
            """() => {
                const c = document.getElementById("image-canvas");
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let sum = 0;
                for (let i = 0; i < d.length; i += 4) sum = (sum * 31 + d[i]) % 2147483647;
                return sum;
            }"""
        )
    )


def _wait_ready(page: Any) -> None:
    page.locator('#viewport[data-ready="true"]').wait_for()


def test_ct_case_scrolls_slices_changes_windows_and_sends_a_drawn_box(
    page: Any, live_service: LiveService, tmp_path: Path
) -> None:
    """A CT series the 2D model cannot read is flagged for manual review (never silently
    routine); the specialist pages through it with windows and marks a nodule by hand."""
    service = live_service
    study_id = submit_synthetic_study(service, tmp_path / "ct", seed=31, kind="ldct")
    study = _api(service, service.specialist_token, f"/v1/studies/{study_id}")
    assert study["priority"] == "needs_manual_review"
    geometry = _api(service, service.specialist_token, f"/ui-api/studies/{study_id}/viewer")
    (series,) = geometry["series"]
    assert series["is_volume"] and series["modality"] == "CT"
    depth = series["slices"]
    assert depth == len(list((tmp_path / "ct").rglob("*.dcm")))

    def worklist() -> list[dict[str, Any]]:
        return _api(service, service.specialist_token, "/v1/worklist")["data"]

    # Past its SLA (1.2 s in these tests) the service flags the case overdue; the page shows
    # what the service said when it last polled, so it is opened once the flag is set (opened
    # earlier, it shows "ok" until its next poll: that raced the SLA on a slow machine).
    deadline = time.monotonic() + 30
    while not next(e for e in worklist() if e["id"] == study_id)["overdue"]:
        assert time.monotonic() < deadline, "the case never became overdue"
        time.sleep(0.2)
    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    row = page.locator(f'tr[data-study-id="{study_id}"]')
    assert row.locator(".badge").inner_text().lower() == "manual review"
    # overdue, in the overdue colour, and moved to the top
    wait = row.locator(".wait")
    assert wait.get_attribute("class") == "wait wait-over"
    assert wait.inner_text().endswith("overdue")

    # overdue cases come first: in the service's order every case above this one is overdue too
    listed = worklist()
    position = [entry["id"] for entry in listed].index(study_id)
    assert all(entry["overdue"] for entry in listed[: position + 1])
    save_screenshot(page, "worklist.png", tmp_path)
    row.get_by_role("link").click()
    _wait_ready(page)

    # Slices: the middle one first; arrow keys and the mouse wheel move through them.
    middle = depth // 2
    assert page.locator("#slice-label").inner_text() == f"{middle + 1} / {depth}"
    assert page.locator("#slice").get_attribute("max") == str(depth - 1)
    first = _image_checksum(page)
    page.keyboard.press("ArrowDown")
    page.locator("#slice-label", has_text=f"{middle + 2} / {depth}").wait_for()
    _wait_ready(page)
    assert _image_checksum(page) != first
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(50)
    page.locator("#slice-label", has_text=f"{middle - 1} / {depth}").wait_for()
    _wait_ready(page)
    slice_index = middle - 2
    assert page.evaluate("window.oncotriageCase.slice") == slice_index

    # Windows: the server's CT default is the lung window; mediastinum and bone differ.
    checksums = {}
    for key, preset in (("1", "lung"), ("2", "mediastinum"), ("3", "bone")):
        page.keyboard.press(key)
        assert (
            page.get_by_role("button", name=preset.capitalize()).get_attribute("aria-pressed")
            == "true"
        )
        _wait_ready(page)
        checksums[preset] = _image_checksum(page)
    assert len(set(checksums.values())) == 3
    page.keyboard.press("0")
    _wait_ready(page)
    assert _image_checksum(page) == checksums["lung"]
    save_screenshot(page, "case-ct.png", tmp_path)

    # Zoom and pan.
    scale = page.evaluate("window.oncotriageViewer.scale")
    page.keyboard.press("+")
    assert page.evaluate("window.oncotriageViewer.scale") == pytest.approx(scale * 1.25)
    tx = page.evaluate("window.oncotriageViewer.tx")
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 160, box["y"] + 100, steps=5)
    page.mouse.up()
    assert page.evaluate("window.oncotriageViewer.tx") == pytest.approx(tx + 60, abs=1)
    page.keyboard.press("f")
    assert page.evaluate("window.oncotriageViewer.scale") == pytest.approx(scale)
    assert axe_violations(page) == []

    # Mark a nodule on this slice, ask for more imaging.
    page.get_by_role("button", name="Draw box").click()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 30, centre[1] + 30, steps=5)
    page.mouse.up()
    added = page.locator("#findings-list li", has_text="Added box")
    assert f"on slice {slice_index + 1}" in added.inner_text()
    page.get_by_role("button", name=re.compile("^More imaging")).click()
    page.get_by_role("button", name=re.compile("^Confirm")).click()
    page.locator("#decision-state", has_text="More imaging requested").wait_for()
    (review,) = _api(service, service.specialist_token, f"/v1/studies/{study_id}/reviews")["data"]
    assert review["decision"] == "more_imaging"
    (drawn,) = review["corrected_boxes"]
    assert drawn["series_instance_uid"] == series["series_instance_uid"]
    assert drawn["sop_instance_uid"] is None
    x0, y0, z0, x1, y1, z1 = drawn["box_index"]
    assert z0 == z1 == slice_index
    assert 0 <= x0 < x1 <= series["columns"] and 0 <= y0 < y1 <= series["rows"]


def test_ui_api_authenticates_and_hides_what_is_not_yours(live_service: LiveService) -> None:
    service = live_service
    assert httpx.get(f"{service.base_url}/ui-api/me").status_code == 401
    me = _api(service, service.hospital_token, "/ui-api/me")
    assert me == {
        "role": "hospital",
        "name": service.hospital_name,
        "username": None,
        "hospital": service.hospital_name,
    }
    me = _api(service, service.specialist_token, "/ui-api/me")
    assert me == {
        "role": "specialist",
        "name": "Dr Ada Lovelace",
        "username": "dr.ada",
        "hospital": "Lakeside Cancer Centre",
    }
    with service.client(service.specialist_token) as client:
        missing = client.get("/ui-api/studies/00000000-0000-4000-8000-000000000000/viewer")
        assert missing.status_code == 404
    # The pages' own routes stay out of the public API description.
    paths = httpx.get(f"{service.base_url}/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/ui", "/ui-api"))]
