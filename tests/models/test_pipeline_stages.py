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


def test_a_volume_within_max_single_pass_voxels_runs_in_one_pass(tiny3d) -> None:
    """``max_single_pass_voxels``: a volume larger than one window but within the budget runs
    in one network call, not in overlapping windows; above the budget, windows as before."""
    from oncotriage.models.pipeline import OrtRunner
    from oncotriage.models.spec import ModelBundle

    spec = ModelBundle.load(tiny3d.bundle).spec
    window = spec.sliding_window
    assert window is not None and window.max_single_pass_voxels is None
    calls: list[tuple[int, ...]] = []
    runner = OrtRunner(tiny3d.bundle / "model.onnx", intra_op_threads=1)

    class Counting:
        input_name = runner.input_name
        output_names = runner.output_names

        def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
            calls.append(tuple(batch.shape[2:]))
            return runner(batch)

    image = _image(3, (96, 90, 40))  # at least one window: MONAI's rule takes windows
    windowed = DetectionPipeline(spec, Counting()).prepare(image)
    assert windowed.sliding_window is True
    voxels = int(np.prod(windowed.batch.shape[2:]))
    for budget, one_pass in ((voxels, True), (voxels // 2, False)):
        calls.clear()
        budgeted = spec.model_copy(deep=True)
        assert budgeted.sliding_window is not None
        budgeted.sliding_window.max_single_pass_voxels = budget
        pipeline = DetectionPipeline(budgeted, Counting())
        prepared = pipeline.prepare(image)
        assert prepared.sliding_window is not one_pass
        findings = pipeline.findings(prepared, pipeline.run_network(prepared))
        if one_pass:
            assert calls == [tuple(prepared.batch.shape[2:])]
            assert len(findings) > 0
        else:
            assert len(calls) > 1
            assert all(shape == tuple(window.roi_size) for shape in calls)
