"""Results pushed back to a hospital's PACS through the outbox: C-STORE to a real DICOM node
(a pynetdicom SCP here), STOW-RS to a real Orthanc acting as the hospital's router, and a
destination that refuses (retried with backoff, visible in /metrics and the hospital's view).
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.orthanc import running_orthanc
from service_utils.server import Service, stow, study_id_for, wait_until

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _set_destination(service: Service, hospital: str, body: dict[str, Any]) -> dict[str, Any]:
    with service.client("root") as admin:
        answer = admin.put(
            f"/v1/hospitals/{service.hospital_ids[hospital]}/results-destination", json=body
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _push_view(service: Service, who: str = "A") -> dict[str, Any]:
    with service.client(who) as client:
        return dict(client.get("/v1/hospitals/me/results-destination").raise_for_status().json())


def _metric(service: Service, name: str, **labels: str) -> float | None:
    with service.client("root") as admin:
        text = admin.get("/metrics").raise_for_status().text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return None


def _report_uid(service: Service, study_id: str) -> str:
    with service.client("A") as client:
        payload = client.get(f"/v1/studies/{study_id}/report.dcm").raise_for_status().content
    return str(pydicom.dcmread(io.BytesIO(payload)).SOPInstanceUID)


def _decide(service: Service, study_id: str, note: str) -> None:
    with service.client("spec1") as specialist:
        specialist.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
        specialist.post(
            f"/v1/studies/{study_id}/review", json={"decision": "return", "note": note}
        ).raise_for_status()


# -- C-STORE to a DICOM node ----------------------------------------------------------------


@dataclass
class StoreSCP:
    port: int
    received: list[pydicom.Dataset] = field(default_factory=list)
    calling: list[str] = field(default_factory=list)


@pytest.fixture
def store_scp() -> Iterator[StoreSCP]:
    """A real DICOM Storage SCP (pynetdicom) on 127.0.0.1, AE title HOSPITALPACS."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    ae = AE(ae_title="HOSPITALPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    state = StoreSCP(port=0)
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with lock:
            state.received.append(dataset)
            state.calling.append(str(event.assoc.requestor.ae_title))
        return 0x0000

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    state.port = int(server.server_address[1])
    try:
        yield state
    finally:
        server.shutdown()


def test_c_store_pushes_the_ai_result_then_the_verified_version(
    service_factory, flagging_bundle, store_scp: StoreSCP
) -> None:
    """On SQLite and PostgreSQL (the outbox claim and the metrics' SQL differ)."""
    instance = dx_instance(81)
    with service_factory(model_uri=str(flagging_bundle)) as service:
        shown = _set_destination(
            service,
            "A",
            {
                "kind": "dimse",
                "ae_title": "HOSPITALPACS",
                "host": "127.0.0.1",
                "port": store_scp.port,
            },
        )
        assert shown["destination"]["description"] == (
            f"C-STORE HOSPITALPACS@127.0.0.1:{store_scp.port} (from ONCOTRIAGE)"
        )
        assert shown["last_push"] is None
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        wait_until(lambda: len(store_scp.received) == 1, timeout_s=60)
        ai = store_scp.received[0]
        assert ai.SOPClassUID == COMPREHENSIVE_3D_SR
        assert ai.StudyInstanceUID == instance.StudyInstanceUID
        assert ai.SOPInstanceUID == _report_uid(service, study_id)
        assert ai.VerificationFlag == "UNVERIFIED"
        assert store_scp.calling == ["ONCOTRIAGE"]
        wait_until(lambda: (_push_view(service)["last_push"] or {}).get("state") == "delivered")

        _decide(service, study_id, "No action: calcified granuloma.")
        wait_until(lambda: len(store_scp.received) == 2, timeout_s=60)
        verified = store_scp.received[1]
        assert verified.VerificationFlag == "VERIFIED"
        assert verified.SOPInstanceUID == _report_uid(service, study_id)
        referenced = verified.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
        assert referenced.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ai.SOPInstanceUID
        wait_until(lambda: (_push_view(service)["last_push"] or {}).get("state") == "delivered")
        view = _push_view(service)
        assert view["last_push"]["version"] == "verified"
        assert view["last_push"]["study_id"] == study_id
        assert view["last_push"]["attempts"] == 1
        assert (view["pending"], view["failed"]) == (0, 0)
        assert (
            _metric(
                service, "oncotriage_result_push_attempts_total", kind="dimse", outcome="delivered"
            )
            == 2.0
        )
        assert (
            _metric(
                service, "oncotriage_result_push_attempts_total", kind="dimse", outcome="failed"
            )
            == 0.0
        )


# -- a destination that refuses ---------------------------------------------------------------


@dataclass
class Refuser:
    status: int
    url: str = ""
    attempts: list[float] = field(default_factory=list)  # monotonic times
    content_types: list[str] = field(default_factory=list)


@pytest.fixture
def refuser() -> Iterator[Refuser]:
    """A real HTTP STOW-RS endpoint on 127.0.0.1 that answers every request with one status."""
    state = Refuser(status=503)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.attempts.append(time.monotonic())
            state.content_types.append(self.headers.get("Content-Type", ""))
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web/studies"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_a_refusing_destination_is_retried_with_backoff_and_the_failure_shows(
    service_factory, flagging_bundle, refuser: Refuser
) -> None:
    base = 0.3
    instance = dx_instance(82)
    with service_factory(
        model_uri=str(flagging_bundle),
        webhook_max_attempts=3,
        webhook_backoff_base_s=base,
        webhook_backoff_max_s=5.0,
    ) as service:
        _set_destination(service, "A", {"kind": "stow", "url": refuser.url})
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        wait_until(lambda: (_push_view(service)["last_push"] or {}).get("state") == "failed")
        view = _push_view(service)
        failed_count = _metric(
            service, "oncotriage_result_push_attempts_total", kind="stow", outcome="failed"
        )
        given_up = _metric(service, "oncotriage_result_pushes", kind="stow", state="failed")
    assert len(refuser.attempts) == 3
    assert all('type="application/dicom"' in value for value in refuser.content_types)
    gaps = [later - earlier for earlier, later in pairwise(refuser.attempts)]
    # exponential backoff: base, then 2 * base (each measured from the failed answer)
    assert gaps[0] >= base * 0.95 and gaps[1] >= 2 * base * 0.95, gaps
    last = view["last_push"]
    assert last["attempts"] == 3 and last["study_id"] == study_id and last["version"] == "ai"
    assert "HTTP 503" in last["error"]
    assert (view["pending"], view["failed"]) == (0, 1)
    assert failed_count == 3.0
    assert given_up == 1.0


def test_a_refusal_for_good_is_not_retried(
    sqlite_service_factory, flagging_bundle, refuser: Refuser
) -> None:
    refuser.status = 409  # STOW-RS: none of the instances was stored
    instance = dx_instance(83)
    with sqlite_service_factory(model_uri=str(flagging_bundle), webhook_max_attempts=5) as service:
        _set_destination(service, "A", {"kind": "stow", "url": refuser.url})
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        wait_until(lambda: (_push_view(service)["last_push"] or {}).get("state") == "failed")
        view = _push_view(service)
    assert len(refuser.attempts) == 1
    assert view["last_push"]["attempts"] == 1
    assert "HTTP 409" in view["last_push"]["error"]


def test_destinations_are_checked_and_only_admins_set_them(sqlite_service_factory) -> None:
    with sqlite_service_factory(register_demo_model=False) as service:
        hospital_a = service.hospital_ids["A"]
        with service.client("root") as admin:
            bad = admin.put(
                f"/v1/hospitals/{hospital_a}/results-destination",
                json={"kind": "stow", "url": "ftp://pacs.example.org/"},
            )
            no_port = admin.put(
                f"/v1/hospitals/{hospital_a}/results-destination",
                json={"kind": "dimse", "ae_title": "PACS", "host": "pacs"},
            )
        with service.client("A") as hospital:
            self_service = hospital.put(
                f"/v1/hospitals/{hospital_a}/results-destination",
                json={"kind": "stow", "url": "https://pacs.example.org/dicom-web/studies"},
            )
            view = hospital.get("/v1/hospitals/me/results-destination").json()
    assert bad.status_code == 422 and "http(s) URL" in bad.text
    assert no_port.status_code == 422 and "port" in no_port.text
    assert self_service.status_code == 403
    assert view == {"destination": None, "last_push": None, "pending": 0, "failed": 0}


# -- Orthanc as the hospital's router ----------------------------------------------------------


def test_orthanc_forwards_a_study_and_gets_the_srs_back_in_the_same_study(
    sqlite_service_factory, flagging_bundle, tmp_path
) -> None:
    """Orthanc sends the study to the service with its DICOMweb plugin (STOW-RS client), the
    service triages it and pushes the SR back to Orthanc's own STOW-RS (HTTP Basic); the SR
    is then in the same study in Orthanc, and after the decision the verified one too.
    Orthanc then finds the study on the service (QIDO-RS) and retrieves its series (WADO-RS)."""
    instance = dx_instance(84)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        with running_orthanc(
            tmp_path / "orthanc", f"{service.url}/dicomweb/", service.tokens["A"]
        ) as orthanc:
            _set_destination(
                service,
                "A",
                {
                    "kind": "stow",
                    "url": f"{orthanc.dicomweb_url}/studies",
                    "auth": "basic",
                    "username": orthanc.auth[0],
                    "secret": orthanc.auth[1],
                },
            )
            with orthanc.client() as pacs:
                uploaded = pacs.post("/instances", content=to_bytes(instance)).raise_for_status()
                orthanc_study = uploaded.json()["ParentStudy"]
                forwarded = pacs.post(
                    "/dicom-web/servers/oncotriage/stow",
                    json={"Resources": [orthanc_study], "Synchronous": True},
                )
                assert forwarded.is_success, (forwarded.text, orthanc.log.read_text()[-2000:])
            study_id = study_id_for(service, "A", instance.StudyInstanceUID)
            service.wait_for_study(study_id, "A")

            def sop_uids() -> set[str]:
                with orthanc.client() as pacs:
                    instances = pacs.get(f"/studies/{orthanc_study}/instances").json()
                return {item["MainDicomTags"]["SOPInstanceUID"] for item in instances}

            ai_uid = _report_uid(service, study_id)
            wait_until(lambda: ai_uid in sop_uids(), timeout_s=60)
            assert sop_uids() == {instance.SOPInstanceUID, ai_uid}

            _decide(service, study_id, "Benign appearance; routine screening.")
            verified_uid = _report_uid(service, study_id)
            wait_until(lambda: verified_uid in sop_uids(), timeout_s=60)
            assert sop_uids() == {instance.SOPInstanceUID, ai_uid, verified_uid}
            with orthanc.client() as pacs:
                series = pacs.get(f"/studies/{orthanc_study}/series").json()
                stored = next(
                    item["ID"]
                    for item in pacs.get(f"/studies/{orthanc_study}/instances").json()
                    if item["MainDicomTags"]["SOPInstanceUID"] == verified_uid
                )
                verified = pydicom.dcmread(
                    io.BytesIO(pacs.get(f"/instances/{stored}/file").raise_for_status().content)
                )
            # the image's series, the AI result series and the verified series
            assert len(series) == 3
            assert verified.VerificationFlag == "VERIFIED"
            assert verified.StudyInstanceUID == instance.StudyInstanceUID
            view = _push_view(service)
            assert view["last_push"]["state"] == "delivered"
            assert view["destination"]["auth"] == "basic"
            assert "secret" not in view["destination"]

            # Orthanc's DICOMweb client queries the service back (QIDO-RS) and, its own copy
            # of the image gone, retrieves the image series from it again (WADO-RS)
            with orthanc.client() as pacs:
                studies = pacs.post(
                    "/dicom-web/servers/oncotriage/qido",
                    json={"Uri": "/studies", "Arguments": {"PatientID": instance.PatientID}},
                )
                assert studies.is_success, (studies.text, orthanc.log.read_text()[-2000:])
                # Orthanc answers in its own "full" DICOM JSON: each tag with Name and a
                # string Value
                assert [s["0020000D"]["Value"] for s in studies.json()] == [
                    instance.StudyInstanceUID
                ]
                series_found = pacs.post(
                    "/dicom-web/servers/oncotriage/qido",
                    json={"Uri": f"/studies/{instance.StudyInstanceUID}/series"},
                ).raise_for_status()
                assert {s["0020000E"]["Value"] for s in series_found.json()} >= {
                    instance.SeriesInstanceUID
                }
                image = next(
                    item["ID"]
                    for item in pacs.get(f"/studies/{orthanc_study}/instances").json()
                    if item["MainDicomTags"]["SOPInstanceUID"] == instance.SOPInstanceUID
                )
                pacs.delete(f"/instances/{image}").raise_for_status()
                retrieved = pacs.post(
                    "/dicom-web/servers/oncotriage/retrieve",
                    json={
                        "Resources": [
                            {
                                "Study": instance.StudyInstanceUID,
                                "Series": instance.SeriesInstanceUID,
                            }
                        ]
                    },
                )
                assert retrieved.is_success, (retrieved.text, orthanc.log.read_text()[-2000:])
            assert sop_uids() == {instance.SOPInstanceUID, ai_uid, verified_uid}


def test_admin_cli_sets_and_clears_a_destination(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from oncotriage.cli import app
    from oncotriage.serving.db.models import ResultDestination
    from oncotriage.serving.db.session import Database
    from oncotriage.serving.settings import get_settings

    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ONCOTRIAGE_PUSH_PASSWORD", "from-the-environment")
    get_settings.cache_clear()
    runner = CliRunner()
    command = ["admin", "set-results-destination", "Hospital A"]
    try:
        for args in (
            ["admin", "create-hospital", "Centre", "--kind", "centre"],
            ["admin", "create-hospital", "Hospital A", "--centre", "Centre"],
        ):
            assert runner.invoke(app, args).exit_code == 0
        stow_set = runner.invoke(
            app,
            [*command, "--stow-url", "https://pacs.a.example/dicom-web/studies"]
            + ["--basic-user", "oncotriage"],
        )
        db = Database(f"sqlite:///{tmp_path / 'oncotriage.db'}")
        with db.session() as session:
            row = session.scalar(sa.select(ResultDestination))
            assert row is not None
            stored = (row.kind, row.url, row.auth, row.username, row.secret)
        dimse_set = runner.invoke(
            app, [*command, "--ae-title", "HOSPA_PACS", "--host", "10.20.0.5", "--port", "104"]
        )
        with db.session() as session:
            row = session.scalar(sa.select(ResultDestination))
            assert row is not None
            dimse = (row.kind, row.ae_title, row.host, row.port, row.url, row.secret)
        no_port = runner.invoke(app, [*command, "--ae-title", "HOSPA_PACS", "--host", "pacs"])
        neither = runner.invoke(app, command)
        unknown = runner.invoke(
            app, ["admin", "set-results-destination", "Nowhere", "--stow-url", "https://x.example/"]
        )
        cleared = runner.invoke(app, [*command, "--clear"])
        with db.session() as session:
            left = session.scalar(sa.select(sa.func.count()).select_from(ResultDestination))
        db.dispose()
    finally:
        get_settings.cache_clear()
    assert stow_set.exit_code == 0, stow_set.output
    assert "STOW-RS https://pacs.a.example/dicom-web/studies (basic auth)" in stow_set.output
    assert stored == (
        "stow",
        "https://pacs.a.example/dicom-web/studies",
        "basic",
        "oncotriage",
        "from-the-environment",
    )
    assert dimse_set.exit_code == 0, dimse_set.output
    assert dimse == ("dimse", "HOSPA_PACS", "10.20.0.5", 104, None, None)
    assert no_port.exit_code == 2 and "port" in no_port.output
    assert neither.exit_code == 2 and "--stow-url or --ae-title" in neither.output
    assert unknown.exit_code == 2 and "no hospital named 'Nowhere'" in unknown.output
    assert cleared.exit_code == 0 and "not pushed" in cleared.output
    assert left == 0
