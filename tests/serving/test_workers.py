"""Workers: a killed worker loses nothing, failures are fail-safe, CT series, signed webhooks."""

from __future__ import annotations

import copy
import io
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
import sqlalchemy as sa
from pydicom.sr.codedict import codes
from service_utils.dicom import ct_series, dx_instance, to_bytes
from service_utils.receiver import webhook_receiver
from service_utils.server import Service, stow, study_id_for, wait_until

from oncotriage.serving.db.models import Finding, Job, Study, WebhookDelivery
from oncotriage.serving.enums import JobState, Priority, StudyStatus
from oncotriage.serving.inference import ModelManager
from oncotriage.serving.pool import WorkerPool
from oncotriage.serving.storage import ContentStore
from oncotriage.serving.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature

TESTS_DIR = Path(__file__).resolve().parent


def _worker_process(service: Service, **env: str) -> subprocess.Popen[bytes]:
    """``oncotriage worker`` as a separate process on the service's database and store."""
    settings = service.settings
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "ONCOTRIAGE_ENVIRONMENT": "test",
        "ONCOTRIAGE_SECRET_KEY": settings.secret_key.get_secret_value(),
        "ONCOTRIAGE_DATABASE_URL": settings.database_url,
        "ONCOTRIAGE_DATA_DIR": str(settings.data_dir),
        "ONCOTRIAGE_MODEL_URI": settings.model_uri,
        "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
        "ONCOTRIAGE_WORKER_POLL_INTERVAL_S": "0.05",
        "ONCOTRIAGE_ORT_INTRA_OP_THREADS": "1",
        "ONCOTRIAGE_LOG_JSON": "true",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from oncotriage.cli import main; main()", "worker"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_killed_worker_loses_nothing(service_factory, flagging_bundle) -> None:
    instance = dx_instance(40)
    with service_factory(model_uri=str(flagging_bundle), embedded_workers=0) as service:
        slow = _worker_process(
            service,
            ONCOTRIAGE_RUNNER_FACTORY="service_utils.slow_runner:make",
            ONCOTRIAGE_TEST_RUNNER_DELAY_S="60",
            ONCOTRIAGE_JOB_LEASE_S="2",
            ONCOTRIAGE_JOB_HEARTBEAT_S="0.4",
        )
        rescuer = None
        try:
            stow(service, "A", [to_bytes(instance)]).raise_for_status()
            study_id = study_id_for(service, "A", instance.StudyInstanceUID)
            owner_prefix = f"{socket.gethostname()}:{slow.pid}:"

            def running_on_slow_worker() -> bool:
                with service.db.session() as session:
                    job = session.scalar(sa.select(Job).where(Job.study_id == study_id))
                    return bool(
                        job
                        and job.state is JobState.RUNNING
                        and (job.lease_owner or "").startswith(owner_prefix)
                    )

            wait_until(running_on_slow_worker, timeout_s=90, interval_s=0.1)
            # heartbeats keep the lease alive while the worker lives
            with service.db.session() as session:
                first_expiry = session.scalar(sa.select(Job.lease_expires_at))
            wait_until(lambda: _lease_expiry(service) != first_expiry, timeout_s=10)
            assert (
                service.client("A").get(f"/v1/studies/{study_id}").json()["status"] == "processing"
            )

            slow.send_signal(signal.SIGKILL)  # mid-inference
            slow.wait(timeout=10)
            # another worker (here: threads of this process) takes the job once the lease expires
            rescuer = WorkerPool(
                service.settings,
                service.db,
                ContentStore(service.settings.image_store_dir),
                ModelManager(service.settings),
                1,
            )
            rescuer.start()
            study = service.wait_for_study(study_id, "A", timeout_s=90)
        finally:
            _stop(slow)
            if rescuer is not None:
                rescuer.stop()
        assert study["status"] == "triaged"
        assert study["priority"] == "suspicious"
        with service.db.session() as session:
            job = session.scalar(sa.select(Job).where(Job.study_id == study_id))
            assert job is not None
            assert (job.state, job.attempts, job.lease_owner) == (JobState.DONE, 2, None)
            assert session.scalar(sa.select(sa.func.count()).select_from(Finding)) == 3


def _lease_expiry(service: Service) -> object:
    with service.db.session() as session:
        return session.scalar(sa.select(Job.lease_expires_at))


def test_failing_model_flags_needs_manual_review(service_factory, make_bundle) -> None:
    # The spec says 48 x 48 but the exported network takes 64 x 64: every inference fails.
    from oncotriage.models.spec import ModelSpec

    bundle = make_bundle()
    spec = ModelSpec.load(bundle)
    broken = spec.preprocessing.model_copy(update={"input_size": [48, 48]})
    spec.model_copy(update={"preprocessing": broken}).save(bundle)
    instance = dx_instance(41)
    with service_factory(model_uri=str(bundle), job_max_attempts=3) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert (study["status"], study["priority"]) == ("failed", "needs_manual_review")
        assert study["failure_reason"].startswith("inference failed after 3 attempts:")
        assert study["suspicion_score"] is None
        with service.client("spec1") as client:
            worklist = client.get("/v1/worklist").json()
            assert [(s["id"], s["priority"]) for s in worklist["data"]] == [
                (study_id, "needs_manual_review")
            ]
            result = client.get(f"/v1/studies/{study_id}/result").json()
            assert result["series"][0]["status"] == "failed"
            assert result["findings"] == []
            # the report carries no suspicion score (never a 0.0), and says why
            report = client.get(f"/v1/studies/{study_id}/report.dcm")
            assert report.status_code == 200, report.text
            doc = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(report.content)))
            (group,) = doc.content.get_image_measurement_groups()
            assert group.get_measurements() == []
            comments = [
                item.value
                for item in hd.sr.utils.find_content_items(group[0], name=codes.DCM.Comment)
            ]
            assert len(comments) == 1
            assert comments[0].startswith("No suspicion score: inference failed after 3 attempts")
        with service.db.session() as session:
            job = session.scalar(sa.select(Job))
            assert job is not None
            assert (job.state, job.attempts) == (JobState.FAILED, 3)


def test_backend_outage_does_not_use_up_attempts(sqlite_service_factory, flagging_bundle) -> None:
    # The backend is down for more calls than a job has attempts: the study must still be
    # triaged once it is back, never given up as needs_manual_review.
    from service_utils import flaky_runner
    from service_utils.server import service_settings

    instance = dx_instance(43)
    runner_settings = service_settings("sqlite://", flagging_bundle.parent / "unused")
    with sqlite_service_factory(
        model_uri=str(flagging_bundle),
        runner_factory=flaky_runner.make(runner_settings),
        job_max_attempts=2,
        job_backoff_base_s=0.05,
        job_backoff_max_s=0.1,
    ) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert study["status"] == "triaged"
        assert study["priority"] in {"urgent", "suspicious"}
        assert flaky_runner.calls > flaky_runner.OUTAGE_CALLS
        with service.db.session() as session:
            job = session.scalar(sa.select(Job))
            assert job is not None
            assert job.state == JobState.DONE
            assert job.attempts <= 2


def test_unreadable_series_fails_at_once(sqlite_service_factory, flagging_bundle) -> None:
    series = ct_series(42, slices=3)  # each slice is valid; 3 slices are not a volume
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        stow(service, "A", [to_bytes(ds) for ds in series]).raise_for_status()
        study_id = study_id_for(service, "A", series[0].StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert (study["status"], study["priority"]) == ("failed", "needs_manual_review")
        assert "too_few_slices" in study["failure_reason"]
        with service.db.session() as session:
            assert session.scalars(sa.select(Job.attempts)).all() == [1]


def test_ct_series_sent_in_parts_is_read_once_complete(
    sqlite_service_factory, make_bundle, base_bundle_3d
) -> None:
    bundle = make_bundle(base=base_bundle_3d)
    series = ct_series(43, slices=16)
    # "complete" = no new slice for series_settle_s: 5 s leaves a wide margin for three
    # requests of a few 32 x 32 slices even on a loaded machine (1 s did not, in CI)
    with sqlite_service_factory(model_uri=str(bundle), series_settle_s=5.0) as service:
        # three requests, as a router forwarding a series in parts would send it
        for part in (series[:5], series[5:11], series[11:]):
            stow(service, "A", [to_bytes(ds) for ds in part]).raise_for_status()
        study_id = study_id_for(service, "A", series[0].StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert study["status"] == "triaged", study
        assert (study["series_count"], study["instance_count"]) == (1, 16)
        result = service.client("A").get(f"/v1/studies/{study_id}/result").json()
        assert result["series"][0]["is_volume"] is True
        assert {len(f["box_index"]) for f in result["findings"]} == {6}
        assert {f["box_mode"] for f in result["findings"]} == {"xyzxyz"}
        assert study["suspicion_score"] == pytest.approx(
            max(f["score"] for f in result["findings"])
        )
        with service.db.session() as session:
            jobs = session.execute(sa.select(Job.instance_id, Job.state)).all()
        assert jobs == [(None, JobState.DONE)]  # one inference for the whole series


def test_resending_a_failed_study_queues_it_again(sqlite_service_factory, flagging_bundle) -> None:
    instance = dx_instance(46)
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        # as if its inference had failed for good
        with service.db.session() as session:
            session.execute(sa.update(Job).values(state=JobState.FAILED))
            session.execute(
                sa.update(Study)
                .where(Study.id == study_id)
                .values(status=StudyStatus.FAILED, priority=Priority.NEEDS_MANUAL_REVIEW)
            )
            session.commit()
        again = stow(service, "A", [to_bytes(instance)])
        assert again.status_code == 200, again.text
        study = service.wait_for_study(study_id, "A")
        assert study["status"] == "triaged" and study["suspicion_score"] is not None
        with service.db.session() as session:
            states = session.scalars(sa.select(Job.state).order_by(Job.id)).all()
        assert states == [JobState.SUPERSEDED, JobState.DONE]
        # a study that was triaged is not read again by a plain re-send
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 2


def test_webhooks_arrive_signed_and_are_retried(service_factory, flagging_bundle) -> None:
    instance = dx_instance(44)
    with webhook_receiver() as receiver:
        receiver.statuses = [503]  # the first delivery attempt fails; the outbox retries it
        with service_factory(model_uri=str(flagging_bundle), webhook_url=receiver.url) as service:
            stow(service, "A", [to_bytes(instance)]).raise_for_status()
            study_id = study_id_for(service, "A", instance.StudyInstanceUID)
            service.wait_for_study(study_id, "A")
            wait_until(lambda: len(receiver.deliveries) == 1, timeout_s=30)
            with service.client("spec1") as client:
                client.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
                client.post(
                    f"/v1/studies/{study_id}/review", json={"decision": "refer", "note": "see us"}
                ).raise_for_status()
            wait_until(lambda: len(receiver.deliveries) == 2, timeout_s=30)

            def delivered() -> bool:  # the worker records delivery after the receiver answered
                with service.db.session() as session:
                    states = session.scalars(sa.select(WebhookDelivery.state)).all()
                return states == [JobState.DONE, JobState.DONE]

            wait_until(delivered, timeout_s=30)
            with service.db.session() as session:
                outbox = session.execute(
                    sa.select(
                        WebhookDelivery.event, WebhookDelivery.state, WebhookDelivery.attempts
                    ).order_by(WebhookDelivery.id)
                ).all()
    assert receiver.attempts == 3
    # ONE delivery id per event: the same in the header and the body, on the retry too
    ids = [(a.headers[DELIVERY_HEADER], a.event["delivery_id"]) for a in receiver.every_attempt]
    assert ids[0] == ids[1]  # the failed attempt and its retry
    assert all(header == body for header, body in ids)
    assert len({header for header, _ in ids}) == 2  # two events, two ids
    assert str(uuid.UUID(ids[0][0])) == ids[0][0]
    assert [(event.value, state.value, attempts) for event, state, attempts in outbox] == [
        ("study.status", "done", 2),
        ("study.decision", "done", 1),
    ]
    secret = "whsec-test-hospital-a-secret"
    for delivery in receiver.deliveries:
        assert verify_signature(secret, delivery.body, delivery.headers[SIGNATURE_HEADER])
        assert not verify_signature(
            "another-secret-entirely", delivery.body, delivery.headers[SIGNATURE_HEADER]
        )
    status_event, decision_event = (delivery.event for delivery in receiver.deliveries)
    assert status_event["type"] == "study.status"
    assert status_event["study"]["id"] == study_id
    assert (status_event["study"]["status"], status_event["study"]["priority"]) == (
        "triaged",
        "suspicious",
    )
    assert decision_event["type"] == "study.decision"
    assert (decision_event["review"]["decision"], decision_event["review"]["note"]) == (
        "refer",
        "see us",
    )
    assert decision_event["study"]["decision"] == "refer"


class _TruncatingRunner:
    """The real network, with every output cut to half its channels: box decoding (on the
    worker's thread, after the network) cannot make sense of them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.input_name = inner.input_name
        self.output_names = inner.output_names

    def __call__(self, batch: Any) -> list[Any]:
        return [out[:, : max(1, out.shape[1] // 2)] for out in self.inner(batch)]


def test_box_decoding_failure_flags_needs_manual_review(
    sqlite_service_factory, flagging_bundle
) -> None:
    from service_utils.server import service_settings

    from oncotriage.serving.inference import ort_runner_factory

    inner = ort_runner_factory(service_settings("sqlite://", flagging_bundle.parent / "unused"))
    instance = dx_instance(44)
    with sqlite_service_factory(
        model_uri=str(flagging_bundle),
        runner_factory=lambda resolved: _TruncatingRunner(inner(resolved)),
        job_max_attempts=2,
    ) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert (study["status"], study["priority"]) == ("failed", "needs_manual_review")
        assert study["failure_reason"].startswith("inference failed after 2 attempts:")
        with service.db.session() as session:
            job = session.scalar(sa.select(Job))
            assert job is not None
            assert (job.state, job.attempts) == (JobState.FAILED, 2)
            assert session.scalar(sa.select(sa.func.count()).select_from(Finding)) == 0


def test_radiograph_for_a_ct_model_flags_needs_manual_review(
    sqlite_service_factory, make_bundle, base_bundle_3d
) -> None:
    # Preprocessing (on the worker's thread, before the network) refuses a 2D image for a
    # 3D model: the study is flagged with the reason, never scored.
    bundle = make_bundle(base=base_bundle_3d)
    instance = dx_instance(45)
    with sqlite_service_factory(model_uri=str(bundle), job_max_attempts=2) as service:
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert (study["status"], study["priority"]) == ("failed", "needs_manual_review")
        # the model's intended inputs do not fit: a permanent failure, no retries
        assert study["failure_reason"] == "no model for DX (the service reads CT)"
        assert study["suspicion_score"] is None
        with service.db.session() as session:
            assert session.scalar(sa.select(Job.attempts)) == 1


def _companion(template: Any, sop_class: str, **attributes: Any) -> Any:
    """An object of another kind in ``template``'s study, in a series of its own."""
    from pydicom.uid import generate_uid

    ds = copy.deepcopy(template)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_a_whole_ct_study_is_taken_and_triaged_on_its_axial_series(
    sqlite_service_factory, make_bundle, base_bundle_3d
) -> None:
    """What a PACS forwarding a whole CT study sends: the axial series, a localizer, a dose
    report (secondary capture) and an SR. All are stored (200), only the axial series is
    triaged; a study of an SR alone goes to a person with the reason."""
    from pydicom.uid import ComprehensiveSRStorage, CTImageStorage, SecondaryCaptureImageStorage

    bundle = make_bundle(base=base_bundle_3d)
    axial = ct_series(47, slices=16)
    localizer = _companion(axial[0], CTImageStorage, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    dose = _companion(
        axial[0], SecondaryCaptureImageStorage, SeriesDescription="Dose Report", Modality="OT"
    )
    report = _companion(axial[0], ComprehensiveSRStorage, Modality="SR")
    del report.PixelData
    lonely_sr = _companion(dx_instance(48), ComprehensiveSRStorage, Modality="SR")
    del lonely_sr.PixelData
    with sqlite_service_factory(model_uri=str(bundle), series_settle_s=0.5) as service:
        sent = stow(service, "A", [to_bytes(ds) for ds in [*axial, localizer, dose, report]])
        assert sent.status_code == 200, sent.text
        study_id = study_id_for(service, "A", axial[0].StudyInstanceUID)
        study = service.wait_for_study(study_id, "A")
        assert study["status"] == "triaged", study
        result = service.client("A").get(f"/v1/studies/{study_id}/result").json()
        roles = {s["series_instance_uid"]: (s["role"], s["status"]) for s in result["series"]}
        assert roles == {
            axial[0].SeriesInstanceUID: ("diagnostic", "done"),
            localizer.SeriesInstanceUID: ("localizer", "not_triaged"),
            dose.SeriesInstanceUID: ("dose_report", "not_triaged"),
            report.SeriesInstanceUID: ("sr", "not_triaged"),
        }
        with service.db.session() as session:
            jobs = session.execute(sa.select(Job.series_id, Job.state)).all()
        assert [state for _, state in jobs] == [JobState.DONE]  # the axial series only
        assert service.client("A").get(f"/v1/studies/{study_id}/report.dcm").status_code == 200

        stow(service, "A", [to_bytes(lonely_sr)]).raise_for_status()
        alone = service.wait_for_study(study_id_for(service, "A", lonely_sr.StudyInstanceUID), "A")
        assert (alone["status"], alone["priority"]) == ("failed", "needs_manual_review")
        assert alone["failure_reason"].startswith("nothing to triage: the study holds only sr")
