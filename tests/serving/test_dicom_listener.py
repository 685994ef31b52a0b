"""The DICOM listener (C-ECHO / C-STORE SCP) with real peers: dcmtk's storescu and echoscu,
and a pynetdicom SCU; each test starts its own listener on a free port of 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import RLELossless
from service_utils.dicom import ct_series, dx_instance, to_bytes
from service_utils.server import Service, stow, study_id_for

from oncotriage.models.spec import ModelSpec
from oncotriage.serving.accounts import AccountError, create_hospital
from oncotriage.serving.ae_titles import principal_for_ae_title, remove_ae_title, set_ae_title
from oncotriage.serving.db.migrate import upgrade
from oncotriage.serving.db.models import Instance, Job, Study
from oncotriage.serving.db.session import Database
from oncotriage.serving.dicomweb import FailureReason
from oncotriage.serving.inference import demo_bundle_dir
from oncotriage.serving.listener import store_status
from oncotriage.serving.storage import ContentStore

TESTS_DIR = Path(__file__).resolve().parent
LISTENER_AET = "ONCOTRIAGE"
MODALITY_AET = "CT_HOSP_A"


def _dcmtk(tool: str) -> str:
    """The dcmtk tool's path; skipped where dcmtk is absent (failed in CI, where
    scripts/install-peers.sh installs it)."""
    path = shutil.which(tool)
    if path is None:
        message = f"dcmtk's {tool} is not installed (run scripts/install-peers.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _listener_port(service: Service) -> int:
    address = service.app.state.dicom_listener_address
    assert address is not None and address.ae_title == LISTENER_AET
    return int(address.port)


def _map_ae_title(db: Database, hospital: str, ae_title: str) -> None:
    with db.session() as session:
        set_ae_title(session, hospital, ae_title)


def _study(service: Service, who: str, study_uid: str) -> dict[str, Any]:
    return service.wait_for_study(study_id_for(service, who, study_uid), who, timeout_s=120)


# ------------------------------------------------------------------ AE titles and statuses


def test_ae_titles_map_to_one_hospital_each(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    db = Database(url)
    try:
        with db.session() as session:
            create_hospital(session, "Centre", "centre")
            hospital_a = create_hospital(session, "Hospital A", centre="Centre").id
            create_hospital(session, "Hospital B", centre="Centre")
        with db.session() as session:
            assert set_ae_title(session, "Hospital A", "  CT_A ").ae_title == "CT_A"
            assert set_ae_title(session, "Hospital A", "CT_A").ae_title == "CT_A"  # again: same
            with pytest.raises(AccountError, match="already belongs to 'Hospital A'"):
                set_ae_title(session, "Hospital B", "CT_A")
            with pytest.raises(AccountError, match="at most 16"):
                set_ae_title(session, "Hospital B", "A" * 17)
            with pytest.raises(AccountError, match="backslash"):
                set_ae_title(session, "Hospital B", "CT\\B")
            with pytest.raises(AccountError, match="no hospital named"):
                set_ae_title(session, "Hospital Z", "CT_Z")
        with db.session() as session:
            principal = principal_for_ae_title(session, "CT_A")
            assert principal is not None
            assert (principal.hospital_id, principal.is_hospital) == (hospital_a, True)
            assert principal_for_ae_title(session, "ct_a") is None  # AE titles are case-exact
            assert principal_for_ae_title(session, "CT_B") is None
            assert remove_ae_title(session, "CT_A") is True
            assert principal_for_ae_title(session, "CT_A") is None
            assert remove_ae_title(session, "CT_A") is False
    finally:
        db.dispose()


def test_admin_cli_maps_ae_titles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from oncotriage.cli import app
    from oncotriage.serving.settings import get_settings

    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        for args in (
            ["admin", "create-hospital", "Centre", "--kind", "centre"],
            ["admin", "create-hospital", "Hospital A", "--centre", "Centre"],
            ["admin", "create-hospital", "Hospital B", "--centre", "Centre"],
        ):
            assert runner.invoke(app, args).exit_code == 0
        mapped = runner.invoke(
            app, ["admin", "set-ae-title", "--hospital", "Hospital A", "--ae-title", "CT_A"]
        )
        assert (mapped.exit_code, mapped.output.strip()) == (
            0,
            "AE title 'CT_A' sends for 'Hospital A'",
        )
        taken = runner.invoke(
            app, ["admin", "set-ae-title", "--hospital", "Hospital B", "--ae-title", "CT_A"]
        )
        assert taken.exit_code == 2 and "already belongs to 'Hospital A'" in taken.output
        listed = runner.invoke(app, ["admin", "list-ae-titles"])
        assert listed.output.splitlines() == ["CT_A\tHospital A"]
        assert runner.invoke(app, ["admin", "remove-ae-title", "CT_A"]).exit_code == 0
        gone = runner.invoke(app, ["admin", "remove-ae-title", "CT_A"])
        assert gone.exit_code == 2 and "no AE title 'CT_A' is mapped" in gone.output
        assert runner.invoke(app, ["admin", "list-ae-titles"]).output == ""
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("reason", "message", "warning", "status", "comment"),
    [
        (None, "", "", 0x0000, None),
        (None, "", "unknown charset", 0xB000, "unknown charset"),
        (FailureReason.OUT_OF_RESOURCES, "too big", "", 0xA700, "too big"),
        (FailureReason.DATASET_DOES_NOT_MATCH, "no pixels", "", 0xA900, "no pixels"),
        (FailureReason.CANNOT_UNDERSTAND, "not DICOM", "", 0xC000, "not DICOM"),
        (FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED, "x", "", 0xC122, "x"),
        (FailureReason.SOP_CLASS_NOT_SUPPORTED, "x", "", 0x0122, "x"),
        (FailureReason.DUPLICATE_SOP_INSTANCE, "x", "", 0x0111, "x"),
        # one line, no backslash, cut to the 64 characters of an LO
        (
            FailureReason.CANNOT_UNDERSTAND,
            "a\\b\nc " + "z" * 80,
            "",
            0xC000,
            "a/b c " + "z" * 55 + "...",
        ),
    ],
)
def test_store_status_carries_the_reason(
    reason: FailureReason | None, message: str, warning: str, status: int, comment: str | None
) -> None:
    dataset = store_status(reason, message, warning)
    assert dataset.Status == status
    if comment is None:
        assert "ErrorComment" not in dataset
    else:
        assert dataset.ErrorComment == comment
        assert len(dataset.ErrorComment) <= 64


# ------------------------------------------------------------------ dcmtk against `serve`


@pytest.fixture
def examples(tmp_path: Path) -> dict[str, Path]:
    """The synthetic example DX (one file) and low-dose CT (a series folder) of the synth
    module, and the DX again, RLE-compressed, under new UIDs."""
    from oncotriage.datasets.synth import write_example_study

    dx = write_example_study(tmp_path / "examples", "cxr", seed=2024)
    ct = write_example_study(tmp_path / "examples", "ldct", seed=2024)
    rle = pydicom.dcmread(dx)
    rle.compress(RLELossless)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(rle, keyword, pydicom.uid.generate_uid())
    rle.file_meta.MediaStorageSOPInstanceUID = rle.SOPInstanceUID
    rle_path = tmp_path / "examples" / "dx_rle.dcm"
    rle.save_as(rle_path, enforce_file_format=True)
    return {"dx": dx, "ct": ct, "dx_rle": rle_path}


def test_storescu_sends_dx_and_ct_that_are_triaged(
    sqlite_service_factory: Any, examples: dict[str, Path]
) -> None:
    storescu = _dcmtk("storescu")
    demo = ModelSpec.load(demo_bundle_dir())
    dx, ct_folder, dx_rle = examples["dx"], examples["ct"], examples["dx_rle"]
    ct_files = sorted(ct_folder.glob("*.dcm"))
    with sqlite_service_factory(
        model_uri=str(demo_bundle_dir()), dicom_listener_port=0, series_settle_s=0.5
    ) as service:
        _map_ae_title(service.db, "Hospital A", MODALITY_AET)
        port = _listener_port(service)
        target = ["-aet", MODALITY_AET, "-aec", LISTENER_AET, "127.0.0.1", str(port)]
        for options, files in (
            ([], [dx]),  # uncompressed, as written
            (["+sd"], [ct_folder]),  # a whole series folder, one association
            (["-xr"], [dx_rle]),  # -xr proposes RLE Lossless: sent as compressed
        ):
            sent = subprocess.run(
                [storescu, *options, *target, *map(str, files)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert sent.returncode == 0, sent.stderr[-2000:]
        # The same radiograph by STOW-RS from another hospital: the same path, the same result.
        stow(service, "B", [dx.read_bytes()]).raise_for_status()

        dx_uid = pydicom.dcmread(dx, stop_before_pixels=True).StudyInstanceUID
        by_dimse = _study(service, "A", dx_uid)
        by_stow = _study(service, "B", dx_uid)
        assert by_dimse["hospital"]["id"] == service.hospital_ids["A"]
        assert (by_dimse["status"], by_dimse["modality"]) == ("triaged", "DX")
        assert (by_dimse["model_name"], by_dimse["model_version"]) == (demo.name, demo.version)
        assert 0.0 <= by_dimse["suspicion_score"] <= 1.0
        assert by_dimse["suspicion_score"] == pytest.approx(by_stow["suspicion_score"], abs=1e-6)
        assert by_dimse["priority"] == by_stow["priority"]
        assert by_dimse["priority"] in ("routine", "suspicious", "urgent")
        # RLE Lossless decodes to the same pixels: the same score
        rle_uid = pydicom.dcmread(dx_rle, stop_before_pixels=True).StudyInstanceUID
        by_rle = _study(service, "A", rle_uid)
        assert by_rle["suspicion_score"] == pytest.approx(by_dimse["suspicion_score"], abs=1e-6)

        ct_uid = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID
        ct = _study(service, "A", ct_uid)
        # one model is served, the demo radiograph model: a CT has no model made for it
        assert (ct["status"], ct["priority"], ct["modality"]) == (
            "failed",
            "needs_manual_review",
            "CT",
        )
        assert ct["failure_reason"].startswith("no model for CT"), ct["failure_reason"]
        assert (ct["series_count"], ct["instance_count"]) == (1, len(ct_files))
        with service.db.session() as session:
            # the series was read once, complete
            assert (
                session.scalar(sa.select(sa.func.count(Job.id)).where(Job.study_id == ct["id"]))
                == 1
            )
        # nothing of hospital A's is visible to hospital B
        with service.client("B") as client:
            listed = client.get("/v1/studies", params={"study_instance_uid": ct_uid}).json()
        assert listed["count"] == 0


def test_echoscu_and_unknown_ae_titles(sqlite_service_factory: Any, tmp_path: Path) -> None:
    echoscu, storescu = _dcmtk("echoscu"), _dcmtk("storescu")
    instance_path = tmp_path / "dx.dcm"
    instance_path.write_bytes(to_bytes(dx_instance(7)))
    with sqlite_service_factory(embedded_workers=0, dicom_listener_port=0) as service:
        _map_ae_title(service.db, "Hospital A", MODALITY_AET)
        port = str(_listener_port(service))

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(args, capture_output=True, text=True, timeout=60)

        ok = run(echoscu, "-aet", MODALITY_AET, "-aec", LISTENER_AET, "127.0.0.1", port)
        assert ok.returncode == 0, ok.stderr
        unknown = run(echoscu, "-aet", "STRANGER", "-aec", LISTENER_AET, "127.0.0.1", port)
        assert unknown.returncode != 0
        assert "Calling AE Title Not Recognized" in unknown.stderr, unknown.stderr
        wrong_called = run(echoscu, "-aet", MODALITY_AET, "-aec", "OTHER", "127.0.0.1", port)
        assert wrong_called.returncode != 0
        assert "Called AE Title Not Recognized" in wrong_called.stderr, wrong_called.stderr
        refused = run(
            storescu,
            "-aet",
            "STRANGER",
            "-aec",
            LISTENER_AET,
            "127.0.0.1",
            port,
            str(instance_path),
        )
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count(Instance.id))) == 0
        # once mapped, the same AE title's instance is kept, for its hospital
        _map_ae_title(service.db, "Hospital B", "STRANGER")
        accepted = run(
            storescu,
            "-aet",
            "STRANGER",
            "-aec",
            LISTENER_AET,
            "127.0.0.1",
            port,
            str(instance_path),
        )
        assert accepted.returncode == 0, accepted.stderr
        with service.db.session() as session:
            held = session.scalars(sa.select(Instance)).all()
        assert [(row.hospital_id, row.sop_instance_uid) for row in held] == [
            (service.hospital_ids["B"], dx_instance(7).SOPInstanceUID)
        ]


# ------------------------------------------------------------------ refusals, pynetdicom SCU


def _associate(port: int, ae_title: str, contexts: list[str]) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    for sop_class in contexts:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AET)
    assert assoc.is_established
    return assoc


def test_refused_instances_get_a_failure_status_with_the_reason(
    sqlite_service_factory: Any,
) -> None:
    pytest.importorskip("pynetdicom")
    big = dx_instance(1, size=64)
    no_pixels = dx_instance(2, size=16)
    del no_pixels.PixelData
    good = dx_instance(3, size=16)
    padded = dx_instance(4, size=16)
    padded.ImageComments = "x" * 10200
    limit = len(to_bytes(big)) + 1000
    assert len(to_bytes(padded)) > limit + 1000
    with sqlite_service_factory(
        embedded_workers=0, dicom_listener_port=0, max_pixels=32 * 32, max_request_bytes=limit
    ) as service:
        _map_ae_title(service.db, "Hospital A", MODALITY_AET)
        assoc = _associate(_listener_port(service), MODALITY_AET, [str(big.SOPClassUID)])
        try:
            too_big = assoc.send_c_store(big)
            missing = assoc.send_c_store(no_pixels)
            too_long = assoc.send_c_store(padded)
            kept = assoc.send_c_store(good)
        finally:
            assoc.release()
        assert too_big.Status == 0xA700
        assert too_big.ErrorComment.startswith("image of 64x64x1 pixels exceeds this service")
        assert missing.Status == 0xA900
        assert "pixel" in missing.ErrorComment.lower(), missing.ErrorComment
        assert too_long.Status == 0xA700
        assert re.fullmatch(
            rf"\d+ bytes: over the {limit}-byte limit per instance",
            too_long.ErrorComment,
        ), too_long.ErrorComment
        assert kept.Status == 0x0000
        with service.db.session() as session:
            held = session.scalars(sa.select(Instance.sop_instance_uid)).all()
        assert held == [good.SOPInstanceUID]


def test_ct_series_is_read_once_its_association_ends(sqlite_service_factory: Any) -> None:
    """Slices arriving further apart than series_settle_s: the series waits for the end of
    the association, then is read once, whole."""
    pytest.importorskip("pynetdicom")
    from oncotriage.serving.db.base import utcnow
    from oncotriage.serving.listener import ASSOCIATION_IDLE_TIMEOUT_S

    series = ct_series(9, slices=20, size=32)
    with sqlite_service_factory(
        model_uri=str(demo_bundle_dir()), dicom_listener_port=0, series_settle_s=0.1
    ) as service:
        _map_ae_title(service.db, "Hospital A", MODALITY_AET)
        assoc = _associate(_listener_port(service), MODALITY_AET, [str(series[0].SOPClassUID)])
        try:
            first_half = [assoc.send_c_store(dataset).Status for dataset in series[:10]]
            with service.db.session() as session:
                held = session.scalars(sa.select(Job)).all()
                assert [(job.state.value, job.attempts) for job in held] == [("queued", 0)]
                # held for the association, far beyond series_settle_s
                wait_s = (held[0].next_attempt_at - utcnow()).total_seconds()
                assert ASSOCIATION_IDLE_TIMEOUT_S - 5 < wait_s <= ASSOCIATION_IDLE_TIMEOUT_S + 0.1
            second_half = [assoc.send_c_store(dataset).Status for dataset in series[10:]]
        finally:
            assoc.release()
        assert first_half + second_half == [0x0000] * len(series)
        study = _study(service, "A", series[0].StudyInstanceUID)
        assert (study["priority"], study["instance_count"]) == ("needs_manual_review", 20)
        assert study["failure_reason"].startswith("no model for CT"), study["failure_reason"]
        with service.db.session() as session:
            jobs = session.scalars(sa.select(Job)).all()
        assert [(job.state.value, job.attempts) for job in jobs] == [("failed", 1)]


TRANSFER_SYNTAXES = [
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.DeflatedExplicitVRLittleEndian,
    pydicom.uid.RLELossless,
    pydicom.uid.JPEGLSLossless,
    pydicom.uid.JPEG2000Lossless,
]


def test_transfer_syntaxes_arrive_pixel_exact(sqlite_service_factory: Any) -> None:
    """Each lossless transfer syntax is negotiated and kept as sent; its pixels decode to
    what the sender encoded. A syntax nothing here decodes (MPEG-2) is refused at
    association: its presentation context is rejected, "transfer syntaxes not supported"."""
    pytest.importorskip("pynetdicom")
    from pynetdicom import AE

    sop_class = str(dx_instance(0).SOPClassUID)
    datasets = {}
    for case, syntax in enumerate(TRANSFER_SYNTAXES, start=60):
        dataset = dx_instance(case, size=32)
        if syntax.is_compressed:
            dataset.compress(syntax)
        else:
            dataset.file_meta.TransferSyntaxUID = syntax
        # read back, so that its encoding is the one its file meta names (what a sender has)
        datasets[syntax] = pydicom.dcmread(io.BytesIO(to_bytes(dataset)))
    with sqlite_service_factory(embedded_workers=0, dicom_listener_port=0) as service:
        _map_ae_title(service.db, "Hospital A", MODALITY_AET)
        ae = AE(ae_title=MODALITY_AET)
        for syntax in TRANSFER_SYNTAXES:
            ae.add_requested_context(sop_class, [syntax])
        ae.add_requested_context(sop_class, [pydicom.uid.MPEG2MPML])
        assoc = ae.associate("127.0.0.1", _listener_port(service), ae_title=LISTENER_AET)
        assert assoc.is_established
        try:
            accepted = sorted(str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts)
            rejected = [(str(cx.transfer_syntax[0]), cx.result) for cx in assoc.rejected_contexts]
            statuses = {
                str(syntax): assoc.send_c_store(dataset).Status
                for syntax, dataset in datasets.items()
            }
        finally:
            assoc.release()
        assert accepted == sorted(str(syntax) for syntax in TRANSFER_SYNTAXES)
        assert rejected == [(str(pydicom.uid.MPEG2MPML), 0x04)]  # transfer syntaxes not supported
        assert statuses == {str(syntax): 0x0000 for syntax in TRANSFER_SYNTAXES}
        store = ContentStore(service.settings.image_store_dir)
        with service.db.session() as session:
            rows = session.execute(sa.select(Instance.sop_instance_uid, Instance.stored_path))
            paths = {str(uid): str(path) for uid, path in rows}
        for syntax, dataset in datasets.items():
            kept = pydicom.dcmread(store.path(paths[dataset.SOPInstanceUID]))
            assert kept.file_meta.TransferSyntaxUID == syntax
            original = dx_instance(TRANSFER_SYNTAXES.index(syntax) + 60, size=32).pixel_array
            assert (kept.pixel_array == original).all(), syntax.name


# ------------------------------------------------------------------ SIGKILL mid-series


def _listener_process(db_url: str, data_dir: Path) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "ONCOTRIAGE_ENVIRONMENT": "test",
        "ONCOTRIAGE_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "ONCOTRIAGE_DATABASE_URL": db_url,
        "ONCOTRIAGE_DATA_DIR": str(data_dir),
        "ONCOTRIAGE_LOG_JSON": "true",
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from oncotriage.cli import main; main()", "dicom-listener"]
        + ["--port", "0", "--ae-title", LISTENER_AET],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def listener_process(db_url: str, tmp_path: Path) -> Iterator[Any]:
    """``start()`` -> (process, port) of ``oncotriage dicom-listener`` on ``db_url``."""
    processes: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], int]:
        process = _listener_process(db_url, tmp_path / "var")
        processes.append(process)
        assert process.stdout is not None
        for line in process.stdout:  # ends when the process does (then: the assert below)
            match = re.search(r"^DICOM listener \S+ on 127\.0\.0\.1:(\d+)$", line.strip())
            if match:
                return process, int(match.group(1))
        raise AssertionError(f"the listener exited with status {process.wait()}")

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def test_sigkill_mid_series_loses_no_acknowledged_instance(
    db_url: str, tmp_path: Path, listener_process: Any
) -> None:
    pytest.importorskip("pynetdicom")
    upgrade(db_url)
    db = Database(db_url)
    with db.session() as session:
        create_hospital(session, "Centre", "centre")
        hospital_a = create_hospital(session, "Hospital A", centre="Centre").id
        set_ae_title(session, "Hospital A", MODALITY_AET)
    series = ct_series(5, slices=60, size=32)
    process, port = listener_process()
    acknowledged: list[str] = []
    unanswered: list[str] = []
    tenth = threading.Event()

    def send() -> None:
        assoc = _associate(port, MODALITY_AET, [str(series[0].SOPClassUID)])
        for dataset in series:
            status = assoc.send_c_store(dataset) if assoc.is_established else None
            if status is not None and status.get("Status") == 0x0000:
                acknowledged.append(str(dataset.SOPInstanceUID))
                if len(acknowledged) == 10:
                    tenth.set()
            else:
                unanswered.append(str(dataset.SOPInstanceUID))
        if assoc.is_established:
            assoc.release()
        tenth.set()

    sender = threading.Thread(target=send)
    sender.start()
    assert tenth.wait(timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    sender.join(timeout=120)
    assert not sender.is_alive()
    assert len(acknowledged) >= 10 and unanswered, "the kill must land mid-series"

    store = ContentStore(tmp_path / "var" / "store")
    try:
        with db.session() as session:
            held = {
                row.sop_instance_uid: row
                for row in session.scalars(
                    sa.select(Instance).where(Instance.hospital_id == hospital_a)
                )
            }
            for uid in acknowledged:
                row = held[uid]  # its row is committed
                data = store.path(row.stored_path).read_bytes()  # and its bytes are there
                assert hashlib.sha256(data).hexdigest() == row.content_hash
                assert pydicom.dcmread(store.path(row.stored_path)).SOPInstanceUID == uid
        # A restarted listener takes the whole series again: what it held is a no-op, the
        # rest completes the series.
        _, port = listener_process()
        assoc = _associate(port, MODALITY_AET, [str(series[0].SOPClassUID)])
        try:
            statuses = [assoc.send_c_store(dataset).Status for dataset in series]
        finally:
            assoc.release()
        assert statuses == [0x0000] * len(series)
        with db.session() as session:
            uids = set(
                session.scalars(
                    sa.select(Instance.sop_instance_uid).where(Instance.hospital_id == hospital_a)
                )
            )
            studies = session.scalars(sa.select(Study)).all()
            assert uids == {str(dataset.SOPInstanceUID) for dataset in series}
            assert [study.study_instance_uid for study in studies] == [series[0].StudyInstanceUID]
    finally:
        db.dispose()
