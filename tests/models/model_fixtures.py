"""Helpers for the models tests: tiny detectors with non-trivial random weights, matching,
and a MONAI Model Zoo bundle (also used by tests/serving/test_import_bundle_route.py).

Random MONAI initialisation gives every anchor a score of about 0.01, below every threshold,
so :func:`tiny_network` redraws the head weights with a larger spread and sets the
classification bias so that scores straddle the threshold and NMS has work to do.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from oncotriage.models.config import DetectorConfig, load_config
from oncotriage.models.postprocess import box_iou

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_2D = CONFIGS / "detector_tiny_2d.yaml"
TINY_3D = CONFIGS / "detector_tiny_3d.yaml"

#: The zoo's real ``configs/inference.json``, ``configs/metadata.json`` and ``LICENSE`` of
#: lung_nodule_ct_detection (Project-MONAI/model-zoo, commit dfae206d), without weights.
ZOO_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lung_nodule_ct_detection"

#: Head re-initialisation (classification bias, weight std) giving varied detections.
HEAD_INIT = {2: (-4.0, 0.3), 3: (-4.0, 0.2)}


def tiny_config(spatial_dims: int, overrides: tuple[str, ...] = ()) -> DetectorConfig:
    return load_config(TINY_2D if spatial_dims == 2 else TINY_3D, overrides)


def tiny_network(cfg: DetectorConfig, seed: int = 0) -> Any:
    """A MONAI RetinaNet for ``cfg`` whose heads produce many boxes above threshold."""
    import torch

    from oncotriage.models.build import build_network

    torch.manual_seed(seed)
    network = build_network(cfg)
    bias, std = HEAD_INIT[cfg.spatial_dims]
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for head in (network.classification_head, network.regression_head):
            for module in head.modules():
                if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d):
                    module.weight.normal_(0.0, std, generator=generator)
        network.classification_head.cls_logits.bias.fill_(bias)
    return network.eval()


def build_zoo_bundle(out: Path, seed: int = 0) -> Path:
    """A bundle in the Model Zoo layout of lung_nodule_ct_detection, written to ``out``.

    The fixture's configs and licence, plus ``models/model.pt``: the bundle's own network
    (built by MONAI's ConfigParser) with seeded random weights. MONAI's prior (-4.6) puts every
    score near 0.01, under the bundle's 0.02 threshold, so the class biases are redrawn
    around -3 (seed ``seed + 1``) for some boxes to survive.

    Returns:
        ``out``, the bundle folder.
    """
    import torch

    from oncotriage.models.import_bundle import parse_bundle

    shutil.copytree(ZOO_FIXTURE, out)
    torch.manual_seed(seed)
    network = parse_bundle(out).get_parsed_content("network_def")
    with torch.no_grad():
        bias = network.classification_head.cls_logits.bias
        generator = torch.Generator().manual_seed(seed + 1)
        bias.copy_(torch.randn(bias.shape, generator=generator) - 3.0)
    (out / "models").mkdir()
    torch.save(network.state_dict(), out / "models" / "model.pt")
    return out


def match_detections(
    ref_boxes: np.ndarray,
    ref_scores: np.ndarray,
    ref_labels: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
) -> tuple[float, float]:
    """Match every reference box one-to-one to a box of the same label with the highest IoU.

    Returns:
        The lowest IoU of a matched pair and the largest score difference.

    Raises:
        AssertionError: if counts differ or a reference box has no unmatched partner left.
    """
    assert len(ref_boxes) == len(boxes), f"{len(ref_boxes)} reference boxes, got {len(boxes)}"
    if len(ref_boxes) == 0:
        return 1.0, 0.0
    iou = box_iou(ref_boxes, boxes).astype(np.float64)
    iou[np.asarray(ref_labels)[:, None] != np.asarray(labels)[None, :]] = -1.0
    used = np.zeros(len(boxes), dtype=bool)
    worst_iou, worst_score = 1.0, 0.0
    for i in np.argsort(-np.asarray(ref_scores), kind="stable"):
        candidates = np.where(used, -1.0, iou[i])
        j = int(np.argmax(candidates))
        assert candidates[j] >= 0, f"reference box {i} has no partner of its label left"
        used[j] = True
        worst_iou = min(worst_iou, float(iou[i, j]))
        worst_score = max(worst_score, abs(float(ref_scores[i]) - float(scores[j])))
    return worst_iou, worst_score
