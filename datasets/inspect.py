"""``oncotriage datasets inspect``: what the reader sees in each image or series, or why not.

Files and folders are gathered and grouped by series. A group of single-frame CT slices is
read as one volume; radiographs and multi-frame objects are read one instance at a time.
One table row per image or series; refusals are listed with their reasons after the table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from oncotriage.datasets.image import ImageVolume, RefusalCode, UnsupportedImageError
from oncotriage.datasets.instance import CT_MULTIFRAME_CLASSES, RADIOGRAPH_CLASSES
from oncotriage.datasets.pixels import number_of_frames
from oncotriage.datasets.reader import group_series, read_dataset, read_image

logger = logging.getLogger(__name__)

#: Exit status when every image or series was readable.
EXIT_OK = 0
#: Exit status when any image, series or path was refused.
EXIT_REFUSED = 2


@dataclass(frozen=True)
class InspectResult:
    """What the reader made of one image or series.

    Attributes:
        source: what was read (a file, or a folder and file count for a series).
        volume: the image, when readable.
        error: the refusal, when not.
    """

    source: str
    volume: ImageVolume | None = None
    error: UnsupportedImageError | None = None


def _label(files: Sequence[Path]) -> str:
    if len(files) == 1:
        return str(files[0])
    parents = {file.parent for file in files}
    folder = parents.pop() if len(parents) == 1 else Path(*_common_parts(files))
    return f"{folder}/ ({len(files)} files)"


def _common_parts(files: Sequence[Path]) -> list[str]:
    parts = [file.parent.parts for file in files]
    common: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return common or ["."]


def _read_one(source: str, item: pydicom.Dataset | list[pydicom.Dataset]) -> InspectResult:
    try:
        return InspectResult(source, volume=read_image(item))
    except UnsupportedImageError as error:
        return InspectResult(source, error=error)
    except Exception as error:  # inspection must report, never crash with a traceback
        logger.debug("unexpected error reading %s", source, exc_info=True)
        return InspectResult(
            source,
            error=UnsupportedImageError(
                f"unexpected error while reading: {type(error).__name__}: {error}",
                code=RefusalCode.INTERNAL,
            ),
        )


def inspect_series(files: Sequence[Path]) -> list[InspectResult]:
    """Read one series' files: as one CT volume, or instance by instance."""
    loaded: list[tuple[Path, pydicom.Dataset]] = []
    results: list[InspectResult] = []
    for file in files:
        try:
            loaded.append((file, read_dataset(file)))
        except UnsupportedImageError as error:
            results.append(InspectResult(str(file), error=error))
    if not loaded:
        return results
    classes = {str(ds.get("SOPClassUID", "")) for _, ds in loaded}
    one_by_one = classes <= (RADIOGRAPH_CLASSES | CT_MULTIFRAME_CLASSES) or any(
        number_of_frames(ds) > 1 for _, ds in loaded
    )
    if one_by_one:
        results.extend(_read_one(str(file), ds) for file, ds in loaded)
    else:
        results.append(_read_one(_label([file for file, _ in loaded]), [ds for _, ds in loaded]))
    return results


def inspect_paths(paths: Sequence[Path]) -> list[InspectResult]:
    """Group ``paths`` (files or folders, searched recursively) and read each image/series."""
    groups = group_series(paths)
    results = [InspectResult(str(path), error=error) for path, error in groups.unreadable.items()]
    with Progress(transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("reading series", total=len(groups.series))
        for files in groups.series.values():
            results.extend(inspect_series(files))
            progress.advance(task)
    if not groups.series and not groups.unreadable:
        where = ", ".join(str(p) for p in paths) or "(no paths given)"
        results.append(
            InspectResult(
                where,
                error=UnsupportedImageError("no DICOM files found", code=RefusalCode.NOT_FOUND),
            )
        )
    for path, why in groups.ignored.items():
        logger.info("skipped %s: %s", path, why)
    return results


def _format_triplet(values: Sequence[float] | Sequence[int], precision: str) -> str:
    return "x".join(format(v, precision) for v in values)


def _value_range(volume: ImageVolume) -> str:
    low, high = float(np.min(volume.array)), float(np.max(volume.array))
    if volume.modality == "CT":
        return f"{low:.0f} .. {high:.0f} HU"
    return f"{low:.3f} .. {high:.3f}"


def results_table(results: Sequence[InspectResult]) -> Table:
    """A rich table: one row per image or series (size and spacing in ``x y [z]`` order)."""
    table = Table(title="DICOM inspection", show_lines=False)
    for header in ("source", "status", "modality", "size", "spacing mm", "values"):
        table.add_column(header, overflow="fold")
    table.add_column("transfer syntax", overflow="fold")
    for result in results:
        volume = result.volume
        if volume is None:
            table.add_row(result.source, "[red]refused[/red]", "-", "-", "-", "-", "-")
            continue
        table.add_row(
            result.source,
            "[green]ok[/green]",
            volume.modality,
            _format_triplet(volume.array.shape, "d"),
            _format_triplet(volume.spacing, ".3g"),
            _value_range(volume),
            UID(volume.transfer_syntax_uid).name,
        )
    return table


def run_inspect(paths: list[Path]) -> int:
    """Print what the reader sees in each image or series under ``paths``.

    Returns:
        :data:`EXIT_OK` (0) when every image or series was readable, :data:`EXIT_REFUSED`
        (2) when anything was refused or nothing was found.
    """
    console = Console(highlight=False)
    results = inspect_paths(paths)
    console.print(results_table(results))
    refused = [r for r in results if r.error is not None]
    for result in refused:
        error = result.error
        code = error.code if error is not None else "?"
        console.print(f"refused {result.source}: {error} [{code}]", markup=False, soft_wrap=True)
    console.print(f"{len(results) - len(refused)} readable, {len(refused)} refused", markup=False)
    return EXIT_REFUSED if refused else EXIT_OK
