"""Intake through real HTTP: STOW-RS (dicomweb-client and hand-built bodies), POST /v1/studies."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pydicom
import pytest
import sqlalchemy as sa
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.web import _load_xml_dataset
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import dicom_json_value, pretty, stow, study_id_for

from oncotriage.serving.db.models import AuditEvent, Instance, Job, Study
from oncotriage.serving.dicomweb import FailureReason, parse_multipart
from oncotriage.serving.enums import AuditAction

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _dicomweb_client(service, who: str) -> DICOMwebClient:
    return DICOMwebClient(
        url=f"{service.url}/dicomweb", headers={"Authorization": f"Bearer {service.tokens[who]}"}
    )


def test_dicomweb_client_stores_a_study_that_gets_triaged(service_factory, flagging_bundle) -> None:
    first, second = dx_instance(1), dx_instance(2)
    second.StudyInstanceUID = first.StudyInstanceUID  # two radiographs of one study
    with service_factory(model_uri=str(flagging_bundle)) as service:
        response = _dicomweb_client(service, "A").store_instances([first, second])
        referenced = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
        assert referenced == {first.SOPInstanceUID, second.SOPInstanceUID}
        assert "FailedSOPSequence" not in response
        assert response.RetrieveURL.endswith(f"/dicomweb/studies/{first.StudyInstanceUID}")

        study_id = study_id_for(service, "A", first.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert study["status"] == "triaged"
        # a hand-built request to /studies/{uid} also says where the study's status is
        again = stow(service, "A", [to_bytes(first)], study_uid=first.StudyInstanceUID)
        assert again.headers["location"] == f"{service.url}/v1/studies/{study_id}"
        assert (study["series_count"], study["instance_count"]) == (2, 2)
        assert (study["model_name"], study["model_version"]) == ("oncotriage-test", "1")
        with service.client("A") as client:
            result = client.get(f"/v1/studies/{study_id}/result").json()
        scores = [finding["score"] for finding in result["findings"]]
        assert len(scores) == 6  # 3 detections per image, 2 images
        assert study["suspicion_score"] == pytest.approx(max(scores), abs=1e-12)
        assert 0 < study["suspicion_score"] < 1
        # thresholds of this model version: operating 0, urgent 1 -> suspicious
        assert study["priority"] == "suspicious"

        # WADO-RS gives back exactly the stored objects, and the study's AI result SR
        retrieved = _dicomweb_client(service, "A").retrieve_study(first.StudyInstanceUID)
        images = [ds.SOPInstanceUID for ds in retrieved if ds.Modality != "SR"]
        assert sorted(images) == sorted(referenced)
        reports = [ds for ds in retrieved if ds.Modality == "SR"]
        assert [(ds.SeriesNumber, ds.VerificationFlag) for ds in reports] == [(9901, "UNVERIFIED")]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_partial_failure_lists_each_reason(service_factory, flagging_bundle) -> None:
    good = dx_instance(3)
    foreign = dx_instance(4)  # another study than the one in the URL
    ultrasound = dx_instance(5)
    ultrasound.StudyInstanceUID = good.StudyInstanceUID
    ultrasound.SOPClassUID = US_IMAGE_STORAGE
    ultrasound.file_meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    bad_uid = dx_instance(6)
    bad_uid.StudyInstanceUID = good.StudyInstanceUID
    bad_uid.SOPInstanceUID = "1.2.03.4"  # leading zero: not a valid UID
    payloads = [
        to_bytes(good),
        b"this is not DICOM at all",
        to_bytes(foreign),
        to_bytes(ultrasound),
        to_bytes(bad_uid),
    ]
    with service_factory(model_uri=str(flagging_bundle)) as service:
        response = stow(service, "A", payloads, study_uid=good.StudyInstanceUID)
        assert response.status_code == 202, pretty(response)
        assert response.headers["content-type"] == "application/dicom+json"
        body = response.json()
        stored = dicom_json_value(body, "00081199")
        assert [dicom_json_value(item, "00081155") for item in stored] == [[good.SOPInstanceUID]]
        failed = dicom_json_value(body, "00081198")
        reasons = [
            (dicom_json_value(item, "00081155"), dicom_json_value(item, "00081197")[0])
            for item in failed
        ]
        assert reasons == [
            (None, FailureReason.CANNOT_UNDERSTAND),
            ([foreign.SOPInstanceUID], FailureReason.DATASET_DOES_NOT_MATCH),
            ([ultrasound.SOPInstanceUID], FailureReason.SOP_CLASS_NOT_SUPPORTED),
            (None, FailureReason.CANNOT_UNDERSTAND),
        ]
        warnings = response.headers.get_list("warning")
        assert len(warnings) == 4
        assert "not a screening modality" in warnings[2]
        # the good instance was kept and queued, nothing else
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 1
            assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1


def test_nothing_stored_is_409_and_xml_when_asked(sqlite_service_factory, flagging_bundle) -> None:
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        response = stow(service, "A", [b"junk", b"more junk"], accept="application/dicom+xml")
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/dicom+xml"
        dataset = _load_xml_dataset(ElementTree.fromstring(response.content))
        assert [item.FailureReason for item in dataset.FailedSOPSequence] == [0xC000, 0xC000]
        assert "ReferencedSOPSequence" not in dataset

        ok = stow(service, "A", [to_bytes(dx_instance(7))], accept="application/dicom+xml")
        assert ok.status_code == 200
        dataset = _load_xml_dataset(ElementTree.fromstring(ok.content))
        assert (
            dataset.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            == dx_instance(7).SOPInstanceUID
        )


def test_resending_the_same_instance_is_idempotent(service_factory, flagging_bundle) -> None:
    instance = dx_instance(8)
    data = to_bytes(instance)
    with service_factory(model_uri=str(flagging_bundle)) as service:
        assert stow(service, "A", [data]).status_code == 200
        again = stow(service, "A", [data, data])  # twice more, once in the same request
        assert again.status_code == 200, pretty(again)
        assert len(dicom_json_value(again.json(), "00081199")) == 2
        # a sender re-encoding the same image (same UIDs, other bytes): still the same image
        reencoded = dx_instance(8)
        reencoded.ImageComments = "re-sent by another PACS"
        assert to_bytes(reencoded) != data
        # ... but the sender is told its new bytes were not kept: 202, Warning Reason B000
        # and a Warning header in words
        warned = stow(service, "A", [to_bytes(reencoded)])
        assert warned.status_code == 202, pretty(warned)
        [referenced] = dicom_json_value(warned.json(), "00081199")
        assert dicom_json_value(referenced, "00081196") == [0xB000]
        assert "the first copy is kept" in warned.headers["warning"]
        assert "00081198" not in warned.json()  # nothing failed
        # the same SOP Instance UID in another study is refused, and leaves no empty study
        moved = dx_instance(8)
        moved.StudyInstanceUID = dx_instance(9).StudyInstanceUID
        conflict = stow(service, "A", [to_bytes(moved)])
        assert conflict.status_code == 409
        failed = dicom_json_value(conflict.json(), "00081198")
        assert dicom_json_value(failed[0], "00081197") == [FailureReason.DUPLICATE_SOP_INSTANCE]
        with service.client("A") as client:
            listed = client.get("/v1/studies").json()
        assert [s["study_instance_uid"] for s in listed["data"]] == [instance.StudyInstanceUID]
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Study)) == 1
            created = session.scalars(
                sa.select(AuditEvent.study_id).where(AuditEvent.action == AuditAction.STUDY_CREATED)
            ).all()
            assert len(created) == 1
        with service.client("A") as client:
            kept = client.get(
                f"/dicomweb/studies/{instance.StudyInstanceUID}/series/{instance.SeriesInstanceUID}"
                f"/instances/{instance.SOPInstanceUID}"
            )
        assert data in kept.content  # the first copy is what the service keeps
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 1
            assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1
        # another hospital may hold the same UID: tenants do not collide
        assert stow(service, "B", [data]).status_code == 200


def test_limits_on_size_count_and_pixels(sqlite_service_factory, flagging_bundle) -> None:
    """Each request trips one limit: body bytes (413), instances per request (413), pixels
    per instance (refused as 0xA700, so 409 when it is the only one)."""
    from oncotriage.serving.dicomweb import encode_multipart

    small = to_bytes(dx_instance(20, size=32))
    large = to_bytes(dx_instance(21, size=64))
    settings = {"max_request_bytes": 20_000, "max_instances_per_request": 3, "max_pixels": 40 * 40}
    with sqlite_service_factory(model_uri=str(flagging_bundle), **settings) as service:
        assert len(small) * 3 < 20_000 < len(large) * 3
        assert stow(service, "A", [large, large, large]).status_code == 413
        assert stow(service, "A", [b"x"] * 4).status_code == 413
        refused = stow(service, "A", [large])
        assert refused.status_code == 409
        failed = dicom_json_value(refused.json(), "00081198")
        assert dicom_json_value(failed[0], "00081197") == [FailureReason.OUT_OF_RESOURCES]
        assert stow(service, "A", [small]).status_code == 200

        # a chunked body (no Content-Length) is cut off while it streams
        body = encode_multipart([large, large, large], "application/dicom", "b")

        def chunks():
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        with service.client("A") as client:
            response = client.post(
                "/dicomweb/studies",
                content=chunks(),
                headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
            )
        assert response.status_code == 413


MALFORMED = [
    ({"Content-Type": "application/dicom"}, 415),
    ({"Content-Type": 'multipart/related; type="application/json"; boundary=x'}, 415),
    (
        {
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
            "Accept": "text/html",
        },
        406,
    ),
    ({"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}, 400),
]


def test_malformed_requests(sqlite_service_factory, flagging_bundle) -> None:
    with (
        sqlite_service_factory(model_uri=str(flagging_bundle)) as service,
        service.client("A") as client,
    ):
        statuses = [
            client.post("/dicomweb/studies", content=b"no parts", headers=headers).status_code
            for headers, _ in MALFORMED
        ]
    assert statuses == [expected for _, expected in MALFORMED]


def test_only_hospitals_submit_and_tokens_are_checked(
    sqlite_service_factory, flagging_bundle
) -> None:
    data = to_bytes(dx_instance(31))
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        assert stow(service, "spec1", [data]).status_code == 403
        with httpx.Client(base_url=service.url) as anonymous:
            assert anonymous.post("/v1/studies").status_code == 401
            forged = {"Authorization": "Bearer otk_0123456789ab_" + "x" * 43}
            assert anonymous.get("/v1/studies", headers=forged).status_code == 401


def test_post_v1_studies_answers_202_with_the_study_url(
    sqlite_service_factory, flagging_bundle
) -> None:
    instance = dx_instance(32)
    with (
        sqlite_service_factory(model_uri=str(flagging_bundle)) as service,
        service.client("A") as client,
    ):
        response = client.post(
            "/v1/studies",
            files=[
                ("files", ("image.dcm", to_bytes(instance), "application/dicom")),
                ("files", ("notes.txt", b"not an image", "text/plain")),
            ],
        )
        assert response.status_code == 202, pretty(response)
        body = response.json()
        assert (body["stored"], body["failed"]) == (1, 1)
        assert body["instances"][1]["failure_reason"] == FailureReason.CANNOT_UNDERSTAND
        study = body["studies"][0]
        assert study["study_instance_uid"] == instance.StudyInstanceUID
        assert study["status"] in ("queued", "processing", "triaged")
        assert response.headers["location"] == f"{service.url}/v1/studies/{study['id']}"
        assert service.wait_for_study(study["id"], "A")["status"] == "triaged"

        nothing = client.post("/v1/studies", files=[("files", ("x.txt", b"x", "text/plain"))])
        assert nothing.status_code == 422
        assert nothing.json()["studies"] == []


def test_retrieved_instance_is_byte_identical(sqlite_service_factory, flagging_bundle) -> None:
    instance = dx_instance(33)
    data = to_bytes(instance)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        stow(service, "A", [data]).raise_for_status()
        path = (
            f"/dicomweb/studies/{instance.StudyInstanceUID}/series/{instance.SeriesInstanceUID}"
            f"/instances/{instance.SOPInstanceUID}"
        )
        with service.client("A") as client:
            response = client.get(path)
        assert response.status_code == 200
        boundary = response.headers["content-type"].split("boundary=")[1]
        parts = parse_multipart(response.content, boundary, max_parts=10)
        assert [part.content for part in parts] == [data]
        assert (
            pydicom.dcmread(__import__("io").BytesIO(parts[0].content)).SOPInstanceUID
            == instance.SOPInstanceUID
        )
        with service.client("B") as other:
            assert other.get(path).status_code == 404


def _related(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def _anonymous_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def test_a_large_upload_is_not_held_in_memory(sqlite_service_factory, flagging_bundle) -> None:
    """A 200 MB STOW-RS body (100 parts of a 2 MB radiograph) raised the server's memory by
    twice its size (the body, then a copy of every part). Spooled to disk and read a part at
    a time, the server's own memory (RssAnon, sampled while the request runs; the service runs
    in this process, and the client streams the body) grows by a few instances at most."""
    boundary = "large-upload-boundary"
    instance = to_bytes(dx_instance(300, size=1024))
    copies = 100
    part = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instance + b"\r\n"

    def body():
        for _ in range(copies):
            yield part
        yield f"--{boundary}--\r\n".encode()

    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _anonymous_rss_bytes())
            time.sleep(0.005)

    with sqlite_service_factory(model_uri=str(flagging_bundle), embedded_workers=0) as service:
        with service.client("A") as client:
            # warm up the request path (imports, caches) before measuring
            client.post(
                "/dicomweb/studies",
                content=part + f"--{boundary}--\r\n".encode(),
                headers={"Content-Type": _related(boundary)},
            ).raise_for_status()
            gc.collect()
            before = _anonymous_rss_bytes()
            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                answer = client.post(
                    "/dicomweb/studies",
                    content=body(),
                    headers={"Content-Type": _related(boundary)},
                    timeout=300,
                )
            finally:
                done.set()
                sampler.join()
    assert answer.status_code == 200, answer.text[:500]
    assert len(dicom_json_value(answer.json(), "00081199")) == copies
    growth_mb = (peak - before) / 2**20
    assert growth_mb < 64, f"server memory grew by {growth_mb:.0f} MB for a 200 MB body"


def test_a_part_that_is_not_dicom_is_refused_by_its_content_type(
    sqlite_service_factory, flagging_bundle
) -> None:
    """A part declared ``text/plain`` was read and accepted as DICOM. It is refused unread,
    with the reason; the DICOM part beside it is kept (202)."""
    boundary = "mixed-boundary"
    good, notes = dx_instance(301), to_bytes(dx_instance(302))
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + to_bytes(good)
        + f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n".encode()
        + notes
        + f"\r\n--{boundary}--\r\n".encode()
    )
    with sqlite_service_factory(model_uri=str(flagging_bundle), embedded_workers=0) as service:
        with service.client("A") as client:
            answer = client.post(
                "/dicomweb/studies",
                content=body,
                headers={"Content-Type": _related(boundary)},
            )
            assert answer.status_code == 202, answer.text
            [failed] = dicom_json_value(answer.json(), "00081198")
            assert dicom_json_value(failed, "00081197") == [FailureReason.CANNOT_UNDERSTAND]
            assert (
                "part 2 is declared text/plain, not application/dicom" in answer.headers["warning"]
            )
            listed = client.get("/v1/studies").json()["data"]
            assert [s["study_instance_uid"] for s in listed] == [good.StudyInstanceUID]
