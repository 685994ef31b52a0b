"""Outbox delivery: one signed webhook POST, or one result push, per claim, with the outbox's
backoff between attempts.

Events are written to the outbox (:mod:`oncotriage.serving.outbox`) in the transaction of
the change they announce; a worker's :class:`WebhookOutbox` claims a due delivery under a
lease, POSTs it once (:func:`default_webhook_sender`) and records the answer, or fails it
with the backoff of ``webhook_backoff_*`` (a 4xx other than 408/429 is final). One delivery
id per event, the same in the body, the ``X-Oncotriage-Delivery`` header and every retry.

Result pushes (``result.sr`` rows, :mod:`oncotriage.serving.push`) go through the same claim,
backoff and failure bookkeeping: the SR version named by the row is built from the stored
result and sent by STOW-RS or C-STORE (a refusal that resending cannot fix is final).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from oncotriage.serving import jobs
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import Hospital, WebhookDelivery
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import WebhookEvent
from oncotriage.serving.settings import Settings

if TYPE_CHECKING:
    from oncotriage.serving.storage import ContentStore

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
        store: the image store, to build the SR of result pushes (``result.sr`` rows).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        name: str,
        sender: WebhookSender | None = None,
        store: ContentStore | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.name = name
        self.sender = sender or default_webhook_sender
        self.store = store
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
        """Claim one due outbox row and send it (a webhook POST, or a result push); True when
        one was handled."""
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
            if delivery is not None and delivery.event is WebhookEvent.RESULT_SR:
                send, what = self._result_push(session, delivery)
            else:
                send, what = self._webhook(session, lease, delivery)
        if isinstance(send, str):  # nothing can be sent: fail for good, with the reason
            with self.db.session() as session:
                jobs.fail(
                    session, WebhookDelivery, lease, error=send, now=utcnow(), retry_in_s=None
                )
            logger.warning("%s %d not sent: %s", what, lease.id, send)
            return True
        try:
            status = send()
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
            logger.warning("%s %d failed (%s): %s", what, lease.id, state, error)
            return True
        with self.db.session() as session:
            if jobs.complete(session, WebhookDelivery, lease, now=utcnow()):
                row = session.get(WebhookDelivery, lease.id)
                if row is not None:
                    row.response_status = status
                    row.delivered_at = utcnow()
        logger.info("%s %d delivered (status %d)", what, lease.id, status)
        return True

    def _webhook(
        self, session: Session, lease: jobs.Lease, delivery: WebhookDelivery | None
    ) -> tuple[Callable[[], int] | str, str]:
        """What sends a claimed webhook event, or why it cannot be sent."""
        hospital = session.get(Hospital, delivery.hospital_id) if delivery else None
        url = hospital.webhook_url if hospital else None
        secret = hospital.webhook_secret if hospital else None
        if not url or not secret:
            return "the hospital has no webhook URL or secret any more", "webhook delivery"
        payload = dict(delivery.payload) if delivery else {}
        # rows queued before the id was stored with the event get one derived from the row,
        # so their retries share it too
        payload.setdefault("delivery_id", str(uuid.uuid5(_DELIVERY_NAMESPACE, str(lease.id))))
        timeout_s = self.settings.webhook_timeout_s
        return (lambda: self.sender(url, secret, payload, timeout_s)), "webhook delivery"

    def _result_push(
        self, session: Session, delivery: WebhookDelivery
    ) -> tuple[Callable[[], int] | str, str]:
        """What sends a claimed result push (the SR version it names), or why it cannot be
        sent. The database is read here; the SR is built and sent by the returned call."""
        from oncotriage.serving import push
        from oncotriage.serving.db.models import Study
        from oncotriage.serving.reports.versions import (
            ResultNotReadyError,
            build_versions,
            plan_report,
        )

        what = "result push"
        destination = push.destination_of(session, delivery.hospital_id)
        if destination is None:
            return "the hospital has no result destination any more", what
        study = session.get(Study, delivery.study_id) if delivery.study_id else None
        if study is None:
            return "the study no longer exists", what
        if self.store is None:
            return "this worker has no image store to build the SR from", what
        try:
            plan = plan_report(session, study)
        except ResultNotReadyError as error:
            return f"no report to push: {error}", what
        review_id = delivery.payload.get("review_id")
        if review_id is not None:
            wanted: str | None = plan.verified_sop_uid(int(review_id))
        else:
            wanted = plan.ai_sop_uid
        store = self.store
        timeout_s = self.settings.webhook_timeout_s

        def send() -> int:
            versions = build_versions(store, plan)
            dataset = next((ds for ds in versions if str(ds.SOPInstanceUID) == wanted), None)
            if dataset is None:
                raise push.PushError("the decision to report is not recorded", permanent=True)
            return push.send(destination, dataset, timeout_s=timeout_s)

        return send, what
