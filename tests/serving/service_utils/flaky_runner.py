"""A runner factory whose backend is unreachable for the first ``OUTAGE_CALLS`` calls.

It raises the Triton runner's own ``TritonUnavailableError``, as a real Triton outage
does once the runner's retries are spent.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from oncotriage.serving.inference import ort_runner_factory
from oncotriage.serving.triton.runner import TritonUnavailableError

OUTAGE_CALLS = 4
calls = 0
_lock = threading.Lock()


class FlakyRunner:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.input_name = inner.input_name
        self.output_names = inner.output_names

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        global calls
        with _lock:
            calls += 1
            down = calls <= OUTAGE_CALLS
        if down:
            raise TritonUnavailableError(
                "tritonserver unreachable (test outage)",
                model_name="test",
                model_version="1",
                status="StatusCode.UNAVAILABLE",
            )
        return list(self.inner(batch))


def make(settings: Any) -> Any:
    global calls
    calls = 0
    inner_factory = ort_runner_factory(settings)

    def factory(resolved: Any) -> FlakyRunner:
        return FlakyRunner(inner_factory(resolved))

    return factory
