"""Index-space box checks shared by the review API and ``datasets from-reviews``."""

from __future__ import annotations

import pytest

from oncotriage.datasets.boxes import index_box_problem


@pytest.mark.parametrize(
    ("box", "extent", "problem"),
    [
        ([0, 0, 63, 63], (64, 64), None),
        ([-0.5, -0.5, 63.5, 63.5], (64, 64), None),
        ([1, 2, 3, 4, 5, 6], None, None),
        ([1, 2, 3, 4, 5, 6], (8, 8, 8), None),
        ([1, 2, 3, 4, 5, 3], (8, 8, 8), None),  # drawn on one slice
        ([1, 2, 4, 4, 5, 3], (8, 8, 8), "positive size"),
        ([1, 5, 3, 4, 5, 3], (8, 8, 8), "positive size"),
        ([1, 2, 3], None, "4 numbers (xyxy) or 6 (xyzxyz), not 3"),
        ([float("nan"), 0, 1, 1], None, "finite numbers"),
        ([0, 0, float("inf"), 1], None, "finite numbers"),
        ([5, 0, 5, 1], None, "positive size"),
        ([6, 0, 5, 1], None, "positive size"),
        ([-50, -50, 99999, 99999], (64, 64), "columns -50..99999, the image has 64 columns"),
        ([0, 0, 10, 64.6], (64, 64), "rows 0..64.6, the image has 64 rows (0..63)"),
        ([0, 0, 0, 4, 4, 9], (8, 8, 8), "slices 0..9, the image has 8 slices"),
        ([0, 0, 4, 4], (8, 8, 8), "a box on a volume has 6 numbers (xyzxyz), not 4"),
    ],
)
def test_index_box_problem(box, extent, problem) -> None:
    found = index_box_problem(box, extent)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
