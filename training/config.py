"""The ``training:`` section of a detector config, typed.

A detector YAML (``configs/detector_*.yaml``) describes the network and its processing;
its free-form ``training`` mapping is read here into :class:`TrainingConfig`, so a typo
in a training key fails before a run starts. ``--set training.epochs=3`` overrides work
on the whole file (see :func:`oncotriage.models.config.load_config`).

Defaults follow MONAI's detection tutorial (``luna16_training.py``): ATSS matcher with 4
candidates, hard-negative sampler (64 anchors per image, 30 % positive, pool 20,
at least 16 negatives), SGD with Nesterov momentum, a warm-up then step decay, crops by
positive/negative ratio 1:1, flips, rotate90, zoom and intensity augmentation.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from oncotriage.models.config import DetectorConfig, apply_overrides

EXTENDS_KEY = "extends"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorTrainingConfig(_Strict):
    """Matcher and sampler of ``RetinaNetDetector`` during training."""

    atss_num_candidates: int = Field(4, gt=0)
    atss_center_in_gt: bool = False
    hard_negative_batch_size_per_image: int = Field(64, gt=0)
    hard_negative_positive_fraction: float = Field(0.3, gt=0, lt=1)
    hard_negative_pool_size: int = Field(20, gt=0)
    hard_negative_min_neg: int = Field(16, ge=0)
    cls_loss_weight: float = Field(1.0, gt=0)


class AugmentationConfig(_Strict):
    """Box-aware random augmentation (MONAI ``monai.apps.detection.transforms``).

    Probabilities are per sample. ``zoom`` is ``RandZoomBoxd`` (size kept), ``rotate90``
    is ``RandRotateBox90d`` in the first two spatial axes, ``flip`` is ``RandFlipBoxd`` on
    every spatial axis; the intensity transforms act on the normalised image.
    """

    flip_prob: float = Field(0.5, ge=0, le=1)
    rotate90_prob: float = Field(0.5, ge=0, le=1)
    zoom_prob: float = Field(0.2, ge=0, le=1)
    min_zoom: float = Field(0.8, gt=0)
    max_zoom: float = Field(1.25, gt=0)
    gaussian_noise_prob: float = Field(0.1, ge=0, le=1)
    gaussian_noise_std: float = Field(0.02, ge=0)
    gaussian_smooth_prob: float = Field(0.1, ge=0, le=1)
    scale_intensity_prob: float = Field(0.15, ge=0, le=1)
    scale_intensity_factor: float = Field(0.25, ge=0)
    shift_intensity_prob: float = Field(0.15, ge=0, le=1)
    shift_intensity_offset: float = Field(0.1, ge=0)
    adjust_contrast_prob: float = Field(0.15, ge=0, le=1)
    adjust_contrast_gamma: tuple[float, float] = (0.7, 1.5)


class TrainingConfig(_Strict):
    """Everything ``oncotriage train`` reads from ``training:``.

    Attributes:
        batch_size: images per optimisation step (per process under DDP).
        samples_per_image: crops taken from each loaded image (MONAI ``num_samples``);
            a step sees ``batch_size`` crops drawn from ``ceil(batch_size / samples_per_image)``
            images.
        epochs: passes over the training split.
        steps_per_epoch: optimisation steps per epoch; default one pass
            (``ceil(train images * samples_per_image / batch_size)``).
        val_interval: validate every this many epochs (and after the last).
        checkpoint_interval: save ``last.pt`` every this many epochs.
        val_metric: validation metric that picks the best checkpoint.
        learning_rate, momentum, weight_decay, nesterov: SGD.
        warmup_epochs: linear warm-up from 10 % of the rate.
        lr_step_epochs, lr_gamma: step decay after warm-up (``None``: no decay).
        amp: automatic mixed precision; only on CUDA (ignored on CPU).
        patch_size: training crop, one value per spatial axis; default the 2D
            ``input_size`` or the 3D sliding-window ``roi_size``.
        pos, neg: crop centres fall in a lesion box with probability ``pos / (pos + neg)``.
        num_workers: data-loading processes (0 = in the main process).
        num_threads: torch CPU threads (``None``: torch's default); 1 is fastest on a
            shared CPU.
        datalist: default datalist when ``--datalist`` is not given.
        seed: default seed when ``--seed`` is not given.
        detector: matcher, sampler and loss weight.
        augmentation: random augmentation.
    """

    batch_size: int = Field(4, gt=0)
    samples_per_image: int = Field(1, gt=0)
    epochs: int = Field(10, gt=0)
    steps_per_epoch: int | None = Field(None, gt=0)
    val_interval: int = Field(1, gt=0)
    checkpoint_interval: int = Field(1, gt=0)
    val_metric: Literal["cpm", "ap_iou_0.10", "study_auc", "froc_sens_at_1_fp"] = "cpm"
    learning_rate: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-5, ge=0)
    nesterov: bool = True
    warmup_epochs: int = Field(1, ge=0)
    lr_step_epochs: int | None = Field(None, gt=0)
    lr_gamma: float = Field(0.1, gt=0, le=1)
    amp: bool = True
    patch_size: list[int] | None = None
    pos: float = Field(1.0, ge=0)
    neg: float = Field(1.0, ge=0)
    num_workers: int = Field(0, ge=0)
    num_threads: int | None = Field(None, gt=0)
    datalist: str | None = None
    seed: int = 0
    detector: DetectorTrainingConfig = Field(
        default_factory=lambda: DetectorTrainingConfig.model_validate({})
    )
    augmentation: AugmentationConfig = Field(
        default_factory=lambda: AugmentationConfig.model_validate({})
    )

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.pos + self.neg <= 0:
            raise ValueError("training.pos + training.neg must be positive (e.g. pos=1, neg=1)")
        if self.augmentation.max_zoom < self.augmentation.min_zoom:
            raise ValueError("training.augmentation.max_zoom must be >= min_zoom")
        return self


def training_config(cfg: DetectorConfig) -> TrainingConfig:
    """Parse and check ``cfg.training``; fill ``patch_size`` from the detector config.

    Raises:
        ValueError: on an unknown key or an invalid value (the message names it).
    """
    train = TrainingConfig.model_validate(cfg.training or {})
    dims = cfg.spatial_dims
    if train.patch_size is None:
        if cfg.preprocessing.input_size is not None:
            train.patch_size = list(cfg.preprocessing.input_size)
        elif cfg.inference.sliding_window is not None:
            train.patch_size = list(cfg.inference.sliding_window.roi_size)
        else:
            raise ValueError(
                "set training.patch_size (one value per spatial axis, e.g. [96, 96, 64]): "
                "the config has neither preprocessing.input_size nor a sliding window"
            )
    if len(train.patch_size) != dims:
        raise ValueError(f"training.patch_size needs {dims} values, got {train.patch_size}")
    divisible = cfg.size_divisible
    if any(p % d for p, d in zip(train.patch_size, divisible, strict=True)):
        raise ValueError(
            f"training.patch_size {train.patch_size} must be divisible by {divisible} "
            "(the network's size_divisible)"
        )
    return train


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(path).resolve()
    if path in seen:
        raise ValueError(f"{path} extends itself (through {', '.join(map(str, seen))})")
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found (see configs/*.yaml)")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping")
    parent = data.pop(EXTENDS_KEY, None)
    if parent is None:
        return data
    base = _read_with_extends(path.parent / str(parent), (*seen, path))
    return _deep_merge(base, data)


def load_training_config(path: Path, overrides: Sequence[str] = ()) -> DetectorConfig:
    """Read a detector config for training, following ``extends:``, then apply overrides.

    A training config may name a detector config to start from and change only what
    differs (mappings are merged key by key)::

        extends: detector_cxr2d_light.yaml   # relative to this file
        name: oncotriage-cxr2d
        training: {epochs: 12, patch_size: [128, 128]}

    Plain detector configs (``configs/detector_*.yaml``) load unchanged.

    Args:
        path: YAML file.
        overrides: ``key.sub=value`` strings (YAML values), applied last.

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: if the result is not a valid detector config or training section.
    """
    data = _read_with_extends(Path(path))
    cfg = DetectorConfig.model_validate(apply_overrides(data, overrides))
    training_config(cfg)  # fail now on a bad training section, not after loading images
    return cfg
