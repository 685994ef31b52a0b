"""A whole low-dose CT, from the decoded series to findings: the bundled 3D demo model
(``models/demo_ct``) on one synthetic LDCT study, stage by stage, per backend and thread count.

The study is the demo's example CT (``datasets synth``'s ``write_example_study``, generator
version 2, seed 2024):
read from its DICOM files by the service's reader (``read_image``; timed once, not part of the
rows), then, for ONNX Runtime and OpenVINO (fp32, and bf16 where the CPU runs it natively) at 1,
2 and all cores, :meth:`DetectionPipeline.detect`'s three stages timed apart:

* **prepare**: orientation, resampling to the model's spacing, the HU window, padding to the
  network's multiple;
* **network**: the runner's calls alone, summed over the sliding windows;
* **windows**: sliding-window bookkeeping around those calls (cutting windows, the weight map,
  adding each window's maps into the full-size maps);
* **findings**: anchors, box decoding, top-k, NMS and mapping the boxes back to the series.

Rows of one backend at different thread counts share one input and ran interleaved. The table
is written to ``docs/benchmarks.md`` between the ``whole_ct`` markers (``bench/
model_throughput.py`` runs it after its own table too).

Usage::

    .venv/bin/python bench/whole_ct.py                 # the table in docs/benchmarks.md
    .venv/bin/python bench/whole_ct.py --no-write      # print only
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from benchdoc import DOC, cpu_header, markers, write_block

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "demo_ct"
# serving.demo's EXAMPLE_CT_SEED and EXAMPLE_GENERATOR_VERSION (not imported: the bench reads
# the files)
EXAMPLE_CT_SEED = 2024
EXAMPLE_CT_GENERATOR = 2
START, END = markers("whole_ct")
FULL = "full-size CT"
STAGES = ("prepare", "network", "windows", "findings")

logger = logging.getLogger("bench.whole_ct")


class TimedRunner:
    """A ``NetworkRunner`` that adds up the seconds spent inside the wrapped runner."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.input_name = runner.input_name
        self.output_names = list(runner.output_names)
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        started = time.perf_counter()
        try:
            return list(self.runner(batch))
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


@dataclass
class Row:
    input: str
    backend: str
    threads: int
    runs: list[dict[str, float]] = field(default_factory=list)
    windows: int = 0
    findings: int = 0
    top_score: float = math.nan
    found: list[Any] = field(default_factory=list)  # every finding, highest score first

    def median(self, stage: str) -> float:
        return statistics.median(run[stage] for run in self.runs)

    @property
    def total(self) -> float:
        return statistics.median(sum(run[s] for s in STAGES) for run in self.runs)


def full_size(image: Any, matrix: int = 512, fov_mm: float = 350.0, length_mm: float = 300.0):
    """The example CT as a full-size chest CT: resampled in-plane to a ``fov_mm`` field of
    view on a ``matrix`` x ``matrix`` grid (air, -1024 HU, around it), its slices repeated at
    the ends up to ``length_mm``. The generator's volumes are small (17 cm); the cost of the
    pipeline is set by the size, not by what is in the voxels."""
    from dataclasses import replace

    from scipy.ndimage import zoom

    spacing = fov_mm / matrix
    x, y, z = image.array.shape
    factors = (image.spacing[0] / spacing, image.spacing[1] / spacing, 1.0)
    plane = zoom(image.array, factors, order=1).astype(np.float32)[:matrix, :matrix]
    slices = max(z, math.ceil(length_mm / image.spacing[2]))
    array = np.full((matrix, matrix, slices), -1024.0, dtype=np.float32)
    ox, oy = (matrix - plane.shape[0]) // 2, (matrix - plane.shape[1]) // 2
    before = (slices - z) // 2
    array[ox : ox + plane.shape[0], oy : oy + plane.shape[1]] = np.pad(
        plane, ((0, 0), (0, 0), (before, slices - z - before)), mode="edge"
    )
    return replace(
        image, array=array, spacing=(spacing, spacing, image.spacing[2]), sop_instance_uids=()
    )


def timed_detect(pipeline: Any, timed: TimedRunner, image: Any) -> tuple[dict[str, float], list]:
    """One :meth:`DetectionPipeline.detect`, its stages timed apart."""
    timed.seconds, timed.calls = 0.0, 0
    t0 = time.perf_counter()
    prepared = pipeline.prepare(image)
    t1 = time.perf_counter()
    maps = pipeline.run_network(prepared)
    t2 = time.perf_counter()
    findings = pipeline.findings(prepared, maps)
    t3 = time.perf_counter()
    stages = {
        "prepare": t1 - t0,
        "network": timed.seconds,
        "windows": (t2 - t1) - timed.seconds,
        "findings": t3 - t2,
    }
    return stages, findings


def backends(bundle: Path, threads: int) -> list[tuple[str, Any]]:
    """(label, runner) for ONNX Runtime and OpenVINO (fp32; bf16 where the CPU runs it)."""
    from oncotriage.models.pipeline import OrtRunner

    runners: list[tuple[str, Any]] = [
        ("onnxruntime fp32", OrtRunner(bundle / "model.onnx", intra_op_threads=threads))
    ]
    try:
        from oncotriage.models.openvino_runner import OpenVinoRunner
    except ImportError:
        return runners
    from oncotriage.models.precision import cpu_supports
    from oncotriage.serving.cpus import cpu_flags

    for precision in ("fp32", "bf16"):
        if precision == "bf16" and not cpu_supports("bf16", cpu_flags()):
            continue
        runner = OpenVinoRunner(bundle / "model.onnx", threads=threads, precision=precision)
        runners.append((f"openvino {precision} ({runner.runs_at()})", runner))
    return runners


def agreement(one_pass: list[Any], windowed: list[Any]) -> tuple[float, float, float]:
    """For each of ``one_pass``'s findings, the best IoU (world boxes) with one of
    ``windowed``'s and the score difference to that one: ``(lowest IoU, highest IoU, largest
    score difference)``."""
    from oncotriage.training.metrics import box_iou  # numpy only

    iou = box_iou(
        np.array([f.box_world for f in one_pass]), np.array([f.box_world for f in windowed])
    )
    best = iou.argmax(axis=1)
    ious = iou[np.arange(len(one_pass)), best]
    diffs = [abs(f.score - windowed[b].score) for f, b in zip(one_pass, best, strict=True)]
    return float(ious.min()), float(ious.max()), float(max(diffs))


def agreement_sentence(rows: list[Row]) -> str:
    """The one-pass rows against their *MONAI's windows* twins, as measured in this run."""
    parts = []
    for row in rows:
        if not row.backend.endswith(", MONAI's windows"):
            continue
        label = row.backend.removesuffix(", MONAI's windows")
        twin = next(
            r for r in rows if (r.input, r.backend, r.threads) == (row.input, label, row.threads)
        )
        low, high, diff = agreement(twin.found[:5], row.found)
        parts.append(f"{label}: IoU {low:.2f}-{high:.2f}, scores within {diff:.3f}")
    return "; ".join(parts)


def shape_of(image: Any) -> str:
    shape = " x ".join(str(s) for s in image.array.shape)
    return f"{shape} at {' x '.join(f'{s:.2f}' for s in image.spacing)} mm"


def measure(
    bundle: Path, images: dict[str, Any], thread_counts: list[int], repeats: int
) -> list[Row]:
    """Every (input, backend, threads) row, ``repeats`` interleaved rounds after a warm-up."""
    from oncotriage.models.pipeline import DetectionPipeline
    from oncotriage.models.spec import ModelBundle

    spec = ModelBundle.load(bundle).spec
    windowed = spec.model_copy(deep=True)  # MONAI's rule alone: overlapping windows
    if windowed.sliding_window is not None:
        windowed.sliding_window.max_single_pass_voxels = None
    setups: list[tuple[Row, Any, TimedRunner, Any]] = []
    for name, image in images.items():
        for threads in thread_counts:
            for label, runner in backends(bundle, threads):
                timed = TimedRunner(runner)
                row = Row(name, label, threads)
                setups.append((row, DetectionPipeline(spec, timed), timed, image))
                if name == FULL and threads == thread_counts[0] and windowed != spec:
                    timed = TimedRunner(runner)
                    row = Row(name, f"{label}, MONAI's windows", threads)
                    setups.append((row, DetectionPipeline(windowed, timed), timed, image))
    for row, pipeline, timed, image in setups:  # warm-up; findings and windows
        _, findings = timed_detect(pipeline, timed, image)
        row.windows, row.findings = timed.calls, len(findings)
        row.top_score = max((f.score for f in findings), default=math.nan)
        row.found = sorted(findings, key=lambda f: -f.score)
    for repeat in range(repeats):  # interleaved: load hits every row alike
        for row, pipeline, timed, image in setups:
            stages, _ = timed_detect(pipeline, timed, image)
            row.runs.append(stages)
        logger.info("round %d/%d done", repeat + 1, repeats)
    return [row for row, _, _, _ in setups]


def render(
    rows: list[Row], images: dict[str, Any], read_s: float, repeats: int, load: tuple[float, float]
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    ort1 = {r.input: r.total for r in rows if r.threads == 1 and r.backend == "onnxruntime fp32"}
    example, full = (shape_of(image) for image in images.values())
    lines = [
        START,
        "## A whole CT, decoded series to findings",
        "",
        f"Generated by `python bench/whole_ct.py` on {now}. {cpu_header()} 1-minute load "
        f"average {load[0]:.1f} at the start, {load[1]:.1f} at the end. Median of {repeats} "
        "runs per row, the rows interleaved.",
        "",
        f"The bundled 3D demo model (`models/demo_ct`) on the demo's example low-dose CT "
        f"(generator version {EXAMPLE_CT_GENERATOR}, seed {EXAMPLE_CT_SEED}): {example}, read from "
        "its DICOM files by the service's reader in "
        f"{read_s:.2f} s (not in the rows), and the same CT as a full-size chest CT ({full}: "
        "resampled to a 35 cm field of view on 512 x 512, air around it, end slices repeated "
        "to 30 cm; `full_size()`), the size a scanner sends. Stages of `DetectionPipeline."
        "detect`: prepare (resampling, HU window, padding), network (the runner's calls, summed "
        "over the sliding windows), windows (the sliding-window bookkeeping around them), "
        "findings (anchors, decoding, top-k, NMS, boxes back to the series).",
        "",
        "| input | backend | threads | windows | prepare s | network s | windows s | findings s "
        "| total s | vs onnxruntime, 1 thread | findings (top score) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.input} | {row.backend} | {row.threads} | {row.windows} | "
            + " | ".join(f"{row.median(s):.3f}" for s in STAGES)
            + f" | {row.total:.2f} | {ort1.get(row.input, math.nan) / row.total:.2f}x | "
            f"{row.findings} "
            f"({row.top_score:.3f}) |"
        )
    overhead = [
        (row.median("prepare") + row.median("windows") + row.median("findings")) / row.total
        for row in rows
    ]
    lines += [
        "",
        "Rows marked *MONAI's windows* run the same model with the spec's "
        "`max_single_pass_voxels` unset: MONAI's rule then takes overlapping 256 x 256 x 96 "
        "windows for any volume of at least one window, and the network computes the overlap "
        "twice (two windows, 192 slices, for a 128-slice padded volume). With the setting "
        "(`models/demo_ct`, `configs/detector_ct3d_light.yaml`: up to 256 x 256 x 192 in one "
        "pass) the volume runs in one pass, the regime the model was validated and calibrated "
        "in (its validation CTs fit one pass). Each of the one pass's top five findings "
        "against the windows' finding that overlaps it most (any of theirs), this run: "
        f"{agreement_sentence(rows)}.",
        "",
        f"Everything but the network takes {100 * min(overhead):.0f}-{100 * max(overhead):.0f} "
        "% of the total. The findings of every row are the same model's on the same input; "
        "their count and top score differ between backends only by floating-point "
        "rounding.",
        "",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--repeats", type=int, default=3)
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--threads", default=f"1,2,{cores}", help="comma-separated")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from oncotriage.datasets.reader import read_image
    from oncotriage.datasets.synth import write_example_study

    load_start = os.getloadavg()[0]
    counts = sorted({min(int(t), cores) for t in args.threads.split(",") if t.strip()})
    with tempfile.TemporaryDirectory() as tmp:
        series = write_example_study(
            Path(tmp), kind="ldct", seed=EXAMPLE_CT_SEED, generator_version=EXAMPLE_CT_GENERATOR
        )
        started = time.perf_counter()
        image = read_image(series)
        read_s = time.perf_counter() - started
    images = {"example CT": image, FULL: full_size(image)}
    rows = measure(args.bundle, images, counts, args.repeats)
    block = render(rows, images, read_s, args.repeats, (load_start, os.getloadavg()[0]))
    print(block)
    if not args.no_write:
        write_block("whole_ct", block)
        logger.info("wrote %s", DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
