"""Triton goes away while requests arrive and comes back: every request completes, none lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from triton_fixtures import MODEL, random_batch

from oncotriage.models.pipeline import OrtRunner
from oncotriage.serving.triton.runner import TritonInference, TritonRunner
from oncotriage.serving.triton.server import TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SPREAD_S = 0.2  # a new request every 200 ms, before, during and after the outage
AFTER_S = 1.0  # and for this long after Triton is back


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
    batches = [random_batch(1, seed=300 + i) for i in range(8)]
    outcomes: dict[int, TritonInference | BaseException] = {}
    sent_while_down: set[int] = set()
    down = threading.Event()
    done_sending = threading.Event()

    def request(index: int) -> None:
        if down.is_set():  # the process is gone and start() not yet called
            sent_while_down.add(index)
        try:
            outcomes[index] = runner.infer(batches[index % len(batches)])
        except BaseException as exc:  # reported by the asserts below
            outcomes[index] = exc

    requests: list[threading.Thread] = []

    def producer() -> None:
        while not done_sending.is_set():
            thread = threading.Thread(target=request, args=(len(requests),), daemon=True)
            requests.append(thread)
            thread.start()
            time.sleep(SPREAD_S)

    sender = threading.Thread(target=producer, daemon=True)
    sender.start()
    time.sleep(3 * SPREAD_S)
    if outage == "stop":
        server.stop()
    else:
        server.kill()  # a crash: in-flight calls lose their connection
    down.set()
    time.sleep(1.0)
    down.clear()
    server.start()
    time.sleep(AFTER_S)
    done_sending.set()
    sender.join()
    deadline = time.monotonic() + 120
    for thread in requests:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in requests), "requests pending after 120 s"

    sent = len(requests)
    assert len(outcomes) == sent  # every request has an outcome: none lost
    failures = {i: o for i, o in outcomes.items() if isinstance(o, BaseException)}
    assert failures == {}
    assert sent >= 8
    for index, outcome in outcomes.items():
        assert isinstance(outcome, TritonInference)
        assert outcome.model_version == "1"
        expected = embedded(batches[index % len(batches)])
        assert (
            max(
                float(np.max(np.abs(a - b))) for a, b in zip(outcome.outputs, expected, strict=True)
            )
            <= 1e-6
        )
    assert sent_while_down, "no request was sent while Triton was down"
    retried = {i for i, o in outcomes.items() if isinstance(o, TritonInference) and o.attempts > 1}
    assert sent_while_down <= retried
