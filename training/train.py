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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncotriage.models.build import build_network
from oncotriage.models.config import DetectorConfig
from oncotriage.training.components import (
    Dist,
    LoopState,
    TrainingComponents,
    build_components,
    cycle_batches,
    load_splits,
    make_loader,
    progress_bar,
    save_checkpoint,
    seed_everything,
    setup_distributed,
)
from oncotriage.training.config import TrainingConfig, training_config
from oncotriage.training.data import (
    SYNTHETIC_INTENDED_USE,
    dataset_fingerprint,
    is_synthetic,
)
from oncotriage.training.tracking import finite_metrics, log_metrics, start_training_run
from oncotriage.training.validation import validate

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
    run = _prepare_run(
        cfg,
        datalist,
        out_dir=out_dir,
        seed=seed,
        resume=resume,
        device=device,
        show_progress=show_progress,
    )
    client = (
        _open_mlflow_run(
            run,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            config_path=config_path,
            overrides=overrides,
        )
        if run.main
        else None
    )
    dataset, loop = _build_loop(run)
    _run_epochs(run, loop, dataset, client, show_progress=show_progress)
    return _finish(run, loop, client, export=export)


@dataclass
class _Run:
    """One training run's set-up: config, data splits, components, where it saves."""

    cfg: DetectorConfig
    train_cfg: TrainingConfig
    datalist: Path
    out_dir: Path
    seed: int
    dist_info: Dist
    dev: torch.device
    fingerprint: str
    train_samples: Sequence[Any]
    val_samples: Sequence[Any]
    num_val: int
    images_per_step: int
    steps_per_epoch: int
    parts: TrainingComponents
    state: LoopState

    @property
    def main(self) -> bool:
        return self.dist_info.is_main

    @property
    def last_path(self) -> Path:
        return self.out_dir / "checkpoints" / LAST_CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.out_dir / "checkpoints" / BEST_CHECKPOINT

    def save(self, path: Path, epoch: int, *, interrupted: bool = False) -> Path:
        """Save the run's state after ``epoch`` completed epochs to ``path``."""
        return save_checkpoint(
            path,
            self.parts.checkpoint(
                self.state,
                epoch=epoch,
                cfg=self.cfg,
                seed=self.seed,
                fingerprint=self.fingerprint,
                interrupted=interrupted,
            ),
        )


def _prepare_run(
    cfg: DetectorConfig,
    datalist: Path,
    *,
    out_dir: Path,
    seed: int | None,
    resume: bool,
    device: str | None,
    show_progress: bool,
) -> _Run:
    """Check the output folder, seed, load the splits, build the components and restore
    ``last.pt`` when resuming."""
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
    dist_info, dev = setup_distributed(device)
    seed_everything(seed + dist_info.rank)
    main = dist_info.is_main

    fingerprint = dataset_fingerprint(datalist) if main else ""
    train_samples, val_samples, num_val = load_splits(
        cfg, datalist, main=main, show_progress=show_progress
    )
    images_per_step = max(1, math.ceil(train_cfg.batch_size / train_cfg.samples_per_image))
    shard = math.ceil(len(train_samples) / dist_info.world_size)
    steps_per_epoch = train_cfg.steps_per_epoch or max(1, math.ceil(shard / images_per_step))
    parts = build_components(cfg, train_cfg, dev, steps_per_epoch)
    state = parts.restore(last_path) if resume else LoopState()
    if state.best_epoch and not best_path.is_file():
        # Ctrl-C between picking a new best and writing it: the checkpoint names a best
        # epoch whose weights were never saved. Forget it, so validation picks one again.
        logger.warning(
            "%s names epoch %d as best, but %s is missing: the best is chosen again",
            last_path,
            state.best_epoch,
            best_path,
        )
        state.best_metric, state.best_epoch, state.best_val = -math.inf, 0, {}
    return _Run(
        cfg=cfg,
        train_cfg=train_cfg,
        datalist=datalist,
        out_dir=out_dir,
        seed=seed,
        dist_info=dist_info,
        dev=dev,
        fingerprint=fingerprint,
        train_samples=train_samples,
        val_samples=val_samples,
        num_val=num_val,
        images_per_step=images_per_step,
        steps_per_epoch=steps_per_epoch,
        parts=parts,
        state=state,
    )


def _open_mlflow_run(
    run: _Run,
    *,
    tracking_uri: str | None,
    experiment: str | None,
    run_name: str | None,
    config_path: Path | None,
    overrides: Sequence[str],
) -> Any:
    """Main rank: the MLflow client, with the run started (or, resuming, marked running)."""
    from oncotriage.models import registry

    state = run.state
    client = registry.get_client(tracking_uri or registry.default_tracking_uri())
    if state.run_id is not None:
        client.update_run(state.run_id, status="RUNNING")
        return client
    state.run_id = start_training_run(
        client,
        registry.get_or_create_experiment(experiment or run.cfg.name, tracking_uri),
        run.cfg,
        run.train_cfg,
        out_dir=run.out_dir,
        run_name=run_name,
        datalist=run.datalist,
        fingerprint=run.fingerprint,
        config_path=config_path,
        extra_params={
            "run.seed": str(run.seed),
            "run.datalist": str(run.datalist),
            "run.overrides": " ".join(overrides) or "-",
            "run.device": run.dev.type,
            "run.world_size": str(run.dist_info.world_size),
            "run.amp": str(run.parts.amp).lower(),
            "run.steps_per_epoch": str(run.steps_per_epoch),
            "run.train_images": str(len(run.train_samples)),
            "run.val_images": str(run.num_val),
            "run.dataset_fingerprint": run.fingerprint,
            "run.torch": torch.__version__,
        },
    )
    return client


def _build_loop(run: _Run) -> tuple[Any, _Loop]:
    """The training data loader and, with several processes, the DDP-wrapped network."""
    start_epoch = run.state.epoch
    dataset, sampler, loader = make_loader(
        run.train_samples,
        run.cfg,
        run.train_cfg,
        seed=run.seed,
        dist_info=run.dist_info,
        start_epoch=start_epoch,
        images_per_step=run.images_per_step,
    )
    network = run.parts.network
    train_net: torch.nn.Module = network
    if run.dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        # a batch without lesions leaves the box-regression head out of the loss
        train_net = DistributedDataParallel(
            network,
            device_ids=[run.dev.index] if run.dev.type == "cuda" else None,
            find_unused_parameters=True,
        )
    loop = _Loop(
        parts=run.parts,
        train_net=train_net,
        train_cfg=run.train_cfg,
        dev=run.dev,
        batches=cycle_batches(loader, sampler),
        state=run.state,
        dist_info=run.dist_info,
        steps_per_epoch=run.steps_per_epoch,
        start_epoch=start_epoch,
        started=time.perf_counter(),
    )
    return dataset, loop


def _run_epochs(run: _Run, loop: _Loop, dataset: Any, client: Any, *, show_progress: bool) -> None:
    """Train the remaining epochs; on Ctrl-C save ``last.pt`` and raise
    :class:`TrainingInterrupted`."""
    state, dist_info, train_cfg = run.state, run.dist_info, run.train_cfg
    try:
        with progress_bar(show_progress and run.main) as progress:
            task = progress.add_task(
                "training",
                total=loop.total_steps,
                completed=loop.start_epoch * run.steps_per_epoch,
                loss="-",
            )
            for epoch in range(loop.start_epoch, train_cfg.epochs):
                dataset.reseed(run.seed * 1_000_003 + epoch * 1009 + dist_info.rank)
                record = _train_epoch(loop, epoch, progress, task)
                if run.main:
                    assert client is not None and state.run_id is not None
                    _close_epoch(
                        loop,
                        epoch,
                        record,
                        val_samples=run.val_samples,
                        num_classes=run.cfg.num_classes,
                        save_best=lambda done: run.save(run.best_path, done),
                        save_last=lambda done: run.save(run.last_path, done),
                        client=client,
                    )
                state.epoch = epoch + 1
                if dist_info.world_size > 1:
                    import torch.distributed as dist

                    dist.barrier()
    except KeyboardInterrupt:
        run.parts.detector.network = run.parts.network
        if run.main:
            # completed epochs only: --resume redoes the interrupted one
            run.save(run.last_path, state.epoch, interrupted=True)
            if client is not None and state.run_id is not None:
                client.set_tag(
                    state.run_id, "oncotriage.interrupted_at_epoch", str(state.epoch + 1)
                )
                client.set_terminated(state.run_id, status="KILLED")
        raise TrainingInterrupted(run.last_path, state.run_id) from None


def _finish(run: _Run, loop: _Loop, client: Any, *, export: bool) -> TrainResult:
    """Main rank: make sure a best checkpoint exists, log the artifacts, export the bundle."""
    state, best_path = run.state, run.best_path
    bundle_dir: Path | None = None
    if run.main and not best_path.is_file():
        # Every completed run ends with a best checkpoint; should none have been written (no
        # validation ran in the epochs this process trained), the final weights are it.
        logger.warning(
            "no validation chose a best checkpoint in this run; the final weights (epoch %d) "
            "are saved as %s",
            state.epoch,
            best_path,
        )
        state.best_epoch = state.epoch
        run.save(best_path, state.epoch)
    if run.main:
        assert client is not None and state.run_id is not None
        bundle_dir = _finish_run(
            client,
            state.run_id,
            run.cfg,
            run.out_dir,
            history=state.history,
            best_path=best_path,
            best_froc=loop.best_froc,
            best_val=state.best_val,
            val_metric=run.train_cfg.val_metric,
            fingerprint=run.fingerprint,
            synthetic=is_synthetic(run.datalist),
            export=export,
            seed=run.seed,
        )
    return TrainResult(
        run_id=state.run_id if run.main else None,
        out_dir=run.out_dir,
        best_checkpoint=best_path,
        last_checkpoint=run.last_path,
        bundle_dir=bundle_dir,
        best_metric=state.best_metric if math.isfinite(state.best_metric) else None,
        best_epoch=state.best_epoch,
        epochs_completed=run.train_cfg.epochs,
        history=state.history,
        dataset_fingerprint=run.fingerprint,
        val_metrics=state.best_val,
    )


@dataclass
class _Loop:
    """What the epochs and steps of one training run share."""

    parts: TrainingComponents
    train_net: torch.nn.Module
    train_cfg: TrainingConfig
    dev: torch.device
    batches: Iterator[list[dict[str, torch.Tensor]]]
    state: LoopState
    dist_info: Dist
    steps_per_epoch: int
    start_epoch: int
    started: float
    best_froc: Any = None

    @property
    def total_steps(self) -> int:
        return self.train_cfg.epochs * self.steps_per_epoch

    @property
    def log_every(self) -> int:
        return max(1, self.steps_per_epoch // 4)


def _train_step(loop: _Loop, crops: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """One optimiser step on a batch of crops; returns (loss, cls loss, box loss)."""
    parts, dev = loop.parts, loop.dev
    detector = parts.detector
    images = [c["image"].to(dev, non_blocking=True) for c in crops]
    targets = [{"box": c["box"].to(dev), "label": c["label"].to(dev)} for c in crops]
    parts.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=dev.type, enabled=parts.amp):
        losses = detector(images, targets)
        cls_loss = losses[detector.cls_key]
        box_loss = losses[detector.box_reg_key]
        loss = loop.train_cfg.detector.cls_loss_weight * cls_loss + box_loss
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    loop.state.global_step += 1
    return np.array([loss.item(), cls_loss.item(), box_loss.item()])


def _train_epoch(loop: _Loop, epoch: int, progress: Any, task: Any) -> dict[str, float]:
    """The steps of one epoch; returns its record (mean losses over all ranks, lr, time)."""
    tic = time.perf_counter()
    parts, state, train_cfg = loop.parts, loop.state, loop.train_cfg
    detector = parts.detector
    detector.network = loop.train_net
    detector.train()
    sums = np.zeros(3)
    in_epoch = 0
    for _ in range(loop.steps_per_epoch):
        sums += _train_step(loop, next(loop.batches))
        in_epoch += 1
        running = f"{sums[0] / in_epoch:.4f}"
        progress.update(
            task,
            advance=1,
            description=f"epoch {epoch + 1}/{train_cfg.epochs}",
            loss=running,
        )
        if (
            loop.dist_info.is_main
            and not progress.console.is_terminal
            and (in_epoch % loop.log_every == 0)
        ):
            # no live bar in a log file (nohup, CI): a line every quarter epoch
            done = state.global_step - loop.start_epoch * loop.steps_per_epoch
            rate = (time.perf_counter() - loop.started) / max(done, 1)
            logger.info(
                "epoch %d step %d/%d loss %.4f, ETA %.0f min",
                epoch + 1,
                in_epoch,
                loop.steps_per_epoch,
                float(running),
                rate * (loop.total_steps - state.global_step) / 60,
            )
    detector.network = parts.network
    means = sums / loop.steps_per_epoch
    if loop.dist_info.world_size > 1:
        import torch.distributed as dist

        reduced = torch.tensor(means, device=loop.dev)
        dist.all_reduce(reduced)
        means = (reduced / loop.dist_info.world_size).cpu().numpy()
    return {
        "epoch": float(epoch + 1),
        "train_loss": float(means[0]),
        "train_cls_loss": float(means[1]),
        "train_box_reg_loss": float(means[2]),
        "lr": float(parts.optimizer.param_groups[0]["lr"]),
        "epoch_time_s": time.perf_counter() - tic,
    }


def _close_epoch(
    loop: _Loop,
    epoch: int,
    record: dict[str, float],
    *,
    val_samples: Sequence[Any],
    num_classes: int,
    save_best: Callable[[int], Path],
    save_last: Callable[[int], Path],
    client: Any,
) -> None:
    """Main rank, after an epoch: validate when due, keep the best, log, checkpoint."""
    state, train_cfg = loop.state, loop.train_cfg
    last_epoch = epoch + 1 == train_cfg.epochs
    if val_samples and ((epoch + 1) % train_cfg.val_interval == 0 or last_epoch):
        result = validate(loop.parts.detector, val_samples, loop.dev, num_classes)
        val = finite_metrics(result.as_dict())
        record.update({f"val_{k}": v for k, v in val.items()})
        value = _metric_value(result.as_dict(), train_cfg.val_metric)
        if value > state.best_metric or state.best_epoch == 0:
            state.best_metric, state.best_epoch, state.best_val = value, epoch + 1, val
            loop.best_froc = result.froc
            save_best(epoch + 1)
        logger.info(
            "epoch %d: loss %.4f, val %s %.4f (best %.4f at epoch %d)",
            epoch + 1,
            record["train_loss"],
            train_cfg.val_metric,
            value,
            state.best_metric,
            state.best_epoch,
        )
    else:
        logger.info("epoch %d: loss %.4f", epoch + 1, record["train_loss"])
    state.history.append(record)
    state.epoch = epoch + 1  # from here on this epoch counts as done
    assert state.run_id is not None
    log_metrics(client, state.run_id, record, step=epoch + 1)
    if not val_samples:
        state.best_epoch = epoch + 1
        save_best(epoch + 1)
    if (epoch + 1) % train_cfg.checkpoint_interval == 0 or last_epoch:
        save_last(epoch + 1)


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
