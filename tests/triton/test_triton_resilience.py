"""Triton goes away while requests arrive and comes back: every request completes, none lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from triton_fixtures import MODEL, random_batch

from oncotriage.models.pipeline import OrtRunner
from oncotriage.serving.triton.runner import TritonInference, TritonRunner
from oncotriage.serving.triton.server import TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

REQUESTS = 30
SPREAD_S = 0.2  # one request every 200 ms: they keep arriving before, during and after


@pytest.mark.parametrize("outage", ["stop", "kill"])
def test_requests_wait_through_an_outage_and_all_complete(
    running_triton: TritonServer, tiny_bundles: dict[int, Path], outage: str
) -> None:
    server = running_triton
    embedded = OrtRunner(tiny_bundles[1] / "model.onnx")
    # ~30 s of patience: 0.2, 0.4, 0.8, then 1 s per retry.
    runner = TritonRunner(
        server.grpc_url, MODEL, "1", timeout_s=10, retries=30, backoff=0.2, max_backoff_s=1.0
    )
    batches = [random_batch(1, seed=300 + i) for i in range(REQUESTS)]
    sent_during_outage: list[int] = []
    down = threading.Event()

    def request(index: int) -> TritonInference:
        time.sleep(index * SPREAD_S)
        if down.is_set():
            sent_during_outage.append(index)
        return runner.infer(batches[index])

    with ThreadPoolExecutor(REQUESTS) as pool:
        futures = [pool.submit(request, i) for i in range(REQUESTS)]
        time.sleep(3 * SPREAD_S)
        began = time.monotonic()
        if outage == "stop":
            server.stop()
        else:
            server.kill()  # a crash: in-flight calls lose their connection
        down.set()  # the process is gone from here until start() is called
        time.sleep(1.0)
        down.clear()
        restarting = time.monotonic()
        server.start()
        back = time.monotonic()
        outcomes = [future.result(timeout=120) for future in futures]

    assert len(outcomes) == REQUESTS
    for x, outcome in zip(batches, outcomes, strict=True):
        assert outcome.model_version == "1"
        assert (
            max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(outcome.outputs, embedded(x), strict=True)
            )
            <= 1e-6
        )
    timings = f"stop {restarting - began - 1.0:.1f} s, start {back - restarting:.1f} s"
    assert sent_during_outage, f"no request was sent while Triton was down ({timings})"
    retried = [i for i, outcome in enumerate(outcomes) if outcome.attempts > 1]
    assert set(sent_during_outage) <= set(retried)
