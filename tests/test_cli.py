from __future__ import annotations

from typer.testing import CliRunner

from oncotriage import __version__
from oncotriage.cli import app


def test_version_is_printed() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"oncotriage {__version__}"


def test_every_command_group_is_registered() -> None:
    names = {group.typer_instance.info.name for group in app.registered_groups}
    assert "datasets" in names
