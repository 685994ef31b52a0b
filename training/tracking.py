"""MLflow bookkeeping shared by train, evaluate and calibrate: params, git commit, metrics."""

from __future__ import annotations

import logging
import math
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_MAX_PARAM_VALUE = 6000
_BATCH = 100  # MLflow accepts at most 100 params or 1000 metrics per log_batch call


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` (lists and ``None`` as text)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            text = "null" if value is None else str(value)
            out[name] = text[:_MAX_PARAM_VALUE]
    return out


def git_commit(path: Path | None = None) -> tuple[str | None, bool]:
    """Commit of the source tree holding ``path`` (default: this package) and whether it is dirty.

    Returns:
        ``(sha, dirty)``; ``(None, False)`` outside a git checkout.
    """
    where = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, False
    return sha or None, bool(status.strip())


def finite_metrics(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """Only the finite values (MLflow and the model spec refuse NaN), keys prefixed."""
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if v is not None and math.isfinite(float(v))
    }


def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Log many params in batches of 100."""
    from mlflow.entities import Param

    items = list(params.items())
    for start in range(0, len(items), _BATCH):
        chunk = [Param(k, v) for k, v in items[start : start + _BATCH]]
        client.log_batch(run_id, params=chunk)


def log_metrics(
    client: Any, run_id: str, metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log finite metrics at ``step`` in one batch."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = [Metric(k, v, now, step or 0) for k, v in finite_metrics(metrics).items()]
    for start in range(0, len(values), 1000):
        client.log_batch(run_id, metrics=values[start : start + 1000])


def start_training_run(
    client: Any,
    experiment_id: str,
    cfg: Any,
    train_cfg: Any,
    *,
    out_dir: Path,
    run_name: str | None,
    datalist: Path,
    fingerprint: str,
    config_path: Path | None,
    extra_params: Mapping[str, str],
) -> str:
    """Open the MLflow run of a training: tags, the resolved config as params and a file.

    Args:
        cfg: the ``DetectorConfig``; every key becomes a param (``backbone.depth``...).
        train_cfg: the parsed ``TrainingConfig`` (param ``training.resolved``, defaults filled).
        extra_params: run facts (seed, device, image counts...).

    Returns:
        the new run's id.
    """
    import yaml

    from oncotriage.training.data import is_synthetic

    commit, dirty = git_commit()
    tags = {
        "oncotriage.dataset_fingerprint": fingerprint,
        "oncotriage.datalist": str(Path(datalist).resolve()),
        "oncotriage.config": str(config_path or ""),
        "oncotriage.git_dirty": str(dirty).lower(),
        "oncotriage.synthetic_data": str(is_synthetic(datalist)).lower(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = str(run.info.run_id)
    params = flatten_params(cfg.model_dump(mode="json"))
    params["training.resolved"] = train_cfg.model_dump_json()
    params.update(extra_params)
    log_params(client, run_id, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = out_dir / "config.yaml"
    resolved.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    client.log_artifact(run_id, str(resolved), artifact_path="config")
    return run_id
