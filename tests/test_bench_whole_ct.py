"""The whole-CT benchmark's input and stage timing: a full-size CT made from the example, and
stages that add up to detect() with the same findings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # as when run as `python bench/whole_ct.py`
    spec = importlib.util.spec_from_file_location("whole_ct", REPO / "bench" / "whole_ct.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["whole_ct"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _ct(shape: tuple[int, int, int] = (96, 80, 40)) -> ImageVolume:
    rng = np.random.default_rng(3)
    hu = rng.normal(-800, 40, size=shape).astype(np.float32)
    hu[40:48, 30:38, 18:24] = 30.0  # a nodule-like blob
    return ImageVolume(array=hu, spacing=(0.9, 0.9, 2.5), modality="CT")


def test_full_size_is_a_512_matrix_over_35_cm_with_air_around(bench: ModuleType) -> None:
    image = _ct()
    full = bench.full_size(image)
    assert full.array.shape == (512, 512, 120)  # 30 cm of 2.5 mm slices
    assert full.spacing == pytest.approx((350 / 512, 350 / 512, 2.5))
    assert full.array[0, 0, 0] == -1024.0 and full.array[-1, -1, -1] == -1024.0
    # the example sits in the middle at the new spacing: 96 x 0.9 mm -> 126 voxels
    inside = full.array[:, :, 60] > -1000
    rows, cols = np.nonzero(inside)
    assert rows.max() - rows.min() + 1 == pytest.approx(96 * 0.9 / (350 / 512), abs=1.5)
    assert cols.max() - cols.min() + 1 == pytest.approx(80 * 0.9 / (350 / 512), abs=1.5)
    # the end slices repeat the example's first and last
    assert np.array_equal(full.array[:, :, 0], full.array[:, :, 39])


def test_timed_stages_add_up_to_detect_and_change_nothing(bench: ModuleType) -> None:
    from oncotriage.models.pipeline import DetectionPipeline, OrtRunner
    from oncotriage.models.spec import ModelBundle

    bundle = REPO / "models" / "demo_ct"
    spec = ModelBundle.load(bundle).spec
    timed = bench.TimedRunner(OrtRunner(bundle / "model.onnx", intra_op_threads=1))
    pipeline = DetectionPipeline(spec, timed)
    image = _ct()
    stages, findings = bench.timed_detect(pipeline, timed, image)
    assert set(stages) == set(bench.STAGES)
    assert all(seconds >= 0 for seconds in stages.values())
    assert timed.calls == 1 and stages["network"] > 0  # smaller than a window: one pass
    expected = DetectionPipeline.from_bundle(bundle, intra_op_threads=1).detect(image)
    assert [f.score for f in findings] == pytest.approx([f.score for f in expected], abs=1e-6)
    assert [f.box_index for f in findings] == [f.box_index for f in expected]


def test_agreement_pairs_each_finding_with_its_best_overlap(bench: ModuleType) -> None:
    from oncotriage.models.pipeline import Finding

    def finding(score: float, box: tuple[float, ...]) -> Finding:
        return Finding(label=0, score=score, box_index=box, box_world=box)

    one_pass = [finding(0.9, (0, 0, 0, 10, 10, 10)), finding(0.5, (20, 20, 20, 30, 30, 30))]
    windowed = [finding(0.5, (20, 20, 20, 30, 30, 35)), finding(0.8, (0, 0, 0, 10, 10, 10))]
    low, high, diff = bench.agreement(one_pass, windowed)
    assert high == pytest.approx(1.0)
    assert low == pytest.approx(1000 / 1500)
    assert diff == pytest.approx(0.1)
    apart = [finding(0.5, (2, 2, 2, 3, 3, 3))]
    assert bench.agreement([finding(0.5, (0, 0, 0, 1, 1, 1))], apart)[0] == 0.0
