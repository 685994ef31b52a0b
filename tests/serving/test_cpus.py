"""Cores the service may use and the ONNX Runtime threads it gives the model by default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from service_utils.server import service_settings

from oncotriage.serving.cpus import (
    _cgroup_quota,
    count_cores,
    default_intra_op_threads,
    usable_cores,
)
from oncotriage.serving.inference import ModelManager, ort_intra_op_threads


def _topology(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    """A fake /sys/devices/system/cpu: cpu N -> (package, core)."""
    for cpu, (package, core) in cores.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_smt_siblings_count_once_and_a_quota_caps(tmp_path: Path) -> None:
    # 8 logical CPUs = 4 cores x 2 threads (siblings N and N + 4), one package
    sys_cpu = _topology(tmp_path, {cpu: (0, cpu % 4) for cpu in range(8)})
    assert count_cores(list(range(8)), sys_cpu=sys_cpu) == 4
    assert count_cores([0, 4], sys_cpu=sys_cpu) == 1  # two siblings: one core
    assert count_cores([0, 1, 2], sys_cpu=sys_cpu) == 3
    assert count_cores(list(range(8)), 2.5, sys_cpu) == 3  # rounded up
    assert count_cores(list(range(8)), 0.2, sys_cpu) == 1
    # no topology to read: every allowed CPU counts
    assert count_cores([0, 1, 2, 3, 4], sys_cpu=tmp_path / "none") == 5


def test_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert _cgroup_quota(cpu_max) is None
    cpu_max.write_text("250000 100000\n")
    assert _cgroup_quota(cpu_max) == 2.5
    assert _cgroup_quota(tmp_path / "missing") is None


def test_this_machine() -> None:
    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cores", "model_threads", "reserved", "expected"),
    [
        (1, 1, 0, 1),
        (2, 1, 0, 2),
        (2, 1, 1, 1),
        (1, 1, 1, 1),  # at least one thread
        (16, 1, 0, 16),
        (16, 1, 1, 15),
        (16, 2, 0, 8),
        (16, 4, 1, 3),
        (2, 2, 0, 1),
        (4, 8, 0, 1),
    ],
)
def test_default_intra_op_threads(
    cores: int, model_threads: int, reserved: int, expected: int
) -> None:
    assert default_intra_op_threads(model_threads, reserved, cores=cores) == expected


def test_settings_choose_the_threads(tmp_path: Path, flagging_bundle: Path) -> None:
    auto = service_settings("sqlite://", tmp_path, ort_intra_op_threads=None)
    assert ort_intra_op_threads(auto, 1) == default_intra_op_threads(1) == usable_cores()
    assert ort_intra_op_threads(auto, 3) == default_intra_op_threads(3)
    reserving = service_settings("sqlite://", tmp_path, ort_intra_op_threads=None, reserved_cores=1)
    assert ort_intra_op_threads(reserving, 1) == max(1, usable_cores() - 1)
    own = service_settings("sqlite://", tmp_path, ort_intra_op_threads=0)
    assert ort_intra_op_threads(own) is None  # ONNX Runtime decides
    fixed = service_settings("sqlite://", tmp_path, ort_intra_op_threads=3)
    assert ort_intra_op_threads(fixed, 2) == 3

    # the session the service builds has them
    settings = service_settings(
        "sqlite://",
        tmp_path,
        model_uri=str(flagging_bundle),
        ort_intra_op_threads=None,
        embedded_workers=2,
    )
    manager = ModelManager(settings)
    assert manager.model_threads == 2
    runner = manager.current().pipeline.runner
    options = runner.session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == default_intra_op_threads(2)
    assert ModelManager(settings, model_threads=1).model_threads == 1
