"""The ``oncotriage`` command.

Each subpackage contributes its commands through ``register(app)`` in its own
``cli.py``. Those modules import only light dependencies at import time, so
``oncotriage serve`` never loads torch, and ``oncotriage --help`` is fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from oncotriage import __version__
from oncotriage.logging import configure_logging

app = typer.Typer(
    name="oncotriage",
    help="AI-assisted early cancer screening: data, models, training and the triage service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"oncotriage {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    configure_logging(log_level)


def _register_all() -> None:
    from oncotriage.datasets import cli as datasets_cli
    from oncotriage.models import cli as models_cli
    from oncotriage.serving import cli as serving_cli
    from oncotriage.serving import push_cli
    from oncotriage.serving.triton import cli as triton_cli
    from oncotriage.training import cli as training_cli

    for module in (datasets_cli, models_cli, training_cli, serving_cli, push_cli, triton_cli):
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
