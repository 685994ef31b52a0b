"""The monitor: one thread per process, behind the workers, never in triage's way.

A worker hands every completed job to :meth:`Monitor.submit` *after* its result is
committed (the study's priority is final by then). The task holds the job's stored paths,
not its image: the monitor reads the image again from the store, one at a time, so a backlog
of CT volumes costs no memory. The monitor thread, running
``monitor_thread_nice`` steps behind the model (its challenger's ONNX Runtime threads,
created on it, inherit that), then

1. computes the image's input statistics (:func:`oncotriage.models.fingerprint.image_stats`,
   as the champion's normalisation sees them) and reads the device from the header;
2. scores the same image with the champion's challenger, the version the registry alias
   ``challenger_alias`` of the champion's model points at (none: nothing is scored);
3. stores both in ``monitor_records``, apart from the triage result: the challenger never
   changes a priority, a finding or a webhook;
4. replays the drift charts of the hospital and device (:mod:`.drift`); an alarm is a
   ``drift_alarms`` row, an audit event, a metric and a POST to ``operator_webhook_url``.

The backlog is bounded (``monitor_backlog``): when the monitor falls that far behind, a
completed job is left unmonitored and counted (``oncotriage_monitor_dropped_total``); the
champion's throughput and time to triage do not depend on the challenger
(docs/benchmarks.md, service load with a challenger).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from oncotriage.serving import audit
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import DriftAlarm, MonitorRecord, Study
from oncotriage.serving.enums import AuditAction, Priority
from oncotriage.serving.inference import LoadedModel, ModelManager, ModelUnavailableError
from oncotriage.serving.monitoring.drift import check_drift
from oncotriage.serving.routing import Route, SeriesFacts, misfit
from oncotriage.serving.settings import Settings
from oncotriage.serving.thread_priority import run_behind_model
from oncotriage.serving.triage import priority_for

if TYPE_CHECKING:
    from oncotriage.datasets.image import ImageVolume
    from oncotriage.serving.db.session import Database
    from oncotriage.serving.storage import ContentStore

__all__ = ["MONITOR_COUNTS", "Monitor", "MonitorCounts", "MonitorTask"]

logger = logging.getLogger(__name__)


@dataclass
class MonitorCounts:
    """This process's monitor counters (read by /metrics)."""

    submitted: int = 0
    dropped: int = 0
    recorded: int = 0
    challenger_scored: int = 0
    alarms: int = 0
    backlog: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


#: The counters of this process's monitors.
MONITOR_COUNTS = MonitorCounts()


@dataclass(frozen=True)
class MonitorTask:
    """A completed job, as the worker recorded it."""

    job_id: int
    study_id: str
    stored_paths: tuple[str, ...]
    champion: LoadedModel
    raw_score: float
    score: float
    priority: Priority


@dataclass(frozen=True)
class ShadowScore:
    model: LoadedModel
    raw_score: float
    score: float
    priority: Priority
    elapsed_s: float


class Monitor:
    """The monitor thread of one process (see the module docstring).

    Args:
        settings: ``monitor_*``, ``challenger_alias``, ``drift_*``, ``operator_webhook_url``.
        db: the database.
        store: the image store (the device is read from the stored header).
        runner_factory: the challengers' network runners (default from the settings).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: ContentStore,
        *,
        runner_factory: object | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self._runner_factory = runner_factory
        self._queue: queue.Queue[MonitorTask | None] = queue.Queue(maxsize=settings.monitor_backlog)
        self._thread: threading.Thread | None = None
        self._challengers: dict[str, ModelManager] = {}
        self._next_check: dict[str, float] = {}
        self._idle = threading.Condition()
        self._busy = 0

    # -- the workers' side ------------------------------------------------------------------

    def submit(self, task: MonitorTask) -> bool:
        """Queue a completed job; False (and counted) when the backlog is full."""
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            MONITOR_COUNTS.add("dropped")
            return False
        MONITOR_COUNTS.add("submitted")
        MONITOR_COUNTS.backlog = self._queue.qsize()
        return True

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="oncotriage-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the backlog (up to ``timeout_s``) and stop."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("monitor: backlog not finished at stop")
        self._thread.join(timeout=timeout_s)
        self._thread = None
        for manager in self._challengers.values():
            manager.stop()

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until the backlog is empty and nothing is being processed (tests, bench)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._queue.qsize() or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.1))
        return True

    def _run(self) -> None:
        run_behind_model(self.settings.monitor_thread_nice, "ot-monitor")
        while True:
            task = self._queue.get()
            if task is None:
                break
            with self._idle:
                self._busy += 1
            try:
                self.process(task)
            except Exception:
                logger.exception("monitor: job %d not monitored", task.job_id)
            finally:
                MONITOR_COUNTS.backlog = self._queue.qsize()
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    # -- one job ----------------------------------------------------------------------------

    def challenger_for(self, champion: LoadedModel) -> LoadedModel | None:
        """The champion's challenger (``models:/NAME@<challenger_alias>``), rechecked every
        ``model_poll_interval_s``; None when the alias is unset, names the champion's own
        version, or the champion is not a registered model."""
        alias = self.settings.challenger_alias
        if not alias or champion.resolved.version is None:
            return None
        name = champion.name
        manager = self._challengers.get(name)
        if manager is None:
            manager = ModelManager(
                self.settings,
                self._runner_factory,  # type: ignore[arg-type]
                model_threads=1,
                uri=f"models:/{name}@{alias}",
                triages=False,  # shadow scores decide nothing; the promotion gate checks
            )
            self._challengers[name] = manager
        now = time.monotonic()
        if now >= self._next_check.get(name, 0.0):
            self._next_check[name] = now + self.settings.model_poll_interval_s
            try:
                manager.refresh()
            except ModelUnavailableError as error:
                logger.debug("no challenger of %s: %s", name, error)
        loaded = manager.loaded
        if loaded is None or loaded.version == champion.version:
            return None
        return loaded

    def _shadow_score(self, champion: LoadedModel, image: ImageVolume) -> ShadowScore | None:
        challenger = self.challenger_for(champion)
        if challenger is None:
            return None
        route = Route(name=challenger.name, uri="", reads=challenger.spec.reads)
        if misfit(route, SeriesFacts.from_image(image)) is not None:
            return None  # it does not read this series: no shadow score (the routing rule)
        started = time.perf_counter()
        findings = challenger.pipeline.detect(image)
        raw = max((float(f.score) for f in findings), default=0.0)
        thresholds = challenger.spec.thresholds
        score = thresholds.study_score(raw)
        return ShadowScore(
            challenger, raw, score, priority_for(score, thresholds), time.perf_counter() - started
        )

    def _device(self, stored_paths: tuple[str, ...]) -> tuple[str, str]:
        import pydicom

        try:
            header = pydicom.dcmread(
                self.store.path(stored_paths[0]),
                stop_before_pixels=True,
                specific_tags=["Manufacturer", "ManufacturerModelName"],
            )
        except Exception:
            return "", ""
        return (
            str(header.get("Manufacturer", "") or "")[:200],
            str(header.get("ManufacturerModelName", "") or "")[:200],
        )

    def _read(self, stored_paths: tuple[str, ...]) -> ImageVolume:
        from oncotriage.datasets.reader import read_image

        return read_image(
            [self.store.path(path) for path in stored_paths],
            field_of_view_mm=self.settings.estimated_chest_field_of_view_mm,
        )

    def process(self, task: MonitorTask) -> MonitorRecord | None:
        """Monitor one completed job (on the monitor thread; tests call it directly)."""
        from oncotriage.models.fingerprint import histogram_distance, image_stats

        champion = task.champion
        spec = champion.spec
        image = self._read(task.stored_paths)
        stats = image_stats(image, spec.preprocessing.intensity)
        fingerprint = spec.input_fingerprint
        distance = (
            histogram_distance(stats.histogram, fingerprint.histogram)
            if fingerprint is not None
            else None
        )
        manufacturer, device_model = self._device(task.stored_paths)
        try:
            shadow = self._shadow_score(champion, image)
        except Exception:
            logger.exception("monitor: the challenger failed on job %d", task.job_id)
            shadow = None
        now = utcnow()
        new_alarms: list[DriftAlarm] = []
        with self.db.session() as session:
            hospital_id = session.scalar(
                sa.select(Study.hospital_id).where(Study.id == task.study_id)
            )
            if hospital_id is None:  # deleted meanwhile
                return None
            record = MonitorRecord(
                job_id=task.job_id,
                study_id=task.study_id,
                hospital_id=hospital_id,
                modality=(image.modality or "")[:16],
                manufacturer=manufacturer,
                device_model=device_model,
                champion_name=champion.name,
                champion_version=champion.version,
                champion_raw_score=task.raw_score,
                champion_score=task.score,
                champion_priority=task.priority,
                challenger_name=shadow.model.name if shadow else None,
                challenger_version=shadow.model.version if shadow else None,
                challenger_raw_score=shadow.raw_score if shadow else None,
                challenger_score=shadow.score if shadow else None,
                challenger_priority=shadow.priority if shadow else None,
                challenger_s=shadow.elapsed_s if shadow else None,
                intensity_mean=stats.intensity_mean,
                histogram_distance=distance,
                spacing_mm=stats.spacing_mm,
                pixels=stats.pixels,
                created_at=now,
            )
            session.add(record)
            session.flush()
            new_alarms = check_drift(session, self.settings, record, fingerprint, now=now)
            for alarm in new_alarms:
                audit.record(
                    session,
                    None,
                    AuditAction.DRIFT_ALARM,
                    detail=_alarm_payload(alarm),
                )
        MONITOR_COUNTS.add("recorded")
        if shadow is not None:
            MONITOR_COUNTS.add("challenger_scored")
        for alarm in new_alarms:
            MONITOR_COUNTS.add("alarms")
            logger.warning(
                "drift alarm: hospital %d %s%s %s (%s after %d studies; %s)",
                alarm.hospital_id,
                alarm.metric,
                f" on {alarm.device}" if alarm.device else "",
                alarm.direction,
                alarm.model_name,
                alarm.studies,
                alarm.action.value,
            )
            self._notify_operators(alarm)
        return record

    def _notify_operators(self, alarm: DriftAlarm) -> None:
        url = self.settings.operator_webhook_url
        if not url:
            return
        import httpx

        body = json.dumps({"event": "monitoring.drift_alarm", "alarm": _alarm_payload(alarm)})
        try:
            httpx.post(
                url, content=body, headers={"Content-Type": "application/json"}, timeout=5.0
            ).raise_for_status()
        except httpx.HTTPError as error:
            logger.warning("drift alarm %d: operator webhook failed: %s", alarm.id, error)


def _alarm_payload(alarm: DriftAlarm) -> dict[str, object]:
    return {
        "id": alarm.id,
        "hospital_id": alarm.hospital_id,
        "device": alarm.device,
        "model": alarm.model_name,
        "metric": alarm.metric,
        "direction": alarm.direction,
        "studies": alarm.studies,
        "action": alarm.action.value,
        "raised_at": alarm.raised_at.isoformat(),
        "detail": alarm.detail,
    }
