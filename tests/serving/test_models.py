"""The service's model: first-run registration, following the registry alias, pinned versions."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for, wait_until

from oncotriage.serving.inference import ModelManager, ModelUnavailableError
from oncotriage.serving.settings import Settings


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (creating one takes seconds); tests use their own names."""
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_first_run_registers_the_demo_model_once(
    tmp_path: Path, tracking_uri: str, flagging_bundle: Path
) -> None:
    from oncotriage.models import registry

    model = "first-run-demo"
    settings = Settings(
        data_dir=tmp_path / "var",
        model_uri=f"models:/{model}@champion",
        mlflow_tracking_uri=tracking_uri,
        demo_model_dir=flagging_bundle,
    )
    loaded = ModelManager(settings).current()
    assert (loaded.name, loaded.version) == (model, "1")
    # a second service start (another process) finds it and registers nothing
    again = ModelManager(settings).current()
    assert again.version == "1"
    versions = registry.list_versions(model, tracking_uri=tracking_uri)
    assert [v.version for v in versions] == [1]
    assert registry.resolve(f"models:/{model}@champion", tracking_uri=tracking_uri).version == 1

    no_demo = settings.model_copy(
        update={"model_uri": "models:/unknown-model@champion", "register_demo_model": False}
    )
    with pytest.raises(ModelUnavailableError, match="unknown-model"):
        ModelManager(no_demo).current()


def test_promotion_swaps_the_model_and_results_keep_their_version(
    sqlite_service_factory, make_bundle, tracking_uri: str
) -> None:
    from oncotriage.models import registry

    model = "oncotriage-test"
    suspicious = make_bundle(operating=0.0, urgent=1.0)
    routine = make_bundle(operating=1.0, urgent=1.0)  # nothing scores 1: routine
    assert registry.register_bundle(suspicious, model, tracking_uri=tracking_uri) == 1
    registry.set_alias(model, "champion", 1, tracking_uri=tracking_uri)
    first, second = dx_instance(60), dx_instance(61)
    with sqlite_service_factory(
        model_uri=f"models:/{model}@champion",
        mlflow_tracking_uri=tracking_uri,
        model_poll_interval_s=0.2,
    ) as service:
        stow(service, "A", [to_bytes(first)]).raise_for_status()
        first_id = study_id_for(service, "A", first.StudyInstanceUID)
        before = service.wait_for_study(first_id, "A")

        assert registry.register_bundle(routine, model, tracking_uri=tracking_uri) == 2
        registry.set_alias(model, "champion", 2, tracking_uri=tracking_uri)
        with service.client() as client:
            wait_until(
                lambda: client.get("/readyz").json()["checks"]["model"].get("version") == "2", 30
            )
            assert (
                'oncotriage_model_info{model="oncotriage-test",version="2"} 1.0'
                in service.client("root").get("/metrics").text
            )

        stow(service, "A", [to_bytes(second)]).raise_for_status()
        second_id = study_id_for(service, "A", second.StudyInstanceUID)
        after = service.wait_for_study(second_id, "A")
        unchanged = service.client("A").get(f"/v1/studies/{first_id}").json()

    assert (before["model_version"], before["priority"]) == ("1", "suspicious")
    assert (after["model_version"], after["priority"]) == ("2", "routine")
    assert (unchanged["model_version"], unchanged["priority"]) == ("1", "suspicious")
    # the same network scored both: only the version's thresholds differ
    assert 0 < after["suspicion_score"] < 1


def test_a_model_with_placeholder_thresholds_is_not_served_unless_allowed(
    tmp_path: Path, make_bundle
) -> None:
    """An uncalibrated version (an imported zoo bundle before `calibrate`) would call a study
    routine below a threshold nobody chose: the service does not load it, and says why."""
    bundle = make_bundle(operating=0.5, urgent=0.9, calibrated=False)
    settings = Settings(data_dir=tmp_path / "var", model_uri=str(bundle), register_demo_model=False)
    assert settings.allow_uncalibrated_models is False  # the default
    manager = ModelManager(settings)
    with pytest.raises(ModelUnavailableError, match="placeholder triage thresholds") as refused:
        manager.current()
    message = str(refused.value)
    assert "operating 0.5, urgent 0.9" in message and "oncotriage calibrate" in message
    assert manager.last_error == message and manager.loaded is None
    # allowed explicitly; or as a shadow model, whose scores set no priority
    allowed = settings.model_copy(update={"allow_uncalibrated_models": True})
    assert ModelManager(allowed).current().spec.thresholds.operating == 0.5
    assert ModelManager(settings, triages=False).current().spec.thresholds.calibrated is False
    # calibrated: served by default
    calibrated = settings.model_copy(update={"model_uri": str(make_bundle(urgent=0.9))})
    assert ModelManager(calibrated).current().spec.thresholds.urgent == 0.9
