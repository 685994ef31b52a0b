"""StowClient and ``oncotriage push`` against a minimal, real STOW-RS endpoint on 127.0.0.1.

The endpoint below parses ``multipart/related; type="application/dicom"`` by hand and answers
with a standard DICOM JSON STOW-RS response, which proves the wire format end to end; the
service's own routes are tested against this client in the service tests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from oncotriage.cli import app as cli_app
from oncotriage.serving.client import StowAuthError, StowClient, StowError

TOKEN = "good-token"


# ---------------------------------------------------------------- a tiny STOW-RS origin server


@dataclass
class Received:
    study_in_url: str | None
    content_type: str
    authorization: str
    transfer_encoding: str | None
    sop_uids: list[str]
    part_types: list[str]


@dataclass
class StowServer:
    url: str = ""
    requests: list[Received] = field(default_factory=list)


def _split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params["boundary"].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload.removesuffix(b"\r\n")))
    return parts


def _stow_app(state: StowServer) -> FastAPI:
    api = FastAPI()

    async def store(request: Request, study: str | None = None) -> Response:
        content_type = request.headers.get("content-type", "")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Response(status_code=401)
        if not content_type.startswith("multipart/related") or "application/dicom" not in (
            content_type
        ):
            return Response(status_code=415)
        parts = _split_multipart(await request.body(), content_type)
        answer = Dataset()
        answer.RetrieveURL = f"{state.url}/dicomweb/studies/{study}"
        stored, failed, uids = [], [], []
        for _headers, payload in parts:
            ds = pydicom.dcmread(BytesIO(payload))
            uids.append(ds.SOPInstanceUID)
            item = Dataset()
            item.ReferencedSOPClassUID = ds.SOPClassUID
            item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            if ds.PatientID == "REJECT" or (study and ds.StudyInstanceUID != study):
                item.FailureReason = 0xA900
                failed.append(item)
            else:
                item.RetrieveURL = f"{answer.RetrieveURL}/instances/{ds.SOPInstanceUID}"
                stored.append(item)
        state.requests.append(
            Received(
                study_in_url=study,
                content_type=content_type,
                authorization=request.headers["authorization"],
                transfer_encoding=request.headers.get("transfer-encoding"),
                sop_uids=uids,
                part_types=[h.get("content-type", "") for h, _ in parts],
            )
        )
        if stored:
            answer.ReferencedSOPSequence = stored
        if failed:
            answer.FailedSOPSequence = failed
        status = 200 if not failed else 202 if stored else 409
        response = Response(
            content=answer.to_json(),
            status_code=status,
            media_type="application/dicom+json",
            headers={"Location": f"/v1/studies/{study}"},  # relative, as a service may send
        )
        for item in failed:  # failure reasons in words (PS3.18 8.4.3)
            response.headers.append(
                "Warning", f'299 test "{item.ReferencedSOPInstanceUID}: synthetic rejection"'
            )
        return response

    @api.post("/dicomweb/studies")
    async def store_any(request: Request) -> Response:
        return await store(request)

    @api.post("/dicomweb/studies/{study}")
    async def store_study(study: str, request: Request) -> Response:
        return await store(request, study)

    return api


@pytest.fixture
def stow_server() -> Iterator[StowServer]:
    state = StowServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(_stow_app(state), log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test STOW-RS server did not start")
        time.sleep(0.01)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ---------------------------------------------------------------- synthetic DICOM


def _instance(study_uid: str, *, patient_id: str = "SYNTH-1", size: int = 8) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.arange(size * size, dtype=np.int16).tobytes()
    return ds


def _write(folder: Path, datasets: list[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- tests


def test_push_files_reports_stored_and_failed(stow_server: StowServer, tmp_path: Path) -> None:
    study_a, study_b = generate_uid(), generate_uid()
    good_a = [_instance(study_a) for _ in range(3)]
    good_b = _instance(study_b)
    rejected = _instance(study_b, patient_id="REJECT")
    _write(tmp_path / "a" / "nested", good_a)
    _write(tmp_path / "b", [good_b, rejected])
    (tmp_path / "b" / "notes.txt").write_text("not dicom")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0\0")

    result = StowClient(stow_server.url, TOKEN).push_files([tmp_path])

    assert sorted(result.study_uids) == sorted([study_a, study_b])
    assert sorted(result.stored) == sorted([ds.SOPInstanceUID for ds in [*good_a, good_b]])
    failed = dict(result.failed)
    assert failed[rejected.SOPInstanceUID] == "0xA900 data set does not match SOP class: " + (
        "synthetic rejection"
    )
    assert failed[str(tmp_path / "b" / "notes.txt")].startswith("not a readable DICOM file")
    assert len(result.failed) == 2
    assert not result.ok
    assert result.retrieve_urls[study_a] == f"{stow_server.url}/dicomweb/studies/{study_a}"
    assert result.status_urls[study_b] == f"{stow_server.url}/v1/studies/{study_b}"
    # one request per study, to the study's URL, in the STOW-RS wire format
    assert sorted(r.study_in_url for r in stow_server.requests) == sorted([study_a, study_b])
    for request in stow_server.requests:
        assert request.authorization == f"Bearer {TOKEN}"
        assert request.content_type.startswith("multipart/related")
        assert 'type="application/dicom"' in request.content_type
        assert set(request.part_types) == {"application/dicom"}


def test_batches_and_chunked_large_instances(stow_server: StowServer, tmp_path: Path) -> None:
    study = generate_uid()
    small = [_instance(study) for _ in range(3)]
    large = _instance(study, size=800)  # 1.28 MB: dicomweb-client switches to chunked encoding
    client = StowClient(stow_server.url, TOKEN, batch_size=2)
    result = client.push_datasets([*small, large])
    assert sorted(result.stored) == sorted(ds.SOPInstanceUID for ds in [*small, large])
    assert result.ok
    assert [len(r.sop_uids) for r in stow_server.requests] == [2, 2]
    assert stow_server.requests[1].transfer_encoding == "chunked"
    received = [uid for r in stow_server.requests for uid in r.sop_uids]
    assert received == [ds.SOPInstanceUID for ds in [*small, large]]


def test_byte_limit_splits_batches(stow_server: StowServer) -> None:
    study = generate_uid()
    instances = [_instance(study, size=64) for _ in range(3)]  # 8 KiB of pixels each
    result = StowClient(stow_server.url, TOKEN, max_batch_bytes=10_000).push_datasets(instances)
    assert result.ok
    assert [len(r.sop_uids) for r in stow_server.requests] == [1, 1, 1]


def test_conflict_response_lists_every_failure(stow_server: StowServer) -> None:
    study = generate_uid()
    rejected = [_instance(study, patient_id="REJECT") for _ in range(2)]
    result = StowClient(stow_server.url, TOKEN).push_datasets(rejected)  # HTTP 409
    assert result.stored == []
    assert sorted(uid for uid, _ in result.failed) == sorted(ds.SOPInstanceUID for ds in rejected)
    # two Warning headers, joined by requests, each matched to its instance
    assert {reason for _, reason in result.failed} == {
        "0xA900 data set does not match SOP class: synthetic rejection"
    }


def test_bad_token_raises(stow_server: StowServer) -> None:
    with pytest.raises(StowAuthError, match="refused the token"):
        StowClient(stow_server.url, "wrong").push_datasets([_instance(generate_uid())])


def test_unreachable_service_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = StowClient(f"http://127.0.0.1:{port}", TOKEN, retry=False)
    with pytest.raises(StowError, match="cannot reach"):
        client.push_datasets([_instance(generate_uid())])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "127.0.0.1:8000", "token": "t"}, "http://"),
        ({"base_url": "http://x", "token": ""}, "token is required"),
        ({"base_url": "http://x", "token": "t", "batch_size": 0}, "batch_size"),
    ],
)
def test_constructor_checks(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StowClient(**kwargs)


def test_push_command(stow_server: StowServer, tmp_path: Path) -> None:
    study = generate_uid()
    _write(tmp_path / "ok", [_instance(study) for _ in range(2)])
    runner = CliRunner()
    result = runner.invoke(
        cli_app, ["push", "--url", stow_server.url, "--token", TOKEN, str(tmp_path / "ok")]
    )
    assert result.exit_code == 0, result.output
    assert "stored 2 instance(s), failed 0" in result.output
    assert f"study {study}: {stow_server.url}/v1/studies/{study}" in result.output

    rejected = _instance(study, patient_id="REJECT")
    _write(tmp_path / "bad", [rejected])
    result = runner.invoke(
        cli_app,
        ["push", str(tmp_path / "bad")],
        env={"ONCOTRIAGE_URL": stow_server.url, "ONCOTRIAGE_TOKEN": TOKEN},
    )
    assert result.exit_code == 1
    assert f"failed {rejected.SOPInstanceUID}: 0xA900" in result.output

    result = runner.invoke(
        cli_app, ["push", "--url", stow_server.url, "--token", "wrong", str(tmp_path / "ok")]
    )
    assert result.exit_code == 2
    assert "refused the token" in result.output


@pytest.mark.parametrize(
    ("request_url", "location", "expected"),
    [
        # relative: joined to where we called
        (
            "http://127.0.0.1:8765/dicomweb/studies/1.2",
            "/v1/studies/x",
            "http://127.0.0.1:8765/v1/studies/x",
        ),
        # dicomweb-client sent Host without the port: our port is kept
        (
            "http://127.0.0.1:8765/dicomweb/studies/1.2",
            "http://127.0.0.1/v1/studies/x",
            "http://127.0.0.1:8765/v1/studies/x",
        ),
        # a public base URL on another host is the service's word: kept as it is
        (
            "http://10.0.0.5:8000/dicomweb/studies/1.2",
            "https://triage.example.org/v1/studies/x",
            "https://triage.example.org/v1/studies/x",
        ),
    ],
)
def test_location_is_made_reachable(request_url: str, location: str, expected: str) -> None:
    from oncotriage.serving.client import _reachable_url

    assert _reachable_url(request_url, location) == expected
