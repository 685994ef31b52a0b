"""MONAI RetinaNet networks and detectors from :class:`~oncotriage.models.config.DetectorConfig`.

Imports torch and MONAI: used by training, export and tests, never by serving.

With ``fpn_channels: 256`` the network is built exactly as MONAI's
``lung_nodule_ct_detection`` bundle builds it (``resnetXX`` + ``resnet_fpn_feature_extractor``
+ ``RetinaNet``), so the bundle's checkpoints load unchanged; other widths use MONAI's
``BackboneWithFPN`` with the same layer selection.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
from monai.networks.nets import resnet

from oncotriage.models.config import DetectorConfig

__all__ = [
    "build_anchor_generator",
    "build_detector",
    "build_network",
    "load_network_weights",
    "set_training_components",
]

logger = logging.getLogger(__name__)

_RESNETS = {10: resnet.resnet10, 18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}


def build_backbone(cfg: DetectorConfig) -> resnet.ResNet:
    """The MONAI ResNet of ``cfg.backbone`` (``n_input_channels = cfg.in_channels``)."""
    bb = cfg.backbone
    kwargs: dict[str, Any] = {
        "spatial_dims": cfg.spatial_dims,
        "n_input_channels": cfg.in_channels,
        "conv1_t_stride": list(bb.conv1_t_stride),
        "conv1_t_size": list(bb.conv1_t_size),
    }
    if bb.widen_factor != 1.0:
        kwargs["widen_factor"] = bb.widen_factor
    if bb.shortcut_type != "B":
        kwargs["shortcut_type"] = bb.shortcut_type
    if not bb.bias_downsample:
        kwargs["bias_downsample"] = False
    return _RESNETS[bb.depth](pretrained=False, progress=False, **kwargs)


def build_network(cfg: DetectorConfig, *, use_list_output: bool = False) -> RetinaNet:
    """MONAI ``RetinaNet`` (ResNet + FPN + classification/regression heads) for ``cfg``.

    Args:
        cfg: detector configuration.
        use_list_output: network returns ``[cls_0..cls_L, box_0..box_L]`` instead of a dict
            (needed for tracing to ONNX).

    Returns:
        The network in training mode, randomly initialised as MONAI initialises it.
    """
    backbone = build_backbone(cfg)
    if cfg.fpn_channels == 256:
        feature_extractor = resnet_fpn_feature_extractor(
            backbone, cfg.spatial_dims, False, list(cfg.returned_layers), None
        )
    else:
        # MONAI's _resnet_fpn_extractor with another FPN width.
        stage2 = backbone.in_planes // 8
        feature_extractor = BackboneWithFPN(
            backbone,
            {f"layer{k}": str(v) for v, k in enumerate(cfg.returned_layers)},
            [stage2 * 2 ** (k - 1) for k in cfg.returned_layers],
            cfg.fpn_channels,
            spatial_dims=cfg.spatial_dims,
        )
    return RetinaNet(
        spatial_dims=cfg.spatial_dims,
        num_classes=cfg.num_classes,
        num_anchors=cfg.num_anchors,
        feature_extractor=feature_extractor,
        size_divisible=cfg.size_divisible,
        use_list_output=use_list_output,
    )


def build_anchor_generator(cfg: DetectorConfig) -> AnchorGeneratorWithAnchorShape:
    """MONAI ``AnchorGeneratorWithAnchorShape`` for ``cfg``."""
    return AnchorGeneratorWithAnchorShape(
        feature_map_scales=list(cfg.feature_map_scales),
        base_anchor_shapes=[list(s) for s in cfg.base_anchor_shapes],
    )


def build_detector(cfg: DetectorConfig, network: RetinaNet | None = None) -> RetinaNetDetector:
    """MONAI ``RetinaNetDetector`` configured for inference as ``cfg`` says.

    Box-coder weights, box selector (score threshold, top-k, NMS, detections per image) and,
    when configured, the sliding-window inferer are set. Matcher and sampler, needed only for
    training, are set by :func:`set_training_components`.

    Args:
        cfg: detector configuration.
        network: an existing network (default: :func:`build_network`).
    """
    net = network if network is not None else build_network(cfg)
    detector = RetinaNetDetector(network=net, anchor_generator=build_anchor_generator(cfg))
    if cfg.box_coder_weights is not None:
        detector.set_box_coder_weights(tuple(cfg.box_coder_weights))  # type: ignore[arg-type]
    pp = cfg.postprocess
    detector.set_box_selector_parameters(
        score_thresh=pp.score_thresh,
        topk_candidates_per_level=pp.topk_candidates_per_level,
        nms_thresh=pp.nms_thresh,
        detections_per_img=pp.detections_per_img,
        apply_sigmoid=pp.apply_sigmoid,
    )
    window = cfg.inference.sliding_window
    if window is not None:
        detector.set_sliding_window_inferer(
            roi_size=list(window.roi_size),
            sw_batch_size=window.sw_batch_size,
            overlap=window.overlap,
            mode=window.mode,
            sigma_scale=window.sigma_scale,
            padding_mode=window.padding_mode,
            cval=window.cval,
            device="cpu",
        )
    return detector


def set_training_components(
    detector: RetinaNetDetector,
    *,
    atss_num_candidates: int = 4,
    atss_center_in_gt: bool = False,
    hard_negative_batch_size_per_image: int = 64,
    hard_negative_positive_fraction: float = 0.3,
    hard_negative_pool_size: float = 20,
    hard_negative_min_neg: int = 16,
) -> RetinaNetDetector:
    """ATSS matcher and hard-negative sampler, with the bundle's defaults.

    Pass ``**cfg.training.get("detector", {})`` to use a config's values.
    """
    detector.set_atss_matcher(num_candidates=atss_num_candidates, center_in_gt=atss_center_in_gt)
    detector.set_hard_negative_sampler(
        batch_size_per_image=hard_negative_batch_size_per_image,
        positive_fraction=hard_negative_positive_fraction,
        pool_size=hard_negative_pool_size,
        min_neg=hard_negative_min_neg,
    )
    return detector


def load_network_weights(network: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    """Load a checkpoint into ``network``.

    Accepts a plain ``state_dict`` (MONAI bundle ``model.pt``) or a dict holding one under
    ``model``, ``network``, ``state_dict`` or ``model_state_dict``; a ``module.`` prefix
    (DataParallel) is removed.

    Raises:
        FileNotFoundError: if the checkpoint is missing.
        ValueError: if its tensors do not fit the network (wrong config for these weights).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("model", "network", "state_dict", "model_state_dict"):
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                state = inner
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"weights in {path} do not fit this network; is the config the one it was trained "
            f"with? ({str(exc).splitlines()[0]})"
        ) from exc
    return network
