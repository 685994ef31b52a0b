"""Prometheus metrics: request counters in this process, the rest read from the database.

Queue depth, flags by priority and hospital, and the time-to-triage histogram are
collected from the database at scrape time, so they are right however many API and
worker processes there are (a worker process keeps no metrics of its own to lose).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import Job, Study, WebhookDelivery
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import JobState, Priority, StudyStatus, WebhookEvent
from oncotriage.serving.inference import ModelManager
from oncotriage.serving.modelset import ModelSet
from oncotriage.serving.referrals import overdue_counts

logger = logging.getLogger(__name__)

#: Time-to-triage buckets (seconds): sub-second embedded runs up to a day of backlog.
TIME_TO_TRIAGE_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DatabaseCollector(Collector):
    """Gauges and a histogram computed from the database on every scrape."""

    def __init__(self, db: Database, models: ModelManager | ModelSet | None) -> None:
        self.db = db
        self.models = models

    def collect(self) -> Iterator[Any]:
        try:
            yield from self._collect()
        except Exception as error:  # a scrape must not fail the endpoint
            logger.warning("metrics from the database unavailable: %s", error)

    def _collect(self) -> Iterator[Any]:
        with self.db.sessionmaker() as session:
            queue = GaugeMetricFamily(
                "oncotriage_queue_depth", "Inference jobs by state.", labels=["state"]
            )
            for state, count in _by_state(session, Job).items():
                queue.add_metric([state], count)
            yield queue
            overdue = GaugeMetricFamily(
                "oncotriage_referral_steps_overdue",
                "Open referral steps past their due date, by owner hospital and stage.",
                labels=["owner_hospital_id", "stage"],
            )
            for (owner, stage), count in overdue_counts(session, now=utcnow()).items():
                overdue.add_metric([str(owner), stage], count)
            yield overdue
            outbox = GaugeMetricFamily(
                "oncotriage_webhook_outbox_depth", "Webhook deliveries by state.", labels=["state"]
            )
            for state, count in _by_state(session, WebhookDelivery).items():
                outbox.add_metric([state], count)
            yield outbox
            yield from self._result_pushes(session)

            flags = GaugeMetricFamily(
                "oncotriage_studies_by_priority",
                "Triaged studies by priority and hospital id (flags: urgent, suspicious, "
                "needs_manual_review). Ids, not names: `oncotriage admin list` maps them.",
                labels=["priority", "hospital_id"],
            )
            for priority, hospital_id, count in session.execute(
                sa.select(Study.priority, Study.hospital_id, sa.func.count())
                .where(Study.priority.is_not(None))
                .group_by(Study.priority, Study.hospital_id)
            ):
                flags.add_metric([str(Priority(str(priority))), str(hospital_id)], int(count))
            yield flags

            statuses = GaugeMetricFamily(
                "oncotriage_studies_by_status", "Studies by status.", labels=["status"]
            )
            counts = dict(
                session.execute(
                    sa.select(Study.status, sa.func.count()).group_by(Study.status)
                ).all()
            )
            for status in StudyStatus:
                statuses.add_metric([status.value], int(counts.get(status, 0)))
            yield statuses

            yield self._time_to_triage(session)

            by_model = GaugeMetricFamily(
                "oncotriage_studies_by_model",
                "Studies triaged by each model version.",
                labels=["model", "version"],
            )
            for name, version, count in session.execute(
                sa.select(Study.model_name, Study.model_version, sa.func.count())
                .where(Study.model_name.is_not(None))
                .group_by(Study.model_name, Study.model_version)
            ):
                by_model.add_metric([str(name), str(version)], int(count))
            yield by_model
            yield from _monitoring_metrics(session)
            session.rollback()

        managers = ModelSet.of(self.models).managers if self.models is not None else {}
        info = GaugeMetricFamily(
            "oncotriage_model_info",
            "The model versions this process serves (one per route).",
            labels=["model", "version"],
        )
        routes = GaugeMetricFamily(
            "oncotriage_model_route_info",
            "Which model version serves each route (1 when loaded, 0 while it is not).",
            labels=["route", "model", "version"],
        )
        for route_name, manager in managers.items():
            loaded = manager.loaded
            if loaded is not None:
                info.add_metric([loaded.name, loaded.version], 1)
                routes.add_metric([route_name, loaded.name, loaded.version], 1)
            else:
                routes.add_metric([route_name, manager.uri, ""], 0)
        yield info
        yield routes

    @staticmethod
    def _result_pushes(session: Any) -> Iterator[Any]:
        """Result pushes (SR to a hospital's PACS) by destination kind: every attempt's outcome
        (a counter: a delivered row made one good attempt and ``attempts - 1`` failed ones;
        any other row ``attempts`` failed ones, less one still running), and rows by state."""
        attempts = CounterMetricFamily(
            "oncotriage_result_push_attempts",
            "Attempts to push a result SR to a hospital's PACS, by destination kind (stow, "
            "dimse) and outcome (delivered, failed).",
            labels=["kind", "outcome"],
        )
        pushes = GaugeMetricFamily(
            "oncotriage_result_pushes",
            "Result pushes by destination kind and state (failed: given up after its retries "
            "or refused for good).",
            labels=["kind", "state"],
        )
        table = WebhookDelivery
        totals: dict[str, dict[str, int]] = {}
        states: dict[str, dict[str, int]] = {}
        for kind, state, rows, tries in session.execute(
            sa.select(
                table.destination_kind,
                table.state,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(table.attempts), 0),
            )
            .where(table.event == WebhookEvent.RESULT_SR)
            .group_by(table.destination_kind, table.state)
        ):
            kind = str(kind or "unknown")
            state = JobState(state)
            rows, tries = int(rows), int(tries)
            good = rows if state is JobState.DONE else 0
            in_flight = rows if state is JobState.RUNNING else 0
            outcome = totals.setdefault(kind, {"delivered": 0, "failed": 0})
            outcome["delivered"] += good
            outcome["failed"] += max(0, tries - good - in_flight)
            states.setdefault(kind, {s.value: 0 for s in JobState})[state.value] += rows
        for kind in sorted(set(totals) | {"stow", "dimse"}):
            for name, value in totals.get(kind, {"delivered": 0, "failed": 0}).items():
                attempts.add_metric([kind, name], value)
            for state_name, count in states.get(kind, {s.value: 0 for s in JobState}).items():
                pushes.add_metric([kind, state_name], count)
        yield attempts
        yield pushes

    @staticmethod
    def _time_to_triage(session: Any) -> HistogramMetricFamily:
        column = Study.time_to_triage_s
        cumulative = [
            sa.func.coalesce(sa.func.sum(sa.case((column <= bound, 1), else_=0)), 0)
            for bound in TIME_TO_TRIAGE_BUCKETS
        ]
        row = session.execute(
            sa.select(
                sa.func.count(column), sa.func.coalesce(sa.func.sum(column), 0.0), *cumulative
            )
        ).one()
        total, total_sum = int(row[0]), float(row[1])
        buckets = [
            (str(float(bound)), int(row[2 + i])) for i, bound in enumerate(TIME_TO_TRIAGE_BUCKETS)
        ]
        buckets.append(("+Inf", total))
        histogram = HistogramMetricFamily(
            "oncotriage_time_to_triage_seconds",
            "From a study's first instance arriving to its first triage.",
        )
        histogram.add_metric([], buckets, total_sum)
        return histogram


def _monitoring_metrics(session: Any) -> Iterator[Any]:
    """Active drift alarms (from the database) and this process's monitor counters."""
    from oncotriage.serving.db.models import DriftAlarm
    from oncotriage.serving.monitoring.monitor import MONITOR_COUNTS

    alarms = GaugeMetricFamily(
        "oncotriage_drift_alarms_active",
        "Active drift alarms by hospital id, metric and action (warn, hold).",
        labels=["hospital_id", "metric", "action"],
    )
    for hospital_id, metric, action, count in session.execute(
        sa.select(DriftAlarm.hospital_id, DriftAlarm.metric, DriftAlarm.action, sa.func.count())
        .where(DriftAlarm.cleared_at.is_(None))
        .group_by(DriftAlarm.hospital_id, DriftAlarm.metric, DriftAlarm.action)
    ):
        alarms.add_metric([str(hospital_id), str(metric), str(action.value)], int(count))
    yield alarms
    monitor = GaugeMetricFamily(
        "oncotriage_monitor_jobs",
        "This process's monitor: completed jobs submitted, recorded, dropped (backlog full), "
        "scored by a challenger, waiting (backlog).",
        labels=["state"],
    )
    for state in ("submitted", "recorded", "dropped", "challenger_scored", "backlog"):
        monitor.add_metric([state], getattr(MONITOR_COUNTS, state))
    yield monitor


def _by_state(session: Any, table: Any) -> dict[str, int]:
    counts = {state.value: 0 for state in JobState}
    for state, count in session.execute(
        sa.select(table.state, sa.func.count()).group_by(table.state)
    ):
        counts[JobState(state).value] = int(count)
    return counts


class ServiceMetrics:
    """The app's own registry (one per app, so several apps in one test process coexist)."""

    def __init__(self, db: Database, models: ModelManager | ModelSet | None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "oncotriage_http_requests",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "oncotriage_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(db, models))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request (``route`` is the template, e.g. ``/v1/studies/{study_id}``)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
