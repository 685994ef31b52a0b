"""A calibrated 2D model on the old and the new generator: held-out splits, distractors, subgroups.

Writes three synthetic sets (held-out cases only, ``datasets synth --split test``):

- the **version-1 held-out split**: ``--kind cxr --n 500 --seed 7``, the demo model's own
  test split (the generator it was trained on);
- the **version-2 held-out split**: ``--generator-version 2 --n 800 --seed 23`` (the split
  ``bench/shifted_sensitivity.py`` shifts);
- the **version-2 distractor set**: ``--generator-version 2 --n 400 --seed 29
  --negative-fraction 1``: studies without nodules, each with 1-3 benign look-alikes;

evaluates the model, and beside it a baseline (by default the demo model trained on version
1, as committed before version 2 replaced it, read from git), on each through the serving
pipeline (``oncotriage evaluate`` with ``--by size --by type --by vendor --by dose``) and
writes to ``docs/models.md``, between the ``generator_comparison`` markers, a side-by-side
table (CPM, sensitivity at 1 FP/image, study AUC, study sensitivity and specificity at the
operating threshold, distractors hit), the version-2 subgroup tables of the model and the
distractor hits of both. The CPU (lscpu model and SIMD flags) is in the header.

Usage::

    .venv/bin/python bench/generator_comparison.py                  # models/demo vs the old one
    .venv/bin/python bench/generator_comparison.py --model var/training/demo_v2/bundle \\
        --label "candidate" --baseline none --no-doc
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchdoc import cpu_header, markers, write_block

ROOT = Path(__file__).resolve().parents[1]
MODELS_DOC = ROOT / "docs" / "models.md"
NAME = "generator_comparison"
BY = ("size", "type", "vendor", "dose")
DEFAULT_LABEL = "demo (trained on v2)"
#: the demo model as it was before version 2 replaced it
DEFAULT_BASELINE = "ab5a7ba:models/demo"
DEFAULT_BASELINE_LABEL = "old demo (trained on v1)"

logger = logging.getLogger("bench.generator_comparison")


@dataclass(frozen=True)
class HeldOut:
    """One synthetic held-out set."""

    name: str
    version: int
    n: int
    seed: int
    negative_fraction: float = 0.3

    @property
    def command(self) -> str:
        version = f" --generator-version {self.version}" if self.version != 1 else ""
        negatives = (
            f" --negative-fraction {self.negative_fraction:g}"
            if self.negative_fraction != 0.3
            else ""
        )
        return f"--n {self.n} --seed {self.seed}{version}{negatives}"


SETS = (
    HeldOut("v1 held-out split (the demo's own test split)", 1, 500, 7),
    HeldOut("v2 held-out split", 2, 800, 23),
    HeldOut("v2 distractor set (no nodules)", 2, 400, 29, negative_fraction=1.0),
)


def _cell(proportion: Any) -> str:
    from oncotriage.training.subgroups import proportion_cell

    return proportion_cell(proportion)


def _num(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"


def generate_sets(work: Path) -> list[tuple[HeldOut, Path]]:
    """Each of :data:`SETS` written under ``work`` (held-out cases only): its datalist."""
    from oncotriage.datasets.synth import run_synth

    made = []
    for number, held_out in enumerate(SETS):
        logger.info("%s: generating", held_out.name)
        datalist = run_synth(
            "cxr",
            held_out.n,
            held_out.seed,
            work / f"set_{number}",
            negative_fraction=held_out.negative_fraction,
            generator_version=held_out.version,
            only_splits=["test"],
        )
        made.append((held_out, datalist))
    return made


def evaluate_sets(model: str, sets: list[tuple[HeldOut, Path]]) -> list[tuple[HeldOut, Any]]:
    """``model`` on each set, through the serving pipeline, with the subgroups of :data:`BY`
    on version-2 sets."""
    from oncotriage.training.evaluate import evaluate_model

    reports = []
    for held_out, datalist in sets:
        logger.info("%s: evaluating %s", held_out.name, model)
        report = evaluate_model(
            model,
            datalist,
            split="test",
            log_to_mlflow=False,
            record=False,
            intra_op_threads=1,
            by=BY if held_out.version == 2 else ("size",),
        )
        reports.append((held_out, report))
    return reports


@dataclass(frozen=True)
class Compared:
    """One model's reports on :data:`SETS`."""

    label: str
    model: str
    reports: list[tuple[HeldOut, Any]]


def baseline_from_git(spec: str, work: Path) -> Path:
    """``REV:FOLDER`` -> that bundle folder as committed at ``REV``, written under ``work``
    (the model the current demo replaced stays comparable after the replacement)."""
    rev, _, folder = spec.partition(":")
    if not rev or not folder:
        raise SystemExit(f"--baseline {spec!r}: expected REV:FOLDER, e.g. ab5a7ba:models/demo")
    out = work / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, folder], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {spec!r}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / folder


def render(compared: list[Compared], *, command: str) -> str:
    """The side-by-side table (each set, each model), the first model's v2 subgroups and
    every model's distractor hits by kind."""
    start, end = markers(NAME)
    sets = [held_out for held_out, _ in compared[0].reports]
    models = "; ".join(
        f"{c.label}: `{c.model}`, operating threshold "
        f"{c.reports[0][1].operating.threshold:.4f} on its calibrated score"
        for c in compared
    )
    lines = [
        start,
        f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {cpu_header()}",
        "",
        f"Models: {models}. Sets: "
        + "; ".join(f"{h.name}: `datasets synth --kind cxr {h.command} --split test`" for h in sets)
        + ". Wilson 95 % intervals; a distractor is hit when a finding at the operating "
        "threshold overlaps it (IoU >= 0.1).",
        "",
        "| set | model | studies (positive) | CPM | sensitivity at 1 FP/image | study AUC "
        "| study sensitivity | study specificity | distractors hit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, held_out in enumerate(sets):
        for c in compared:
            report = c.reports[number][1]
            metrics = report.metrics
            distractors = report.subgroups.get("distractor", [])
            hit = next((row.nodules for row in distractors if row.value == "all"), None)
            lines.append(
                f"| {held_out.name} | {c.label} | {metrics.num_studies} "
                f"({metrics.num_positive_studies}) "
                f"| {_num(metrics.froc.cpm)} | {_num(metrics.froc.sensitivity_at(1.0))} "
                f"| {_num(metrics.study_auc)} | {_cell(report.operating.sensitivity)} "
                f"| {_cell(report.operating.specificity)} | {_cell(hit)} |"
            )
    first = compared[0]
    lines += [
        "",
        f"Subgroups of the v2 held-out split ({first.label}), at the operating threshold:",
        "",
        "| subgroup | nodules found | study sensitivity | study specificity |",
        "|---|---|---|---|",
    ]
    v2 = first.reports[1][1]
    for key in BY:
        for row in v2.subgroups[key]:
            lines.append(
                f"| {key}: {row.value} | {_cell(row.nodules)} | {_cell(row.sensitivity)} "
                f"| {_cell(row.specificity)} |"
            )
    lines += [
        "",
        "Distractors by kind (v2 distractor set), hit at the operating threshold:",
        "",
        "| distractor | " + " | ".join(c.label for c in compared) + " |",
        "|---|" + "---|" * len(compared),
    ]
    kinds = [row.value for row in first.reports[2][1].subgroups.get("distractor", [])]
    for kind in kinds:
        cells = []
        for c in compared:
            rows = c.reports[2][1].subgroups.get("distractor", [])
            cells.append(_cell(next((r.nodules for r in rows if r.value == kind), None)))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append(end)
    return "\n".join(lines)


def _shown(model: str) -> str:
    path = Path(model).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "demo"))
    parser.add_argument("--label", default=DEFAULT_LABEL)
    parser.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        help="REV:FOLDER, a bundle as committed at git revision REV, shown beside --model "
        f"(default {DEFAULT_BASELINE}, the demo trained on version 1); 'none' for no baseline",
    )
    parser.add_argument("--baseline-label", default=DEFAULT_BASELINE_LABEL)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--no-doc", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        sets = generate_sets(work)
        compared = [Compared(args.label, _shown(args.model), evaluate_sets(args.model, sets))]
        if args.baseline != "none":
            baseline = baseline_from_git(args.baseline, work)
            reports = evaluate_sets(str(baseline), sets)
            compared.append(Compared(args.baseline_label, f"git {args.baseline}", reports))
    block = render(compared, command="python bench/generator_comparison.py")
    print(block)  # noqa: T201
    if not args.no_doc:
        write_block(NAME, block, MODELS_DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
