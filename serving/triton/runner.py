"""Run a detector network on Triton Inference Server over gRPC (a ``NetworkRunner``).

:class:`TritonRunner` has the same interface as the embedded ONNX Runtime runner
(``input_name``, ``output_names``, ``__call__(batch) -> list[np.ndarray]``), so
``DetectionPipeline`` pre/post-processes exactly as with the embedded backend; only the network
runs in Triton. :class:`AsyncTritonRunner` does the same from asyncio code.

Every call is pinned to one model version when the runner is (``model_version="3"``): Triton
then never answers from another version, and :meth:`TritonRunner.infer` reports the version
that answered. Calls that fail because Triton is unreachable, overloaded, timed out, or the
version is (re)loading are retried with exponential backoff; other errors (wrong input shape,
unknown model...) raise at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oncotriage.serving.inference import BackendUnavailableError

__all__ = [
    "AsyncTritonRunner",
    "InFlightCounter",
    "RetryPolicy",
    "TritonInference",
    "TritonInferenceError",
    "TritonRunner",
    "TritonUnavailableError",
    "channel_args",
]

logger = logging.getLogger(__name__)

#: gRPC statuses worth retrying: the server is down or restarting, overloaded, or slow.
RETRYABLE_STATUSES = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"}
)
#: Substrings of Triton errors for a model version that is loading or swapping.
_NOT_READY_HINTS = ("is not ready", "not at ready state", "unknown model", "is not found")


class TritonInferenceError(RuntimeError):
    """Triton refused or failed a request (not retried, or retries exhausted).

    Attributes:
        model_name, model_version: what was asked for (``model_version`` ``""`` = latest).
        status: the gRPC status name reported, e.g. ``StatusCode.INVALID_ARGUMENT``.
    """

    def __init__(self, message: str, *, model_name: str, model_version: str, status: str | None):
        super().__init__(message)
        self.model_name = model_name
        self.model_version = model_version
        self.status = status


class TritonUnavailableError(TritonInferenceError, BackendUnavailableError):
    """Triton stayed unreachable or the version not ready through every retry.

    Being a ``BackendUnavailableError``, it puts the job back in the queue with backoff
    without using up one of the study's attempts: an outage must not turn studies into
    ``needs_manual_review``.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``backoff_s * 2**k`` seconds before retry ``k + 1``, capped.

    The defaults wait about 25 s in total, enough for a ``tritonserver`` restart.
    """

    retries: int = 8
    backoff_s: float = 0.25
    max_backoff_s: float = 4.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"retry settings must be >= 0: {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class TritonInference:
    """Outputs of one call and which model version produced them.

    Attributes:
        outputs: one array per output name, batch axis first.
        model_name: Triton model name.
        model_version: the version that answered (the MLflow version).
        attempts: calls made (1 = no retry).
    """

    outputs: list[np.ndarray]
    model_name: str
    model_version: str
    attempts: int


class InFlightCounter:
    """Counts requests in flight per ``(model, version)``, so a version is retired only idle."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def track(self, model_name: str, model_version: str) -> Iterator[None]:
        key = (model_name, model_version)
        with self._changed:
            self._counts[key] += 1
        try:
            yield
        finally:
            with self._changed:
                self._counts[key] -= 1
                self._changed.notify_all()

    def count(self, model_name: str, model_version: str) -> int:
        with self._changed:
            return self._counts[(model_name, model_version)]

    def wait_idle(self, model_name: str, model_version: str, timeout_s: float) -> bool:
        """Block until no request is in flight on that version; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._counts[(model_name, model_version)] <= 0, timeout=timeout_s
            )


def channel_args() -> list[tuple[str, Any]]:
    """gRPC channel options: tritonclient's message limits, and quick reconnects.

    gRPC's default reconnect backoff grows to 120 s, so after a Triton restart a channel could
    keep failing long after the server is back; 1 s caps it.
    """
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class _RunnerCore:
    """What the sync and async runners share: validation, requests, results, error policy."""

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | int | None,
        input_name: str | None,
        output_names: Sequence[str] | None,
        *,
        timeout_s: float,
        retries: int,
        backoff: float,
        max_backoff_s: float,
        in_flight: InFlightCounter | None,
    ) -> None:
        if not url or "://" in url:
            raise ValueError(
                f"Triton gRPC url must be host:port (e.g. 127.0.0.1:8001), not {url!r}"
            )
        if not model_name:
            raise ValueError("model_name must not be empty")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.url = url
        self.model_name = model_name
        self.model_version = "" if model_version is None else str(model_version)
        self.input_name = input_name or ""
        self.output_names = list(output_names or [])
        self.timeout_s = float(timeout_s)
        self.retry = RetryPolicy(retries, backoff, max_backoff_s)
        self.in_flight = in_flight

    def __repr__(self) -> str:
        version = self.model_version or "latest"
        return f"{type(self).__name__}({self.url}, {self.model_name!r} v{version})"

    def _what(self) -> str:
        return f"model {self.model_name!r} version {self.model_version or '(latest)'} at {self.url}"

    def _make_inputs(self, module: Any, batch: np.ndarray) -> list[Any]:
        from tritonclient.utils import np_to_triton_dtype

        if not self.input_name:
            raise ValueError(f"{self!r}: input_name unknown (metadata not fetched)")
        array = np.ascontiguousarray(batch)
        if array.ndim < 2:
            raise ValueError(f"batch must be (B, C, *spatial), got shape {array.shape}")
        tensor = module.InferInput(
            self.input_name, list(array.shape), np_to_triton_dtype(array.dtype)
        )
        tensor.set_data_from_numpy(array)
        return [tensor]

    def _make_outputs(self, module: Any) -> list[Any]:
        return [module.InferRequestedOutput(name) for name in self.output_names]

    def _result(self, result: Any, attempts: int) -> TritonInference:
        response = result.get_response()
        outputs = []
        for name in self.output_names:
            array = result.as_numpy(name)
            if array is None:
                raise TritonInferenceError(
                    f"{self._what()} returned no output {name!r}",
                    model_name=self.model_name,
                    model_version=self.model_version,
                    status=None,
                )
            outputs.append(array)
        version = str(response.model_version)
        if self.model_version and version != self.model_version:
            raise TritonInferenceError(
                f"{self._what()}: answered by version {version}",
                model_name=self.model_name,
                model_version=self.model_version,
                status=None,
            )
        return TritonInference(outputs, self.model_name, version, attempts)

    def _retryable(self, exc: Exception) -> bool:
        status = str(exc.status()) if hasattr(exc, "status") else ""
        message = str(exc.message() if hasattr(exc, "message") else exc)
        if status in RETRYABLE_STATUSES:
            return True
        return any(hint in message for hint in _NOT_READY_HINTS)

    def _failure(self, exc: Exception, attempts: int, *, retryable: bool) -> TritonInferenceError:
        status = str(exc.status()) if hasattr(exc, "status") and exc.status() else None
        message = exc.message() if hasattr(exc, "message") else str(exc)
        if retryable:
            return TritonUnavailableError(
                f"{self._what()} unavailable after {attempts} attempts "
                f"(~{sum(self.retry.delay(k) for k in range(1, attempts)):.1f} s of retries): "
                f"{message}. Is tritonserver running and the version loaded?",
                model_name=self.model_name,
                model_version=self.model_version,
                status=status,
            )
        return TritonInferenceError(
            f"{self._what()} failed: {message}",
            model_name=self.model_name,
            model_version=self.model_version,
            status=status,
        )

    def _set_metadata(self, metadata: Any) -> None:
        if not self.input_name:
            if len(metadata.inputs) != 1:
                raise ValueError(f"{self._what()} has {len(metadata.inputs)} inputs; name one")
            self.input_name = metadata.inputs[0].name
        if not self.output_names:
            self.output_names = [output.name for output in metadata.outputs]

    def _log_retry(self, exc: Exception, attempt: int, delay: float) -> None:
        message = exc.message() if hasattr(exc, "message") else str(exc)
        logger.warning(
            "%s: %s; retry %d/%d in %.2f s",
            self._what(),
            message.splitlines()[0] if message else type(exc).__name__,
            attempt,
            self.retry.retries,
            delay,
        )


class TritonRunner(_RunnerCore):
    """Synchronous ``NetworkRunner`` on Triton (``tritonclient.grpc``); safe to share by threads.

    Args:
        url: Triton gRPC ``host:port``.
        model_name: Triton model name (the registered-model name).
        model_version: pin every request to this version (the MLflow version); ``None`` lets
            Triton pick its latest loaded version.
        input_name, output_names: tensor names; ``None`` reads them from Triton's metadata.
        timeout_s: deadline of one gRPC call.
        retries: retries after the first attempt for retryable failures.
        backoff: first retry delay in seconds (doubles each time, capped at ``max_backoff_s``).
        check_ready: at construction, wait (within the retry budget) until the version is ready.
        in_flight: counts requests per version for a deployer that retires versions.

    Raises:
        TritonUnavailableError: if ``check_ready`` and the version never becomes ready.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | int | None = None,
        input_name: str | None = None,
        output_names: Sequence[str] | None = None,
        timeout_s: float = 30.0,
        retries: int = 8,
        backoff: float = 0.25,
        *,
        max_backoff_s: float = 4.0,
        check_ready: bool = True,
        in_flight: InFlightCounter | None = None,
    ) -> None:
        super().__init__(
            url,
            model_name,
            model_version,
            input_name,
            output_names,
            timeout_s=timeout_s,
            retries=retries,
            backoff=backoff,
            max_backoff_s=max_backoff_s,
            in_flight=in_flight,
        )
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        if check_ready:
            self.wait_ready()
        if not self.input_name or not self.output_names:
            self._set_metadata(
                self._with_retries(
                    lambda client: client.get_model_metadata(
                        self.model_name, self.model_version, client_timeout=self.timeout_s
                    )
                )[0]
            )

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args())
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _with_retries(self, call: Any) -> tuple[Any, int]:
        from tritonclient.utils import InferenceServerException

        attempt = 0
        while True:
            attempt += 1
            try:
                return call(self._client()), attempt
            except InferenceServerException as exc:
                retryable = self._retryable(exc)
                if not retryable or attempt > self.retry.retries:
                    raise self._failure(exc, attempt, retryable=retryable) from exc
                delay = self.retry.delay(attempt)
                self._log_retry(exc, attempt, delay)
                time.sleep(delay)

    def is_ready(self) -> bool:
        """Whether Triton reports this model version ready now (no retries)."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(
                self._client().is_model_ready(
                    self.model_name, self.model_version, client_timeout=self.timeout_s
                )
            )
        except InferenceServerException:
            return False

    def wait_ready(self) -> None:
        """Wait within the retry budget until the pinned version is ready.

        Raises:
            TritonUnavailableError: if it is not ready after the last retry.
        """
        from tritonclient.utils import InferenceServerException

        for attempt in range(1, self.retry.retries + 2):
            if self.is_ready():
                return
            if attempt <= self.retry.retries:
                time.sleep(self.retry.delay(attempt))
        raise self._failure(
            InferenceServerException(f"{self._what()} is not ready", "StatusCode.UNAVAILABLE"),
            self.retry.retries + 1,
            retryable=True,
        )

    def infer(self, batch: np.ndarray) -> TritonInference:
        """Run the network on ``batch`` ``(B, C, *spatial)``; outputs in ``output_names`` order.

        Raises:
            TritonUnavailableError: Triton unreachable / version not ready through every retry.
            TritonInferenceError: Triton rejected the request (shape, dtype, unknown output...).
        """
        import tritonclient.grpc as grpcclient

        inputs = self._make_inputs(grpcclient, batch)
        outputs = self._make_outputs(grpcclient)
        tracking = (
            self.in_flight.track(self.model_name, self.model_version)
            if self.in_flight is not None
            else contextlib.nullcontext()
        )
        with tracking:
            result, attempts = self._with_retries(
                lambda client: client.infer(
                    self.model_name,
                    inputs,
                    model_version=self.model_version,
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
            )
        return self._result(result, attempts)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.infer(batch).outputs

    def close(self) -> None:
        """Close every gRPC channel this runner opened."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        self._local = threading.local()


class AsyncTritonRunner(_RunnerCore):
    """The asyncio twin of :class:`TritonRunner` (``tritonclient.grpc.aio``).

    Create it inside the event loop that uses it, then ``await runner.start()`` (readiness and
    metadata) before the first :meth:`infer`. Arguments as :class:`TritonRunner`.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | int | None = None,
        input_name: str | None = None,
        output_names: Sequence[str] | None = None,
        timeout_s: float = 30.0,
        retries: int = 8,
        backoff: float = 0.25,
        *,
        max_backoff_s: float = 4.0,
        in_flight: InFlightCounter | None = None,
    ) -> None:
        super().__init__(
            url,
            model_name,
            model_version,
            input_name,
            output_names,
            timeout_s=timeout_s,
            retries=retries,
            backoff=backoff,
            max_backoff_s=max_backoff_s,
            in_flight=in_flight,
        )
        import tritonclient.grpc.aio as aioclient

        self._client = aioclient.InferenceServerClient(self.url, channel_args=channel_args())

    async def _with_retries(self, call: Any) -> tuple[Any, int]:
        from tritonclient.utils import InferenceServerException

        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(), attempt
            except InferenceServerException as exc:
                retryable = self._retryable(exc)
                if not retryable or attempt > self.retry.retries:
                    raise self._failure(exc, attempt, retryable=retryable) from exc
                delay = self.retry.delay(attempt)
                self._log_retry(exc, attempt, delay)
                await asyncio.sleep(delay)

    async def start(self) -> AsyncTritonRunner:
        """Wait until the version is ready and fill in missing tensor names."""

        async def ready() -> bool:
            ok = await self._client.is_model_ready(
                self.model_name, self.model_version, client_timeout=self.timeout_s
            )
            if not ok:
                from tritonclient.utils import InferenceServerException

                raise InferenceServerException(
                    f"{self._what()} is not ready", "StatusCode.UNAVAILABLE"
                )
            return True

        await self._with_retries(ready)
        if not self.input_name or not self.output_names:
            metadata, _ = await self._with_retries(
                lambda: self._client.get_model_metadata(
                    self.model_name, self.model_version, client_timeout=self.timeout_s
                )
            )
            self._set_metadata(metadata)
        return self

    async def infer(self, batch: np.ndarray) -> TritonInference:
        """As :meth:`TritonRunner.infer`, awaiting the call and the backoff."""
        import tritonclient.grpc.aio as aioclient

        inputs = self._make_inputs(aioclient, batch)
        outputs = self._make_outputs(aioclient)
        tracking = (
            self.in_flight.track(self.model_name, self.model_version)
            if self.in_flight is not None
            else contextlib.nullcontext()
        )
        with tracking:
            result, attempts = await self._with_retries(
                lambda: self._client.infer(
                    self.model_name,
                    inputs,
                    model_version=self.model_version,
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
            )
        return self._result(result, attempts)

    async def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return (await self.infer(batch)).outputs

    async def close(self) -> None:
        await self._client.close()
