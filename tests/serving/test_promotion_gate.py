"""The promotion gate of `oncotriage promote`, on a real registry and a migrated database
holding what the monitor records: a version whose sensitivity fell is refused, a good one
is promoted, an uncalibrated one is refused, and --force --reason is audited twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.migrate import upgrade
from oncotriage.serving.db.models import (
    AuditEvent,
    Hospital,
    Instance,
    Job,
    MonitorRecord,
    Series,
    Study,
)
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import AuditAction, Decision, HospitalKind, JobState, Priority

MODEL = "oncotriage-gate-test"
POSITIVES = 30
NEGATIVES = 10


def _promote(*args: Any) -> Any:
    from oncotriage.cli import app

    return CliRunner().invoke(app, ["promote", *map(str, args)], catch_exceptions=False)


def _calibrated(make_bundle: Any, operating: float, calibrated: bool = True) -> Path:
    from oncotriage.models.spec import ModelSpec

    bundle = make_bundle(operating=operating, urgent=1.0)
    spec = ModelSpec.load(bundle)
    thresholds = spec.thresholds.model_copy(update={"calibrated": calibrated})
    spec.model_copy(update={"thresholds": thresholds}).save(bundle)
    return bundle


def _live_studies(db: Database, raw_scores: dict[str, list[float]]) -> None:
    """POSITIVES referred and NEGATIVES returned studies, scored by champion v1 and, in the
    shadow, by each challenger version with the raw scores given (one per study)."""
    now = utcnow()
    with db.session() as session:
        hospital = Hospital(name="Gate Hospital", kind=HospitalKind.COMMUNITY)
        session.add(hospital)
        session.flush()
        for index in range(POSITIVES + NEGATIVES):
            positive = index < POSITIVES
            study = Study(
                hospital_id=hospital.id,
                study_instance_uid=f"1.2.3.{index}",
                modality="DX",
                priority=Priority.SUSPICIOUS,
                decision=Decision.REFER if positive else Decision.RETURN,
            )
            session.add(study)
            session.flush()
            series = Series(study_id=study.id, series_instance_uid=f"1.2.3.{index}.1")
            session.add(series)
            session.flush()
            instance = Instance(
                hospital_id=hospital.id,
                study_id=study.id,
                series_id=series.id,
                sop_instance_uid=f"1.2.3.{index}.1.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                content_hash="0" * 64,
                stored_path="x",
                size_bytes=1,
            )
            session.add(instance)
            session.flush()
            for version, scores in raw_scores.items():
                job = Job(
                    study_id=study.id,
                    series_id=series.id,
                    instance_id=instance.id,
                    state=JobState.DONE,
                )
                session.add(job)
                session.flush()
                raw = scores[index]
                session.add(
                    MonitorRecord(
                        job_id=job.id,
                        study_id=study.id,
                        hospital_id=hospital.id,
                        modality="DX",
                        champion_name=MODEL,
                        champion_version="1",
                        champion_raw_score=0.9,
                        champion_score=0.9,
                        champion_priority=Priority.SUSPICIOUS,
                        challenger_name=MODEL,
                        challenger_version=version,
                        challenger_raw_score=raw,
                        challenger_score=raw,
                        challenger_priority=Priority.SUSPICIOUS if raw >= 0.5 else Priority.ROUTINE,
                        created_at=now,
                    )
                )


def test_the_gate_refuses_lowered_sensitivity_and_promotes_a_good_version(
    make_bundle: Any, tmp_path: Path
) -> None:
    pytest.importorskip("mlflow")
    from oncotriage.models import registry

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    url = f"sqlite:///{tmp_path / 'oncotriage.db'}"
    upgrade(url)
    # v1 champion; v2 operating 0.5 (misses most cancers); v3 never calibrated; v4 good
    bundles = [
        _calibrated(make_bundle, 0.0),
        _calibrated(make_bundle, 0.5),
        _calibrated(make_bundle, 0.5, calibrated=False),
        _calibrated(make_bundle, 0.5),
    ]
    for expected, bundle in enumerate(bundles, start=1):
        assert registry.register_bundle(bundle, MODEL, tracking_uri=store) == expected
    common = ["--model", MODEL, "--tracking-uri", store, "--database-url", url]

    first = _promote(*common, "--version", 1)  # no champion yet: calibration alone
    assert first.exit_code == 0, first.output
    no_evidence = _promote(*common, "--version", 4)  # nothing scored since that promotion
    assert no_evidence.exit_code == 1
    assert "run it as the challenger first" in no_evidence.output

    # since the promotion: v2 catches 10 of 30 referred studies, v4 all 30
    low = [0.9 if i < 10 else 0.3 for i in range(POSITIVES)] + [0.2] * NEGATIVES
    good = [0.9] * POSITIVES + [0.2] * NEGATIVES
    _live_studies(Database(url), {"2": low, "3": good, "4": good})

    lowered = _promote(*common, "--version", 2)
    assert lowered.exit_code == 1, lowered.output
    assert "sensitivity 10/30 = 0.333" in lowered.output
    assert "below the target 0.95" in lowered.output
    uncalibrated = _promote(*common, "--version", 3)
    assert uncalibrated.exit_code == 1
    assert "were not calibrated for it" in uncalibrated.output
    assert registry.get_version(MODEL, "champion", tracking_uri=store).version == 1

    accepted = _promote(*common, "--version", 4)
    assert accepted.exit_code == 0, accepted.output
    assert "sensitivity 30/30 = 1.000" in accepted.output
    assert registry.get_version(MODEL, "champion", tracking_uri=store).version == 4

    # rolling back to a former champion never waits for evidence
    rollback = _promote(*common, "--version", 1)
    assert rollback.exit_code == 0, rollback.output

    # --force needs a reason; with one, the override is kept in the registry and audit log
    assert _promote(*common, "--version", 2, "--force").exit_code == 2
    forced = _promote(*common, "--version", 2, "--force", "--reason", "vendor hotfix, see CAPA-7")
    assert forced.exit_code == 0, forced.output
    assert "FORCED" in forced.output
    tag = json.loads(
        registry.get_version(MODEL, 2, tracking_uri=store).tags["oncotriage.forced_promotion"]
    )
    assert tag["reason"] == "vendor hotfix, see CAPA-7"
    # evidence counts from the last promotion (the rollback): v2 has none since
    assert any("run it as the challenger first" in line for line in tag["refused"])
    db = Database(url)
    with db.session() as session:
        events = session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.action == AuditAction.MODEL_PROMOTED)
            .order_by(AuditEvent.id)
        ).all()
    db.dispose()
    assert [e.detail["version"] for e in events] == [1, 4, 1, 2]  # type: ignore[index]
    assert [e.detail["forced"] for e in events] == [False, False, False, True]  # type: ignore[index]
    assert events[-1].detail["reason"] == "vendor hotfix, see CAPA-7"  # type: ignore[index]


def test_outcomes_label_studies_before_decisions(tmp_path: Path) -> None:
    from oncotriage.serving.db.models import Outcome, Patient, User
    from oncotriage.serving.enums import OutcomeKind, Role
    from oncotriage.serving.monitoring.performance import study_labels

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    upgrade(url)
    db = Database(url)
    with db.session() as session:
        centre = Hospital(name="Centre", kind=HospitalKind.CENTRE)
        session.add(centre)
        session.flush()
        user = User(username="dr", role=Role.SPECIALIST, hospital_id=centre.id)
        patient = Patient(centre_id=centre.id, pseudonym="p" * 64)
        session.add_all([user, patient])
        session.flush()
        cases = {
            "returned-then-cancer": (Decision.RETURN, OutcomeKind.MALIGNANT),
            "referred-benign": (Decision.REFER, OutcomeKind.BENIGN),
            "referred": (Decision.REFER, None),
            "returned": (Decision.RETURN, None),
            "more-imaging": (Decision.MORE_IMAGING, None),
            "undecided": (None, None),
            "clear-at-12-months": (None, OutcomeKind.NO_CANCER_12_MONTHS),
        }
        ids = {}
        for index, (name, (decision, outcome)) in enumerate(cases.items()):
            study = Study(
                hospital_id=centre.id, study_instance_uid=f"2.25.{index}", decision=decision
            )
            session.add(study)
            session.flush()
            ids[name] = study.id
            if outcome is not None:
                session.add(
                    Outcome(
                        patient_id=patient.id,
                        study_id=study.id,
                        kind=outcome,
                        recorded_by_id=user.id,
                    )
                )
        session.flush()
        labels = study_labels(session, ids.values())
    db.dispose()
    assert {name: labels.get(study_id) for name, study_id in ids.items()} == {
        "returned-then-cancer": True,
        "referred-benign": False,
        "referred": True,
        "returned": False,
        "more-imaging": None,
        "undecided": None,
        "clear-at-12-months": False,
    }
