"""The progress bar of every long command (on stderr, so stdout stays parseable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def progress_bar(*fields: str, enabled: bool = True, transient: bool = False) -> Progress:
    """A rich progress bar: the task's description, the bar, done / total, one text column
    per ``fields`` template (e.g. ``"loss {task.fields[loss]}"``), elapsed time and ETA.

    Args:
        fields: extra column templates, filled from ``add_task(..., name=value)``.
        enabled: False gives a bar that prints nothing (non-main DDP ranks, ``--no-progress``).
        transient: clear the bar when it finishes.
    """
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
        *(TextColumn(field) for field in fields),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=transient,
    )
