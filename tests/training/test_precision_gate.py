"""The accuracy gate of reduced-precision variants, and which CPUs run which precision."""

from __future__ import annotations

import pytest

from oncotriage.models.precision import AccuracyGate, cpu_supports, judge, unsupported_reason


def test_a_variant_within_both_limits_is_accepted() -> None:
    base = {"cpm": 0.9837, "operating_sensitivity": 0.9615, "froc_sens_at_1_fp": 0.9873}
    variant = {"cpm": 0.9801, "operating_sensitivity": 0.9615, "froc_sens_at_1_fp": 0.9873}
    figures, refusals = judge(base, variant, AccuracyGate())
    assert refusals == []
    assert figures["cpm_drop"] == pytest.approx(0.0036)
    assert figures["operating_sensitivity_drop"] == pytest.approx(0.0)
    assert figures["variant_froc_sens_at_1_fp"] == pytest.approx(0.9873)


def test_one_lost_study_of_52_is_refused_with_the_figures() -> None:
    base = {"cpm": 0.9837, "operating_sensitivity": 50 / 52}
    variant = {"cpm": 0.9801, "operating_sensitivity": 49 / 52}
    figures, refusals = judge(base, variant, AccuracyGate())
    assert figures["operating_sensitivity_drop"] == pytest.approx(1 / 52)
    assert refusals == [
        "operating sensitivity drops by 0.0192 (0.9615 -> 0.9423); at most 0.01 is allowed"
    ]


def test_a_cpm_drop_over_the_limit_is_refused() -> None:
    _, refusals = judge(
        {"cpm": 0.90, "operating_sensitivity": 0.95},
        {"cpm": 0.88, "operating_sensitivity": 0.95},
        AccuracyGate(),
    )
    assert len(refusals) == 1 and refusals[0].startswith("cpm drops by 0.0200")


def test_an_uncalibrated_base_cannot_be_judged() -> None:
    with pytest.raises(ValueError, match="oncotriage calibrate"):
        judge({"cpm": 0.9}, {"cpm": 0.9}, AccuracyGate())


def test_cpu_flags_decide_bf16_and_int8() -> None:
    assert cpu_supports("fp32", set())
    assert cpu_supports("int8", {"avx_vnni"}) and cpu_supports("int8", {"amx_int8"})
    assert not cpu_supports("int8", {"avx2", "avx512f"})
    assert cpu_supports("bf16", {"amx_bf16"}) and not cpu_supports("bf16", {"avx512_vnni"})
    assert unsupported_reason("bf16", {"avx2"}) == (
        "bf16 needs one of the CPU flags avx512_bf16, amx_bf16; this CPU has none"
    )
