"""Signed webhook delivery to a hospital's system.

Each delivery is an HTTP POST of a JSON event with three headers:

- ``X-Oncotriage-Event``: the event type (``event["type"]``, e.g. ``study.status``).
- ``X-Oncotriage-Delivery``: a UUID, the same on every retry of one delivery, so the receiver
  can drop duplicates.
- ``X-Oncotriage-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
  ``b"<t>." + body`` with the hospital's webhook secret (the scheme Stripe uses). The
  timestamp is part of the signed message, so a captured request cannot be replayed once it is
  older than the receiver's tolerance.

Receivers verify with :func:`verify_signature` (or the same few lines in any language).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Oncotriage-Signature"
EVENT_HEADER = "X-Oncotriage-Event"
DELIVERY_HEADER = "X-Oncotriage-Delivery"
SIGNATURE_VERSION = "v1"
MAX_BACKOFF_S = 60.0

_RETRYABLE_4XX = {408, 429}


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of :func:`deliver`.

    Attributes:
        delivered: the receiver answered 2xx.
        attempts: HTTP requests made (1 = first try succeeded or failed for good).
        status_code: status of the last response; ``None`` when no response came back.
        error: why it was not delivered (last status or connection error); ``None`` when it was.
        delivery_id: the ``X-Oncotriage-Delivery`` UUID sent with every attempt.
    """

    delivered: bool
    attempts: int
    status_code: int | None
    error: str | None
    delivery_id: str = ""


def sign_payload(secret: str, body: bytes, timestamp: int) -> str:
    """Signature header value ``t=<timestamp>,v1=<hex>`` for ``body`` sent at ``timestamp``.

    Args:
        secret: the hospital's webhook secret.
        body: exact bytes of the request body.
        timestamp: Unix time in whole seconds.
    """
    if not secret:
        raise ValueError("a webhook secret is required to sign a payload")
    digest = _digest(secret, body, int(timestamp))
    return f"t={int(timestamp)},{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid, fresh signature of ``body`` under ``secret``.

    Several ``v1=`` entries are accepted (the sender may sign with an old and a new secret
    while rotating); one match is enough. Malformed headers are rejected, never raised.

    Args:
        secret: the shared webhook secret.
        body: exact bytes of the received body.
        header: value of ``X-Oncotriage-Signature``.
        tolerance_s: largest accepted age (or clock skew into the future) in seconds.
        now: current Unix time; ``time.time()`` if ``None``.
    """
    if not secret or not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == SIGNATURE_VERSION:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, body, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Canonical JSON body of an event (UTF-8, sorted keys, no spaces; dates as ISO strings)."""
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=False
    ).encode("utf-8")


def deliver(
    url: str,
    secret: str,
    event: Mapping[str, Any],
    *,
    timeout_s: float = 5,
    max_attempts: int = 5,
    backoff_s: float = 0.5,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """POST a signed event to ``url``, retrying transient failures.

    Retries, with exponential backoff ``backoff_s * 2**(attempt - 1)`` (capped at 60 s, or the
    receiver's ``Retry-After`` when it sends one), on connection errors, timeouts, 5xx, 408 and
    429. Any other 4xx is final: the receiver refused the event and resending will not help.
    Redirects are not followed. Each attempt is signed with its own timestamp.

    Args:
        url: the hospital's webhook URL.
        secret: the hospital's webhook secret.
        event: JSON-serialisable mapping with a ``type`` key (e.g. ``study.status``). Its
            ``delivery_id``, when present, is the ``X-Oncotriage-Delivery`` id; else a new
            UUID is made. Either way the body's ``delivery_id`` is the header's.
        timeout_s: per-request timeout.
        max_attempts: requests at most, >= 1.
        backoff_s: first retry delay.
        client: an ``httpx.Client`` to reuse (connection pooling); one is made if ``None``.
        sleep: how to wait between attempts (tests and async callers may replace it).

    Returns:
        A :class:`DeliveryResult`; this function does not raise for delivery failures.

    Raises:
        ValueError: ``event`` has no ``type``, or ``max_attempts`` < 1.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    event_type = event.get("type")
    if not event_type:
        raise ValueError("a webhook event needs a 'type' (e.g. 'study.status')")
    # ONE delivery id: the event's own when it has one (the outbox stores it with the event, so
    # every retry, here or on a later round, carries the same), in the header and in the body
    delivery_id = str(event.get("delivery_id") or uuid.uuid4())
    body = encode_event({**event, "delivery_id": delivery_id})
    own_client = client is None
    http = client if client is not None else httpx.Client(follow_redirects=False)
    status_code: int | None = None
    error: str | None = None
    attempt = 0
    try:
        for attempt in range(1, max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                EVENT_HEADER: str(event_type),
                DELIVERY_HEADER: delivery_id,
                SIGNATURE_HEADER: sign_payload(secret, body, int(time.time())),
                "User-Agent": "oncotriage-webhooks/1",
            }
            retry_after: float | None = None
            try:
                response = http.post(url, content=body, headers=headers, timeout=timeout_s)
            except httpx.HTTPError as exc:  # connection refused, timeout, protocol error
                status_code = None
                error = f"{type(exc).__name__}: {exc}"
                retryable = True
            else:
                status_code = response.status_code
                if 200 <= status_code < 300:
                    logger.info(
                        "webhook delivered",
                        extra={
                            "fields": {
                                "delivery": delivery_id,
                                "event": event_type,
                                "attempts": attempt,
                            }
                        },
                    )
                    return DeliveryResult(True, attempt, status_code, None, delivery_id)
                error = f"HTTP {status_code}"
                retryable = status_code >= 500 or status_code in _RETRYABLE_4XX
                retry_after = _retry_after(response)
            if not retryable or attempt == max_attempts:
                break
            delay = min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1))
            if retry_after is not None:
                delay = min(MAX_BACKOFF_S, max(delay, retry_after))
            logger.warning(
                "webhook attempt failed, retrying",
                extra={
                    "fields": {
                        "delivery": delivery_id,
                        "attempt": attempt,
                        "error": error,
                        "delay_s": delay,
                    }
                },
            )
            sleep(delay)
    finally:
        if own_client:
            http.close()
    logger.warning(
        "webhook not delivered",
        extra={"fields": {"delivery": delivery_id, "attempts": attempt, "error": error}},
    )
    return DeliveryResult(False, attempt, status_code, error, delivery_id)


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _json_default(value: Any) -> Any:
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "value") and isinstance(value.value, str | int | float):  # enums
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in a webhook event")
