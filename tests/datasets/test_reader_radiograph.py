"""Radiographs (DX, CR, MG): Modality LUT, VOI LUT / windows, MONOCHROME1, spacing, compression."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    ComputedRadiographyImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from reader_fixtures import gdcm_transcode, radiograph, reparse

from oncotriage.datasets.image import UnsupportedImageError
from oncotriage.datasets.pixels import decode_frames
from oncotriage.datasets.reader import read_image

LINE = np.array([[0, 50, 100, 150, 199, 200, 250]], dtype=np.uint16)  # 1 row x 7 columns


def _presentation(ds: Dataset) -> np.ndarray:
    """The reader's values along the single row, in column order."""
    volume = read_image(reparse(ds))
    assert volume.array.shape == (LINE.shape[1], 1)  # (x, y): columns first
    return volume.array[:, 0]


@pytest.mark.parametrize(
    ("function", "center", "width", "expected"),
    [
        # PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to 0..1
        ("LINEAR", 100, 201, [0.0025, 0.2525, 0.5025, 0.7525, 0.9975, 1.0, 1.0]),
        # C.11.2.1.3.2: y = (x - c) / w + 0.5
        ("LINEAR_EXACT", 100, 200, [0.0, 0.25, 0.5, 0.75, 0.995, 1.0, 1.0]),
        # C.11.2.1.3.1: y = 1 / (1 + exp(-4 (x - c) / w))
        ("SIGMOID", 100, 200, [0.119203, 0.268941, 0.5, 0.731059, 0.878681, 0.880797, 0.952574]),
    ],
)
def test_window_functions(
    function: str, center: float, width: float, expected: list[float]
) -> None:
    ds = radiograph(LINE, WindowCenter=center, WindowWidth=width, VOILUTFunction=function)
    np.testing.assert_allclose(_presentation(ds), expected, atol=1e-5)


def test_window_without_function_is_linear_and_first_window_is_used() -> None:
    ds = radiograph(LINE, WindowCenter=[100, 1000], WindowWidth=[201, 10])
    np.testing.assert_allclose(_presentation(ds)[:3], [0.0025, 0.2525, 0.5025], atol=1e-6)


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),  # DX: INVERSE goes with MONOCHROME1, inverted once
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),
    ],
)
def test_monochrome1_and_presentation_lut_shape(
    photometric: str, shape: str | None, inverted: bool
) -> None:
    extra = {"PresentationLUTShape": shape} if shape else {}
    ds = radiograph(
        LINE,
        photometric=photometric,
        WindowCenter=100,
        WindowWidth=200,
        VOILUTFunction="LINEAR_EXACT",
        **extra,
    )
    linear = np.array([0.0, 0.25, 0.5, 0.75, 0.995, 1.0, 1.0])
    np.testing.assert_allclose(_presentation(ds), 1 - linear if inverted else linear, atol=1e-6)


def test_rescale_is_applied_before_the_window() -> None:
    # CR with Rescale Slope 2, Intercept -100: modality values 2x - 100
    ds = radiograph(
        LINE,
        sop_class=ComputedRadiographyImageStorage,
        modality="CR",
        RescaleSlope=2,
        RescaleIntercept=-100,
        RescaleType="US",
        WindowCenter=100,
        WindowWidth=200,
        VOILUTFunction="LINEAR_EXACT",
    )
    modality_values = 2.0 * LINE[0] - 100
    expected = np.clip((modality_values - 100) / 200 + 0.5, 0, 1)
    np.testing.assert_allclose(_presentation(ds), expected, atol=1e-6)
    assert read_image(reparse(ds)).modality == "CR"


def _voi_lut_item(first_mapped: int, data: list[int], bits: int) -> Dataset:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(data), first_mapped, bits])
    item.add_new("LUTData", "US", data)
    return item


def test_voi_lut_sequence_is_preferred_over_the_window() -> None:
    stored = np.array([[9, 10, 11, 12, 13, 20, 0]], dtype=np.uint16)
    ds = radiograph(stored, WindowCenter=0, WindowWidth=1)
    ds.VOILUTSequence = DicomSequence([_voi_lut_item(10, [0, 85, 170, 255], 8)])
    volume = read_image(reparse(ds))
    np.testing.assert_allclose(volume.array[:, 0], [0, 0, 1 / 3, 2 / 3, 1, 1, 0], atol=1e-6)


def test_voi_lut_with_16_bit_entries() -> None:
    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    ds = radiograph(stored)
    ds.VOILUTSequence = DicomSequence([_voi_lut_item(0, [0, 4000, 65535, 100], 16)])
    volume = read_image(reparse(ds))
    np.testing.assert_allclose(volume.array[:, 0], [0, 4000 / 65535, 1, 100 / 65535], atol=1e-6)


def test_without_voi_the_image_range_maps_to_0_1() -> None:
    stored = np.array([[1000, 1500, 3000], [2000, 1000, 1250]], dtype=np.uint16)
    ds = radiograph(stored, sop_class=DigitalXRayImageStorageForProcessing, bits_stored=12)
    volume = read_image(reparse(ds))
    expected = (stored.T.astype(float) - 1000) / 2000
    np.testing.assert_allclose(volume.array, expected, atol=1e-6)
    assert volume.array.shape == (3, 2)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"PixelSpacing": [0.15, 0.1]}, (0.1, 0.15)),  # (rows, columns) -> (x, y)
        ({"ImagerPixelSpacing": [0.2, 0.25]}, (0.25, 0.2)),
        (
            {"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.25},
            (0.16, 0.16),
        ),
        ({"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.2, 0.2]}, (0.1, 0.1)),
    ],
)
def test_radiograph_spacing(attributes: dict[str, object], expected: tuple[float, float]) -> None:
    ds = radiograph(np.zeros((4, 5), np.uint16), **attributes)
    if "ImagerPixelSpacing" not in attributes:
        del ds.ImagerPixelSpacing
    volume = read_image(reparse(ds))
    assert volume.spacing == pytest.approx(expected)
    assert volume.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(volume.direction, np.eye(3))


def test_radiograph_without_spacing_is_refused() -> None:
    ds = radiograph(np.zeros((4, 5), np.uint16))
    del ds.ImagerPixelSpacing
    with pytest.raises(UnsupportedImageError) as caught:
        read_image(ds)
    assert caught.value.code == "missing_attribute"
    assert "neither Pixel Spacing nor Imager Pixel Spacing" in str(caught.value)


def test_mammogram_reads_with_uids() -> None:
    ds = radiograph(
        np.arange(12, dtype=np.uint16).reshape(3, 4),
        sop_class=DigitalMammographyXRayImageStorageForPresentation,
        modality="MG",
        WindowCenter=5.5,
        WindowWidth=11,
        VOILUTFunction="LINEAR_EXACT",
    )
    volume = read_image(reparse(ds))
    assert volume.modality == "MG"
    assert volume.sop_instance_uids == (str(ds.SOPInstanceUID),)
    assert volume.study_uid == str(ds.StudyInstanceUID)
    assert volume.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert volume.array[0, 0] == pytest.approx(0.0)  # x=0 below the window
    assert volume.array[3, 2] == pytest.approx(1.0)  # stored 11: top of the window


def _smooth_radiograph(bits: int) -> tuple[Dataset, np.ndarray]:
    rows, columns = 40, 48
    y, x = np.mgrid[:rows, :columns]
    disc = ((x - 30) ** 2 + (y - 15) ** 2 < 36).astype(float)
    top = 2**bits - 1
    stored = 0.1 * top + 0.5 * top * x / columns + 0.2 * top * y / rows + 0.15 * top * disc
    stored = np.round(stored).astype(np.uint8 if bits == 8 else np.uint16)
    ds = radiograph(
        stored, bits_stored=bits, WindowCenter=top / 2, WindowWidth=top + 1, VOILUTFunction="LINEAR"
    )
    return ds, stored


def _compressed(ds: Dataset, syntax: str) -> Dataset:
    copy = reparse(ds)
    if syntax.startswith("gdcm:"):
        return gdcm_transcode(copy, syntax.removeprefix("gdcm:"))
    options = {"jls_error": 2} if syntax == JPEGLSNearLossless else {}
    if syntax == JPEG2000:
        options = {"j2k_psnr": [60.0]}
    copy.compress(syntax, generate_instance_uid=False, **options)
    return reparse(copy)


# (how to encode, transfer syntax UID it must carry, bits, largest stored-value error)
COMPRESSIONS = [
    ("gdcm:JPEGBaselineProcess1", "1.2.840.10008.1.2.4.50", 8, 4),
    ("gdcm:JPEGLosslessProcess14_1", "1.2.840.10008.1.2.4.70", 12, 0),
    ("gdcm:JPEGLosslessProcess14", "1.2.840.10008.1.2.4.57", 16, 0),
    (JPEGLSLossless, JPEGLSLossless, 12, 0),
    (JPEGLSNearLossless, JPEGLSNearLossless, 12, 2),
    (JPEG2000Lossless, JPEG2000Lossless, 12, 0),
    (JPEG2000, JPEG2000, 12, 30),
    (RLELossless, RLELossless, 16, 0),
]


@pytest.mark.parametrize(("encode", "syntax", "bits", "tolerance"), COMPRESSIONS)
def test_compressed_radiograph_matches_the_uncompressed_one(
    encode: str, syntax: str, bits: int, tolerance: int
) -> None:
    ds, stored = _smooth_radiograph(bits)
    compressed = _compressed(ds, encode)
    assert compressed.file_meta.TransferSyntaxUID == syntax
    plugins = pydicom.pixels.get_decoder(syntax).available_plugins
    assert plugins, f"no decoder installed for {syntax}"
    for plugin in plugins:
        decoded = decode_frames(compressed, decoding_plugin=plugin)[0].astype(int)
        assert np.abs(decoded - stored.astype(int)).max() <= tolerance, plugin
    reference = read_image(reparse(ds))
    volume = read_image(compressed)
    assert volume.transfer_syntax_uid == syntax
    top = 2**bits - 1
    np.testing.assert_allclose(volume.array, reference.array, atol=tolerance / top + 1e-6)


def test_multiframe_radiograph_is_refused() -> None:
    stored = np.zeros((2, 4, 5), np.uint16)
    ds = radiograph(stored[0])
    ds.NumberOfFrames = 2
    ds.PixelData = stored.tobytes()
    with pytest.raises(UnsupportedImageError) as caught:
        read_image(ds)
    assert caught.value.code == "multiple_images"


def test_two_radiographs_are_not_a_series() -> None:
    first = radiograph(np.zeros((4, 5), np.uint16))
    second = radiograph(np.ones((4, 5), np.uint16))
    second.SeriesInstanceUID = first.SeriesInstanceUID
    with pytest.raises(UnsupportedImageError) as caught:
        read_image([first, second])
    assert caught.value.code == "multiple_images"
    assert "read radiographs and multi-frame images one at a time" in str(caught.value)
