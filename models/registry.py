"""The MLflow Model Registry as oncotriage uses it: register, alias, list and resolve bundles.

A *bundle* is a folder holding ``model.onnx`` and ``model_spec.json`` (see
:class:`oncotriage.models.spec.ModelSpec`), the unit the service loads. Registering a
bundle logs the folder as run artifacts and creates a new version of a named registered
model whose source is that folder; the version carries the spec's key facts (input,
pre/post-processing, thresholds, metrics, dataset fingerprint) as tags, so the MLflow UI
and ``oncotriage models list|show`` show them without downloading anything.

Model URIs:

* ``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` (aliases such as ``champion``);
* ``runs:/RUN_ID/PATH`` (e.g. ``runs:/<id>/bundle``, what ``oncotriage train`` logs);
* a local bundle folder.

This module needs only ``mlflow-skinny`` (imported lazily), never torch, so the service
can resolve its model with a serving install. Without ``MLFLOW_TRACKING_URI`` the store is
``sqlite:///<data dir>/mlflow.db`` with artifacts under ``<data dir>/mlartifacts``, where
the data dir is ``ONCOTRIAGE_DATA_DIR`` or ``./var``: no server needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from oncotriage.models.spec import ModelSpec

logger = logging.getLogger(__name__)

SPEC_FILENAME = "model_spec.json"
ONNX_FILENAME = "model.onnx"
REGISTRY_EXPERIMENT = "oncotriage-registry"
"""Experiment of the runs that hold bundles registered without a training run."""

TRAINING_BUNDLE_PATH = "bundle"
"""Artifact path of the exported bundle in a training run (``runs:/<id>/bundle``)."""

TAG_PREFIX = "oncotriage."
METRIC_TAG_PREFIX = "metric."
THRESHOLDS_TAG = "oncotriage.thresholds"
_MAX_TAG_VALUE = 4900  # MLflow's SQL stores keep tag values up to 5000 characters

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w\-]+))/?$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)(?:/(?P<path>.*))?$")


class RegistryError(RuntimeError):
    """A model could not be registered, found or downloaded; the message says what to do."""


def data_dir() -> Path:
    """``ONCOTRIAGE_DATA_DIR`` or ``./var``, absolute (read at call time)."""
    return Path(os.environ.get("ONCOTRIAGE_DATA_DIR") or "./var").resolve()


def default_tracking_uri(base_dir: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the data dir.

    Args:
        base_dir: data dir to use instead of ``ONCOTRIAGE_DATA_DIR``/``./var``.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = (base_dir or data_dir()).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def _local_sqlite_root(tracking_uri: str) -> Path | None:
    """The folder of a ``sqlite:///`` store file; its artifacts live beside it."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: ``<store dir>/mlartifacts`` for SQLite stores.

    For tracking servers ``None`` lets the server decide.
    """
    root = _local_sqlite_root(tracking_uri)
    if root is None:
        return None
    safe = re.sub(r"[^\w.-]", "_", experiment)
    return (root / "mlartifacts" / safe).as_uri()


#: SQLite stores this process has created or checked (under the lock of :func:`get_client`)
_READY_SQLITE_STORES: set[str] = set()


def get_client(tracking_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` whose tracking and registry stores are ``tracking_uri``."""
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RegistryError(
            "MLflow is not installed: pip install 'oncotriage[serve]' (mlflow-skinny) "
            "or 'oncotriage[train]'"
        ) from exc
    uri = tracking_uri or default_tracking_uri()
    root = _local_sqlite_root(uri)
    if root is None:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    root.mkdir(parents=True, exist_ok=True)
    if uri in _READY_SQLITE_STORES:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    # MLflow creates or migrates a SQLite store's tables when a client first opens it; two
    # processes doing that at once on a new store (two `train` runs started together)
    # collide ("duplicate column name: step") and one dies. One at a time, under a lock.
    import fcntl

    db = Path(uri.removeprefix("sqlite:///")).resolve()
    with (db.parent / f"{db.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # the tracking tables
            client.search_registered_models(max_results=1)  # and the registry's
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY_SQLITE_STORES.add(uri)
    return client


def get_or_create_experiment(name: str, tracking_uri: str | None = None) -> str:
    """The id of experiment ``name``, created (with a local artifact folder) if missing."""
    uri = tracking_uri or default_tracking_uri()
    client = get_client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(
        client.create_experiment(name, artifact_location=default_artifact_location(uri, name))
    )


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version, as the registry describes it (nothing downloaded).

    Attributes:
        name: registered model name.
        version: version number (1, 2, ...).
        aliases: aliases pointing at this version (``champion``...).
        run_id: MLflow run that holds the bundle.
        source: artifact URI of the bundle folder.
        created: creation time (UTC).
        description: free text.
        tags: all version tags.
    """

    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    source: str
    created: datetime
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def metrics(self) -> dict[str, float]:
        """Evaluation metrics recorded on the version (``metric.<name>`` tags)."""
        out: dict[str, float] = {}
        for key, value in self.tags.items():
            if key.startswith(METRIC_TAG_PREFIX):
                try:
                    out[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
                except ValueError:
                    continue
        return out

    @property
    def thresholds(self) -> dict[str, Any]:
        """Triage thresholds recorded on the version (empty when never calibrated)."""
        raw = self.tags.get(THRESHOLDS_TAG)
        return dict(json.loads(raw)) if raw else {}


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model: its name, newest version and aliases (alias -> version)."""

    name: str
    latest_version: int | None
    aliases: dict[str, int]
    description: str = ""


@dataclass(frozen=True)
class ResolvedModel:
    """A model located and downloaded: ready for ``DetectionPipeline.from_bundle``.

    Attributes:
        name: registered name, or the spec's name for a local folder or run.
        version: registered version, ``None`` for a local folder or run.
        bundle_dir: local folder with ``model.onnx`` and ``model_spec.json``.
        spec: the bundle's spec, with thresholds recorded on the version applied.
        uri: the URI that was resolved.
        run_id: MLflow run holding the bundle, when known.
        aliases: aliases of the version.
    """

    name: str
    version: int | None
    bundle_dir: Path
    spec: ModelSpec
    uri: str
    run_id: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def onnx_path(self) -> Path:
        return self.bundle_dir / ONNX_FILENAME

    @property
    def label(self) -> str:
        """``NAME/VERSION`` for results and logs, or the name alone when unregistered."""
        return f"{self.name}/{self.version}" if self.version is not None else self.name


# ----------------------------------------------------------------------------- specs


def load_spec(bundle_dir: Path) -> ModelSpec:
    """Read ``model_spec.json`` of a bundle folder.

    Raises:
        RegistryError: when the folder is not a bundle or its spec is invalid.
    """
    from oncotriage.models.spec import ModelSpec

    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / ONNX_FILENAME).is_file():
        raise RegistryError(
            f"{bundle_dir} is not a model bundle: {ONNX_FILENAME} is missing "
            "(make one with `oncotriage export` or `oncotriage train`)"
        )
    try:
        return ModelSpec.load(bundle_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise RegistryError(f"{bundle_dir} is not a usable model bundle: {exc}") from exc


def save_spec(bundle_dir: Path, spec: ModelSpec) -> Path:
    """Write ``spec`` as the bundle's ``model_spec.json`` (atomically) and return its path."""
    path = Path(bundle_dir) / SPEC_FILENAME
    staging = Path(tempfile.mkdtemp(prefix=".spec-", dir=bundle_dir))
    try:
        spec.save(staging).replace(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _clip(value: str) -> str:
    return value if len(value) <= _MAX_TAG_VALUE else value[: _MAX_TAG_VALUE - 3] + "..."


def _json(value: Any) -> str:
    return _clip(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))


def spec_tags(spec: ModelSpec) -> dict[str, str]:
    """Version tags describing a spec: its key facts, searchable in the MLflow UI."""
    data = json.loads(spec.model_dump_json())
    tags: dict[str, str] = {}
    for key, value in data.items():
        if key == "metrics" and isinstance(value, Mapping):
            for metric, number in value.items():
                if isinstance(number, int | float):
                    tags[f"{METRIC_TAG_PREFIX}{metric}"] = repr(float(number))
            continue
        if value is None or key in ("name", "version"):  # the registry's own, not the spec's
            continue
        tags[f"{TAG_PREFIX}{key}"] = value if isinstance(value, str) else _json(value)
    tags[f"{TAG_PREFIX}reads"] = _clip(spec.reads.describe())  # also for older specs
    return tags


def _bundle_digest(bundle_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(bundle_dir).rglob("*") if p.is_file()):
        digest.update(path.relative_to(bundle_dir).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writing


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except Exception:  # MlflowException: RESOURCE_DOES_NOT_EXIST, or a malformed id
        return False
    return True


def register_bundle(
    bundle_dir: Path,
    name: str,
    *,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> int:
    """Register a bundle folder as a new version of model ``name``.

    The folder is logged as artifacts of ``run_id`` (default: the spec's training run when
    it exists in this store, else a new run in the ``oncotriage-registry`` experiment) under
    ``registered/<content digest>``, and that artifact folder becomes the version's source.

    Args:
        bundle_dir: folder with ``model.onnx`` and ``model_spec.json``.
        name: registered model name (created if missing).
        tracking_uri: MLflow store; default :func:`default_tracking_uri`.
        run_id: run to attach the bundle to.
        tags: extra version tags.
        description: version description.

    Returns:
        the new version number.
    """
    from mlflow.exceptions import MlflowException

    bundle_dir = Path(bundle_dir)
    spec = load_spec(bundle_dir)
    uri = tracking_uri or default_tracking_uri()
    client = get_client(uri)
    own_run = False
    if run_id is None:
        candidate = getattr(spec, "training_run_id", None)
        if candidate and _run_exists(client, str(candidate)):
            run_id = str(candidate)
    elif not _run_exists(client, run_id):
        raise RegistryError(f"run {run_id} does not exist in the tracking store {uri}")
    if run_id is None:
        experiment_id = get_or_create_experiment(REGISTRY_EXPERIMENT, uri)
        run = client.create_run(experiment_id, run_name=f"register-{name}")
        run_id = run.info.run_id
        own_run = True
    digest = _bundle_digest(bundle_dir)
    artifact_path = f"registered/{digest[:16]}"
    try:
        client.log_artifacts(run_id, str(bundle_dir), artifact_path=artifact_path)
        if own_run:
            client.log_param(run_id, "bundle_sha256", digest)
            client.set_tag(run_id, "oncotriage.registered_model", name)
    finally:
        if own_run:
            client.set_terminated(run_id)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=getattr(spec, "description", None) or None)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version_tags = spec_tags(spec)
    version_tags["oncotriage.bundle_sha256"] = digest
    version_tags.update(dict(tags or {}))
    version = client.create_model_version(
        name=name,
        source=source,
        run_id=run_id,
        tags=version_tags,
        description=description,
    )
    logger.info("registered %s version %s from %s", name, version.version, bundle_dir)
    return int(version.version)


def set_alias(name: str, alias: str, version: int, *, tracking_uri: str | None = None) -> None:
    """Point ``alias`` (e.g. ``champion``) of model ``name`` at ``version``.

    Rolling back is pointing the alias at the previous version.
    """
    client = get_client(tracking_uri)
    get_version(name, version, tracking_uri=tracking_uri)  # a clear error if it is missing
    client.set_registered_model_alias(name, alias, str(int(version)))


def delete_alias(name: str, alias: str, *, tracking_uri: str | None = None) -> None:
    get_client(tracking_uri).delete_registered_model_alias(name, alias)


def set_version_tags(
    name: str, version: int, tags: Mapping[str, str], *, tracking_uri: str | None = None
) -> None:
    """Add or replace tags on one version (metrics from ``evaluate``, thresholds...)."""
    client = get_client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(int(version)), key, _clip(str(value)))


def record_metrics(
    name: str, version: int, metrics: Mapping[str, float], *, tracking_uri: str | None = None
) -> None:
    """Store evaluation metrics on a version as ``metric.<name>`` tags."""
    set_version_tags(
        name,
        version,
        {f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()},
        tracking_uri=tracking_uri,
    )


def record_thresholds(
    name: str, version: int, thresholds: Mapping[str, Any], *, tracking_uri: str | None = None
) -> None:
    """Store calibrated thresholds on a version; :func:`resolve` applies them to the spec.

    Args:
        thresholds: fields of :class:`oncotriage.models.spec.Thresholds`.
    """
    set_version_tags(
        name, version, {THRESHOLDS_TAG: _json(dict(thresholds))}, tracking_uri=tracking_uri
    )


# ----------------------------------------------------------------------------- reading


def _version_info(mv: Any) -> ModelVersionInfo:
    created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC)
    return ModelVersionInfo(
        name=mv.name,
        version=int(mv.version),
        aliases=tuple(sorted(getattr(mv, "aliases", []) or [])),
        run_id=mv.run_id or None,
        source=mv.source,
        created=created,
        description=mv.description or "",
        tags=dict(mv.tags or {}),
    )


def get_version(
    name: str, version: int | str, *, tracking_uri: str | None = None
) -> ModelVersionInfo:
    """One version by number, or by alias when ``version`` is not a number.

    Raises:
        RegistryError: when the model, version or alias does not exist.
    """
    from mlflow.exceptions import MlflowException

    client = get_client(tracking_uri)
    try:
        if isinstance(version, int) or str(version).isdigit():
            mv = client.get_model_version(name, str(int(version)))
        else:
            mv = client.get_model_version_by_alias(name, str(version))
    except MlflowException as exc:
        known = ", ".join(m.name for m in list_models(tracking_uri=tracking_uri)) or "none"
        raise RegistryError(
            f"model {name!r} has no version or alias {version!r} in "
            f"{tracking_uri or default_tracking_uri()} (registered models: {known}); "
            "see `oncotriage models list`"
        ) from exc
    info = _version_info(mv)
    if not info.aliases:
        # get_model_version omits aliases on some stores: take them from the model
        model_aliases = _aliases(client, name)
        info = ModelVersionInfo(
            **{
                **info.__dict__,
                "aliases": tuple(sorted(a for a, v in model_aliases.items() if v == info.version)),
            }
        )
    return info


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    model = client.get_registered_model(name)
    raw = getattr(model, "aliases", {}) or {}
    return {str(alias): int(version) for alias, version in dict(raw).items()}


def list_versions(name: str, *, tracking_uri: str | None = None) -> list[ModelVersionInfo]:
    """Every version of ``name``, oldest first, with aliases and tags."""
    client = get_client(tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    infos = [_version_info(mv) for mv in versions]
    aliases = _aliases(client, name) if infos else {}
    out = []
    for info in sorted(infos, key=lambda i: i.version):
        names = tuple(sorted(a for a, v in aliases.items() if v == info.version))
        out.append(ModelVersionInfo(**{**info.__dict__, "aliases": names}))
    return out


def list_models(*, tracking_uri: str | None = None) -> list[RegisteredModelInfo]:
    """Every registered model, by name."""
    client = get_client(tracking_uri)
    out = []
    for model in client.search_registered_models():
        latest = [int(v.version) for v in (model.latest_versions or [])]
        raw = getattr(model, "aliases", {}) or {}
        out.append(
            RegisteredModelInfo(
                name=model.name,
                latest_version=max(latest) if latest else None,
                aliases={str(a): int(v) for a, v in dict(raw).items()},
                description=model.description or "",
            )
        )
    return sorted(out, key=lambda m: m.name)


@dataclass(frozen=True)
class ModelUri:
    """A parsed model reference (see the module docstring for the forms)."""

    kind: str  # "models", "runs" or "local"
    name: str | None = None
    version: int | None = None
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None


def parse_model_uri(uri: str) -> ModelUri:
    """Parse ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/ID/PATH`` or a folder.

    A bare 32-character MLflow run id means that training run's bundle (``runs:/ID/bundle``).

    Raises:
        RegistryError: for a ``models:``/``runs:`` URI of another form.
    """
    if uri.startswith("models:"):
        match = _MODELS_URI.match(uri)
        if not match:
            raise RegistryError(
                f"model URI {uri!r} must look like models:/NAME/VERSION or models:/NAME@ALIAS"
            )
        version = match.group("version")
        return ModelUri(
            kind="models",
            name=match.group("name"),
            version=int(version) if version else None,
            alias=match.group("alias"),
        )
    if uri.startswith("runs:"):
        match = _RUNS_URI.match(uri)
        if not match:
            raise RegistryError(f"run URI {uri!r} must look like runs:/RUN_ID/bundle")
        return ModelUri(kind="runs", run_id=match.group("run_id"), path=match.group("path") or "")
    if _RUN_ID.match(uri) and not Path(uri).exists():
        return ModelUri(kind="runs", run_id=uri, path=TRAINING_BUNDLE_PATH)
    return ModelUri(kind="local", path=uri)


def _cache_root(tracking_uri: str, cache_dir: Path | None) -> Path:
    store = hashlib.sha256(tracking_uri.encode()).hexdigest()[:10]
    return Path(cache_dir or data_dir() / "model-cache") / store


def _download(artifact_uri: str, target: Path, tracking_uri: str, *, refresh: bool = False) -> Path:
    """Download ``artifact_uri`` (a folder) to ``target`` once; reuse it afterwards."""
    import mlflow.artifacts

    done = target / ".complete"
    if done.is_file() and not refresh:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri, dst_path=str(staging), tracking_uri=tracking_uri
            )
        )
        (local / ".complete").write_text(artifact_uri + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        local.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _apply_thresholds(spec: ModelSpec, thresholds: Mapping[str, Any]) -> ModelSpec:
    if not thresholds:
        return spec
    merged = {**json.loads(spec.model_dump_json())["thresholds"], **thresholds}
    return spec.model_copy(update={"thresholds": type(spec.thresholds).model_validate(merged)})


def resolve(
    uri: str | Path,
    *,
    tracking_uri: str | None = None,
    cache_dir: Path | None = None,
    refresh: bool = False,
) -> ResolvedModel:
    """Find a model and make its bundle available locally.

    Args:
        uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/PATH`` or a
            local bundle folder.
        tracking_uri: MLflow store; default :func:`default_tracking_uri`.
        cache_dir: where downloads are kept; default ``<data dir>/model-cache``. Registered
            versions are immutable, so a version is downloaded once.
        refresh: download again even when cached.

    Returns:
        the resolved model; for registered versions, thresholds recorded on the version
        with ``oncotriage calibrate`` are applied to ``spec``.

    Raises:
        RegistryError: when the model cannot be found or is not a bundle.
    """
    text = str(uri)
    parsed = parse_model_uri(text)
    if parsed.kind == "local":
        bundle_dir = Path(text).expanduser().resolve()
        if not bundle_dir.is_dir():
            raise RegistryError(
                f"{text!r} is neither a models:/ or runs:/ URI nor an existing bundle folder"
            )
        spec = load_spec(bundle_dir)
        return ResolvedModel(
            name=str(getattr(spec, "name", bundle_dir.name)),
            version=None,
            bundle_dir=bundle_dir,
            spec=spec,
            uri=text,
            run_id=getattr(spec, "training_run_id", None),
        )
    store = tracking_uri or default_tracking_uri()
    root = _cache_root(store, cache_dir)
    if parsed.kind == "runs":
        assert parsed.run_id is not None
        rel = (parsed.path or "").strip("/")
        target = root / "runs" / parsed.run_id / (rel.replace("/", "__") or "_root")
        try:
            source = f"runs:/{parsed.run_id}/{rel}" if rel else f"runs:/{parsed.run_id}"
            bundle_dir = _download(source, target, store, refresh=refresh)
        except Exception as exc:
            raise RegistryError(f"cannot download {text} from {store}: {exc}") from exc
        spec = load_spec(bundle_dir)
        return ResolvedModel(
            name=str(getattr(spec, "name", parsed.run_id)),
            version=None,
            bundle_dir=bundle_dir,
            spec=spec,
            uri=text,
            run_id=parsed.run_id,
        )
    assert parsed.name is not None
    info = get_version(
        parsed.name,
        parsed.version if parsed.version is not None else str(parsed.alias),
        tracking_uri=store,
    )
    target = root / "models" / info.name / str(info.version)
    try:
        bundle_dir = _download(info.source, target, store, refresh=refresh)
    except Exception as exc:
        raise RegistryError(
            f"cannot download {info.uri} (source {info.source}) from {store}: {exc}"
        ) from exc
    spec = _apply_thresholds(load_spec(bundle_dir), info.thresholds)
    spec = spec.model_copy(update={"name": info.name, "version": str(info.version)})
    return ResolvedModel(
        name=info.name,
        version=info.version,
        bundle_dir=bundle_dir,
        spec=spec,
        uri=text,
        run_id=info.run_id,
        aliases=info.aliases,
    )
