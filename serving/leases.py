"""Leases a worker holds, renewed from one heartbeat thread (jobs and webhook deliveries)."""

from __future__ import annotations

import logging
import threading

from oncotriage.serving import jobs
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.session import Database

__all__ = ["HeldLease", "LeaseKeeper"]

logger = logging.getLogger(__name__)


class HeldLease:
    """A lease a :class:`LeaseKeeper` renews; ``lost`` once a renewal found it taken."""

    def __init__(self, lease: jobs.Lease) -> None:
        self.lease = lease
        self.lost = False


class LeaseKeeper:
    """Renews every lease a worker holds, every ``interval_s``, from one daemon thread.

    One thread per worker for all its jobs (the running one and the one read ahead),
    rather than a thread started and joined for each job.
    """

    def __init__(
        self,
        db: Database,
        table: jobs.WorkTable,
        *,
        lease_s: float,
        interval_s: float,
        name: str,
    ) -> None:
        self._db, self._table = db, table
        self._lease_s, self._interval_s = lease_s, interval_s
        self._name = name
        self._held: dict[int, HeldLease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, lease: jobs.Lease) -> HeldLease:
        """Start renewing ``lease`` (the claim gave it a full ``lease_s`` already)."""
        held = HeldLease(lease)
        with self._lock:
            self._held[lease.id] = held
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"{self._name}-leases", daemon=True
                )
                self._thread.start()
        return held

    def release(self, held: HeldLease) -> None:
        """Stop renewing (the job is recorded, failed or given back)."""
        with self._lock:
            self._held.pop(held.lease.id, None)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                held_now = list(self._held.values())
            for held in held_now:
                try:
                    with self._db.session() as session:
                        renewed = jobs.renew(
                            session, self._table, held.lease, lease_s=self._lease_s, now=utcnow()
                        )
                except Exception:  # a missed beat is not fatal; the next one may succeed
                    logger.warning(
                        "heartbeat for %s %d failed", self._table.__name__, held.lease.id
                    )
                    continue
                if not renewed:
                    held.lost = True
                    with self._lock:
                        self._held.pop(held.lease.id, None)
