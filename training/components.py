"""The parts of a training run: devices and processes, data loading, network and optimiser.

:func:`oncotriage.training.train.train` puts them together; they are split out so that the
loop reads as a loop. Everything here is torch.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncotriage.datasets.datalist import CORNER_MODE, load_datalist
from oncotriage.models.build import build_detector, build_network, set_training_components
from oncotriage.models.config import DetectorConfig
from oncotriage.progress import progress_bar as shared_progress_bar
from oncotriage.training.config import TrainingConfig
from oncotriage.training.data import DetectionSample, load_samples
from oncotriage.training.transforms import (
    AugmentedDetectionDataset,
    build_train_transform,
    collate_crops,
    worker_init,
)

logger = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str | None) -> tuple[Dist, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        name = device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        return Dist(), torch.device(name)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in (None, "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_factor(train: TrainingConfig, steps_per_epoch: int) -> Any:
    warmup_steps = train.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        if train.lr_step_epochs:
            epoch = (step - warmup_steps) // steps_per_epoch
            return float(train.lr_gamma ** (epoch // train.lr_step_epochs))
        return 1.0

    return factor


def progress_bar(enabled: bool) -> Any:
    """The training loop's bar: steps with the running loss."""
    return shared_progress_bar("loss {task.fields[loss]}", enabled=enabled)


def cycle_batches(loader: Any, sampler: Any) -> Iterator[list[dict[str, torch.Tensor]]]:
    epoch = 0
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


@dataclass
class LoopState:
    """Progress that a checkpoint carries (``epoch`` = epochs completed)."""

    epoch: int = 0
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = 0
    best_val: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str | None = None


@dataclass
class TrainingComponents:
    """Network, detector (loss, matcher, sampler) and optimisation state."""

    network: torch.nn.Module
    detector: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    amp: bool

    def checkpoint(
        self,
        state: LoopState,
        *,
        epoch: int,
        cfg: DetectorConfig,
        seed: int,
        fingerprint: str,
        interrupted: bool = False,
    ) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else None,
            "epoch": epoch,
            "global_step": state.global_step,
            "best_metric": state.best_metric,
            "best_epoch": state.best_epoch,
            "best_val": state.best_val,
            "history": state.history,
            "run_id": state.run_id,
            "seed": seed,
            "config": cfg.model_dump(mode="json"),
            "dataset_fingerprint": fingerprint,
            "interrupted": interrupted,
        }

    def restore(self, path: Path) -> LoopState:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        self.network.load_state_dict(saved["network"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        state = LoopState(
            epoch=int(saved["epoch"]),
            global_step=int(saved["global_step"]),
            best_metric=float(saved.get("best_metric", -math.inf)),
            best_epoch=int(saved.get("best_epoch", 0)),
            best_val=dict(saved.get("best_val", {})),
            history=list(saved.get("history", [])),
            run_id=saved.get("run_id"),
        )
        logger.info("resuming %s after epoch %d (step %d)", path, state.epoch, state.global_step)
        return state


def build_components(
    cfg: DetectorConfig, train_cfg: TrainingConfig, dev: torch.device, steps_per_epoch: int
) -> TrainingComponents:
    network = build_network(cfg).to(dev)
    detector = build_detector(cfg, network)
    det_cfg = train_cfg.detector
    set_training_components(
        detector,
        atss_num_candidates=det_cfg.atss_num_candidates,
        atss_center_in_gt=det_cfg.atss_center_in_gt,
        hard_negative_batch_size_per_image=det_cfg.hard_negative_batch_size_per_image,
        hard_negative_positive_fraction=det_cfg.hard_negative_positive_fraction,
        hard_negative_pool_size=det_cfg.hard_negative_pool_size,
        hard_negative_min_neg=det_cfg.hard_negative_min_neg,
    )
    detector.set_target_keys(box_key="box", label_key="label")
    detector.to(dev)
    optimizer = torch.optim.SGD(
        network.parameters(),
        lr=train_cfg.learning_rate,
        momentum=train_cfg.momentum,
        weight_decay=train_cfg.weight_decay,
        nesterov=train_cfg.nesterov and train_cfg.momentum > 0,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(train_cfg, steps_per_epoch))
    amp = bool(train_cfg.amp and dev.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return TrainingComponents(network, detector, optimizer, scheduler, scaler, amp)


def load_splits(
    cfg: DetectorConfig, datalist: Path, *, main: bool, show_progress: bool
) -> tuple[list[DetectionSample], list[DetectionSample], int]:
    """Preprocessed training samples, validation samples (rank 0 only) and the val count."""
    corner = CORNER_MODE[cfg.spatial_dims]
    train_entries = load_datalist(datalist, "training", box_mode=corner)
    try:
        val_entries = load_datalist(datalist, "validation", box_mode=corner)
    except ValueError:
        val_entries = []
    if not train_entries:
        raise ValueError(f"{datalist} has no training entries")
    with progress_bar(show_progress and main) as progress:
        task = progress.add_task(
            "loading images", total=len(train_entries) + len(val_entries), loss="-"
        )

        def advance(_: int) -> None:
            progress.advance(task)

        train_samples = load_samples(
            train_entries, cfg.preprocessing, cfg.in_channels, on_loaded=advance
        )
        val_samples = (
            load_samples(val_entries, cfg.preprocessing, cfg.in_channels, on_loaded=advance)
            if main
            else []
        )
        progress.remove_task(task)
    logger.info(
        "%d training and %d validation images from %s (%d training lesions)",
        len(train_samples),
        len(val_entries),
        datalist,
        sum(len(s.boxes) for s in train_samples),
    )
    return train_samples, val_samples, len(val_entries)


def make_loader(
    samples: Sequence[DetectionSample],
    cfg: DetectorConfig,
    train_cfg: TrainingConfig,
    *,
    seed: int,
    dist_info: Dist,
    start_epoch: int,
    images_per_step: int,
) -> tuple[AugmentedDetectionDataset, Any, Any]:
    transform = build_train_transform(
        cfg.spatial_dims,
        train_cfg.patch_size or [],
        train_cfg.augmentation,
        samples_per_image=train_cfg.samples_per_image,
        pos=train_cfg.pos,
        neg=train_cfg.neg,
    )
    dataset = AugmentedDetectionDataset(samples, transform, seed=seed * 7919 + dist_info.rank)
    sampler: Any
    if dist_info.world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(
            dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, seed=seed
        )
    else:
        generator = torch.Generator().manual_seed(seed + start_epoch)
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=images_per_step,
        sampler=sampler,
        collate_fn=collate_crops,
        num_workers=train_cfg.num_workers,
        worker_init_fn=worker_init if train_cfg.num_workers else None,
        drop_last=False,
    )
    return dataset, sampler, loader
