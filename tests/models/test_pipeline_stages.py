"""detect() split in three stages (prepare -> run_network -> findings) gives the same findings.

The service runs the stages on two threads (the network alone on the model thread), so the
split must change nothing: same boxes, scores and labels, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume, UnsupportedImageError
from oncotriage.models.pipeline import DetectionPipeline

pytestmark = pytest.mark.torch  # the tiny bundles are exported with torch


def _image(spatial_dims: int, shape: tuple[int, ...]) -> ImageVolume:
    rng = np.random.default_rng(7)
    if spatial_dims == 2:
        array = rng.random(shape, dtype=np.float32)
        array[30:40, 20:32] += 2.0  # something blob-like to score
        return ImageVolume(array=array, spacing=(0.7, 0.9))
    hu = rng.normal(-700, 300, size=shape).astype(np.float32)
    hu[20:28, 20:28, 10:16] = 40.0
    return ImageVolume(array=hu, spacing=(1.4, 1.2, 2.5))


@pytest.mark.parametrize(
    ("fixture", "shape", "window"),
    [
        ("tiny2d", (90, 70), False),
        ("tiny3d", (40, 36, 16), False),  # smaller than one window: one pass
        ("tiny3d", (96, 90, 40), True),  # at least one window: sliding window
    ],
)
def test_stages_equal_detect(
    fixture: str, shape: tuple[int, ...], window: bool, request: pytest.FixtureRequest
) -> None:
    tiny = request.getfixturevalue(fixture)
    pipeline = DetectionPipeline.from_bundle(tiny.bundle, intra_op_threads=1)
    image = _image(tiny.cfg.spatial_dims, shape)

    prepared = pipeline.prepare(image)
    assert prepared.sliding_window is window
    assert prepared.batch.dtype == np.float32
    assert prepared.batch.shape[:2] == (1, pipeline.spec.in_channels)
    for size, divisor in zip(prepared.batch.shape[2:], pipeline.spec.size_divisible, strict=True):
        assert size % divisor == 0
    maps = pipeline.run_network(prepared)
    assert len(maps) == 2 * pipeline.spec.num_levels
    staged = pipeline.findings(prepared, maps)

    whole = pipeline.detect(image)
    assert len(whole) > 0  # random weights, low threshold: there is something to compare
    assert [(f.label, f.score, f.box_index, f.box_world) for f in staged] == [
        (f.label, f.score, f.box_index, f.box_world) for f in whole
    ]


def test_prepare_refuses_an_image_of_the_wrong_dimension(tiny2d) -> None:
    pipeline = DetectionPipeline.from_bundle(tiny2d.bundle, intra_op_threads=1)
    volume = _image(3, (20, 20, 8))
    with pytest.raises(UnsupportedImageError) as raised:
        pipeline.prepare(volume)
    assert raised.value.code == "modality"
    assert "reads 2D images" in str(raised.value)
