"""Service load benchmark: simulated hospitals push synthetic studies by STOW-RS on loopback.

What it does, in one run:

1. Writes ``--studies`` synthetic studies (``oncotriage.datasets.synth``; every study has its own
   UIDs) and takes a detector bundle (``--model``, or exports the light config with random
   weights: a plumbing model, scores meaningless, enough for throughput).
2. Bare model: reads every image once and times ``DetectionPipeline.detect`` on all of them with
   as many threads as the service has workers -> studies/s of the model alone.
3. Starts ``oncotriage serve`` on 127.0.0.1 with a temporary data dir and that model, creates a
   centre and ``--hospitals`` community hospitals with tokens through ``oncotriage admin``.
4. Each hospital (a thread with its own :class:`~oncotriage.serving.client.StowClient`) pushes
   its share of the studies as fast as the service takes them, then polls its studies until
   each is triaged (or failed).
5. Reports service studies/s at saturation (from the server's ``triaged_at`` stamps),
   time-to-triage p50/p95/p99 (the server's ``time_to_triage_s``: first instance received ->
   triaged), the bare-model studies/s, their ratio and the per-study overhead outside the
   model (``1/service - 1/bare``), and writes the table into ``docs/benchmarks.md`` between
   ``<!-- service_load:start -->`` and ``<!-- service_load:end -->``.

Targets (issue 5): service >= 0.9 x bare model at saturation; overhead <= 20 ms per study.

The service API it relies on (docs/api.md): ``GET /healthz``, ``GET /readyz``, STOW-RS
``POST /dicomweb/studies/{uid}`` answering with a ``Location`` of the study (else it looks the
study up with ``GET /v1/studies?study_instance_uid=``), ``GET /v1/studies/{id}`` with
``status``, ``triaged_at``, ``time_to_triage_s``; ``oncotriage admin create-hospital NAME --kind
centre|community [--centre NAME]`` and ``oncotriage admin issue-token --hospital NAME`` (the
token is the ``otk_...`` word it prints).

Usage::

    .venv/bin/python bench/service_load.py --hospitals 4 --studies 40 --workers 1
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START_MARKER = "<!-- service_load:start -->"
END_MARKER = "<!-- service_load:end -->"
LIGHT_CONFIGS = {
    "cxr": REPO / "configs" / "detector_cxr2d_light.yaml",
    "ldct": REPO / "configs" / "detector_ct3d_light.yaml",
}
TOKEN_RE = re.compile(r"\botk_[0-9a-f]+_[A-Za-z0-9_\-]+")
DONE_STATUSES = {"triaged", "failed"}


# ------------------------------------------------------------------------------ data and model


def write_studies(kind: str, n: int, out: Path, seed: int) -> list[Path]:
    """``n`` synthetic studies (folders), about 70 % with nodules, each with its own UIDs."""
    from oncotriage.datasets.synth import write_case

    folders = []
    for index in range(n):
        entry = write_case(kind, seed, index, positive=index % 10 < 7, out=out)
        folders.append(out / entry["case_id"])
    return folders


def resolve_model(kind: str, model: Path | None, work: Path) -> Path:
    """The bundle folder to benchmark: ``--model``, or the light config with random weights."""
    if model is not None:
        return model
    from oncotriage.models.export import export_from_config  # torch: bench only, never serving

    out = work / "model"
    export_from_config(LIGHT_CONFIGS[kind], out, model_name=f"bench-{kind}-random", version="1")
    return out


def bare_model_rate(bundle: Path, folders: list[Path], workers: int) -> tuple[float, float]:
    """(studies/s, mean seconds per study) of ``DetectionPipeline.detect`` alone."""
    from oncotriage.datasets.reader import read_image
    from oncotriage.models.pipeline import DetectionPipeline

    pipeline = DetectionPipeline.from_bundle(bundle)
    images = []
    for folder in folders:
        files = sorted(folder.glob("*.dcm"))
        images.append(read_image(files[0] if len(files) == 1 else files))
    for image in images[:2]:  # warm-up: ORT allocations, first-call costs
        pipeline.detect(image)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(pipeline.detect, images))
    elapsed = time.perf_counter() - started
    return len(images) / elapsed, elapsed / len(images)


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

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_service(work: Path, bundle: Path, workers: int, settle_s: float) -> Service:
    port = free_port()
    env = {
        **os.environ,
        "ONCOTRIAGE_ENVIRONMENT": "development",
        "ONCOTRIAGE_DATA_DIR": str(work / "data"),
        "ONCOTRIAGE_MODEL_URI": str(bundle),
        "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
        "ONCOTRIAGE_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "ONCOTRIAGE_EMBEDDED_WORKERS": str(workers),
        "ONCOTRIAGE_WORKER_POLL_INTERVAL_S": "0.05",
        "ONCOTRIAGE_SERIES_SETTLE_S": str(settle_s),
        "ONCOTRIAGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ONCOTRIAGE_LOG_LEVEL": "WARNING",
    }
    log = work / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*oncotriage_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    service = Service(process=process, url=f"http://127.0.0.1:{port}", env=env, log=log)
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


# ------------------------------------------------------------------------------ the load


@dataclass
class StudyRun:
    hospital: str
    folder: Path
    study_uid: str = ""
    status_url: str = ""
    push_started: float = 0.0
    push_done: float = 0.0
    seen_done: float = 0.0
    status: str = ""
    failed_instances: int = 0
    server: dict[str, Any] = field(default_factory=dict)


def _study_url(http: httpx.Client, base: str, run: StudyRun) -> str:
    if run.status_url:
        return run.status_url
    answer = http.get(f"{base}/v1/studies", params={"study_instance_uid": run.study_uid})
    answer.raise_for_status()
    for study in answer.json().get("data", []):
        if study.get("study_instance_uid") == run.study_uid:
            run.status_url = urljoin(base + "/", study.get("url") or f"v1/studies/{study['id']}")
            return run.status_url
    return ""


def hospital_load(
    base: str, name: str, token: str, runs: list[StudyRun], poll_s: float, deadline: float
) -> None:
    """Push this hospital's studies, then poll them until each is triaged or failed."""
    from oncotriage.serving.client import StowClient

    client = StowClient(base, token, timeout_s=300)
    for run in runs:
        run.push_started = time.time()
        result = client.push_files([run.folder])
        run.push_done = time.time()
        run.study_uid = result.study_uids[0]
        run.status_url = result.status_urls.get(run.study_uid, "")
        run.failed_instances = len(result.failed)
    pending = list(runs)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        while pending and time.monotonic() < deadline:
            for run in list(pending):
                url = _study_url(http, base, run)
                if not url:
                    continue
                answer = http.get(url)
                if answer.status_code != 200:
                    continue
                study = answer.json()
                if study.get("status") in DONE_STATUSES:
                    run.seen_done = time.time()
                    run.status = study["status"]
                    run.server = study
                    pending.remove(run)
            if pending:
                time.sleep(poll_s)


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def run_load(
    service: Service, tokens: dict[str, str], folders: list[Path], poll_s: float, timeout_s: float
) -> dict[str, Any]:
    names = list(tokens)
    runs = [StudyRun(hospital=names[i % len(names)], folder=f) for i, f in enumerate(folders)]
    deadline = time.monotonic() + timeout_s
    errors: queue.Queue[BaseException] = queue.Queue()

    def hospital(name: str) -> None:
        try:
            mine = [r for r in runs if r.hospital == name]
            hospital_load(service.url, name, tokens[name], mine, poll_s, deadline)
        except BaseException as exc:  # reported by the main thread
            errors.put(exc)

    threads = [threading.Thread(target=hospital, args=(name,), name=name) for name in names]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not errors.empty():
        raise errors.get()
    done = [r for r in runs if r.status]
    if len(done) < len(runs):
        raise RuntimeError(
            f"{len(runs) - len(done)} of {len(runs)} studies not triaged within {timeout_s} s; "
            f"service log:\n{tail(service.log)}"
        )
    triaged_at = sorted(t for r in done if (t := _timestamp(r.server.get("triaged_at"))))
    received_at = sorted(t for r in done if (t := _timestamp(r.server.get("received_at"))))
    server_ttt = [
        float(r.server["time_to_triage_s"])
        for r in done
        if r.server.get("time_to_triage_s") is not None
    ]
    client_ttt = [r.seen_done - r.push_started for r in done]
    if len(triaged_at) >= 2 and triaged_at[-1] > triaged_at[0]:
        saturated_rate = (len(triaged_at) - 1) / (triaged_at[-1] - triaged_at[0])
    else:
        saturated_rate = float("nan")
    end_to_end = len(done) / (max(r.seen_done for r in done) - started)
    # time a worker spent on each study (claim -> triaged), to split model from queue overhead
    worker_s = [
        b - a
        for r in done
        if (a := _timestamp(r.server.get("processing_started_at")))
        and (b := _timestamp(r.server.get("triaged_at")))
    ]
    return {
        "studies": len(runs),
        "failed_studies": sum(r.status == "failed" for r in runs),
        "failed_instances": sum(r.failed_instances for r in runs),
        "push_s": max(r.push_done for r in runs) - started,
        "received_span_s": (received_at[-1] - received_at[0]) if len(received_at) > 1 else 0.0,
        "service_rate": saturated_rate,
        "end_to_end_rate": end_to_end,
        "ttt": server_ttt or client_ttt,
        "ttt_source": "server" if server_ttt else "client",
        "worker_s_median": statistics.median(worker_s) if worker_s else float("nan"),
        "model": {
            "name": done[0].server.get("model_name"),
            "version": done[0].server.get("model_version"),
        },
    }


# ------------------------------------------------------------------------------ the report


def render_table(args: argparse.Namespace, load: dict[str, Any], bare_rate: float) -> str:
    service_rate = load["service_rate"]
    ratio = service_rate / bare_rate if bare_rate else float("nan")
    overhead_ms = (1.0 / service_rate - 1.0 / bare_rate) * 1000.0
    ttt = load["ttt"]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    lines = [
        START_MARKER,
        "### Service load (`bench/service_load.py`)",
        "",
        f"{date}, {platform.machine()} with {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}; `oncotriage serve` on 127.0.0.1 (SQLite, local store, "
        f"embedded ONNX Runtime, {args.workers} in-process worker(s)); {args.hospitals} "
        f"simulated hospitals pushing {load['studies']} synthetic `{args.kind}` studies by "
        f"STOW-RS; model `{load['model']['name']}` v{load['model']['version']}"
        + (" (random weights: throughput only)" if args.model is None else "")
        + ".",
        "",
        "| studies | hospitals | workers | service studies/s | bare model studies/s | ratio "
        "| overhead ms/study | time-to-triage p50 / p95 / p99 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {load['studies']} | {args.hospitals} | {args.workers} | {service_rate:.2f} "
        f"| {bare_rate:.2f} | {ratio:.2f} | {overhead_ms:.1f} "
        f"| {percentile(ttt, 50):.2f} / {percentile(ttt, 95):.2f} / {percentile(ttt, 99):.2f} |",
        "",
        f"Service studies/s = (n - 1) / (last - first server `triaged_at`) while the queue was "
        f"full (all pushes took {load['push_s']:.1f} s; end to end incl. pushing "
        f"{load['end_to_end_rate']:.2f} studies/s). Bare model = `DetectionPipeline.detect` on "
        f"the same images already in memory, {args.workers} thread(s). Overhead = 1/service - "
        f"1/bare; a worker held each study {load['worker_s_median'] * 1000:.0f} ms (median, "
        f"claim -> triaged). Time to triage ({load['ttt_source']} clock) = first instance "
        f"received -> triaged, queueing included. Targets: ratio >= 0.9, overhead <= 20 ms.",
        END_MARKER,
    ]
    return "\n".join(lines)


def write_block(block: str, doc: Path = DOC) -> None:
    """Replace the service_load block of ``doc`` (append it, with markers, if missing)."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(END_MARKER) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--kind", choices=["cxr", "ldct"], default="cxr")
    parser.add_argument("--workers", type=int, default=1, help="service embedded workers")
    parser.add_argument("--model", type=Path, default=None, help="bundle folder to serve")
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--settle", type=float, default=0.2, help="CT series settle seconds")
    parser.add_argument("--poll", type=float, default=0.2, help="status poll interval, s")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit docs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.hospitals < 1 or args.studies < 2 or args.workers < 1:
        parser.error("need at least 1 hospital, 2 studies and 1 worker")

    work = Path(tempfile.mkdtemp(prefix="oncotriage-load-"))
    service: Service | None = None
    try:
        print(f"work folder {work}")
        folders = write_studies(args.kind, args.studies, work / "studies", args.seed)
        bundle = resolve_model(args.kind, args.model, work)
        bare_rate, bare_s = bare_model_rate(bundle, folders, args.workers)
        print(f"bare model: {bare_rate:.2f} studies/s ({bare_s * 1000:.1f} ms/study)")
        service = start_service(work, bundle, args.workers, args.settle)
        print(f"service ready at {service.url}")
        tokens = create_hospitals(service, args.hospitals)
        load = run_load(service, tokens, folders, args.poll, args.timeout)
        block = render_table(args, load, bare_rate)
        print(block)
        print(
            f"(median of {len(load['ttt'])} time-to-triage values: "
            f"{statistics.median(load['ttt']):.2f} s; failed studies {load['failed_studies']}, "
            f"failed instances {load['failed_instances']})"
        )
        if not args.no_write:
            write_block(block)
            print(f"wrote {DOC.relative_to(REPO)}")
        return 0
    finally:
        if service is not None:
            service.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
