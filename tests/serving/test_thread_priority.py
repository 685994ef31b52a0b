"""The model threads keep the base priority; every other service thread runs behind them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for

from oncotriage.serving.thread_priority import (
    BASE_NICE,
    MAX_NICE,
    lower_thread_priority,
    native_thread_name,
    temporary_native_thread_name,
    thread_nice,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"
)


def _comm(native_id: int | None) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def _in_thread(fn: Any) -> Any:
    """``fn()`` on a new thread (so the test's own thread keeps its priority)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # pragma: no cover - reported below
            box["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_lower_thread_priority_is_per_thread_idempotent_and_capped() -> None:
    def lower_twice_and_spawn() -> tuple[Any, ...]:
        first = lower_thread_priority(3)
        again = lower_thread_priority(3)  # already there: unchanged, not BASE + 6
        child: dict[str, int | None] = {}
        spawned = threading.Thread(target=lambda: child.setdefault("nice", thread_nice()))
        spawned.start()
        spawned.join()
        capped = lower_thread_priority(100)
        return first, again, child["nice"], capped, thread_nice()

    mine = thread_nice()
    first, again, child, capped, final = _in_thread(lower_twice_and_spawn)
    expected = min(MAX_NICE, BASE_NICE + 3)
    assert (first, again) == (expected, expected)
    assert child == expected  # a thread inherits its creator's value
    assert capped == final == MAX_NICE
    assert thread_nice() == mine  # the calling thread was not touched
    assert _in_thread(lambda: lower_thread_priority(0)) is None


def test_service_threads_run_behind_the_model_thread(
    sqlite_service_factory, flagging_bundle
) -> None:
    nice = 7
    expected = min(MAX_NICE, BASE_NICE + nice)
    with sqlite_service_factory(model_uri=str(flagging_bundle), service_thread_nice=nice) as svc:
        instance = dx_instance(1)
        uid = instance.StudyInstanceUID
        response = stow(svc, "A", [to_bytes(instance)])
        assert response.status_code == 200, response.text
        study = svc.wait_for_study(study_id_for(svc, "A", uid), "A")
        assert study["status"] == "triaged"
        assert study["priority"] == "suspicious"

        threads = {t.name: t.native_id for t in threading.enumerate()}
        model = [tid for name, tid in threads.items() if name.endswith("-model")]
        workers = [tid for name, tid in threads.items() if name.endswith(":w0")]
        requests = [tid for name, tid in threads.items() if name.startswith("AnyIO worker")]
        assert len(model) == 1, threads
        assert len(workers) == 1, threads
        assert requests, threads  # the STOW-RS and status requests ran on them
        assert thread_nice(model[0]) == BASE_NICE
        assert thread_nice(workers[0]) == expected
        assert {thread_nice(tid) for tid in requests} == {expected}
        assert thread_nice(threads["audit-trail"]) == expected
        leases = [tid for name, tid in threads.items() if name.endswith("-leases")]
        assert [thread_nice(tid) for tid in leases] == [expected] * len(leases)

        # and they carry operating-system names (top -H, ps -T, the load benchmark)
        assert _comm(model[0]) == "ot-model"
        assert _comm(workers[0]) == "ot-worker"
        assert {_comm(tid) for tid in requests} == {"ot-http"}
        assert _comm(threads["audit-trail"]) == "ot-audit"


def test_nice_zero_leaves_every_thread_at_the_base(sqlite_service_factory, flagging_bundle) -> None:
    # the monitor thread (challenger scoring, drift statistics) has a setting of its own
    with sqlite_service_factory(
        model_uri=str(flagging_bundle), service_thread_nice=0, monitor_thread_nice=0
    ) as svc:
        instance = dx_instance(2)
        uid = instance.StudyInstanceUID
        assert stow(svc, "A", [to_bytes(instance)]).status_code == 200
        assert svc.wait_for_study(study_id_for(svc, "A", uid), "A")["status"] == "triaged"
        nices = {t.name: thread_nice(t.native_id) for t in threading.enumerate() if t.native_id}
        assert set(nices.values()) == {BASE_NICE}, nices


def test_temporary_native_thread_name_names_the_threads_started_inside() -> None:
    def run() -> tuple[str | None, str | None, str | None]:
        before = native_thread_name()
        seen: dict[str, str | None] = {}
        with temporary_native_thread_name("ot-test"):
            child = threading.Thread(target=lambda: seen.setdefault("child", native_thread_name()))
            child.start()
            child.join()
        return before, seen["child"], native_thread_name()

    before, child, after = _in_thread(run)
    assert child == "ot-test"
    assert after == before != "ot-test"
