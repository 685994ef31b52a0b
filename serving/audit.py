"""Audit trail: who read or decided what, when. Details never carry patient identifiers."""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import AuditEvent
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import AuditAction
from oncotriage.serving.security import Principal
from oncotriage.serving.thread_priority import run_behind_model

logger = logging.getLogger(__name__)


def _actor(principal: Principal | None) -> tuple[str, int | None, str]:
    if principal is None:
        return "system", None, "system"
    if principal.is_hospital:
        return "hospital", principal.hospital_id, principal.name
    return "user", principal.user_id, principal.name


def record(
    session: Session,
    principal: Principal | None,
    action: AuditAction,
    *,
    study_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the session (committed with the caller's transaction)."""
    kind, actor_id, name = _actor(principal)
    event = AuditEvent(
        at=utcnow(),
        actor_kind=kind,
        actor_id=actor_id,
        actor_name=name,
        action=action,
        study_id=study_id,
        detail=detail,
    )
    session.add(event)
    return event


class ReadTrail:
    """Read events (who looked at which study) written in batches by a background thread.

    Decisions, claims and releases are recorded in the transaction that makes them
    (:func:`record`). Reads are the bulk of the traffic (hospitals poll their studies), so
    they are queued here and inserted together every ``flush_interval_s``, instead of
    turning every read into a write transaction. A crash loses at most the last interval's
    read events; :meth:`stop` flushes what is queued.
    """

    def __init__(self, db: Database, *, flush_interval_s: float = 0.25, nice: int = 0) -> None:
        self.db = db
        self.flush_interval_s = flush_interval_s
        self.nice = nice  # steps behind the model threads (serving/thread_priority.py)
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        principal: Principal,
        action: AuditAction,
        *,
        study_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        kind, actor_id, name = _actor(principal)
        event = {
            "at": utcnow(),
            "actor_kind": kind,
            "actor_id": actor_id,
            "actor_name": name,
            "action": action,
            "study_id": study_id,
            "detail": detail,
        }
        with self._lock:
            self._pending.append(event)
        if self._thread is None:  # not started (e.g. a script): write at once
            self.flush()

    def flush(self) -> int:
        """Write the queued events now; returns how many."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        try:
            with self.db.session() as session:
                session.execute(sa.insert(AuditEvent), pending)
        except Exception:
            logger.exception("could not write %d audit events; keeping them", len(pending))
            with self._lock:
                self._pending[:0] = pending
            return 0
        return len(pending)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        run_behind_model(self.nice, "ot-audit")
        while not self._stop.wait(self.flush_interval_s):
            self.flush()
