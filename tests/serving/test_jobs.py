"""The durable job queue on SQLite and PostgreSQL: claims, leases, retries, backoff."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from oncotriage.serving import jobs
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.migrate import upgrade
from oncotriage.serving.db.models import Hospital, Job, Series, Study
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import HospitalKind, JobState


@pytest.fixture
def db(db_url: str):
    upgrade(db_url)
    database = Database(db_url)
    yield database
    database.dispose()


def _jobs(db: Database, n: int, *, max_attempts: int = 3) -> list[int]:
    now = utcnow()
    with db.session() as session:
        hospital = Hospital(name="H", kind=HospitalKind.COMMUNITY)
        session.add(hospital)
        session.flush()
        study = Study(hospital_id=hospital.id, study_instance_uid="1.2.3")
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid="1.2.3.4")
        session.add(series)
        session.flush()
        rows = [
            Job(
                study_id=study.id,
                series_id=series.id,
                max_attempts=max_attempts,
                next_attempt_at=now,
            )
            for _ in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "expected"),
    [
        (1, 2.0, 300.0, 2.0),
        (2, 2.0, 300.0, 4.0),
        (5, 2.0, 300.0, 32.0),
        (10, 2.0, 300.0, 300.0),
        (3, 0.5, 1.0, 1.0),
    ],
)
def test_backoff(attempt: int, base: float, cap: float, expected: float) -> None:
    assert jobs.backoff_s(attempt, base, cap) == pytest.approx(expected, abs=1e-12)


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        jobs.backoff_s(0, 1.0, 10.0)


def test_concurrent_claims_never_share_a_job(db: Database) -> None:
    ids = _jobs(db, 40)
    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def claimer(name: str) -> None:
        barrier.wait()
        while True:
            with db.session() as session:
                lease = jobs.claim_next(session, Job, owner=name, lease_s=60, now=utcnow())
            if lease is None:
                return
            with lock:
                claimed.append(lease.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)
    assert max(Counter(claimed).values()) == 1
    with db.session() as session:
        states = set(session.scalars(sa.select(Job.state)))
        owners = set(session.scalars(sa.select(Job.lease_owner)))
    assert states == {JobState.RUNNING}
    assert owners <= {"w0", "w1", "w2", "w3"}


def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(db: Database) -> None:
    [job_id] = _jobs(db, 1)
    now = utcnow()
    with db.session() as session:
        first = jobs.claim_next(session, Job, owner="a", lease_s=10, now=now)
    assert first is not None and (first.id, first.attempt) == (job_id, 1)
    with db.session() as session:
        assert (
            jobs.claim_next(session, Job, owner="b", lease_s=10, now=now + timedelta(seconds=5))
            is None
        )
        assert jobs.renew(session, Job, first, lease_s=10, now=now + timedelta(seconds=5))
    later = now + timedelta(seconds=16)  # past the renewed lease (5 + 10)
    with db.session() as session:
        second = jobs.claim_next(session, Job, owner="b", lease_s=10, now=later)
    assert second is not None and (second.id, second.attempt, second.owner) == (job_id, 2, "b")
    with db.session() as session:
        # "a" lost its lease: nothing it writes lands
        assert not jobs.renew(session, Job, first, lease_s=10, now=later)
        assert not jobs.complete(session, Job, first, now=later)
        assert jobs.fail(session, Job, first, error="late", now=later, retry_in_s=1) is None
        assert jobs.complete(session, Job, second, now=later)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.state, job.attempts, job.lease_owner, job.last_error) == (
            JobState.DONE,
            2,
            None,
            None,
        )


def test_retries_then_final_failure(db: Database) -> None:
    [job_id] = _jobs(db, 1, max_attempts=2)
    now = utcnow()
    with db.session() as session:
        lease = jobs.claim_next(session, Job, owner="a", lease_s=10, now=now)
        assert lease is not None
        assert (
            jobs.fail(session, Job, lease, error="boom", now=now, retry_in_s=3) is JobState.QUEUED
        )
    with db.session() as session:
        # not due before the backoff has passed
        assert (
            jobs.claim_next(session, Job, owner="a", lease_s=10, now=now + timedelta(seconds=2))
            is None
        )
        lease = jobs.claim_next(session, Job, owner="a", lease_s=10, now=now + timedelta(seconds=3))
        assert lease is not None and lease.attempt == 2
        assert (
            jobs.fail(session, Job, lease, error="boom again", now=now, retry_in_s=3)
            is JobState.FAILED
        )
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 2, "boom again")
        assert (
            jobs.claim_next(session, Job, owner="a", lease_s=10, now=now + timedelta(days=1))
            is None
        )


def test_requeue_does_not_use_up_an_attempt(db: Database) -> None:
    [job_id] = _jobs(db, 1, max_attempts=1)
    now = utcnow()
    for _ in range(3):  # the backend is down three times in a row
        with db.session() as session:
            lease = jobs.claim_next(session, Job, owner="a", lease_s=10, now=now)
            assert lease is not None and lease.attempt == 1
            assert jobs.requeue(session, Job, lease, retry_in_s=0, now=now)
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.state, job.attempts) == (JobState.QUEUED, 0)
        depth = jobs.queue_depth(session, Job)
    assert (depth["queued"], depth["running"], depth["done"]) == (1, 0, 0)


def test_dead_workers_use_up_the_attempts(db: Database) -> None:
    [job_id] = _jobs(db, 1, max_attempts=1)
    now = utcnow()
    with db.session() as session:
        first = jobs.claim_next(session, Job, owner="a", lease_s=1, now=now)
        assert first is not None and not first.exhausted
    with db.session() as session:
        second = jobs.claim_next(session, Job, owner="b", lease_s=1, now=now + timedelta(seconds=2))
    assert second is not None and second.exhausted  # the worker decides it fails for good
