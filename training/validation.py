"""Validation during training: the torch detector on preprocessed validation images.

Boxes stay in network-input space (predictions and ground truth alike), scored by
:mod:`oncotriage.training.metrics`. ``oncotriage evaluate`` measures the exported ONNX model
in source-image space instead; both use the same metric code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from oncotriage.training.data import DetectionSample
from oncotriage.training.metrics import (
    DetectionMetrics,
    ImageDetections,
    ImageTargets,
    evaluate_detections,
)


def predict_torch(
    detector: Any,
    samples: Sequence[DetectionSample],
    device: torch.device,
    *,
    batch_size: int = 4,
    use_sliding_window: bool | None = None,
) -> list[ImageDetections]:
    """Torch detector predictions in network-input space (eval mode, no gradients).

    Images of equal size are batched; volumes larger than the sliding window use it
    (MONAI bundle rule) unless ``use_sliding_window`` says otherwise.
    """
    detector.eval()
    window = getattr(detector, "inferer", None)
    roi = getattr(window, "roi_size", None)
    out: list[ImageDetections] = []
    with torch.no_grad():
        index = 0
        while index < len(samples):
            shape = samples[index].image.shape
            group = [samples[index]]
            while (
                len(group) < batch_size
                and index + len(group) < len(samples)
                and samples[index + len(group)].image.shape == shape
            ):
                group.append(samples[index + len(group)])
            index += len(group)
            use = use_sliding_window
            if use is None:
                use = roi is not None and math.prod(shape[1:]) >= math.prod(roi)
            images = [torch.from_numpy(s.image).to(device) for s in group]
            results = detector(images, use_inferer=bool(use))
            for result in results:
                out.append(
                    ImageDetections(
                        boxes=result[detector.target_box_key].float().cpu().numpy(),
                        scores=result[detector.pred_score_key].float().cpu().numpy(),
                        labels=result[detector.target_label_key].long().cpu().numpy(),
                    )
                )
    return out


def validate(
    detector: Any,
    samples: Sequence[DetectionSample],
    device: torch.device,
    num_classes: int,
) -> DetectionMetrics:
    """FROC/CPM, AP and study AUC of the torch detector on preprocessed samples."""
    predictions = predict_torch(detector, samples, device)
    targets = [ImageTargets(s.boxes, s.labels) for s in samples]
    return evaluate_detections(
        predictions, targets, study_ids=[s.study_id for s in samples], num_classes=num_classes
    )
