from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from volume_writer import write_volume_file

from oncotriage.datasets.image import ImageVolume, UnsupportedImageError
from oncotriage.datasets.volume_io import read_volume_file, volume_format


def _marked_array(shape: tuple[int, ...]) -> np.ndarray:
    """Distinct value per voxel, so any axis swap or flip shows."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize(
    ("ras_affine", "spacing", "origin", "direction"),
    [
        # the common storage of DICOM-derived NIfTI: i runs to patient left, j to posterior
        (
            [[-0.7, 0, 0, 100.0], [0, -0.8, 0, 50.0], [0, 0, 1.25, -200.0], [0, 0, 0, 1]],
            (0.7, 0.8, 1.25),
            (-100.0, -50.0, -200.0),
            np.eye(3),
        ),
        # a RAS-aligned volume: i runs to the right (LPS -x), j anterior (LPS -y)
        (
            [[0.5, 0, 0, 10.0], [0, 0.5, 0, 20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]],
            (0.5, 0.5, 2.0),
            (-10.0, -20.0, 30.0),
            np.diag([-1.0, -1.0, 1.0]),
        ),
        # oblique: rotated 30 degrees about the z axis
        (
            [
                [np.cos(np.pi / 6) * 0.9, -np.sin(np.pi / 6) * 0.9, 0, 5.0],
                [np.sin(np.pi / 6) * 0.9, np.cos(np.pi / 6) * 0.9, 0, -5.0],
                [0, 0, 1.5, 12.0],
                [0, 0, 0, 1],
            ],
            (0.9, 0.9, 1.5),
            (-5.0, 5.0, 12.0),
            np.diag([-1.0, -1.0, 1.0])
            @ np.array(
                [
                    [np.cos(np.pi / 6), -np.sin(np.pi / 6), 0],
                    [np.sin(np.pi / 6), np.cos(np.pi / 6), 0],
                    [0, 0, 1],
                ]
            ),
        ),
    ],
)
def test_nifti_geometry_is_converted_from_ras_to_lps(
    tmp_path: Path,
    ras_affine: list[list[float]],
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: np.ndarray,
) -> None:
    array = _marked_array((6, 5, 4))
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(array, np.array(ras_affine)), str(path))
    volume = read_volume_file(path)
    np.testing.assert_allclose(volume.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(volume.origin, origin, atol=1e-5)
    np.testing.assert_allclose(volume.direction, direction, atol=1e-6)
    np.testing.assert_array_equal(volume.array, array)
    assert volume.modality == "CT" and volume.array.dtype == np.float32
    # voxel (3, 2, 1) lies where nibabel's RAS affine puts it, with x and y negated
    ras = np.array(ras_affine) @ np.array([3, 2, 1, 1.0])
    np.testing.assert_allclose(
        volume.index_to_world([[3, 2, 1]])[0], [-ras[0], -ras[1], ras[2]], atol=1e-5
    )


def test_nifti_scaling_is_applied(tmp_path: Path) -> None:
    stored = np.full((4, 4, 3), 100, np.int16)
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, str(path))
    assert np.all(read_volume_file(path).array == 2.0 * 100 - 1024.0)


def test_metaimage_geometry_is_lps_as_stored(tmp_path: Path) -> None:
    array = _marked_array((7, 6, 5))  # index order (x, y, z)
    image = sitk.GetImageFromArray(array.transpose())  # SimpleITK wants (z, y, x)
    image.SetSpacing((0.7, 0.75, 2.5))
    image.SetOrigin((-120.5, -80.25, -310.0))
    angle = np.deg2rad(20)
    direction = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    image.SetDirection(direction.ravel().tolist())
    path = tmp_path / "volume.mhd"
    sitk.WriteImage(image, str(path))
    volume = read_volume_file(path, modality="CT")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (0.7, 0.75, 2.5), atol=1e-9)
    np.testing.assert_allclose(volume.origin, (-120.5, -80.25, -310.0), atol=1e-9)
    np.testing.assert_allclose(volume.direction, direction, atol=1e-9)
    # SimpleITK's own index -> physical point agrees with ImageVolume.index_to_world
    expected = image.TransformContinuousIndexToPhysicalPoint((4.0, 3.0, 2.0))
    np.testing.assert_allclose(volume.index_to_world([[4, 3, 2]])[0], expected, atol=1e-9)


def test_metaimage_2d(tmp_path: Path) -> None:
    array = _marked_array((9, 8))
    image = sitk.GetImageFromArray(array.transpose())
    image.SetSpacing((0.2, 0.25))
    path = tmp_path / "radiograph.mha"
    sitk.WriteImage(image, str(path))
    volume = read_volume_file(path, modality="DX")
    assert volume.spatial_dims == 2 and volume.modality == "DX"
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.box_index_to_world([1, 2, 3, 4]), [0.2, 0.5, 0.6, 1.0])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mhd", ".mha"])
def test_write_then_read_keeps_geometry(tmp_path: Path, suffix: str) -> None:
    angle = np.deg2rad(15)
    direction = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    volume = ImageVolume(
        array=_marked_array((5, 4, 3)),
        spacing=(0.6, 0.7, 1.8),
        origin=(-90.0, 30.5, -150.25),
        direction=direction,
        modality="CT",
    )
    path = write_volume_file(volume, tmp_path / f"v{suffix}")
    back = read_volume_file(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    if suffix.startswith(".nii"):  # independent check through nibabel: RAS = flip(LPS)
        np.testing.assert_allclose(
            nib.load(str(path)).affine, np.diag([-1, -1, 1, 1]) @ volume.affine, atol=1e-5
        )


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("missing.nii.gz", None, "not_found"),
        ("broken.nii", b"not a nifti file at all" * 20, "corrupt"),
        ("broken.mha", b"ObjectType = Image\nNDims = 3\n", "corrupt"),
        ("image.dcm", b"", "not_volume"),
    ],
)
def test_unusable_files_raise_typed_errors(
    tmp_path: Path, name: str, content: bytes | None, code: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnsupportedImageError) as raised:
        read_volume_file(path)
    assert raised.value.code == code
    assert name in str(raised.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.nii", "nifti"),
        ("A.NII.GZ", "nifti"),
        ("b.mhd", "metaimage"),
        ("c.mha", "metaimage"),
        ("d.dcm", None),
        ("series", None),
    ],
)
def test_volume_format_from_name(name: str, expected: str | None) -> None:
    assert volume_format(name) == expected
