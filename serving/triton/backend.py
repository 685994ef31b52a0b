"""The Triton inference backend of the service: live model updates through explicit model control.

:class:`ModelManager <oncotriage.serving.inference.ModelManager>` calls the runner factory once
per newly promoted (or rolled back) version. Here that means:

1. write the version into the model repository (``<repo>/<name>/<version>/model.onnx``) with
   ``config.pbtxt``'s ``version_policy`` listing the last ``keep_versions`` promoted versions
   (the new one and the one still serving in-flight studies);
2. before a version drops out of that list, wait until this process has no request in flight
   on it (Triton itself also finishes in-flight requests before it unloads a version);
3. ask every Triton instance to ``load_model`` (Triton re-reads the config: it loads the new
   version beside the ones still listed, unloads the dropped one, and keeps serving throughout);
4. wait until the new version is ready and return a :class:`TritonRunner` pinned to it.

A job that pinned the previous ``LoadedModel`` keeps calling the previous version, which stays
loaded, so it finishes on the version it started with; each result records its version.

Without ``triton_model_repository`` the service deploys nothing: it pins the version and waits
for it to be ready, for setups where ``oncotriage deploy triton`` (or Triton's poll mode) loads
models.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncotriage.serving.triton.config import DEFAULT_PREFERRED_BATCH_SIZES, Flavor, flavor_of
from oncotriage.serving.triton.repository import (
    live_versions,
    next_versions,
    read_model_config,
    write_model,
)
from oncotriage.serving.triton.runner import (
    InFlightCounter,
    RetryPolicy,
    TritonRunner,
    TritonUnavailableError,
    channel_args,
)

if TYPE_CHECKING:
    from oncotriage.models.pipeline import NetworkRunner
    from oncotriage.models.registry import ResolvedModel
    from oncotriage.serving.settings import Settings

__all__ = ["TritonDeployer", "make_runner_factory", "triton_version"]

logger = logging.getLogger(__name__)


def triton_version(resolved: ResolvedModel) -> int:
    """The Triton version of a resolved model: its MLflow version, or the spec's for a folder.

    Unregistered bundles carry ``spec.version`` (``"0"`` when never registered), which maps to 1.
    """
    if resolved.version is not None:
        return int(resolved.version)
    try:
        return max(1, int(resolved.spec.version))
    except ValueError:
        return 1


class TritonDeployer:
    """Writes promoted versions into a model repository and loads them on Triton instances.

    Args:
        url: gRPC ``host:port`` the runners send inference to (an instance or a load balancer).
        repository: the model repository the Triton instances read (shared storage in a
            cluster); ``None``: deploy nothing, only pin versions.
        control_urls: instances to send ``load_model`` to (default ``[url]``); behind a load
            balancer list every instance, since a load through the balancer reaches only one.
        flavor: flavour for a model new to the repository; an existing ``config.pbtxt`` keeps
            its own.
        keep_versions: versions kept loaded (current + previous ones).
        timeout_s, retries, backoff: per-call deadline and retry policy of the runners.
        load_timeout_s: how long a ``load_model`` may take (TensorRT engine builds are slow).
        drain_timeout_s: how long to wait for in-flight requests before retiring a version.
        batching: ``write_model`` keyword arguments (``max_batch_size``, ``instances``...).
    """

    def __init__(
        self,
        url: str,
        repository: Path | None,
        *,
        control_urls: Sequence[str] | None = None,
        flavor: Flavor | str = Flavor.GPU,
        keep_versions: int = 2,
        timeout_s: float = 30.0,
        retries: int = 8,
        backoff: float = 0.25,
        load_timeout_s: float = 600.0,
        drain_timeout_s: float = 120.0,
        **batching: Any,
    ) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.url = url
        self.repository = Path(repository) if repository is not None else None
        self.control_urls = list(control_urls or [url])
        self.flavor = Flavor(flavor)
        self.keep_versions = keep_versions
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries, backoff)
        self.load_timeout_s = load_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.batching: dict[str, Any] = {
            "max_batch_size": 8,
            "preferred_batch_sizes": DEFAULT_PREFERRED_BATCH_SIZES,
            "max_queue_delay_us": 2000,
            "instances": 1,
        } | batching
        self.in_flight = InFlightCounter()
        self._lock = threading.Lock()

    # -- deploying -------------------------------------------------------------------------

    def deploy(self, resolved: ResolvedModel) -> TritonRunner:
        """Make ``resolved`` servable on Triton and return a runner pinned to its version.

        Raises:
            TritonUnavailableError: Triton unreachable, or the version never became ready.
            oncotriage.serving.triton.repository.RepositoryConflictError: the repository
                already holds that version with different weights.
        """
        name, version = resolved.name, triton_version(resolved)
        with self._lock:
            if self.repository is not None:
                self._write_and_load(resolved, name, version)
        runner = TritonRunner(
            self.url,
            name,
            str(version),
            resolved.spec.input_name,
            list(resolved.spec.output_names),
            timeout_s=self.timeout_s,
            retries=self.retry.retries,
            backoff=self.retry.backoff_s,
            in_flight=self.in_flight,
        )
        logger.info("Triton runner pinned to %s version %d at %s", name, version, self.url)
        return runner

    def _write_and_load(self, resolved: ResolvedModel, name: str, version: int) -> None:
        assert self.repository is not None
        existing = read_model_config(self.repository, name)
        flavor = flavor_of(existing) if existing is not None else self.flavor
        previous = live_versions(self.repository, name)
        live = next_versions(previous, version, self.keep_versions)
        for retired in (v for v in previous if v not in live):
            if not self.in_flight.wait_idle(name, str(retired), self.drain_timeout_s):
                logger.warning(
                    "%s version %d still has %d requests in flight after %.0f s; retiring it "
                    "anyway (Triton finishes in-flight requests before unloading)",
                    name,
                    retired,
                    self.in_flight.count(name, str(retired)),
                    self.drain_timeout_s,
                )
        written = write_model(
            self.repository,
            resolved.bundle_dir,
            resolved.spec,
            model_name=name,
            version=version,
            flavor=flavor,
            versions=live,
            **self.batching,
        )
        for control_url in self.control_urls:
            self.load(control_url, name)
            self.wait_version_ready(control_url, name, version)
        logger.info(
            "Triton %s now serves %s versions %s (current %d)",
            ",".join(self.control_urls),
            name,
            list(written.versions),
            version,
        )

    def retire(self, name: str, version: int) -> tuple[int, ...]:
        """Unload one version now, once this process has no request in flight on it.

        Normally unnecessary (promotions keep ``keep_versions`` live); for an explicit
        "load new, switch, unload old" sequence or to withdraw a bad version.

        Returns:
            The versions still live.

        Raises:
            ValueError: if ``version`` is the only live version, or no repository is managed.
        """
        from oncotriage.serving.triton.repository import set_live_versions

        if self.repository is None:
            raise ValueError("this deployer manages no repository (triton_model_repository unset)")
        with self._lock:
            live = tuple(v for v in live_versions(self.repository, name) if v != version)
            if not live:
                raise ValueError(f"{name!r} version {version} is the only live version")
            if not self.in_flight.wait_idle(name, str(version), self.drain_timeout_s):
                logger.warning("retiring %s version %d with requests in flight", name, version)
            set_live_versions(self.repository, name, live)
            for control_url in self.control_urls:
                self.load(control_url, name)
        logger.info("retired %s version %d; live versions %s", name, version, list(live))
        return live

    def load(self, control_url: str, name: str) -> None:
        """``load_model`` on one instance, retrying while it is unreachable."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(control_url, channel_args=channel_args())
        try:
            for attempt in range(1, self.retry.retries + 2):
                try:
                    client.load_model(name, client_timeout=self.load_timeout_s)
                    return
                except InferenceServerException as exc:
                    unavailable = str(exc.status()) == "StatusCode.UNAVAILABLE"
                    if not unavailable or attempt > self.retry.retries:
                        raise TritonUnavailableError(
                            f"Triton at {control_url} could not load {name!r}: {exc.message()}",
                            model_name=name,
                            model_version="",
                            status=str(exc.status()),
                        ) from exc
                    time.sleep(self.retry.delay(attempt))
        finally:
            client.close()

    def wait_version_ready(self, control_url: str, name: str, version: int) -> None:
        """Block until ``name`` ``version`` is ready on one instance (``load_timeout_s``)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.load_timeout_s
        client = grpcclient.InferenceServerClient(control_url, channel_args=channel_args())
        try:
            while True:
                try:
                    if client.is_model_ready(name, str(version), client_timeout=self.timeout_s):
                        return
                except InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    raise TritonUnavailableError(
                        f"{name!r} version {version} not ready on {control_url} after "
                        f"{self.load_timeout_s:.0f} s; see the Triton log",
                        model_name=name,
                        model_version=str(version),
                        status=None,
                    )
                time.sleep(0.1)
        finally:
            client.close()


def make_runner_factory(
    settings: Settings, **overrides: Any
) -> Callable[[ResolvedModel], NetworkRunner]:
    """The ``runner_factory`` for ``inference_backend == "triton"``.

    Reads ``triton_url``, ``triton_model_repository`` and ``triton_timeout_s``; also
    ``triton_control_urls`` (comma-separated instances to send model control to) and
    ``triton_flavor`` (``gpu``/``portable`` for a model new to the repository) from the settings
    when they have such fields, else from ``ONCOTRIAGE_TRITON_CONTROL_URLS`` /
    ``ONCOTRIAGE_TRITON_FLAVOR``. ``overrides`` go to :class:`TritonDeployer` (tests pass
    ``flavor="portable"``, ``retries=``...).

    Returns:
        ``factory(resolved) -> TritonRunner`` pinned to ``resolved``'s version; the deployer is
        reachable as ``factory.deployer``.
    """
    control = getattr(settings, "triton_control_urls", None) or os.environ.get(
        "ONCOTRIAGE_TRITON_CONTROL_URLS"
    )
    if isinstance(control, str):
        control = [url.strip() for url in control.split(",") if url.strip()]
    flavor = getattr(settings, "triton_flavor", None) or os.environ.get("ONCOTRIAGE_TRITON_FLAVOR")
    options: dict[str, Any] = {
        "control_urls": control or None,
        "flavor": flavor or Flavor.GPU,
        "timeout_s": float(settings.triton_timeout_s),
    } | overrides
    deployer = TritonDeployer(settings.triton_url, settings.triton_model_repository, **options)

    def factory(resolved: ResolvedModel) -> NetworkRunner:
        return deployer.deploy(resolved)

    factory.deployer = deployer  # type: ignore[attr-defined]
    return factory
