"""PNG plots logged as MLflow artifacts: FROC curve and loss curves (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from oncotriage.training.metrics import FrocResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_froc(result: FrocResult, path: Path, title: str = "FROC") -> Path:
    """Sensitivity against false positives per image (log x axis), CPM points marked.

    Returns:
        ``path``, written as PNG.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    fps = result.curve_fp_per_image
    ax.step(fps, result.curve_sensitivity, where="post", label="FROC")
    ax.plot(result.fp_rates, result.sensitivities, "o", label=f"CPM = {result.cpm:.3f}")
    ax.set_xscale("log", base=2)
    lo = min(result.fp_rates) / 2
    hi = max(max(result.fp_rates) * 1.5, float(fps.max()) if len(fps) else 0.0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title(
        f"{title} ({result.num_lesions} lesions, {result.num_images} images, "
        f"IoU >= {result.iou_threshold:g})"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_losses(
    history: Sequence[Mapping[str, float]],
    path: Path,
    keys: Sequence[str] = ("train_loss", "train_cls_loss", "train_box_reg_loss"),
    val_key: str | None = None,
) -> Path:
    """Training losses per epoch, and a validation metric on a second axis if given.

    Args:
        history: one mapping per epoch with ``epoch`` and the keys to plot.
        path: PNG to write.
        keys: loss names to draw.
        val_key: a validation metric to draw on the right axis (epochs that have it).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    epochs = [int(h["epoch"]) for h in history]
    for key in keys:
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if val_key:
        points = [(int(h["epoch"]), h[val_key]) for h in history if val_key in h]
        if points:
            right = ax.twinx()
            right.plot(*zip(*points, strict=True), "o--", color="tab:red", label=val_key)
            right.set_ylabel(val_key)
            right.set_ylim(0, 1.02)
            more_lines, more_labels = right.get_legend_handles_labels()
            lines, labels = lines + more_lines, labels + more_labels
    if lines:
        ax.legend(lines, labels, loc="upper right")
    ax.set_title("training")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
