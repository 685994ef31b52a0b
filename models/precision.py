"""Reduced-precision variants of a model version: what they are, when they are accepted, and
which CPUs run them.

A variant is a model bundle of its own (``model.onnx`` + ``model_spec.json``) registered as a
new version of the same model and tagged with its base version:

- ``bf16``: the base's ``model.onnx`` unchanged; OpenVINO runs it with the ``bf16`` inference
  precision hint. Only CPUs with native bf16 arithmetic (AVX512-BF16 or AMX) run it so; others
  would silently compute in fp32.
- ``int8``: a QDQ ``model.onnx`` from static post-training quantization (ONNX Runtime's
  quantizer) calibrated on the training split; OpenVINO runs its int8 kernels. Fast int8 needs
  VNNI (AVX512-VNNI, AVX-VNNI) or AMX.

A variant is accepted only when, evaluated through the serving pipeline on the validation split,
its FROC CPM drops by at most 0.01 and its study sensitivity at the base's operating threshold
by at most one point, compared with the base under ONNX Runtime fp32 (:class:`AccuracyGate`).
The figures and the verdict travel in the variant's spec (:class:`PrecisionVariant`).
No torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ACCEPTED_TAG",
    "BASE_VERSION_TAG",
    "PRECISION_TAG",
    "CPU_FLAGS_FOR",
    "PRECISIONS",
    "SPEED_ORDER",
    "AccuracyGate",
    "Precision",
    "PrecisionVariant",
    "cpu_supports",
    "judge",
    "unsupported_reason",
]

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
#: Fastest first, as measured in docs/benchmarks.md (model throughput): int8 before bf16.
SPEED_ORDER: tuple[Precision, ...] = ("int8", "bf16", "fp32")
#: Any one of these CPU flags (``/proc/cpuinfo`` names) makes a precision fast on a CPU.
CPU_FLAGS_FOR: dict[str, tuple[str, ...]] = {
    "bf16": ("avx512_bf16", "amx_bf16"),
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
}

#: Version tags that find a base's variants in the registry (set by ``oncotriage optimize``).
BASE_VERSION_TAG = "oncotriage.base_version"
PRECISION_TAG = "oncotriage.precision"
ACCEPTED_TAG = "oncotriage.accepted"

#: Metrics the gate compares (names of ``EvaluationReport.flat_metrics``).
CPM = "cpm"
OPERATING_SENSITIVITY = "operating_sensitivity"


def cpu_supports(precision: str, flags: Iterable[str]) -> bool:
    """Whether a CPU with these flags runs ``precision`` natively (fp32: always)."""
    needed = CPU_FLAGS_FOR.get(precision)
    if needed is None:
        return precision == "fp32"
    have = set(flags)
    return any(flag in have for flag in needed)


def unsupported_reason(precision: str, flags: Iterable[str]) -> str | None:
    """Why a CPU with these flags does not run ``precision`` (``None`` when it does)."""
    if cpu_supports(precision, flags):
        return None
    needed = CPU_FLAGS_FOR.get(precision, ())
    return f"{precision} needs one of the CPU flags {', '.join(needed)}; this CPU has none"


class AccuracyGate(BaseModel):
    """How much accuracy a reduced-precision variant may lose against its base.

    Attributes:
        max_cpm_drop: most the FROC CPM (mean sensitivity at 1/8 ... 8 FP per image) may drop.
        max_sensitivity_drop: most the study sensitivity at the operating threshold may drop
            (0.01 = one percentage point).
    """

    model_config = ConfigDict(extra="forbid")

    max_cpm_drop: float = Field(default=0.01, ge=0)
    max_sensitivity_drop: float = Field(default=0.01, ge=0)


class PrecisionVariant(BaseModel):
    """What made a variant and how it compared with its base (in the variant's spec).

    Attributes:
        precision: the variant's arithmetic.
        base: the base model (``NAME/VERSION``, or its bundle folder when unregistered).
        base_version: registered version of the base (``None`` when unregistered).
        method: how the variant was built (quantizer and its settings, or the runtime hint).
        calibration: the data int8 scales were calibrated on (empty for fp32/bf16).
        evaluated_on: datalist, split and size of the evaluation.
        runtime: what ran the variant in the evaluation (runtime, version, CPU).
        figures: ``base_<metric>``, ``variant_<metric>`` and ``<metric>_drop`` for the gated
            metrics, plus every FROC point of both.
        gate: the limits applied.
        accepted: whether every gated drop is within its limit.
        refusals: the limits it broke, in words (empty when accepted).
    """

    model_config = ConfigDict(extra="forbid")

    precision: Precision
    base: str
    base_version: str | None = None
    method: str
    calibration: str = ""
    evaluated_on: str
    runtime: str
    figures: dict[str, float]
    gate: AccuracyGate = Field(default_factory=AccuracyGate)
    accepted: bool
    refusals: list[str] = Field(default_factory=list)


def judge(
    base: Mapping[str, float], variant: Mapping[str, float], gate: AccuracyGate
) -> tuple[dict[str, float], list[str]]:
    """Compare a variant's metrics with its base's under ``gate``.

    Args:
        base, variant: flat metrics of the same split (``cpm``, ``froc_sens_at_*``,
            ``operating_sensitivity``...).
        gate: the limits.

    Returns:
        ``(figures, refusals)``: the compared figures, and one sentence per broken limit
        (empty: accepted).

    Raises:
        ValueError: if a gated metric is missing (e.g. the base is not calibrated, so it has
            no operating threshold).
    """
    limits = {CPM: gate.max_cpm_drop, OPERATING_SENSITIVITY: gate.max_sensitivity_drop}
    figures: dict[str, float] = {}
    refusals: list[str] = []
    for metric, limit in limits.items():
        if metric not in base or metric not in variant:
            raise ValueError(
                f"{metric} is missing from the evaluation; the base model needs calibrated "
                "thresholds (oncotriage calibrate) before it can be optimized"
            )
        drop = float(base[metric]) - float(variant[metric])
        figures[f"base_{metric}"] = float(base[metric])
        figures[f"variant_{metric}"] = float(variant[metric])
        figures[f"{metric}_drop"] = drop
        if drop > limit + 1e-12:
            refusals.append(
                f"{metric.replace('_', ' ')} drops by {drop:.4f} "
                f"({base[metric]:.4f} -> {variant[metric]:.4f}); at most {limit:g} is allowed"
            )
    for key in sorted(base):
        if key.startswith("froc_sens_at_") and key in variant:
            figures[f"base_{key}"] = float(base[key])
            figures[f"variant_{key}"] = float(variant[key])
    return figures, refusals
