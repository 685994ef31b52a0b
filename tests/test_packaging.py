"""The distribution installs what the code needs, also as a plain (non-editable) wheel."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_python_package_folder_is_listed() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools["package-dir"]
    folder_to_name = {folder: name for name, folder in package_dir.items()}
    found = set()
    for folder, name in folder_to_name.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    assert found == set(setuptools["packages"])


@pytest.mark.slow
def test_wheel_carries_code_and_data_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("oncotriage-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [
        "oncotriage/cli.py",
        "oncotriage/datasets/reader.py",
        "oncotriage/models/pipeline.py",
        # the two demo models `oncotriage serve --demo` registers and routes
        "oncotriage/models/demo/model.onnx",
        "oncotriage/models/demo/model_spec.json",
        "oncotriage/models/demo_ct/model.onnx",
        "oncotriage/models/demo_ct/model_spec.json",
        "oncotriage/serving/migrations/env.py",
        "oncotriage/serving/migrations/script.py.mako",
        "oncotriage/serving/migrations/versions/0001_initial_schema.py",
        "oncotriage/serving/triton/python_model.py",
        "oncotriage/serving/web/templates/base.html",
    ]
    missing = [name for name in expected if name not in names]
    assert not missing, missing
    assert any(name.startswith("oncotriage/serving/web/static/") for name in names)
    # generic top-level names must never be installed into site-packages
    top_level = {name.split("/")[0] for name in names}
    assert not top_level & {"models", "datasets", "serving", "training", "tests"}
