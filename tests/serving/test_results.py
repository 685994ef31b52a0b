"""Results as JSON, DICOM SR and PNG; operations endpoints; the OpenAPI document."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from PIL import Image
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for

from oncotriage.serving.db.models import Hospital


@pytest.fixture
def triaged(sqlite_service_factory, flagging_bundle):
    """A running service with one triaged radiograph study of hospital A."""
    instance = dx_instance(50)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        yield service, study_id, instance


def test_result_has_index_and_world_boxes(triaged) -> None:
    service, study_id, instance = triaged
    with service.client("spec1") as client:
        result = client.get(f"/v1/studies/{study_id}/result").json()
    findings = result["findings"]
    assert len(findings) == 3
    assert [f["score"] for f in findings] == sorted((f["score"] for f in findings), reverse=True)
    for finding in findings:
        assert finding["sop_instance_uid"] == instance.SOPInstanceUID
        assert finding["series_instance_uid"] == instance.SeriesInstanceUID
        assert (finding["model_name"], finding["model_version"]) == ("oncotriage-test", "1")
        # detector-plane millimetres = index * pixel spacing (0.5 mm), both xyxy
        np.testing.assert_allclose(
            finding["box_world"], np.array(finding["box_index"]) * 0.5, atol=1e-4
        )
        x0, y0, x1, y1 = finding["box_index"]
        assert 0 <= x0 <= x1 <= 63 and 0 <= y0 <= y1 <= 63
    assert result["suspicion_score"] == pytest.approx(findings[0]["score"])
    assert result["series"][0]["status"] == "done"


def test_report_is_a_dicom_sr_holding_the_findings(triaged) -> None:
    service, study_id, instance = triaged
    with service.client("A") as client:
        response = client.get(f"/v1/studies/{study_id}/report.dcm")
        findings = client.get(f"/v1/studies/{study_id}/result").json()["findings"]
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.Modality == "SR"
    assert ds.StudyInstanceUID == instance.StudyInstanceUID
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(findings) == 3
    evidence = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for item in study.ReferencedSeriesSequence
    } | {
        ref.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert instance.SOPInstanceUID in evidence
    assert "oncotriage-test" in str(ds.ContentSequence) and "1" in str(ds.ContentSequence)


def test_render_png(triaged) -> None:
    service, study_id, instance = triaged
    with service.client("spec1") as client:
        plain = client.get(
            f"/v1/studies/{study_id}/render.png", params={"boxes": "false", "size": 64}
        )
        boxed = client.get(f"/v1/studies/{study_id}/render.png", params={"size": 64})
        bad = [
            client.get(f"/v1/studies/{study_id}/render.png", params=params).status_code
            for params in ({"series": "1.2.3"}, {"slice": 3}, {"window": "lung"}, {"window": "a,b"})
        ]
    assert plain.status_code == boxed.status_code == 200
    assert plain.headers["content-type"] == "image/png"
    plain_image = np.asarray(Image.open(io.BytesIO(plain.content)).convert("RGB"))
    boxed_image = np.asarray(Image.open(io.BytesIO(boxed.content)).convert("RGB"))
    assert plain_image.shape == boxed_image.shape == (64, 64, 3)
    assert np.all(plain_image[..., 0] == plain_image[..., 1])  # grey without boxes
    reddish = (boxed_image[..., 0] > 200) & (boxed_image[..., 1] < 100)
    assert reddish.sum() > 10  # the boxes are drawn in red
    assert bad == [422, 422, 422, 422]


def test_report_waits_for_triage(sqlite_service_factory, flagging_bundle) -> None:
    instance = dx_instance(51)
    with sqlite_service_factory(model_uri=str(flagging_bundle), embedded_workers=0) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        with service.client("A") as client:
            study = client.get(f"/v1/studies/{study_id}").json()
            assert (study["status"], study["priority"]) == ("queued", None)
            assert client.get(f"/v1/studies/{study_id}/report.dcm").status_code == 409


def test_health_readiness_metrics(triaged) -> None:
    service, study_id, _ = triaged
    with service.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert {name: check["ok"] for name, check in checks.items()} == {
            "database": True,
            "store": True,
            "model": True,
        }
        assert (checks["model"]["model"], checks["model"]["version"]) == ("oncotriage-test", "1")
        client.get("/v1/studies")  # a 401, counted too
    with service.client("root") as admin:
        text = admin.get("/metrics").text
    samples = _samples(text)
    with service.db.session() as session:
        hospital_a = session.scalar(sa.select(Hospital.id).where(Hospital.name == "Hospital A"))
    assert "Hospital A" not in text  # names are not for the scraper
    assert samples[("oncotriage_queue_depth", (("state", "done"),))] == 1
    assert samples[("oncotriage_queue_depth", (("state", "queued"),))] == 0
    assert (
        samples[
            (
                "oncotriage_studies_by_priority",
                (("hospital_id", str(hospital_a)), ("priority", "suspicious")),
            )
        ]
        == 1
    )
    assert samples[("oncotriage_time_to_triage_seconds_count", ())] == 1
    assert samples[("oncotriage_model_info", (("model", "oncotriage-test"), ("version", "1")))] == 1
    assert (
        samples[("oncotriage_studies_by_model", (("model", "oncotriage-test"), ("version", "1")))]
        == 1
    )
    key = (
        "oncotriage_http_requests_total",
        (("method", "GET"), ("route", "/v1/studies"), ("status", "401")),
    )
    assert samples[key] == 1
    # raw paths (which may hold UIDs) never become labels
    assert study_id not in text


def test_metrics_need_the_metrics_token_or_an_administrator(
    service_factory, flagging_bundle
) -> None:
    token = "metrics-" + "x" * 40
    with service_factory(model_uri=str(flagging_bundle), metrics_token=token) as service:
        with service.client() as anonymous:
            refused = anonymous.get("/metrics")
            assert refused.status_code == 401 and "metrics token" in refused.json()["detail"]
            wrong = anonymous.get("/metrics", headers={"Authorization": "Bearer not-it"})
            assert wrong.status_code == 401
            scraped = anonymous.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert scraped.status_code == 200 and "oncotriage_queue_depth" in scraped.text
        for who, expected in (("A", 403), ("spec1", 403), ("root", 200)):
            with service.client(who) as client:
                assert client.get("/metrics").status_code == expected, who


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_not_ready_without_a_model(sqlite_service_factory, tmp_path) -> None:
    with sqlite_service_factory(model_uri=str(tmp_path / "no-such-bundle")) as service:
        response = service.client().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert (checks["database"]["ok"], checks["store"]["ok"], checks["model"]["ok"]) == (
        True,
        True,
        False,
    )
    assert "no-such-bundle" in checks["model"]["error"]


def test_openapi_documents_every_route_with_a_response_model(sqlite_service_factory) -> None:
    with sqlite_service_factory(embedded_workers=0) as service, service.client() as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    schemas = spec["components"]["schemas"]
    for name in (
        "StudyPublic",
        "StudiesPublic",
        "WorklistPublic",
        "ReviewPublic",
        "ReferralsPublic",
    ):
        assert name in schemas
    assert set(schemas["StudiesPublic"]["properties"]) == {"data", "count"}
    leaked = {"token_hash", "webhook_secret", "stored_path", "lease_owner"}
    assert not leaked & {
        prop for schema in schemas.values() for prop in schema.get("properties", {})
    }
    json_routes = [
        (path, method)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if path.startswith("/v1/") and "200" in operation["responses"]
    ]
    for path, method in json_routes:
        content = spec["paths"][path][method]["responses"]["200"].get("content", {})
        if "application/json" in content:
            assert "$ref" in str(content["application/json"]["schema"]), (path, method)


def test_report_of_a_study_sent_with_an_unknown_character_set(
    sqlite_service_factory, flagging_bundle
) -> None:
    """The probe's 500: an instance whose Specific Character Set is ``NOT_A_CHARSET``, stored
    and triaged; its report.dcm must still be served (written in UTF-8)."""
    instance = dx_instance(51)
    instance.SpecificCharacterSet = "NOT_A_CHARSET"
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        sent = stow(service, "A", [to_bytes(instance)])
        # kept, and the sender is told its character set is unknown
        assert sent.status_code == 202, sent.text
        assert "unknown Specific Character Set NOT_A_CHARSET" in sent.headers["warning"]
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        with service.client("A") as client:
            answer = client.get(f"/v1/studies/{study_id}/report.dcm")
    assert answer.status_code == 200, answer.text
    report = pydicom.dcmread(io.BytesIO(answer.content))
    assert report.SpecificCharacterSet == "ISO_IR 192"
    assert report.StudyInstanceUID == instance.StudyInstanceUID


def _write_lock_free(service) -> bool:  # type: ignore[no-untyped-def]
    """Can another connection take SQLite's write lock right now?"""
    import sqlite3

    path = service.db.engine.url.database
    connection = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def test_report_and_render_are_built_outside_the_transaction(triaged, monkeypatch) -> None:
    """Building an SR or a PNG reads files and takes CPU; on SQLite every transaction holds
    the write lock, so the routes end theirs first. Reading the study's id after the rollback
    used to open a new one that the build then held (a starved CPU held it past the 30 s busy
    timeout, and the worker's and audit writer's writes failed with "database is locked")."""
    from oncotriage.serving.api.routes import studies as routes

    service, study_id, _ = triaged
    seen: list[tuple[str, bool]] = []

    def checked(name: str, original):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((name, _write_lock_free(service)))
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(routes, "build_report", checked("report", routes.build_report))
    monkeypatch.setattr(routes, "render", checked("render", routes.render))
    with service.client("A") as client:
        report = client.get(f"/v1/studies/{study_id}/report.dcm")
        png = client.get(f"/v1/studies/{study_id}/render.png")
    assert report.status_code == png.status_code == 200
    assert f'filename="oncotriage-{study_id}.dcm"' in report.headers["content-disposition"]
    assert seen == [("report", True), ("render", True)]
