"""bench/capacity.py: the capacity formula, by hand-computed cases."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _capacity():
    spec = importlib.util.spec_from_file_location("bench_capacity", REPO / "bench" / "capacity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plan_matches_the_formula_by_hand() -> None:
    capacity = _capacity()
    types = {
        "cxr": capacity.SeriesType("cxr", "m2d", 1, model_cpu_s=2.0, gflop=300.0),
        "ct": capacity.SeriesType("ct", "m3d", 100, model_cpu_s=50.0, gflop=3000.0),
    }
    stages = {"intake": 0.001, "store": 0.002, "worker": 0.003, "database": 0.01}
    result = capacity.plan(
        36_000,
        {"cxr": 0.5, "ct": 0.5},
        types,
        stages,
        gpu_tflops=100.0,
        gpu_efficiency=0.1,
        peak_hour_share=0.1,
        utilisation=0.5,
        cores_per_machine=4,
    )
    # 36,000 x 0.1 / 3600 = 1 study/s at the peak hour.
    assert result.peak_rate == pytest.approx(1.0)
    # 50.5 instances per study on average x 6 ms + 10 ms.
    assert result.cpu_s_per_study == pytest.approx(50.5 * 0.006 + 0.01)
    # (0.5 x 300 + 0.5 x 3000) GFLOP / 10,000 GFLOP/s = 0.165 s.
    assert result.gpu_s_per_study == pytest.approx(0.165)
    assert result.cores == math.ceil(0.313 / 0.5) == 1
    assert result.gpus == 1
    assert result.cpu_only_cores == math.ceil((0.313 + 26.0) / 0.5) == 53
    assert result.machines == 1
    assert result.gpu_wait_s == pytest.approx(0.165)  # rho / (1 - rho) = 1
    assert result.time_to_triage_s == pytest.approx(0.313 + 0.165 + 0.165)
    # Ten times the studies: ten times the load, rounded up per pool.
    bigger = capacity.plan(
        360_000,
        {"cxr": 0.5, "ct": 0.5},
        types,
        stages,
        gpu_tflops=100.0,
        gpu_efficiency=0.1,
        peak_hour_share=0.1,
        utilisation=0.5,
        cores_per_machine=4,
    )
    assert (bigger.cores, bigger.machines, bigger.gpus) == (7, 2, 4)


def test_plan_refuses_impossible_inputs() -> None:
    capacity = _capacity()
    types = {"cxr": capacity.SeriesType("cxr", "m", 1, 1.0, 1.0)}
    stages = {"intake": 0.0, "store": 0.0, "worker": 0.0, "database": 0.0}
    common = {
        "gpu_tflops": 1.0,
        "gpu_efficiency": 0.1,
        "peak_hour_share": 0.1,
        "cores_per_machine": 4,
    }
    with pytest.raises(ValueError, match="utilisation"):
        capacity.plan(1, {"cxr": 1.0}, types, stages, utilisation=1.0, **common)
    with pytest.raises(ValueError, match="add up"):
        capacity.plan(1, {"cxr": 0.5}, types, stages, utilisation=0.5, **common)


def test_model_rows_read_the_benchmark_table(tmp_path: Path) -> None:
    capacity = _capacity()
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "| cxr2d-nodule (30.3 MB ONNX) | 512x512 | onnxruntime CPU + numpy pipeline | 2 | 6 "
        "| 0.43 | 2340 (1809) | 1.25x | 249.9 |\n"
        "| cxr2d-nodule (30.3 MB ONNX) | 512x512 | onnxruntime CPU + numpy pipeline | 1 | 6 "
        "| 0.50 | 2000 (1809) | 1.25x | 249.9 |\n"
        "| cxr2d-nodule (30.3 MB ONNX) | 512x512 | torch eager (MONAI), CPU | 1 | 6 "
        "| 0.34 | 2929 (2065) | 1.00x | 249.9 |\n"
    )
    assert capacity.model_rows(doc) == {"cxr2d-nodule": (pytest.approx(2.0), 249.9)}
