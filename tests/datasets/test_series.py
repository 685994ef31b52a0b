"""CT series and multi-frame CT: ordering, spacing, geometry and every refusal."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydicom.uid import LegacyConvertedEnhancedCTImageStorage, generate_uid
from reader_fixtures import (
    COLUMNS,
    PIXEL_SPACING,
    ROWS,
    ct_pixels,
    ct_series,
    ct_slice,
    enhanced_ct,
    reparse,
    to_bytes,
)

from oncotriage.datasets.image import ImageVolume, UnsupportedImageError
from oncotriage.datasets.reader import read_image


def _expected_hu(count: int) -> np.ndarray:
    """``(x, y, z)`` HU of a :func:`ct_series` in slice order (intercept -1024)."""
    stack = np.stack([ct_pixels(k) for k in range(count)], axis=0).astype(np.float32) - 1024
    return stack.transpose(2, 1, 0)


def _refusal(source: object, **kwargs: object) -> UnsupportedImageError:
    with pytest.raises(UnsupportedImageError) as caught:
        read_image(source, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_shuffled_series_is_sorted_along_the_normal() -> None:
    slices = ct_series(18, spacing=1.25, origin=(-10.0, 20.0, -50.0))
    shuffled = slices[:]
    random.Random(3).shuffle(shuffled)
    volume = read_image(shuffled)
    assert volume.array.shape == (COLUMNS, ROWS, 18)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, _expected_hu(18))
    assert volume.spacing == pytest.approx((PIXEL_SPACING[1], PIXEL_SPACING[0], 1.25))
    assert volume.origin == pytest.approx((-10.0, 20.0, -50.0))
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-9)
    assert volume.sop_instance_uids == tuple(str(ds.SOPInstanceUID) for ds in slices)
    assert volume.modality == "CT"
    assert volume.series_uid == str(slices[0].SeriesInstanceUID)
    assert volume.frame_of_reference_uid == str(slices[0].FrameOfReferenceUID)


def test_series_read_from_files_in_a_folder(tmp_path) -> None:
    slices = ct_series(16, spacing=2.0)
    for k, ds in enumerate(reversed(slices)):
        (tmp_path / f"img{k:03d}.dcm").write_bytes(to_bytes(ds))
    from_paths = read_image(sorted(tmp_path.iterdir()))
    from_folder = read_image(tmp_path)
    for volume in (from_paths, from_folder):
        np.testing.assert_array_equal(volume.array, _expected_hu(16))
        assert volume.spacing[2] == pytest.approx(2.0)


def test_rescale_slope_and_intercept_per_slice() -> None:
    slices = [
        ct_slice((0, 0, 1.5 * k), pixels=ct_pixels(k), slope=0.5 if k % 2 else 2.0, intercept=-1000)
        for k in range(16)
    ]
    volume = read_image(slices)
    for k in range(16):
        slope = 0.5 if k % 2 else 2.0
        np.testing.assert_allclose(volume.array[:, :, k], ct_pixels(k).T * slope - 1000)


def test_pixel_padding_value_becomes_air() -> None:
    slices = ct_series(16)
    pixels = ct_pixels(0)
    pixels[0, 0] = -2000
    slices[0].PixelData = pixels.astype("<i2").tobytes()
    for ds in slices:
        ds.PixelPaddingValue = -2000
    volume = read_image([reparse(ds) for ds in slices])
    assert volume.array[0, 0, 0] == -1024.0
    assert volume.array[1, 0, 0] == 1 - 1024.0


def test_identical_duplicate_instance_is_dropped() -> None:
    slices = ct_series(16)
    volume = read_image([*slices, reparse(slices[4])])
    assert volume.array.shape[2] == 16
    np.testing.assert_array_equal(volume.array, _expected_hu(16))


def test_same_instance_uid_with_other_content_is_refused() -> None:
    slices = ct_series(16)
    changed = reparse(slices[4])
    changed.PixelData = ct_pixels(9).astype("<i2").tobytes()
    error = _refusal([*slices, changed])
    assert error.code == "duplicate_slices"
    assert str(slices[4].SOPInstanceUID) in str(error)


def test_two_instances_at_one_position_are_refused() -> None:
    slices = ct_series(17, positions=[1.25 * k for k in range(16)] + [5.0])
    error = _refusal(slices)
    assert error.code == "duplicate_slices"
    assert "duplicate slice positions at z=-45.00 mm" in str(error)


@pytest.mark.parametrize(
    ("removed", "gap", "missing"),
    [([7], 2.5, 1), ([7, 8, 9], 5.0, 3)],
)
def test_missing_slices_are_refused(removed: list[int], gap: float, missing: int) -> None:
    slices = [ds for k, ds in enumerate(ct_series(20, spacing=1.25)) if k not in removed]
    error = _refusal(slices)
    assert error.code == "missing_slices"
    assert f"gap of {gap:.2f} mm where spacing is 1.25 mm" in str(error)
    assert f"about {missing} slice" in str(error)


def test_uneven_gaps_are_refused() -> None:
    offsets = [1.0 * k for k in range(10)] + [9.0 + 1.4 * k for k in range(1, 10)]
    error = _refusal(ct_series(19, positions=offsets))
    assert error.code == "uneven_spacing"
    assert "gaps from 1.00 to 1.40 mm" in str(error)


def test_small_position_jitter_is_accepted_and_spacing_is_the_mean() -> None:
    jitter = [0.0, 0.03, -0.04, 0.02] * 5
    offsets = [0.625 * k + jitter[k] for k in range(20)]
    volume = read_image(ct_series(20, positions=offsets))
    assert volume.spacing[2] == pytest.approx((offsets[-1] - offsets[0]) / 19)


@pytest.mark.parametrize(("count", "min_slices"), [(2, 16), (15, 16), (3, 4)])
def test_too_few_slices(count: int, min_slices: int) -> None:
    error = _refusal(ct_series(count), min_slices=min_slices)
    assert error.code == "too_few_slices"
    assert str(error).startswith(f"series has {count} slices, need at least {min_slices}")


def test_mixed_image_sizes_are_refused() -> None:
    slices = ct_series(16)
    odd = ct_slice(
        (-10, 20, 100), pixels=np.zeros((4, 4), np.int16), series_uid=slices[0].SeriesInstanceUID
    )
    error = _refusal([*slices, odd])
    assert error.code == "mixed_series"
    assert "mixes 2 image sizes (4x4, 6x8)" in str(error)


def test_mixed_orientations_are_refused() -> None:
    slices = ct_series(16)
    tilted = ct_slice(
        (-10, 20, 100),
        pixels=ct_pixels(0),
        orientation=(1, 0, 0, 0, 0, -1),
        series_uid=slices[0].SeriesInstanceUID,
    )
    error = _refusal([*slices, tilted])
    assert error.code == "mixed_series"
    assert "mixes 2 orientations" in str(error)


def test_localizer_in_the_series_is_ignored() -> None:
    slices = ct_series(16)
    scout = ct_slice(
        (-10, 20, 100),
        pixels=ct_pixels(0),
        orientation=(1, 0, 0, 0, 0, -1),
        series_uid=slices[0].SeriesInstanceUID,
    )
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    volume = read_image([scout, *slices])
    assert volume.array.shape[2] == 16
    assert str(scout.SOPInstanceUID) not in volume.sop_instance_uids


def test_two_series_are_refused() -> None:
    error = _refusal([*ct_series(16), *ct_series(16)])
    assert error.code == "mixed_series"
    assert "mixes 2 Series Instance UIDs" in str(error)


def test_gantry_tilt_is_refused() -> None:
    slices = ct_series(16, spacing=1.0)
    for k, ds in enumerate(slices):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * k, z]  # sheared along y: ~17 degrees
    error = _refusal(slices)
    assert error.code == "series_geometry"
    assert "gantry tilt" in str(error)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def test_oblique_series_geometry_maps_voxels_to_their_dicom_positions() -> None:
    rotation = _rotation(np.deg2rad(20), np.deg2rad(-35), np.deg2rad(10))
    row, column, normal = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    origin = np.array([12.5, -40.0, 310.0])
    slices = ct_series(16, spacing=1.5, origin=origin, orientation=(*row, *column))
    shuffled = slices[::-1]
    volume = read_image(shuffled)

    np.testing.assert_allclose(volume.direction, np.stack([row, column, normal], axis=1), atol=1e-7)
    np.testing.assert_allclose(volume.origin, origin, atol=1e-5)
    # voxel (i, j, k) is column i, row j of slice k; its centre is IPP_k + i*dx*row + j*dy*col
    index = np.array([[0, 0, 0], [7, 5, 15], [3, 2, 9], [1.5, 0.5, 4.0]])
    expected = [
        origin + i * PIXEL_SPACING[1] * row + j * PIXEL_SPACING[0] * column + k * 1.5 * normal
        for i, j, k in index
    ]
    np.testing.assert_allclose(volume.index_to_world(index), expected, atol=1e-5)
    np.testing.assert_allclose(volume.world_to_index(np.array(expected)), index, atol=1e-6)
    for k in (0, 9, 15):
        position = np.array([float(v) for v in slices[k].ImagePositionPatient])
        np.testing.assert_allclose(volume.index_to_world([[0, 0, k]])[0], position, atol=1e-5)
        np.testing.assert_array_equal(volume.array[:, :, k], ct_pixels(k).T - 1024.0)


def test_normal_pointing_against_instance_order_still_sorts_ascending() -> None:
    # Sagittal: row = +y (posterior), column = -z (feet); normal = row x column = -x.
    slices = ct_series(16, spacing=1.0, orientation=(0, 1, 0, 0, 0, -1))
    volume = read_image(slices[::-1])
    np.testing.assert_allclose(volume.direction[:, 2], [-1, 0, 0], atol=1e-9)
    np.testing.assert_array_equal(volume.array, _expected_hu(16))
    np.testing.assert_allclose(volume.origin, (-10.0, 20.0, -50.0), atol=1e-6)


def _assert_same_volume(actual: ImageVolume, expected: ImageVolume) -> None:
    np.testing.assert_array_equal(actual.array, expected.array)
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=1e-6)
    np.testing.assert_allclose(actual.origin, expected.origin, atol=1e-6)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=1e-7)


def test_enhanced_ct_with_shuffled_frames_matches_the_single_frame_series() -> None:
    rotation = _rotation(0.0, np.deg2rad(25), 0.0)
    slices = ct_series(16, spacing=1.25, orientation=(*rotation[:, 0], *rotation[:, 1]))
    order = list(range(16))
    random.Random(7).shuffle(order)
    multiframe = reparse(enhanced_ct(slices, order))
    volume = read_image(multiframe)
    _assert_same_volume(volume, read_image(slices))
    assert volume.sop_instance_uids == (str(multiframe.SOPInstanceUID),)
    assert volume.sop_class_uid == multiframe.SOPClassUID


def test_enhanced_ct_with_missing_frame_position_is_refused() -> None:
    slices = ct_series(16)
    multiframe = enhanced_ct(slices, range(16))
    del multiframe.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence
    error = _refusal(multiframe)
    assert error.code == "missing_attribute"
    assert "frame 4 has no Image Position (Patient)" in str(error)


def test_enhanced_ct_with_too_few_frames_is_refused() -> None:
    error = _refusal(enhanced_ct(ct_series(4), range(4)))
    assert error.code == "too_few_slices"
    assert "multi-frame image has 4 frames, need at least 16" in str(error)


def test_legacy_converted_enhanced_ct_from_highdicom_matches_the_series() -> None:
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    slices = [reparse(ds) for ds in ct_series(16, spacing=2.5)]
    for ds in slices:
        ds.PatientID, ds.PatientName, ds.StudyDate, ds.Manufacturer = (
            "SYN1",
            "Synthetic^Case",
            "20240101",
            "synthetic",
        )
    converted = LegacyConvertedEnhancedCTImage(
        slices[::-1],
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    multiframe = reparse(converted)
    assert multiframe.SOPClassUID == LegacyConvertedEnhancedCTImageStorage
    _assert_same_volume(read_image(multiframe), read_image(slices))


def test_plain_multiframe_ct_stacks_frames_at_spacing_between_slices() -> None:
    slices = ct_series(16, spacing=1.0)
    plain = reparse(slices[0])
    plain.NumberOfFrames = 16
    plain.SpacingBetweenSlices = 3.0
    plain.PixelData = b"".join(ds.PixelData for ds in slices)
    volume = read_image(plain)
    np.testing.assert_array_equal(volume.array, _expected_hu(16))
    assert volume.spacing == pytest.approx((0.7, 0.8, 3.0))
    del plain.SpacingBetweenSlices
    assert _refusal(plain).code == "missing_attribute"
