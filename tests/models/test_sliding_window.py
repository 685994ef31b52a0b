"""numpy sliding-window stitching against MONAI ``sliding_window_inference``."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.models.sliding_window import (
    compute_importance_map,
    dense_patch_slices,
    scan_interval,
    sliding_window_inference,
)


def _pool(x: np.ndarray, k: int) -> np.ndarray:
    """Mean pooling with kernel = stride = k over every spatial axis of (n, C, *S)."""
    n, c, *spatial = x.shape
    shape = [n, c]
    for s in spatial:
        shape += [s // k, k]
    out = x.reshape(shape)
    return out.mean(axis=tuple(range(3, len(shape), 2)))


def multi_resolution_predictor(window: np.ndarray) -> list[np.ndarray]:
    """Outputs at 1/2, 1/4, then 1/2 resolution again (like RetinaNet's cls then box levels)."""
    half = _pool(window, 2)
    return [
        np.concatenate([half, 2 * half + 1], axis=1),
        _pool(window, 4) ** 2,
        _pool(window**2, 2) - half,
    ]


def test_scan_interval_and_slices() -> None:
    assert scan_interval((96, 64, 40), (64, 64, 32), (0.25, 0.25, 0.25)) == (48, 64, 24)
    slices = dense_patch_slices((96, 64), (64, 64), (48, 64))
    assert [(s[0].start, s[1].start) for s in slices] == [(0, 0), (32, 0)]


def test_gaussian_importance_map_peaks_in_the_centre() -> None:
    weights = compute_importance_map((9, 5), "gaussian", 0.125)
    assert weights.shape == (9, 5) and weights.argmax() == np.ravel_multi_index((4, 2), (9, 5))
    assert weights.min() >= 1e-3


@pytest.mark.torch
@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "mode", "sw_batch_size"),
    [
        ((1, 1, 96, 72), (32, 32), 0.25, "constant", 1),
        ((2, 1, 80, 48), (32, 32), 0.5, "gaussian", 3),
        ((1, 1, 40, 24, 24), (16, 16, 8), 0.25, "constant", 2),
        ((1, 1, 40, 24, 24), (16, 16, 8), 0.5, "gaussian", 1),
        ((2, 1, 24, 8, 20), (16, 16, 8), 0.25, "gaussian", 4),  # axis 1 smaller than the window
        ((1, 1, 12, 12), (16, 16), 0.25, "constant", 1),  # whole input padded to one window
    ],
)
def test_matches_monai(shape, roi, overlap, mode, sw_batch_size) -> None:
    import torch
    from monai.inferers import sliding_window_inference as monai_swi

    x = np.random.default_rng(len(shape) + sw_batch_size).random(shape, dtype=np.float32)
    expected = monai_swi(
        torch.from_numpy(x),
        roi,
        sw_batch_size,
        lambda t: [torch.from_numpy(o) for o in multi_resolution_predictor(t.numpy())],
        overlap=overlap,
        mode=mode,
    )
    ours = sliding_window_inference(
        x, roi, sw_batch_size, multi_resolution_predictor, overlap=overlap, mode=mode
    )
    assert len(ours) == len(expected) == 3
    for got, ref in zip(ours, expected, strict=True):
        assert got.shape == tuple(ref.shape)
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_constant_blend_of_a_linear_function_is_exact() -> None:
    # The identity predictor's stitched output equals the input wherever windows overlap.
    x = np.random.default_rng(0).random((1, 2, 50, 30), dtype=np.float32)
    (out,) = sliding_window_inference(x, (16, 16), 4, lambda w: [w.copy()], overlap=0.5)
    np.testing.assert_allclose(out, x, rtol=1e-6)
