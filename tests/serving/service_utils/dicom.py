"""Tiny synthetic DICOM instances for service tests (radiographs and CT series)."""

from __future__ import annotations

import io

import numpy as np
import pydicom

from oncotriage.datasets.dicom_writer import (
    build_ct_slice_dataset,
    build_dx_dataset,
    make_identity,
)


def dx_instance(case: int, *, size: int = 64, seed: int = 0) -> pydicom.Dataset:
    """A ``size`` x ``size`` DX For Presentation radiograph; ``case`` selects its UIDs."""
    rng = np.random.default_rng(case + 1000 * seed)
    pixels = rng.integers(200, 3800, size=(size, size), dtype=np.uint16)
    return build_dx_dataset(
        make_identity("cxr", seed, case),
        pixels,
        pixel_spacing_mm=0.5,
        bits_stored=12,
        window_center=2048,
        window_width=4096,
        include_pixel_spacing=True,
    )


def ct_series(
    case: int, *, slices: int = 16, size: int = 32, seed: int = 0
) -> list[pydicom.Dataset]:
    """``slices`` axial CT slices of ``size`` x ``size`` pixels forming one series."""
    identity = make_identity("ldct", seed, case)
    rng = np.random.default_rng(case)
    out = []
    for index in range(slices):
        pixels = rng.integers(0, 1400, size=(size, size), dtype=np.uint16)
        out.append(
            build_ct_slice_dataset(
                identity,
                pixels,
                instance_number=index + 1,
                pixel_spacing_mm=(1.0, 1.0),
                image_position=(-16.0, -16.0, -2.0 * index),
                slice_thickness_mm=2.0,
                spacing_between_slices_mm=2.0,
                rescale_intercept=-1024.0,
                bits_stored=12,
                ctdi_vol_mgy=1.5,
            )
        )
    return out


def to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
