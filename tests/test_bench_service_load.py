"""The service load benchmark's arithmetic and its table: setups, pooled references, rows."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # as when run as `python bench/service_load.py`
    spec = importlib.util.spec_from_file_location(
        "service_load", REPO / "bench" / "service_load.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["service_load"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_setup_parse(bench: ModuleType) -> None:
    setup = bench.Setup.parse("worker:processes=2:workers=3:ort=1:reserve=1:model=light")
    assert (setup.worker_processes, setup.workers, setup.ort_threads, setup.model) == (
        2,
        3,
        1,
        "light",
    )
    assert setup.reserved_cores == 1
    assert setup.model_threads == 6
    assert setup.reference_key == ("light", 1, 1, 6)
    assert setup.text == "worker:processes=2:workers=3:ort=1:reserve=1:model=light"
    assert "1 core(s) reserved" in setup.label
    plain = bench.Setup.parse("serve")
    assert (plain.worker_processes, plain.workers, plain.ort_threads, plain.model) == (
        0,
        1,
        None,
        "demo",
    )
    assert "ORT intra-op threads: the service's default" in plain.label
    assert "ONNX Runtime's default" in bench.Setup.parse("serve:ort=0").label
    for bad in ("triton", "serve:gpu=1", "serve:workers=0"):
        with pytest.raises(ValueError):
            bench.Setup.parse(bad)
    assert [bench.Setup.parse(text).text for text in bench.DEFAULT_SETUPS] == list(
        bench.DEFAULT_SETUPS
    )


def _result(
    bench: ModuleType,
    setup: str,
    service_rate: float,
    bare: tuple[float, float],
    *,
    service_cpu: float = 60.0,
    client_cpu: float = 2.0,
    bare_cpu: float = 45.0,
) -> Any:
    load = {
        "service_rate": service_rate,
        "load": 0.5,
        "ttt": [1.0, 2.0, 3.0, 4.0],
        "cpu_ms": {"service": service_cpu, "client": client_cpu, "other": 0.0},
        "thread_cpu_ms": {"model": 40.0, "worker": 11.0, "http": 9.0},
        "push_s": 1.5,
        "studies": 96,
        "model": {"name": "oncotriage-cxr2d", "version": "0"},
    }
    bares = tuple(
        bench.BareResult(rate=rate, cpu_ms=bare_cpu, load=0.5, network_rate=rate * 1.1)
        for rate in bare
    )
    return bench.SetupResult(bench.Setup.parse(setup), load, bares, {"inference_ms": 49.0})


def test_ratio_overhead_and_cpu_bound(bench: ModuleType) -> None:
    result = _result(bench, "serve:ort=1", 22.0, (20.0, 21.0))
    assert result.bare_rate == pytest.approx(20.5)  # the mean until pooled
    assert result.ratio == pytest.approx(22.0 / 20.5)
    assert result.overhead_ms == pytest.approx((1 / 22.0 - 1 / 20.5) * 1000)
    assert result.overhead_ms < 0  # faster than the bare model
    assert result.bare_cores == pytest.approx(45.0 * 20.5 / 1000)
    cores = os.cpu_count() or 1
    assert result.ratio_bound == pytest.approx(cores / 0.062 / 20.5)


def test_references_pool_over_rounds_and_setups_of_the_same_model_and_threads(
    bench: ModuleType,
) -> None:
    by_setup = [
        [
            _result(bench, "serve:ort=1", 22.0, (20.0, 21.0)),
            _result(bench, "serve:ort=1", 21.0, (22.0, 19.0)),
        ],
        [
            _result(bench, "worker:ort=1", 23.0, (18.0, 30.0)),
            _result(bench, "worker:ort=1", 20.0, (21.5, 20.5)),
        ],
        [_result(bench, "serve", 25.0, (33.0, 35.0)), _result(bench, "serve", 24.0, (34.0, 36.0))],
        [_result(bench, "serve:ort=1:model=light", 40.0, (44.0, 45.0))],
    ]
    pooled = bench.pool_references(by_setup)
    assert sorted(pooled[("demo", 1, 0, 1)][0]) == [18.0, 19.0, 20.0, 20.5, 21.0, 21.5, 22.0, 30.0]
    for rounds in by_setup[:2]:
        for result in rounds:
            assert result.bare_rate == pytest.approx(20.75)  # median of the eight
    assert by_setup[2][0].bare_rate == pytest.approx(34.5)
    assert by_setup[3][0].bare_rate == pytest.approx(44.5)
    assert by_setup[3][0].network_reference == pytest.approx(44.5 * 1.1)
    assert bench.median_round(by_setup[0]).service_rate == 21.0  # lower middle of two


def test_table_rows_and_block(bench: ModuleType, tmp_path: Path) -> None:
    by_setup = [
        [
            _result(bench, "serve:ort=1", 22.0, (20.0, 21.0)),
            _result(bench, "serve:ort=1", 23.0, (20.0, 21.0)),
        ],
        [_result(bench, "serve", 25.0, (33.0, 35.0))],
    ]
    args = argparse.Namespace(
        hospitals=4, studies=96, rounds=2, setup=["serve:ort=1", "serve"], kind="cxr", poll=1.0
    )
    block = bench.render_table(args, by_setup)
    assert block.startswith(bench.START_MARKER) and block.endswith(bench.END_MARKER)
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    header = next(line for line in block.splitlines() if line.startswith("| setup |"))
    assert len(header.split("|")) == len(rows[0].split("|")) == len(rows[1].split("|"))
    cells = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    assert cells[0] == "`serve:ort=1`"
    assert cells[4] == "22.00 (22.00-23.00)"  # median round (lower middle), range
    assert cells[5] == "20.50 (20.00-21.00)"
    assert cells[7] == f"**{22.0 / 20.5:.2f}**"
    assert cells[14] == "40 / 11 / 9 / 0 / 0"  # CPU by thread kind
    assert cells[-1] == "2.5 / 3.8 / 4.0"  # time to triage p50 / p95 / p99
    assert "demo = `oncotriage-cxr2d` v0" in block

    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\nbefore\n\n"
        "<!-- service_load:start -->\nstale table\n<!-- service_load:end -->\n\nafter\n"
    )
    bench.write_block("service_load", block, doc)
    text = doc.read_text()
    assert "stale table" not in text
    assert text.index("before") < text.index(block) < text.index("after")
    assert text.count(bench.START_MARKER) == 1
