"""Workers: claim a job, read the images, route it to its model, run the detector, triage,
record; and deliver the outbox's webhooks.

The pieces live beside it: leases renewed by one heartbeat thread
(:mod:`oncotriage.serving.leases`), the served models and routing
(:mod:`oncotriage.serving.modelset`, :mod:`oncotriage.serving.routing`), webhook delivery
(:mod:`oncotriage.serving.delivery`) and the pool of worker threads
(:mod:`oncotriage.serving.pool`).

A :class:`Worker` runs in a thread of ``oncotriage serve`` (``embedded_workers``) or in an
``oncotriage worker`` process; any number of either can share one database. Each claimed
job is held under a lease renewed by the worker's heartbeat thread; if the worker dies,
the lease expires and another worker takes the job over (its attempt counts). Transient
errors are retried with exponential backoff; an image the reader refuses fails at once;
when the attempts are used up the study becomes ``needs_manual_review`` with the reason.

Each worker keeps its model busy: the network runs on a thread of its own (at the base
priority, nothing but the network), and the worker's thread meanwhile turns the previous
job's network maps into findings and records them, and claims, reads and preprocesses the
next job (see :class:`Worker`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pydicom
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased, joinedload

from oncotriage.datasets.roles import SeriesRole
from oncotriage.models.findings import Finding as DetectedFinding
from oncotriage.serving import jobs
from oncotriage.serving.db.base import UTCDateTime, utcnow
from oncotriage.serving.db.models import Finding, Instance, Job, Series, Study
from oncotriage.serving.db.session import Database
from oncotriage.serving.delivery import WebhookOutbox, WebhookSender
from oncotriage.serving.enums import JobState, Priority, StudyStatus, WebhookEvent
from oncotriage.serving.inference import (
    BackendUnavailableError,
    LoadedModel,
    ModelManager,
    ModelUnavailableError,
)
from oncotriage.serving.leases import HeldLease, LeaseKeeper
from oncotriage.serving.modelset import ModelSet, NoModelFitsError
from oncotriage.serving.monitoring.hold import HoldCheck
from oncotriage.serving.monitoring.monitor import Monitor, MonitorTask
from oncotriage.serving.outbox import enqueue_result_push, enqueue_webhook
from oncotriage.serving.referrals import escalate_overdue
from oncotriage.serving.routing import (
    ROUTING_TAGS,
    Route,
    SeriesChoice,
    SeriesFacts,
    choose_ct_series,
)
from oncotriage.serving.settings import Settings
from oncotriage.serving.storage import ContentStore
from oncotriage.serving.thread_priority import name_native_thread, run_behind_model
from oncotriage.serving.triage import (
    calibrated_suspicion_score,
    priority_for,
    refresh_study,
    suspicion_score,
)

if TYPE_CHECKING:
    import numpy as np

    from oncotriage.datasets.image import ImageVolume
    from oncotriage.models.pipeline import PreparedInput

logger = logging.getLogger(__name__)


def worker_name(suffix: str = "") -> str:
    """``host:pid[:suffix]``: names the lease owner in the jobs table."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}:{suffix}" if suffix else name


# Statements of every job, built once (building SQLAlchemy expressions costs more than
# running them on a small table).
_INSTANCE_PATH = sa.select(Instance.stored_path).where(
    Instance.id == sa.bindparam("instance_id", type_=sa.Integer())
)
_SERIES_PATHS = (
    sa.select(Instance.stored_path)
    .where(Instance.series_id == sa.bindparam("series_id", type_=sa.Integer()))
    .order_by(Instance.id)
)
_SIBLING = aliased(Series)
_VOLUME_SIBLINGS = (
    # the study's diagnostic volume series of the job's modality, each with one stored
    # instance (for its header) and its instance count: the candidates of the CT series choice
    sa.select(
        Series.id,
        Series.series_instance_uid,
        sa.func.min(Instance.stored_path),
        sa.func.count(Instance.id),
    )
    .join(Instance, Instance.series_id == Series.id)
    .join(
        _SIBLING,
        sa.and_(_SIBLING.study_id == Series.study_id, _SIBLING.modality == Series.modality),
    )
    .where(
        _SIBLING.id == sa.bindparam("series_id", type_=sa.Integer()),
        Series.is_volume.is_(True),
        Series.role == SeriesRole.DIAGNOSTIC.value,
    )
    .group_by(Series.id, Series.series_instance_uid)
    .order_by(Series.id)
)
_STUDY_PROCESSING = (
    sa.update(Study)
    .where(
        Study.id == sa.bindparam("study_id", type_=sa.String()),
        Study.status.in_([StudyStatus.RECEIVED, StudyStatus.QUEUED]),
    )
    .values(
        status=StudyStatus.PROCESSING,
        processing_started_at=sa.func.coalesce(
            Study.processing_started_at, sa.bindparam("now", type_=UTCDateTime())
        ),
        updated_at=sa.bindparam("now", type_=UTCDateTime()),
    )
)


#: Claimed jobs a worker keeps read and waiting for its model.
READ_AHEAD = 2


def _retire_runs(session: Session, job_ids: list[int], **values: object) -> None:
    """Mark finished runs superseded (their findings go): a newer run's result replaces
    theirs. ``values`` sets more columns (e.g. ``last_error``, the reason)."""
    if not job_ids:
        return
    session.execute(sa.delete(Finding).where(Finding.job_id.in_(job_ids)))
    session.execute(
        sa.update(Job).where(Job.id.in_(job_ids)).values(state=JobState.SUPERSEDED, **values),
        execution_options={"synchronize_session": False},
    )


class PermanentJobError(Exception):
    """An error retrying cannot fix (the images are unusable)."""


@dataclass(frozen=True)
class _JobInput:
    job_id: int
    study_id: str
    series_id: int
    instance_id: int | None
    stored_paths: tuple[str, ...]


@dataclass
class _Prepared:
    """A claimed job with its images read and preprocessed, waiting for (or on) the model."""

    lease: jobs.Lease
    job_input: _JobInput
    model: LoadedModel
    network_input: PreparedInput
    held: HeldLease
    prepare_s: float
    passed_over: tuple[int, ...] = ()
    """Other series of the study the CT series choice passed over (their finished runs
    are retired when this one completes)."""


@dataclass
class _Inferred:
    """What the network made of a prepared job: its head maps, or the error it raised."""

    prepared: _Prepared
    maps: list[np.ndarray]
    elapsed_s: float
    error: Exception | None

    @property
    def lease(self) -> jobs.Lease:
        return self.prepared.lease


class Worker:
    """Processes inference jobs and webhook deliveries from the shared database.

    :meth:`run` keeps the model busy: while the network scores one job on the worker's model
    thread, the worker's own thread turns the previous job's network maps into findings and
    records them, claims the next job, reads its images and preprocesses them, so the
    database, image reading and the model's numpy steps overlap the network instead of
    adding to it. The model thread runs nothing but the network (which releases the GIL),
    at the base priority; this thread runs ``service_thread_nice`` steps behind it
    (:mod:`oncotriage.serving.thread_priority`; measured in docs/benchmarks.md). Up to
    :data:`READ_AHEAD` claimed jobs wait for the model (their leases are renewed like a
    running job's: a short stall of the database, e.g. SQLite's single writer busy with
    intake, then does not leave the model idle); on stop they are put back in the queue
    unstarted.

    Args:
        settings: lease, retry and backoff settings.
        db: the database.
        store: the image store.
        models: the served models (a :class:`~oncotriage.serving.modelset.ModelSet`, or one
            manager); each job goes to the model whose intended inputs fit its series
            (:meth:`ModelSet.for_image`) and pins that model for its whole run.
        name: lease owner name (default ``host:pid``).
        webhook_sender: overrides :func:`oncotriage.serving.delivery.default_webhook_sender`.
        signal: wakes the idle worker when intake queues work in this process.
        monitor: gets every completed job after its result is committed (input statistics,
            the challenger's shadow score, drift charts: :mod:`oncotriage.serving.monitoring`).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: ContentStore,
        models: ModelManager | ModelSet,
        *,
        name: str | None = None,
        webhook_sender: WebhookSender | None = None,
        signal: jobs.WorkSignal | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.holds = HoldCheck(settings.hold_check_interval_s)
        self.db = db
        self.store = store
        self.models = ModelSet.of(models)
        self.name = name or worker_name()
        self.signal = signal or jobs.work_signal
        self.leases = LeaseKeeper(
            db,
            Job,
            lease_s=settings.job_lease_s,
            interval_s=settings.heartbeat_interval_s,
            name=self.name,
        )
        self._last_model_warning = -1e9
        self.webhooks = WebhookOutbox(
            settings, db, name=self.name, sender=webhook_sender, store=store
        )
        self._escalation_due_at = 0.0  # monotonic; overdue referral steps are swept then

    # -- loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set (the job on the model then finishes and is recorded).

        The model runs on a second thread (see the class docstring); this thread claims,
        reads, records and delivers webhooks. Idle, it sleeps until intake in this process
        queues work or ``worker_poll_interval_s`` passes (other processes' work is polled).
        """
        logger.info("worker %s started", self.name)
        wake = threading.Event()
        ready: queue.Queue[_Prepared | None] = queue.Queue(maxsize=READ_AHEAD)
        done: queue.SimpleQueue[_Inferred] = queue.SimpleQueue()
        model_thread = threading.Thread(
            target=self._model_loop,
            args=(ready, done, wake),
            name=f"{self.name}-model",
            daemon=True,
        )
        self.signal.subscribe(wake)
        model_thread.start()
        # The model thread keeps the base priority; this thread (claims, reads, results,
        # webhooks) and the lease keeper it starts run behind it (serving/thread_priority.py).
        run_behind_model(self.settings.service_thread_nice, "ot-worker")
        in_hand = 0  # jobs given to the model thread and not yet recorded
        try:
            while not stop.is_set():
                if not model_thread.is_alive():  # never expected: _infer catches errors
                    logger.error("worker %s: its model thread died; stopping", self.name)
                    break
                wake.clear()
                claim_started = time.monotonic()
                busy = False
                try:
                    while True:  # record what the model finished
                        try:
                            inferred = done.get_nowait()
                        except queue.Empty:
                            break
                        in_hand -= 1
                        busy = True
                        self._finish(inferred)
                    if in_hand <= READ_AHEAD:  # one on the model, READ_AHEAD behind it
                        claim_started = time.monotonic()
                        claimed = self._claim()
                        if isinstance(claimed, _Prepared):
                            ready.put(claimed)
                            in_hand += 1
                        busy = busy or bool(claimed)
                    self._escalate_due_referrals()
                    busy = self.webhooks.deliver_due(working=in_hand > 0) or busy
                except Exception:
                    logger.exception("worker %s: unexpected error; continuing", self.name)
                    busy = False
                if not busy:
                    timeout = self.settings.worker_poll_interval_s
                    due = self.signal.next_due(claim_started)
                    if due is not None:  # a CT series settles before the next poll
                        timeout = min(timeout, max(0.0, due - time.monotonic()) + 0.01)
                    wake.wait(timeout)
        finally:
            self.signal.unsubscribe(wake)
            while True:  # jobs still waiting for the model go back to the queue unstarted
                try:
                    waiting = ready.get_nowait()
                except queue.Empty:
                    break
                if waiting is not None:
                    in_hand -= 1
                    self._give_back(waiting)
            ready.put(None)
            while in_hand > 0 and (model_thread.is_alive() or not done.empty()):
                try:
                    inferred = done.get(timeout=1.0)
                except queue.Empty:
                    continue
                in_hand -= 1
                self._finish_safely(inferred)
            model_thread.join()
            self.leases.stop()
        logger.info("worker %s stopped", self.name)

    def _model_loop(
        self,
        ready: queue.Queue[_Prepared | None],
        done: queue.SimpleQueue[_Inferred],
        wake: threading.Event,
    ) -> None:
        """The model thread: score prepared jobs back to back until given ``None``."""
        name_native_thread("ot-model")
        while (prepared := ready.get()) is not None:
            done.put(self._infer(prepared))
            wake.set()

    def _finish_safely(self, inferred: _Inferred) -> None:
        try:
            self._finish(inferred)
        except Exception:  # the lease expires and another worker redoes the job
            logger.exception("worker %s: could not record job %d", self.name, inferred.lease.id)

    def _escalate_due_referrals(self) -> None:
        """Every ``referral_escalation_interval_s``, escalate overdue referral steps
        (``referrals.escalate_overdue``: once each, rows locked with SKIP LOCKED, so several
        workers and processes may sweep at once). Webhooks it queues go out next."""
        now = time.monotonic()
        if now < self._escalation_due_at:
            return
        self._escalation_due_at = now + self.settings.referral_escalation_interval_s
        with self.db.session() as session:
            escalated = escalate_overdue(session, self.settings, now=utcnow())
        if escalated:
            logger.info("worker %s: escalated %d overdue referral steps", self.name, escalated)
            self.webhooks.soon()

    # -- inference jobs ----------------------------------------------------------------------

    def _model_ready(self) -> bool:
        """Whether some route's model is loaded; without any, jobs stay queued (attempts
        untouched). A job whose route's model is down waits on its own (``for_image``)."""
        if self.models.any_loaded():
            return True
        now = time.monotonic()
        if now - self._last_model_warning > 60:
            logger.warning("no model loaded; jobs wait: %s", self.models.last_error)
            self._last_model_warning = now
        return False

    def _claim(self) -> _Prepared | bool:
        """Claim the next due job and read its images.

        Returns:
            the job, ready for the model; True when a job was claimed and settled without
            the model (its attempts used up, its images unusable, no model); False when
            nothing is due.
        """
        if not self._model_ready():
            return False
        with self.db.session() as session:
            # Claim and start in one transaction: one round of locking per job.
            lease = jobs.claim_next(
                session,
                Job,
                owner=self.name,
                lease_s=self.settings.job_lease_s,
                now=utcnow(),
                returning=(Job.study_id, Job.series_id, Job.instance_id),
            )
            if lease is None:
                return False
            job_input = None if lease.exhausted else self._start_job(session, lease)
            held_for = (
                self.holds.reason(session, job_input.study_id) if job_input is not None else None
            )
        logger.debug(
            "job %d claimed (attempt %d)",
            lease.id,
            lease.attempt,
            extra={"fields": {"job_id": lease.id, "attempt": lease.attempt, "worker": self.name}},
        )
        if lease.exhausted:
            self._fail_job(
                lease,
                f"inference failed after {lease.max_attempts} attempts: the workers running it "
                "stopped before finishing",
                permanent=True,
            )
            return True
        if job_input is None:
            return True
        if held_for is not None:  # a drift alarm set to hold: people read it, unscored
            self._fail_job(lease, held_for, permanent=True)
            return True
        held = self.leases.hold(lease)
        try:
            image = self._read(job_input)
            model = self._route(job_input, image)
            choice = self._choose_series(job_input, model)
            if choice.chosen != job_input.series_id:
                self.leases.release(held)
                self._pass_over(lease, job_input, choice.reason)
                return True
            started = time.perf_counter()
            network_input = self._prepare(model, image)
            prepare_s = time.perf_counter() - started
        except Exception as error:
            self.leases.release(held)
            self._settle_error(lease, error)
            return True
        except BaseException:
            self.leases.release(held)
            raise
        return _Prepared(
            lease, job_input, model, network_input, held, prepare_s, choice.passed_over
        )

    def _route(self, job_input: _JobInput, image: ImageVolume) -> LoadedModel:
        """The model whose intended use fits the series (NoModelFitsError: none does): the
        one check of the fit, with the header's body part, view, slice thickness and kernel."""
        return self.models.for_image(image, self._header(job_input.stored_paths[0]))

    def _choose_series(self, job_input: _JobInput, model: LoadedModel) -> SeriesChoice:
        """Which of the study's volume series of this modality is scored (the written rule,
        :func:`oncotriage.serving.routing.choose_ct_series`: thinnest slices, then a lung
        kernel, then the most slices); a study with one such series scores it."""
        if job_input.instance_id is not None:
            return SeriesChoice(job_input.series_id)
        with self.db.session() as session:
            siblings = session.execute(_VOLUME_SIBLINGS, {"series_id": job_input.series_id}).all()
        if len(siblings) < 2:
            return SeriesChoice(job_input.series_id)
        facts: dict[str, SeriesFacts] = {}
        ids: dict[str, int] = {}
        for series_id, series_uid, first_path, count in siblings:
            header = self._header(first_path)
            facts[series_uid] = SeriesFacts.from_dataset(
                header if header is not None else pydicom.Dataset(),
                slices=int(count),
                series_uid=series_uid,
            )
            ids[series_uid] = int(series_id)
        route = Route(name=model.name, uri="", reads=model.spec.reads)
        chosen = choose_ct_series(list(facts.values()), route)
        chosen_id = ids[chosen.series_uid]
        thickness = f"{chosen.slice_thickness_mm:g} mm slices" if chosen.slice_thickness_mm else ""
        kernel = f"kernel {chosen.convolution_kernel}" if chosen.convolution_kernel else ""
        detail = ", ".join(part for part in (thickness, kernel, f"{chosen.slices} slices") if part)
        return SeriesChoice(
            chosen_id,
            passed_over=tuple(i for i in ids.values() if i != chosen_id),
            reason=(
                f"not scored: the study is triaged on series {chosen.series_uid} ({detail}), "
                "chosen by the CT series rule (thinnest slices, then a lung kernel)"
            ),
        )

    def _pass_over(self, lease: jobs.Lease, job_input: _JobInput, reason: str) -> None:
        """Retire a series job the CT series choice passed over (no model run)."""
        now = utcnow()
        with self.db.session() as session:
            if not jobs.supersede(session, Job, lease, reason=reason, now=now):
                logger.warning("job %d: lease lost before it was passed over", lease.id)
                return
            self._refresh_and_notify(session, job_input.study_id, now=now)
        logger.info("job %d passed over: %s", lease.id, reason)

    def _header(self, stored_path: str) -> Any | None:
        """The routing attributes of a stored instance (None when it cannot be read: the
        reader has read it already, and an unstated value is accepted)."""
        try:
            return pydicom.dcmread(
                self.store.path(stored_path),
                stop_before_pixels=True,
                specific_tags=list(ROUTING_TAGS),
            )
        except Exception:
            return None

    @staticmethod
    def _prepare(model: LoadedModel, image: ImageVolume) -> PreparedInput:
        """The network input, once the image (already routed to ``model``) is readable.

        Raises:
            PermanentJobError: it fails the quality gate ("image_quality: ..."); a person
                reads it instead.
        """
        from oncotriage.datasets.image import UnsupportedImageError
        from oncotriage.datasets.quality import image_quality_problem

        if image.spatial_dims == 2:
            # radiographs come out of the reader in their display window, 0..1, at their own
            # resolution (resizing would smear a few bright pixels into many): judged whole
            # before any preprocessing is spent on them
            problem = image_quality_problem(image.array, image.array)
        else:
            problem = image_quality_problem(image.array)
        if problem is not None:
            raise PermanentJobError(f"image_quality: {problem}")
        try:
            prepared = model.pipeline.prepare(image)
        except UnsupportedImageError as error:
            raise PermanentJobError(f"image cannot be used ({error.code}): {error}") from error
        if image.spatial_dims == 3:  # CT as the model sees it: HU window, padding left out
            intensity = model.spec.preprocessing.intensity
            content = prepared.pre.array[
                (slice(None), *(slice(0, n) for n in prepared.pre.mapping.content_shape))
            ]
            problem = image_quality_problem(
                None, content, low=intensity.b_min, high=intensity.b_max
            )
            if problem is not None:
                raise PermanentJobError(f"image_quality: {problem}")
        return prepared

    def _infer(self, prepared: _Prepared) -> _Inferred:
        """Run the network (the only step on the model thread: ONNX Runtime and the Triton
        client release the GIL, so the worker thread's Python does not slow it, nor its
        numpy the network); errors are kept for _finish."""
        if prepared.held.lost:  # taken over while it waited: _finish discards it
            return _Inferred(prepared, [], 0.0, None)
        try:
            started = time.perf_counter()
            maps = prepared.model.pipeline.run_network(prepared.network_input)
            return _Inferred(prepared, maps, time.perf_counter() - started, None)
        except Exception as error:
            return _Inferred(prepared, [], 0.0, error)

    def _finish(self, inferred: _Inferred) -> None:
        """Turn the network's maps into findings, record the job (or its failure) and let
        its lease go."""
        prepared = inferred.prepared
        error = inferred.error
        findings: list[DetectedFinding] = []
        started = time.perf_counter()
        if error is None and not prepared.held.lost:
            try:
                findings = list(
                    prepared.model.pipeline.findings(prepared.network_input, inferred.maps)
                )
            except Exception as raised:
                error = raised
        # The model's time: preprocessing + network + box decoding and NMS (what
        # DetectionPipeline.detect does in one call).
        model_s = prepared.prepare_s + inferred.elapsed_s + (time.perf_counter() - started)
        self.leases.release(prepared.held)
        if error is not None:
            self._settle_error(prepared.lease, error)
        elif prepared.held.lost:
            logger.warning("job %d: lease lost while running; result discarded", inferred.lease.id)
        else:
            result = self._complete_job(
                prepared.lease,
                prepared.job_input,
                prepared.model,
                findings,
                model_s,
                passed_over=prepared.passed_over,
            )
            if result is not None and self.monitor is not None:
                self.monitor.submit(  # after the commit: the priority is final
                    MonitorTask(
                        job_id=prepared.lease.id,
                        study_id=prepared.job_input.study_id,
                        stored_paths=prepared.job_input.stored_paths,
                        champion=prepared.model,
                        raw_score=suspicion_score(findings),
                        score=result[0],
                        priority=result[1],
                    )
                )

    def _give_back(self, prepared: _Prepared) -> None:
        """Put a claimed job that never reached the model back in the queue (on stop)."""
        self.leases.release(prepared.held)
        try:
            with self.db.session() as session:
                jobs.requeue(session, Job, prepared.lease, retry_in_s=0.0, now=utcnow())
        except Exception:  # its lease expires and another worker takes it
            logger.exception("worker %s: could not give job %d back", self.name, prepared.lease.id)

    def _settle_error(self, lease: jobs.Lease, error: BaseException) -> None:
        """Fail, retry or put back a job whose images or inference raised ``error``."""
        if isinstance(error, PermanentJobError | NoModelFitsError):
            self._fail_job(lease, str(error), permanent=True)
        elif isinstance(error, BackendUnavailableError | ModelUnavailableError):
            retry_in = jobs.backoff_s(
                lease.attempt, self.settings.job_backoff_base_s, self.settings.job_backoff_max_s
            )
            logger.warning(
                "job %d: backend unavailable, retrying in %.1f s: %s", lease.id, retry_in, error
            )
            with self.db.session() as session:
                jobs.requeue(session, Job, lease, retry_in_s=retry_in, now=utcnow())
        else:
            logger.warning(
                "job %d attempt %d failed: %s",
                lease.id,
                lease.attempt,
                error,
                extra={
                    "fields": {
                        "job_id": lease.id,
                        "attempt": lease.attempt,
                        "worker": self.name,
                        "traceback": "".join(traceback.format_exception(error)),
                    }
                },
            )
            self._fail_job(lease, f"{type(error).__name__}: {error}", permanent=False)

    @staticmethod
    def _start_job(session: Session, lease: jobs.Lease) -> _JobInput | None:
        """Mark the study processing and collect the files the job reads (in the claim's
        transaction)."""
        study_id, series_id, instance_id = lease.values
        if study_id is None:  # pragma: no cover - the columns are NOT NULL
            return None
        if instance_id is not None:
            paths = session.scalars(_INSTANCE_PATH, {"instance_id": instance_id})
        else:
            paths = session.scalars(_SERIES_PATHS, {"series_id": series_id})
        stored_paths = tuple(paths)
        session.execute(
            _STUDY_PROCESSING,
            {"study_id": study_id, "now": utcnow()},
            execution_options={"synchronize_session": False},
        )
        return _JobInput(lease.id, study_id, series_id, instance_id, stored_paths)

    def _read(self, job_input: _JobInput) -> ImageVolume:
        from oncotriage.datasets.image import UnsupportedImageError
        from oncotriage.datasets.reader import read_image

        if not job_input.stored_paths:
            raise PermanentJobError("the series has no stored instances")
        try:
            return read_image(
                [self.store.path(path) for path in job_input.stored_paths],
                field_of_view_mm=self.settings.estimated_chest_field_of_view_mm,
            )
        except UnsupportedImageError as error:
            raise PermanentJobError(f"image cannot be used ({error.code}): {error}") from error

    def _complete_job(
        self,
        lease: jobs.Lease,
        job_input: _JobInput,
        model: LoadedModel,
        findings: list[DetectedFinding],
        elapsed_s: float,
        *,
        passed_over: tuple[int, ...] = (),
    ) -> tuple[float, Priority] | None:
        """Record a job's result; its (score, priority), or None when the lease was lost."""
        detected = findings
        score = calibrated_suspicion_score(detected, model.spec.thresholds)
        priority = priority_for(score, model.spec.thresholds)
        now = utcnow()
        with self.db.session() as session:
            completed = jobs.complete(
                session,
                Job,
                lease,
                now=now,
                model_name=model.name,
                model_version=model.version,
                suspicion_score=score,
                priority=priority,
                inference_s=elapsed_s,
            )
            if not completed:
                logger.warning("job %d: lease lost before completion; result discarded", lease.id)
                return None
            if job_input.instance_id is None and self._superseded(session, job_input):
                session.execute(
                    sa.update(Job).where(Job.id == lease.id).values(state=JobState.SUPERSEDED),
                    execution_options={"synchronize_session": False},
                )
            elif detected:
                thresholds = model.spec.thresholds
                calibrated = [thresholds.study_score(float(f.score)) for f in detected]
                session.execute(
                    sa.insert(Finding),
                    [
                        {
                            "study_id": job_input.study_id,
                            "job_id": lease.id,
                            "series_id": job_input.series_id,
                            "instance_id": job_input.instance_id,
                            "label": int(finding.label),
                            "score": float(finding.score),
                            "calibrated_score": score_on_scale,
                            "box_index": [float(v) for v in finding.box_index],
                            "box_world": [float(v) for v in finding.box_world],
                            "model_name": model.name,
                            "model_version": model.version,
                            # at or above the operating threshold (on the calibrated scale
                            # the thresholds are set on): only these go in the DICOM SR
                            "reportable": bool(score_on_scale >= thresholds.operating),
                            "created_at": now,
                        }
                        for finding, score_on_scale in zip(detected, calibrated, strict=True)
                    ],
                )
            if passed_over:
                self._retire_passed_over(session, job_input, passed_over)
            self._refresh_and_notify(session, job_input.study_id, now=now)
        logger.info(
            "job %d done: %d findings, score %.3f, %s, model %s, %.0f ms",
            lease.id,
            len(detected),
            score,
            priority.value,
            model.label,
            elapsed_s * 1000,
            extra={
                "fields": {
                    "job_id": lease.id,
                    "findings": len(detected),
                    "score": score,
                    "priority": priority.value,
                    "model": model.label,
                    "inference_ms": round(elapsed_s * 1000, 1),
                }
            },
        )
        return score, priority

    @staticmethod
    def _superseded(session: Session, job_input: _JobInput) -> bool:
        """For a series job: retire older finished runs over the same series, or, when a
        newer run (over more of the series) finished first, report that this one is stale."""
        same_series = sa.and_(
            Job.study_id == job_input.study_id,
            Job.series_id == job_input.series_id,
            Job.instance_id.is_(None),
            Job.state.in_([JobState.DONE, JobState.FAILED]),
        )
        newer = session.scalar(
            sa.select(Job.id).where(same_series, Job.id > job_input.job_id).limit(1)
        )
        if newer is not None:
            return True
        older = list(
            session.scalars(sa.select(Job.id).where(same_series, Job.id < job_input.job_id))
        )
        _retire_runs(session, older)
        return False

    @staticmethod
    def _retire_passed_over(
        session: Session, job_input: _JobInput, passed_over: tuple[int, ...]
    ) -> None:
        """Retire the finished runs of series the CT series choice passed over (scored
        before the chosen series arrived): the study's result is the chosen series' alone."""
        finished = sa.and_(
            Job.study_id == job_input.study_id,
            Job.series_id.in_(passed_over),
            Job.instance_id.is_(None),
            Job.state.in_([JobState.DONE, JobState.FAILED]),
        )
        _retire_runs(
            session,
            list(session.scalars(sa.select(Job.id).where(finished))),
            last_error=f"not scored: series of job {job_input.job_id} chosen instead",
        )

    def _fail_job(self, lease: jobs.Lease, error: str, *, permanent: bool) -> None:
        final = permanent or lease.attempt >= lease.max_attempts
        if final and not permanent:
            error = f"inference failed after {lease.attempt} attempts: {error}"
        retry_in = (
            None
            if permanent
            else jobs.backoff_s(
                lease.attempt, self.settings.job_backoff_base_s, self.settings.job_backoff_max_s
            )
        )
        now = utcnow()
        with self.db.session() as session:
            state = jobs.fail(session, Job, lease, error=error, now=now, retry_in_s=retry_in)
            if state is None:
                logger.warning("job %d: lease lost before recording the failure", lease.id)
                return
            job = session.get(Job, lease.id)
            if state is JobState.FAILED and job is not None:
                logger.error(
                    "job %d failed for good; study flagged for manual review: %s", lease.id, error
                )
                self._refresh_and_notify(session, job.study_id, now=now)
            else:
                logger.info("job %d will be retried in %.1f s", lease.id, retry_in or 0.0)

    def _refresh_and_notify(self, session: Session, study_id: str, *, now: datetime) -> None:
        # The hospital comes in the same query: the outbox looks up its webhook URL.
        study = session.get(
            Study,
            study_id,
            options=[joinedload(Study.hospital, innerjoin=True)],
            with_for_update={"of": Study} if self.db.is_postgresql else None,
        )
        if study is None:
            return
        before = (study.status, study.priority)
        status = refresh_study(session, study, now=now)
        if status in (StudyStatus.TRIAGED, StudyStatus.FAILED) and before != (
            status,
            study.priority,
        ):
            delivery = enqueue_webhook(
                session,
                study,
                WebhookEvent.STUDY_STATUS,
                now=now,
                max_attempts=self.settings.webhook_max_attempts,
            )
            push = enqueue_result_push(
                session, study, now=now, max_attempts=self.settings.webhook_max_attempts
            )
            if delivery is not None or push is not None:
                self.webhooks.soon()
