"""The serving inference path runs with torch, torchvision and MONAI made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume
from oncotriage.models.pipeline import DetectionPipeline

pytestmark = pytest.mark.torch  # the bundles are exported with torch in this process

BLOCKED_RUN = r"""
import importlib.abc, json, sys
from pathlib import Path

BLOCKED = {"torch", "torchvision", "monai"}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the serving path must not import it")
        return None

sys.meta_path.insert(0, Blocker())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("blocker failed")

import numpy as np
from oncotriage.datasets.image import ImageVolume
from oncotriage.models.pipeline import DetectionPipeline
from oncotriage.models.spec import ModelSpec

bundle, array_path, spacing = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
image = ImageVolume(array=np.load(array_path), spacing=tuple(spacing))
pipeline = DetectionPipeline.from_bundle(bundle)
assert isinstance(pipeline.spec, ModelSpec)
findings = pipeline.detect(image)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"leaked": leaked, "findings": [
    {"label": f.label, "score": f.score, "box_index": f.box_index, "box_world": f.box_world}
    for f in findings
]}))
"""


def _image(spatial_dims: int) -> ImageVolume:
    rng = np.random.default_rng(spatial_dims)
    if spatial_dims == 2:
        return ImageVolume(array=rng.random((90, 70), dtype=np.float32), spacing=(0.8, 0.8))
    hu = rng.normal(-600, 400, size=(40, 36, 16)).astype(np.float32)
    return ImageVolume(array=hu, spacing=(1.6, 1.6, 2.0))


@pytest.mark.parametrize("fixture", ["tiny2d", "tiny3d"])
def test_detect_without_torch(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tiny = request.getfixturevalue(fixture)
    image = _image(tiny.cfg.spatial_dims)
    np.save(tmp_path / "image.npy", image.array)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKED_RUN,
            str(tiny.bundle),
            str(tmp_path / "image.npy"),
            json.dumps(list(image.spacing)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["leaked"] == []

    expected = DetectionPipeline.from_bundle(tiny.bundle).detect(image)
    assert len(result["findings"]) == len(expected) >= 10
    for got, want in zip(result["findings"], expected, strict=True):
        assert got["label"] == want.label
        assert got["score"] == pytest.approx(want.score, abs=1e-6)
        np.testing.assert_allclose(got["box_index"], want.box_index, atol=1e-4)
        np.testing.assert_allclose(got["box_world"], want.box_world, atol=1e-4)
