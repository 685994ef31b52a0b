"""NIfTI and MetaImage volumes as :class:`~oncotriage.datasets.image.ImageVolume`.

Public datasets for detection (LUNA16, MONAI's detection tutorials) ship CT volumes as
NIfTI (``.nii``, ``.nii.gz``) or MetaImage (``.mhd`` + raw, ``.mha``) with boxes in world
millimetres. ``ImageVolume`` geometry is DICOM patient space (LPS):

- NIfTI affines (nibabel) map voxel indices to RAS; LPS = ``diag(-1, -1, 1) @ RAS``, so the
  LPS affine is ``diag(-1, -1, 1, 1) @ affine``.
- MetaImage/ITK (SimpleITK) is LPS already: ``world = origin + direction @ (spacing * index)``.

In both cases the array is returned with axes in index order ``(i, j[, k])`` (ITK's
``x, y, z``), as ``ImageVolume`` expects. Neither format stores the modality; callers say
what it is (CT volumes are Hounsfield units as stored, after NIfTI ``scl_slope/inter``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncotriage.datasets.image import ImageVolume, RefusalCode, UnsupportedImageError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
METAIMAGE_SUFFIXES = (".mhd", ".mha")
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume_format(path: Path | str) -> str | None:
    """``"nifti"``, ``"metaimage"`` or ``None`` (anything else, e.g. DICOM), from the name."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(METAIMAGE_SUFFIXES):
        return "metaimage"
    return None


def _geometry_from_matrix(
    matrix: np.ndarray, origin: np.ndarray, dims: int
) -> tuple[tuple[float, ...], tuple[float, float, float], np.ndarray]:
    """Spacing, origin and unit direction columns of an ``index -> LPS`` 3x3 matrix."""
    spacing = np.linalg.norm(matrix, axis=0)
    if np.any(spacing[:dims] <= 0):
        raise UnsupportedImageError(
            "volume has a zero voxel spacing in its affine", code=RefusalCode.CORRUPT
        )
    direction = np.eye(3)
    for axis in range(3):
        if spacing[axis] > 0:
            direction[:, axis] = matrix[:, axis] / spacing[axis]
    if dims == 2 or spacing[2] == 0:
        third = np.cross(direction[:, 0], direction[:, 1])
        direction[:, 2] = third / (np.linalg.norm(third) or 1.0)
    return (
        tuple(float(s) for s in spacing[:dims]),
        (float(origin[0]), float(origin[1]), float(origin[2])),
        direction,
    )


def _squeeze_trailing(array: np.ndarray, path: Path) -> np.ndarray:
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise UnsupportedImageError(
            f"{path.name}: image has shape {array.shape}; need one 2D image or 3D volume",
            code=RefusalCode.SERIES_GEOMETRY,
        )
    return array


def _read_nifti(path: Path, modality: str) -> ImageVolume:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
            raise TypeError(f"nibabel read it as {type(image).__name__}")
        array = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel raises many types for broken files
        raise UnsupportedImageError(
            f"{path.name}: not a readable NIfTI file ({error})", code=RefusalCode.CORRUPT
        ) from error
    array = _squeeze_trailing(array, path)
    lps = _LPS_FROM_RAS @ np.asarray(image.affine, dtype=np.float64)
    spacing, origin, direction = _geometry_from_matrix(lps[:3, :3], lps[:3, 3], array.ndim)
    return ImageVolume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        spacing=spacing,
        origin=origin,
        direction=direction,
        modality=modality,
    )


def _read_metaimage(path: Path, modality: str) -> ImageVolume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise UnsupportedImageError(
            f"{path.name}: not a readable MetaImage file ({str(error).strip()[:200]})",
            code=RefusalCode.CORRUPT,
        ) from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UnsupportedImageError(
            f"{path.name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel;"
            " need a single-channel (grey) image",
            code=RefusalCode.PHOTOMETRIC,
        )
    if image.GetDimension() > 3:
        raise UnsupportedImageError(
            f"{path.name}: is a {image.GetDimension()}D image; need one 2D image or 3D volume",
            code=RefusalCode.SERIES_GEOMETRY,
        )
    array = sitk.GetArrayFromImage(image).transpose()  # ITK (z, y, x) -> index (x, y, z)
    array = _squeeze_trailing(array, path)
    matrix = np.zeros((3, 3))
    size = image.GetDimension()
    itk_direction = np.asarray(image.GetDirection(), dtype=float).reshape(size, size)
    itk_spacing = np.asarray(image.GetSpacing(), dtype=float)
    matrix[:size, :size] = itk_direction * itk_spacing[None, :]
    if size == 2:
        matrix[2, 2] = 1.0
    origin = np.zeros(3)
    origin[:size] = image.GetOrigin()
    spacing, origin_t, direction = _geometry_from_matrix(matrix, origin, array.ndim)
    return ImageVolume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        spacing=spacing,
        origin=origin_t,
        direction=direction,
        modality=modality,
    )


def read_volume_file(path: Path | str, *, modality: str = "CT") -> ImageVolume:
    """Read a NIfTI or MetaImage file with LPS geometry.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.mhd`` or ``.mha`` file.
        modality: modality to record (the formats do not store it); ``CT`` volumes are
            expected in Hounsfield units.

    Returns:
        The volume: float32 array ``(X, Y[, Z])`` in index order, spacing (mm), LPS origin
        and direction cosines. UIDs are empty (these are not DICOM objects).

    Raises:
        UnsupportedImageError: missing, unreadable, multi-channel or >3D files.
    """
    path = Path(path)
    kind = volume_format(path)
    if kind is None:
        raise UnsupportedImageError(
            f"{path.name}: not a NIfTI (.nii, .nii.gz) or MetaImage (.mhd, .mha) file",
            code=RefusalCode.NOT_VOLUME,
        )
    if not path.is_file():
        raise UnsupportedImageError(f"{path}: no such file", code=RefusalCode.NOT_FOUND)
    return _read_nifti(path, modality) if kind == "nifti" else _read_metaimage(path, modality)
