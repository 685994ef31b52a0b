"""``oncotriage train``: MONAI RetinaNet training, tracked as one MLflow run.

The loop follows MONAI's detection tutorial (``luna16_training.py``): a
``RetinaNetDetector`` with an ATSS matcher and a hard-negative sampler, SGD with Nesterov
momentum, box-aware augmentation (:mod:`oncotriage.training.transforms`), AMP on CUDA.
Validation runs the torch detector on the validation split, preprocessed as serving
preprocesses, and scores it with :mod:`oncotriage.training.metrics` (FROC/CPM, AP at IoU
0.1, study AUC) in network-input space.

Files under ``out_dir``: ``checkpoints/last.pt`` (every ``checkpoint_interval`` epochs, on
Ctrl-C, at the end; ``--resume`` continues from it and the same MLflow run),
``checkpoints/best.pt`` (best validation metric), ``plots/*.png`` and ``bundle/`` (the best
weights exported to ONNX with ``model_spec.json``, ready for ``oncotriage register``).

The MLflow run holds the resolved config as params, the git commit, the dataset
fingerprint, per-epoch losses and validation metrics, the best checkpoint, the plots and
the bundle (``runs:/<run id>/bundle``).

Several GPUs: ``torchrun --nproc_per_node N $(which oncotriage) train ...``; every process
trains on its share of each epoch under ``DistributedDataParallel``, rank 0 validates,
logs and saves.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from oncotriage.datasets.datalist import CORNER_MODE, load_datalist
from oncotriage.models.build import build_detector, build_network, set_training_components
from oncotriage.models.config import DetectorConfig
from oncotriage.training.config import TrainingConfig, training_config
from oncotriage.training.data import (
    SYNTHETIC_INTENDED_USE,
    DetectionSample,
    dataset_fingerprint,
    is_synthetic,
    load_samples,
)
from oncotriage.training.metrics import (
    DetectionMetrics,
    ImageDetections,
    ImageTargets,
    evaluate_detections,
)
from oncotriage.training.tracking import (
    finite_metrics,
    flatten_params,
    git_commit,
    log_metrics,
    log_params,
)
from oncotriage.training.transforms import (
    AugmentedDetectionDataset,
    build_train_transform,
    collate_crops,
    worker_init,
)

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


class TrainingInterrupted(RuntimeError):
    """Training stopped by Ctrl-C; ``checkpoint`` holds the state to ``--resume`` from."""

    def __init__(self, checkpoint: Path, run_id: str | None) -> None:
        super().__init__(f"training interrupted; checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint
        self.run_id = run_id


@dataclass
class TrainResult:
    """What a finished training run produced.

    Attributes:
        run_id: MLflow run id (``None`` on ranks other than 0).
        out_dir: the run's output folder.
        best_checkpoint, last_checkpoint: checkpoint files.
        bundle_dir: exported ONNX bundle of the best weights (``None`` if not exported).
        best_metric: best value of the validation metric (``None`` without validation).
        best_epoch: 1-based epoch of the best checkpoint.
        epochs_completed: epochs trained in total (including resumed ones).
        history: one dict of losses (and validation metrics) per epoch.
        dataset_fingerprint: ``sha256:...`` of the datalist and its images.
        val_metrics: validation metrics of the best epoch.
    """

    run_id: str | None
    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    bundle_dir: Path | None
    best_metric: float | None
    best_epoch: int
    epochs_completed: int
    history: list[dict[str, float]] = field(default_factory=list)
    dataset_fingerprint: str = ""
    val_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str | None) -> tuple[_Dist, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        name = device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        return _Dist(), torch.device(name)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in (None, "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _lr_factor(train: TrainingConfig, steps_per_epoch: int) -> Any:
    warmup_steps = train.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        if train.lr_step_epochs:
            epoch = (step - warmup_steps) // steps_per_epoch
            return float(train.lr_gamma ** (epoch // train.lr_step_epochs))
        return 1.0

    return factor


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _cycle(loader: Any, sampler: Any) -> Iterator[list[dict[str, torch.Tensor]]]:
    epoch = 0
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


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


def _save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def _metric_value(metrics: dict[str, float], name: str) -> float:
    value = metrics.get(name, float("nan"))
    return value if math.isfinite(value) else -math.inf


def train(
    cfg: DetectorConfig,
    datalist: Path,
    *,
    out_dir: Path,
    seed: int | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    config_path: Path | None = None,
    overrides: Sequence[str] = (),
    export: bool = True,
    show_progress: bool = True,
    device: str | None = None,
) -> TrainResult:
    """Train a detector on a datalist's ``training`` split, validating on ``validation``.

    Args:
        cfg: detector config with its ``training`` section.
        datalist: MONAI detection datalist JSON.
        out_dir: folder for checkpoints, plots and the exported bundle.
        seed: random seed (default ``training.seed``); the run is repeatable on one device.
        resume: continue from ``out_dir/checkpoints/last.pt`` and its MLflow run.
        tracking_uri: MLflow store (default: ``registry.default_tracking_uri()``).
        experiment: MLflow experiment (default: the config's name).
        run_name: MLflow run name.
        config_path, overrides: recorded as params (where the config came from).
        export: export the best weights to ``out_dir/bundle`` and log it.
        show_progress: draw a progress bar (rank 0 only).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).

    Returns:
        the run's results.

    Raises:
        FileExistsError: ``out_dir`` holds a checkpoint and ``resume`` is false.
        FileNotFoundError: ``resume`` without a checkpoint, or a missing datalist/image.
        TrainingInterrupted: on Ctrl-C, after saving ``last.pt``.
    """
    from oncotriage.models import registry

    train_cfg = training_config(cfg)
    seed = train_cfg.seed if seed is None else int(seed)
    datalist = Path(datalist)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    last_path, best_path = ckpt_dir / LAST_CHECKPOINT, ckpt_dir / BEST_CHECKPOINT
    if resume and not last_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
    if not resume and last_path.is_file():
        raise FileExistsError(
            f"{out_dir} already holds a training run ({last_path}); continue it with --resume "
            "or choose another --out"
        )

    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    dist_info, dev = _setup_distributed(device)
    _seed_everything(seed + dist_info.rank)
    amp = bool(train_cfg.amp and dev.type == "cuda")
    main = dist_info.is_main

    corner = CORNER_MODE[cfg.spatial_dims]
    train_entries = load_datalist(datalist, "training", box_mode=corner)
    try:
        val_entries = load_datalist(datalist, "validation", box_mode=corner)
    except ValueError:
        val_entries = []
    if not train_entries:
        raise ValueError(f"{datalist} has no training entries")
    fingerprint = dataset_fingerprint(datalist) if main else ""

    with _progress(show_progress and main) as progress:
        task = progress.add_task(
            "loading images", total=len(train_entries) + len(val_entries), loss="-"
        )
        train_samples = load_samples(
            train_entries,
            cfg.preprocessing,
            cfg.in_channels,
            on_loaded=lambda _: progress.advance(task),
        )
        val_samples = (
            load_samples(
                val_entries,
                cfg.preprocessing,
                cfg.in_channels,
                on_loaded=lambda _: progress.advance(task),
            )
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

    images_per_step = max(1, math.ceil(train_cfg.batch_size / train_cfg.samples_per_image))
    shard = math.ceil(len(train_samples) / dist_info.world_size)
    steps_per_epoch = train_cfg.steps_per_epoch or max(1, math.ceil(shard / images_per_step))
    optimizer = torch.optim.SGD(
        network.parameters(),
        lr=train_cfg.learning_rate,
        momentum=train_cfg.momentum,
        weight_decay=train_cfg.weight_decay,
        nesterov=train_cfg.nesterov and train_cfg.momentum > 0,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(train_cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, global_step = 0, 0
    best_metric, best_epoch = -math.inf, 0
    best_val: dict[str, float] = {}
    history: list[dict[str, float]] = []
    run_id: str | None = None
    if resume:
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
        best_metric = float(state.get("best_metric", -math.inf))
        best_epoch = int(state.get("best_epoch", 0))
        best_val = dict(state.get("best_val", {}))
        history = list(state.get("history", []))
        run_id = state.get("run_id")
        logger.info("resuming %s after epoch %d (step %d)", last_path, start_epoch, global_step)

    client = None
    uri = tracking_uri or registry.default_tracking_uri()
    if main:
        client = registry.get_client(uri)
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
        else:
            experiment_id = registry.get_or_create_experiment(experiment or cfg.name, uri)
            commit, dirty = git_commit()
            tags = {
                "oncotriage.dataset_fingerprint": fingerprint,
                "oncotriage.datalist": str(datalist.resolve()),
                "oncotriage.config": str(config_path or ""),
                "oncotriage.git_dirty": str(dirty).lower(),
                "oncotriage.synthetic_data": str(is_synthetic(datalist)).lower(),
            }
            if commit:
                tags["mlflow.source.git.commit"] = commit
            run = client.create_run(experiment_id, run_name=run_name, tags=tags)
            run_id = run.info.run_id
            params = flatten_params(cfg.model_dump(mode="json"))
            params["training.resolved"] = train_cfg.model_dump_json()
            params.update(
                {
                    "run.seed": str(seed),
                    "run.datalist": str(datalist),
                    "run.overrides": " ".join(overrides) or "-",
                    "run.device": dev.type,
                    "run.world_size": str(dist_info.world_size),
                    "run.amp": str(amp).lower(),
                    "run.steps_per_epoch": str(steps_per_epoch),
                    "run.train_images": str(len(train_samples)),
                    "run.val_images": str(len(val_entries)),
                    "run.dataset_fingerprint": fingerprint,
                    "run.torch": torch.__version__,
                }
            )
            log_params(client, run_id, params)
            out_dir.mkdir(parents=True, exist_ok=True)
            resolved = out_dir / "config.yaml"
            resolved.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            client.log_artifact(run_id, str(resolved), artifact_path="config")

    transform = build_train_transform(
        cfg.spatial_dims,
        train_cfg.patch_size or [],
        train_cfg.augmentation,
        samples_per_image=train_cfg.samples_per_image,
        pos=train_cfg.pos,
        neg=train_cfg.neg,
    )
    dataset = AugmentedDetectionDataset(train_samples, transform, seed=seed * 7919 + dist_info.rank)
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
    train_net: torch.nn.Module = network
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        # a batch without lesions leaves the box-regression head out of the loss
        train_net = DistributedDataParallel(
            network,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=True,
        )

    def checkpoint_state(epoch: int, interrupted: bool = False) -> dict[str, Any]:
        return {
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if amp else None,
            "epoch": epoch,
            "global_step": global_step,
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            "best_val": best_val,
            "history": history,
            "run_id": run_id,
            "seed": seed,
            "config": cfg.model_dump(mode="json"),
            "dataset_fingerprint": fingerprint,
            "interrupted": interrupted,
        }

    batches = _cycle(loader, sampler)
    total_steps = train_cfg.epochs * steps_per_epoch
    epoch = start_epoch
    best_froc = None
    log_every = max(1, steps_per_epoch // 4)
    started = time.perf_counter()
    try:
        with _progress(show_progress and main) as progress:
            task = progress.add_task(
                "training", total=total_steps, completed=start_epoch * steps_per_epoch, loss="-"
            )
            for epoch in range(start_epoch, train_cfg.epochs):
                tic = time.perf_counter()
                dataset.reseed(seed * 1_000_003 + epoch * 1009 + dist_info.rank)
                detector.network = train_net
                detector.train()
                sums = np.zeros(3)
                for _ in range(steps_per_epoch):
                    crops = next(batches)
                    images = [c["image"].to(dev, non_blocking=True) for c in crops]
                    targets = [
                        {"box": c["box"].to(dev), "label": c["label"].to(dev)} for c in crops
                    ]
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device_type=dev.type, enabled=amp):
                        losses = detector(images, targets)
                        cls_loss = losses[detector.cls_key]
                        box_loss = losses[detector.box_reg_key]
                        loss = det_cfg.cls_loss_weight * cls_loss + box_loss
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    global_step += 1
                    sums += [loss.item(), cls_loss.item(), box_loss.item()]
                    in_epoch = global_step - epoch * steps_per_epoch
                    running = f"{sums[0] / in_epoch:.4f}"
                    progress.update(
                        task,
                        advance=1,
                        description=f"epoch {epoch + 1}/{train_cfg.epochs}",
                        loss=running,
                    )
                    if main and not progress.console.is_terminal and in_epoch % log_every == 0:
                        # no live bar in a log file (nohup, CI): a line every quarter epoch
                        done = global_step - start_epoch * steps_per_epoch
                        rate = (time.perf_counter() - started) / max(done, 1)
                        logger.info(
                            "epoch %d step %d/%d loss %.4f, ETA %.0f min",
                            epoch + 1,
                            in_epoch,
                            steps_per_epoch,
                            float(running),
                            rate * (total_steps - global_step) / 60,
                        )
                detector.network = network
                means = sums / steps_per_epoch
                if dist_info.world_size > 1:
                    import torch.distributed as dist

                    reduced = torch.tensor(means, device=dev)
                    dist.all_reduce(reduced)
                    means = (reduced / dist_info.world_size).cpu().numpy()
                record: dict[str, float] = {
                    "epoch": float(epoch + 1),
                    "train_loss": float(means[0]),
                    "train_cls_loss": float(means[1]),
                    "train_box_reg_loss": float(means[2]),
                    "lr": float(optimizer.param_groups[0]["lr"]),
                    "epoch_time_s": time.perf_counter() - tic,
                }
                last_epoch = epoch + 1 == train_cfg.epochs
                if main:
                    if val_samples and ((epoch + 1) % train_cfg.val_interval == 0 or last_epoch):
                        result = validate(detector, val_samples, dev, cfg.num_classes)
                        val = finite_metrics(result.as_dict())
                        record.update({f"val_{k}": v for k, v in val.items()})
                        value = _metric_value(result.as_dict(), train_cfg.val_metric)
                        if value > best_metric or best_epoch == 0:
                            best_metric, best_epoch, best_val = value, epoch + 1, val
                            best_froc = result.froc
                            _save_checkpoint(best_path, checkpoint_state(epoch + 1))
                        logger.info(
                            "epoch %d: loss %.4f, val %s %.4f (best %.4f at epoch %d)",
                            epoch + 1,
                            record["train_loss"],
                            train_cfg.val_metric,
                            value,
                            best_metric,
                            best_epoch,
                        )
                    else:
                        logger.info("epoch %d: loss %.4f", epoch + 1, record["train_loss"])
                    history.append(record)
                    assert client is not None and run_id is not None
                    log_metrics(client, run_id, record, step=epoch + 1)
                    if not val_samples:
                        best_epoch = epoch + 1
                        _save_checkpoint(best_path, checkpoint_state(epoch + 1))
                    if (epoch + 1) % train_cfg.checkpoint_interval == 0 or last_epoch:
                        _save_checkpoint(last_path, checkpoint_state(epoch + 1))
                if dist_info.world_size > 1:
                    import torch.distributed as dist

                    dist.barrier()
    except KeyboardInterrupt:
        detector.network = network
        if main:
            _save_checkpoint(last_path, checkpoint_state(epoch, interrupted=True))
            if client is not None and run_id is not None:
                client.set_tag(run_id, "oncotriage.interrupted_at_epoch", str(epoch + 1))
                client.set_terminated(run_id, status="KILLED")
        raise TrainingInterrupted(last_path, run_id) from None

    bundle_dir: Path | None = None
    if main:
        assert client is not None and run_id is not None
        bundle_dir = _finish_run(
            client,
            run_id,
            cfg,
            out_dir,
            history=history,
            best_path=best_path,
            best_froc=best_froc,
            best_val=best_val,
            val_metric=train_cfg.val_metric,
            fingerprint=fingerprint,
            synthetic=is_synthetic(datalist),
            export=export,
            seed=seed,
        )
    return TrainResult(
        run_id=run_id if main else None,
        out_dir=out_dir,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        bundle_dir=bundle_dir,
        best_metric=best_metric if math.isfinite(best_metric) else None,
        best_epoch=best_epoch,
        epochs_completed=train_cfg.epochs,
        history=history,
        dataset_fingerprint=fingerprint,
        val_metrics=best_val,
    )


def _finish_run(
    client: Any,
    run_id: str,
    cfg: DetectorConfig,
    out_dir: Path,
    *,
    history: list[dict[str, float]],
    best_path: Path,
    best_froc: Any,
    best_val: dict[str, float],
    val_metric: str,
    fingerprint: str,
    synthetic: bool,
    export: bool,
    seed: int,
) -> Path | None:
    """Plots, best checkpoint and ONNX bundle as artifacts; mark the run finished."""
    from oncotriage.models.build import load_network_weights
    from oncotriage.training.plots import plot_froc, plot_losses

    plots = out_dir / "plots"
    plot_losses(history, plots / "loss_curve.png", val_key=f"val_{val_metric}")
    if best_froc is not None:
        plot_froc(best_froc, plots / "val_froc.png", title="validation FROC (best epoch)")
    client.log_artifacts(run_id, str(plots), artifact_path="plots")
    client.log_artifact(run_id, str(best_path), artifact_path="checkpoints")
    if best_val:
        log_metrics(client, run_id, {f"best_val_{k}": v for k, v in best_val.items()})
    bundle_dir: Path | None = None
    if export:
        from oncotriage.models.export import TRAINED_INTENDED_USE, export_onnx

        network = load_network_weights(build_network(cfg), best_path)
        bundle_dir = out_dir / "bundle"
        export_onnx(
            network,
            cfg,
            bundle_dir,
            metrics={f"val_{k}": v for k, v in best_val.items()},
            dataset_fingerprint=fingerprint,
            training_run_id=run_id,
            intended_use=SYNTHETIC_INTENDED_USE if synthetic else TRAINED_INTENDED_USE,
            seed=seed,
        )
        client.log_artifacts(run_id, str(bundle_dir), artifact_path="bundle")
    client.set_terminated(run_id, status="FINISHED")
    logger.info("MLflow run %s finished; bundle: runs:/%s/bundle", run_id, run_id)
    return bundle_dir
