"""Network throughput against client concurrency: embedded ONNX Runtime vs Triton, batching on/off.

One run, one machine, one exported detector (random seeded weights; throughput does not depend
on them). Clients are threads, each sending single-image requests back to back for
``--seconds``; rows:

* ``embedded onnxruntime``: one in-process ``OrtRunner`` shared by the client threads (the
  service's default backend);
* ``triton, dynamic batching``: a real ``tritonserver`` (here the one in the ``nvidia-pytriton``
  wheel, portable flavour: ONNX Runtime in a Python-backend model, CPU) with Triton merging
  concurrent requests into batches (max batch 8, preferred 4/8, 2 ms queue delay);
* ``triton, no batching``: the same model without ``dynamic_batching``.

On a machine with a CUDA GPU (torch sees one and onnxruntime-gpu is installed) it adds, on the
same network: MONAI/torch with AMP (``torch.autocast`` float16) vs ONNX Runtime's TensorRT
execution provider in FP16, at batch 1 and 8. Without a GPU the table says so.

The table goes into ``docs/benchmarks.md`` between the ``triton_throughput`` markers.

Usage::

    .venv/bin/python bench/triton_throughput.py                 # cxr2d light, 5 s per cell
    .venv/bin/python bench/triton_throughput.py --bundle DIR --seconds 10 --no-write
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from benchdoc import DOC, markers, write_block

ROOT = Path(__file__).resolve().parents[1]
START, END = markers("triton_throughput")
DEFAULT_CONFIG = ROOT / "configs" / "detector_cxr2d_light.yaml"

logger = logging.getLogger("bench.triton_throughput")


@dataclass(frozen=True)
class Cell:
    """Throughput of one backend at one client concurrency."""

    backend: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: tuple[float, ...]
    batches: int | None = None  # model executions (Triton statistics), when known

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_clients(
    call: Callable[[np.ndarray], object],
    inputs: Sequence[np.ndarray],
    concurrency: int,
    seconds: float,
) -> tuple[int, float, list[float]]:
    """``concurrency`` threads calling back to back for ``seconds``; (requests, elapsed, ms)."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(concurrency + 1)

    def client(index: int) -> None:
        barrier.wait()
        k = index
        while not stop.is_set():
            started = time.perf_counter()
            try:
                call(inputs[k % len(inputs)])
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return
            latencies[index].append((time.perf_counter() - started) * 1000)
            k += concurrency

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed; first: {errors[0]!r}")
    flat = [ms for per_client in latencies for ms in per_client]
    return len(flat), elapsed, flat


def export_bundle(config: Path, out: Path) -> Path:
    """Export ``config`` with seeded random weights (torch + MONAI, imported here only)."""
    from oncotriage.models.export import export_from_config

    export_from_config(config, out, seed=0)
    return out


def triton_executions(url: str, model: str) -> int:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        [stats] = client.get_inference_statistics(model, "1").model_stats
        return int(stats.execution_count)
    finally:
        client.close()


def bench_cpu(
    bundle: Path, concurrencies: Sequence[int], seconds: float, rounds: int = 3
) -> list[Cell]:
    """Embedded ONNX Runtime and Triton (with and without dynamic batching), interleaved."""
    from oncotriage.models.pipeline import OrtRunner
    from oncotriage.models.spec import ModelSpec
    from oncotriage.serving.triton.repository import write_model
    from oncotriage.serving.triton.runner import TritonRunner
    from oncotriage.serving.triton.server import TritonServer

    spec = ModelSpec.load(bundle)
    rng = np.random.default_rng(0)
    shape = [1, spec.in_channels, *(s if s > 0 else 64 for s in spec.input_shape[2:])]
    inputs = [rng.random(shape, dtype=np.float32) for _ in range(16)]
    workdir = Path(tempfile.mkdtemp(prefix="triton-bench-"))
    repo = workdir / "repo"
    for name, batching in (("batched", True), ("unbatched", False)):
        write_model(
            repo,
            bundle,
            spec,
            model_name=name,
            version=1,
            flavor="portable",
            max_batch_size=8,
            preferred_batch_sizes=(4, 8),
            max_queue_delay_us=2000,
            dynamic_batching=batching,
        )
    cells: list[Cell] = []
    try:
        with TritonServer(repo, workdir=workdir / "server", exit_timeout_s=5) as server:
            backends: dict[str, tuple[Callable[[np.ndarray], object], str | None]] = {
                "embedded onnxruntime": (OrtRunner(bundle / "model.onnx"), None),
                "triton, dynamic batching": (
                    TritonRunner(server.grpc_url, "batched", "1", timeout_s=120),
                    "batched",
                ),
                "triton, no batching": (
                    TritonRunner(server.grpc_url, "unbatched", "1", timeout_s=120),
                    "unbatched",
                ),
            }
            for call, _ in backends.values():  # warm-up: sessions, arenas, connections
                run_clients(call, inputs, 2, 1.0)
            # Rounds interleave the backends, so background load on a shared machine spreads
            # over all of them instead of landing on one cell.
            for concurrency in concurrencies:
                totals: dict[str, tuple[int, float, list[float], int | None]] = {}
                for _ in range(rounds):
                    for label, (call, model) in backends.items():
                        before = triton_executions(server.grpc_url, model) if model else 0
                        requests, elapsed, latencies = run_clients(
                            call, inputs, concurrency, seconds / rounds
                        )
                        executions = (
                            triton_executions(server.grpc_url, model) - before if model else None
                        )
                        n, t, ms, e = totals.get(label, (0, 0.0, [], 0 if model else None))
                        totals[label] = (
                            n + requests,
                            t + elapsed,
                            ms + latencies,
                            None if e is None or executions is None else e + executions,
                        )
                for label, (n, t, ms, e) in totals.items():
                    cell = Cell(label, concurrency, n, t, tuple(ms), e)
                    logger.info(
                        "%-26s c=%d  %.1f img/s  p50 %.1f ms",
                        label,
                        concurrency,
                        cell.throughput,
                        cell.percentile(0.5),
                    )
                    cells.append(cell)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return cells


def bench_gpu(bundle: Path, config: Path, seconds: float) -> list[str] | None:
    """TensorRT FP16 (ONNX Runtime) vs MONAI torch AMP on the GPU; ``None`` without a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return [
            f"| TensorRT FP16 | - | - | onnxruntime {ort.__version__} has no TensorRT "
            "execution provider (install onnxruntime-gpu) |"
        ]
    from oncotriage.models.build import build_network
    from oncotriage.models.config import load_config
    from oncotriage.models.pipeline import OrtRunner
    from oncotriage.models.spec import ModelSpec

    cfg = load_config(config)
    torch.manual_seed(0)
    network = build_network(cfg, use_list_output=True).cuda().eval()
    spec = ModelSpec.load(bundle)
    spatial = [s if s > 0 else 64 for s in spec.input_shape[2:]]
    cache = Path(tempfile.mkdtemp(prefix="trt-cache-"))
    trt = OrtRunner(
        bundle / "model.onnx",
        providers=[
            (
                "TensorrtExecutionProvider",
                {
                    "trt_fp16_enable": True,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                },
            ),
            "CUDAExecutionProvider",
        ],
    )
    rows = []
    for batch in (1, 8):
        x = np.random.default_rng(batch).random(
            [batch, spec.in_channels, *spatial], dtype=np.float32
        )
        xt = torch.from_numpy(x).cuda()

        def torch_amp(_: np.ndarray, xt: torch.Tensor = xt) -> object:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                out = network(xt)
            torch.cuda.synchronize()
            return out

        for label, call in (("MONAI torch AMP (fp16)", torch_amp), ("TensorRT FP16 (ORT)", trt)):
            run_clients(call, [x], 1, 2.0)  # warm-up, engine build
            requests, elapsed, latencies = run_clients(call, [x], 1, seconds)
            rows.append(
                f"| {label} | {batch} | {requests * batch / elapsed:.1f} | "
                f"p50 {statistics.median(latencies):.2f} ms |"
            )
    shutil.rmtree(cache, ignore_errors=True)
    return rows


def machine() -> str:
    import onnxruntime as ort

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(load average {load:.1f} when the run started), Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}, tritonserver 2.51 "
        "(nvidia-pytriton wheel)"
    )


def render(
    cells: list[Cell], gpu_rows: list[str] | None, args: argparse.Namespace, model: str, host: str
) -> str:
    concurrencies = sorted({c.concurrency for c in cells})
    backends = list(dict.fromkeys(c.backend for c in cells))
    by = {(c.backend, c.concurrency): c for c in cells}
    command = "python bench/triton_throughput.py" + (
        f" --seconds {args.seconds:g}" if args.seconds != 6 else ""
    )
    lines = [
        START,
        "## Triton throughput",
        "",
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Model: {model} "
        "(random seeded weights: a plumbing benchmark, not a model). Single-image requests from "
        f"N client threads for {args.seconds:g} s per cell ({args.rounds} interleaved rounds), "
        "network only (no pre/post-processing, which runs in the service in both cases). "
        "Machine: " + host + ".",
        "",
        "Images per second (p50 latency in ms; for Triton also the mean batch Triton formed):",
        "",
        "| backend | "
        + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in concurrencies)
        + " |",
        "|---|" + "---:|" * len(concurrencies),
    ]
    for backend in backends:
        row = [backend]
        for concurrency in concurrencies:
            cell = by[(backend, concurrency)]
            text = f"{cell.throughput:.1f} ({cell.percentile(0.5):.0f} ms"
            if cell.batches:
                text += f", batch {cell.requests / cell.batches:.1f}"
            row.append(text + ")")
        lines.append("| " + " | ".join(row) + " |")
    top = max(concurrencies)
    best = {c: max(backends, key=lambda b, c=c: by[(b, c)].throughput) for c in concurrencies}
    batched = by.get(("triton, dynamic batching", top))
    lines += [
        "",
        "Fastest per concurrency: "
        + "; ".join(f"{c} client{'s' if c > 1 else ''}: {best[c]}" for c in concurrencies)
        + "."
        + (
            f" With {top} clients Triton's dynamic batcher formed batches of "
            f"{batched.requests / batched.batches:.1f} images on average."
            if batched is not None and batched.batches
            else ""
        ),
        "",
        "What to expect: Triton adds a gRPC hop and, in the portable flavour, a copy through the "
        "Python backend's shared memory to every request, and dynamic batching adds up to the "
        "queue delay; batching pays back when several clients send at once, as one ONNX Runtime "
        "call on B images costs less than B calls. The portable model.py turns ONNX Runtime's "
        "idle-thread spinning off, while the embedded runner keeps ONNX Runtime's default "
        "(spinning on), which costs it throughput when the cores are busy with anything else. "
        "On a small CPU the two backends compete for "
        "the same cores, and this machine's cores were shared with other jobs while it ran (see "
        "the load average): differences of a few tens of percent between cells are noise here. "
        "Triton's case is GPUs (native onnxruntime backend, TensorRT FP16, batches) and scaling "
        "out to several GPUs and machines behind one address.",
        "",
        "### GPU: TensorRT FP16 vs MONAI torch AMP",
        "",
    ]
    if gpu_rows is None:
        lines.append(
            "No GPU on this machine: these rows are produced only where torch sees a "
            "CUDA device and onnxruntime-gpu provides the TensorRT execution provider."
        )
    else:
        lines += ["| runtime | batch | images/s | latency |", "|---|---:|---:|---|", *gpu_rows]
    lines += ["", END]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--bundle", type=Path, help="an exported bundle instead of exporting")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=6.0, help="per cell, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host = machine()
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        bundle = args.bundle or export_bundle(args.config, Path(tmp) / "bundle")
        from oncotriage.models.spec import ModelSpec

        spec = ModelSpec.load(bundle)
        model = f"`{spec.name}` (input {'x'.join(str(s) for s in spec.input_shape[1:])})"
        cells = bench_cpu(bundle, args.concurrency, args.seconds, args.rounds)
        gpu_rows = bench_gpu(bundle, args.config, args.seconds)
    block = render(cells, gpu_rows, args, model, host)
    print(block)
    if not args.no_write:
        write_block("triton_throughput", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
