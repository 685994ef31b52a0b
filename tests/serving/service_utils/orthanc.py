"""A real Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) for integration tests.

Started with its own configuration in a temporary folder: HTTP on a free port with
``RemoteAccessAllowed: false`` (Orthanc answers only loopback clients; Orthanc 1.10 has no
option to bind the HTTP socket to one address), HTTP Basic users, the DICOM port disabled
(``DicomServerEnabled: false``: it cannot be bound to loopback), and the DICOMweb plugin
with the service as a DICOMweb server named ``oncotriage`` (STOW-RS with a bearer token).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "pacs", "pacs-secret-for-tests"


@dataclass
class Orthanc:
    url: str
    dicomweb_url: str
    auth: tuple[str, str]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_orthanc() -> str:
    """The Orthanc binary with its DICOMweb plugin; skipped where absent (failed in CI)."""
    binary = shutil.which("Orthanc")
    if binary is None or not DICOMWEB_PLUGIN.exists():
        message = "Orthanc with its DICOMweb plugin is not installed: run scripts/install-peers.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def orthanc_config(
    folder: Path, http_port: int, service_dicomweb_url: str, service_token: str
) -> dict[str, object]:
    """The configuration the tests run Orthanc with (docs/integration.md shows the same)."""
    return {
        "Name": "oncotriage-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "DicomServerEnabled": False,
        "HttpTimeout": 60,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "Servers": {
                "oncotriage": {
                    "Url": service_dicomweb_url,
                    "HttpHeaders": {"Authorization": f"Bearer {service_token}"},
                }
            },
        },
    }


@contextlib.contextmanager
def running_orthanc(
    folder: Path, service_dicomweb_url: str, service_token: str
) -> Iterator[Orthanc]:
    binary = require_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = folder / "orthanc.json"
    config.write_text(
        json.dumps(orthanc_config(folder, port, service_dicomweb_url, service_token), indent=1)
    )
    log = folder / "orthanc.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen([binary, str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    orthanc = Orthanc(
        url=f"http://127.0.0.1:{port}",
        dicomweb_url=f"http://127.0.0.1:{port}/dicom-web",
        auth=(USER, PASSWORD),
        log=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{orthanc.url}/system", auth=orthanc.auth, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
