"""Write registered detector versions into a Triton model repository.

Layout (Triton model versions are MLflow model versions)::

    <repository>/<model name>/config.pbtxt            # version_policy lists the live versions
    <repository>/<model name>/<version>/model.onnx
    <repository>/<model name>/<version>/model_spec.json  # pre/post-processing of that version
    <repository>/<model name>/<version>/model.py         # portable flavour only

A version folder is written under a temporary name and renamed into place, so Triton never sees
half a model; ``config.pbtxt`` is replaced atomically. Several processes (API and worker
replicas) may promote at once: a lock file beside ``config.pbtxt`` serialises them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncotriage.serving.triton.config import (
    DEFAULT_PREFERRED_BATCH_SIZES,
    Flavor,
    TritonModelDescription,
    flavor_of,
    onnx_io,
    parse_model_config,
)

if TYPE_CHECKING:
    from oncotriage.models.spec import ModelSpec

__all__ = [
    "ONNX_FILENAME",
    "SPEC_FILENAME",
    "RepositoryConflictError",
    "WrittenModel",
    "live_versions",
    "next_versions",
    "read_model_config",
    "write_model",
]

logger = logging.getLogger(__name__)

ONNX_FILENAME = "model.onnx"
SPEC_FILENAME = "model_spec.json"
_LOCK_FILENAME = ".oncotriage.lock"
_PYTHON_MODEL = Path(__file__).with_name("python_model.py")


class RepositoryConflictError(ValueError):
    """A version folder already holds a different ``model.onnx`` than the one being written."""


@dataclass(frozen=True)
class WrittenModel:
    """What :func:`write_model` put into the repository.

    Attributes:
        repository: the model repository root.
        model_name: Triton model name.
        version: the version just written (now the current one).
        flavor: ``gpu`` or ``portable``.
        versions: live versions in promotion order (``version`` last), as in ``config.pbtxt``.
        description: the description both config flavours are rendered from.
        config_text: the ``config.pbtxt`` written.
    """

    repository: Path
    model_name: str
    version: int
    flavor: Flavor
    versions: tuple[int, ...]
    description: TritonModelDescription
    config_text: str

    @property
    def model_dir(self) -> Path:
        return self.repository / self.model_name

    @property
    def config_path(self) -> Path:
        return self.model_dir / "config.pbtxt"


def read_model_config(repo_dir: Path, model_name: str) -> Any | None:
    """The parsed ``config.pbtxt`` of ``model_name``, or ``None`` if it has none yet."""
    path = Path(repo_dir) / model_name / "config.pbtxt"
    if not path.is_file():
        return None
    return parse_model_config(path.read_text(encoding="utf-8"))


def live_versions(repo_dir: Path, model_name: str) -> tuple[int, ...]:
    """Versions listed in the model's ``version_policy``, in promotion order (current last)."""
    config = read_model_config(repo_dir, model_name)
    if config is None or not config.version_policy.HasField("specific"):
        return ()
    return tuple(int(v) for v in config.version_policy.specific.versions)


def next_versions(previous: Sequence[int], new: int, keep: int = 2) -> tuple[int, ...]:
    """Live versions after promoting ``new``: the last ``keep`` in promotion order.

    Promoting a version already live (a rollback to the previous one) moves it to the end.

    >>> next_versions([1, 2], 3)
    (2, 3)
    >>> next_versions([2, 3], 2)
    (3, 2)
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    order = [v for v in previous if v != new] + [new]
    return tuple(order[-keep:])


@contextlib.contextmanager
def model_lock(repo_dir: Path, model_name: str) -> Iterator[None]:
    """Exclusive lock over one model's folder, shared by every process on this filesystem."""
    model_dir = Path(repo_dir) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / _LOCK_FILENAME, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_model(
    repo_dir: Path,
    bundle_dir: Path,
    spec: ModelSpec | None = None,
    *,
    model_name: str,
    version: int,
    flavor: Flavor | str = Flavor.PORTABLE,
    max_batch_size: int = 8,
    preferred_batch_sizes: Sequence[int] = DEFAULT_PREFERRED_BATCH_SIZES,
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    dynamic_batching: bool = True,
    keep_versions: int = 2,
    versions: Sequence[int] | None = None,
    trt_precision: str | None = "FP16",
    trt_engine_cache_path: str | None = None,
    intra_op_threads: int = 0,
) -> WrittenModel:
    """Write ``bundle_dir``'s ``model.onnx`` as ``version`` of ``model_name`` and make it current.

    Args:
        repo_dir: Triton model repository root (created if missing).
        bundle_dir: an exported model bundle: ``model.onnx`` and ``model_spec.json``.
        spec: the bundle's spec; written as ``model_spec.json`` when the bundle lacks that file.
        model_name: Triton model name (use the MLflow registered-model name).
        version: Triton version number (the MLflow model version).
        flavor: ``gpu`` (native onnxruntime backend, TensorRT FP16) or ``portable`` (ONNX Runtime
            in a Python-backend model, CPU).
        max_batch_size, preferred_batch_sizes, max_queue_delay_us, dynamic_batching: Triton
            batching; ``dynamic_batching=False`` runs every request as it comes.
        instances: model instances (per GPU for ``gpu``).
        keep_versions: how many versions stay loaded (the new one and the previous ones, in
            promotion order), so requests pinned to the previous version finish on it.
        versions: the exact live versions instead (must end with ``version``).
        trt_precision, trt_engine_cache_path: TensorRT settings of the ``gpu`` flavour; the
            cache path defaults to ``/engine_cache/<model_name>`` inside the Triton container.
        intra_op_threads: ONNX Runtime threads per instance (0 = its default).

    Returns:
        What was written, including the ``config.pbtxt`` text.

    Raises:
        FileNotFoundError: if ``bundle_dir`` has no ``model.onnx``.
        RepositoryConflictError: if the version folder exists with a different ``model.onnx``.
        ValueError: for inconsistent batching settings or an ONNX model Triton cannot batch.
    """
    repo_dir, bundle_dir, flavor = Path(repo_dir), Path(bundle_dir), Flavor(flavor)
    onnx_path = bundle_dir / ONNX_FILENAME
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{bundle_dir} holds no {ONNX_FILENAME}: is it an exported bundle?")
    if version < 1:
        raise ValueError(f"Triton versions start at 1, got {version}")
    inputs, outputs = onnx_io(onnx_path, batched=max_batch_size > 0)
    with model_lock(repo_dir, model_name):
        model_dir = repo_dir / model_name
        existing = read_model_config(repo_dir, model_name)
        if existing is not None and flavor_of(existing) is not flavor:
            raise ValueError(
                f"{model_dir} is a {flavor_of(existing).value} repository; write the "
                f"{flavor.value} flavour into another repository folder"
            )
        if versions is None:
            live = next_versions(live_versions(repo_dir, model_name), version, keep_versions)
        else:
            live = tuple(int(v) for v in versions)
            if not live or live[-1] != version:
                raise ValueError(f"versions {live} must end with the version written ({version})")
        description = TritonModelDescription(
            name=model_name,
            inputs=inputs,
            outputs=outputs,
            versions=live,
            max_batch_size=max_batch_size,
            dynamic_batching=dynamic_batching,
            preferred_batch_sizes=tuple(preferred_batch_sizes),
            max_queue_delay_us=max_queue_delay_us,
            instances=instances,
            trt_precision=trt_precision,
            trt_engine_cache_path=trt_engine_cache_path or f"/engine_cache/{model_name}",
            intra_op_threads=intra_op_threads,
        )
        text = description.render(flavor)
        missing = [v for v in live if v != version and not (model_dir / str(v)).is_dir()]
        if missing:
            raise ValueError(
                f"versions {missing} of {model_name!r} are not in {repo_dir}; write them first "
                "or pass versions= listing only present ones"
            )
        _write_version(model_dir, version, onnx_path, bundle_dir, spec, flavor)
        _atomic_write(model_dir / "config.pbtxt", text)
    logger.info(
        "wrote %s version %d (%s flavour) to %s; live versions %s",
        model_name,
        version,
        flavor.value,
        repo_dir,
        list(live),
    )
    return WrittenModel(repo_dir, model_name, version, flavor, live, description, text)


def set_live_versions(repo_dir: Path, model_name: str, versions: Sequence[int]) -> str:
    """Rewrite only the ``version_policy`` of an existing model (e.g. to retire a version).

    Returns:
        The new ``config.pbtxt`` text.
    """
    from oncotriage.serving.triton.config import render_model_config

    with model_lock(repo_dir, model_name):
        config = read_model_config(repo_dir, model_name)
        if config is None:
            raise FileNotFoundError(f"{Path(repo_dir) / model_name} has no config.pbtxt")
        missing = [v for v in versions if not (Path(repo_dir) / model_name / str(v)).is_dir()]
        if not versions or missing:
            raise ValueError(
                f"versions {list(versions)} must be non-empty and present ({missing=})"
            )
        config.version_policy.specific.versions[:] = list(versions)
        text = render_model_config(config)
        _atomic_write(Path(repo_dir) / model_name / "config.pbtxt", text)
    return text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_version(
    model_dir: Path,
    version: int,
    onnx_path: Path,
    bundle_dir: Path,
    spec: ModelSpec | None,
    flavor: Flavor,
) -> None:
    target = model_dir / str(version)
    if target.is_dir():
        present = target / ONNX_FILENAME
        if not present.is_file() or _sha256(present) != _sha256(onnx_path):
            raise RepositoryConflictError(
                f"{target} already holds a different {ONNX_FILENAME}; registry versions are "
                "immutable, so this repository belongs to another registry or model name"
            )
        if flavor is Flavor.PORTABLE and not (target / "model.py").is_file():
            _atomic_write(target / "model.py", _PYTHON_MODEL.read_text(encoding="utf-8"))
        return
    staging = model_dir / f".incoming-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copy2(onnx_path, staging / ONNX_FILENAME)
        spec_path = bundle_dir / SPEC_FILENAME
        if spec_path.is_file():
            shutil.copy2(spec_path, staging / SPEC_FILENAME)
        elif spec is not None and hasattr(spec, "model_dump_json"):
            (staging / SPEC_FILENAME).write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        if flavor is Flavor.PORTABLE:
            shutil.copy2(_PYTHON_MODEL, staging / "model.py")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
