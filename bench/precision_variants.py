r"""Reduced-precision variants of the bundled demo models: accuracy gate and speed, side by side.

For each demo model (``models/demo``, 2D radiographs; ``models/demo_ct``, 3D low-dose CT) and
each reduced precision this CPU runs natively (bf16: AVX512-BF16 or AMX; int8: VNNI or AMX),
``optimize_model`` builds the variant exactly as ``oncotriage optimize`` does (not registered)
and judges it on the validation split of the model's own synthetic data set: the FROC CPM may
drop by at most 0.01, the study sensitivity at the operating threshold by at most one point.
Then the base (ONNX Runtime fp32), OpenVINO fp32 and each variant run the whole
:meth:`DetectionPipeline.detect` (preprocessing to findings) on the same validation images,
interleaved image by image, on ``--threads`` threads; the table gives the median per image
and the ratio to the base. The network-only ratios to MONAI's torch eager detector are in the
``model_throughput`` table (same architectures, seeded weights).

The data sets are the demo models' own, plus a larger independent one for the radiograph
model (``datasets synth``; made when missing)::

    oncotriage datasets synth --kind cxr --generator-version 2 --n 500 --seed 7 --out var/demo2-data
    oncotriage datasets synth --kind cxr --generator-version 2 --n 2000 --seed 70 \
        --out var/demo2-eval-data
    oncotriage datasets synth --kind ldct --generator-version 2 --n 160 --seed 11 --out var/ct3-a

Usage::

    .venv/bin/python bench/precision_variants.py              # table in docs/benchmarks.md
    .venv/bin/python bench/precision_variants.py --no-write
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchdoc import DOC, cpu_header, markers, write_block

ROOT = Path(__file__).resolve().parents[1]
START, END = markers("precision_variants")
#: (model, data set (kind, n, seed, folder, generator version)): each model on its own data
#: set's validation split (where its thresholds were calibrated), and the radiograph model also
#: on the validation split of an independent, larger set (300 studies): at 75 studies one study
#: is 1.9 points of sensitivity, more than the gate's one point
EVALUATIONS = [
    ("models/demo", ("cxr", 500, 7, "var/demo2-data", 2)),
    ("models/demo", ("cxr", 2000, 70, "var/demo2-eval-data", 2)),
    ("models/demo_ct", ("ldct", 160, 11, "var/ct3-a", 2)),
]

logger = logging.getLogger("bench.precision_variants")


@dataclass
class Row:
    data: str
    model: str
    precision: str
    runtime: str
    accepted: bool | None = None  # None: the base itself
    figures: dict[str, float] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return 1000.0 * statistics.median(self.seconds) if self.seconds else math.nan


def synth_options(kind: str, n: int, seed: int, version: int) -> str:
    """The ``datasets synth`` options that make a data set."""
    generator = f" --generator-version {version}" if version != 1 else ""
    return f"--kind {kind}{generator} --n {n} --seed {seed}"


def ensure_data(kind: str, n: int, seed: int, folder: Path, version: int = 1) -> Path:
    datalist = folder / "datalist.json"
    if not datalist.is_file():
        options = synth_options(kind, n, seed, version)
        logger.info("making %s (datasets synth %s)", folder, options)
        command = [sys.executable, "-m", "oncotriage", "datasets", "synth", *options.split()]
        subprocess.run([*command, "--out", str(folder)], check=True)
    return datalist


def run_model(
    model: Path,
    datalist: Path,
    data: str,
    precisions: list[str],
    threads: int,
    images: int,
    work: Path,
) -> list[Row]:
    from oncotriage.datasets.datalist import CORNER_MODE, load_datalist, load_entry_image
    from oncotriage.models.openvino_runner import OpenVinoRunner
    from oncotriage.models.pipeline import DetectionPipeline
    from oncotriage.models.precision import cpu_supports
    from oncotriage.models.spec import ModelBundle
    from oncotriage.serving.cpus import cpu_flags
    from oncotriage.training.optimize import optimize_model

    name = model.name
    spec = ModelBundle.load(model).spec
    rows = [Row(data, name, "fp32", "onnxruntime (base)"), Row(data, name, "fp32", "openvino")]
    pipelines: list[Any] = [
        DetectionPipeline.from_bundle(model, intra_op_threads=threads),
        DetectionPipeline(spec, OpenVinoRunner(model / "model.onnx", threads=threads)),
    ]
    for precision in precisions:
        if not cpu_supports(precision, cpu_flags()):
            logger.info("%s: this CPU does not run %s natively; skipped", name, precision)
            continue
        logger.info("%s: optimize --precision %s (evaluating base and variant)", name, precision)
        report = optimize_model(
            str(model),
            precision,  # type: ignore[arg-type]
            datalist,
            out=work / f"{name}-{precision}-{datalist.parent.name}",
            register=False,
            threads=threads,
        )
        variant = report.variant
        rows.append(
            Row(
                data,
                name,
                precision,
                "openvino",
                accepted=variant.accepted,
                figures=variant.figures,
                refusals=variant.refusals,
            )
        )
        pipelines.append(
            DetectionPipeline(
                spec,
                OpenVinoRunner(
                    report.bundle_dir / "model.onnx", threads=threads, precision=precision
                ),
            )
        )
    entries = load_datalist(datalist, "validation", box_mode=CORNER_MODE[spec.spatial_dims])
    volumes = [load_entry_image(entry) for entry in entries[:images]]
    for pipeline in pipelines:  # warm-up
        pipeline.detect(volumes[0])
    for volume in volumes:  # interleaved image by image
        for row, pipeline in zip(rows, pipelines, strict=True):
            started = time.perf_counter()
            pipeline.detect(volume)
            row.seconds.append(time.perf_counter() - started)
    return rows


def _pair(row: Row, metric: str) -> str:
    base, variant = row.figures.get(f"base_{metric}"), row.figures.get(f"variant_{metric}")
    if base is None or variant is None:
        return "-"
    return f"{base:.3f} -> {variant:.3f} ({variant - base:+.3f})"


def render(rows: list[Row], args: argparse.Namespace, load: tuple[float, float]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    base_ms = {(row.model, row.data): row.ms for row in rows if row.runtime == "onnxruntime (base)"}
    lines = [
        START,
        "## Reduced-precision variants of the demo models",
        "",
        f"Generated by `python bench/precision_variants.py` on {now}. {cpu_header()} "
        f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end.",
        "",
        "Each variant is built and judged as `oncotriage optimize` does it (not registered): "
        "base (ONNX Runtime fp32) and variant (OpenVINO) through `DetectionPipeline` on the "
        "validation split of the model's own synthetic data set (`models/demo`: `datasets synth "
        "--kind cxr --generator-version 2 --n 500 --seed 7`, 75 radiographs, 52 with nodules; "
        "`models/demo_ct`: `--kind ldct --generator-version 2 --n 160 --seed 11`, the unshifted "
        "half of its training data, 24 CT series, 17 with nodules) and, "
        "for the radiograph model, on the validation split of an independent larger set (`--n "
        "2000 --seed 70`, 300 radiographs): on 52 positive studies one study is 1.9 points of "
        "sensitivity, more than the gate allows, so there a single study that crosses the "
        "threshold decides. The gate: CPM may drop by at most 0.01, study sensitivity at the "
        "operating threshold by at most one point. Speed: the whole `detect()` "
        f"(preprocessing to findings) on {args.images} validation images, {args.threads} "
        "thread(s), the rows interleaved image by image; median per image.",
        "",
        "| model | evaluated on (validation split) | precision | runtime | CPM (base -> variant) "
        "| study sensitivity at the operating threshold | accepted | ms/image | vs base |",
        "|---|---|---|---|---|---|---|---:|---:|",
    ]
    for row in rows:
        if row.accepted is None:
            verdict = "(base)" if row.runtime.endswith("(base)") else "(same arithmetic)"
        else:
            verdict = "**yes**" if row.accepted else "no: " + "; ".join(row.refusals)
        lines.append(
            f"| {row.model} | {row.data} | {row.precision} | {row.runtime} | "
            f"{_pair(row, 'cpm')} | {_pair(row, 'operating_sensitivity')} | {verdict} | "
            f"{row.ms:.1f} | {base_ms[(row.model, row.data)] / row.ms:.2f}x |"
        )
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=sorted({model for model, _ in EVALUATIONS}))
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=18, help="validation images timed")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load_start = os.getloadavg()[0]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, (kind, n, seed, folder, version) in EVALUATIONS:
            if model not in args.models:
                continue
            datalist = ensure_data(kind, n, seed, ROOT / folder, version)
            data = f"`{synth_options(kind, n, seed, version)}`"
            rows += run_model(
                ROOT / model,
                datalist,
                data,
                args.precisions,
                args.threads,
                args.images,
                Path(tmp),
            )
    block = render(rows, args, (load_start, os.getloadavg()[0]))
    print(block)
    if not args.no_write:
        write_block("precision_variants", block)
        logger.info("wrote %s", DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
