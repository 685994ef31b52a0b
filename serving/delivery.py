"""Webhook delivery from the outbox: one signed POST per claim, the outbox's backoff between.

Events are written to the outbox (:mod:`oncotriage.serving.outbox`) in the transaction of
the change they announce; a worker's :class:`WebhookOutbox` claims a due delivery under a
lease, POSTs it once (:func:`default_webhook_sender`) and records the answer, or fails it
with the backoff of ``webhook_backoff_*`` (a 4xx other than 408/429 is final). One delivery
id per event, the same in the body, the ``X-Oncotriage-Delivery`` header and every retry.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from oncotriage.serving import jobs
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import Hospital, WebhookDelivery
from oncotriage.serving.db.session import Database
from oncotriage.serving.settings import Settings

__all__ = ["WebhookDeliveryError", "WebhookOutbox", "WebhookSender", "default_webhook_sender"]

logger = logging.getLogger(__name__)


_DELIVERY_NAMESPACE = uuid.UUID("6f1c1f0e-6d1b-5a43-9d6c-0f5e2b7a9c11")

WebhookSender = Callable[[str, str, dict[str, object], float], int]
"""``(url, secret, event, timeout_s) -> HTTP status``; raises :class:`WebhookDeliveryError`."""


class WebhookDeliveryError(Exception):
    """A webhook POST failed; ``permanent`` when the receiver refused it (4xx)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def default_webhook_sender(
    url: str, secret: str, event: dict[str, object], timeout_s: float
) -> int:
    """One signed POST with :func:`oncotriage.serving.webhooks.deliver`.

    Retries are the outbox's (durable, with backoff), so ``deliver`` makes one attempt.
    """
    from oncotriage.serving import webhooks

    result = webhooks.deliver(url, secret, event, timeout_s=timeout_s, max_attempts=1)
    if not result.delivered:
        status = result.status_code
        permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
        raise WebhookDeliveryError(result.error or "not delivered", permanent=permanent)
    return int(result.status_code or 200)


class WebhookOutbox:
    """One worker's side of the outbox: claims due deliveries and sends them.

    Args:
        settings: webhook timeout, attempts and backoff; ``worker_poll_interval_s``.
        db: the database.
        name: lease owner name.
        sender: overrides :func:`default_webhook_sender`.
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        name: str,
        sender: WebhookSender | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.name = name
        self.sender = sender or default_webhook_sender
        self.due_at = 0.0  # monotonic; the outbox is checked at most every poll

    def soon(self) -> None:
        """An event was queued here: look at the outbox on the next round, not a poll later."""
        self.due_at = 0.0

    def deliver_due(self, *, working: bool = False) -> bool:
        """One webhook delivery if the outbox may hold one that is due.

        The outbox is looked at when this worker queued an event, after a delivery (there may
        be more), and otherwise every ``worker_poll_interval_s`` (events queued elsewhere),
        at most every second while jobs are in hand (each look is a write transaction, and
        on SQLite every write waits for the single writer).
        """
        now = time.monotonic()
        if now < self.due_at:
            return False
        delivered = self.deliver_next()
        interval = self.settings.worker_poll_interval_s
        if working:
            interval = max(interval, 1.0)
        self.due_at = now if delivered else now + interval
        return delivered

    def deliver_next(self) -> bool:
        """Claim one due delivery and POST it; True when one was handled."""
        with self.db.session() as session:
            lease = jobs.claim_next(
                session,
                WebhookDelivery,
                owner=self.name,
                lease_s=max(self.settings.webhook_timeout_s * 2, 10.0),
                now=utcnow(),
            )
            if lease is None:
                return False
            delivery = session.get(WebhookDelivery, lease.id)
            hospital = session.get(Hospital, delivery.hospital_id) if delivery else None
            url = hospital.webhook_url if hospital else None
            secret = hospital.webhook_secret if hospital else None
            payload = dict(delivery.payload) if delivery else {}
        if not url or not secret:
            with self.db.session() as session:
                jobs.fail(
                    session,
                    WebhookDelivery,
                    lease,
                    error="the hospital has no webhook URL or secret any more",
                    now=utcnow(),
                    retry_in_s=None,
                )
            return True
        # rows queued before the id was stored with the event get one derived from the row,
        # so their retries share it too
        payload.setdefault("delivery_id", str(uuid.uuid5(_DELIVERY_NAMESPACE, str(lease.id))))
        try:
            status = self.sender(url, secret, payload, self.settings.webhook_timeout_s)
        except Exception as error:
            permanent = isinstance(error, WebhookDeliveryError) and error.permanent
            retry_in = (
                None
                if permanent
                else jobs.backoff_s(
                    lease.attempt,
                    self.settings.webhook_backoff_base_s,
                    self.settings.webhook_backoff_max_s,
                )
            )
            with self.db.session() as session:
                state = jobs.fail(
                    session,
                    WebhookDelivery,
                    lease,
                    error=f"{type(error).__name__}: {error}",
                    now=utcnow(),
                    retry_in_s=retry_in,
                )
            logger.warning("webhook delivery %d failed (%s): %s", lease.id, state, error)
            return True
        with self.db.session() as session:
            if jobs.complete(session, WebhookDelivery, lease, now=utcnow()):
                row = session.get(WebhookDelivery, lease.id)
                if row is not None:
                    row.response_status = status
                    row.delivered_at = utcnow()
        logger.info("webhook delivery %d delivered (HTTP %d)", lease.id, status)
        return True
