"""``oncotriage datasets inspect``: a table of what the reader sees, refusals, exit status."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from reader_fixtures import bundled, ct_series, radiograph, to_bytes
from typer.testing import CliRunner

from oncotriage.cli import app
from oncotriage.datasets.inspect import inspect_paths, inspect_series

WIDE = {"COLUMNS": "250"}  # one table row per line, so the assertions can read it


def _inspect(*paths: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["datasets", "inspect", *map(str, paths)], env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _write_series(folder: Path, count: int = 16, skip: tuple[int, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(ct_series(count, spacing=1.25)):
        if k not in skip:
            (folder / f"ct{k:03d}.dcm").write_bytes(to_bytes(ds))


def _row(output: str, needle: str) -> str:
    rows = [line for line in output.splitlines() if needle in line and "│" in line]
    assert len(rows) == 1, output
    return rows[0]


def test_a_good_series_folder(tmp_path: Path) -> None:
    _write_series(tmp_path / "case1")
    (tmp_path / "datalist.json").write_text("{}")  # beside the images, as synth writes it
    code, output = _inspect(tmp_path)
    assert code == 0
    row = _row(output, "case1")
    assert "(16 files)" in row
    for cell in (
        "ok",
        "CT",
        "8x6x16",
        "0.7x0.8x1.25",
        "-1024 .. 533 HU",
        "Explicit VR Little Endian",
    ):
        assert cell in row, (cell, row)
    assert "1 readable, 0 refused" in output


def test_a_good_radiograph_file(tmp_path: Path) -> None:
    path = tmp_path / "cxr.dcm"
    path.write_bytes(to_bytes(radiograph(np.arange(20, dtype=np.uint16).reshape(4, 5))))
    code, output = _inspect(path)
    assert code == 0
    row = _row(output, "cxr.dcm")
    for cell in ("ok", "DX", "5x4", "0.2x0.2", "0.000 .. 1.000"):
        assert cell in row, (cell, row)


def test_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7 not an image")
    code, output = _inspect(path)
    assert code == 2
    assert "refused" in _row(output, "report.pdf")
    assert "not a DICOM file" in output
    assert "[not_dicom]" in output
    assert "0 readable, 1 refused" in output


def test_a_mixed_folder(tmp_path: Path) -> None:
    _write_series(tmp_path / "ct" / "good")
    _write_series(tmp_path / "ct" / "gappy", count=20, skip=(9, 10))
    (tmp_path / "dx.dcm").write_bytes(to_bytes(radiograph(np.ones((4, 5), np.uint16))))
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "mr.dcm")
    (tmp_path / "readme.txt").write_text("images for the screening service")  # ignored
    (tmp_path / "scan0001").write_text("not an image")  # no suffix: must be read, and refused
    code, output = _inspect(tmp_path, tmp_path / "missing.dcm")
    assert code == 2
    assert "ok" in _row(output, "good")
    assert "ok" in _row(output, "dx.dcm")
    assert "refused" in _row(output, "gappy")
    assert "missing slices: gap of 3.75 mm where spacing is 1.25 mm" in output
    assert "MR Image Storage is not a screening modality" in output
    assert "scan0001: not a DICOM file" in output
    assert "readme.txt: not an image file (.txt)" in output
    assert "missing.dcm: no such file or folder [not_found]" in output
    assert "2 readable, 4 refused" in output


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    code, output = _inspect(tmp_path)
    assert code == 2
    assert "no DICOM files found" in output


def test_inspect_paths_reads_radiographs_in_one_series_one_by_one(tmp_path: Path) -> None:
    first = radiograph(np.zeros((4, 5), np.uint16))
    second = radiograph(np.ones((6, 5), np.uint16))
    second.SeriesInstanceUID = first.SeriesInstanceUID
    (tmp_path / "pa.dcm").write_bytes(to_bytes(first))
    (tmp_path / "lat.dcm").write_bytes(to_bytes(second))
    results = inspect_paths([tmp_path])
    shapes = {Path(r.source).name: r.volume.array.shape for r in results if r.volume is not None}
    assert shapes == {"pa.dcm": (5, 4), "lat.dcm": (5, 6)}


def test_a_broken_file_in_a_series_is_refused_on_its_own(tmp_path: Path) -> None:
    _write_series(tmp_path, count=20)
    (tmp_path / "ct005.dcm").write_bytes(b"DICM" * 10)  # replaced by garbage
    results = inspect_series(sorted(tmp_path.iterdir()))
    codes = sorted(r.error.code for r in results if r.error is not None)
    assert codes == ["missing_slices", "not_dicom"]


def test_an_unexpected_error_is_reported_not_raised() -> None:
    from oncotriage.datasets.inspect import _read_one

    def exploding() -> Iterator[Path]:
        raise RuntimeError("disk unplugged")
        yield Path("never")

    result = _read_one("weird input", exploding())  # type: ignore[arg-type]
    assert result.volume is None and result.error is not None
    assert result.error.code == "internal"
    assert "RuntimeError: disk unplugged" in str(result.error)
