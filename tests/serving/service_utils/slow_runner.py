"""A runner factory whose network takes ``ONCOTRIAGE_TEST_RUNNER_DELAY_S`` seconds per call.

Plugged into a worker process with ``ONCOTRIAGE_RUNNER_FACTORY=service_utils.slow_runner:make``
so a test can kill the worker while a job is certainly in the middle of inference.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from oncotriage.serving.inference import ort_runner_factory


class SlowRunner:
    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.input_name = inner.input_name
        self.output_names = inner.output_names

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(self.delay_s)
        return list(self.inner(batch))


def make(settings: Any) -> Any:
    inner_factory = ort_runner_factory(settings)
    delay_s = float(os.environ.get("ONCOTRIAGE_TEST_RUNNER_DELAY_S", "0"))

    def factory(resolved: Any) -> SlowRunner:
        return SlowRunner(inner_factory(resolved), delay_s)

    return factory
