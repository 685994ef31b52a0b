"""The durable work queue: inference jobs and webhook deliveries, claimed under a lease.

Both tables share :class:`~oncotriage.serving.db.models.LeasedWork`'s columns. A row is
claimable when it is ``queued`` and due, or ``running`` with an expired lease (its
worker died). Claiming is race-free on both backends:

- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a row no other worker holds,
  then ``UPDATE`` leases it, in one transaction;
- SQLite: one conditional ``UPDATE ... WHERE id = (SELECT ...) AND <claimable>
  RETURNING id``, atomic under SQLite's single writer.

Every later write by the worker (heartbeat, completion, failure) is conditional on still
holding the lease, so a worker that lost its lease (paused too long, or presumed dead)
cannot overwrite the work of the worker that took over.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from oncotriage.serving.db.base import UTCDateTime
from oncotriage.serving.db.models import Job, LeasedWork, WebhookDelivery
from oncotriage.serving.enums import JobState

WorkTable = type[Job] | type[WebhookDelivery]

_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class Lease:
    """A claimed row: its id, the attempt number this claim is, and who holds it."""

    id: int
    attempt: int
    max_attempts: int
    owner: str
    #: the values of ``claim_next``'s ``returning`` columns, in their order
    values: tuple[Any, ...] = ()

    @property
    def exhausted(self) -> bool:
        """True when earlier attempts used up the budget (e.g. the workers running it died)."""
        return self.attempt > self.max_attempts


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (1-based).

    Exponential: ``base``, ``2 * base``, ``4 * base``, ... capped at ``max_s``.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    return float(min(max_s, base_s * 2 ** (attempt - 1)))


def _claimable(table: WorkTable, now: Any) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(table.state == JobState.QUEUED, table.next_attempt_at <= now),
        sa.and_(table.state == JobState.RUNNING, table.lease_expires_at < now),
    )


_ClaimStatements = tuple[Any, Any]  # (PostgreSQL's SELECT or None, the UPDATE)
_claim_statements: dict[tuple[WorkTable, str, tuple[int, ...]], _ClaimStatements] = {}
_claim_lock = threading.Lock()


def _claim_statements_for(
    table: WorkTable, dialect: str, returning: Sequence[Any]
) -> _ClaimStatements:
    """The claim statements of ``table``, built once (with bound parameters ``now``,
    ``owner``, ``expires`` and, on PostgreSQL, ``row_id``): building SQLAlchemy expressions
    costs more than running them."""
    key = (table, dialect, tuple(id(column) for column in returning))
    statements = _claim_statements.get(key)
    if statements is not None:
        return statements
    now = sa.bindparam("now", type_=UTCDateTime())
    lease_values = {
        "state": JobState.RUNNING,
        "lease_owner": sa.bindparam("owner", type_=sa.String()),
        "lease_expires_at": sa.bindparam("expires", type_=UTCDateTime()),
        "attempts": table.attempts + 1,
        "started_at": sa.func.coalesce(table.started_at, now),
    }
    columns = (table.id, table.attempts, table.max_attempts, *returning)
    select: Any = None
    if dialect == "postgresql":
        select = (
            sa.select(table.id)
            .where(_claimable(table, now))
            .order_by(table.next_attempt_at, table.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        update = (
            sa.update(table)
            .where(table.id == sa.bindparam("row_id", type_=sa.Integer()))
            .values(**lease_values)
            .returning(*columns)
        )
    else:
        candidate = (
            sa.select(table.id)
            .where(_claimable(table, now))
            .order_by(table.next_attempt_at, table.id)
            .limit(1)
            .scalar_subquery()
        )
        update = (
            sa.update(table)
            .where(table.id == candidate, _claimable(table, now))
            .values(**lease_values)
            .returning(*columns)
        )
    with _claim_lock:
        return _claim_statements.setdefault(key, (select, update))


def claim_next(
    session: Session,
    table: WorkTable,
    *,
    owner: str,
    lease_s: float,
    now: datetime,
    returning: Sequence[sa.ColumnElement[Any] | InstrumentedAttribute[Any]] = (),
) -> Lease | None:
    """Lease the next due row of ``table`` to ``owner``; ``None`` when nothing is due.

    Args:
        returning: more columns of the claimed row to read in the same statement; their
            values are in :attr:`Lease.values`.

    The caller commits the session (the lease is only visible to others after that).
    """
    select, update = _claim_statements_for(table, session.get_bind().dialect.name, returning)
    parameters: dict[str, Any] = {
        "now": now,
        "owner": owner,
        "expires": now + timedelta(seconds=lease_s),
    }
    if select is not None:  # PostgreSQL: lock a row no other worker holds, then lease it
        row_id = session.scalar(select, {"now": now})
        if row_id is None:
            return None
        parameters["row_id"] = row_id
    row = session.execute(
        update, parameters, execution_options={"synchronize_session": False}
    ).first()
    if row is None:
        return None
    return Lease(id=row[0], attempt=row[1], max_attempts=row[2], owner=owner, values=tuple(row[3:]))


def _held(table: WorkTable, lease: Lease) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.id == lease.id,
        table.state == JobState.RUNNING,
        table.lease_owner == lease.owner,
    )


def renew(
    session: Session, table: WorkTable, lease: Lease, *, lease_s: float, now: datetime
) -> bool:
    """Extend a held lease (heartbeat); False when the lease was lost."""
    result = session.execute(
        sa.update(table)
        .where(_held(table, lease))
        .values(lease_expires_at=now + timedelta(seconds=lease_s)),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


_complete_statements: dict[tuple[WorkTable, tuple[str, ...]], Any] = {}


def complete(
    session: Session, table: WorkTable, lease: Lease, *, now: datetime, **values: object
) -> bool:
    """Mark a held row done (setting ``values`` too); False (and nothing written) when the
    lease was lost."""
    key = (table, tuple(sorted(values)))
    statement = _complete_statements.get(key)
    if statement is None:  # built once per table and set of columns, then bound each time
        columns = table.__table__.c
        statement = (
            sa.update(table)
            .where(
                table.id == sa.bindparam("lease_id", type_=sa.Integer()),
                table.state == JobState.RUNNING,
                table.lease_owner == sa.bindparam("lease_owner_", type_=sa.String()),
            )
            .values(
                state=JobState.DONE,
                finished_at=sa.bindparam("finished_at_", type_=UTCDateTime()),
                lease_owner=None,
                lease_expires_at=None,
                last_error=None,
                **{name: sa.bindparam(f"{name}_", type_=columns[name].type) for name in values},
            )
        )
        with _claim_lock:
            statement = _complete_statements.setdefault(key, statement)
    result = session.execute(
        statement,
        {
            "lease_id": lease.id,
            "lease_owner_": lease.owner,
            "finished_at_": now,
            **{f"{name}_": value for name, value in values.items()},
        },
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail(
    session: Session,
    table: WorkTable,
    lease: Lease,
    *,
    error: str,
    now: datetime,
    retry_in_s: float | None,
) -> JobState | None:
    """Record a failed attempt of a held row.

    Args:
        error: why it failed (kept in ``last_error``; no patient identifiers).
        retry_in_s: seconds until the next attempt, or ``None`` for a permanent failure.
            Retries stop when the attempts are used up.

    Returns:
        the row's new state (``queued`` for a retry, ``failed`` when final), or ``None``
        when the lease was lost and nothing was written.
    """
    final = retry_in_s is None or lease.attempt >= lease.max_attempts
    values: dict[str, object] = {
        "last_error": error[:_MAX_ERROR_CHARS],
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if final:
        values.update(state=JobState.FAILED, finished_at=now)
    else:
        assert retry_in_s is not None
        values.update(state=JobState.QUEUED, next_attempt_at=now + timedelta(seconds=retry_in_s))
    result = session.execute(
        sa.update(table).where(_held(table, lease)).values(**values),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return JobState.FAILED if final else JobState.QUEUED


def supersede(
    session: Session, table: WorkTable, lease: Lease, *, reason: str, now: datetime
) -> bool:
    """Retire a held row without running it (its work is done by another row: e.g. a CT
    series of a study when another series of the study is the one scored); ``reason``
    stays in ``last_error``. False when the lease was lost."""
    result = session.execute(
        sa.update(table)
        .where(_held(table, lease))
        .values(
            state=JobState.SUPERSEDED,
            finished_at=now,
            last_error=reason[:_MAX_ERROR_CHARS],
            lease_owner=None,
            lease_expires_at=None,
        ),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def requeue(
    session: Session, table: WorkTable, lease: Lease, *, retry_in_s: float, now: datetime
) -> bool:
    """Put a held row back in the queue without counting this attempt (the failure was
    not the work's fault, e.g. the inference backend is down); False when the lease was lost."""
    result = session.execute(
        sa.update(table)
        .where(_held(table, lease))
        .values(
            state=JobState.QUEUED,
            attempts=table.attempts - 1,
            next_attempt_at=now + timedelta(seconds=retry_in_s),
            lease_owner=None,
            lease_expires_at=None,
        ),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def queue_depth(session: Session, table: WorkTable) -> dict[str, int]:
    """Rows per state (``queued``, ``running``, ...), for metrics and readiness."""
    rows = session.execute(sa.select(table.state, sa.func.count()).group_by(table.state)).all()
    depth = {state.value: 0 for state in JobState}
    for state, count in rows:
        depth[JobState(state).value] = int(count)
    return depth


class WorkSignal:
    """Wakes this process's idle workers when work is queued here, instead of their next poll.

    Intake calls :meth:`notify` after committing new jobs (``due_in_s`` > 0 for a CT series
    that settles first); each worker subscribes an event and sleeps on it. Workers
    in other processes are not reached and keep polling every ``worker_poll_interval_s``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[threading.Event] = set()
        self._due: list[float] = []  # monotonic times when queued jobs become due (a heap)

    def subscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._listeners.add(event)

    def unsubscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._listeners.discard(event)

    def notify(self, due_in_s: float = 0.0) -> None:
        """Work was queued; it can be claimed ``due_in_s`` seconds from now."""
        with self._lock:
            if due_in_s > 0:
                heapq.heappush(self._due, time.monotonic() + due_in_s)
            listeners = list(self._listeners)
        for event in listeners:
            event.set()

    def wake_all(self) -> None:
        """Wake every subscribed worker (e.g. to see a stop request at once)."""
        self.notify()

    def next_due(self, after: float) -> float | None:
        """The earliest due time (monotonic) later than ``after``; earlier ones are dropped
        (a claim made at ``after`` saw them)."""
        with self._lock:
            while self._due and self._due[0] <= after:
                heapq.heappop(self._due)
            return self._due[0] if self._due else None


#: The signal of this process (intake notifies, in-process workers wait on it).
work_signal = WorkSignal()


__all__ = [
    "Lease",
    "LeasedWork",
    "WorkSignal",
    "backoff_s",
    "claim_next",
    "complete",
    "fail",
    "queue_depth",
    "renew",
    "requeue",
    "work_signal",
]
