"""ML engineer commands: train, evaluate, calibrate, register, promote and models.

Each command is a thin layer over a stage module (``train.py``, ``evaluate.py``,
``calibrate.py``, :mod:`oncotriage.models.registry`); torch, MONAI and MLflow are imported
inside the command functions only, so ``oncotriage --help`` stays fast and ``serve`` never
loads them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oncotriage.progress import progress_bar

if TYPE_CHECKING:
    from oncotriage.training.subgroups import SubgroupRow

TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI or sqlite in the data dir)."
MODEL_HELP = (
    "models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/bundle, or a bundle folder "
    "(model.onnx + model_spec.json)."
)

models_app = typer.Typer(
    name="models",
    help="Registered models: versions, aliases, metrics and thresholds.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def train_command(
    config: Annotated[
        Path,
        typer.Option(help="Detector/training config, e.g. configs/train_cxr2d_demo.yaml."),
    ],
    datalist: Annotated[
        Path | None,
        typer.Option(help="Detection datalist JSON (default: training.datalist of the config)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: <data dir>/training/<config name>)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Config override key.sub=value (YAML value); repeatable."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (default: training.seed, 0).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from <out>/checkpoints/last.pt.")
    ] = False,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: the config's name).")
    ] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if any).")] = None,
    export: Annotated[
        bool, typer.Option(help="Export the best weights to <out>/bundle (ONNX).")
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a RetinaNet detector (MONAI) and track the run in MLflow.

    Several GPUs: torchrun --nproc_per_node N $(which oncotriage) train ...
    """
    from oncotriage.models.registry import data_dir
    from oncotriage.training.config import load_training_config, training_config
    from oncotriage.training.train import TrainingInterrupted, train

    overrides = list(set_ or [])
    try:
        cfg = load_training_config(config, overrides)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(f"config: {exc}") from exc
    source = datalist or (
        Path(str(training_config(cfg).datalist)) if training_config(cfg).datalist else None
    )
    if source is None:
        raise _fail("give --datalist (or training.datalist in the config)")
    out_dir = out or data_dir() / "training" / cfg.name
    try:
        result = train(
            cfg,
            source,
            out_dir=out_dir,
            seed=seed,
            resume=resume,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            config_path=config,
            overrides=overrides,
            export=export,
            show_progress=progress,
            device=device,
        )
    except TrainingInterrupted as exc:
        typer.secho(
            f"interrupted: checkpoint saved to {exc.checkpoint}; continue with the same command "
            "and --resume",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(130) from exc
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise _fail(f"train: {exc}") from exc
    if result.run_id is None:  # not rank 0
        return
    typer.echo(f"run:        {result.run_id}")
    typer.echo(f"best:       {result.best_checkpoint} (epoch {result.best_epoch})")
    if result.best_metric is not None:
        typer.echo(f"best val:   {result.best_metric:.4f}")
    if result.bundle_dir is not None:
        typer.echo(f"bundle:     {result.bundle_dir}  (runs:/{result.run_id}/bundle)")
    typer.echo(f"dataset:    {result.dataset_fingerprint}")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:  # NaN
        return "n/a"
    return f"{value:.{digits}f}"


def evaluate_command(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    datalist: Annotated[Path, typer.Option(help="Detection datalist JSON.")],
    split: Annotated[str, typer.Option(help="Datalist split to evaluate.")] = "test",
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
    log: Annotated[bool, typer.Option(help="Log an MLflow evaluation run.")] = True,
    record: Annotated[
        bool,
        typer.Option(help="Store the metrics with the model (version tags or model_spec.json)."),
    ] = True,
    iou: Annotated[float, typer.Option(help="IoU a detection needs to hit a lesion.")] = 0.1,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Break results at the operating threshold down by subgroup (repeatable): "
            "size, type, margin (per nodule); vendor, dose, view, portable, photometric, sex "
            "(radiograph studies); vendor, ctdi, kernel, thickness (CT studies); shift (studies "
            "of a merged datalist, by their source's generator shift). Distractors, "
            "when the datalist has them, come with any of them."
        ),
    ] = None,
) -> None:
    """FROC, CPM, mAP/mAR and study-level AUC of a model on a datalist split (ONNX pipeline)."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.models.registry import RegistryError
    from oncotriage.training.evaluate import evaluate_model

    with progress_bar(transient=True) as progress:
        task = progress.add_task(f"evaluating on {split}", total=None)
        try:
            report = evaluate_model(
                model,
                datalist,
                split=split,
                tracking_uri=tracking_uri,
                log_to_mlflow=log,
                record=record,
                iou_threshold=iou,
                intra_op_threads=threads,
                on_start=lambda n: progress.update(task, total=n),
                on_image=lambda _: progress.advance(task),
                by=by or (),
            )
        except (RegistryError, ValueError, FileNotFoundError, UnsupportedImageError) as exc:
            raise _fail(f"evaluate: {exc}") from exc
    froc = report.metrics.froc
    coco = report.metrics.coco
    table = Table(title=f"{report.model} on {split} ({froc.num_images} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for rate, sens in zip(froc.fp_rates, froc.sensitivities, strict=True):
        table.add_row(f"sensitivity at {rate:g} FP/image", _fmt(sens))
    table.add_row("CPM (mean of the above)", _fmt(froc.cpm), style="bold")
    for iou_value, ap in coco.ap.items():
        table.add_row(f"AP at IoU {iou_value:g}", _fmt(ap))
        table.add_row(f"AR at IoU {iou_value:g}", _fmt(coco.ar[iou_value]))
    lo, hi, _ = coco.iou_range
    table.add_row(f"mAP IoU {lo:g}-{hi:g}", _fmt(coco.map_range))
    table.add_row(f"mAR IoU {lo:g}-{hi:g}", _fmt(coco.mar_range))
    table.add_row(
        f"study ROC AUC ({report.metrics.num_positive_studies}/{report.metrics.num_studies} "
        "positive)",
        _fmt(report.metrics.study_auc),
    )
    for name, point in (("operating", report.operating), ("urgent", report.urgent)):
        if point is not None:
            table.add_row(f"{name} threshold", _fmt(point.threshold, 4))
            table.add_row("  study sensitivity", str(point.sensitivity))
            table.add_row("  study specificity", str(point.specificity))
    Console().print(table)
    _print_subgroups(report.subgroups)
    if report.run_id:
        typer.echo(f"MLflow run: {report.run_id}")
    if json_out is not None:
        out: dict[str, object] = dict(report.flat_metrics())
        if report.subgroups:
            out["subgroups"] = {
                key: [dataclasses.asdict(row) for row in rows]
                for key, rows in report.subgroups.items()
            }
        json_out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def _print_subgroups(subgroups: dict[str, list[SubgroupRow]]) -> None:
    from rich.console import Console
    from rich.table import Table

    for key, rows in subgroups.items():
        found = "distractors hit" if key == "distractor" else "nodules found"
        table = Table(title=f"by {key}, at the operating threshold")
        for column in (key, found, "study sensitivity", "study specificity"):
            table.add_column(column, justify="left" if column == key else "right")
        for row in rows:
            table.add_row(
                row.value,
                *(
                    "-" if p is None or p.total == 0 else str(p)
                    for p in (row.nodules, row.sensitivity, row.specificity)
                ),
            )
        Console().print(table)


def calibrate_command(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    datalist: Annotated[Path, typer.Option(help="Detection datalist JSON.")],
    split: Annotated[str, typer.Option(help="Split to calibrate on.")] = "validation",
    target_sensitivity: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Study-level sensitivity of 'suspicious'.")
    ] = 0.95,
    target_specificity: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Study-level specificity of 'urgent'.")
    ] = 0.98,
    urgent_sensitivity: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Most share of positive validation studies the 'urgent' band may hold.",
        ),
    ] = 0.5,
    score_calibration: Annotated[
        str,
        typer.Option(help="Map of the study score fitted first: platt, temperature or none."),
    ] = "platt",
    out: Annotated[
        Path | None,
        typer.Option(help="Write a calibrated copy of the bundle here instead of in place."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
    log: Annotated[bool, typer.Option(help="Log an MLflow calibration run.")] = True,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads.")] = None,
) -> None:
    """Choose the operating and urgent thresholds on validation studies and store them."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.models.registry import RegistryError
    from oncotriage.training.calibrate import calibrate_model

    with progress_bar(transient=True) as progress:
        task = progress.add_task(f"scoring {split} studies", total=None)
        try:
            report = calibrate_model(
                model,
                datalist,
                split=split,
                target_sensitivity=target_sensitivity,
                target_specificity=target_specificity,
                urgent_sensitivity=urgent_sensitivity,
                score_calibration=None if score_calibration == "none" else score_calibration,
                tracking_uri=tracking_uri,
                out=out,
                log_to_mlflow=log,
                intra_op_threads=threads,
                on_start=lambda n: progress.update(task, total=n),
                on_image=lambda _: progress.advance(task),
            )
        except (RegistryError, ValueError, FileNotFoundError, UnsupportedImageError) as exc:
            raise _fail(f"calibrate: {exc}") from exc
    cal = report.calibration
    table = Table(
        title=f"{report.model} on {split}: {cal.num_positive_studies} positive, "
        f"{cal.num_studies - cal.num_positive_studies} negative studies (Wilson 95% CI)"
    )
    for column in ("priority", "threshold", "target", "sensitivity", "specificity"):
        table.add_column(column, justify="right" if column != "priority" else "left")
    table.add_row(
        "suspicious (operating)",
        _fmt(cal.operating.threshold, 4),
        f"sens >= {cal.target_sensitivity:g}",
        str(cal.operating.sensitivity),
        str(cal.operating.specificity),
    )
    table.add_row(
        "urgent",
        _fmt(cal.urgent.threshold, 4),
        f"spec >= {cal.target_specificity:g}, sens <= {cal.urgent_sensitivity:g}",
        str(cal.urgent.sensitivity),
        str(cal.urgent.specificity),
    )
    Console().print(table)
    if report.score_calibration is not None:
        sc = report.score_calibration
        typer.echo(
            f"score calibration: {sc.method} (slope {sc.slope:.4g}, intercept "
            f"{sc.intercept:.4g}); expected calibration error {cal.ece_raw:.3f} raw -> "
            f"{cal.ece:.3f} calibrated"
        )
    else:
        typer.echo(f"expected calibration error of the raw scores: {cal.ece_raw:.3f}")
    typer.echo(f"thresholds stored in {report.stored_in}")
    if report.run_id:
        typer.echo(f"MLflow run: {report.run_id} (calibration/reliability.png)")


def optimize_command(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    precision: Annotated[str, typer.Option(help="fp32, bf16 or int8 (int8: static quantization).")],
    datalist: Annotated[
        Path, typer.Option(help="Detection datalist JSON (train: int8 calibration; validation).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Variant bundle folder (default: <data dir>/models/NAME-vN-PRECISION)."),
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="Training images whose network inputs calibrate int8.")
    ] = 32,
    split: Annotated[str, typer.Option(help="Split both models are evaluated on.")] = "validation",
    max_cpm_drop: Annotated[float, typer.Option(min=0.0, help="Most CPM may drop.")] = 0.01,
    max_sensitivity_drop: Annotated[
        float,
        typer.Option(min=0.0, help="Most study sensitivity at the operating threshold may drop."),
    ] = 0.01,
    register: Annotated[
        bool, typer.Option(help="Register an accepted variant as a new version of the base.")
    ] = True,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
    threads: Annotated[int | None, typer.Option(help="Inference threads.")] = None,
) -> None:
    """Build a reduced-precision variant, evaluate it against its base through the serving
    pipeline, and register it only if it keeps the base's accuracy."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.models.precision import PRECISIONS, AccuracyGate
    from oncotriage.models.registry import RegistryError
    from oncotriage.training.optimize import PrecisionNotRunnableError, optimize_model

    if precision not in PRECISIONS:
        raise _fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    gate = AccuracyGate(max_cpm_drop=max_cpm_drop, max_sensitivity_drop=max_sensitivity_drop)
    with progress_bar(transient=True) as progress:
        task = progress.add_task(f"building the {precision} variant and evaluating", total=None)
        try:
            report = optimize_model(
                model,
                precision,
                datalist,
                out=out,
                calibration_images=calibration_images,
                evaluation_split=split,
                gate=gate,
                register=register,
                tracking_uri=tracking_uri,
                threads=threads,
                on_start=lambda n: progress.update(task, total=n),
                on_image=lambda _: progress.advance(task),
            )
        except PrecisionNotRunnableError as exc:
            raise _fail(f"optimize: {exc}", code=3) from exc
        except (RegistryError, ValueError, FileNotFoundError, UnsupportedImageError) as exc:
            raise _fail(f"optimize: {exc}") from exc
    variant = report.variant
    figures = variant.figures
    table = Table(title=f"{precision} variant of {report.base} on {variant.evaluated_on}")
    for column in ("metric", "base (ORT fp32)", f"{precision} (OpenVINO)", "drop", "allowed"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric, allowed in (
        ("cpm", gate.max_cpm_drop),
        ("operating_sensitivity", gate.max_sensitivity_drop),
    ):
        table.add_row(
            metric,
            _fmt(figures[f"base_{metric}"], 4),
            _fmt(figures[f"variant_{metric}"], 4),
            _fmt(figures[f"{metric}_drop"], 4),
            f"{allowed:g}",
        )
    for key in sorted(k for k in figures if k.startswith("base_froc_sens_at_")):
        metric = key.removeprefix("base_")
        table.add_row(
            metric, _fmt(figures[key], 4), _fmt(figures.get(f"variant_{metric}"), 4), "", ""
        )
    Console().print(table)
    typer.echo(f"method:   {variant.method}")
    if variant.calibration:
        typer.echo(f"calibrated on: {variant.calibration}")
    typer.echo(f"runtime:  {variant.runtime}")
    typer.echo(f"bundle:   {report.bundle_dir}")
    for note in report.notes:
        typer.echo(f"note:     {note}")
    if not variant.accepted:
        raise _fail(
            f"REFUSED: the {precision} variant loses too much accuracy: "
            + "; ".join(variant.refusals)
            + " (not registered)",
            code=1,
        )
    typer.echo(f"ACCEPTED: the {precision} variant keeps the base's accuracy")
    if report.registered_version is not None:
        name = report.base.split("/")[0]
        typer.echo(
            f"registered {name} version {report.registered_version} "
            f"(models:/{name}/{report.registered_version}), tagged with base {report.base}"
        )


def _parse_tags(tags: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _fail(f"--tag {item!r} must look like key=value")
        out[key] = value
    return out


def register_command(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    name: Annotated[str, typer.Option(help="Registered model name, e.g. oncotriage-cxr2d.")],
    alias: Annotated[
        str | None, typer.Option(help="Also point this alias (e.g. champion) at the new version.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Version description.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Extra version tag key=value; repeatable.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Register a model bundle as a new version of a named model in the MLflow registry."""
    from oncotriage.models import registry

    try:
        resolved = registry.resolve(model, tracking_uri=tracking_uri)
        run_id = resolved.run_id if registry.parse_model_uri(model).kind == "runs" else None
        version = registry.register_bundle(
            resolved.bundle_dir,
            name,
            tracking_uri=tracking_uri,
            run_id=run_id,
            tags=_parse_tags(tag),
            description=description,
        )
        if alias:
            registry.set_alias(name, alias, version, tracking_uri=tracking_uri)
    except registry.RegistryError as exc:
        raise _fail(f"register: {exc}") from exc
    spec = resolved.spec
    typer.echo(f"registered {name} version {version}  (models:/{name}/{version})")
    if alias:
        typer.echo(f"alias {alias} -> version {version}")
    calibrated = "calibrated" if spec.thresholds.calibrated else "NOT calibrated"
    typer.echo(
        f"thresholds: operating {spec.thresholds.operating:.4f}, urgent "
        f"{spec.thresholds.urgent:.4f} ({calibrated})"
    )
    typer.echo(f"intended use: {spec.intended_use}")


def _service_session(database_url: str | None) -> Any:
    """A session on the service's database (``--database-url``, else the service's settings),
    or None when there is none (a SQLite file never created, a schema never migrated)."""
    import sqlalchemy as sa

    from oncotriage.serving.db.session import Database
    from oncotriage.serving.settings import Settings

    url = database_url or Settings().database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    db = Database(url)
    try:
        if not sa.inspect(db.engine).has_table("monitor_records"):
            db.dispose()
            return None
    except sa.exc.OperationalError:
        db.dispose()
        return None
    return db


def promote_command(
    model: Annotated[str, typer.Option(help="Registered model name.")],
    version: Annotated[int, typer.Option(min=1, help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to point at it.")] = "champion",
    force: Annotated[
        bool, typer.Option("--force", help="Promote although the gate refuses (needs --reason).")
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(help="Why the gate is overridden (kept in the registry and audit)."),
    ] = None,
    target_sensitivity: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The gate's target sensitivity.")
    ] = 0.95,
    database_url: Annotated[
        str | None,
        typer.Option(help="The service's database (default: ONCOTRIAGE_DATABASE_URL / data dir)."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Point an alias (champion by default) at a version. Rolling back is promoting the old one.

    To champion, the promotion gate judges the version first (docs/monitoring.md): its
    thresholds must be calibrated for it, and on the reviewed and labelled live studies it
    scored since the last promotion its sensitivity must not fall below the target by more
    than its confidence interval allows. --force --reason overrides, audited.
    """
    import getpass
    from datetime import UTC, datetime

    from oncotriage.models import registry
    from oncotriage.serving.monitoring import gate

    if force and not (reason or "").strip():
        raise _fail("promote: --force needs --reason (it is kept in the registry and audit log)")
    now = datetime.now(UTC)
    db = None
    try:
        before = {
            m.name: m.aliases.get(alias) for m in registry.list_models(tracking_uri=tracking_uri)
        }.get(model)
        verdict: gate.GateResult | None = None
        if alias == "champion" and before != version:
            resolved = registry.resolve(f"models:/{model}/{version}", tracking_uri=tracking_uri)
            versions = registry.list_versions(model, tracking_uri=tracking_uri)
            promoted = [
                datetime.fromisoformat(v.tags[gate.PROMOTED_AT_TAG])
                for v in versions
                if gate.PROMOTED_AT_TAG in v.tags
            ]
            rollback = any(
                v.version == version and gate.PROMOTED_AT_TAG in v.tags for v in versions
            )
            db = _service_session(database_url)
            session = db.sessionmaker() if db is not None else None
            try:
                verdict = gate.evaluate_gate(
                    session,
                    model,
                    version,
                    resolved.spec.thresholds,
                    since=max(promoted, default=None),
                    require_evidence=before is not None and not rollback,
                    target=target_sensitivity,
                )
            finally:
                if session is not None:
                    session.close()
            typer.echo(f"promotion gate: {verdict.summary()}")
            if not verdict.allowed:
                for line in verdict.reasons:
                    typer.secho(f"  refused: {line}", fg=typer.colors.RED, err=True)
                if not force:
                    raise _fail(
                        f"promote: {model} version {version} refused by the promotion gate "
                        "(--force --reason REASON overrides, audited)",
                        code=1,
                    )
                registry.set_version_tags(
                    model,
                    version,
                    {
                        gate.FORCED_TAG: json.dumps(
                            {
                                "reason": reason,
                                "by": getpass.getuser(),
                                "at": now.isoformat(timespec="seconds"),
                                "refused": verdict.reasons,
                            }
                        )
                    },
                    tracking_uri=tracking_uri,
                )
        registry.set_alias(model, alias, version, tracking_uri=tracking_uri)
        if alias == "champion":
            registry.set_version_tags(
                model,
                version,
                {gate.PROMOTED_AT_TAG: now.isoformat()},
                tracking_uri=tracking_uri,
            )
            if db is None:
                db = _service_session(database_url)
            if db is not None:
                _audit_promotion(db, model, version, before, verdict, force, reason)
    except registry.RegistryError as exc:
        raise _fail(f"promote: {exc}") from exc
    finally:
        if db is not None:
            db.dispose()
    previous = f" (was version {before})" if before is not None else ""
    forced = " (FORCED past the promotion gate)" if verdict and not verdict.allowed else ""
    typer.echo(f"{model}@{alias} -> version {version}{previous}{forced}")


def _audit_promotion(
    db: Any,
    model: str,
    version: int,
    before: int | None,
    verdict: Any,
    force: bool,
    reason: str | None,
) -> None:
    """The promotion as an audit event of the service (who: the operating-system user)."""
    import getpass

    from oncotriage.serving.db.base import utcnow
    from oncotriage.serving.db.models import AuditEvent
    from oncotriage.serving.enums import AuditAction

    with db.session() as session:
        session.add(
            AuditEvent(
                at=utcnow(),
                actor_kind="system",
                actor_name=f"oncotriage promote ({getpass.getuser()})",
                action=AuditAction.MODEL_PROMOTED,
                detail={
                    "model": model,
                    "version": version,
                    "previous": before,
                    "forced": bool(verdict is not None and not verdict.allowed and force),
                    "reason": reason,
                    "gate": verdict.summary() if verdict is not None else None,
                    "refused": verdict.reasons if verdict is not None else [],
                },
            )
        )


@models_app.command("compare")
def models_compare_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    database_url: Annotated[
        str | None,
        typer.Option(help="The service's database (default: ONCOTRIAGE_DATABASE_URL / data dir)."),
    ] = None,
) -> None:
    """Champion against challenger on the same live studies: agreement, flag rates, and
    sensitivity and PPV of flags against specialists' decisions and outcomes (Wilson 95%)."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.serving.monitoring.compare import compare

    db = _service_session(database_url)
    if db is None:
        raise _fail("models compare: no service database with monitoring records found")
    try:
        with db.session() as session:
            result = compare(session, name)
    finally:
        db.dispose()
    if not result["pairs"]:
        typer.echo(f"no study of {name} was scored by a challenger yet")
        return

    def ci(interval: dict[str, Any]) -> str:
        if not interval["n"]:
            return "n/a"
        return (
            f"{interval['k']}/{interval['n']} {interval['value']:.2f} "
            f"({interval['low']:.2f}-{interval['high']:.2f})"
        )

    console = Console(width=160)
    for pair in result["pairs"]:
        typer.echo(
            f"{name}: champion v{pair['champion_version']} vs challenger "
            f"v{pair['challenger_version']} on {pair['studies']} studies "
            f"({pair['labelled_positives']} labelled positive)"
        )
        table = Table()
        table.add_column("")
        table.add_column(f"champion v{pair['champion_version']}", justify="right")
        table.add_column(f"challenger v{pair['challenger_version']}", justify="right")
        for label, key in (
            ("flag rate", "flag_rate"),
            ("sensitivity", "sensitivity"),
            ("PPV", "ppv"),
        ):
            table.add_row(label, ci(pair["champion"][key]), ci(pair["challenger"][key]))
        console.print(table)
        typer.echo(
            f"agreement: {ci(pair['agreement'])}; both flagged {pair['both_flagged']}, "
            f"champion only {pair['champion_only']}, challenger only {pair['challenger_only']}, "
            f"neither {pair['neither']}"
        )


_KEY_METRICS = (
    "cpm",
    "froc_sens_at_1_fp",
    "ap_iou_0.10",
    "study_auc",
    "operating_sensitivity",
    "operating_specificity",
)


@models_app.command("list")
def models_list_command(
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Registered models with their newest version and aliases."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.models import registry

    models = registry.list_models(tracking_uri=tracking_uri)
    if not models:
        typer.echo("no registered models (register one with `oncotriage register`)")
        return
    table = Table(title="registered models")
    for column in ("name", "latest version", "aliases", "description"):
        table.add_column(column)
    for info in models:
        aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(info.aliases.items()))
        table.add_row(info.name, str(info.latest_version or "-"), aliases or "-", info.description)
    Console().print(table)


@models_app.command("show")
def models_show_command(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[
        str | None, typer.Option(help="One version (number or alias) in detail.")
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="Show the newest N versions.")] = 6,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Versions of a model side by side: aliases, thresholds, dataset and key metrics."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.models import registry

    console = Console()
    try:
        if version is not None:
            info = registry.get_version(name, version, tracking_uri=tracking_uri)
            table = Table(title=f"{name} version {info.version}")
            table.add_column("field")
            table.add_column("value")
            table.add_row("aliases", ", ".join(info.aliases) or "-")
            table.add_row("created", info.created.isoformat(timespec="seconds"))
            table.add_row("run", info.run_id or "-")
            table.add_row("source", info.source)
            for key, value in sorted(info.tags.items()):
                if not key.startswith(registry.METRIC_TAG_PREFIX):
                    table.add_row(key, value if len(value) < 300 else value[:297] + "...")
            for key, number in sorted(info.metrics.items()):
                table.add_row(f"metric {key}", _fmt(number, 4))
            console.print(table)
            return
        versions = registry.list_versions(name, tracking_uri=tracking_uri)
    except registry.RegistryError as exc:
        raise _fail(f"models show: {exc}") from exc
    if not versions:
        raise _fail(f"model {name!r} has no versions; see `oncotriage models list`")
    shown = versions[-last:]
    names = sorted(
        {
            key
            for v in shown
            for key in v.metrics
            if any(key == k or key.endswith(f"_{k}") for k in _KEY_METRICS)
        }
    )
    table = Table(title=f"{name}: versions side by side ({len(shown)} of {len(versions)})")
    table.add_column("")
    for info in shown:
        table.add_column(f"v{info.version}", justify="right")

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("aliases", [", ".join(v.aliases) or "-" for v in shown])
    row("reads", [v.tags.get("oncotriage.reads", "-") for v in shown])
    row("created", [v.created.strftime("%Y-%m-%d %H:%M") for v in shown])
    row(
        "dataset",
        [
            v.tags.get("oncotriage.dataset_fingerprint", "-").removeprefix("sha256:")[:12]
            for v in shown
        ],
    )
    for key in ("operating", "urgent"):
        row(
            f"{key} threshold",
            [
                _fmt(v.thresholds.get(key), 4) + ("" if v.thresholds.get("calibrated") else "*")
                for v in shown
            ],
        )
    for metric in names:
        row(metric, [_fmt(v.metrics.get(metric)) for v in shown])
    console.print(table)
    if any(not v.thresholds.get("calibrated") for v in shown):
        typer.echo("* not calibrated: run `oncotriage calibrate`")


@models_app.command("performance")
def models_performance_command(
    database_url: Annotated[
        str | None,
        typer.Option(help="The service's database (default: ONCOTRIAGE_DATABASE_URL / data dir)."),
    ] = None,
    export_mlflow: Annotated[
        bool,
        typer.Option(
            "--export-mlflow",
            help="Also record each registered version's field performance on the version "
            "(metric.field.* tags: overall and per hospital id).",
        ),
    ] = False,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Real-world performance per model version x hospital x device x modality: flag rate,
    manual-review rate, sensitivity and PPV of flags (Wilson 95%), from the service's records."""
    from rich.console import Console
    from rich.table import Table

    from oncotriage.serving.monitoring.performance import export_to_mlflow, performance

    db = _service_session(database_url)
    if db is None:
        raise _fail("models performance: no service database with monitoring records found")
    try:
        with db.session() as session:
            rows = performance(session, None)
            written = export_to_mlflow(session, tracking_uri=tracking_uri) if export_mlflow else {}
    finally:
        db.dispose()

    def ci(interval: dict[str, Any]) -> str:
        if not interval["n"]:
            return "n/a"
        return f"{interval['k']}/{interval['n']} ({interval['low']:.2f}-{interval['high']:.2f})"

    table = Table(title="real-world performance (Wilson 95% CI)")
    for column in ("model", "hospital", "device", "modality", "studies", "flag rate"):
        table.add_column(column)
    for column in ("manual review", "sensitivity", "PPV"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            f"{row['model']} v{row['version']}",
            row["hospital"],
            " ".join(v for v in (row["manufacturer"], row["device_model"]) if v) or "-",
            row["modality"],
            str(row["studies"]),
            ci(row["flag_rate"]),
            ci(row["manual_review_rate"]),
            ci(row["sensitivity"]),
            ci(row["ppv"]),
        )
    Console(width=200).print(table)
    for (name, version), metrics in sorted(written.items()):
        typer.echo(f"recorded {len(metrics)} field metrics on {name} version {version}")


def register(app: typer.Typer) -> None:
    """Add the training and registry commands to the root app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("calibrate")(calibrate_command)
    app.command("optimize")(optimize_command)
    app.command("register")(register_command)
    app.command("promote")(promote_command)
    app.add_typer(models_app)
