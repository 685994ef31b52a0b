"""``oncotriage datasets from-reviews``: decisions and corrected boxes become a datalist."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.seaweedfs import SeaweedS3, store_settings
from service_utils.server import stow, study_id_for
from typer.testing import CliRunner

from oncotriage.cli import app
from oncotriage.datasets.datalist import load_datalist
from oncotriage.serving.db.models import Finding, Review
from oncotriage.serving.from_reviews import split_of


def test_reviews_become_a_datalist(
    sqlite_service_factory, flagging_bundle, tmp_path: Path, monkeypatch
) -> None:
    instances = [dx_instance(70 + case) for case in range(5)]
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        stow(service, "A", [to_bytes(ds) for ds in instances]).raise_for_status()
        ids = [study_id_for(service, "A", ds.StudyInstanceUID) for ds in instances]
        for study_id in ids:
            service.wait_for_study(study_id, "A")
        corrected, returned, referred, more, drawn_badly = ids
        with service.client("spec1") as client:
            model_boxes = client.get(f"/v1/studies/{referred}/result").json()["findings"]
            decisions = {
                corrected: {
                    "decision": "refer",
                    "corrected_boxes": [
                        {
                            "series_instance_uid": instances[0].SeriesInstanceUID,
                            "sop_instance_uid": instances[0].SOPInstanceUID,
                            "box_index": [10.0, 20.0, 30.0, 40.0],
                        }
                    ],
                },
                returned: {"decision": "return"},
                referred: {"decision": "refer"},
                more: {"decision": "more_imaging"},
                drawn_badly: {
                    "decision": "refer",
                    "corrected_boxes": [
                        {
                            "series_instance_uid": instances[4].SeriesInstanceUID,
                            "sop_instance_uid": instances[4].SOPInstanceUID,
                            "box_index": [1.0, 2.0, 3.0, 4.0],
                        }
                    ],
                },
            }
            for study_id, body in decisions.items():
                client.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
                client.post(f"/v1/studies/{study_id}/review", json=body).raise_for_status()
        # boxes stored before the API checked them (a NaN box, one 36 m wide): the export
        # leaves both out with the reason; the API's view of the review drops the one its
        # schema cannot carry (NaN)
        with service.db.session() as session:
            review = session.scalars(sa.select(Review).where(Review.study_id == drawn_badly)).one()
            good = review.corrected_boxes[0]
            review.corrected_boxes = [
                good,
                {**good, "box_index": [float("nan"), 20.0, 30.0, 40.0]},
                {**good, "box_index": [-50.0, -50.0, 99999.0, 99999.0]},
            ]
            # a candidate below the operating threshold (not shown, so not endorsed by the
            # referral): it never becomes a label
            shown = session.scalars(sa.select(Finding).where(Finding.study_id == referred)).first()
            assert shown is not None and shown.reportable
            session.add(
                Finding(
                    study_id=referred,
                    job_id=shown.job_id,
                    series_id=shown.series_id,
                    instance_id=shown.instance_id,
                    score=0.03,
                    box_index=[1.0, 1.0, 9.0, 9.0],
                    box_world=[0.5, 0.5, 4.5, 4.5],
                    model_name=shown.model_name,
                    model_version=shown.model_version,
                    reportable=False,
                )
            )
            session.commit()
        with service.client("A") as client:
            listed = client.get(f"/v1/studies/{drawn_badly}/reviews")
            assert listed.status_code == 200
            assert [b["box_index"] for b in listed.json()["data"][0]["corrected_boxes"]] == [
                [1.0, 2.0, 3.0, 4.0],
                [-50.0, -50.0, 99999.0, 99999.0],
            ]
        monkeypatch.setenv("ONCOTRIAGE_DATABASE_URL", service.settings.database_url)
        monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(service.settings.data_dir))
        from oncotriage.serving.settings import get_settings

        get_settings.cache_clear()
        out = tmp_path / "reviews"
        try:
            result = CliRunner().invoke(app, ["datasets", "from-reviews", "--out", str(out)])
        finally:
            get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    raw = json.loads((out / "datalist.json").read_text())
    assert (raw["box_mode"], raw["coordinates"], raw["spatial_dims"]) == ("ccwh", "world_mm", 2)
    entries = {}
    for split in ("training", "validation", "test"):
        for entry in load_datalist(out / "datalist.json", split=split, box_mode="xyxy"):
            entries[entry.meta["study_uid"]] = (split, entry)
    by_study = dict(zip(ids, instances, strict=True))
    assert set(entries) == {by_study[s].StudyInstanceUID for s in (corrected, returned, referred)}
    for study_id in (corrected, returned, referred):
        split, entry = entries[by_study[study_id].StudyInstanceUID]
        assert split == split_of(study_id)
        assert entry.image.is_file() and entry.image.read_bytes() == to_bytes(by_study[study_id])
    # corrected box: index * 0.5 mm pixel spacing, as xyxy after loading
    _, entry = entries[instances[0].StudyInstanceUID]
    np.testing.assert_allclose(entry.boxes, [[5.0, 10.0, 15.0, 20.0]], atol=1e-3)
    assert entry.meta["label_source"] == "specialist_boxes"
    # an image whose stored boxes cannot all be read is left out, never trained as a
    # negative for what the specialist drew there, and the datalist says why
    assert raw["left_out"] == [
        {
            "review_id": raw["left_out"][0]["review_id"],
            "study_uid": instances[4].StudyInstanceUID,
            "series_uid": instances[4].SeriesInstanceUID,
            "reasons": [
                "a box's coordinates must be finite numbers (no NaN or infinity)",
                "the box runs outside the image: columns -50..99999, the image has 64 "
                "columns (0..63)",
            ],
        }
    ]
    _, entry = entries[instances[1].StudyInstanceUID]
    assert entry.boxes.shape == (0, 4) and entry.meta["label_source"] == "returned_negative"
    _, entry = entries[instances[2].StudyInstanceUID]
    assert entry.meta["label_source"] == "model_confirmed_by_referral"
    assert all(f["reportable"] for f in model_boxes)
    expected = sorted(tuple(f["box_world"]) for f in model_boxes)
    np.testing.assert_allclose(sorted(map(tuple, entry.boxes)), expected, atol=1e-3)


def test_split_shares_are_80_10_10() -> None:
    shares = [split_of(f"study-{i}") for i in range(4000)]
    assert [
        shares.count(name) / 4000 for name in ("training", "validation", "test")
    ] == pytest.approx([0.8, 0.1, 0.1], abs=0.025)
    assert [split_of(f"study-{i}") for i in range(50)] == shares[:50]  # stable


def test_reviews_export_from_the_s3_store(
    sqlite_service_factory, flagging_bundle, seaweedfs: SeaweedS3, tmp_path: Path, monkeypatch
) -> None:
    """A service keeping its images in S3 (a live SeaweedFS): the export, run on another
    host (an empty data folder), streams them out of the bucket into the datalist."""
    store = store_settings(seaweedfs, f"from-reviews/{tmp_path.name}")
    instances = [dx_instance(80 + case) for case in range(2)]
    with sqlite_service_factory(model_uri=str(flagging_bundle), **store) as service:
        stow(service, "A", [to_bytes(ds) for ds in instances]).raise_for_status()
        ids = [study_id_for(service, "A", ds.StudyInstanceUID) for ds in instances]
        for study_id in ids:
            service.wait_for_study(study_id, "A")
        corrected, returned = ids
        with service.client("spec1") as client:
            for study_id, body in {
                corrected: {
                    "decision": "refer",
                    "corrected_boxes": [
                        {
                            "series_instance_uid": instances[0].SeriesInstanceUID,
                            "sop_instance_uid": instances[0].SOPInstanceUID,
                            "box_index": [10.0, 20.0, 30.0, 40.0],
                        }
                    ],
                },
                returned: {"decision": "return"},
            }.items():
                client.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
                client.post(f"/v1/studies/{study_id}/review", json=body).raise_for_status()
        database_url = service.settings.database_url
    # the images are in the bucket only: nothing in the service's folder store
    assert not list((tmp_path / "var").glob("store/objects/*/*/*.dcm"))
    elsewhere = tmp_path / "another-host"
    monkeypatch.setenv("ONCOTRIAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(elsewhere))
    for key, value in store.items():
        monkeypatch.setenv(f"ONCOTRIAGE_{key.upper()}", value)
    from oncotriage.serving.settings import get_settings

    get_settings.cache_clear()
    out = tmp_path / "reviews"
    try:
        result = CliRunner().invoke(app, ["datasets", "from-reviews", "--out", str(out)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    entries = {}
    for split in ("training", "validation", "test"):
        for entry in load_datalist(out / "datalist.json", split=split, box_mode="xyxy"):
            entries[entry.meta["study_uid"]] = entry
    assert set(entries) == {ds.StudyInstanceUID for ds in instances}
    for ds in instances:
        assert entries[ds.StudyInstanceUID].image.read_bytes() == to_bytes(ds)
    np.testing.assert_allclose(
        entries[instances[0].StudyInstanceUID].boxes, [[5.0, 10.0, 15.0, 20.0]], atol=1e-3
    )
    assert entries[instances[1].StudyInstanceUID].boxes.shape == (0, 4)
    # streamed out of the bucket, not copied through a read cache on this host
    assert not list(elsewhere.glob("store-cache/objects/*/*/*.dcm"))
    assert not list(out.glob("images/**/.export-*"))


def test_reviews_export_names_an_unreachable_s3_store(
    sqlite_service_factory, flagging_bundle, tmp_path: Path, monkeypatch
) -> None:
    """The store is down: the export says which store it could not reach (exit 1), no
    traceback."""
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        stow(service, "A", [to_bytes(dx_instance(90))]).raise_for_status()
        study_id = study_id_for(service, "A", dx_instance(90).StudyInstanceUID)
        service.wait_for_study(study_id, "A")
        with service.client("spec1") as client:
            client.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
            client.post(
                f"/v1/studies/{study_id}/review", json={"decision": "return"}
            ).raise_for_status()
        database_url = service.settings.database_url
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("ONCOTRIAGE_DATABASE_URL", database_url)
    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path / "another-host"))
    monkeypatch.setenv("ONCOTRIAGE_STORE_URL", "s3://nowhere/x")
    monkeypatch.setenv("ONCOTRIAGE_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ONCOTRIAGE_S3_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("ONCOTRIAGE_S3_SECRET_ACCESS_KEY", "b")
    from oncotriage.serving.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["datasets", "from-reviews", "--out", str(tmp_path / "reviews")]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "image store s3://nowhere/x" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
