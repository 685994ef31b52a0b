"""Reading result SRs in tests: dcmtk's dsrdump as an outside check, multipart WADO-RS bodies."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pydicom
import pytest


def dsrdump(payload: bytes) -> tuple[int, str, str]:
    """Run dcmtk's ``dsrdump`` on a Part 10 SR: ``(exit status, dump, messages)``.

    dcmtk comes from ``scripts/install-peers.sh`` (Debian package ``dcmtk``); the test is
    skipped where it is missing outside CI, and fails under ``CI=true``.
    """
    binary = shutil.which("dsrdump")
    if binary is None:
        import os

        message = "dsrdump (dcmtk) is not installed: run scripts/install-peers.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sr.dcm"
        path.write_bytes(payload)
        done = subprocess.run(
            [binary, "--log-level", "warn", "--print-long-values", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return done.returncode, done.stdout, done.stderr


def assert_dsrdump_parses(payload: bytes) -> str:
    """dsrdump reads the SR with no error or warning; returns its dump."""
    code, dump, messages = dsrdump(payload)
    assert code == 0, messages
    assert "E:" not in messages and "F:" not in messages, messages
    assert "W:" not in messages, messages
    return dump


def multipart_datasets(response: httpx.Response) -> list[pydicom.Dataset]:
    """The DICOM objects of a ``multipart/related; type="application/dicom"`` response."""
    content_type = response.headers["content-type"]
    boundary = next(
        part.split("=", 1)[1].strip('"')
        for part in content_type.split(";")
        if part.strip().startswith("boundary=")
    )
    delimiter = b"--" + boundary.encode()
    datasets = []
    for chunk in response.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _headers, _, body = chunk.partition(b"\r\n\r\n")
        datasets.append(pydicom.dcmread(io.BytesIO(body.removesuffix(b"\r\n"))))
    return datasets
