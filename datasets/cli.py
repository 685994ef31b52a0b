"""``oncotriage datasets ...``: look at DICOM, make synthetic screening data, build datalists."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

datasets_app = typer.Typer(
    name="datasets",
    help="Inspect DICOM, synthesize screening studies, build detection datalists.",
    no_args_is_help=True,
)


class SynthKind(StrEnum):
    CXR = "cxr"
    LDCT = "ldct"


@datasets_app.command("inspect")
def inspect_command(
    paths: Annotated[
        list[Path], typer.Argument(help="DICOM files or folders (searched recursively).")
    ],
) -> None:
    """Show what the reader sees in each image or series, or why it refuses it.

    Exit status 0 when every image or series was readable, 2 when any was refused.
    """
    from oncotriage.datasets.inspect import run_inspect

    raise typer.Exit(run_inspect(paths))


@datasets_app.command("synth")
def synth_command(
    kind: Annotated[SynthKind, typer.Option(help="cxr: DX chest radiographs; ldct: CT.")],
    out: Annotated[Path, typer.Option(help="Output folder (created).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of studies.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed; the output is deterministic.")] = 0,
    negative_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of studies without nodules.")
    ] = 0.3,
    generator_version: Annotated[
        int,
        typer.Option(
            min=1,
            max=2,
            help="1: the original generator (old seeds reproduce); 2: 3D nodules, benign "
            "distractors, vendors and acquisition variety (cxr and ldct).",
        ),
    ] = 1,
    split: Annotated[
        list[str] | None,
        typer.Option(
            help="Write only the cases of this split (training, validation, test; repeatable); "
            "cases and UIDs are those of the full set."
        ),
    ] = None,
    nodule_contrast: Annotated[
        float,
        typer.Option(
            help="Shift (version 2): factor on every nodule's attenuation (cxr) or its "
            "contrast over the lung (ldct), after the visibility floor, e.g. 0.6."
        ),
    ] = 1.0,
    noise_scale: Annotated[
        float,
        typer.Option(help="Shift (version 2): factor on the quantum or scanner noise, e.g. 1.5."),
    ] = 1.0,
    diameter_mm: Annotated[
        tuple[float, float],
        typer.Option(help="Shift (version 2): nodule diameter range in mm, e.g. 4 8."),
    ] = (4.0, 30.0),
) -> None:
    """Write synthetic screening studies as DICOM plus a MONAI detection datalist."""
    from oncotriage.datasets.synth import run_synth
    from oncotriage.datasets.synth_cxr_v2 import CxrShift

    try:
        shift = CxrShift(
            nodule_contrast=nodule_contrast, noise_scale=noise_scale, diameter_mm=diameter_mm
        )
        datalist = run_synth(
            kind=kind.value,
            n=n,
            seed=seed,
            out=out,
            negative_fraction=negative_fraction,
            generator_version=generator_version,
            shift=shift,
            only_splits=split,
        )
    except ValueError as exc:
        typer.secho(f"synth: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"datalist: {datalist}")


@datasets_app.command("merge")
def merge_command(
    datalists: Annotated[
        list[Path], typer.Argument(help="Detection datalists (JSON) to merge, two or more.")
    ],
    out: Annotated[Path, typer.Option(help="The merged datalist (JSON file; folder created).")],
) -> None:
    """Merge detection datalists into one, e.g. a generator's defaults plus a shifted set.

    Images stay where they are (paths are rewritten relative to the merged file); each entry
    keeps its split and records its source and shift. Datalists that describe boxes
    differently, or that share a study, are refused (exit status 2).
    """
    from oncotriage.datasets.merge import SPLITS, merge_datalists

    try:
        merged = merge_datalists(datalists, out)
    except ValueError as exc:
        typer.secho(f"merge: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    counts = ", ".join(f"{len(merged[split])} {split}" for split in SPLITS)
    typer.echo(f"datalist: {out} ({counts})")


def register(app: typer.Typer) -> None:
    """Add ``oncotriage datasets`` to the root app."""
    app.add_typer(datasets_app)
