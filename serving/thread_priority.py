"""Scheduling priority: the model's threads first, the service's other threads behind them.

At saturation the model is the bottleneck and everything else (HTTP, STOW-RS parsing, the
intake transaction, job claims, DICOM reading, results, webhooks, the audit trail) has
slack: it only has to keep a few jobs ready ahead of the model. When a machine has more
runnable threads than cores, Linux shares the cores evenly among equal ``nice`` values, so
the model thread loses slices to the service's own bookkeeping and throughput drops by
that much. Giving every thread except the model threads a higher ``nice`` value (lower
priority) keeps the model's core for the model; the other threads still run whenever a
core is free, which on a machine with a core to spare is nearly always.

Linux keeps a ``nice`` value per thread (``setpriority(PRIO_PROCESS, tid, ...)``) and a new
thread inherits its creator's; an unprivileged process can raise a thread's value but not
lower it again. So the order matters: threads that must stay at the base priority (the
model threads, the threads that create ONNX Runtime sessions, whose intra-op threads
inherit from them) are created first, then their creators lower themselves. The base is
the process's value when this module is imported. Elsewhere than Linux this does nothing.

Measured in docs/benchmarks.md (service load): with the model on one of two cores, this
alone took the service's ratio to the bare model from 0.83-0.85 to 0.87-0.92.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "BASE_NICE",
    "MAX_NICE",
    "lower_thread_priority",
    "name_native_thread",
    "native_thread_name",
    "run_behind_model",
    "temporary_native_thread_name",
    "thread_nice",
]

logger = logging.getLogger(__name__)

MAX_NICE = 19
_SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "setpriority")
#: The process's nice value at import (the main thread's, before anything lowered it).
BASE_NICE: int = os.getpriority(os.PRIO_PROCESS, 0) if _SUPPORTED else 0


def thread_nice(native_id: int | None = None) -> int | None:
    """The nice value of a thread of this process (default: the calling thread); None where
    per-thread priorities are not supported."""
    if not _SUPPORTED:
        return None
    return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())


def lower_thread_priority(increment: int) -> int | None:
    """Run the calling thread (and the threads it creates from now on) ``increment`` nice
    steps behind the process's base priority.

    Idempotent: a thread already at or past ``BASE_NICE + increment`` is left alone.
    Returns the thread's nice value afterwards, or None where nothing was done (``increment``
    0, not Linux, or the kernel refused).
    """
    if increment <= 0 or not _SUPPORTED:
        return None
    native_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, native_id)
        target = min(MAX_NICE, BASE_NICE + increment)
        if current < target:
            os.setpriority(os.PRIO_PROCESS, native_id, target)
        return os.getpriority(os.PRIO_PROCESS, native_id)
    except OSError as error:  # a container's seccomp profile may refuse it: not fatal
        logger.debug("could not lower the priority of thread %d: %s", native_id, error)
        return None


def run_behind_model(increment: int, name: str) -> None:
    """Make the calling thread one of the service's threads other than the model's: named
    ``name`` and ``increment`` nice steps behind the base; the threads it creates from now
    on inherit both."""
    lower_thread_priority(increment)
    name_native_thread(name)


_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None


def name_native_thread(name: str) -> bool:
    """Give the calling thread an operating-system name (Linux, 15 bytes at most), shown by
    ``top -H``, ``ps -T`` and ``/proc/<pid>/task/<tid>/comm``; threads it creates from now on
    start with the same name. True when it was set."""
    global _libc
    if not _SUPPORTED:
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return int(_libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)) == 0
    except (OSError, AttributeError):  # no prctl in this libc
        return False


def native_thread_name() -> str | None:
    """The calling thread's operating-system name (Linux), or None."""
    if not _SUPPORTED:
        return None
    try:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
    except OSError:
        return None


@contextlib.contextmanager
def temporary_native_thread_name(name: str) -> Iterator[None]:
    """Name the calling thread ``name`` for the ``with`` block, so that the threads created
    in it (ONNX Runtime's intra-op threads, created with a session) carry that name."""
    previous = native_thread_name()
    name_native_thread(name)
    try:
        yield
    finally:
        if previous is not None:
            name_native_thread(previous)
