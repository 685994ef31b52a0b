"""The MLflow registry as the service and the CLI use it, on a real local SQLite store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from oncotriage.models import registry
from oncotriage.models.config import load_config
from oncotriage.models.spec import ModelSpec, Thresholds

ROOT = Path(__file__).resolve().parents[2]


def _bundle(folder: Path, *, fingerprint: str = "sha256:abc", payload: bytes = b"onnx") -> Path:
    """A bundle folder: a real spec and placeholder ONNX bytes (nothing here runs them)."""
    cfg = load_config(ROOT / "configs" / "detector_tiny_2d.yaml")
    spec = ModelSpec.from_config(
        cfg,
        thresholds=Thresholds(operating=0.3, urgent=0.8, calibrated=True),
        metrics={"cpm": 0.75, "froc_sens_at_1_fp": 0.9},
        dataset_fingerprint=fingerprint,
        intended_use="Trained on synthetic images, not for clinical use.",
    )
    spec.save(folder)
    (folder / "model.onnx").write_bytes(payload)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    return registry.default_tracking_uri(root)


@pytest.fixture(scope="module")
def registered(store: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions of ``tiny``: v1 and v2 with different weights and fingerprints."""
    one = _bundle(tmp_path_factory.mktemp("b1"), fingerprint="sha256:one", payload=b"weights-1")
    two = _bundle(tmp_path_factory.mktemp("b2"), fingerprint="sha256:two", payload=b"weights-2")
    assert registry.register_bundle(one, "tiny", tracking_uri=store) == 1
    assert registry.register_bundle(two, "tiny", tracking_uri=store, tags={"team": "ml"}) == 2
    return {"one": one, "two": two}


def test_default_tracking_uri_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path))
    assert registry.default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert registry.default_artifact_location(registry.default_tracking_uri(), "x y") == (
        (tmp_path.resolve() / "mlartifacts" / "x_y").as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert registry.default_tracking_uri() == "http://127.0.0.1:5000"
    assert registry.default_artifact_location("http://127.0.0.1:5000", "x") is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/cxr/3", registry.ModelUri(kind="models", name="cxr", version=3)),
        ("models:/cxr@champion", registry.ModelUri(kind="models", name="cxr", alias="champion")),
        ("runs:/abc123/bundle", registry.ModelUri(kind="runs", run_id="abc123", path="bundle")),
        ("models/demo", registry.ModelUri(kind="local", path="models/demo")),
        (
            "0123456789abcdef0123456789abcdef",
            registry.ModelUri(
                kind="runs", run_id="0123456789abcdef0123456789abcdef", path="bundle"
            ),
        ),
    ],
)
def test_parse_model_uri(uri: str, expected: registry.ModelUri) -> None:
    assert registry.parse_model_uri(uri) == expected


@pytest.mark.parametrize("uri", ["models:/cxr", "models:/cxr/latest/x", "runs:/"])
def test_parse_model_uri_rejects_malformed(uri: str) -> None:
    with pytest.raises(registry.RegistryError, match="must look like"):
        registry.parse_model_uri(uri)


def test_versions_carry_spec_facts_as_tags(store: str, registered: dict[str, Path]) -> None:
    versions = registry.list_versions("tiny", tracking_uri=store)
    assert [v.version for v in versions] == [1, 2]
    v2 = versions[1]
    assert v2.tags["oncotriage.dataset_fingerprint"] == "sha256:two"
    assert v2.tags["team"] == "ml"
    assert v2.metrics == {"cpm": 0.75, "froc_sens_at_1_fp": 0.9}
    assert v2.thresholds["operating"] == 0.3 and v2.thresholds["urgent"] == 0.8
    assert json.loads(v2.tags["oncotriage.input_shape"]) == [-1, 1, 64, 64]
    assert "synthetic" in v2.tags["oncotriage.intended_use"]
    digest = hashlib.sha256(b"weights-2").hexdigest()
    assert v2.tags["oncotriage.bundle_sha256"] != digest  # digest of the folder, not one file
    assert len(v2.tags["oncotriage.bundle_sha256"]) == 64


def test_resolve_version_downloads_the_registered_bytes(
    store: str, registered: dict[str, Path], tmp_path: Path
) -> None:
    model = registry.resolve("models:/tiny/1", tracking_uri=store, cache_dir=tmp_path)
    assert (model.name, model.version) == ("tiny", 1)
    assert model.onnx_path.read_bytes() == b"weights-1"
    assert model.spec.version == "1" and model.spec.name == "tiny"
    assert model.spec.dataset_fingerprint == "sha256:one"
    assert model.bundle_dir.is_relative_to(tmp_path)
    assert model.label == "tiny/1"
    # a second resolve reuses the download
    again = registry.resolve("models:/tiny/1", tracking_uri=store, cache_dir=tmp_path)
    assert again.bundle_dir == model.bundle_dir


def test_alias_promotion_and_rollback(
    store: str, registered: dict[str, Path], tmp_path: Path
) -> None:
    registry.set_alias("tiny", "champion", 2, tracking_uri=store)
    model = registry.resolve("models:/tiny@champion", tracking_uri=store, cache_dir=tmp_path)
    assert model.version == 2 and model.aliases == ("champion",)
    assert model.onnx_path.read_bytes() == b"weights-2"
    registry.set_alias("tiny", "champion", 1, tracking_uri=store)  # roll back
    model = registry.resolve("models:/tiny@champion", tracking_uri=store, cache_dir=tmp_path)
    assert model.version == 1
    [info] = [m for m in registry.list_models(tracking_uri=store) if m.name == "tiny"]
    assert info.aliases == {"champion": 1} and info.latest_version == 2


def test_recorded_thresholds_and_metrics_apply(
    store: str, registered: dict[str, Path], tmp_path: Path
) -> None:
    registry.record_thresholds(
        "tiny",
        2,
        {"operating": 0.41, "urgent": 0.93, "target_sensitivity": 0.95, "calibrated": True},
        tracking_uri=store,
    )
    registry.record_metrics("tiny", 2, {"study_auc": 0.97}, tracking_uri=store)
    model = registry.resolve("models:/tiny/2", tracking_uri=store, cache_dir=tmp_path)
    assert model.spec.thresholds.operating == pytest.approx(0.41)
    assert model.spec.thresholds.urgent == pytest.approx(0.93)
    info = registry.get_version("tiny", 2, tracking_uri=store)
    assert info.metrics["study_auc"] == pytest.approx(0.97)
    assert info.metrics["cpm"] == pytest.approx(0.75)


def test_resolve_runs_uri_and_local_folder(
    store: str, registered: dict[str, Path], tmp_path: Path
) -> None:
    info = registry.get_version("tiny", 1, tracking_uri=store)
    assert info.run_id is not None
    path = info.source.rsplit("/artifacts/", 1)[1]
    model = registry.resolve(f"runs:/{info.run_id}/{path}", tracking_uri=store, cache_dir=tmp_path)
    assert model.version is None and model.run_id == info.run_id
    assert model.onnx_path.read_bytes() == b"weights-1"
    local = registry.resolve(str(registered["two"]))
    assert local.bundle_dir == registered["two"].resolve() and local.version is None
    assert local.name == "tiny-2d"


def test_unknown_model_and_folder_give_actionable_errors(store: str, tmp_path: Path) -> None:
    with pytest.raises(registry.RegistryError, match="oncotriage models list"):
        registry.resolve("models:/nope@champion", tracking_uri=store, cache_dir=tmp_path)
    with pytest.raises(registry.RegistryError, match="neither"):
        registry.resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(registry.RegistryError, match="model.onnx is missing"):
        registry.resolve(str(tmp_path / "empty"))


def test_registry_runs_without_torch(registered: dict[str, Path], tmp_path: Path) -> None:
    """Serving resolves models with mlflow-skinny and no torch: block torch and try."""
    script = f"""
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "monai", "torchvision"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, _Block())
from oncotriage.models import registry
uri = registry.default_tracking_uri()
v = registry.register_bundle({str(registered["one"])!r}, "no-torch", tracking_uri=uri)
registry.set_alias("no-torch", "champion", v, tracking_uri=uri)
m = registry.resolve("models:/no-torch@champion", tracking_uri=uri)
print(v, m.version, m.onnx_path.read_bytes().decode())
"""
    env = {"ONCOTRIAGE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1", "1", "weights-1"]
    assert (tmp_path / "mlflow.db").is_file()
    assert any((tmp_path / "mlartifacts").rglob("model.onnx"))


_OPEN_AT = """
import sys, time
from oncotriage.models.registry import get_or_create_experiment
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both open the store together
print(get_or_create_experiment("together", sys.argv[1]))
"""


def test_two_processes_opening_a_new_store_together_both_succeed(tmp_path: Path) -> None:
    """Two `train` runs started together on a fresh data dir: MLflow creates the SQLite
    store's tables on first use, and without a lock one of them died on "duplicate column
    name: step" (it did, 3 times in 3, before the lock)."""
    import time

    for attempt in range(3):
        uri = registry.default_tracking_uri(tmp_path / f"store{attempt}")
        start = f"{time.time() + 4:.3f}"  # after both have imported MLflow
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, uri, start],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [run.communicate(timeout=120) for run in runs]
        for run, (_out, err) in zip(runs, results, strict=True):
            assert run.returncode == 0, err[-2000:]
        # one experiment, found by both
        assert results[0][0].strip() == results[1][0].strip() != ""
