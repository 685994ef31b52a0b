"""The input-quality gate's thresholds, on generated images (docs/api.md lists them)."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.datasets.quality import MIN_SIDE_PX, image_quality_problem

RNG = np.random.default_rng(0)
CHEST = RNG.uniform(0.1, 0.9, size=(128, 128)).astype(np.float32)
CT_HU = RNG.uniform(-1000, 200, size=(64, 64, 20)).astype(np.float32)


def _ct_input(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu + 1024) / 1324, 0, 1)[None]


@pytest.mark.parametrize(
    ("source", "network_input", "problem"),
    [
        (CHEST, CHEST, None),
        (CT_HU, _ct_input(CT_HU), None),
        (CHEST[:MIN_SIDE_PX, :MIN_SIDE_PX], None, None),
        (CHEST[: MIN_SIDE_PX - 1, :], None, f"is 128 x {MIN_SIDE_PX - 1} pixels"),
        (np.ones((1, 1)), None, "is 1 x 1 pixels"),
        (np.zeros((128, 128)), None, "every pixel shows the same value"),
        (np.where(CHEST > 0.5, np.nan, CHEST), None, "invalid pixel values"),
        # all air: black in the lung window
        (np.full((64, 64, 20), -1024.0) + RNG.normal(0, 1, (64, 64, 20)), None, None),
        (
            np.full((64, 64, 20), -1024.0) + RNG.normal(0, 1, (64, 64, 20)),
            _ct_input(np.full((64, 64, 20), -1024.0) + RNG.normal(0, 1, (64, 64, 20))),
            "black in its display window",
        ),
        (CHEST, np.clip(CHEST * 0 + 1.0, 0, 1), "white (saturated)"),
        (CHEST, 0.5 + 0.001 * CHEST, "nearly uniform"),
    ],
)
def test_image_quality_problem(source, network_input, problem) -> None:
    found = image_quality_problem(source, network_input)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found
