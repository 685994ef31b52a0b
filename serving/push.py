"""Results pushed back into a hospital's PACS: its DICOM SR, by STOW-RS or C-STORE.

A hospital names one destination (``oncotriage admin set-results-destination``, or
``PUT /v1/hospitals/{id}/results-destination`` for administrators):

- ``stow``: a DICOMweb STOW-RS URL (``.../studies``), with no auth, a bearer token or HTTP
  Basic credentials;
- ``dimse``: a DICOM node (AE title, host, port) that accepts C-STORE (pynetdicom SCU; our
  calling AE title defaults to ``ONCOTRIAGE``).

When a study is triaged, and on each specialist's decision, a ``result.sr`` row goes into the
durable outbox (:mod:`oncotriage.serving.outbox`) in the transaction of the change; a
worker's :class:`~oncotriage.serving.delivery.WebhookOutbox` claims it, builds that version
of the SR (:mod:`oncotriage.serving.reports.versions`: the same UIDs and bytes on every
retry, so a PACS that got it once stores it once) and sends it here, retried with the
outbox's backoff. Every attempt's outcome is in ``/metrics``
(``oncotriage_result_push_attempts_total{kind,outcome}``) and the hospital sees its last push
(``GET /v1/hospitals/me/results-destination``, and the hospital page).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pydicom
import sqlalchemy as sa
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Hospital, ResultDestination, WebhookDelivery
from oncotriage.serving.delivery import WebhookDeliveryError
from oncotriage.serving.enums import JobState, WebhookEvent

logger = logging.getLogger(__name__)

KINDS = ("stow", "dimse")
AUTHS = ("none", "bearer", "basic")
DEFAULT_CALLING_AE = "ONCOTRIAGE"
_RETRYABLE_4XX = {408, 429}


class PushError(WebhookDeliveryError):
    """A push failed; ``permanent`` when the destination refused the object for good."""


class DestinationError(ValueError):
    """A destination the service cannot use (the message names the fix)."""


@dataclass(frozen=True)
class Destination:
    """A hospital's result destination (the secret is never shown)."""

    kind: str
    url: str | None = None
    auth: str = "none"
    username: str | None = None
    secret: str | None = None
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    calling_ae_title: str = DEFAULT_CALLING_AE

    @classmethod
    def of(cls, row: ResultDestination) -> Destination:
        return cls(
            kind=row.kind,
            url=row.url,
            auth=row.auth,
            username=row.username,
            secret=row.secret,
            ae_title=row.ae_title,
            host=row.host,
            port=row.port,
            calling_ae_title=row.calling_ae_title or DEFAULT_CALLING_AE,
        )

    def describe(self) -> str:
        """Where results go, without secrets (``STOW-RS <url>`` or ``C-STORE AE@host:port``)."""
        if self.kind == "stow":
            return f"STOW-RS {self.url} ({self.auth} auth)"
        return f"C-STORE {self.ae_title}@{self.host}:{self.port} (from {self.calling_ae_title})"

    def check(self) -> None:
        """Raise :class:`DestinationError` when a field is missing or malformed."""
        if self.kind not in KINDS:
            raise DestinationError(f"destination kind must be one of {', '.join(KINDS)}")
        if self.kind == "stow":
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise DestinationError(
                    "a STOW-RS destination needs an http(s) URL, e.g. "
                    "https://pacs.example.org/dicom-web/studies"
                )
            if self.auth not in AUTHS:
                raise DestinationError(f"auth must be one of {', '.join(AUTHS)}")
            if self.auth in ("bearer", "basic") and not self.secret:
                raise DestinationError(f"{self.auth} auth needs a token or password")
            if self.auth == "basic" and not self.username:
                raise DestinationError("basic auth needs a user name")
            return
        for label, title in (
            ("AE title", self.ae_title),
            ("calling AE title", self.calling_ae_title),
        ):
            if not title or len(title) > 16 or not title.isascii() or "\\" in title:
                raise DestinationError(
                    f"the {label} must be 1 to 16 ASCII characters without a backslash"
                )
        if not self.host:
            raise DestinationError("a DICOM node needs a host name or address")
        if self.port is None or not 1 <= self.port <= 65535:
            raise DestinationError("a DICOM node needs a port between 1 and 65535")


def set_destination(session: Session, hospital: str, destination: Destination) -> Hospital:
    """Give the hospital named ``hospital`` this destination (replacing any it had).

    Raises:
        DestinationError: no such hospital, or an unusable destination.
    """
    destination.check()
    row = session.scalar(sa.select(Hospital).where(Hospital.name == hospital))
    if row is None:
        raise DestinationError(f"no hospital named {hospital!r}")
    current = session.scalar(
        sa.select(ResultDestination).where(ResultDestination.hospital_id == row.id)
    )
    if current is None:
        current = ResultDestination(hospital_id=row.id)
        session.add(current)
    current.kind = destination.kind
    current.url = destination.url if destination.kind == "stow" else None
    current.auth = destination.auth if destination.kind == "stow" else "none"
    current.username = destination.username if destination.auth == "basic" else None
    current.secret = destination.secret if destination.auth in ("bearer", "basic") else None
    current.ae_title = destination.ae_title if destination.kind == "dimse" else None
    current.host = destination.host if destination.kind == "dimse" else None
    current.port = destination.port if destination.kind == "dimse" else None
    current.calling_ae_title = destination.calling_ae_title if destination.kind == "dimse" else None
    session.flush()
    return row


def clear_destination(session: Session, hospital: str) -> bool:
    """Stop pushing results to ``hospital``; False when it had no destination."""
    row = session.scalar(sa.select(Hospital).where(Hospital.name == hospital))
    if row is None:
        raise DestinationError(f"no hospital named {hospital!r}")
    result = session.execute(
        sa.delete(ResultDestination).where(ResultDestination.hospital_id == row.id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def destination_of(session: Session, hospital_id: int) -> Destination | None:
    row = session.scalar(
        sa.select(ResultDestination).where(ResultDestination.hospital_id == hospital_id)
    )
    return Destination.of(row) if row is not None else None


@dataclass(frozen=True)
class PushStatus:
    """The hospital's view of its pushes: the last one, and how many wait or failed."""

    destination: Destination | None
    last_state: str | None = None
    last_study_id: str | None = None
    last_version: str | None = None
    last_attempts: int = 0
    last_error: str | None = None
    last_at: datetime | None = None
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    pending: int = 0
    failed: int = 0


def push_status(session: Session, hospital_id: int) -> PushStatus:
    """The last result push of the hospital (by time queued), and the counts by state."""
    destination = destination_of(session, hospital_id)
    pushes = sa.and_(
        WebhookDelivery.hospital_id == hospital_id,
        WebhookDelivery.event == WebhookEvent.RESULT_SR,
    )
    last = session.scalar(
        sa.select(WebhookDelivery)
        .where(pushes)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(1)
    )
    counts = dict(
        session.execute(
            sa.select(WebhookDelivery.state, sa.func.count())
            .where(pushes)
            .group_by(WebhookDelivery.state)
        ).all()
    )
    pending = int(counts.get(JobState.QUEUED, 0)) + int(counts.get(JobState.RUNNING, 0))
    if last is None:
        return PushStatus(destination, pending=pending, failed=int(counts.get(JobState.FAILED, 0)))
    state = "delivered" if last.state is JobState.DONE else last.state.value
    if last.state is JobState.QUEUED and last.attempts > 0:
        state = "retrying"
    return PushStatus(
        destination,
        last_state=state,
        last_study_id=last.study_id,
        last_version=str(last.payload.get("version", "")) or None,
        last_attempts=last.attempts,
        last_error=last.last_error,
        last_at=last.finished_at or last.started_at or last.created_at,
        delivered_at=last.delivered_at,
        next_attempt_at=last.next_attempt_at if last.state is JobState.QUEUED else None,
        pending=pending,
        failed=int(counts.get(JobState.FAILED, 0)),
    )


def send(destination: Destination, dataset: Dataset, *, timeout_s: float) -> int:
    """Send one SR to ``destination``; the HTTP status (STOW-RS) or DIMSE status (C-STORE).

    Raises:
        PushError: not stored (``permanent`` when resending cannot help).
    """
    if destination.kind == "stow":
        return send_stow(destination, _part10(dataset), timeout_s=timeout_s)
    return send_c_store(destination, dataset, timeout_s=timeout_s)


def _part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def send_stow(destination: Destination, payload: bytes, *, timeout_s: float) -> int:
    """POST one Part 10 object to a STOW-RS URL (PS3.18 10.5).

    2xx is stored; 408, 429, 5xx and connection errors are retried; any other 4xx (refused,
    e.g. 409 with a FailedSOPSequence or 401 for bad credentials) is final.
    """
    import httpx

    from oncotriage.serving.dicomweb import encode_multipart

    boundary = "oncotriage-sr-push"
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        "User-Agent": "oncotriage-push/1",
    }
    auth: Any = None
    if destination.auth == "bearer":
        headers["Authorization"] = f"Bearer {destination.secret}"
    elif destination.auth == "basic":
        auth = httpx.BasicAuth(destination.username or "", destination.secret or "")
    body = encode_multipart([payload], "application/dicom", boundary)
    try:
        response = httpx.post(
            str(destination.url),
            content=body,
            headers=headers,
            auth=auth,
            timeout=timeout_s,
            follow_redirects=False,
        )
    except httpx.HTTPError as error:
        raise PushError(f"STOW-RS {type(error).__name__}: {error}") from error
    status = response.status_code
    if 200 <= status < 300:
        return status
    permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
    detail = response.text[:300].strip()
    raise PushError(
        f"STOW-RS answered HTTP {status}" + (f": {detail}" if detail else ""), permanent=permanent
    )


#: C-STORE failure statuses resending cannot fix: SOP class not supported (0x0122), data set
#: does not match SOP class (0xA9xx).
def _permanent_dimse(status: int) -> bool:
    return status == 0x0122 or 0xA900 <= status <= 0xA9FF


def send_c_store(destination: Destination, dataset: Dataset, *, timeout_s: float) -> int:
    """C-STORE one object to a DICOM node (pynetdicom SCU); the DIMSE status (0 or a warning).

    An association that is refused, aborted or times out is retried, as are failure
    statuses other than "SOP class not supported" and "does not match SOP class".
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        Comprehensive3DSRStorage,
        ComprehensiveSRStorage,
        EnhancedSRStorage,
    )

    ae = AE(ae_title=destination.calling_ae_title)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    sop_class = str(dataset.SOPClassUID)
    for context in (Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage):
        if context == sop_class:
            ae.add_requested_context(context)
    if not ae.requested_contexts:
        ae.add_requested_context(sop_class)
    target = f"{destination.ae_title}@{destination.host}:{destination.port}"
    assoc = ae.associate(
        str(destination.host), int(destination.port or 0), ae_title=str(destination.ae_title)
    )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted or unreachable"
        raise PushError(f"C-STORE association with {target} {reason}")
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    if not status or "Status" not in status:
        raise PushError(f"C-STORE to {target}: no response (timeout or aborted)")
    code = int(status.Status)
    if code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success, or stored with a warning
        return code
    raise PushError(
        f"C-STORE to {target} failed with status 0x{code:04X}", permanent=_permanent_dimse(code)
    )
