"""Workers on other hosts: the API and two ``oncotriage worker`` processes, each with its own
data folder, sharing only network services on 127.0.0.1: PostgreSQL, the S3 image store (a
live SeaweedFS) and an MLflow tracking server (PostgreSQL backend store in its own schema,
artifacts in the S3 store) through which the CLI registers the model. A worker killed mid-job
(SIGKILL) loses nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.mlflow_server import MlflowServer, running_mlflow_server
from service_utils.seaweedfs import SeaweedS3
from service_utils.server import (
    Service,
    running_service,
    service_settings,
    stow,
    study_id_for,
    wait_until,
)

from oncotriage.serving.db.models import Job
from oncotriage.serving.enums import JobState

TESTS_DIR = Path(__file__).resolve().parent

pytestmark = pytest.mark.postgres


@pytest.fixture
def mlflow_server(
    postgres_url: str, seaweedfs: SeaweedS3, tmp_path: Path
) -> Iterator[MlflowServer]:
    """``mlflow server``: backend store in a schema of its own, artifacts in SeaweedFS."""
    with running_mlflow_server(
        postgres_url, seaweedfs, tmp_path, f"mlflow/{tmp_path.name}"
    ) as server:
        yield server


def _store_env(server: SeaweedS3, prefix: str) -> dict[str, str]:
    return {
        "ONCOTRIAGE_STORE_URL": f"s3://{server.bucket}/{prefix}",
        "ONCOTRIAGE_S3_ENDPOINT_URL": server.endpoint_url,
        "ONCOTRIAGE_S3_ACCESS_KEY_ID": server.access_key,
        "ONCOTRIAGE_S3_SECRET_ACCESS_KEY": server.secret_key,
    }


def _remote_worker(
    service: Service, data_dir: Path, store: dict[str, str], **env: str
) -> subprocess.Popen[bytes]:
    """A worker that shares nothing with the API but the database URL and the S3 store."""
    settings = service.settings
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("ONCOTRIAGE_")
    }
    environment.update(
        {
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
            "ONCOTRIAGE_ENVIRONMENT": "test",
            "ONCOTRIAGE_SECRET_KEY": settings.secret_key.get_secret_value(),
            "ONCOTRIAGE_DATABASE_URL": settings.database_url,
            "ONCOTRIAGE_DATA_DIR": str(data_dir),
            "ONCOTRIAGE_MODEL_URI": settings.model_uri,
            "ONCOTRIAGE_MLFLOW_TRACKING_URI": str(settings.mlflow_tracking_uri),
            "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
            "ONCOTRIAGE_WORKER_POLL_INTERVAL_S": "0.05",
            "ONCOTRIAGE_ORT_INTRA_OP_THREADS": "1",
            "ONCOTRIAGE_JOB_LEASE_S": "2",
            "ONCOTRIAGE_JOB_HEARTBEAT_S": "0.4",
            "ONCOTRIAGE_JOB_BACKOFF_BASE_S": "0.05",
            "ONCOTRIAGE_JOB_BACKOFF_MAX_S": "0.2",
            **store,
            **env,
        }
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "from oncotriage.cli import main; main()", "worker"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seaweedfs_client(server: SeaweedS3):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )


def _cached_objects(data_dir: Path) -> set[str]:
    return {path.stem for path in (data_dir / "store-cache").glob("objects/*/*/*.dcm")}


def test_remote_workers_share_only_network_services(
    postgres_url: str,
    seaweedfs: SeaweedS3,
    mlflow_server: MlflowServer,
    flagging_bundle: Path,
    tmp_path: Path,
) -> None:
    store = _store_env(seaweedfs, f"multihost/{tmp_path.name}")
    # The CLI registers the model through the tracking server (artifacts go to S3).
    registered = subprocess.run(
        [
            sys.executable,
            "-c",
            "from oncotriage.cli import main; main()",
            "register",
            f"--model={flagging_bundle}",
            "--name=oncotriage-multihost",
            "--alias=champion",
            f"--tracking-uri={mlflow_server.url}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    artifacts = seaweedfs_client(seaweedfs).list_objects_v2(
        Bucket=seaweedfs.bucket, Prefix=mlflow_server.artifacts.split("/", 3)[3]
    )
    assert any(o["Key"].endswith("model.onnx") for o in artifacts.get("Contents", []))
    settings = service_settings(
        postgres_url,
        tmp_path / "api",
        model_uri="models:/oncotriage-multihost@champion",
        mlflow_tracking_uri=mlflow_server.url,
        embedded_workers=0,
        store_url=store["ONCOTRIAGE_STORE_URL"],
        s3_endpoint_url=store["ONCOTRIAGE_S3_ENDPOINT_URL"],
        s3_access_key_id=store["ONCOTRIAGE_S3_ACCESS_KEY_ID"],
        s3_secret_access_key=store["ONCOTRIAGE_S3_SECRET_ACCESS_KEY"],
    )
    instances = [dx_instance(60 + i) for i in range(4)]
    with running_service(settings) as service:
        # Worker 1 is slow (each inference takes 600 s) so it is surely mid-job when killed.
        slow = _remote_worker(
            service,
            tmp_path / "worker1",
            store,
            ONCOTRIAGE_RUNNER_FACTORY="service_utils.slow_runner:make",
            ONCOTRIAGE_TEST_RUNNER_DELAY_S="600",
        )
        other: subprocess.Popen[bytes] | None = None
        try:
            stow(service, "A", [to_bytes(instances[0])]).raise_for_status()
            first = study_id_for(service, "A", instances[0].StudyInstanceUID)
            owner_prefix = f"{socket.gethostname()}:{slow.pid}:"

            def running_on_slow_worker() -> bool:
                with service.db.session() as session:
                    job = session.scalar(sa.select(Job).where(Job.study_id == first))
                    return bool(
                        job
                        and job.state is JobState.RUNNING
                        and (job.lease_owner or "").startswith(owner_prefix)
                    )

            wait_until(running_on_slow_worker, timeout_s=90, interval_s=0.1)
            # Worker 2 triages the next studies while worker 1 holds the first.
            other = _remote_worker(service, tmp_path / "worker2", store)
            for who, instance in zip("ABA", instances[1:], strict=True):
                stow(service, who, [to_bytes(instance)]).raise_for_status()
            rest = [
                study_id_for(service, who, instance.StudyInstanceUID)
                for who, instance in zip("ABA", instances[1:], strict=True)
            ]

            def triaged(study_id: str, who: str) -> bool:
                with service.client(who) as client:
                    body = client.get(f"/v1/studies/{study_id}").json()
                return body["status"] == "triaged"

            # Worker 1 reads ahead (it may hold a second job), so wait for any one of them:
            # triaged by worker 2 while worker 1 is still inside its first inference.
            wait_until(
                lambda: any(triaged(s, w) for s, w in zip(rest, "ABA", strict=True)),
                timeout_s=120,
                interval_s=0.2,
            )
            assert running_on_slow_worker()

            slow.send_signal(signal.SIGKILL)  # mid-inference
            slow.wait(timeout=10)
            study = service.wait_for_study(first, "A", timeout_s=120)
            others = [
                service.wait_for_study(s, w, timeout_s=120)
                for s, w in zip(rest, "ABA", strict=True)
            ]
        finally:
            _stop(slow)
            if other is not None:
                _stop(other)
        assert [o["status"] for o in others] == ["triaged"] * 3
        assert (study["status"], study["priority"]) == ("triaged", "suspicious")
        with service.db.session() as session:
            jobs = {job.study_id: job for job in session.scalars(sa.select(Job))}
            assert (jobs[first].state, jobs[first].attempts) == (JobState.DONE, 2)
            assert all(jobs[s].state is JobState.DONE and jobs[s].attempts in (1, 2) for s in rest)
            hashes = set(session.scalars(sa.text("SELECT content_hash FROM instances")))
    # The images went API -> S3 -> worker: none in the API's folder, all in worker 2's cache.
    assert not list((tmp_path / "api").glob("store/objects/*/*/*.dcm"))
    assert len(hashes) == 4
    assert _cached_objects(tmp_path / "worker2") == hashes
    assert _cached_objects(tmp_path / "worker1") <= hashes
