"""Models in the field, through the real service: a registered challenger scores live
studies behind the champion, stored apart; the comparison, the performance table and the
promotion gate read what it stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for, wait_until
from typer.testing import CliRunner

from oncotriage.serving.db.models import MonitorRecord

MODEL = "oncotriage-shadow-test"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _decide(service: Any, study_id: str, decision: str) -> None:
    with service.client("spec1") as spec:
        assert spec.post(f"/v1/worklist/{study_id}/claim").status_code == 200
        spec.post(f"/v1/studies/{study_id}/review", json={"decision": decision}).raise_for_status()


def test_a_challenger_scores_live_studies_behind_the_champion_and_apart(
    sqlite_service_factory, make_bundle, tracking_uri: str, tmp_path: Path
) -> None:
    from oncotriage.datasets.reader import read_image
    from oncotriage.models import registry
    from oncotriage.models.pipeline import DetectionPipeline

    images = [dx_instance(300 + case) for case in range(8)]
    # Two real models: the same exported network, the champion flagging every study
    # (operating 0), the challenger recalibrated to flag the upper half of these images
    # (its operating point: their median score, as the network itself scores them here).
    champion = make_bundle(operating=0.0, urgent=1.0)
    network = DetectionPipeline.from_bundle(champion)
    own_scores = sorted(
        max((float(f.score) for f in network.detect(read_image(ds))), default=0.0) for ds in images
    )
    operating = (own_scores[3] + own_scores[4]) / 2
    assert own_scores[3] < operating < own_scores[4]
    challenger = make_bundle(operating=operating, urgent=1.0)
    for bundle in (champion, challenger):
        from oncotriage.models.spec import ModelSpec

        spec = ModelSpec.load(bundle)
        spec.model_copy(
            update={"thresholds": spec.thresholds.model_copy(update={"calibrated": True})}
        ).save(bundle)
    assert registry.register_bundle(champion, MODEL, tracking_uri=tracking_uri) == 1
    assert registry.register_bundle(challenger, MODEL, tracking_uri=tracking_uri) == 2
    registry.set_alias(MODEL, "champion", 1, tracking_uri=tracking_uri)
    registry.set_alias(MODEL, "challenger", 2, tracking_uri=tracking_uri)

    database = tmp_path / "oncotriage.db"
    with sqlite_service_factory(
        model_uri=f"models:/{MODEL}@champion",
        mlflow_tracking_uri=tracking_uri,
        model_poll_interval_s=0.5,
    ) as service:
        ids = []
        for ds in images:
            stow(service, "A", [to_bytes(ds)]).raise_for_status()
            ids.append(study_id_for(service, "A", ds.StudyInstanceUID))
        studies = [service.wait_for_study(study_id, "A") for study_id in ids]

        def recorded() -> int:
            with service.db.session() as session:
                return int(session.scalar(sa.select(sa.func.count()).select_from(MonitorRecord)))

        wait_until(lambda: recorded() == len(images), 60)

        # priorities only from the champion: every study flagged, by version 1
        assert {(s["priority"], s["model_version"]) for s in studies} == {("suspicious", "1")}
        with service.db.session() as session:
            records = {r.study_id: r for r in session.scalars(sa.select(MonitorRecord)).all()}
        scores = {}
        for study in studies:
            record = records[study["id"]]
            assert (record.champion_version, record.challenger_version) == ("1", "2")
            # the same network on the same image: the same raw score
            assert record.challenger_raw_score == pytest.approx(record.champion_raw_score, abs=1e-6)
            assert record.champion_score == pytest.approx(study["suspicion_score"])
            assert record.challenger_priority.value == (
                "suspicious" if record.champion_raw_score >= operating else "routine"
            )
            assert record.manufacturer  # the device, from the stored header
            scores[study["id"]] = record.champion_raw_score

        # labels: the two highest-scoring studies referred, the two lowest returned
        ranked = sorted(ids, key=lambda i: scores[i])
        referred, returned = ranked[-2:], ranked[:2]
        for study_id in referred:
            _decide(service, study_id, "refer")
        for study_id in returned:
            _decide(service, study_id, "return")

        challenger_flags = {i for i in ids if scores[i] >= operating}
        with service.client("spec1") as spec:
            comparison = spec.get(f"/v1/monitoring/compare/{MODEL}").raise_for_status().json()
            rows = spec.get("/v1/monitoring/performance").raise_for_status().json()
        with service.client("A") as hospital:
            assert hospital.get(f"/v1/monitoring/compare/{MODEL}").status_code == 403
        with service.client("spec_other") as other:  # another union sees none of it
            assert other.get(f"/v1/monitoring/compare/{MODEL}").json()["pairs"] == []

    (pair,) = comparison["pairs"]
    n = len(images)
    k = len(challenger_flags)
    assert (pair["champion_version"], pair["challenger_version"], pair["studies"]) == ("1", "2", n)
    assert (pair["both_flagged"], pair["champion_only"]) == (k, n - k)
    assert (pair["challenger_only"], pair["neither"]) == (0, 0)
    assert (pair["agreement"]["k"], pair["agreement"]["n"]) == (k, n)
    assert (pair["champion"]["flag_rate"]["k"], pair["challenger"]["flag_rate"]["k"]) == (n, k)
    assert pair["labelled_positives"] == 2
    assert pair["champion"]["sensitivity"]["k"] == 2
    assert pair["challenger"]["sensitivity"]["k"] == len(set(referred) & challenger_flags)
    assert (pair["champion"]["ppv"]["k"], pair["champion"]["ppv"]["n"]) == (2, 4)
    low, high = pair["champion"]["ppv"]["low"], pair["champion"]["ppv"]["high"]
    assert low < 0.5 < high  # Wilson 95 % around 2/4
    (row,) = [r for r in rows["data"] if r["model"] == MODEL]
    assert (row["hospital"], row["version"], row["studies"], row["flagged"]) == (
        "Hospital A",
        "1",
        n,
        n,
    )
    assert row["manufacturer"] and row["modality"] == "DX"
    assert sum(row["scores"]["histogram"]) == n

    # the comparison on the command line
    from oncotriage.cli import app

    url = f"sqlite:///{database}"
    printed = CliRunner().invoke(app, ["models", "compare", MODEL, "--database-url", url])
    assert printed.exit_code == 0, printed.output
    assert f"on {n} studies (2 labelled positive)" in printed.output
    assert f"champion only {n - k}" in printed.output

    # exported to MLflow as metrics of the champion's version
    exported = CliRunner().invoke(
        app,
        ["models", "performance", "--database-url", url]
        + ["--export-mlflow", "--tracking-uri", tracking_uri],
    )
    assert exported.exit_code == 0, exported.output
    assert "recorded" in exported.output and f"{MODEL} version 1" in exported.output
    metrics = registry.get_version(MODEL, 1, tracking_uri=tracking_uri).metrics
    assert metrics["field.studies"] == n
    assert (metrics["field.flag_rate"], metrics["field.sensitivity"]) == (1.0, 1.0)
    assert metrics["field.ppv"] == 0.5
    assert metrics["field.ppv_low"] < 0.5 < metrics["field.ppv_high"]


def test_no_model_ready_is_said_not_waited_invisibly(
    sqlite_service_factory, tmp_path: Path
) -> None:
    with sqlite_service_factory(model_uri=str(tmp_path / "no-such-bundle")) as service:
        ds = dx_instance(400)
        stow(service, "A", [to_bytes(ds)]).raise_for_status()
        with service.client("spec1") as spec:
            status = spec.get("/v1/monitoring/status").raise_for_status().json()
        with service.client("A") as hospital:
            assert hospital.get("/v1/monitoring/status").status_code == 403
    (unready,) = status["models_unready"]
    assert unready["route"] == "default"
    assert "no-such-bundle" in unready["reason"]
    assert status["queued_jobs"] == 1


def test_the_monitor_backlog_is_bounded_and_counted(tmp_path: Path) -> None:
    from oncotriage.serving.db.session import Database
    from oncotriage.serving.enums import Priority
    from oncotriage.serving.monitoring.monitor import MONITOR_COUNTS, Monitor, MonitorTask
    from oncotriage.serving.settings import Settings
    from oncotriage.serving.storage import ContentStore

    settings = Settings(data_dir=tmp_path, monitor_backlog=2)
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    monitor = Monitor(settings, db, ContentStore(tmp_path / "store"))  # not started: no drain
    task = MonitorTask(1, "s", ("p",), None, 0.1, 0.1, Priority.ROUTINE)  # type: ignore[arg-type]
    dropped = MONITOR_COUNTS.dropped
    assert [monitor.submit(task) for _ in range(3)] == [True, True, False]
    assert (monitor.backlog, MONITOR_COUNTS.dropped - dropped) == (2, 1)
    db.dispose()
