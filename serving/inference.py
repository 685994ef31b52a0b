"""The model the service scores with: resolved from the registry, swapped atomically.

:class:`ModelManager` resolves ``settings.model_uri`` (``models:/NAME@ALIAS`` by
default) through :mod:`oncotriage.models.registry`, builds a
:class:`~oncotriage.models.pipeline.DetectionPipeline` around a network runner, and
re-resolves the alias every ``model_poll_interval_s``: when the alias moves (promotion or
rollback) the new version is loaded beside the old one and swapped in with one reference
assignment. A job takes :meth:`ModelManager.current` once and keeps that
:class:`LoadedModel` to the end, so it finishes on the version it started with and
records that version.

Runners are pluggable: ``runner_factory(resolved) -> NetworkRunner``. The default is ONNX
Runtime in-process; ``inference_backend="triton"`` uses
``oncotriage.serving.triton.backend.make_runner_factory(settings)``;
``inference_backend="openvino"`` uses :mod:`oncotriage.serving.openvino_runner`;
``settings.runner_factory``
(``"module:attribute"``, a callable taking the settings) overrides them.

First run: when the registry has no model of the URI's name at all, the demo bundle in
``models/demo/`` is registered as version 1 and given the URI's alias.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncotriage.serving.cpus import cpu_flags, default_intra_op_threads
from oncotriage.serving.settings import Settings
from oncotriage.serving.thread_priority import temporary_native_thread_name

if TYPE_CHECKING:
    from oncotriage.models.pipeline import DetectionPipeline, NetworkRunner
    from oncotriage.models.registry import ResolvedModel
    from oncotriage.models.spec import ModelSpec

logger = logging.getLogger(__name__)

RunnerFactory = Callable[["ResolvedModel"], "NetworkRunner"]

#: Where the bundled demo model lives (``models/demo`` of the source tree).
DEMO_BUNDLE_DIRNAME = "demo"


#: After a failed load, how long ``current()`` answers with that failure before trying again
RETRY_LOAD_S = 1.0


class ModelUnavailableError(RuntimeError):
    """No model can be loaded right now; the message says why. Workers wait (claiming
    nothing) until one loads, so an outage does not use up the studies' attempts."""


class BackendUnavailableError(RuntimeError):
    """The inference backend cannot be reached right now (e.g. Triton restarting).

    A runner raises this (rather than any other error) to have the job put back in the
    queue with backoff without using up one of its attempts.
    """


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to score: what a job pins for its whole run."""

    name: str
    version: str
    pipeline: DetectionPipeline
    resolved: ResolvedModel

    @property
    def spec(self) -> ModelSpec:
        return self.pipeline.spec

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def precision(self) -> str:
        return self.pipeline.spec.precision


@dataclass(frozen=True)
class PrecisionChoice:
    """Which precision of a model version the service runs, and why.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``int8``.
        version: the version served (a variant's own version when one was chosen).
        base_version: the version the alias names (the variant's base).
        reason: why this one, in words (logged and shown by ``/readyz``).
    """

    precision: str
    version: str
    base_version: str
    reason: str


def demo_bundle_dir(dirname: str = DEMO_BUNDLE_DIRNAME) -> Path:
    """``models/demo`` (or ``models/<dirname>``, beside :mod:`oncotriage.models`)."""
    import oncotriage.models

    return Path(oncotriage.models.__file__).resolve().parent / dirname


def _cpu_flags() -> frozenset[str]:
    return cpu_flags()


def ort_intra_op_threads(settings: Settings, model_threads: int = 1) -> int | None:
    """ONNX Runtime's intra-op threads for a session that ``model_threads`` workers share:
    the setting, else :func:`~oncotriage.serving.cpus.default_intra_op_threads`; None (0 in
    the setting) lets ONNX Runtime choose."""
    threads = settings.ort_intra_op_threads
    if threads is None:
        return default_intra_op_threads(model_threads, settings.reserved_cores)
    return threads or None


def ort_runner_factory(settings: Settings, model_threads: int = 1) -> RunnerFactory:
    """ONNX Runtime in this process (CPU unless a GPU build of onnxruntime is installed);
    ``model_threads`` workers share each session."""
    from oncotriage.models.pipeline import OrtRunner, available_providers

    threads = ort_intra_op_threads(settings, model_threads)
    logger.info(
        "ONNX Runtime sessions: %s intra-op thread(s) each, %d worker(s) sharing them",
        threads if threads is not None else "ONNX Runtime's default",
        model_threads,
    )

    def factory(resolved: ResolvedModel) -> NetworkRunner:
        return OrtRunner(
            resolved.onnx_path,
            providers=available_providers(),
            intra_op_threads=threads,
        )

    return factory


def _import_attribute(dotted: str) -> Any:
    module_name, _, attribute = dotted.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"runner_factory must look like 'package.module:function', got {dotted!r}")
    return getattr(importlib.import_module(module_name), attribute)


def make_runner_factory(settings: Settings, model_threads: int = 1) -> RunnerFactory:
    """The runner factory the settings ask for (see the module docstring); ``model_threads``
    workers of this process share each runner."""
    if settings.runner_factory:
        return _import_attribute(settings.runner_factory)(settings)
    if settings.inference_backend == "triton":
        backend = importlib.import_module("oncotriage.serving.triton.backend")
        return backend.make_runner_factory(settings)
    if settings.inference_backend == "openvino":
        from oncotriage.serving.openvino_runner import make_runner_factory as openvino_factory

        return openvino_factory(settings, model_threads)
    return ort_runner_factory(settings, model_threads)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two first-run services must not both register)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ModelManager:
    """Holds the current model version and follows the registry alias.

    Args:
        settings: ``model_uri``, ``mlflow_tracking_uri``, ``data_dir``,
            ``model_poll_interval_s``, ``register_demo_model`` and the backend choice.
        runner_factory: overrides :func:`make_runner_factory`.
        model_threads: workers of this process that share the model (default
            ``settings.embedded_workers``, at least 1); sizes ONNX Runtime's thread pool.
        uri: the model to follow (default ``settings.model_uri``; one route of
            ``settings.models`` each, see :class:`oncotriage.serving.routing.ModelSet`).
        demo_bundle: bundle registered on first run (default ``settings.demo_model_dir`` or
            ``models/demo``).
        cpu_flags: this CPU's instruction-set flags (default: read from ``/proc/cpuinfo``);
            decide which reduced-precision variants it may run.
        triages: its scores set priorities (default). Such a manager refuses a version with
            uncalibrated thresholds unless ``settings.allow_uncalibrated_models``; a shadow
            (challenger) manager, whose scores decide nothing, passes ``False``.
    """

    def __init__(
        self,
        settings: Settings,
        runner_factory: RunnerFactory | None = None,
        *,
        model_threads: int | None = None,
        uri: str | None = None,
        demo_bundle: Path | None = None,
        cpu_flags: Iterable[str] | None = None,
        triages: bool = True,
    ) -> None:
        self.settings = settings
        self.triages = triages
        self.cpu_flags = frozenset(cpu_flags) if cpu_flags is not None else _cpu_flags()
        self.precision_choice: PrecisionChoice | None = None
        self.uri = uri or settings.model_uri
        self.demo_bundle = demo_bundle
        self._runner_factory = runner_factory
        self.model_threads = max(1, model_threads or settings.embedded_workers)
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_checked: float | None = None

    # -- resolution ----------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        from oncotriage.models.registry import default_tracking_uri

        return self.settings.mlflow_tracking_uri or default_tracking_uri(
            base_dir=self.settings.data_dir
        )

    @property
    def cache_dir(self) -> Path:
        return self.settings.data_dir / "model-cache"

    def _register_demo_if_missing(self) -> None:
        """Register ``models/demo`` when the registry has never heard of the model's name."""
        from oncotriage.models import registry

        parsed = registry.parse_model_uri(self.uri)
        if parsed.kind != "models" or parsed.name is None or not self.settings.register_demo_model:
            return
        uri = self.tracking_uri
        with _file_lock(self.settings.data_dir / ".model-registration.lock"):
            known = {model.name for model in registry.list_models(tracking_uri=uri)}
            if parsed.name in known:
                return
            bundle = self.demo_bundle or self.settings.demo_model_dir or demo_bundle_dir()
            if not (bundle / "model.onnx").is_file():
                raise ModelUnavailableError(
                    f"model {parsed.name!r} is not registered in {uri} and the demo bundle "
                    f"{bundle} is missing; register a model (oncotriage register) or point "
                    "ONCOTRIAGE_MODEL_URI at a bundle folder"
                )
            version = registry.register_bundle(
                bundle,
                parsed.name,
                tracking_uri=uri,
                description="Demo model trained on synthetic images; not for clinical use.",
            )
            registry.set_alias(parsed.name, parsed.alias or "champion", version, tracking_uri=uri)
            logger.info(
                "first run: registered the demo model as %s version %d (alias %s)",
                parsed.name,
                version,
                parsed.alias or "champion",
            )

    def resolve(self) -> ResolvedModel:
        """Where ``model_uri`` points now (registering the demo model on first run), or the
        fastest accepted reduced-precision variant of that version this CPU runs
        (:meth:`choose_precision`)."""
        from oncotriage.models import registry

        self._register_demo_if_missing()
        try:
            resolved = registry.resolve(
                self.uri, tracking_uri=self.tracking_uri, cache_dir=self.cache_dir
            )
            chosen, choice = self.choose_precision(resolved)
        except registry.RegistryError as error:
            raise ModelUnavailableError(str(error)) from error
        thresholds = resolved.spec.thresholds
        if (
            self.triages
            and not thresholds.calibrated
            and not self.settings.allow_uncalibrated_models
        ):
            version = resolved.version if resolved.version is not None else resolved.spec.version
            raise ModelUnavailableError(
                f"model {resolved.name} version {version} ({self.uri}) has placeholder triage "
                f"thresholds (operating {thresholds.operating:g}, urgent {thresholds.urgent:g}) "
                "that were never calibrated, so its 'routine' would mean nothing: run "
                "`oncotriage calibrate` on it with labelled validation studies, or set "
                "ONCOTRIAGE_ALLOW_UNCALIBRATED_MODELS=true to serve it anyway. Its studies wait."
            )
        if choice != self.precision_choice:
            logger.info(
                "model %s: serving version %s at %s (%s)",
                resolved.name,
                choice.version,
                choice.precision,
                choice.reason,
            )
            self.precision_choice = choice
        return chosen

    def choose_precision(self, resolved: ResolvedModel) -> tuple[ResolvedModel, PrecisionChoice]:
        """The fastest accepted variant of ``resolved`` that this backend and CPU run
        (:data:`~oncotriage.models.precision.SPEED_ORDER`), else ``resolved`` itself at fp32.

        Variants are the registered versions tagged with ``resolved``'s version as their base
        and accepted by ``oncotriage optimize``; bf16 needs AVX512-BF16 or AMX, int8 VNNI or
        AMX; ``allow_reduced_precision=false`` keeps fp32; only the openvino backend runs them.
        """
        from oncotriage.models import registry
        from oncotriage.models.precision import (
            ACCEPTED_TAG,
            BASE_VERSION_TAG,
            PRECISION_TAG,
            SPEED_ORDER,
            unsupported_reason,
        )

        version = str(resolved.version) if resolved.version is not None else resolved.spec.version
        spec = resolved.spec
        if spec.precision != "fp32":
            base = spec.variant.base_version if spec.variant is not None else None
            reason = "the model URI names this variant itself"
            return resolved, PrecisionChoice(spec.precision, version, base or version, reason)

        def fp32(reason: str) -> tuple[ResolvedModel, PrecisionChoice]:
            return resolved, PrecisionChoice("fp32", version, version, reason)

        if resolved.version is None:
            return fp32("a bundle folder has no registered variants")
        if self.settings.inference_backend != "openvino":
            return fp32(
                f"the {self.settings.inference_backend} backend runs fp32; reduced-precision "
                "variants run on the openvino backend"
            )
        if not self.settings.allow_reduced_precision:
            return fp32("reduced precision is switched off (ONCOTRIAGE_ALLOW_REDUCED_PRECISION)")
        newest: dict[str, int] = {}
        for info in registry.list_versions(resolved.name, tracking_uri=self.tracking_uri):
            tags = info.tags
            if tags.get(BASE_VERSION_TAG) == version and tags.get(ACCEPTED_TAG) == "true":
                precision = tags.get(PRECISION_TAG, "")
                newest[precision] = max(newest.get(precision, 0), info.version)
        skipped: list[str] = []
        for precision in SPEED_ORDER:
            if precision == "fp32" or precision not in newest:
                continue
            why = unsupported_reason(precision, self.cpu_flags)
            if why is not None:
                skipped.append(f"{precision} variant v{newest[precision]} not used: {why}")
                continue
            variant = registry.resolve(
                f"models:/{resolved.name}/{newest[precision]}",
                tracking_uri=self.tracking_uri,
                cache_dir=self.cache_dir,
            )
            if variant.spec.variant is None or not variant.spec.variant.accepted:
                skipped.append(f"v{newest[precision]} is tagged accepted but its spec is not")
                continue
            reason = f"fastest accepted variant of version {version} this CPU runs"
            return variant, PrecisionChoice(
                precision, str(variant.version), version, "; ".join([reason, *skipped])
            )
        return fp32("; ".join(skipped) or f"version {version} has no accepted variant")

    # -- loading and swapping --------------------------------------------------------------

    def _build(self, resolved: ResolvedModel) -> LoadedModel:
        from oncotriage.models.pipeline import DetectionPipeline

        factory = self._runner_factory or make_runner_factory(self.settings, self.model_threads)
        with temporary_native_thread_name("ot-model"):  # ONNX Runtime's threads inherit it
            pipeline = DetectionPipeline(resolved.spec, factory(resolved))
        version = str(resolved.version) if resolved.version is not None else resolved.spec.version
        return LoadedModel(
            name=resolved.name, version=version, pipeline=pipeline, resolved=resolved
        )

    def refresh(self) -> bool:
        """Re-resolve ``model_uri``; load and swap in a new version if it moved.

        Returns:
            True when a different version is now current.

        Raises:
            ModelUnavailableError: when resolving or loading fails (the old version, if any,
                stays current).
        """
        with self._load_lock:
            self.last_checked = time.time()
            try:
                resolved = self.resolve()
                version = (
                    str(resolved.version) if resolved.version is not None else resolved.spec.version
                )
                current = self._current
                if current is not None and (current.name, current.version) == (
                    resolved.name,
                    version,
                ):
                    self.last_error = None
                    return False
                loaded = self._build(resolved)
            except ModelUnavailableError as error:
                self.last_error = str(error)
                raise
            except Exception as error:
                self.last_error = f"cannot load model {self.uri}: {error}"
                raise ModelUnavailableError(self.last_error) from error
            previous, self._current = self._current, loaded  # the swap: one assignment
            self.last_error = None
        if previous is None:
            logger.info("model %s loaded", loaded.label)
        else:
            logger.info("model swapped: %s -> %s", previous.label, loaded.label)
        return True

    def current(self) -> LoadedModel:
        """The current model (loading it on first use).

        Raises:
            ModelUnavailableError: when no model could be loaded.
        """
        loaded = self._current
        if loaded is not None:
            return loaded
        checked = self.last_checked
        if self.last_error and checked is not None and time.time() - checked < RETRY_LOAD_S:
            # tried a moment ago: every job of every route asks, the registry need not
            raise ModelUnavailableError(self.last_error)
        self.refresh()
        loaded = self._current
        if loaded is None:  # pragma: no cover - refresh raises instead
            raise ModelUnavailableError(self.last_error or "no model loaded")
        return loaded

    @property
    def loaded(self) -> LoadedModel | None:
        """The current model without loading one."""
        return self._current

    # -- polling ---------------------------------------------------------------------------

    def start_polling(self) -> None:
        """Follow the alias in a daemon thread every ``model_poll_interval_s``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.model_poll_interval_s):
            try:
                self.refresh()
            except ModelUnavailableError as error:
                logger.warning("model check failed, keeping the current version: %s", error)
            except Exception:  # never let the poller die
                logger.exception("model check failed")
