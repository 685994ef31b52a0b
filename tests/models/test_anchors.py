"""numpy anchors are MONAI's ``AnchorGeneratorWithAnchorShape`` anchors, value for value."""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.models.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_round_half_to_even() -> None:
    # 5 / 2 = 2.5 rounds to 2 (as torch.round), 3 / 2 * 2 = 3 stays.
    (level,) = cell_anchors([[5, 6, 3]], [1])
    np.testing.assert_array_equal(level, [[-2, -3, -2, 2, 3, 2]])
    (scaled,) = cell_anchors([[5, 6, 3]], [2])
    np.testing.assert_array_equal(scaled, [[-5, -6, -3, 5, 6, 3]])


def test_anchor_layout_2d() -> None:
    gen = AnchorGenerator([1], [[4, 4], [8, 2]])
    (anchors,) = gen((8, 8), [(2, 2)])
    # stride 4: centres at 2 and 6; first axis slowest, anchor shapes innermost.
    np.testing.assert_array_equal(
        anchors[:4], [[0, 0, 4, 4], [-2, 1, 6, 3], [0, 4, 4, 8], [-2, 5, 6, 7]]
    )
    assert anchors.shape == (8, 4) and anchors.dtype == np.float32


@pytest.mark.torch
@pytest.mark.parametrize(
    ("scales", "shapes", "image", "grids"),
    [
        (
            [1, 2, 4],
            [[6, 8, 4], [8, 6, 5], [10, 10, 6]],
            (64, 64, 32),
            [(16, 16, 16), (8, 8, 8), (4, 4, 4)],
        ),
        (
            [1, 2, 4],
            [[6, 8, 4], [8, 6, 5], [10, 10, 6]],
            (96, 80, 48),
            [(24, 20, 24), (12, 10, 12), (6, 5, 6)],
        ),
        ([1, 2], [[3, 5, 7]], (33, 20, 12), [(9, 5, 6), (5, 3, 3)]),
        ([1, 2, 4], [[4, 4], [6, 6], [8, 8]], (64, 48), [(16, 12), (8, 6), (4, 3)]),
        ([0.5, 1.5], [[5, 7], [9, 3]], (40, 24), [(10, 6), (5, 3)]),
    ],
)
def test_matches_monai(scales, shapes, image, grids) -> None:
    import torch
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    monai_gen = AnchorGeneratorWithAnchorShape(feature_map_scales=scales, base_anchor_shapes=shapes)
    images = torch.zeros((2, 1, *image))
    maps = [torch.zeros((2, 3, *g)) for g in grids]
    reference = monai_gen(images, maps)[0].numpy()
    ours = AnchorGenerator(scales, shapes)(image, grids)
    assert AnchorGenerator(scales, shapes).num_anchors_per_location == len(shapes)
    np.testing.assert_array_equal(np.concatenate(ours), reference)


def test_level_count_must_match() -> None:
    with pytest.raises(ValueError, match="feature_map_scales"):
        AnchorGenerator([1, 2], [[4, 4]])((16, 16), [(4, 4)])
