"""The reader on pydicom's bundled test files: modalities, transfer syntaxes, broken files.

Only files that ship inside the installed pydicom are used (``reader_fixtures.bundled``
never downloads).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from reader_fixtures import bundled

from oncotriage.datasets.image import UnsupportedImageError
from oncotriage.datasets.pixels import decode_frames
from oncotriage.datasets.reader import read_dataset, read_image


def _refusal(source: object, **kwargs: object) -> UnsupportedImageError:
    with pytest.raises(UnsupportedImageError) as caught:
        read_image(source, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_ct_small_is_in_hounsfield_units() -> None:
    path = bundled("CT_small.dcm")
    raw = pydicom.dcmread(path)
    stored = raw.pixel_array.astype(np.float64)
    volume = read_image(path, min_slices=1)
    assert volume.array.shape == (128, 128, 1)
    # Rescale Slope 1, Intercept -1024, transposed to (x, y)
    expected = stored * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[:, :, 0], expected.T)
    assert float(volume.array[0, 0, 0]) == 175 - 1024  # stored (row 0, col 0) is 175
    assert float(volume.array[1, 0, 0]) == 180 - 1024  # (row 0, col 1)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert volume.origin == pytest.approx((-158.135803, -179.035797, -75.699997))
    assert volume.modality == "CT"
    assert volume.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian
    assert volume.sop_instance_uids == (raw.SOPInstanceUID,)
    assert volume.frame_of_reference_uid == raw.FrameOfReferenceUID


def test_ct_small_alone_is_too_few_slices() -> None:
    error = _refusal(bundled("CT_small.dcm"))
    assert error.code == "too_few_slices"
    assert "series has 1 slice, need at least 16" in str(error)


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_jpeg2000_ct_agrees_across_decoders(name: str) -> None:
    ds = pydicom.dcmread(bundled(name))
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    volume = read_image(ds, min_slices=1)
    plugins = get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
    assert len(plugins) >= 2
    for plugin in plugins:
        stored = decode_frames(ds, decoding_plugin=plugin)[0]
        expected = stored.astype(np.float64) * slope + intercept
        if "PixelPaddingValue" in ds:
            expected[stored == ds.PixelPaddingValue] = -1024.0
        np.testing.assert_array_equal(volume.array[:, :, 0], expected.T, err_msg=plugin)


def test_oblique_ct_slice_direction_comes_from_its_cosines() -> None:
    volume = read_image(bundled("J2K_pixelrep_mismatch.dcm"), min_slices=1)
    # row (1, 0, 0), column (0, 0.9272, -0.3746): normal = row x column
    np.testing.assert_allclose(volume.direction[:, 0], [1, 0, 0], atol=1e-4)
    np.testing.assert_allclose(volume.direction[:, 1], [0, 0.9272, -0.3746], atol=1e-3)
    np.testing.assert_allclose(volume.direction[:, 2], [0, 0.3746, 0.9272], atol=1e-3)
    # J2K sign correction: the stored range is the signed one, padding at -2000
    assert float(volume.array.min()) == -2000.0
    assert float(volume.array.max()) == 1896.0


MR_VARIANTS = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
]


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_every_decoder_of_a_syntax_gives_the_uncompressed_values(name: str) -> None:
    reference = decode_frames(pydicom.dcmread(bundled("MR_small.dcm")))
    ds = pydicom.dcmread(bundled(name))
    plugins = get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
    for plugin in plugins:
        decoded = decode_frames(ds, decoding_plugin=plugin)
        assert decoded.shape == (1, 64, 64)
        np.testing.assert_array_equal(decoded, reference, err_msg=f"{name} via {plugin}")


@pytest.mark.parametrize("name", ["MR_small.dcm", *MR_VARIANTS])
def test_mr_is_not_a_screening_modality(name: str) -> None:
    error = _refusal(bundled(name))
    assert error.code == "modality"
    assert "MR Image Storage is not a screening modality" in str(error)


@pytest.mark.parametrize(
    ("name", "sop_class"),
    [
        ("ExplVR_BigEnd.dcm", "Ultrasound Image Storage"),
        ("examples_ybr_color.dcm", "Ultrasound Multi-frame Image Storage"),
        ("rtdose.dcm", "RT Dose Storage"),
        ("SC_rgb_jpeg_gdcm.dcm", "Secondary Capture Image Storage"),
        ("rtplan.dcm", "RT Plan Storage"),
        ("reportsi.dcm", "Basic Text SR Storage"),
    ],
)
def test_other_sop_classes_are_refused_by_name(name: str, sop_class: str) -> None:
    error = _refusal(bundled(name))
    assert error.code == "modality"
    assert f"{sop_class} is not a screening modality" in str(error)


@pytest.mark.parametrize("name", ["rtdose_rle.dcm", "rtdose_expb.dcm"])
def test_multiframe_decodes_every_frame(name: str) -> None:
    reference = decode_frames(pydicom.dcmread(bundled("rtdose.dcm")))
    assert reference.shape == (15, 10, 10)
    decoded = decode_frames(pydicom.dcmread(bundled(name)))
    np.testing.assert_array_equal(decoded, reference)
    single = decode_frames(pydicom.dcmread(bundled(name)), index=7)
    np.testing.assert_array_equal(single[0], reference[7])


def test_colour_pixel_data_is_refused_when_decoded() -> None:
    with pytest.raises(UnsupportedImageError) as caught:
        decode_frames(pydicom.dcmread(bundled("SC_rgb_rle.dcm")))
    assert caught.value.code == "photometric"


def test_truncated_pixel_data_is_corrupt() -> None:
    error = _refusal(bundled("MR_truncated.dcm"))
    assert error.code == "corrupt"
    assert "truncated" in str(error)


@pytest.mark.parametrize(
    ("cut", "code"),
    [
        (200, "corrupt"),  # inside the meta header
        (6288, "no_pixel_data"),  # right before Pixel Data: nothing tells it was cut
        (2003, "corrupt"),  # inside a header element
        (20000, "corrupt"),  # inside Pixel Data
        (39000, "corrupt"),  # the last bytes of Pixel Data
        (39206 - 60, None),  # only the trailing padding (FFFC,FFFC) is cut: harmless
    ],
)
def test_truncated_ct_small(cut: int, code: str | None) -> None:
    data = bundled("CT_small.dcm").read_bytes()
    assert len(data) == 39206
    if code is None:
        volume = read_image(read_dataset(data[:cut]), min_slices=1)
        assert volume.array.shape == (128, 128, 1)
        return
    with pytest.raises(UnsupportedImageError) as caught:
        read_image(read_dataset(data[:cut]), min_slices=1)
    assert caught.value.code == code


def test_file_without_meta_header_is_not_dicom() -> None:
    error = _refusal(bundled("no_meta.dcm"))
    assert error.code == "not_dicom"


@pytest.mark.parametrize(
    "payload", [b"", b"hello, this is a radiology report\n" * 10, bytes(range(256)) * 4]
)
def test_non_dicom_bytes(payload: bytes) -> None:
    with pytest.raises(UnsupportedImageError) as caught:
        read_dataset(payload)
    assert caught.value.code == "not_dicom"


def test_stream_and_path_give_the_same_dataset() -> None:
    path = bundled("CT_small.dcm")
    with path.open("rb") as stream:
        from_stream = read_dataset(stream)
    assert from_stream.SOPInstanceUID == read_dataset(path).SOPInstanceUID
    assert read_dataset(str(path)).SOPInstanceUID == from_stream.SOPInstanceUID
