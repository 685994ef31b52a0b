"""Capacity model: machines and GPUs for a province, from per-study costs.

Measured here (this machine, every run):

- ``intake``: parsing and checking one instance's bytes (``pydicom.dcmread``), per instance;
- ``store``: ``ContentStore.put`` of those bytes into the folder store (fsync), and with
  ``--s3-endpoint`` also into an S3 store (e.g. a SeaweedFS started for it);
- ``database``: the rows and updates of one study's life (study, series, instances, job,
  claim, result, done) in one SQLite file, per study (PostgreSQL on another host costs
  network round trips on top: see the service_load_net table in docs/benchmarks.md);
- ``worker CPU outside the model``: reading the series back from the store into a volume
  (``read_image``), per study.

Taken from docs/benchmarks.md (measured on this machine by ``bench/model_throughput.py``):
the model's CPU ms per image and GFLOP per image, per series type.

Assumed (published figures, marked as such in the output): the GPU's dense FP16 tensor
throughput and the fraction of it a detector reaches; the day's peak-hour share; the mix of
series types; the utilisation target.

The formula (per stage s, per series type t with share m_t of studies)::

    peak_rate       = studies_per_day * peak_hour_share / 3600            [studies/s]
    cpu_s_per_study = (intake + store + worker_cpu) * instances + database [core-s]
                      (+ sum_t m_t * model_cpu_s_t  for CPU-only inference)
    gpu_s_per_study = sum_t m_t * GFLOP_t / (GPU_TFLOPS * 1000 * efficiency)
    cores           = ceil(peak_rate * cpu_s_per_study / utilisation)
    gpus            = ceil(peak_rate * gpu_s_per_study / utilisation)
    machines        = ceil(cores / cores_per_machine)
    wait (M/M/1 per unit, rho = utilisation) ~ rho / (1 - rho) * service_time

Writes the table and the formula to docs/capacity.md.

Usage::

    nice -n 10 .venv/bin/python bench/capacity.py --repeat 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "docs" / "benchmarks.md"
CAPACITY = REPO / "docs" / "capacity.md"

#: Published: NVIDIA L4 datasheet, FP16 tensor core 121 TFLOPS dense (242 with sparsity).
ASSUMED_GPU = ("NVIDIA L4", 121.0)
#: Assumed: the fraction of peak tensor throughput a RetinaNet in TensorRT FP16 reaches.
ASSUMED_GPU_EFFICIENCY = 0.15
#: Assumed: share of the day's studies that arrive in the busiest hour (clinics ~7 h a day).
ASSUMED_PEAK_HOUR_SHARE = 0.2
#: Assumed: target utilisation of every pool at the peak hour (the rest is headroom).
ASSUMED_UTILISATION = 0.6
#: Assumed: CPU cores per worker/API machine.
ASSUMED_CORES_PER_MACHINE = 16


@dataclass(frozen=True)
class SeriesType:
    name: str
    model: str  # row name in the model_throughput table
    instances: int  # DICOM instances per study
    model_cpu_s: float  # core-seconds per study on CPU (measured, docs/benchmarks.md)
    gflop: float  # per study


@dataclass(frozen=True)
class Scenario:
    name: str
    studies_per_day: float
    mix: dict[str, float]  # series type -> share of studies


@dataclass(frozen=True)
class Plan:
    peak_rate: float
    cpu_s_per_study: float
    gpu_s_per_study: float
    cores: int
    machines: int
    gpus: int
    cpu_only_cores: int
    gpu_wait_s: float
    time_to_triage_s: float


def plan(
    studies_per_day: float,
    mix: dict[str, float],
    types: dict[str, SeriesType],
    stage_cpu_s: dict[str, float],
    *,
    gpu_tflops: float,
    gpu_efficiency: float,
    peak_hour_share: float,
    utilisation: float,
    cores_per_machine: int,
) -> Plan:
    """The formula of the module docstring; ``stage_cpu_s`` are core-seconds per instance
    (``intake``, ``store``, ``worker``) or per study (``database``)."""
    if not 0 < utilisation < 1:
        raise ValueError("utilisation must be in (0, 1)")
    if abs(sum(mix.values()) - 1) > 1e-9:
        raise ValueError("the mix's shares must add up to 1")
    peak_rate = studies_per_day * peak_hour_share / 3600
    instances = sum(share * types[name].instances for name, share in mix.items())
    service_cpu = (
        stage_cpu_s["intake"] + stage_cpu_s["store"] + stage_cpu_s["worker"]
    ) * instances + stage_cpu_s["database"]
    model_cpu = sum(share * types[name].model_cpu_s for name, share in mix.items())
    gpu_s = sum(
        share * types[name].gflop / (gpu_tflops * 1000 * gpu_efficiency)
        for name, share in mix.items()
    )
    cores = math.ceil(peak_rate * service_cpu / utilisation)
    gpus = math.ceil(peak_rate * gpu_s / utilisation)
    cpu_only_cores = math.ceil(peak_rate * (service_cpu + model_cpu) / utilisation)
    gpu_wait = utilisation / (1 - utilisation) * gpu_s
    return Plan(
        peak_rate=peak_rate,
        cpu_s_per_study=service_cpu,
        gpu_s_per_study=gpu_s,
        cores=cores,
        machines=math.ceil(cores / cores_per_machine),
        gpus=gpus,
        cpu_only_cores=cpu_only_cores,
        gpu_wait_s=gpu_wait,
        time_to_triage_s=service_cpu + gpu_s + gpu_wait,
    )


# ------------------------------------------------------------------------ measurements


def model_rows(doc: Path = BENCHMARKS) -> dict[str, tuple[float, float]]:
    """model name -> (CPU core-seconds per image, GFLOP per image) from the model table,
    the ONNX Runtime rows, fewest threads (core-seconds = ms x threads)."""
    found: dict[str, tuple[int, float, float]] = {}
    pattern = re.compile(
        r"^\| (?P<model>[\w-]+) \([^)]*\) \| [^|]+ \| onnxruntime CPU[^|]*\| (?P<threads>\d+) "
        r"\| \d+ \| [\d.]+ \| (?P<ms>[\d.]+) \([\d.]+\) \| [\d.]+x \| (?P<gflop>[\d.]+) \|$"
    )
    for line in doc.read_text().splitlines():
        match = pattern.match(line)
        if not match:
            continue
        threads = int(match["threads"])
        seconds = float(match["ms"]) / 1000 * threads
        name = match["model"]
        if name not in found or threads < found[name][0]:
            found[name] = (threads, seconds, float(match["gflop"]))
    return {name: (seconds, gflop) for name, (_, seconds, gflop) in found.items()}


def _median_s(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def measure(repeat: int, s3: dict[str, str] | None) -> dict[str, float]:
    import pydicom

    from oncotriage.datasets.reader import read_image
    from oncotriage.datasets.synth import write_case
    from oncotriage.serving.storage import ContentStore

    with tempfile.TemporaryDirectory(prefix="capacity-") as work_name:
        work = Path(work_name)
        entry = write_case("cxr", 0, 0, positive=True, out=work / "studies")
        files = sorted((work / "studies" / entry["case_id"]).rglob("*.dcm"))
        data = files[0].read_bytes()
        results: dict[str, float] = {}
        results["intake"] = _median_s(lambda: pydicom.dcmread(_bytes_io(data)), repeat)
        store = ContentStore(work / "store")
        counter = iter(range(10**6))
        # A different object each time (a trailing byte) so every put writes.
        results["store"] = _median_s(
            lambda: store.put(data + next(counter).to_bytes(4, "big")), repeat
        )
        stored = store.put(data)
        results["worker"] = _median_s(lambda: read_image(store.path(stored.relative_path)), repeat)
        results["database"] = _median_s(_db_study(work / "db.sqlite"), repeat)
        if s3:
            from oncotriage.serving.s3store import S3ContentStore

            remote = S3ContentStore(
                s3["bucket"],
                "capacity",
                work / "cache",
                endpoint_url=s3["endpoint"],
                access_key_id=s3["key"],
                secret_access_key=s3["secret"],
            )
            results["store_s3_wall"] = _median_wall(
                lambda: remote.put(data + next(counter).to_bytes(4, "big")), repeat
            )
        return results


def _median_wall(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _bytes_io(data: bytes):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(data)


def _db_study(path: Path):  # type: ignore[no-untyped-def]
    """One study's statements: insert study, series, instance, job; claim; result; done."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(
        "CREATE TABLE IF NOT EXISTS studies (id INTEGER PRIMARY KEY, uid TEXT UNIQUE, status TEXT,"
        " score REAL);"
        "CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, study_id INTEGER, uid TEXT);"
        "CREATE TABLE IF NOT EXISTS instances (id INTEGER PRIMARY KEY, series_id INTEGER,"
        " uid TEXT, content_hash TEXT);"
        "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, study_id INTEGER, state TEXT,"
        " lease_owner TEXT, lease_expires REAL);"
    )
    counter = iter(range(10**6))

    def one() -> None:
        n = next(counter)
        cursor = connection.cursor()
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO studies (uid, status) VALUES (?, 'received')", (f"s{n}",))
        study = cursor.lastrowid
        cursor.execute("INSERT INTO series (study_id, uid) VALUES (?, ?)", (study, f"r{n}"))
        cursor.execute(
            "INSERT INTO instances (series_id, uid, content_hash) VALUES (?, ?, ?)",
            (cursor.lastrowid, f"i{n}", "0" * 64),
        )
        cursor.execute("INSERT INTO jobs (study_id, state) VALUES (?, 'queued')", (study,))
        cursor.execute("COMMIT")
        cursor.execute("BEGIN")
        cursor.execute(
            "UPDATE jobs SET state='running', lease_owner='w', lease_expires=? WHERE study_id=?",
            (time.time() + 60, study),
        )
        cursor.execute("COMMIT")
        cursor.execute("BEGIN")
        cursor.execute("UPDATE studies SET status='triaged', score=0.5 WHERE id=?", (study,))
        cursor.execute("UPDATE jobs SET state='done', lease_owner=NULL WHERE study_id=?", (study,))
        cursor.execute("COMMIT")

    return one


# ------------------------------------------------------------------------------ report


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def series_types(rows: dict[str, tuple[float, float]]) -> dict[str, SeriesType]:
    """Study shapes: a chest radiograph (1 instance, the cxr2d-nodule model) and a
    low-dose chest CT (assumed 280 slices of 1.25 mm, the ct3d-nodule model)."""
    cxr = rows["cxr2d-nodule"]
    ct = rows["ct3d-nodule"]
    return {
        "cxr": SeriesType("chest radiograph", "cxr2d-nodule", 1, cxr[0], cxr[1]),
        "ct": SeriesType("low-dose chest CT", "ct3d-nodule", 280, ct[0], ct[1]),
    }


SCENARIOS = [
    Scenario(
        "26 hospitals x 300 studies/day (80 % CXR, 20 % CT)", 26 * 300, {"cxr": 0.8, "ct": 0.2}
    ),
    Scenario("55,000 studies/day (lung CT)", 55_000, {"ct": 1.0}),
]


def render(measured: dict[str, float], types: dict[str, SeriesType], repeat: int) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu_name, tflops = ASSUMED_GPU
    lines = [
        "# Capacity",
        "",
        f"Generated by `python bench/capacity.py --repeat {repeat}` on {now}; CPU: {cpu_model()}.",
        "",
        "## Per-study costs",
        "",
        "| stage | cost | source |",
        "|---|---:|---|",
        f"| intake: parse one instance (pydicom) | {measured['intake'] * 1000:.2f} ms CPU "
        "per instance | **measured here** |",
        f"| store: put one instance (folder, fsync) | {measured['store'] * 1000:.2f} ms CPU "
        "per instance | **measured here** |",
    ]
    if "store_s3_wall" in measured:
        lines.append(
            f"| store: put one instance (S3, SeaweedFS on loopback) | "
            f"{measured['store_s3_wall'] * 1000:.2f} ms wall per instance | **measured here** |"
        )
    lines += [
        f"| database: one study's rows and updates (SQLite) | {measured['database'] * 1000:.2f} "
        "ms CPU per study | **measured here** |",
        f"| worker outside the model: read the series into a volume | "
        f"{measured['worker'] * 1000:.2f} ms CPU per instance (radiograph) | **measured here** |",
    ]
    for series in types.values():
        lines.append(
            f"| model on CPU, {series.name} ({series.model}) | {series.model_cpu_s:.2f} core-s, "
            f"{series.gflop:.1f} GFLOP per study | measured here by bench/model_throughput.py "
            "(docs/benchmarks.md) |"
        )
        gpu_ms = series.gflop / (tflops * 1000 * ASSUMED_GPU_EFFICIENCY) * 1000
        lines.append(
            f"| model on GPU, {series.name} | {gpu_ms:.1f} ms per study | **assumed**: "
            f"{gpu_name} {tflops:g} TFLOPS FP16 dense (datasheet) x "
            f"{ASSUMED_GPU_EFFICIENCY:.0%} efficiency |"
        )
    lines += [
        "",
        f"Assumed: {ASSUMED_PEAK_HOUR_SHARE:.0%} of a day's studies in its busiest hour; "
        f"pools sized to {ASSUMED_UTILISATION:.0%} utilisation at that hour (the rest is "
        f"headroom); {ASSUMED_CORES_PER_MACHINE} cores per machine; a CT study is 280 "
        "instances, and the worker's read of one CT slice costs what one radiograph's does. "
        "The CT model rows are the benchmark's 192x192x80 input (a resampled volume): a "
        "full-resolution sliding window costs more.",
        "",
        "## Machines and GPUs",
        "",
        "| scenario | peak studies/s | CPU core-s per study (service) | GPU s per study | "
        "cores | machines | GPUs | cores if CPU-only inference | time to triage at peak "
        "(GPU path) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        result = plan(
            scenario.studies_per_day,
            scenario.mix,
            types,
            measured,
            gpu_tflops=tflops,
            gpu_efficiency=ASSUMED_GPU_EFFICIENCY,
            peak_hour_share=ASSUMED_PEAK_HOUR_SHARE,
            utilisation=ASSUMED_UTILISATION,
            cores_per_machine=ASSUMED_CORES_PER_MACHINE,
        )
        lines.append(
            f"| {scenario.name} | {result.peak_rate:.2f} | {result.cpu_s_per_study:.3f} | "
            f"{result.gpu_s_per_study:.3f} | {result.cores} | {result.machines} | "
            f"{result.gpus} | {result.cpu_only_cores} | {result.time_to_triage_s:.1f} s |"
        )
    lines += [
        "",
        "Time-to-triage targets: the urgent SLA is 60 minutes (`ONCOTRIAGE_SLA_URGENT_MINUTES`); "
        "at the planned utilisation the model's queueing adds seconds, so the series settle "
        "time (`ONCOTRIAGE_SERIES_SETTLE_S`) and the network upload from the hospital dominate.",
        "",
        "## Formula",
        "",
        "```",
        "peak_rate       = studies_per_day * peak_hour_share / 3600",
        "cpu_s_per_study = (intake + store + worker) * instances_per_study + database",
        "gpu_s_per_study = sum_t mix_t * GFLOP_t / (TFLOPS * 1000 * efficiency)",
        "cores           = ceil(peak_rate * cpu_s_per_study / utilisation)",
        "gpus            = ceil(peak_rate * gpu_s_per_study / utilisation)",
        "machines        = ceil(cores / cores_per_machine)",
        "time_to_triage  = cpu_s + gpu_s + utilisation / (1 - utilisation) * gpu_s  (M/M/1)",
        "```",
        "",
        "Not counted: PostgreSQL's own host (one database server handles these rates: see the "
        "PostgreSQL setups of the service_load_net table in docs/benchmarks.md), S3 storage "
        "capacity (bytes per study x retention), Triton's per-request overhead.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--s3-endpoint", help="measure S3 puts against this endpoint too")
    parser.add_argument("--s3-bucket", default="oncotriage")
    parser.add_argument("--s3-key", default="")
    parser.add_argument("--s3-secret", default="")
    parser.add_argument("--out", type=Path, default=CAPACITY)
    args = parser.parse_args()
    s3 = (
        {
            "endpoint": args.s3_endpoint,
            "bucket": args.s3_bucket,
            "key": args.s3_key,
            "secret": args.s3_secret,
        }
        if args.s3_endpoint
        else None
    )
    measured = measure(args.repeat, s3)
    types = series_types(model_rows())
    args.out.write_text(render(measured, types, args.repeat))
    print(args.out.read_text())  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
