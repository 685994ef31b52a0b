"""The service load benchmark's arithmetic and its table: setups, pooled references, rows."""

from __future__ import annotations

import argparse
import importlib.util
import json
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
    assert setup.reference_key == ("light", 1, 1, 6, "embedded")
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
    for bad in ("triton", "serve:gpu=1", "serve:workers=0", "serve:backend=triton"):
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
    key = ("demo", 1, 0, 1, "embedded")
    assert sorted(pooled[key][0]) == [18.0, 19.0, 20.0, 20.5, 21.0, 21.5, 22.0, 30.0]
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


def test_network_setup_options(bench: ModuleType) -> None:
    setup = bench.Setup.parse("worker:processes=2:db=postgres:store=s3:registry=server")
    assert (setup.database, setup.store, setup.registry) == ("postgres", "s3", "server")
    assert setup.uses_network
    assert setup.label.endswith("; PostgreSQL, S3 store (SeaweedFS), MLflow server")
    # where the database and store are does not change the bare model's reference
    assert setup.reference_key == bench.Setup.parse("worker:processes=2").reference_key
    plain = bench.Setup.parse("worker:processes=2")
    assert (plain.database, plain.store, plain.registry) == ("sqlite", "local", "file")
    assert not plain.uses_network and plain.network_label == ""
    assert bench.Setup.parse("serve:db=postgres").network_label == (
        "; PostgreSQL, local store, bundle folder"
    )
    for bad in ("serve:db=mysql", "serve:store=gcs", "worker:registry=http"):
        with pytest.raises(ValueError, match="is one of"):
            bench.Setup.parse(bad)


def test_infrastructure_points_every_process_at_the_same_files(
    bench: ModuleType, tmp_path: Path
) -> None:
    """SQLite and the local store: the workers, each with a data folder of its own, get the
    API's database file and store folder; one bundle is MODEL_URI, two are MODELS."""
    setup = bench.Setup.parse("worker:processes=2")
    data = tmp_path / "data"
    with bench.infrastructure(setup, data, {"default": tmp_path / "cxr"}, None) as infra:
        assert infra.env == {
            "ONCOTRIAGE_DATABASE_URL": f"sqlite:///{data / 'oncotriage.db'}",
            "ONCOTRIAGE_STORE_DIR": str(data / "store"),
            "ONCOTRIAGE_MODEL_URI": str(tmp_path / "cxr"),
        }
        assert infra.database_url == infra.env["ONCOTRIAGE_DATABASE_URL"]
        assert infra.postgres_app is None
    bundles = {"cxr": tmp_path / "cxr", "ldct": tmp_path / "ct"}
    with bench.infrastructure(setup, data, bundles, None) as infra:
        assert json.loads(infra.env["ONCOTRIAGE_MODELS"]) == {
            "cxr": str(tmp_path / "cxr"),
            "ldct": str(tmp_path / "ct"),
        }
        assert "ONCOTRIAGE_MODEL_URI" not in infra.env
    with pytest.raises(RuntimeError, match="needs network services"):
        with bench.infrastructure(bench.Setup.parse("serve:db=postgres"), data, bundles, None):
            pass


@pytest.mark.postgres
def test_infrastructure_gives_each_run_a_postgres_schema_of_its_own(
    bench: ModuleType, postgres_url: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    services = bench.NetworkServices(postgres_url, tmp_path)
    setup = bench.Setup.parse("worker:processes=2:db=postgres")
    with bench.infrastructure(setup, tmp_path, {"default": tmp_path}, services) as infra:
        engine = sa.create_engine(infra.database_url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            schema = connection.execute(sa.text("SELECT current_schema()")).scalar_one()
            app = connection.execute(sa.text("SHOW application_name")).scalar_one()
            seen = bench.postgres_backend_cpu_seconds(services, infra.postgres_app)
        engine.dispose()
        assert schema.startswith("bench_") and app == infra.postgres_app
        assert len(seen) == 1 and all(cpu >= 0 for cpu in seen.values())
    admin = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        left = connection.execute(
            sa.text("SELECT count(*) FROM information_schema.schemata WHERE schema_name = :s"),
            {"s": schema},
        ).scalar_one()
    admin.dispose()
    assert left == 0  # dropped after the run


def test_job_timings_read_the_service_database(
    bench: ModuleType, db_url: str, tmp_path: Path
) -> None:
    """The medians come through SQLAlchemy from the service's database, SQLite or
    PostgreSQL, overall and per modality."""
    sys.path.insert(0, str(REPO / "tests" / "serving"))
    import sqlalchemy as sa
    from service_utils.dicom import dx_instance, to_bytes
    from service_utils.factories import service_factory_for
    from service_utils.server import stow, study_id_for

    from oncotriage.serving.db.models import Job

    instances = [dx_instance(30 + index) for index in range(3)]
    factory = service_factory_for(db_url, tmp_path)
    with factory(model_uri=str(REPO / "models" / "demo")) as service:
        stow(service, "A", [to_bytes(ds) for ds in instances]).raise_for_status()
        for ds in instances:
            service.wait_for_study(study_id_for(service, "A", ds.StudyInstanceUID), "A")
        with service.db.session() as session:
            seconds = sorted(session.scalars(sa.select(Job.inference_s)))
    timings = bench.job_timings(db_url)
    assert len(seconds) == 3 and all(value > 0 for value in seconds)
    assert timings["inference_ms"] == pytest.approx(seconds[1] * 1000)
    assert timings["inference_ms:DX"] == pytest.approx(seconds[1] * 1000)
    assert set(timings) == {
        "inference_ms",
        "inference_ms:DX",
        "jobs_done",
        "monitored",
        "challenger_scored",
    }
    assert timings["jobs_done"] == 3.0
    # the monitor records every completed job; with no challenger none is shadow-scored
    assert (timings["monitored"], timings["challenger_scored"]) == (3.0, 0.0)


def _mixed(bench: ModuleType, service_rate: float) -> Any:
    runs = []
    for index, (kind, ttt) in enumerate(
        [("cxr", 1.0), ("cxr", 2.0), ("ldct", 9.0), ("cxr", 3.0), ("cxr", 4.0), ("ldct", 11.0)]
    ):
        run = bench.StudyRun("H", f"1.2.{index}", b"", "b", status="triaged")
        run.server = {"time_to_triage_s": ttt, "modality": bench.MODALITY[kind]}
        runs.append((kind, run))
    bare = {
        "cxr": [
            bench.BareResult(rate=rate, cpu_ms=1.0, load=0.1, network_rate=rate)
            for rate in (20.0, 22.0)
        ],
        "ldct": [
            bench.BareResult(rate=rate, cpu_ms=1.0, load=0.1, network_rate=rate)
            for rate in (0.5, 0.5)
        ],
    }
    load = {"service_rate": service_rate, "failed_studies": 0, "load": 0.5}
    timings = {"inference_ms": 60.0, "inference_ms:DX": 50.0, "inference_ms:CT": 1900.0}
    return bench.MixedResult(bench.Setup.parse("serve"), load, runs, bare, timings)


def test_mixed_load_arithmetic_and_table(bench: ModuleType) -> None:
    result = _mixed(bench, service_rate=1.2)
    # the models alone on 4 radiographs at 21/s and 2 CTs at 0.5/s
    assert result.mix_bare_rate == pytest.approx(6 / (4 / 21.0 + 2 / 0.5))
    cxr, ct = result.kind_rows()
    assert (cxr["modality"], cxr["studies"], ct["modality"], ct["studies"]) == ("DX", 4, "CT", 2)
    assert cxr["rate"] == pytest.approx(1.2 * 4 / 6) and ct["rate"] == pytest.approx(0.4)
    assert cxr["bare_rate"] == pytest.approx(21.0)
    assert (cxr["model_ms"], ct["model_ms"]) == (50.0, 1900.0)
    assert ct["bare_ms"] == pytest.approx(2000.0)  # one thread: 1 / 0.5 studies/s
    assert ct["ttt"] == [9.0, 11.0]

    args = argparse.Namespace(
        hospitals=2, studies=4, ct_studies=2, ct_model="light", rounds=1, setup=["serve"]
    )
    block = bench.render_mixed_table(args, [[result]])
    start, end = bench.markers("service_load_mixed")
    assert block.startswith(start) and block.endswith(end)
    rows = [line for line in block.splitlines() if line.startswith("| `serve`")]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    header = next(line for line in block.splitlines() if line.startswith("| setup |"))
    assert all(len(row) == len(header.split("|")) - 2 for row in cells)
    assert [row[1] for row in cells] == ["all", "DX (cxr)", "CT (ldct)"]
    assert cells[0][5] == f"**{1.2 / result.mix_bare_rate:.2f}**"
    assert cells[1][4] == "21.00" and cells[2][6] == "1900 / 2000"
    assert cells[2][7] == "10.0 / 10.9"  # CT time to triage p50 / p95
    assert (cells[0][8], cells[1][8]) == ("0.5", "")  # load average, once per setup
    assert "The machine was shared" not in block  # load 0.5: a quiet machine
    assert "--ct-studies 2 --ct-model light" in block
    assert "SIMD flags" in block  # the machine in the header


def test_interleave_spreads_the_ct_among_the_radiographs(bench: ModuleType) -> None:
    cxr = [Path(f"cxr{i}") for i in range(6)]
    ct = [Path(f"ct{i}") for i in range(2)]
    order = [path.name for _, path in bench.interleave({"cxr": cxr, "ldct": ct})]
    assert order == ["cxr0", "cxr1", "ct0", "cxr2", "cxr3", "cxr4", "ct1", "cxr5"]


def test_net_table_rows(bench: ModuleType) -> None:
    plain = _result(bench, "worker:processes=2", 18.0, (20.0, 21.0))
    net = _result(
        bench, "worker:processes=2:db=postgres:store=s3:registry=server", 15.0, (20.0, 21.0)
    )
    plain.load["cpu_split_ms"] = {"api": 20.0, "workers": 70.0}
    plain.load["failed_studies"] = 0
    net.load["cpu_split_ms"] = {
        "api": 25.0,
        "workers": 75.0,
        "s3": 6.0,
        "mlflow": 1.0,
        "postgres": 9.0,
    }
    net.load["failed_studies"] = 0
    args = argparse.Namespace(
        hospitals=4, studies=96, rounds=1, kind="cxr", setup=[plain.setup.text, net.setup.text]
    )
    block = bench.render_net_table(args, [[plain], [net]])
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    cells = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows]
    header = next(line for line in block.splitlines() if line.startswith("| setup |"))
    assert all(len(row) == len(header.split("|")) - 2 for row in cells)
    assert cells[0][2] == "SQLite, local store, bundle folder"
    assert cells[1][2] == "PostgreSQL, S3 store (SeaweedFS), MLflow server"
    assert cells[0][8:10] == ["20 / 70", "- / - / -"]
    assert cells[1][8:10] == ["25 / 75", "6 / 1 / 9"]
    assert cells[1][6] == f"**{15.0 / 20.5:.2f}**"  # pooled with the SQLite row's bare model
    assert "The machine was shared" not in block
    net.load["load"] = 1000.0  # other jobs held the cores: the table says so
    assert "load average was 0.5-1000.0" in bench.render_net_table(args, [[plain], [net]])


def test_a_challenger_setup_serves_the_registered_champion(
    bench: ModuleType, tmp_path: Path
) -> None:
    """The infrastructure names the bundle folder; a challenger run must still be served from
    the registry alias, or the shadow model never runs (it scored 0 of 160 jobs)."""
    data = tmp_path / "data"
    env = {"ONCOTRIAGE_MODEL_URI": "models:/bench-shadow@champion", "ONCOTRIAGE_X": "1"}
    for text, expected in (
        ("serve:challenger=1", "models:/bench-shadow@champion"),
        ("serve", str(tmp_path / "cxr")),
    ):
        setup = bench.Setup.parse(text)
        with bench.infrastructure(setup, data, {"default": tmp_path / "cxr"}, None) as infra:
            served = bench.served_env(setup, env, infra.env)
        assert served["ONCOTRIAGE_MODEL_URI"] == expected
        assert served["ONCOTRIAGE_X"] == "1"
        assert served["ONCOTRIAGE_DATABASE_URL"] == f"sqlite:///{data / 'oncotriage.db'}"


def test_openvino_setups_get_their_own_block_and_verdict(bench: ModuleType) -> None:
    """``:backend=openvino`` sets the service's backend, is its own bare-model reference, and
    a run with it writes service_load_openvino (the ONNX Runtime table stays), with the
    issue-16 verdict (ratio >= 0.9 with a core reserved)."""
    setup = bench.Setup.parse("serve:reserve=1:backend=openvino")
    assert setup.backend == "openvino"
    assert setup.reference_key[-1] == "openvino"
    assert setup.reference_key != bench.Setup.parse("serve:reserve=1").reference_key
    assert "OpenVINO (fp32)" in setup.label
    args = argparse.Namespace(settle=0.2)
    env = bench.service_env(Path("/d"), Path("/b"), setup, args, 8000)
    assert env["ONCOTRIAGE_INFERENCE_BACKEND"] == "openvino"
    plain_env = bench.service_env(Path("/d"), Path("/b"), bench.Setup.parse("serve"), args, 8000)
    assert "ONCOTRIAGE_INFERENCE_BACKEND" not in plain_env

    texts = ["serve:reserve=1", "serve:reserve=1:backend=openvino", "serve:backend=openvino"]
    setups = [bench.Setup.parse(text) for text in texts]
    assert bench.block_name(setups, None) == "service_load_openvino"
    assert bench.block_name(setups[:1], None) == "service_load"
    by_setup = [
        [_result(bench, texts[0], 22.0, (23.0, 23.0))],
        [_result(bench, texts[1], 19.0, (20.0, 20.0))],  # 0.95
        [_result(bench, texts[2], 17.0, (20.0, 20.0))],  # 0.85, no core reserved
    ]
    args = argparse.Namespace(hospitals=4, studies=96, rounds=1, setup=texts, kind="cxr", poll=1.0)
    block = bench.render_table(args, by_setup, "service_load_openvino")
    start, end = bench.markers("service_load_openvino")
    assert block.startswith(start) and block.endswith(end)
    assert "What changed" not in block  # the ONNX Runtime analysis stays in its own block
    verdicts = [line for line in block.splitlines() if line.startswith("- `serve")]
    assert verdicts == [
        "- `serve:reserve=1:backend=openvino`: service / bare OpenVINO model 0.95: **meets** "
        "the target (>= 0.9).",
        "- `serve:backend=openvino`: service / bare OpenVINO model 0.85: (the target applies "
        "with a core reserved).",
    ]
