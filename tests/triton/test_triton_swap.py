"""Live model updates on a real Triton: load v2, switch, unload v1 under load; MLflow promotion."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from triton_fixtures import SWAP_MODEL, random_batch

from oncotriage.models.pipeline import OrtRunner
from oncotriage.models.registry import ResolvedModel
from oncotriage.models.spec import ModelSpec
from oncotriage.serving.triton.backend import TritonDeployer, make_runner_factory
from oncotriage.serving.triton.repository import live_versions
from oncotriage.serving.triton.runner import TritonRunner
from oncotriage.serving.triton.server import TritonServer

pytestmark = pytest.mark.triton


def resolved(name: str, version: int, bundle: Path) -> ResolvedModel:
    return ResolvedModel(
        name=name, version=version, bundle_dir=bundle, spec=ModelSpec.load(bundle), uri="test"
    )


class RequestLoop:
    """Threads that keep calling whatever ``current()`` returns and record every result."""

    def __init__(
        self,
        current: Callable[[], tuple[str, Callable[[np.ndarray], tuple[str, list[np.ndarray]]]]],
        threads: int = 4,
    ) -> None:
        self.current = current
        self.x = random_batch(1, seed=7)
        self.records: list[tuple[str, str, list[np.ndarray]]] = []  # (pinned, answered, outputs)
        self.errors: list[BaseException] = []
        self.iterations = [0] * threads
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, index: int) -> None:
        while not self._stop.is_set():
            pinned, call = self.current()
            try:
                answered, outputs = call(self.x)
            except BaseException as exc:  # recorded; the test fails on any
                with self._lock:
                    self.errors.append(exc)
            else:
                with self._lock:
                    self.records.append((pinned, answered, outputs))
            self.iterations[index] += 1

    def start(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def wait_iterations(self, more: int, timeout_s: float = 30.0) -> None:
        """Until every thread has finished ``more`` further calls (none holds an old runner)."""
        target = [n + more for n in self.iterations]
        deadline = time.monotonic() + timeout_s
        while any(n < t for n, t in zip(self.iterations, target, strict=True)):
            assert time.monotonic() < deadline, "request loop stalled"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_load_v2_switch_unload_v1_under_load_drops_nothing(
    running_triton: TritonServer, triton_repository: Path, tiny_bundles: dict[int, Path]
) -> None:
    expected = {
        str(v): OrtRunner(b / "model.onnx")(random_batch(1, seed=7))
        for v, b in tiny_bundles.items()
    }
    assert not np.allclose(expected["1"][0], expected["2"][0]), "versions must differ"
    deployer = TritonDeployer(
        running_triton.grpc_url,
        triton_repository,
        flavor="portable",
        keep_versions=2,
        intra_op_threads=1,
    )

    def probe(version: str) -> TritonRunner:
        return TritonRunner(
            running_triton.grpc_url,
            SWAP_MODEL,
            version,
            "image",
            ["cls_logits_0"],
            check_ready=False,
        )

    runners = {"current": deployer.deploy(resolved(SWAP_MODEL, 1, tiny_bundles[1]))}

    def current() -> tuple[str, Callable[[np.ndarray], tuple[str, list[np.ndarray]]]]:
        runner: TritonRunner = runners["current"]

        def call(x: np.ndarray) -> tuple[str, list[np.ndarray]]:
            result = runner.infer(x)
            return result.model_version, result.outputs

        return runner.model_version, call

    loop = RequestLoop(current).start()
    try:
        loop.wait_iterations(3)
        # Load v2 beside v1 while v1 keeps answering.
        runners["current"] = deployer.deploy(resolved(SWAP_MODEL, 2, tiny_bundles[2]))
        assert live_versions(triton_repository, SWAP_MODEL) == (1, 2)
        loop.wait_iterations(2)  # every thread has moved to v2
        assert deployer.retire(SWAP_MODEL, 1) == (2,)
        assert not probe("1").is_ready() and probe("2").is_ready()
        loop.wait_iterations(3)
        # Roll back: v1 comes back beside v2 and becomes current.
        runners["current"] = deployer.deploy(resolved(SWAP_MODEL, 1, tiny_bundles[1]))
        assert live_versions(triton_repository, SWAP_MODEL) == (2, 1)
        loop.wait_iterations(3)
    finally:
        loop.stop()

    assert loop.errors == []
    pinned_sequence = [pinned for pinned, _, _ in loop.records]
    assert {"1", "2"} <= set(pinned_sequence)
    for pinned, answered, outputs in loop.records:
        assert answered == pinned  # every result records the version that produced it
        assert (
            max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(outputs, expected[answered], strict=True)
            )
            <= 1e-6
        )
    assert probe("1").is_ready() and probe("2").is_ready()


@pytest.mark.slow
def test_promotion_in_mlflow_swaps_the_service_model_without_dropping_requests(
    running_triton: TritonServer, tmp_path: Path, tiny_bundles: dict[int, Path]
) -> None:
    """The service path: alias moves in MLflow -> ModelManager.refresh -> Triton loads it."""
    from oncotriage.models import registry
    from oncotriage.serving.inference import ModelManager
    from oncotriage.serving.settings import Settings

    name = "tiny-2d-promoted"
    store = registry.default_tracking_uri(tmp_path)
    for version in (1, 2):
        assert registry.register_bundle(tiny_bundles[version], name, tracking_uri=store) == version
    registry.set_alias(name, "champion", 1, tracking_uri=store)
    repository = tmp_path / "triton-repo"
    repository.mkdir()
    # The session server reads another repository; this test's server reads this one.
    with TritonServer(repository, load_models=(), exit_timeout_s=5) as server:
        settings = Settings(
            environment="development",
            data_dir=tmp_path,
            model_uri=f"models:/{name}@champion",
            mlflow_tracking_uri=store,
            register_demo_model=False,
            inference_backend="triton",
            triton_url=server.grpc_url,
            triton_model_repository=repository,
            allow_uncalibrated_models=True,  # random tiny detectors: no thresholds to trust
        )
        manager = ModelManager(settings, make_runner_factory(settings, flavor="portable"))
        image_batch = random_batch(1, seed=7)
        expected = {
            str(v): OrtRunner(b / "model.onnx")(image_batch) for v, b in tiny_bundles.items()
        }

        def current() -> tuple[str, Callable[[np.ndarray], tuple[str, list[np.ndarray]]]]:
            loaded = manager.current()  # a job pins the LoadedModel for its whole run

            def call(x: np.ndarray) -> tuple[str, list[np.ndarray]]:
                runner = loaded.pipeline.runner
                assert isinstance(runner, TritonRunner)
                result = runner.infer(x)
                return result.model_version, result.outputs

            return loaded.version, call

        assert manager.current().version == "1"
        loop = RequestLoop(current).start()
        try:
            loop.wait_iterations(3)
            registry.set_alias(name, "champion", 2, tracking_uri=store)
            assert manager.refresh() is True
            assert manager.current().version == "2"
            loop.wait_iterations(3)
            registry.set_alias(name, "champion", 1, tracking_uri=store)  # rollback
            assert manager.refresh() is True
            loop.wait_iterations(3)
        finally:
            loop.stop()
        assert manager.current().version == "1"
        assert live_versions(repository, name) == (2, 1)

    assert loop.errors == []
    assert {"1", "2"} <= {pinned for pinned, _, _ in loop.records}
    for pinned, answered, outputs in loop.records:
        assert answered == pinned
        assert (
            max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(outputs, expected[answered], strict=True)
            )
            <= 1e-6
        )
