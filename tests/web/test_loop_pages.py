"""Browser test of the patient timeline and the union's figures pages (Debian chromium)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .conftest import LiveService, axe_violations, save_screenshot, sign_in, submit_synthetic_study


def _call(service: LiveService, method: str, path: str, **kwargs: Any) -> Any:
    with service.client(service.specialist_token) as client:
        response = client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


def test_timeline_and_figures_pages_show_the_referral(
    page: Any, live_service: LiveService, tmp_path: Path
) -> None:
    service = live_service
    study_id = submit_synthetic_study(service, tmp_path / "study", seed=31)
    _call(service, "POST", f"/v1/worklist/{study_id}/claim")
    review = _call(service, "POST", f"/v1/studies/{study_id}/review", json={"decision": "refer"})
    url = f"/v1/referrals/{review['referral_id']}"
    appointment = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    _call(service, "POST", f"{url}/schedule", json={"appointment_at": appointment})
    _call(service, "POST", f"{url}/seen", json={})
    _call(
        service,
        "POST",
        f"{url}/diagnosis",
        json={"outcome": "malignant", "site": "left lower lobe", "histology": "adenocarcinoma"},
    )
    referral = _call(
        service,
        "POST",
        f"{url}/return",
        json={"plan": "surveillance", "followup": {"months": 6, "category": "3"}},
    )
    patient_id = referral["patient_id"]
    timeline = _call(service, "GET", f"/v1/patients/{patient_id}/timeline")

    sign_in(page, service, service.specialist_token)
    page.wait_for_url("**/ui/worklist")
    page.goto(f"{service.base_url}/ui/patients/{patient_id}")
    page.locator('body[data-ready="true"]').wait_for()
    kinds = page.locator("#timeline-body tr").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds == [entry["kind"] for entry in timeline["data"]]
    assert kinds[:4] == ["study.received", "study.triaged", "decision", "referral.requested"]
    outcome_row = page.locator('#timeline-body tr[data-kind="outcome"] td').all_inner_texts()
    assert outcome_row[1:] == [
        "Diagnosis",
        "Lakeside Cancer Centre",
        "malignant · left lower lobe · adenocarcinoma",
    ]
    followups = page.locator("#followups li").all_inner_texts()
    assert len(followups) == 1 and followups[0].startswith("CT in 6 months (Lung-RADS 3)")
    assert axe_violations(page) == []
    save_screenshot(page, "timeline.png", tmp_path)

    page.goto(f"{service.base_url}/ui/figures")
    page.locator('body[data-ready="true"]').wait_for()
    figures = _call(service, "GET", "/v1/figures")
    [row] = figures["data"]
    cells = page.locator('#figures-body tr[data-hospital="Riverside Community"] td')
    texts = cells.all_inner_texts()
    assert texts[:8] == [
        "Riverside Community",
        row["month"],
        str(row["screened"]),
        str(row["flagged"]),
        "1",
        "1",
        "1",
        f"{row['confirmed_cancers'] / row['flags_with_outcome']:.2f}",
    ]
    bars = page.locator('#volume-chart rect[data-series="referred_up"]')
    assert bars.get_attribute("data-value") == "1"
    assert float(bars.get_attribute("width") or 0) > 0
    assert page.locator("#delay-chart rect").count() == 3
    assert axe_violations(page) == []
    save_screenshot(page, "figures.png", tmp_path)
