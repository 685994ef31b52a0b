"""``oncotriage push``: send DICOM files to a running service by STOW-RS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def push_command(
    paths: Annotated[
        list[Path],
        typer.Argument(help="DICOM files or folders (searched recursively).", exists=True),
    ],
    url: Annotated[
        str, typer.Option(help="Service root URL.", envvar="ONCOTRIAGE_URL")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str,
        typer.Option(
            help="The hospital's API token (or set ONCOTRIAGE_TOKEN).",
            envvar="ONCOTRIAGE_TOKEN",
            show_default=False,
        ),
    ] = "",
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the token from this file instead.", exists=True, dir_okay=False),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Instances per request at most.")] = 64,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds per request.")] = 120.0,
) -> None:
    """Push studies to the triage service with DICOMweb STOW-RS.

    Prints what was stored and what failed (with the service's reason) and the URL of each
    study. Exit status 0 when every instance was stored, 1 when some failed, 2 when the service
    could not be reached or refused the token.
    """
    from oncotriage.serving.client import StowClient, StowError

    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
    if not token:
        typer.echo(
            "error: a token is required (--token, --token-file or ONCOTRIAGE_TOKEN)", err=True
        )
        raise typer.Exit(2)
    client = StowClient(url, token, timeout_s=timeout, batch_size=batch_size)
    try:
        result = client.push_files(paths)
    except (StowError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    stored = set(result.stored)
    failed_uids = {uid for uid, _ in result.failed}
    typer.echo(f"stored {len(result.stored)} instance(s), failed {len(result.failed)}")
    for study_uid in result.study_uids:
        study_url = (
            result.status_urls.get(study_uid)
            or result.retrieve_urls.get(study_uid)
            or f"{client.base_url}/dicomweb/studies/{study_uid}"
        )
        typer.echo(f"study {study_uid}: {study_url}")
    for uid, reason in result.warnings:
        typer.echo(f"  warning {uid}: {reason}")
    for identifier, reason in result.failed:
        typer.echo(f"  failed {identifier}: {reason}", err=True)
    if not stored and failed_uids:
        typer.echo("nothing was stored", err=True)
    raise typer.Exit(0 if result.ok else 1)


def register(app: typer.Typer) -> None:
    """Add ``oncotriage push`` to the root app."""
    app.command("push")(push_command)
