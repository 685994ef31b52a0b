"""A real ``mlflow server`` for tests and benchmarks: PostgreSQL backend store (a schema of
its own), artifacts in a live S3 server (SeaweedFS), on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from service_utils.seaweedfs import SeaweedS3


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: str  # s3://bucket/prefix
    pid: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (the CLI, uvicorn and its workers), SIGKILL to
    what is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def running_mlflow_server(
    postgres_url: str, seaweedfs: SeaweedS3, workdir: Path, artifacts_prefix: str
) -> Iterator[MlflowServer]:
    """``mlflow server`` with its backend store in a fresh schema of ``postgres_url``'s
    database (dropped afterwards) and artifacts under ``s3://bucket/artifacts_prefix``."""
    schema = f"mlflow_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    backend = (
        make_url(postgres_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    port = _free_port()
    artifacts = f"s3://{seaweedfs.bucket}/{artifacts_prefix.strip('/')}"
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        # The registry only: no job runner (its huey consumers are processes of their own)
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mlflow.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "server",
                "--host=127.0.0.1",
                f"--port={port}",
                "--workers=1",
                f"--backend-store-uri={backend}",
                f"--artifacts-destination={artifacts}",
                "--serve-artifacts",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,  # its own process group: stopped with its workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield MlflowServer(url, artifacts, process.pid)
    finally:
        _stop_group(process)
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
