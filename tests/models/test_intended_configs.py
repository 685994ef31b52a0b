"""The production configs and the bundled demo state the images they are made for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oncotriage.models.config import load_config
from oncotriage.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("config", "described"),
    [
        ("detector_cxr2d.yaml", "2D DX/CR chest (PA/AP), spacing 0.1-1 mm"),
        ("detector_cxr2d_light.yaml", "2D DX/CR chest (PA/AP), spacing 0.1-1 mm"),
        (
            "detector_ct3d.yaml",
            "3D CT chest, spacing 0.3-1.5 mm, at least 32 slices, slices up to 3.5 mm thick",
        ),
        (
            "detector_ct3d_light.yaml",
            "3D CT chest, spacing 0.3-1.5 mm, at least 32 slices, slices up to 3.5 mm thick",
        ),
    ],
)
def test_configs_carry_intended_inputs_into_the_spec(config: str, described: str) -> None:
    spec = ModelSpec.from_config(load_config(REPO / "configs" / config))
    assert spec.intended_inputs is not None
    assert spec.reads.describe() == described
    again = ModelSpec.model_validate_json(spec.model_dump_json())
    assert again.intended_inputs == spec.intended_inputs


def test_the_bundled_demo_spec_states_its_inputs_explicitly() -> None:
    raw = json.loads((REPO / "models/demo/model_spec.json").read_text())
    assert raw["intended_inputs"]["modalities"] == ["DX", "CR"]
    assert raw["intended_inputs"]["views"] == ["PA", "AP"]
    spec = ModelSpec.load(REPO / "models/demo")
    assert spec.reads.describe() == "2D DX/CR chest (PA/AP), spacing 0.1-1 mm"
