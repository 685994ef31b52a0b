"""``oncotriage export`` (a detector config + checkpoint) and ``oncotriage import-bundle`` (a
MONAI Model Zoo bundle) to an ONNX model bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_command(
    config: Annotated[
        Path, typer.Option(help="Detector config, e.g. configs/detector_ct3d.yaml.", exists=True)
    ],
    out: Annotated[
        Path, typer.Option(help="Bundle folder to write (model.onnx, model_spec.json).")
    ],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Trained weights (state_dict .pt). Without it: random weights, NOT a model."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Config override key.sub=value (YAML value); repeatable."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: the config's).")] = None,
    version: Annotated[str, typer.Option(help="Model version recorded in the spec.")] = "0",
    opset: Annotated[int | None, typer.Option(min=17, help="ONNX opset (default 17).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation and checks.")] = 0,
    datalist: Annotated[
        Path | None,
        typer.Option(
            help="Training datalist: its images' statistics are stored in the spec as the "
            "model's input fingerprint (the service's drift checks compare live images with it)."
        ),
    ] = None,
) -> None:
    """Export a MONAI RetinaNet detector to ONNX with its model_spec.json."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from oncotriage.models.export import export_from_config

    if checkpoint is None:
        typer.secho(
            "WARNING: no --checkpoint given: exporting RANDOM weights. The result is NOT A MODEL "
            "and its scores mean nothing; use it only to test the plumbing.",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
    ) as progress:
        progress.add_task("building, tracing and checking the ONNX graph", total=None)
        try:
            onnx_path = export_from_config(
                config,
                out,
                checkpoint=checkpoint,
                overrides=set_ or [],
                model_name=name,
                version=version,
                opset=opset,
                seed=seed,
            )
        except (ValueError, FileNotFoundError) as exc:
            typer.secho(f"export failed: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc
    typer.echo(f"model: {onnx_path}")
    typer.echo(f"spec:  {onnx_path.parent / 'model_spec.json'}")
    if datalist is not None:
        _fingerprint(onnx_path.parent, datalist)


def _fingerprint(bundle: Path, datalist: Path, limit: int = 200) -> None:
    from oncotriage.models.fingerprint import add_fingerprint

    try:
        fp = add_fingerprint(bundle, datalist, limit=limit)
    except (ValueError, FileNotFoundError) as exc:
        typer.secho(f"fingerprint failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"input fingerprint of {fp.images} training images: intensity {fp.intensity_mean:.3f} "
        f"+- {fp.intensity_sd:.3f}, spacing {fp.spacing_mm_mean:.3f} mm, "
        f"log pixels {fp.log_pixels_mean:.2f}"
    )


def fingerprint_command(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle folder (model.onnx, model_spec.json).", exists=True)
    ],
    datalist: Annotated[Path, typer.Option(help="Its training datalist.", exists=True)],
    limit: Annotated[int, typer.Option(min=1, help="Images to read at most.")] = 200,
) -> None:
    """Store the input fingerprint of a bundle's training images in its spec (the reference
    of the service's input drift checks: intensity, histogram, spacing, image size)."""
    _fingerprint(bundle, datalist, limit)


def import_bundle_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="MONAI Model Zoo bundle folder (configs/inference.json, configs/metadata.json, "
            "models/model.pt), e.g. lung_nodule_ct_detection.",
            exists=True,
            file_okay=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Bundle folder to write (default: var/models/<name>)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Registry name (default: from the bundle's metadata).")
    ] = None,
    register: Annotated[
        bool, typer.Option(help="Register the result with the bundle's name, version, licence.")
    ] = True,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            help="DICOM modality it reads (repeatable; default: metadata.json's "
            "network_data_format)."
        ),
    ] = None,
    body_part: Annotated[
        list[str] | None,
        typer.Option(
            help="Body Part Examined it reads, e.g. CHEST (repeatable; default: from "
            "metadata.json's name, task and description)."
        ),
    ] = None,
) -> None:
    """Import a MONAI Model Zoo detection bundle: build it with MONAI, export ONNX, register.

    The service routes to it only the series it was made for: the modality and body part its
    metadata.json names (--modality / --body-part when it names none)."""
    from oncotriage.models.import_bundle import BundleError, import_bundle, slug

    if out is None:
        out = Path("var") / "models" / (name or slug(path.name))
    try:
        result = import_bundle(
            path,
            out,
            name=name,
            register=register,
            tracking_uri=tracking_uri,
            modalities=modality,
            body_parts=body_part,
        )
    except (BundleError, FileNotFoundError) as exc:
        typer.secho(f"import-bundle failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"bundle:  {result.bundle_name} v{result.bundle_version} (licence: {result.license})"
    )
    typer.echo(f"model:   {result.onnx_path}")
    typer.echo(f"reads:   {result.reads}")
    for note in result.notes:
        typer.echo(f"note:    {note}")
    if result.registered_version is not None:
        typer.echo(f"registered {result.name} version {result.registered_version}")


def register(app: typer.Typer) -> None:
    """Add ``oncotriage export`` and ``oncotriage import-bundle`` to the root app."""
    app.command("export")(export_command)
    app.command("import-bundle")(import_bundle_command)
    app.command("fingerprint")(fingerprint_command)
