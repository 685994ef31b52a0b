"""The generator's shift options (issue 15's robustness check): a shifted case is the same
patient with fainter, noisier or smaller nodules, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.datasets.synth_cxr_v2 import NO_SHIFT, CxrShift, render_cxr_case_v2

ENTROPY = (23, 5)  # seed 23, case 5: a positive case


def _case(shift: CxrShift = NO_SHIFT):  # type: ignore[no-untyped-def]
    return render_cxr_case_v2(ENTROPY, positive=True, shift=shift)


def _outside_boxes(case, image: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    mask = np.ones(image.shape, bool)
    for nodule in case.nodules:
        x0, y0, x1, y1 = (int(round(v)) for v in nodule.box_index)
        mask[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = False
    return mask


def test_fainter_nodules_change_only_the_nodules() -> None:
    plain, faint = _case(), _case(CxrShift(nodule_contrast=0.6))
    assert len(plain.nodules) == len(faint.nodules) >= 1
    outside = _outside_boxes(plain, plain.density)
    np.testing.assert_array_equal(plain.density[outside], faint.density[outside])
    for a, b in zip(plain.nodules, faint.nodules, strict=True):
        assert a.box_index == b.box_index
        assert b.peak_density == pytest.approx(0.6 * a.peak_density, abs=1e-4)  # 4 decimals


def test_more_noise_keeps_the_anatomy_and_raises_the_noise() -> None:
    plain, noisy = _case(), _case(CxrShift(noise_scale=1.5))
    assert noisy.noise_sigma == pytest.approx(1.5 * plain.noise_sigma, rel=1e-6)
    assert [n.box_index for n in noisy.nodules] == [n.box_index for n in plain.nodules]
    # the difference is noise: zero-mean, with the added part's spread
    diff = (noisy.density - plain.density)[_outside_boxes(plain, plain.density)]
    assert abs(float(diff.mean())) < 0.1 * float(diff.std())
    assert float(diff.std()) == pytest.approx(0.5 * plain.noise_sigma, rel=0.2)


def test_small_nodules_stay_in_the_asked_range() -> None:
    small = _case(CxrShift(diameter_mm=(4.0, 8.0)))
    assert small.nodules
    assert all(4.0 <= n.diameter_mm <= 8.0 for n in small.nodules)
