"""Detector throughput: MONAI ``RetinaNetDetector`` in torch (eager) vs our ONNX Runtime pipeline.

Same weights (seeded MONAI initialisation), same preprocessed inputs, same process, runs
interleaved: for every config, images (2D) or volumes (3D) per second of

* ``torch eager``: ``RetinaNetDetector(x, use_inferer=...)`` under ``torch.inference_mode``;
* ``onnxruntime``: :meth:`DetectionPipeline.predict_preprocessed` (network in ONNX Runtime,
  numpy anchors, decoding, top-k and NMS, sliding window when the volume is larger than a window);
* ``openvino`` fp32, int8 and (where the CPU runs it natively) bf16, same pipeline;

plus GFLOP per image (``torch.utils.flop_counter``: 2 x multiply-accumulates of one network pass,
times the number of windows) and, when a CUDA GPU is present, torch CUDA fp32/fp16 and ONNX
Runtime CUDA / TensorRT (fp32, fp16) rows. The table and a description of the machine are
written to ``docs/benchmarks.md`` between the ``model_throughput`` markers. Then, unless
``--no-whole-ct``, ``bench/whole_ct.py``: the bundled 3D demo model on a whole CT, decoded
series to findings, stage by stage, at 1, 2 and all cores (its own ``whole_ct`` table).

Usage::

    .venv/bin/python bench/model_throughput.py            # light configs
    .venv/bin/python bench/model_throughput.py --full     # + ResNet-50 configs (reduced 3D input)
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from benchdoc import DOC, cpu_header, markers, write_block

ROOT = Path(__file__).resolve().parents[1]
START, END = markers("model_throughput")

logger = logging.getLogger("bench.model_throughput")


@dataclass(frozen=True)
class Case:
    """One benchmark input for a config.

    Attributes:
        config: file under ``configs/``.
        spatial: preprocessed input size (network space, before ``size_divisible`` padding).
        batch: images per call.
        note: how the input relates to real use.
    """

    config: str
    spatial: tuple[int, ...]
    batch: int = 1
    note: str = ""


LIGHT_CASES = [
    Case("detector_cxr2d_light.yaml", (256, 256), 1, "one radiograph at the model's input size"),
    Case("detector_cxr2d_light.yaml", (256, 256), 8, "batch of 8 radiographs"),
    Case(
        "detector_ct3d_light.yaml",
        (256, 256, 112),
        1,
        "a 36 x 36 x 28 cm chest CT at 1.41 x 1.41 x 2.5 mm: MONAI runs 2 overlapping sliding "
        "windows of 256 x 256 x 96 (192 slices of network for 112); our pipeline runs it in one "
        "pass (the config's `max_single_pass_voxels`, 256 x 256 x 192), the same model on the "
        "same input",
    ),
]
FULL_CASES = [
    Case("detector_cxr2d.yaml", (512, 512), 1, "one radiograph at the model's input size"),
    Case(
        "detector_ct3d.yaml",
        (192, 192, 80),
        1,
        "REDUCED: one 192 x 192 x 80 training patch in one pass (a full 512 x 512 x 192 window "
        "of ResNet-50 3D is too slow for this CPU)",
    ),
]


@dataclass
class Row:
    config: str
    input: str
    backend: str
    threads: str
    seconds: list[float] = field(default_factory=list)
    per_call_images: int = 1
    gflop: float = 0.0
    detections: int = 0
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def images_per_s(self) -> float:
        return self.per_call_images / self.median

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.median / self.per_call_images

    @property
    def best_ms_per_image(self) -> float:
        return 1000.0 * min(self.seconds) / self.per_call_images


def machine_description() -> list[str]:
    import monai
    import onnxruntime as ort
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 1024**2:.0f} GiB RAM"
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        from oncotriage.models.openvino_runner import openvino_version

        openvino = f", OpenVINO {openvino_version()}"
    except ImportError:
        openvino = ""
    return [
        f"- CPU: {cpu}, {cores} cores available to the process{memory}; GPU: {gpu}",
        f"- {cpu_header()} bf16 rows run where the CPU has AVX512-BF16 or AMX, int8 gains "
        "most with VNNI or AMX",
        f"- OS: {platform.system()} {platform.release()} ({platform.machine()}), "
        f"Python {platform.python_version()}",
        f"- torch {torch.__version__}, MONAI {monai.__version__}, onnxruntime {ort.__version__} "
        f"(providers: {', '.join(ort.get_available_providers())}), numpy {np.__version__}"
        f"{openvino}",
    ]


def count_gflop(network, x) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(x)
    return counter.get_total_flops() / 1e9


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def openvino_runs(bundle, label, shape, threads, x, ours, cfg):  # type: ignore[no-untyped-def]
    """OpenVINO fp32, int8 (QDQ from ``quantize_int8``, calibrated on this input's network
    batches) and, where the CPU runs bf16 natively, bf16 rows on the same weights and input."""
    try:
        from oncotriage.models.openvino_runner import OpenVinoRunner
    except ImportError:
        return []
    from oncotriage.models.pipeline import DetectionPipeline
    from oncotriage.models.precision import cpu_supports
    from oncotriage.models.spec import ModelBundle
    from oncotriage.serving.cpus import cpu_flags
    from oncotriage.training.optimize import quantize_int8

    spec = ModelBundle.load(bundle).spec
    int8 = bundle.parent / f"{bundle.name}-int8.onnx"
    if not int8.is_file():
        quantize_int8(bundle / "model.onnx", int8, [x[:1]], spec.input_name)
    runs = []
    for precision, path in (
        ("fp32", bundle / "model.onnx"),
        ("bf16", bundle / "model.onnx"),
        ("int8", int8),
    ):
        if precision == "bf16" and not cpu_supports("bf16", cpu_flags()):
            continue
        runner = OpenVinoRunner(path, threads=threads, precision=precision)
        pipeline = DetectionPipeline(spec, runner)
        runs.append(
            (
                Row(
                    label,
                    shape,
                    f"openvino {precision} ({runner.runs_at()}) + numpy pipeline",
                    str(threads),
                ),
                lambda p=pipeline: p.predict_preprocessed(x, use_sliding_window=ours),
            )
        )
    return runs


def run_case(
    case: Case, repeats: int, min_seconds: float, threads: int, workdir: Path
) -> list[Row]:
    import torch

    from oncotriage.models.build import build_detector, build_network
    from oncotriage.models.config import load_config
    from oncotriage.models.export import export_onnx
    from oncotriage.models.pipeline import DetectionPipeline, available_providers
    from oncotriage.models.preprocess import pad_to_divisible
    from oncotriage.models.sliding_window import dense_patch_slices, scan_interval

    cfg = load_config(ROOT / "configs" / case.config)
    torch.manual_seed(0)
    network = build_network(cfg).eval()
    detector = build_detector(cfg, network).eval()
    bundle = workdir / cfg.name
    if not (bundle / "model.onnx").is_file():
        export_onnx(network, cfg, bundle)
    onnx_mb = (bundle / "model.onnx").stat().st_size / 1e6

    rng = np.random.default_rng(0)
    x = rng.random((case.batch, cfg.in_channels, *case.spatial), dtype=np.float32)
    window = cfg.inference.sliding_window
    use_window = window is not None and math.prod(case.spatial) >= math.prod(window.roi_size)
    padded = pad_to_divisible(x, cfg.size_divisible)
    if use_window and window is not None:
        interval = scan_interval(
            padded.shape[2:], window.roi_size, [window.overlap] * cfg.spatial_dims
        )
        windows = len(dense_patch_slices(padded.shape[2:], window.roi_size, interval))
        one = torch.zeros((1, cfg.in_channels, *window.roi_size))
        gflop = count_gflop(network, one) * windows
        one_pass_gflop = count_gflop(network, torch.from_numpy(padded[:1]))
        shape = f"{'x'.join(map(str, case.spatial))} ({windows} windows)"
    else:
        gflop = one_pass_gflop = count_gflop(network, torch.from_numpy(padded[:1]))
        shape = "x".join(map(str, case.spatial))
    shape = f"{case.batch} x {shape}" if case.batch > 1 else shape
    label = f"{cfg.name} ({onnx_mb:.1f} MB ONNX)"

    x_t = torch.from_numpy(x)
    rows: list[Row] = []

    def torch_run(device: str, fp16: bool) -> Callable[[], object]:
        xd = x_t.to(device)

        def run() -> object:
            with torch.inference_mode(), torch.autocast(device, enabled=fp16):
                out = detector(xd, use_inferer=use_window)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    def ort_run(pipeline: DetectionPipeline) -> Callable[[], object]:
        return lambda: pipeline.predict_preprocessed(x, use_sliding_window=ours)

    torch.set_num_threads(threads)
    cpu_pipeline = DetectionPipeline.from_bundle(bundle, intra_op_threads=threads)
    # our pipeline's own rule (max_single_pass_voxels may run in one pass what MONAI windows)
    ours = cpu_pipeline._uses_sliding_window(list(case.spatial), None)
    if use_window and not ours:
        shape = shape.replace(" windows)", " windows in torch; one pass in ours)")
    runs: list[tuple[Row, Callable[[], object]]] = [
        (
            Row(label, shape, "torch eager (MONAI RetinaNetDetector), CPU", str(threads)),
            torch_run("cpu", False),
        ),
        (
            Row(label, shape, "onnxruntime CPU + numpy pipeline", str(threads)),
            ort_run(cpu_pipeline),
        ),
    ]
    runs += openvino_runs(bundle, label, shape, threads, x, ours, cfg)
    if torch.cuda.is_available():
        detector.cuda()
        gpu = [p for p in available_providers() if p != "CPUExecutionProvider"]
        runs += [
            (Row(label, shape, "torch eager, CUDA fp32", "-"), torch_run("cuda", False)),
            (Row(label, shape, "torch eager, CUDA fp16 autocast", "-"), torch_run("cuda", True)),
        ]
        if "CUDAExecutionProvider" in gpu:
            runs.append(
                (
                    Row(label, shape, "onnxruntime CUDA EP + numpy pipeline", "-"),
                    ort_run(
                        DetectionPipeline.from_bundle(bundle, providers=["CUDAExecutionProvider"])
                    ),
                )
            )
        if "TensorrtExecutionProvider" in gpu:
            for fp16 in (False, True):
                options = {
                    "trt_fp16_enable": fp16,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(workdir / "trt"),
                }
                providers = [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]
                runs.append(
                    (
                        Row(
                            label,
                            shape,
                            f"onnxruntime TensorRT EP {'fp16' if fp16 else 'fp32'}",
                            "-",
                        ),
                        ort_run(DetectionPipeline.from_bundle(bundle, providers=providers)),
                    )
                )

    for row, fn in runs:  # warm-up (and detections count)
        row.per_call_images = case.batch
        row.gflop = gflop if row.backend.startswith("torch") or ours else one_pass_gflop
        row.note = case.note
        result = fn()
        row.detections = sum(
            len(d["boxes"]) if isinstance(d, dict) else len(d)
            for d in result  # type: ignore[attr-defined]
        )
    logger.info("detections per call: %s", {r.backend: r.detections for r, _ in runs})
    # Interleaved, so machine load hits every backend alike; cheap cases repeat until
    # min_seconds have passed so that their medians rest on many runs.
    started = time.perf_counter()
    while True:
        for row, fn in runs:
            row.seconds.append(time_call(fn))
        done = len(runs[0][0].seconds)
        if done >= repeats and (time.perf_counter() - started >= min_seconds or done >= 50):
            break
    logger.info(
        "%s %s: %d runs, median %s",
        label,
        shape,
        len(runs[0][0].seconds),
        ", ".join(f"{r.median:.3f}s" for r, _ in runs),
    )
    rows = [row for row, _ in runs]
    if torch.cuda.is_available():
        detector.cpu()
    return rows


def render(
    rows: list[Row], args: argparse.Namespace, gpu_note: str, load: tuple[float, float]
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        "## Model throughput",
        "",
        f"Generated by `python bench/model_throughput.py{' --full' if args.full else ''}` "
        f"on {now}. Per model, the backends run interleaved after one warm-up, at least "
        f"{args.repeats} times and for at least {args.min_seconds:.0f} s; the table gives the "
        "median and, in brackets, the fastest run (least disturbed by other load).",
        "",
        *machine_description(),
        f"- 1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end of the "
        "run (above the core count, other jobs shared the CPU: compare rows of one model, which "
        "ran interleaved, rather than absolute numbers)",
        "",
        "Both backends run the same weights (seeded MONAI initialisation, not a trained model) "
        "on the same preprocessed float32 input and return detections: `torch eager` is MONAI's "
        "`RetinaNetDetector` (network, anchors, decoding, top-k, NMS, sliding window), "
        "`onnxruntime` is `DetectionPipeline.predict_preprocessed` (the ONNX network plus our "
        "numpy post-processing and sliding window). GFLOP per image counts one network pass "
        "(2 x multiply-accumulates, `torch.utils.flop_counter`), times the number of windows "
        "that backend runs. "
        "Untrained heads score every anchor near 0.01, so few candidates reach NMS in either "
        "backend. Threads: torch intra-op threads and ONNX Runtime intra-op threads alike; with "
        "all cores in use, torch's OpenMP workers slow down sharply when other jobs share the "
        "cores, so on a busy machine the 1-thread rows are the fairer comparison.",
        "",
        "| model | input (network space) | backend | threads | runs | images/s | ms/image (best) "
        "| vs torch | GFLOP/image |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    baseline: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row.config, row.input, row.threads)
        if row.backend.startswith("torch eager (MONAI"):
            baseline[key] = row.ms_per_image
        ratio = baseline.get(key, math.nan) / row.ms_per_image
        lines.append(
            f"| {row.config} | {row.input} | {row.backend} | {row.threads} | {len(row.seconds)} | "
            f"{row.images_per_s:.2f} | {row.ms_per_image:.0f} ({row.best_ms_per_image:.0f}) | "
            f"{ratio:.2f}x | {row.gflop:.1f} |"
        )
    lines += ["", "Inputs:"]
    seen = set()
    for row in rows:
        if (row.config, row.input) not in seen and row.note:
            seen.add((row.config, row.input))
            lines.append(f"- {row.config}, {row.input}: {row.note}.")
    lines += ["", gpu_note, "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also the ResNet-50 configs (slow)")
    parser.add_argument("--repeats", type=int, default=2, help="least timed runs per backend")
    parser.add_argument(
        "--min-seconds", type=float, default=30.0, help="keep repeating cheap cases this long"
    )
    parser.add_argument(
        "--threads",
        default=f"1,{len(os.sched_getaffinity(0))}",
        help="comma-separated intra-op thread counts for the light configs (full configs: the "
        "largest only)",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    parser.add_argument("--only", default="", help="run only configs whose file name contains this")
    parser.add_argument(
        "--whole-ct",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="afterwards, bench/whole_ct.py: the bundled 3D demo model on a whole CT, stage by "
        "stage (its own table, whole_ct)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    cases = [c for c in LIGHT_CASES + (FULL_CASES if args.full else []) if args.only in c.config]
    rows: list[Row] = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        thread_counts = sorted({int(t) for t in str(args.threads).split(",") if t.strip()})
        for case in cases:
            counts = thread_counts if case in LIGHT_CASES else thread_counts[-1:]
            for threads in counts:
                logger.info(
                    "benchmarking %s at %s x %s, %d threads",
                    case.config,
                    case.batch,
                    case.spatial,
                    threads,
                )
                rows += run_case(case, args.repeats, args.min_seconds, threads, Path(tmp))
    if torch.cuda.is_available():
        gpu_note = "GPU rows: torch CUDA and ONNX Runtime CUDA/TensorRT execution providers."
    else:
        gpu_note = (
            "No GPU on this machine: the CUDA, TensorRT and fp16 rows are skipped. On a GPU host "
            "(with onnxruntime-gpu) the same command adds torch CUDA fp32/fp16 autocast and "
            "ONNX Runtime CUDA / TensorRT (fp32, fp16) rows."
        )
    block = render(rows, args, gpu_note, (load_start, os.getloadavg()[0]))
    print(block)
    if not args.no_write:
        write_block("model_throughput", block)
        logger.info("wrote %s", DOC)
    if args.whole_ct:
        import whole_ct

        whole_ct.main(["--no-write"] if args.no_write else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
