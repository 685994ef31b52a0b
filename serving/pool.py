"""The worker pool: ``n`` worker threads in one process (``oncotriage serve`` and ``worker``)."""

from __future__ import annotations

import threading
import time

from oncotriage.serving import jobs
from oncotriage.serving.db.session import Database
from oncotriage.serving.delivery import WebhookSender
from oncotriage.serving.inference import ModelManager
from oncotriage.serving.modelset import ModelSet
from oncotriage.serving.monitoring.monitor import Monitor
from oncotriage.serving.settings import Settings
from oncotriage.serving.storage import ContentStore
from oncotriage.serving.worker import Worker, worker_name

__all__ = ["WorkerPool"]


class WorkerPool:
    """``n`` worker threads sharing one model manager (``oncotriage serve`` and ``worker``)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        store: ContentStore,
        models: ModelManager | ModelSet,
        n: int,
        *,
        webhook_sender: WebhookSender | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._signal = jobs.work_signal
        #: one monitor per process, behind the workers (serving/monitoring/monitor.py)
        self.monitor = Monitor(settings, db, store) if settings.monitor_enabled else None
        self.workers = [
            Worker(
                settings,
                db,
                store,
                models,
                name=worker_name(f"w{index}"),
                webhook_sender=webhook_sender,
                signal=self._signal,
                monitor=self.monitor,
            )
            for index in range(n)
        ]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.monitor is not None:
            self.monitor.start()
        for worker in self.workers:
            thread = threading.Thread(
                target=worker.run, args=(self._stop,), name=worker.name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the jobs in hand finish (their leases protect them if we time out)."""
        self._stop.set()
        self._signal.wake_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        if self.monitor is not None:
            self.monitor.stop(timeout_s=max(1.0, deadline - time.monotonic()))

    def wait(self) -> None:
        """Block until stopped (for the ``oncotriage worker`` process)."""
        while any(thread.is_alive() for thread in self._threads):
            for thread in self._threads:
                thread.join(timeout=1.0)

    @property
    def stop_event(self) -> threading.Event:
        return self._stop
